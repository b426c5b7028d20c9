//! Transient systemd scopes over D-Bus: one per container, made for the
//! stage's pids before the application runs, stopped to tear it down.
//!
//! One long-lived bus connection serves every container. `JobRemoved` is
//! subscribed once, before the first call, and a dispatcher hands each
//! job's result to whoever waits for it (or keeps it, when the signal beats
//! the method reply).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use zbus::names::InterfaceName;
use zbus::{OwnedObjectPath, Variant as Value};

use crate::config::{Resources, SliceLimits};

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("connecting to the system bus: {0}")]
    Connect(#[source] zbus::Error),
    #[error("subscribing to systemd's job signals: {0}")]
    Subscribe(#[source] zbus::Error),
    #[error("StartTransientUnit({unit}): {source}")]
    Start { unit: String, source: zbus::Error },
    #[error("scope {unit}: job finished with result '{result}'")]
    JobFailed { unit: String, result: String },
    #[error("scope {unit}: the bus closed before its job finished")]
    JobLost { unit: String },
    #[error("SetUnitProperties({unit}): {source}")]
    Slice { unit: String, source: zbus::Error },
    #[error("StopUnit({unit}): {source}")]
    Stop { unit: String, source: zbus::Error },
    #[error("listing berth scopes: {0}")]
    List(#[source] zbus::Error),
    #[error("processes of {unit}: {source}")]
    Processes { unit: String, source: zbus::Error },
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;

    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;

    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn set_unit_properties(
        &self,
        name: &str,
        runtime: bool,
        properties: &[(&str, Value<'_>)],
    ) -> zbus::Result<()>;

    #[allow(clippy::type_complexity)]
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<
        Vec<(
            String,
            String,
            String,
            String,
            String,
            String,
            OwnedObjectPath,
            u32,
            String,
            OwnedObjectPath,
        )>,
    >;

    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    fn get_unit_processes(&self, name: &str) -> zbus::Result<Vec<(String, u32, String)>>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

enum Job {
    Waiting(oneshot::Sender<String>),
    Done(String),
}

/// What a scope is made of.
pub struct ScopeRequest<'a> {
    pub unit: &'a str,
    pub slice: &'a str,
    pub description: &'a str,
    pub pids: &'a [u32],
    pub resources: &'a Resources,
    /// SIGTERM to everything in the scope on StopUnit, SIGKILL this much
    /// later (TimeoutStopUSec=; systemd's default would be 90 s).
    pub stop_timeout: std::time::Duration,
}

/// The name `berth-SERVICE-ID.scope` of a container's scope.
pub fn unit_name(service: &str, id: &str) -> String {
    format!("berth-{service}-{id}.scope")
}

/// The slice `berth-SERVICE.slice` all of a service's scopes live in.
pub fn slice_name(service: &str) -> String {
    // A '-' in SERVICE nests the slice (berth-web-app.slice lives under
    // berth-web.slice); systemd creates the parents on demand.
    format!("berth-{service}.slice")
}

/// Split `berth-SERVICE-ID.scope` back into (service, id).
pub fn parse_unit_name(unit: &str) -> Option<(&str, &str)> {
    let rest = unit.strip_prefix("berth-")?.strip_suffix(".scope")?;
    let (service, id) = rest.rsplit_once('-')?;
    (!service.is_empty() && id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()))
        .then_some((service, id))
}

/// Calls to systemd in flight at once. dbus-daemon allows a connection 128
/// pending replies (max_replies_per_connection) and fails the rest with
/// LimitsExceeded; a burst of connections waits here instead.
const IN_FLIGHT: usize = 64;

#[derive(Clone)]
pub struct Scopes {
    manager: ManagerProxy<'static>,
    jobs: Arc<Mutex<HashMap<String, Job>>>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// The device nodes a container's /dev holds (see `sandbox::mounts`), and
/// all a scope may open: `DevicePolicy=closed` with exactly these allowed
/// (`/dev/ptmx` is the private devpts' `pts/ptmx`, the same char 5:2).
pub const DEVICE_ALLOW: &[(&str, &str)] = &[
    ("/dev/null", "rw"),
    ("/dev/zero", "rw"),
    ("/dev/full", "rw"),
    ("/dev/random", "rw"),
    ("/dev/urandom", "rw"),
    ("/dev/tty", "rw"),
    ("/dev/ptmx", "rw"),
    ("char-pts", "rw"),
];

/// Turn `[resources]` into scope properties; accounting is always on, and
/// the device policy closed to the container's minimal /dev.
fn properties<'a>(req: &'a ScopeRequest<'a>) -> Vec<(&'static str, Value<'a>)> {
    let r = req.resources;
    let mut p: Vec<(&'static str, Value<'a>)> = vec![
        ("PIDs", Value::from(req.pids.to_vec())),
        ("Slice", Value::from(req.slice)),
        ("Description", Value::from(req.description)),
        ("CollectMode", Value::from("inactive-or-failed")),
        ("CPUAccounting", Value::from(true)),
        ("MemoryAccounting", Value::from(true)),
        ("IOAccounting", Value::from(true)),
        ("TasksAccounting", Value::from(true)),
        ("DevicePolicy", Value::from("closed")),
        // DeviceAllow is a(ss): (path or "char-GROUP", "rwm" subset).
        ("DeviceAllow", Value::from(DEVICE_ALLOW.to_vec())),
        // KillMode=control-group, KillSignal=SIGTERM and SendSIGKILL=yes
        // are the defaults: SIGTERM to every process (the stage blocks it,
        // PID 1 forwards it), SIGKILL to all of them this much later.
        (
            "TimeoutStopUSec",
            Value::from(u64::try_from(req.stop_timeout.as_micros()).unwrap_or(u64::MAX)),
        ),
    ];
    if let Some(v) = r.memory_max {
        p.push(("MemoryMax", Value::from(v)));
    }
    if let Some(v) = r.memory_high {
        p.push(("MemoryHigh", Value::from(v)));
    }
    if let Some(v) = r.cpu_weight {
        p.push(("CPUWeight", Value::from(v)));
    }
    if let Some(pct) = r.cpu_quota {
        // CPUQuota=50% is 500ms of CPU time per second.
        p.push(("CPUQuotaPerSecUSec", Value::from(u64::from(pct) * 10_000)));
    }
    if let Some(v) = r.tasks_max {
        p.push(("TasksMax", Value::from(v)));
    }
    if let Some(v) = r.io_weight {
        p.push(("IOWeight", Value::from(v)));
    }
    p
}

/// `[slice]` as properties of the slice; every key is given, unset ones as
/// systemd's "no limit" (u64::MAX), so a key removed on reload is lifted.
fn slice_properties(limits: &SliceLimits) -> Vec<(&'static str, Value<'static>)> {
    vec![
        ("MemoryAccounting", Value::from(true)),
        ("TasksAccounting", Value::from(true)),
        (
            "MemoryMax",
            Value::from(limits.memory_max.unwrap_or(u64::MAX)),
        ),
        (
            "TasksMax",
            Value::from(limits.tasks_max.unwrap_or(u64::MAX)),
        ),
        (
            "CPUQuotaPerSecUSec",
            Value::from(limits.cpu_quota.map_or(u64::MAX, |p| u64::from(p) * 10_000)),
        ),
        (
            "CPUWeight",
            Value::from(limits.cpu_weight.unwrap_or(u64::MAX)),
        ),
    ]
}

impl Scopes {
    /// Connect to the system bus and subscribe to job results.
    pub async fn connect() -> Result<Scopes, ScopeError> {
        let conn = zbus::Connection::system()
            .await
            .map_err(ScopeError::Connect)?;
        let manager = ManagerProxy::new(&conn)
            .await
            .map_err(ScopeError::Connect)?;
        // Match rule first, Subscribe second: no JobRemoved can be missed.
        let mut removed = manager
            .receive_job_removed()
            .await
            .map_err(ScopeError::Subscribe)?;
        manager.subscribe().await.map_err(ScopeError::Subscribe)?;
        let jobs: Arc<Mutex<HashMap<String, Job>>> = Arc::default();
        let j = jobs.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(sig) = removed.next().await {
                let Ok(args) = sig.args() else { continue };
                // Only our own units' jobs are worth remembering.
                if !args.unit.starts_with("berth-") {
                    continue;
                }
                let path = args.job.to_string();
                let mut map = j.lock().unwrap_or_else(|p| p.into_inner());
                match map.remove(&path) {
                    Some(Job::Waiting(tx)) => {
                        let _ = tx.send(args.result.clone());
                    }
                    _ => {
                        map.insert(path, Job::Done(args.result.clone()));
                    }
                }
            }
            // Bus gone: wake every waiter with a failure.
            j.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Ok(Scopes {
            manager,
            jobs,
            in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        })
    }

    async fn wait_job(&self, unit: &str, job: &OwnedObjectPath) -> Result<(), ScopeError> {
        let path = job.to_string();
        let rx = {
            let mut map = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            match map.remove(&path) {
                Some(Job::Done(result)) => return check(unit, result),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    map.insert(path, Job::Waiting(tx));
                    rx
                }
            }
        };
        match rx.await {
            Ok(result) => check(unit, result),
            Err(_) => Err(ScopeError::JobLost { unit: unit.into() }),
        }
    }

    /// The bus connection (shared with berth's own interface).
    pub fn connection(&self) -> &zbus::Connection {
        self.manager.inner().connection()
    }

    /// Create the scope and wait until systemd has moved the pids in.
    pub async fn create(&self, req: &ScopeRequest<'_>) -> Result<(), ScopeError> {
        let _permit = self.in_flight.acquire().await;
        let props = properties(req);
        let job = self
            .manager
            .start_transient_unit(req.unit, "fail", &props, &[])
            .await
            .map_err(|source| ScopeError::Start {
                unit: req.unit.into(),
                source,
            })?;
        self.wait_job(req.unit, &job).await
    }

    /// Set `[slice]` on `berth-NAME.slice` (runtime only, so nothing
    /// outlives a reboot). SetUnitProperties loads a slice that has no unit
    /// file and is not yet running, and may be repeated: the same call
    /// serves the first start, a supervisor restart and a reload.
    pub async fn set_slice(&self, slice: &str, limits: &SliceLimits) -> Result<(), ScopeError> {
        let _permit = self.in_flight.acquire().await;
        self.manager
            .set_unit_properties(slice, true, &slice_properties(limits))
            .await
            .map_err(|source| ScopeError::Slice {
                unit: slice.into(),
                source,
            })
    }

    /// Stop a scope: systemd kills everything in it. A scope that is
    /// already gone (emptied and collected) counts as stopped.
    pub async fn stop(&self, unit: &str) -> Result<(), ScopeError> {
        let _permit = self.in_flight.acquire().await;
        match self.manager.stop_unit(unit, "replace").await {
            Ok(_) => Ok(()),
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                Ok(())
            }
            Err(source) => Err(ScopeError::Stop {
                unit: unit.into(),
                source,
            }),
        }
    }

    /// Active berth scopes: (unit name, pids with their command lines).
    pub async fn list(&self) -> Result<Vec<(String, Vec<(u32, String)>)>, ScopeError> {
        let units = self
            .manager
            .list_units_by_patterns(&["active", "activating"], &["berth-*.scope"])
            .await
            .map_err(ScopeError::List)?;
        let mut out = Vec::new();
        for u in units {
            let name = u.0;
            let procs = self
                .manager
                .get_unit_processes(&name)
                .await
                .map_err(|source| ScopeError::Processes {
                    unit: name.clone(),
                    source,
                })?;
            out.push((
                name,
                procs.into_iter().map(|(_, pid, cmd)| (pid, cmd)).collect(),
            ));
        }
        Ok(out)
    }
}

/// A scope's accounting and limits as systemd reports them (`u64::MAX`
/// means "not set").
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScopeStats {
    pub memory_current: u64,
    pub cpu_usage_nsec: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub tasks_current: u64,
    pub memory_max: u64,
    pub memory_high: u64,
    pub tasks_max: u64,
    pub cpu_weight: u64,
    pub cpu_quota_per_sec_usec: u64,
    pub io_weight: u64,
    pub active_enter_usec: u64,
    pub control_group: String,
}

impl Scopes {
    /// Accounting and limits of one scope.
    pub async fn stats(&self, unit: &str) -> Result<ScopeStats, ScopeError> {
        let err = |source| ScopeError::Processes {
            unit: unit.into(),
            source,
        };
        let path = self.manager.get_unit(unit).await.map_err(err)?;
        let props = zbus::fdo::PropertiesProxy::builder(self.connection())
            .destination("org.freedesktop.systemd1")
            .path(path)
            .build()
            .await
            .map_err(err)?;
        let scope = props
            .get_all(InterfaceName::from_static_str_unchecked(
                "org.freedesktop.systemd1.Scope",
            ))
            .await
            .map_err(|e| err(e.into()))?;
        let unit_props = props
            .get_all(InterfaceName::from_static_str_unchecked(
                "org.freedesktop.systemd1.Unit",
            ))
            .await
            .map_err(|e| err(e.into()))?;
        let num = |m: &std::collections::HashMap<String, zbus::OwnedVariant>, k: &str| {
            m.get(k)
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(u64::MAX)
        };
        Ok(ScopeStats {
            memory_current: num(&scope, "MemoryCurrent"),
            cpu_usage_nsec: num(&scope, "CPUUsageNSec"),
            io_read_bytes: num(&scope, "IOReadBytes"),
            io_write_bytes: num(&scope, "IOWriteBytes"),
            tasks_current: num(&scope, "TasksCurrent"),
            memory_max: num(&scope, "MemoryMax"),
            memory_high: num(&scope, "MemoryHigh"),
            tasks_max: num(&scope, "TasksMax"),
            cpu_weight: num(&scope, "CPUWeight"),
            cpu_quota_per_sec_usec: num(&scope, "CPUQuotaPerSecUSec"),
            io_weight: num(&scope, "IOWeight"),
            active_enter_usec: num(&unit_props, "ActiveEnterTimestamp"),
            control_group: scope
                .get("ControlGroup")
                .and_then(|v| String::try_from(v.clone()).ok())
                .unwrap_or_default(),
        })
    }
}

fn check(unit: &str, result: String) -> Result<(), ScopeError> {
    if result == "done" {
        Ok(())
    } else {
        Err(ScopeError::JobFailed {
            unit: unit.into(),
            result,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let u = unit_name("web-app", "0123456789ab");
        assert_eq!(u, "berth-web-app-0123456789ab.scope");
        assert_eq!(parse_unit_name(&u), Some(("web-app", "0123456789ab")));
        assert_eq!(parse_unit_name("berth-web.scope"), None);
        assert_eq!(parse_unit_name("other-web-0123456789ab.scope"), None);
        assert_eq!(slice_name("web"), "berth-web.slice");
    }

    #[test]
    fn resources_become_properties() {
        let r = Resources {
            memory_max: Some(256 << 20),
            cpu_quota: Some(50),
            tasks_max: Some(64),
            ..Default::default()
        };
        let req = ScopeRequest {
            unit: "berth-x-0123456789ab.scope",
            slice: "berth-x.slice",
            description: "d",
            pids: &[1, 2],
            resources: &r,
            stop_timeout: std::time::Duration::from_millis(2500),
        };
        let p = properties(&req);
        let get = |k: &str| p.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("MemoryMax"), Some(Value::from(256u64 << 20)));
        assert_eq!(get("CPUQuotaPerSecUSec"), Some(Value::from(500_000u64)));
        assert_eq!(get("TasksMax"), Some(Value::from(64u64)));
        assert_eq!(get("CollectMode"), Some(Value::from("inactive-or-failed")));
        assert_eq!(get("MemoryHigh"), None);
        assert_eq!(get("DevicePolicy"), Some(Value::from("closed")));
        let allow = get("DeviceAllow").expect("DeviceAllow set");
        assert_eq!(allow.value_signature().to_string(), "a(ss)");
        let allowed = <Vec<(String, String)>>::try_from(allow).expect("a(ss)");
        assert!(allowed.contains(&("/dev/null".into(), "rw".into())));
        assert!(allowed.contains(&("char-pts".into(), "rw".into())));
        assert_eq!(allowed.len(), 8);
        assert_eq!(get("TimeoutStopUSec"), Some(Value::from(2_500_000u64)));
    }

    #[test]
    fn slice_limits_become_properties_and_unset_ones_no_limit() {
        let l = SliceLimits {
            tasks_max: Some(40),
            cpu_quota: Some(200),
            ..Default::default()
        };
        let p = slice_properties(&l);
        let get = |k: &str| p.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("TasksMax"), Some(Value::from(40u64)));
        assert_eq!(get("CPUQuotaPerSecUSec"), Some(Value::from(2_000_000u64)));
        assert_eq!(get("MemoryMax"), Some(Value::from(u64::MAX)));
        assert_eq!(get("CPUWeight"), Some(Value::from(u64::MAX)));
    }
}
