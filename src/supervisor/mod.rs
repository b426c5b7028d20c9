//! The supervisor: turns readiness on a service's sockets into containers,
//! enforces connection limits, idle and lifetime timers, and throttles
//! services whose application keeps failing. It calls down into the sandbox
//! and never the other way round.

pub mod conns;
pub mod exhaustion;
pub mod history;
pub mod inetd;
pub mod limits;
pub mod listen;
pub mod registry;
pub mod run;
pub mod serve;
pub mod userns;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{self, CredentialsError, Network, Seccomp, Service};
use crate::sandbox::spawn::{self, Running, SpawnError, StartFds};
use crate::sandbox::{
    BindSpec, CREDENTIALS_BASE, CredentialSpec, EtcEntry, JournalSpec, SeccompProfile, Spec,
};
use crate::scope::{self, ScopeError, ScopeRequest, Scopes};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Credentials(#[from] CredentialsError),
    #[error("{0}")]
    Spawn(#[from] SpawnError),
    #[error("{0}")]
    Userns(#[from] userns::UsernsError),
    #[error(
        "private_users: the service runs as uid {uid} gid {gid}, outside the 0-65535 a container's \
         user namespace maps; choose a user and group below 65536"
    )]
    UnmappedUser { uid: u32, gid: u32 },
    #[error("{0}")]
    Scope(#[from] ScopeError),
    #[error("duplicating a descriptor for the container: {0}")]
    Dup(#[source] std::io::Error),
    #[error(
        "credential {0}: berth has no $CREDENTIALS_DIRECTORY to take it from (a bare name is a systemd credential: LoadCredential={0}:PATH on berth.service)"
    )]
    NoCredentialsDirectory(String),
}

impl LaunchError {
    /// A failure on systemd's side (scope creation), not the application's:
    /// it does not count towards throttling the service.
    pub fn is_infrastructure(&self) -> bool {
        matches!(self, LaunchError::Scope(_)) || self.exhaustion().is_some()
    }

    /// The errno, if the supervisor ran out of descriptors or memory (not
    /// the application's fault; see [`exhaustion`]).
    pub fn exhaustion(&self) -> Option<i32> {
        exhaustion::exhaustion_cause(self)
    }
}

/// Exit code for an error reaching the binary's edge: 2 for configuration
/// and usage errors, 1 for everything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<config::ConfigError>().is_some()
        || e.downcast_ref::<run::UsageError>().is_some()
        || matches!(
            e.downcast_ref::<serve::ServeError>(),
            Some(
                serve::ServeError::Config { .. }
                    | serve::ServeError::Activation(_)
                    | serve::ServeError::UnknownService(_)
                    | serve::ServeError::NotInetd(_)
            )
        )
    {
        2
    } else {
        1
    }
}

/// A container id: 12 hex digits, unique enough to name scopes across
/// supervisor restarts.
pub fn new_container_id() -> String {
    let mut b = [0u8; 6];
    if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).ok() != Some(b.len())
    {
        // Fall back to time and pid; uniqueness within this host is enough.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mixed = t ^ (u128::from(std::process::id()) << 48);
        b.copy_from_slice(&mixed.to_le_bytes()[..6]);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Resolves once the shutdown flag is set (or its sender is gone). The
/// watch guard stays inside, so callers' futures remain `Send`.
pub async fn stopping(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// What every container of one service shares.
pub struct Launcher {
    /// Swapped as a whole on reload; each container uses the definition
    /// current when it starts.
    service: std::sync::RwLock<Current>,
    pub staging_dir: PathBuf,
    /// Foreground run without scopes: containers die with the supervisor.
    pub die_with_supervisor: bool,
    /// Where the application's stderr (and stdout in listen mode) goes.
    pub output: OwnedFd,
    pub throttle: Throttle,
    /// Back-off and log limiter for running out of descriptors.
    pub exhaustion: exhaustion::Exhaustion,
    /// systemd scopes; `None` only for `berth run --no-scope`.
    pub scopes: Option<Scopes>,
    /// `berth serve`: containers outlive the supervisor (a restart adopts
    /// them); `berth run` ends them when it stops.
    pub keep_containers: bool,
    /// Containers of every service, for STATUS= and the D-Bus interface.
    pub registry: std::sync::Arc<registry::Registry>,
    /// How stage processes are started (shared by all services).
    pub stager: std::sync::Arc<spawn::Stager>,
    /// The `[slice]` last set on the service's slice (`None`: never set by
    /// this supervisor); held across the call so no scope starts before it.
    slice_set: tokio::sync::Mutex<Option<config::SliceLimits>>,
    /// Woken by `replace_service`: the warm pool drops what the old
    /// definition built and resizes to the new `warm`.
    pub reloaded: tokio::sync::Notify,
}

/// The definition in force and its short name, swapped together.
struct Current {
    service: std::sync::Arc<Service>,
    generation: String,
}

impl Current {
    fn new(service: Service) -> Current {
        Current {
            generation: registry::generation(&service),
            service: std::sync::Arc::new(service),
        }
    }
}

/// A container built and waiting for its descriptors (`warm`).
pub struct Parked {
    pub id: String,
    prepared: spawn::Prepared,
    pub unit: Option<String>,
    /// Its block of host ids (`private_users`).
    lease: Option<userns::Lease>,
    /// The definition it was built from (`registry::generation`).
    pub generation: String,
}

impl Launcher {
    /// Count a failed start; log the delay if the service is now throttled.
    pub fn note_failure(&self, id: &str) {
        let delay = self.throttle.failure();
        self.publish_throttle();
        if let Some(delay) = delay {
            tracing::warn!(
                service = %self.service().name, container = %id, event = "throttled",
                "{}: {} failed starts in a row; next start delayed {delay:?}",
                self.service().name,
                self.throttle.consecutive_failures()
            );
        }
    }

    /// `doing` failed for lack of descriptors or memory (`errno`): back off
    /// and log, at most once per [`exhaustion::LOG_INTERVAL`].
    pub fn note_exhaustion(&self, doing: &str, errno: i32) {
        let Some(quiet) = self.exhaustion.hit(Instant::now()) else {
            tracing::debug!(service = %self.service().name, "{doing}: {}", exhaustion::describe(errno));
            return;
        };
        {
            let name = &self.service().name;
            let earlier = if quiet > 0 {
                format!(" ({quiet} more since the last entry)")
            } else {
                String::new()
            };
            tracing::warn!(
                service = %name, event = "exhausted",
                "{name}: {doing}: {}: new connections wait in the backlog while berth \
                 retries with a growing delay{earlier}; further such entries in the next \
                 {:?} are not logged",
                exhaustion::describe(errno),
                exhaustion::LOG_INTERVAL
            );
        }
    }

    /// A container ran properly: the failure count starts over.
    pub fn note_success(&self) {
        self.throttle.success();
        self.publish_throttle();
    }

    fn publish_throttle(&self) {
        self.registry.set_service(registry::ServiceInfo {
            name: self.service().name.clone(),
            failures: self.throttle.consecutive_failures(),
            throttled_until_usec: self.throttle.remaining().map_or(0, registry::usec_after),
            generation: self.generation(),
        });
    }

    /// Enter a running container in the registry while the guard lives.
    pub fn register(&self, c: &Container, peer: &str) -> registry::Registered {
        self.registry.register(registry::ContainerInfo {
            id: c.id.clone(),
            service: self.service().name.clone(),
            unit: c.unit.clone().unwrap_or_default(),
            pid: c.running.init_pid(),
            state: registry::ContainerState::Running,
            started_usec: registry::now_usec(),
            connections: 0,
            idle_deadline_usec: 0,
            peer: peer.into(),
            generation: c.generation.clone(),
        })
    }
}

/// A running container and the scope it lives in.
pub struct Container {
    pub id: String,
    pub running: Running,
    pub unit: Option<String>,
    /// Its block of host ids (`private_users`), free again once the
    /// container is dropped after it ended.
    pub lease: Option<userns::Lease>,
    /// The definition it was built from; empty when adopted from an
    /// earlier supervisor (which definition is not recorded anywhere).
    pub generation: String,
}

/// journald's syslog socket, bound at /dev/log when the service wants it.
const DEV_LOG: &str = "/run/systemd/journal/dev-log";

impl Launcher {
    pub fn new(
        service: Service,
        output: OwnedFd,
        scopes: Option<Scopes>,
        keep_containers: bool,
        registry: std::sync::Arc<registry::Registry>,
        stager: std::sync::Arc<spawn::Stager>,
    ) -> Launcher {
        let l = Launcher {
            service: std::sync::RwLock::new(Current::new(service)),
            staging_dir: crate::sandbox::DEFAULT_STAGING_DIR.into(),
            die_with_supervisor: scopes.is_none(),
            output,
            throttle: Throttle::new(),
            exhaustion: exhaustion::Exhaustion::default(),
            scopes,
            keep_containers,
            registry,
            stager,
            slice_set: tokio::sync::Mutex::new(None),
            reloaded: tokio::sync::Notify::new(),
        };
        // `berth status` compares each container's definition with this.
        l.publish_throttle();
        l
    }

    /// Bring `berth-NAME.slice` in line with `[slice]` before a scope joins
    /// it: the first time, and after a reload changed it.
    async fn ensure_slice(&self, scopes: &Scopes, svc: &Service) -> Result<(), ScopeError> {
        let mut set = self.slice_set.lock().await;
        let unchanged = match &*set {
            Some(done) => *done == svc.slice,
            None => svc.slice.is_empty(),
        };
        if !unchanged {
            scopes
                .set_slice(&scope::slice_name(&svc.name), &svc.slice)
                .await?;
            *set = Some(svc.slice.clone());
        }
        Ok(())
    }

    /// The service definition in force now.
    pub fn service(&self) -> std::sync::Arc<Service> {
        self.service
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .service
            .clone()
    }

    /// Use `new` for containers started from now on; sandboxes parked from
    /// the old definition are replaced (their owners are woken).
    pub fn replace_service(&self, new: Service) {
        *self.service.write().unwrap_or_else(|p| p.into_inner()) = Current::new(new);
        self.publish_throttle();
        self.reloaded.notify_waiters();
    }

    /// The short name of the definition in force now.
    pub fn generation(&self) -> String {
        self.service
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .generation
            .clone()
    }

    /// Whether a parked sandbox was built from the definition in force.
    pub fn is_current(&self, p: &Parked) -> bool {
        p.generation == self.generation()
    }

    fn spec(
        &self,
        s: &Service,
        creds: config::Credentials,
        id: &str,
        private_users: Option<u32>,
    ) -> Result<Spec, LaunchError> {
        let mut env: Vec<(String, String)> = s
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("BERTH_SERVICE".into(), s.name.clone()));
        env.push((
            "RUNTIME_DIRECTORY".into(),
            format!("/run/{}", s.sandbox.runtime_directory),
        ));
        if s.sandbox.state_directory {
            env.push(("STATE_DIRECTORY".into(), format!("/var/lib/{}", s.name)));
        }
        let credentials = credential_specs(&s.sandbox.credentials)?;
        if !credentials.is_empty() {
            env.push((
                "CREDENTIALS_DIRECTORY".into(),
                format!("{CREDENTIALS_BASE}/{}", s.name),
            ));
        }
        let mut binds: Vec<BindSpec> = Vec::new();
        for b in &s.sandbox.read_only {
            if b.dest == std::path::Path::new("/usr") && b.source == b.dest {
                continue; // always there
            }
            binds.push(BindSpec {
                source: b.source.clone(),
                dest: b.dest.clone(),
                read_only: true,
                idmap: b.idmap,
            });
        }
        for b in &s.sandbox.read_write {
            binds.push(BindSpec {
                source: b.source.clone(),
                dest: b.dest.clone(),
                read_only: false,
                idmap: b.idmap,
            });
        }
        let dev_log = (s.sandbox.syslog && std::path::Path::new(DEV_LOG).exists())
            .then(|| PathBuf::from(DEV_LOG));
        Ok(Spec {
            service: s.name.clone(),
            exec: s.exec.clone(),
            env,
            listen_fdnames: Vec::new(),
            uid: creds.uid,
            gid: creds.gid,
            hostname: s.hostname.clone(),
            working_directory: s.working_directory.clone(),
            private_network: s.sandbox.network == Network::None,
            staging_dir: self.staging_dir.clone(),
            binds,
            propagation: s.sandbox.propagation,
            tmp_size: s.sandbox.tmp_size,
            etc: s
                .sandbox
                .etc
                .iter()
                .map(|n| EtcEntry {
                    name: n.clone(),
                    required: s.sandbox.etc_explicit,
                })
                .collect(),
            capabilities: s.sandbox.capabilities.clone(),
            seccomp: match s.sandbox.seccomp {
                Seccomp::Default => SeccompProfile::Default,
                Seccomp::Compat => SeccompProfile::Compat,
                Seccomp::Off => SeccompProfile::Off,
            },
            dev_log,
            journal: (self.scopes.is_some() && crate::journal::available()).then(|| JournalSpec {
                identifier: s.name.clone(),
                unit: scope::unit_name(&s.name, id),
                stdout: s.mode == config::Mode::Listen,
            }),
            die_with_supervisor: self.die_with_supervisor,
            low_priority: false,
            runtime_directory: s.sandbox.runtime_directory.clone(),
            state_directory: s.sandbox.state_directory,
            credentials,
            private_users,
        })
    }

    /// Build a sandbox and run the application in it with these
    /// descriptors. Users are resolved now, so changes to the host's user
    /// database apply to the next container.
    pub async fn launch(
        &self,
        id: &str,
        peer: Option<&str>,
        stdin: &OwnedFd,
        stdout: Option<&OwnedFd>,
        listeners: &[OwnedFd],
        fdnames: &[String],
    ) -> Result<Container, LaunchError> {
        let parked = self.prepare(id, peer, fdnames, false).await?;
        self.start(parked, stdin, stdout, listeners).await
    }

    /// Everything before the application's exec: sandbox and scope. A
    /// parked container costs its two stage processes and nothing else.
    /// `ahead`: nobody waits for it yet (warm), so it is built as
    /// `SCHED_BATCH`.
    pub async fn prepare(
        &self,
        id: &str,
        peer: Option<&str>,
        fdnames: &[String],
        ahead: bool,
    ) -> Result<Parked, LaunchError> {
        // One snapshot: the definition and its name cannot disagree.
        let (svc, generation) = {
            let c = self.service.read().unwrap_or_else(|p| p.into_inner());
            (c.service.clone(), c.generation.clone())
        };
        let creds = config::resolve_credentials(&svc.user, svc.group.as_ref())?;
        if svc.sandbox.private_users
            && (creds.uid >= config::USERNS_BLOCK || creds.gid >= config::USERNS_BLOCK)
        {
            return Err(LaunchError::UnmappedUser {
                uid: creds.uid,
                gid: creds.gid,
            });
        }
        let lease = if svc.sandbox.private_users {
            Some(userns::BLOCKS.allocate(svc.private_users_range)?)
        } else {
            None
        };
        let mut spec = self.spec(&svc, creds, id, lease.as_ref().map(userns::Lease::base))?;
        spec.listen_fdnames = fdnames.to_vec();
        spec.low_priority = ahead;
        if let Some(scopes) = &self.scopes {
            self.ensure_slice(scopes, &svc).await?;
        }
        let pending = spawn::spawn(&spec, &self.stager).await?;
        let mut unit = None;
        let prepared = if let Some(scopes) = &self.scopes {
            let name = scope::unit_name(&svc.name, id);
            let slice = scope::slice_name(&svc.name);
            let description = match peer {
                Some(p) => format!("berth container of {} for {p}", svc.name),
                None => format!("berth container of {}", svc.name),
            };
            let pids = pending.pids();
            // systemd's part (a few ms, TESTBED.md) overlaps the stage's
            // mounts instead of adding to them.
            let req = ScopeRequest {
                unit: &name,
                slice: &slice,
                description: &description,
                pids: &pids,
                resources: &svc.resources,
                stop_timeout: svc.stop_timeout,
            };
            let (parked, made) = tokio::join!(pending.parked(), scopes.create(&req));
            match (parked, made) {
                (Ok(p), Ok(())) => {
                    unit = Some(name);
                    p
                }
                (Ok(p), Err(e)) => {
                    // The application never runs without its scope.
                    p.discard().await;
                    return Err(e.into());
                }
                (Err(e), made) => {
                    if made.is_ok() {
                        let _ = scopes.stop(&name).await;
                    }
                    return Err(e.into());
                }
            }
        } else {
            pending.parked().await?
        };
        Ok(Parked {
            id: id.to_owned(),
            prepared,
            unit,
            lease,
            generation,
        })
    }

    /// Hand a parked container its descriptors and let the application run.
    pub async fn start(
        &self,
        parked: Parked,
        stdin: &OwnedFd,
        stdout: Option<&OwnedFd>,
        listeners: &[OwnedFd],
    ) -> Result<Container, LaunchError> {
        let out = match stdout {
            Some(o) => o,
            None => &self.output,
        };
        let started = parked
            .prepared
            .start(StartFds {
                stdin,
                stdout: out,
                stderr: &self.output,
                listeners,
            })
            .await;
        let running = match started {
            Ok(r) => r,
            Err(e) => {
                if let (Some(scopes), Some(unit)) = (&self.scopes, &parked.unit) {
                    let _ = scopes.stop(unit).await;
                }
                return Err(e.into());
            }
        };
        Ok(Container {
            id: parked.id,
            running,
            unit: parked.unit,
            lease: parked.lease,
            generation: parked.generation,
        })
    }

    /// Build a sandbox ahead of need (`warm`), listed as "warm" until it is
    /// used. `None` if it could not be built: logged, and counted against
    /// the service unless systemd's side failed.
    pub async fn prepare_ahead(&self, fdnames: &[String]) -> Option<Parked> {
        let svc = self.service();
        let id = new_container_id();
        match self.prepare(&id, None, fdnames, true).await {
            Ok(p) => {
                self.registry.insert(registry::ContainerInfo {
                    id: p.id.clone(),
                    service: svc.name.clone(),
                    unit: p.unit.clone().unwrap_or_default(),
                    pid: 0,
                    state: registry::ContainerState::Warm,
                    started_usec: registry::now_usec(),
                    connections: 0,
                    idle_deadline_usec: 0,
                    peer: String::new(),
                    generation: p.generation.clone(),
                });
                tracing::debug!(
                    service = %svc.name, container = %id, event = "warm",
                    "sandbox prepared ahead"
                );
                Some(p)
            }
            Err(e) if let Some(errno) = e.exhaustion() => {
                self.note_exhaustion("preparing a warm sandbox", errno);
                None
            }
            Err(e) => {
                tracing::error!(
                    service = %svc.name, container = %id, event = "failed",
                    "preparing a warm sandbox: {e}"
                );
                if !e.is_infrastructure() {
                    self.note_failure(&id);
                }
                None
            }
        }
    }

    /// Start a sandbox built ahead. `None` if it died meanwhile (logged):
    /// the caller builds one on demand.
    pub async fn start_warm(
        &self,
        parked: Parked,
        stdin: &OwnedFd,
        stdout: Option<&OwnedFd>,
        listeners: &[OwnedFd],
    ) -> Option<Container> {
        let id = parked.id.clone();
        self.registry.remove(&id);
        match self.start(parked, stdin, stdout, listeners).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(
                    service = %self.service().name, container = %id,
                    "warm sandbox unusable ({e}); starting one on demand"
                );
                None
            }
        }
    }

    /// Throw a parked container away (shutdown, pool shrink).
    pub async fn discard(&self, parked: Parked) {
        self.registry.remove(&parked.id);
        parked.prepared.discard().await;
        if let (Some(scopes), Some(unit)) = (&self.scopes, &parked.unit) {
            let _ = scopes.stop(unit).await;
        }
    }

    /// End a container: SIGTERM to the application, SIGKILL to all of it
    /// `stop_timeout` later. Through its scope (systemd signals everything
    /// in it; the scope's TimeoutStopUSec= is `stop_timeout`), or through
    /// PID 1 of its pid namespace without scopes. Either way it is gone
    /// soon after `stop_timeout`: berth kills PID 1 itself if systemd has
    /// not ended it a moment after.
    pub async fn kill(&self, c: &mut Container) -> std::io::Result<std::process::ExitStatus> {
        let grace = self.service().stop_timeout;
        match (&self.scopes, &c.unit) {
            (Some(scopes), Some(unit)) => {
                if let Err(e) = scopes.stop(unit).await {
                    tracing::warn!(
                        service = %self.service().name, container = %c.id,
                        "{e}; stopping the container directly"
                    );
                    return c.running.terminate(grace).await;
                }
                match tokio::time::timeout(grace + STOP_SLACK, c.running.wait()).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(
                            service = %self.service().name, container = %c.id,
                            "still running {:?} after StopUnit({unit}); killing it directly",
                            grace + STOP_SLACK
                        );
                        c.running.kill();
                        c.running.wait().await
                    }
                }
            }
            _ => c.running.terminate(grace).await,
        }
    }
}

/// Where each credential is read from: its own path, or for a bare name
/// berth's `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=` on
/// berth.service), looked up at each start.
fn credential_specs(list: &[config::CredentialFile]) -> Result<Vec<CredentialSpec>, LaunchError> {
    let inherited = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute());
    list.iter()
        .map(|c| match (&c.source, &inherited) {
            (Some(path), _) => Ok(CredentialSpec {
                name: c.name.clone(),
                source: path.clone(),
                inherited: false,
            }),
            (None, Some(dir)) => Ok(CredentialSpec {
                name: c.name.clone(),
                source: dir.join(&c.name),
                inherited: true,
            }),
            (None, None) => Err(LaunchError::NoCredentialsDirectory(c.name.clone())),
        })
        .collect()
}

/// How long past `stop_timeout` berth waits for systemd's SIGKILL to end a
/// stopped scope before it kills PID 1 itself.
const STOP_SLACK: Duration = Duration::from_secs(2);

/// Growing delays for a service whose containers keep failing at once.
pub struct Throttle {
    state: Mutex<ThrottleState>,
}

#[derive(Default)]
struct ThrottleState {
    consecutive: u32,
    until: Option<Instant>,
}

/// A container that ends within this time of starting, unsuccessfully,
/// counts as a failed start.
pub const QUICK_EXIT: Duration = Duration::from_secs(1);
/// Failures in a row tolerated before delays begin.
const FREE_FAILURES: u32 = 3;
const MAX_DELAY: Duration = Duration::from_secs(30);

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

impl Throttle {
    pub fn new() -> Self {
        Throttle {
            state: Mutex::new(ThrottleState::default()),
        }
    }

    /// Record a failed start; returns the delay now imposed, if any.
    pub fn failure(&self) -> Option<Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.consecutive += 1;
        if s.consecutive < FREE_FAILURES {
            return None;
        }
        let exp = (s.consecutive - FREE_FAILURES).min(10);
        let delay = (Duration::from_millis(250) * 2u32.pow(exp)).min(MAX_DELAY);
        s.until = Some(Instant::now() + delay);
        Some(delay)
    }

    pub fn success(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.consecutive = 0;
        s.until = None;
    }

    /// How long to hold off before starting another container.
    pub fn remaining(&self) -> Option<Duration> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.until
            .and_then(|u| u.checked_duration_since(Instant::now()))
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .consecutive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_grows_and_resets() {
        let t = Throttle::new();
        assert_eq!(t.failure(), None);
        assert_eq!(t.failure(), None);
        let d1 = t.failure().expect("third failure delays");
        let d2 = t.failure().expect("fourth failure delays");
        assert!(d2 > d1);
        assert!(t.remaining().is_some());
        t.success();
        assert_eq!(t.remaining(), None);
        assert_eq!(t.consecutive_failures(), 0);
    }

    #[test]
    fn ids_are_hex_and_distinct() {
        let a = new_container_id();
        let b = new_container_id();
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
