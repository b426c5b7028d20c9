//! listen mode: one container per service, started by the first
//! connection, handed the listening sockets, stopped when idle.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::socket::{SockaddrStorage, getsockname};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::conns::{self, ListenerKey};
use super::{Container, Launcher, QUICK_EXIT, new_container_id};
use crate::activation::{ListenAddr, Listener};
use crate::cgroup;
use crate::metrics::StopReason;
use crate::sandbox::spawn::describe;

fn key_of(l: &Listener) -> Option<ListenerKey> {
    match &l.addr {
        ListenAddr::Unix(p) => Some(ListenerKey::Unix(p.clone())),
        ListenAddr::Tcp(_) => {
            let a = getsockname::<SockaddrStorage>(l.fd.as_raw_fd()).ok()?;
            a.as_sockaddr_in()
                .map(|v4| v4.port())
                .or_else(|| a.as_sockaddr_in6().map(|v6| v6.port()))
                .map(ListenerKey::Tcp)
        }
    }
}

/// Wait until some listener has a connection queued. The readiness tokio
/// caches can be stale (the last container drained the queue), so it is
/// confirmed with a zero-timeout poll before it counts.
async fn wait_readable(watch: &[AsyncFd<OwnedFd>], fds: &[OwnedFd]) {
    loop {
        if conns::pending(fds) {
            return;
        }
        std::future::poll_fn(|cx| {
            for w in watch {
                if let Poll::Ready(Ok(mut guard)) = w.poll_read_ready(cx) {
                    // Clear and re-check above: only a real queue counts.
                    guard.clear_ready();
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await;
    }
}

/// What the serving loop works with: the service's listeners, watched for
/// readiness on duplicates, and what each container is handed.
struct Sockets {
    keys: Vec<ListenerKey>,
    watchers: Vec<AsyncFd<OwnedFd>>,
    fds: Vec<OwnedFd>,
    fdnames: Vec<String>,
    /// The application's stdin and stdout (its sockets are LISTEN_FDS).
    devnull: OwnedFd,
}

impl Sockets {
    /// Watch every listener and open /dev/null; `None` (logged) if a step
    /// fails, and the service is not served.
    fn open(name: &str, listeners: Vec<Listener>) -> Option<Sockets> {
        let keys: Vec<ListenerKey> = listeners.iter().filter_map(key_of).collect();
        let mut watchers = Vec::new();
        for l in &listeners {
            let dup = match l.fd.as_fd().try_clone_to_owned() {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(service = %name, "duplicating listener {}: {e}", l.addr);
                    return None;
                }
            };
            // SAFETY: the AsyncFd owns the duplicate for its whole life and
            // never closes or replaces it while registered.
            match unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) } {
                Ok(w) => watchers.push(w),
                Err(e) => {
                    tracing::error!(service = %name, "watching {}: {e}", l.addr);
                    return None;
                }
            }
        }
        let fds: Vec<OwnedFd> = listeners.into_iter().map(|l| l.fd).collect();
        let fdnames = vec![name.to_string(); fds.len()];
        let devnull = match std::fs::File::open("/dev/null") {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                tracing::error!(service = %name, "opening /dev/null: {e}");
                return None;
            }
        };
        Some(Sockets {
            keys,
            watchers,
            fds,
            fdnames,
            devnull,
        })
    }
}

/// Where berth notes, per listen service, whether the running application
/// made its listeners non-blocking (see [`remember_flags`]).
const FLAGS_DIR: &str = "/run/berth/listen-flags";

/// Whether each listener is non-blocking (`None`: fcntl failed).
fn nonblocking(fds: &[OwnedFd]) -> Option<Vec<bool>> {
    fds.iter()
        .map(|fd| {
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
                .ok()
                .map(|f| {
                    nix::fcntl::OFlag::from_bits_truncate(f).contains(nix::fcntl::OFlag::O_NONBLOCK)
                })
        })
        .collect()
}

/// systemd clears O_NONBLOCK on every socket it passes each time it starts
/// berth.service (`NonBlocking=no`), and status flags belong to the open
/// file description, which a running container's application shares: after
/// a supervisor restart an event-driven server (lighttpd, nginx) that made
/// its listener non-blocking would block in accept() and stop serving its
/// open connections. So the flags the application set are noted while it
/// runs (only when they change) and put back by [`restore_flags`] when the
/// next supervisor adopts the container.
fn remember_flags(name: &str, fds: &[OwnedFd], noted: &mut Option<Vec<bool>>) {
    let Some(now) = nonblocking(fds) else { return };
    if noted.as_ref() == Some(&now) {
        return;
    }
    let text: String = now.iter().map(|b| if *b { '1' } else { '0' }).collect();
    let path = std::path::Path::new(FLAGS_DIR).join(name);
    match std::fs::create_dir_all(FLAGS_DIR).and_then(|()| std::fs::write(&path, text + "\n")) {
        Ok(()) => *noted = Some(now),
        Err(e) => {
            tracing::warn!(service = %name, "noting the listeners' flags in {}: {e}", path.display())
        }
    }
}

/// Put back the non-blocking flags an adopted container's application had
/// set on its listeners (see [`remember_flags`]).
fn restore_flags(name: &str, fds: &[OwnedFd]) {
    let path = std::path::Path::new(FLAGS_DIR).join(name);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let want: Vec<bool> = text.trim().chars().map(|c| c == '1').collect();
    if want.len() != fds.len() || !text.trim().chars().all(|c| c == '0' || c == '1') {
        tracing::warn!(service = %name, "{}: not the flags of this service's {} listeners; left as they are", path.display(), fds.len());
        return;
    }
    for (fd, nb) in fds.iter().zip(want) {
        let Ok(bits) = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL) else {
            continue;
        };
        let mut flags = nix::fcntl::OFlag::from_bits_truncate(bits);
        flags.set(nix::fcntl::OFlag::O_NONBLOCK, nb);
        if let Err(e) = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)) {
            tracing::warn!(service = %name, "restoring the adopted application's listener flags: {e}");
        }
    }
}

/// What one wait for the next container came to.
enum Next {
    /// Boxed: a container is far larger than the other variants.
    Run(Box<Container>),
    /// It failed to start (logged and counted); wait again.
    Retry,
    Shutdown,
}

pub async fn serve(
    launcher: Arc<Launcher>,
    listeners: Vec<Listener>,
    mut shutdown: watch::Receiver<bool>,
    mut adopted: Option<Container>,
) {
    let name = launcher.service().name.clone();
    let Some(sockets) = Sockets::open(&name, listeners) else {
        return;
    };
    // `warm = 1`: the next container, built ahead and parked before its
    // exec, so a wake from idle waits only for the application's start-up.
    let mut parked: Option<super::Parked> = None;
    loop {
        let started = Instant::now();
        let c = if let Some(c) = adopted.take() {
            tracing::info!(
                service = %name, container = %c.id, event = "adopted",
                pid = c.running.init_pid(), "took over a running container"
            );
            restore_flags(&name, &sockets.fds);
            c
        } else {
            match next_container(&launcher, &sockets, &mut parked, &mut shutdown).await {
                Next::Run(c) => *c,
                Next::Retry => continue,
                Next::Shutdown => return,
            }
        };
        if !run_container(&launcher, c, &sockets, started, &mut shutdown).await {
            return;
        }
    }
}

/// Wait out the throttle, park a warm container if the service wants one,
/// wait for a connection, then start the container that takes it.
async fn next_container(
    launcher: &Launcher,
    sockets: &Sockets,
    parked: &mut Option<super::Parked>,
    shutdown: &mut watch::Receiver<bool>,
) -> Next {
    if let Some(delay) = launcher.throttle.remaining() {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = super::stopping(shutdown) => return Next::Shutdown,
        }
    }
    if launcher.service().warm > 0 && parked.is_none() {
        tokio::select! {
            p = launcher.prepare_ahead(&sockets.fdnames) => *parked = p,
            _ = super::stopping(shutdown) => return Next::Shutdown,
        }
    }
    tokio::select! {
        _ = wait_readable(&sockets.watchers, &sockets.fds) => {}
        _ = launcher.reloaded.notified() => {
            // A new definition: the parked sandbox of the old one (or one
            // `warm = 0` no longer wants) goes, and the loop parks anew.
            if let Some(p) = parked.take() {
                if launcher.is_current(&p) && launcher.service().warm > 0 {
                    *parked = Some(p);
                } else {
                    launcher.discard(p).await;
                }
            }
            return Next::Retry;
        }
        _ = super::stopping(shutdown) => {
            if let Some(p) = parked.take() {
                launcher.discard(p).await;
            }
            return Next::Shutdown;
        }
    }
    // A connection woke the service (metrics: wakes and start latency).
    let woke = Instant::now();
    let next = start(launcher, sockets, parked.take()).await;
    if let Next::Run(_) = next {
        let name = &launcher.service().name;
        launcher.registry.metrics.wake(name);
        launcher.registry.metrics.started(name, woke.elapsed());
    }
    next
}

/// Start the parked container, or a new one if there is none (or it did
/// not start); a failure is logged and counted.
async fn start(launcher: &Launcher, sockets: &Sockets, parked: Option<super::Parked>) -> Next {
    let name = &launcher.service().name;
    let warm = match parked {
        Some(p) if !launcher.is_current(&p) => {
            // Parked before a reload that raced this connection.
            launcher.discard(p).await;
            None
        }
        Some(p) => {
            launcher
                .start_warm(p, &sockets.devnull, None, &sockets.fds)
                .await
        }
        None => None,
    };
    if launcher.service().warm > 0 {
        launcher.registry.metrics.warm(name, warm.is_some());
    }
    let launched = match warm {
        Some(c) => Ok(c),
        None => {
            let id = new_container_id();
            launcher
                .launch(
                    &id,
                    None,
                    &sockets.devnull,
                    None,
                    &sockets.fds,
                    &sockets.fdnames,
                )
                .await
                .map_err(|e| (id, e))
        }
    };
    match launched {
        Ok(c) => {
            launcher.exhaustion.success();
            Next::Run(Box::new(c))
        }
        Err((_, e)) if let Some(errno) = e.exhaustion() => {
            // Out of descriptors: not the application's failure; wait
            // (growing delay, logged once per interval) and try again.
            launcher.registry.metrics.failed(name);
            launcher.note_exhaustion("starting the container", errno);
            if let Some(delay) = launcher.exhaustion.remaining(Instant::now()) {
                tokio::time::sleep(delay).await;
            }
            Next::Retry
        }
        Err((id, e)) => {
            tracing::error!(
                service = %name, container = %id, event = "failed",
                "{name}: container failed to start ({id}): {e}"
            );
            launcher.registry.metrics.failed(name);
            if !e.is_infrastructure() {
                launcher.note_failure(&id);
            }
            // Without a delay, the queued connection would wake us at once.
            if launcher.throttle.remaining().is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Next::Retry
        }
    }
}

/// Register and supervise one container until it ends, then log how and
/// count it for the throttle. False when the service is no longer served.
async fn run_container(
    launcher: &Launcher,
    mut c: Container,
    sockets: &Sockets,
    started: Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let name = &launcher.service().name;
    let id = c.id.clone();
    if !c.running.adopted() {
        tracing::info!(
            service = %name, container = %id, event = "started",
            pid = c.running.init_pid(), unit = c.unit.as_deref().unwrap_or("-"),
            "{name}: container started ({id})"
        );
    }
    let reg = launcher.register(&c, "");
    let (reason, status) = supervise(launcher, &mut c, sockets, shutdown, &reg).await;
    drop(reg);
    if reason == Stop::Shutdown && launcher.keep_containers {
        tracing::info!(
            service = %name, container = %id, event = "detached",
            "supervisor stopping; container left running in its scope"
        );
        return false;
    }
    let text = match &status {
        Ok(s) => describe(*s),
        Err(e) => format!("wait failed: {e}"),
    };
    launcher.registry.metrics.stopped(
        name,
        match reason {
            Stop::Exited => StopReason::Exit,
            Stop::Idle => StopReason::Idle,
            Stop::Lifetime => StopReason::Lifetime,
            Stop::Shutdown => StopReason::Stop,
        },
    );
    tracing::info!(
        service = %name, container = %id, event = "stopped",
        "{name}: container stopped ({reason}; {id}): {text}"
    );
    match reason {
        Stop::Shutdown => return false,
        Stop::Exited if started.elapsed() < QUICK_EXIT => launcher.note_failure(&id),
        _ => launcher.note_success(),
    }
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Exited,
    Idle,
    Lifetime,
    Shutdown,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Exited => "exited",
            Stop::Idle => "idle_timeout reached",
            Stop::Lifetime => "max_lifetime reached",
            Stop::Shutdown => "supervisor stopping",
        })
    }
}

/// Watch one container until it ends or must be ended.
async fn supervise(
    launcher: &Launcher,
    c: &mut Container,
    sockets: &Sockets,
    shutdown: &mut watch::Receiver<bool>,
    reg: &super::registry::Registered,
) -> (Stop, std::io::Result<std::process::ExitStatus>) {
    let (fds, keys) = (&sockets.fds[..], &sockets.keys[..]);
    let svc = launcher.service();
    let deadline = svc.max_lifetime.map(|d| tokio::time::Instant::now() + d);
    let shortest = match (svc.idle_timeout, svc.freeze_after) {
        (Some(i), Some(f)) => Some(i.min(f)),
        (i, f) => i.or(f),
    };
    let step = shortest
        .map(|d| (d / 10).clamp(Duration::from_millis(20), Duration::from_secs(2)))
        .unwrap_or(Duration::from_secs(3600));
    if c.running.adopted() {
        // A supervisor that ended while its container was frozen left it
        // so: let it run (a no-op when it is not frozen).
        if let Some(f) = c
            .unit
            .as_deref()
            .and_then(|u| cgroup::freezer_of(c.running.init_pid(), u))
            && let Err(e) = f.thaw()
        {
            tracing::warn!(service = %svc.name, container = %c.id, "{e}");
        }
    }
    let mut last_busy = Instant::now();
    let mut last_acceptors = BTreeMap::new();
    let mut last_io = 0u64;
    // The application's listener flags, for the next supervisor (only
    // where one may adopt this container).
    let mut noted = None;
    let step = if launcher.keep_containers {
        step.min(Duration::from_secs(2))
    } else {
        step
    };
    loop {
        let lifetime = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            s = c.running.wait() => return (Stop::Exited, s),
            _ = lifetime => return (Stop::Lifetime, launcher.kill(c).await),
            _ = super::stopping(shutdown) => {
                if launcher.keep_containers {
                    return (Stop::Shutdown, Ok(std::os::unix::process::ExitStatusExt::from_raw(0)));
                }
                return (Stop::Shutdown, launcher.kill(c).await);
            }
            _ = tokio::time::sleep(step) => {}
        }
        if launcher.keep_containers {
            remember_flags(&svc.name, fds, &mut noted);
        }
        if shortest.is_none() {
            continue;
        }
        let init = c.running.init_pid();
        // Connections shorter than a sampling step leave no socket to see,
        // and readiness of the listener is gone once it was accepted. What
        // stays: servers asleep in accept() switch once per connection, and
        // servers that read and write their sockets (lighttpd, nginx) move
        // their read/write syscall counts. Either change is activity.
        let tree = conns::process_tree(init);
        let acceptors = conns::acceptors(&tree);
        let io = conns::io_syscalls(&tree);
        let taken = conns::accepted_since(&last_acceptors, &acceptors) || io != last_io;
        last_acceptors = acceptors;
        last_io = io;
        if taken {
            last_busy = Instant::now();
        }
        let open = conns::open_connections(init, keys);
        reg.update(|i| {
            i.connections = open as u32;
            i.idle_deadline_usec = svc.idle_timeout.map_or(0, |limit| {
                super::registry::usec_after(limit.saturating_sub(last_busy.elapsed()))
            });
        });
        if open > 0 || conns::pending(fds) {
            last_busy = Instant::now();
            continue;
        }
        let idle = last_busy.elapsed();
        if let Some(limit) = svc.idle_timeout
            && idle >= limit
        {
            // Freeze, look again, then kill: a connection accepted between
            // the first look and the kill would otherwise be cut. Queued
            // ones stay in the listener (berth holds it) for the next
            // container.
            let Some(held) = hold(&svc.name, c).await else {
                last_busy = Instant::now();
                continue;
            };
            launcher.registry.metrics.frozen(&svc.name);
            // Frozen threads are no longer "in accept"; here only
            // connections still open or queued matter (one already served
            // is not lost).
            if busy(init, fds, keys) {
                held.release();
                launcher.registry.metrics.thawed(&svc.name);
                last_busy = Instant::now();
                continue;
            }
            held.terminate();
            // SIGTERM again to all of it (through the scope) and SIGKILL
            // `stop_timeout` later; anything that escaped the namespace too.
            return (Stop::Idle, launcher.kill(c).await);
        }
        if let Some(after) = svc.freeze_after
            && idle >= after
        {
            let idle_end = svc
                .idle_timeout
                .map(|limit| tokio::time::Instant::now() + limit.saturating_sub(idle));
            match frozen(launcher, c, sockets, shutdown, reg, idle_end, deadline).await {
                Frozen::Woke => {
                    last_busy = Instant::now();
                }
                Frozen::Ended(stop, status) => return (stop, status),
            }
        }
    }
}

/// How a frozen idle period ended.
enum Frozen {
    /// A connection came (or the container could not be held still):
    /// it runs again.
    Woke,
    Ended(Stop, std::io::Result<std::process::ExitStatus>),
}

/// `freeze_after`: freeze the idle container, hand back its reclaimable
/// memory, and keep it frozen until a connection waits in a listener
/// (berth holds them, so it sees the queue without the application), the
/// idle timer ends (`idle_end`), its lifetime ends, or berth stops.
async fn frozen(
    launcher: &Launcher,
    c: &mut Container,
    sockets: &Sockets,
    shutdown: &mut watch::Receiver<bool>,
    reg: &super::registry::Registered,
    idle_end: Option<tokio::time::Instant>,
    lifetime_end: Option<tokio::time::Instant>,
) -> Frozen {
    let svc = launcher.service();
    let name = &svc.name;
    let init = c.running.init_pid();
    let Some(held) = hold(name, c).await else {
        return Frozen::Woke;
    };
    // The same last look as before a stop: a connection accepted just
    // before the freeze, or queued since, must be served now.
    if busy(init, &sockets.fds, &sockets.keys) {
        held.release();
        return Frozen::Woke;
    }
    launcher.registry.metrics.frozen(name);
    reg.update(|i| i.state = super::registry::ContainerState::Frozen);
    let reclaim = match &held.how {
        How::Frozen(f) => {
            let f = f.clone();
            match tokio::task::spawn_blocking(move || f.reclaim()).await {
                Ok(Ok(Some((before, after)))) => format!(
                    "memory.reclaim: {} KiB before, {} KiB after",
                    before / 1024,
                    after / 1024
                ),
                Ok(Ok(None)) => "no memory.reclaim for this cgroup; memory kept".to_string(),
                Ok(Err(e)) => format!("memory not reclaimed: {e}"),
                Err(e) => format!("memory not reclaimed: {e}"),
            }
        }
        How::Stopped => "stopped by SIGSTOP, no cgroup; memory kept".to_string(),
    };
    tracing::info!(
        service = %name, container = %c.id, event = "frozen", freezer = held.kind(),
        reclaim = %reclaim,
        "{name}: idle container frozen ({}; {reclaim})", c.id
    );
    let until = |d: Option<tokio::time::Instant>| async move {
        match d {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let thawed = |held: Held, why: &str| {
        held.release();
        launcher.registry.metrics.thawed(name);
        reg.update(|i| i.state = super::registry::ContainerState::Running);
        tracing::info!(
            service = %name, container = %c.id, event = "thawed",
            "{name}: container thawed ({why}; {})", c.id
        );
    };
    tokio::select! {
        _ = wait_readable(&sockets.watchers, &sockets.fds) => {
            thawed(held, "a connection is waiting");
            Frozen::Woke
        }
        // `berth stop` thaws the scope before stopping it: the exit is seen here.
        s = c.running.wait() => {
            thawed(held, "it ended");
            Frozen::Ended(Stop::Exited, s)
        }
        _ = until(idle_end) => {
            reg.update(|i| i.state = super::registry::ContainerState::Running);
            held.terminate();
            Frozen::Ended(Stop::Idle, launcher.kill(c).await)
        }
        _ = until(lifetime_end) => {
            reg.update(|i| i.state = super::registry::ContainerState::Running);
            held.terminate();
            Frozen::Ended(Stop::Lifetime, launcher.kill(c).await)
        }
        _ = super::stopping(shutdown) => {
            // Never leave a container frozen behind: the next supervisor
            // adopts a running one, and a stop needs it to run.
            thawed(held, "supervisor stopping");
            if launcher.keep_containers {
                return Frozen::Ended(Stop::Shutdown, Ok(std::os::unix::process::ExitStatusExt::from_raw(0)));
            }
            Frozen::Ended(Stop::Shutdown, launcher.kill(c).await)
        }
    }
}

/// A container held still (for its last look before a stop, or idle under
/// `freeze_after`): its scope frozen by the
/// cgroup freezer, or (no scope, or no freezer reaches it) each process
/// stopped by SIGSTOP. Either way `pidfds` names every process of its pid
/// namespace, collected while held (frozen processes neither fork nor
/// exit, so the list is complete and every pid still its process's).
struct Held {
    how: How,
    pidfds: Vec<OwnedFd>,
}

enum How {
    Frozen(cgroup::Freezer),
    /// `berth run --no-scope` (or a host whose scope has no freezer):
    /// SIGSTOP through pidfds opened right after a walk of /proc. A process
    /// forked after the walk is not stopped, hence the freezer wherever
    /// there is a scope.
    Stopped,
}

/// Freeze (or stop) the container `c`; `None` if it could not be held
/// (then it is left running and looked at again later).
async fn hold(service: &str, c: &Container) -> Option<Held> {
    let init = c.running.init_pid();
    let freezer = c
        .unit
        .as_deref()
        .and_then(|unit| cgroup::freezer_of(init, unit));
    if let Some(f) = freezer {
        match f.freeze(Duration::from_millis(500)).await {
            Ok(()) => {
                tracing::info!(
                    service = %service, container = %c.id, freezer = f.kind(),
                    "{service}: container frozen ({})", f.knob().display()
                );
                let pidfds = open_all(&conns::process_tree(init));
                return Some(Held {
                    how: How::Frozen(f),
                    pidfds,
                });
            }
            Err(e @ cgroup::CgroupError::NotFrozen { .. }) => {
                // Not all stopped yet (a process in uninterruptible sleep):
                // let it run on and look again at the next step.
                tracing::warn!(service = %service, container = %c.id, "{e}; not stopping it now");
                if let Err(e) = f.thaw() {
                    tracing::warn!(service = %service, container = %c.id, "{e}");
                }
                return None;
            }
            Err(e) => {
                tracing::warn!(service = %service, container = %c.id, "{e}; using SIGSTOP");
            }
        }
    } else if c.unit.is_some() {
        tracing::warn!(
            service = %service, container = %c.id,
            "no cgroup freezer reaches the container's scope; stopping its processes one by one"
        );
    }
    let pids = conns::process_tree(init);
    let pidfds = open_all(&pids);
    signal_all(&pidfds, Signal::SIGSTOP);
    // A stop lands when a thread returns to user space: an accept() in
    // flight completes first. Look again only once all have stopped.
    wait_stopped(&pids).await;
    Some(Held {
        how: How::Stopped,
        pidfds,
    })
}

impl Held {
    /// The mechanism, for the journal (`BERTH_FREEZER`).
    fn kind(&self) -> &'static str {
        match &self.how {
            How::Frozen(f) => f.kind(),
            How::Stopped => "SIGSTOP",
        }
    }

    /// Let the container run on.
    fn release(self) {
        match &self.how {
            How::Frozen(f) => {
                if let Err(e) = f.thaw() {
                    tracing::warn!("{e}");
                }
            }
            How::Stopped => signal_all(&self.pidfds, Signal::SIGCONT),
        }
    }

    /// SIGTERM each held process while it is held, then let it run: the
    /// signal is the first thing each acts on, so an application without a
    /// handler ends before it can accept again, and one with a handler gets
    /// its graceful stop (`stop_timeout`, see `Launcher::kill`). Signalling
    /// only PID 1 would leave the others running on after the thaw.
    fn terminate(self) {
        signal_all(&self.pidfds, Signal::SIGTERM);
        match &self.how {
            // The stage (outside the pid namespace, inside the scope) must
            // run again too, to reap PID 1 and report.
            How::Frozen(f) => {
                if let Err(e) = f.thaw() {
                    tracing::warn!("{e}");
                }
            }
            How::Stopped => signal_all(&self.pidfds, Signal::SIGCONT),
        }
    }
}

fn busy(init: u32, fds: &[OwnedFd], keys: &[ListenerKey]) -> bool {
    conns::pending(fds) || conns::open_connections(init, keys) > 0
}

/// Wait (briefly) until every thread of `pids` is in the stopped state.
async fn wait_stopped(pids: &[u32]) {
    for _ in 0..500 {
        if pids.iter().all(|p| conns::all_threads_stopped(*p)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tracing::warn!("container threads did not all stop within 500 ms");
}

/// pidfds of `pids` (those still alive).
fn open_all(pids: &[u32]) -> Vec<OwnedFd> {
    pids.iter()
        .filter_map(|p| crate::pidfd::open(*p).ok())
        .collect()
}

fn signal_all(pidfds: &[OwnedFd], sig: Signal) {
    for fd in pidfds {
        let _ = crate::pidfd::signal(fd, sig);
    }
}
