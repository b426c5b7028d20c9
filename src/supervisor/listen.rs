//! listen mode: one container per service, started by the first
//! connection, handed the listening sockets, stopped when idle.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{SockaddrStorage, getsockname};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::conns::{self, ListenerKey};
use super::{Container, Launcher, QUICK_EXIT, new_container_id};
use crate::activation::{ListenAddr, Listener};
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

pub async fn serve(
    launcher: Arc<Launcher>,
    listeners: Vec<Listener>,
    mut shutdown: watch::Receiver<bool>,
    mut adopted: Option<Container>,
) {
    let svc = launcher.service();
    let name = svc.name.clone();
    let keys: Vec<ListenerKey> = listeners.iter().filter_map(key_of).collect();
    let mut watchers = Vec::new();
    for l in &listeners {
        let dup = match l.fd.as_fd().try_clone_to_owned() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(service = %name, "duplicating listener {}: {e}", l.addr);
                return;
            }
        };
        // SAFETY: the AsyncFd owns the duplicate for its whole life and
        // never closes or replaces it while registered.
        match unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) } {
            Ok(w) => watchers.push(w),
            Err(e) => {
                tracing::error!(service = %name, "watching {}: {e}", l.addr);
                return;
            }
        }
    }
    let fds: Vec<OwnedFd> = listeners.into_iter().map(|l| l.fd).collect();
    let fdnames = vec![name.clone(); fds.len()];
    let devnull = match std::fs::File::open("/dev/null") {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            tracing::error!(service = %name, "opening /dev/null: {e}");
            return;
        }
    };

    // `warm = 1`: the next container, built ahead and parked before its
    // exec, so a wake from idle waits only for the application's start-up.
    let mut parked: Option<super::Parked> = None;
    loop {
        let started = Instant::now();
        let mut c = if let Some(c) = adopted.take() {
            tracing::info!(
                service = %name, container = %c.id, event = "adopted",
                pid = c.running.init_pid(), "took over a running container"
            );
            c
        } else {
            if let Some(delay) = launcher.throttle.remaining() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = super::stopping(&mut shutdown) => return,
                }
            }
            if launcher.service().warm > 0 && parked.is_none() {
                tokio::select! {
                    p = launcher.prepare_ahead(&fdnames) => parked = p,
                    _ = super::stopping(&mut shutdown) => return,
                }
            }
            tokio::select! {
                _ = wait_readable(&watchers, &fds) => {}
                _ = super::stopping(&mut shutdown) => {
                    if let Some(p) = parked.take() {
                        launcher.discard(p).await;
                    }
                    return;
                }
            }
            let warm = match parked.take() {
                Some(p) => launcher.start_warm(p, &devnull, None, &fds).await,
                None => None,
            };
            let launched = match warm {
                Some(c) => Ok(c),
                None => {
                    let id = new_container_id();
                    launcher
                        .launch(&id, None, &devnull, None, &fds, &fdnames)
                        .await
                        .map_err(|e| (id, e))
                }
            };
            match launched {
                Ok(c) => c,
                Err((id, e)) => {
                    tracing::error!(
                        service = %name, container = %id, event = "failed",
                        "{name}: container failed to start ({id}): {e}"
                    );
                    if !e.is_infrastructure() {
                        launcher.note_failure(&id);
                    }
                    // Without a delay, the queued connection would wake us at once.
                    if launcher.throttle.remaining().is_none() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            }
        };
        let id = c.id.clone();
        if !c.running.adopted() {
            tracing::info!(
                service = %name, container = %id, event = "started",
                pid = c.running.init_pid(), unit = c.unit.as_deref().unwrap_or("-"),
                "{name}: container started ({id})"
            );
        }
        let reg = launcher.register(&c, "");
        let (reason, status) = supervise(&launcher, &mut c, &fds, &keys, &mut shutdown, &reg).await;
        drop(reg);
        if reason == Stop::Shutdown && launcher.keep_containers {
            tracing::info!(
                service = %name, container = %id, event = "detached",
                "supervisor stopping; container left running in its scope"
            );
            return;
        }
        let text = match &status {
            Ok(s) => describe(*s),
            Err(e) => format!("wait failed: {e}"),
        };
        tracing::info!(
            service = %name, container = %id, event = "stopped",
            "{name}: container stopped ({reason}; {id}): {text}"
        );
        match reason {
            Stop::Shutdown => return,
            Stop::Exited if started.elapsed() < QUICK_EXIT => launcher.note_failure(&id),
            _ => launcher.note_success(),
        }
    }
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
    fds: &[OwnedFd],
    keys: &[ListenerKey],
    shutdown: &mut watch::Receiver<bool>,
    reg: &super::registry::Registered,
) -> (Stop, std::io::Result<std::process::ExitStatus>) {
    let svc = launcher.service();
    let deadline = svc.max_lifetime.map(|d| tokio::time::Instant::now() + d);
    let step = svc
        .idle_timeout
        .map(|d| (d / 10).clamp(Duration::from_millis(20), Duration::from_secs(2)))
        .unwrap_or(Duration::from_secs(3600));
    let mut last_busy = Instant::now();
    let mut last_acceptors = BTreeMap::new();
    let mut last_io = 0u64;
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
                return (Stop::Shutdown, c.running.terminate(Duration::from_secs(5)).await);
            }
            _ = tokio::time::sleep(step) => {}
        }
        let Some(limit) = svc.idle_timeout else {
            continue;
        };
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
        let deadline = limit.saturating_sub(last_busy.elapsed());
        reg.update(|i| {
            i.connections = open as u32;
            i.idle_deadline_usec = super::registry::usec_after(deadline);
        });
        if open > 0 || conns::pending(fds) {
            last_busy = Instant::now();
            continue;
        }
        if last_busy.elapsed() < limit {
            continue;
        }
        // Freeze, look again, then kill: a connection accepted between the
        // first look and the kill would otherwise be cut. Queued ones stay
        // in the listener (berth holds it) for the next container.
        let pids = conns::process_tree(init);
        signal_all(&pids, Signal::SIGSTOP);
        // A stop lands when a thread returns to user space: an accept() in
        // flight completes first. Look again only once all have stopped.
        wait_stopped(&pids).await;
        // Frozen threads are no longer "in accept"; here only connections
        // still open or queued matter (one already served is not lost).
        if busy(init, fds, keys) {
            signal_all(&pids, Signal::SIGCONT);
            last_busy = Instant::now();
            continue;
        }
        // SIGKILL each frozen process itself: a SIGCONT, or waiting for the
        // pid namespace's teardown after PID 1 dies, would let them run
        // (and accept) once more before they die.
        signal_all(&pids, Signal::SIGKILL);
        // The pid namespace is gone with its PID 1; stopping the scope
        // settles systemd's side (and anything that escaped the namespace).
        return (Stop::Idle, launcher.kill(c).await);
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

fn signal_all(pids: &[u32], sig: Signal) {
    for p in pids {
        let _ = kill(Pid::from_raw(*p as i32), sig);
    }
}
