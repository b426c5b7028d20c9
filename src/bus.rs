//! berth's own D-Bus interface, `org.berth.Supervisor1` at
//! `/org/berth/Supervisor1` on the system bus: what runs, and the few
//! actions an administrator takes on it. The mutating methods are for root
//! only (the policy in packaging/ says so, and the supervisor checks the
//! caller itself too).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use zbus::fdo;
use zbus::message::Header;

use crate::metrics::ServiceMetrics;
use crate::scope::Scopes;
use crate::supervisor::registry::{ContainerInfo, ContainerState, Registry, ServiceInfo};

pub const NAME: &str = "org.berth.Supervisor1";
pub const PATH: &str = "/org/berth/Supervisor1";

/// A reload request and where its answer goes.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct Supervisor {
    pub registry: Arc<Registry>,
    pub scopes: Scopes,
    pub reload: mpsc::Sender<ReloadRequest>,
}

async fn require_root(conn: &zbus::Connection, hdr: &Header<'_>) -> fdo::Result<()> {
    let sender = hdr
        .sender()
        .ok_or_else(|| fdo::Error::AccessDenied("caller unknown".into()))?;
    // dbus-daemon answers at once; a deadline keeps a stuck one from
    // holding this method call (and its caller) forever.
    let ask = async {
        let dbus = fdo::DBusProxy::new(conn).await?;
        dbus.get_connection_unix_user(sender.clone().into()).await
    };
    let uid = tokio::time::timeout(crate::scope::DBUS_CALL_DEADLINE, ask)
        .await
        .map_err(|_| {
            fdo::Error::Failed("GetConnectionUnixUser: no answer from the bus".into())
        })??;
    if uid != 0 {
        return Err(fdo::Error::AccessDenied(format!(
            "only root may change containers (caller uid {uid})"
        )));
    }
    Ok(())
}

impl Supervisor {
    fn find(&self, name: &str) -> Vec<ContainerInfo> {
        self.registry
            .list()
            .into_iter()
            .filter(|c| c.state.started() && (c.id == name || c.unit == name))
            .collect()
    }

    async fn stop_units(&self, list: Vec<ContainerInfo>) -> fdo::Result<u32> {
        let mut n = 0;
        for c in list {
            if c.unit.is_empty() {
                continue;
            }
            if c.state == ContainerState::Frozen {
                // A frozen process acts on no SIGTERM: thaw it first, so
                // the stop is as graceful as for a running one (the
                // supervisor sees it exit).
                if let Some(f) = crate::cgroup::freezer_of(c.pid, &c.unit)
                    && let Err(e) = f.thaw()
                {
                    tracing::warn!(container = %c.id, "{e}");
                }
            }
            self.scopes
                .stop(&c.unit)
                .await
                .map_err(|e| fdo::Error::Failed(e.to_string()))?;
            n += 1;
        }
        Ok(n)
    }
}

#[zbus::interface(name = "org.berth.Supervisor1")]
impl Supervisor {
    /// Every container: id, service, unit, PID 1's host pid, state
    /// ("running", "frozen" or "warm"), start time, open connections, idle deadline
    /// (µs since the epoch, 0 for none), peer.
    async fn list_containers(&self) -> Vec<ContainerInfo> {
        self.registry.list()
    }

    /// One container's memory and CPU over its life, as sampled by the
    /// supervisor (empty for an unknown id).
    async fn history(&self, id: &str) -> crate::supervisor::history::Samples {
        self.registry.history.get(id)
    }

    /// Services with failed starts: count in a row and the throttle's end.
    async fn list_services(&self) -> Vec<ServiceInfo> {
        self.registry.services()
    }

    /// The counters behind `berth metrics`, per service.
    async fn metrics(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> fdo::Result<Vec<ServiceMetrics>> {
        require_root(conn, &hdr).await?;
        Ok(self.registry.metrics.snapshot())
    }

    /// Stop one container (by id or scope name) through its scope.
    async fn stop_container(
        &self,
        name: &str,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> fdo::Result<u32> {
        require_root(conn, &hdr).await?;
        let found = self.find(name);
        if found.is_empty() {
            return Err(fdo::Error::InvalidArgs(format!(
                "no running container {name}"
            )));
        }
        self.stop_units(found).await
    }

    /// Stop all of a service's containers; its sockets keep working.
    async fn stop_service(
        &self,
        name: &str,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> fdo::Result<u32> {
        require_root(conn, &hdr).await?;
        let list: Vec<ContainerInfo> = self
            .registry
            .list()
            .into_iter()
            .filter(|c| c.service == name && c.state.started())
            .collect();
        self.stop_units(list).await
    }

    /// Validate and load the configuration again (as SIGHUP does).
    async fn reload(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> fdo::Result<()> {
        require_root(conn, &hdr).await?;
        let (tx, rx) = oneshot::channel();
        self.reload
            .send(tx)
            .await
            .map_err(|_| fdo::Error::Failed("supervisor is stopping".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fdo::Error::Failed(e)),
            Err(_) => Err(fdo::Error::Failed("supervisor is stopping".into())),
        }
    }
}

/// Put the interface on the bus and take the well-known name, now and
/// again each time the scopes' connection is re-established (after
/// `systemctl restart dbus` the name and the object are gone with the old
/// connection).
pub async fn export(sup: Supervisor) -> zbus::Result<()> {
    let scopes = sup.scopes.clone();
    let hook: crate::scope::ConnectHook = Arc::new(move |conn: zbus::Connection| {
        let sup = sup.clone();
        Box::pin(async move {
            conn.object_server().at(PATH, sup).await?;
            conn.request_name(NAME).await?;
            Ok(())
        })
    });
    scopes.on_connect(hook).await
}

#[zbus::proxy(
    interface = "org.berth.Supervisor1",
    default_service = "org.berth.Supervisor1",
    default_path = "/org/berth/Supervisor1"
)]
pub trait Supervisor1 {
    fn list_containers(&self) -> zbus::Result<Vec<ContainerInfo>>;
    fn list_services(&self) -> zbus::Result<Vec<ServiceInfo>>;
    fn stop_container(&self, name: &str) -> zbus::Result<u32>;
    fn stop_service(&self, name: &str) -> zbus::Result<u32>;
    fn reload(&self) -> zbus::Result<()>;
    fn metrics(&self) -> zbus::Result<Vec<ServiceMetrics>>;
    fn history(&self, id: &str) -> zbus::Result<crate::supervisor::history::Samples>;
}
