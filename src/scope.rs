//! Transient systemd scopes over D-Bus: one per container, made for the
//! stage's pids before the application runs, stopped to tear it down.
//!
//! One long-lived bus connection serves every container. `JobRemoved` is
//! subscribed once per connection, before the first call, and a dispatcher
//! hands each job's result to whoever waits for it.
//!
//! The connection is kept: when it closes (`systemctl restart dbus`), a
//! keeper task fails the jobs waited on, reconnects with backoff,
//! subscribes again and re-runs the hooks that export berth's interface and
//! take its bus name ([`Scopes::on_connect`]). Meanwhile every call waits
//! for the new connection up to [`RECONNECT_WAIT`] and then fails with
//! [`ScopeError::NoBus`]: a container is refused, never started without
//! its scope.
//!
//! Bounded memory: only jobs berth waits for are remembered ([`JobMap`]:
//! one entry per scope being created, removed when its result arrives, on
//! its deadline, or when the waiting future is dropped); signals for every
//! other job (`StopUnit`, an outside `systemctl stop berth-…`) are dropped
//! on arrival. Every call to systemd has a deadline ([`DBUS_CALL_DEADLINE`],
//! [`SCOPE_JOB_DEADLINE`]), so a hung systemd holds an `IN_FLIGHT` permit
//! for a bounded time only.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    #[error("{what}: no answer from systemd within {after:?}")]
    Deadline { what: String, after: Duration },
    #[error(
        "{what}: no connection to the system bus for {waited:?} (reconnecting); \
         nothing is started without its scope"
    )]
    NoBus { what: String, waited: Duration },
}

/// How long one method call to systemd may take: systemd's (and sd-bus')
/// default method timeout, after which a client would give up anyway.
pub const DBUS_CALL_DEADLINE: Duration = Duration::from_secs(25);

/// How long a scope's start job may take once queued: systemd creates a
/// scope in milliseconds (TESTBED.md); 30 s means systemd is stuck.
pub const SCOPE_JOB_DEADLINE: Duration = Duration::from_secs(30);

/// How long a call waits for the bus to come back after the connection
/// was lost before it fails: a `systemctl restart dbus` takes about a
/// second, systemd's return to the new bus a moment more.
pub const RECONNECT_WAIT: Duration = Duration::from_secs(10);

/// Pauses between reconnection attempts: doubling from the first to the
/// last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// `fut` (a call to systemd), or [`ScopeError::Deadline`] naming `what` once
/// `after` has passed.
async fn within<T>(
    after: Duration,
    what: impl FnOnce() -> String,
    fut: impl Future<Output = Result<T, ScopeError>>,
) -> Result<T, ScopeError> {
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r,
        Err(_) => Err(ScopeError::Deadline {
            what: what(),
            after,
        }),
    }
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

/// Start jobs berth waits for, by unit. The unit is registered before
/// `StartTransientUnit` is called, so a `JobRemoved` that beats the method
/// reply (the job path is not known yet) is kept with its unit and matched
/// when the reply brings the path.
#[derive(Default)]
struct JobMap {
    units: HashMap<String, Waiter>,
}

struct Waiter {
    /// The job path, once the method reply told it.
    job: Option<String>,
    /// (job path, result) of jobs of this unit that ended before the reply.
    early: Vec<(String, String)>,
    tx: Option<oneshot::Sender<String>>,
}

/// Early results kept per unit: systemd runs one job per unit at a time,
/// so more than a couple before the reply means someone else's jobs.
const EARLY_MAX: usize = 4;

impl JobMap {
    /// Register `unit` before its start job is requested.
    fn expect(&mut self, unit: &str) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        self.units.insert(
            unit.to_owned(),
            Waiter {
                job: None,
                early: Vec::new(),
                tx: Some(tx),
            },
        );
        rx
    }

    /// The method reply named `unit`'s job.
    fn job_known(&mut self, unit: &str, job: &str) {
        let Some(w) = self.units.get_mut(unit) else {
            return;
        };
        if let Some(i) = w.early.iter().position(|(p, _)| p == job) {
            let (_, result) = w.early.swap_remove(i);
            if let Some(tx) = self.units.remove(unit).and_then(|w| w.tx) {
                let _ = tx.send(result);
            }
            return;
        }
        w.job = Some(job.to_owned());
        w.early.clear();
    }

    /// A `JobRemoved` signal: handed to the waiter of its job, kept briefly
    /// if its unit's reply is still out, dropped otherwise.
    fn removed(&mut self, unit: &str, job: &str, result: &str) {
        let Some(w) = self.units.get_mut(unit) else {
            return;
        };
        match &w.job {
            Some(j) if j == job => {
                if let Some(tx) = self.units.remove(unit).and_then(|w| w.tx) {
                    let _ = tx.send(result.to_owned());
                }
            }
            Some(_) => {}
            None if w.early.len() < EARLY_MAX => w.early.push((job.to_owned(), result.to_owned())),
            None => {}
        }
    }

    /// Stop waiting for `unit` (result taken, deadline, caller gone).
    fn forget(&mut self, unit: &str) {
        self.units.remove(unit);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.units.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a unit's waiter however `create` ends (also when its future is
/// dropped half-way).
struct Forget<'a> {
    jobs: &'a Mutex<JobMap>,
    unit: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.jobs).forget(self.unit);
    }
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

/// Runs on every new connection (the first one included): berth's own
/// interface and bus name.
pub type ConnectHook = Arc<
    dyn Fn(zbus::Connection) -> std::pin::Pin<Box<dyn Future<Output = zbus::Result<()>> + Send>>
        + Send
        + Sync,
>;

struct Shared {
    /// The live link to systemd; `None` while reconnecting.
    link: tokio::sync::watch::Sender<Option<ManagerProxy<'static>>>,
    jobs: Mutex<JobMap>,
    in_flight: tokio::sync::Semaphore,
    hooks: Mutex<Vec<ConnectHook>>,
}

#[derive(Clone)]
pub struct Scopes {
    shared: Arc<Shared>,
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
    /// Connect to the system bus and subscribe to job results; a keeper
    /// task reconnects whenever the connection is lost.
    pub async fn connect() -> Result<Scopes, ScopeError> {
        let shared = Arc::new(Shared {
            link: tokio::sync::watch::Sender::new(None),
            jobs: Mutex::default(),
            in_flight: tokio::sync::Semaphore::new(IN_FLIGHT),
            hooks: Mutex::default(),
        });
        let manager = open(&shared).await?;
        let conn = manager.inner().connection().clone();
        shared.link.send_replace(Some(manager));
        tokio::spawn(keep(Arc::downgrade(&shared), conn));
        Ok(Scopes { shared })
    }

    /// The bus connection (shared with berth's own interface), once there
    /// is one.
    pub async fn connection(&self) -> Result<zbus::Connection, ScopeError> {
        let m = self.manager(|| "the system bus".into()).await?;
        Ok(m.inner().connection().clone())
    }

    /// Run `hook` on the connection now and again on every reconnection
    /// (berth's interface and bus name). Its first result is returned.
    pub async fn on_connect(&self, hook: ConnectHook) -> zbus::Result<()> {
        lock(&self.shared.hooks).push(hook.clone());
        let conn = self
            .connection()
            .await
            .map_err(|e| zbus::Error::Failure(e.to_string()))?;
        hook(conn).await
    }

    /// The live link to systemd: at once, or when the keeper has
    /// reconnected, or [`ScopeError::NoBus`] after [`RECONNECT_WAIT`].
    async fn manager(
        &self,
        what: impl FnOnce() -> String,
    ) -> Result<ManagerProxy<'static>, ScopeError> {
        let mut rx = self.shared.link.subscribe();
        let live = |l: &Option<ManagerProxy<'static>>| {
            l.as_ref()
                .is_some_and(|m| !m.inner().connection().is_closed())
        };
        let found = match tokio::time::timeout(RECONNECT_WAIT, rx.wait_for(live)).await {
            Ok(Ok(m)) => m.clone(),
            Ok(Err(_)) | Err(_) => None,
        };
        found.ok_or_else(|| ScopeError::NoBus {
            what: what(),
            waited: RECONNECT_WAIT,
        })
    }

    fn jobs(&self) -> &Mutex<JobMap> {
        &self.shared.jobs
    }

    /// Create the scope and wait until systemd has moved the pids in. On
    /// the job's deadline the unit is stopped (it may still come up).
    pub async fn create(&self, req: &ScopeRequest<'_>) -> Result<(), ScopeError> {
        let _permit = self.shared.in_flight.acquire().await;
        let props = properties(req);
        let unit = req.unit;
        let manager = self
            .manager(|| format!("StartTransientUnit({unit})"))
            .await?;
        // Registered before the call: the job may end before the reply.
        let rx = lock(self.jobs()).expect(unit);
        let _forget = Forget {
            jobs: self.jobs(),
            unit,
        };
        let job = within(
            DBUS_CALL_DEADLINE,
            || format!("StartTransientUnit({unit})"),
            async {
                manager
                    .start_transient_unit(unit, "fail", &props, &[])
                    .await
                    .map_err(|source| ScopeError::Start {
                        unit: unit.into(),
                        source,
                    })
            },
        )
        .await?;
        lock(self.jobs()).job_known(unit, job.as_str());
        match tokio::time::timeout(SCOPE_JOB_DEADLINE, rx).await {
            Ok(Ok(result)) => check(unit, result),
            Ok(Err(_)) => Err(ScopeError::JobLost { unit: unit.into() }),
            Err(_) => {
                drop(_permit);
                if let Err(e) = self.stop(unit).await {
                    tracing::warn!(unit, "stopping a scope whose start timed out: {e}");
                }
                Err(ScopeError::Deadline {
                    what: format!("start job of {unit}"),
                    after: SCOPE_JOB_DEADLINE,
                })
            }
        }
    }

    /// Set `[slice]` on `berth-NAME.slice` (runtime only, so nothing
    /// outlives a reboot). SetUnitProperties loads a slice that has no unit
    /// file and is not yet running, and may be repeated: the same call
    /// serves the first start, a supervisor restart and a reload.
    pub async fn set_slice(&self, slice: &str, limits: &SliceLimits) -> Result<(), ScopeError> {
        let _permit = self.shared.in_flight.acquire().await;
        let what = || format!("SetUnitProperties({slice})");
        let manager = self.manager(what).await?;
        within(DBUS_CALL_DEADLINE, what, async {
            manager
                .set_unit_properties(slice, true, &slice_properties(limits))
                .await
                .map_err(|source| ScopeError::Slice {
                    unit: slice.into(),
                    source,
                })
        })
        .await
    }

    /// Stop a scope: systemd kills everything in it. A scope that is
    /// already gone (emptied and collected) counts as stopped.
    pub async fn stop(&self, unit: &str) -> Result<(), ScopeError> {
        let _permit = self.shared.in_flight.acquire().await;
        let manager = self.manager(|| format!("StopUnit({unit})")).await?;
        let call = async { Ok(manager.stop_unit(unit, "replace").await) };
        // Nobody waits for the stop job: systemd finishes it on its own
        // (bounded by the scope's stop timeout), its JobRemoved is dropped.
        match within(DBUS_CALL_DEADLINE, || format!("StopUnit({unit})"), call).await? {
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
        let manager = self.manager(|| "ListUnitsByPatterns".into()).await?;
        let units = within(DBUS_CALL_DEADLINE, || "ListUnitsByPatterns".into(), async {
            manager
                .list_units_by_patterns(&["active", "activating"], &["berth-*.scope"])
                .await
                .map_err(ScopeError::List)
        })
        .await?;
        let mut out = Vec::new();
        for u in units {
            let name = u.0;
            let procs = within(
                DBUS_CALL_DEADLINE,
                || format!("GetUnitProcesses({name})"),
                async {
                    manager.get_unit_processes(&name).await.map_err(|source| {
                        ScopeError::Processes {
                            unit: name.clone(),
                            source,
                        }
                    })
                },
            )
            .await;
            let procs = match procs {
                Ok(p) => p,
                // Ended and collected between the two calls: not there.
                Err(ScopeError::Processes { source, .. }) if is_no_such_unit(&source) => continue,
                Err(e) => return Err(e),
            };
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
        within(
            DBUS_CALL_DEADLINE,
            || format!("properties of {unit}"),
            self.stats_now(unit),
        )
        .await
    }

    async fn stats_now(&self, unit: &str) -> Result<ScopeStats, ScopeError> {
        let err = |source| ScopeError::Processes {
            unit: unit.into(),
            source,
        };
        let manager = self.manager(|| format!("properties of {unit}")).await?;
        let path = manager.get_unit(unit).await.map_err(err)?;
        let props = zbus::fdo::PropertiesProxy::builder(manager.inner().connection())
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

/// A new connection to systemd through the bus: match rule first,
/// `Subscribe` second, so no `JobRemoved` is missed; a dispatcher hands
/// each result to its waiter until the connection closes.
async fn open(shared: &Arc<Shared>) -> Result<ManagerProxy<'static>, ScopeError> {
    within(
        DBUS_CALL_DEADLINE,
        || "connecting to systemd".into(),
        async {
            let conn = zbus::Connection::system()
                .await
                .map_err(ScopeError::Connect)?;
            let manager = ManagerProxy::new(&conn)
                .await
                .map_err(ScopeError::Connect)?;
            let mut removed = manager
                .receive_job_removed()
                .await
                .map_err(ScopeError::Subscribe)?;
            manager.subscribe().await.map_err(ScopeError::Subscribe)?;
            let weak = Arc::downgrade(shared);
            tokio::spawn(async move {
                use futures_util::StreamExt;
                while let Some(sig) = removed.next().await {
                    let Ok(args) = sig.args() else { continue };
                    let Some(shared) = weak.upgrade() else { return };
                    lock(&shared.jobs).removed(&args.unit, args.job.as_str(), &args.result);
                }
            });
            Ok(manager)
        },
    )
    .await
}

/// Keep berth connected: wait for `conn` to close, fail the jobs waited
/// on (their signals are gone with it), reconnect with backoff, run the
/// hooks again. Ends when every [`Scopes`] is gone.
async fn keep(weak: std::sync::Weak<Shared>, mut conn: zbus::Connection) {
    loop {
        conn.closed().await;
        let Some(shared) = weak.upgrade() else { return };
        shared.link.send_replace(None);
        // Dropping the senders wakes every waiter with JobLost.
        lock(&shared.jobs).units.clear();
        tracing::error!(
            event = "bus-lost",
            "lost the connection to the system bus; reconnecting. New containers wait up \
             to {RECONNECT_WAIT:?} for it, then are refused: none starts without its scope"
        );
        let lost = tokio::time::Instant::now();
        let mut delay = BACKOFF_FIRST;
        let mut attempt: u32 = 0;
        let manager = loop {
            tokio::time::sleep(delay).await;
            attempt += 1;
            match open(&shared).await {
                Ok(m) => break m,
                Err(e) => {
                    // The first failures are expected (the bus or systemd
                    // still on its way back): a line now and then.
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!("reconnecting to the system bus (attempt {attempt}): {e}");
                    }
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
            }
        };
        conn = manager.inner().connection().clone();
        let hooks: Vec<ConnectHook> = lock(&shared.hooks).clone();
        let mut hooks_ok = true;
        for h in hooks {
            if let Err(e) = h(conn.clone()).await {
                hooks_ok = false;
                tracing::error!("after reconnecting to the system bus: {e}");
            }
        }
        shared.link.send_replace(Some(manager));
        tracing::info!(
            event = "bus-reconnected",
            "reconnected to the system bus after {} ms ({attempt} attempts){}",
            lost.elapsed().as_millis(),
            if hooks_ok {
                "; interface and bus name restored"
            } else {
                ""
            }
        );
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

/// systemd's answer for a unit that is not (or no longer) loaded.
fn is_no_such_unit(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _)
        if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit")
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

    #[test]
    fn jobs_nobody_waits_for_are_not_kept() {
        let mut m = JobMap::default();
        // StopUnit jobs, outside `systemctl stop berth-…`: never stored.
        for n in 0..1000 {
            let unit = format!("berth-x-{n:012x}.scope");
            m.removed(&unit, &format!("/org/freedesktop/systemd1/job/{n}"), "done");
        }
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn job_result_reaches_its_waiter_and_is_dropped() {
        let mut m = JobMap::default();
        let mut rx = m.expect("berth-x-0123456789ab.scope");
        m.job_known("berth-x-0123456789ab.scope", "/job/7");
        // Another job of the same unit (a stop from outside) is not ours.
        m.removed("berth-x-0123456789ab.scope", "/job/8", "canceled");
        assert!(rx.try_recv().is_err());
        m.removed("berth-x-0123456789ab.scope", "/job/7", "done");
        assert_eq!(rx.try_recv().ok().as_deref(), Some("done"));
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn job_removed_before_the_reply_is_matched() {
        let mut m = JobMap::default();
        let mut rx = m.expect("berth-x-0123456789ab.scope");
        m.removed("berth-x-0123456789ab.scope", "/job/9", "failed");
        assert_eq!(m.len(), 1);
        m.job_known("berth-x-0123456789ab.scope", "/job/9");
        assert_eq!(rx.try_recv().ok().as_deref(), Some("failed"));
        assert_eq!(m.len(), 0);
        // Early results per unit are bounded.
        let _rx = m.expect("berth-y-0123456789ab.scope");
        for n in 0..100 {
            m.removed("berth-y-0123456789ab.scope", &format!("/job/{n}"), "done");
        }
        assert!(m.units["berth-y-0123456789ab.scope"].early.len() <= EARLY_MAX);
    }

    #[tokio::test]
    async fn a_deadline_removes_the_waiter() {
        let jobs = Mutex::new(JobMap::default());
        let unit = "berth-x-0123456789ab.scope";
        let waited = async {
            let rx = lock(&jobs).expect(unit);
            let _forget = Forget { jobs: &jobs, unit };
            lock(&jobs).job_known(unit, "/job/1");
            tokio::time::timeout(Duration::from_millis(20), rx).await
        };
        assert!(
            waited.await.is_err(),
            "no JobRemoved: the deadline ends the wait"
        );
        assert_eq!(lock(&jobs).len(), 0);
        // A result arriving after the deadline is dropped, not stored.
        lock(&jobs).removed(unit, "/job/1", "done");
        assert_eq!(lock(&jobs).len(), 0);
    }
}
