//! inetd mode: one container per connection, the connection as fd 0 and 1.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{SockFlag, SockaddrLike, SockaddrStorage, accept4, getpeername};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use super::{Launcher, QUICK_EXIT, conns, exhaustion, new_container_id};
use crate::activation::Listener;
use crate::metrics::StopReason;
use crate::sandbox::spawn::describe;

pub use super::limits::Source;
use super::limits::{Buckets, REFUSAL_LOG_INTERVAL, Refusal, RefusalLog};

#[derive(Default)]
struct Counts {
    total: u32,
    /// Containers per source; an entry lives only while it is non-zero, so
    /// this holds at most `max_connections` entries.
    per_source: HashMap<Source, u32>,
    /// `rate_limit_per_source` (bounded, see `limits`).
    buckets: Buckets,
    /// Which refusals were logged lately (bounded, see `limits`).
    refusals: RefusalLog,
}

/// A container's place in the counts, given back when it ends.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    source: Source,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_source.remove(&self.source);
            }
        }
    }
}

pub fn peer_of(fd: &OwnedFd) -> (Source, String) {
    match getpeername::<SockaddrStorage>(fd.as_raw_fd()) {
        Ok(addr) => {
            if let Some(v4) = addr.as_sockaddr_in() {
                let ip = IpAddr::V4(v4.ip());
                return (Source::Ip(ip), format!("{ip}:{}", v4.port()));
            }
            if let Some(v6) = addr.as_sockaddr_in6() {
                let ip = v6.ip();
                // A v4-mapped peer counts as the v4 address it is.
                let ip = ip
                    .to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(ip));
                return (Source::Ip(ip), format!("[{}]:{}", v6.ip(), v6.port()));
            }
            if addr.family() == Some(nix::sys::socket::AddressFamily::Unix)
                && let Ok(cred) =
                    nix::sys::socket::getsockopt(fd, nix::sys::socket::sockopt::PeerCredentials)
            {
                return (
                    Source::Uid(cred.uid()),
                    format!("uid {} pid {}", cred.uid(), cred.pid()),
                );
            }
            (Source::Unknown, "unknown peer".into())
        }
        Err(_) => (Source::Unknown, "unknown peer".into()),
    }
}

/// `warm = N`: sandboxes built ahead (namespaces, tree, scope), parked
/// before the exec, so a connection waits only for the exec.
pub struct WarmPool {
    parked: Mutex<std::collections::VecDeque<super::Parked>>,
    taken: tokio::sync::Notify,
    /// Sandboxes being prepared now.
    in_flight: std::sync::atomic::AtomicUsize,
    /// Connections waiting in `take_or_wait` for a sandbox under way.
    waiting: std::sync::atomic::AtomicUsize,
    /// A preparation ended (parked, failed, or the pool closed).
    settled: tokio::sync::Notify,
    /// Built from a definition a reload replaced, found by `take`; the
    /// filler discards them (scope stopped, stage ended).
    stale: Mutex<Vec<super::Parked>>,
    /// How fast connections take sandboxes (see [`Demand`]).
    demand: Mutex<Demand>,
}

/// The arrival rate of connections that take a sandbox, as a moving
/// average of the time between takes. With the time a refill takes, it
/// says how many refills must be under way at once to keep up (Little's
/// law: in flight = arrival rate x preparation time).
#[derive(Default)]
struct Demand {
    last: Option<Instant>,
    /// Moving average of the time between two takes.
    gap: Option<Duration>,
    /// Moving average of a refill's time, start to parked.
    refill: Option<Duration>,
}

/// Weight of the newest sample in the moving averages (1/4: a burst shows
/// within a few connections, one slow refill does not swing it).
fn average(old: Option<Duration>, new: Duration) -> Duration {
    match old {
        Some(o) => (o * 3 + new) / 4,
        None => new,
    }
}

impl Demand {
    fn took(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.gap = Some(average(self.gap, now - last));
        }
        self.last = Some(now);
    }

    /// Refills to have under way at once: the arrival rate times the
    /// refill time, plus one; at least one, at most `limit` (all of them
    /// while nothing is known yet). A pause since the last take counts as
    /// a long gap, so the figure falls back once the clients stop.
    fn parallel(&self, limit: usize, now: Instant) -> usize {
        let (Some(last), Some(gap), Some(refill)) = (self.last, self.gap, self.refill) else {
            return limit.max(1);
        };
        let gap = gap.max(now - last).max(Duration::from_micros(100));
        let need = refill.as_nanos().div_ceil(gap.as_nanos());
        usize::try_from(need)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .clamp(1, limit.max(1))
    }
}

/// One connection counted in `WarmPool::waiting` while it lives (also
/// when its task is dropped mid-wait).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(n: &'a std::sync::atomic::AtomicUsize) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl WarmPool {
    fn new() -> WarmPool {
        WarmPool {
            parked: Mutex::default(),
            taken: tokio::sync::Notify::new(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            settled: tokio::sync::Notify::new(),
            stale: Mutex::default(),
            demand: Mutex::default(),
        }
    }

    /// The oldest parked sandbox of the definition `current`; older
    /// definitions' ones are set aside for the filler to discard.
    fn take(&self, current: &str) -> Option<super::Parked> {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(p) = parked.pop_front() {
            if p.generation == current {
                self.demand
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .took(Instant::now());
                return Some(p);
            }
            self.stale.lock().unwrap_or_else(|p| p.into_inner()).push(p);
            self.taken.notify_one();
        }
        None
    }

    /// Take out what must go: sandboxes of an old definition, and those
    /// beyond `want` (the newest first, the oldest are used next).
    fn surplus(&self, current: &str, want: usize) -> Vec<super::Parked> {
        let mut out: Vec<super::Parked> = self
            .stale
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        let (keep, old): (std::collections::VecDeque<_>, std::collections::VecDeque<_>) =
            parked.drain(..).partition(|p| p.generation == current);
        *parked = keep;
        out.extend(old);
        while parked.len() > want {
            if let Some(p) = parked.pop_back() {
                out.push(p);
            }
        }
        out
    }

    /// A parked sandbox; if none is parked but some are being prepared, the
    /// next one of those. systemd creates scopes one at a time, so a sandbox
    /// that is already under way is ready sooner than one started now would
    /// be (its scope job would queue behind the refills'). `None`: build one
    /// on demand.
    async fn take_or_wait(&self, current: &str) -> Option<super::Parked> {
        use std::sync::atomic::Ordering;
        let mut told = false;
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if let Some(p) = self.take(current) {
                // Its replacement counts as under way from now on, so the
                // next connection waits for it rather than racing it.
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                return Some(p);
            }
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return None;
            }
            // The filler sees a waiting connection: the pool ran dry, it
            // refills as many as it may at once. Told once per connection,
            // not at each wake-up (the filler's wake-ups wake the waiters).
            let _waiting = Waiting::count(&self.waiting);
            if !told {
                told = true;
                tracing::debug!(
                    event = "warm-wait",
                    "no warm sandbox parked: the connection waits for one under way"
                );
                self.taken.notify_one();
            }
            settled.await;
        }
    }

    fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    fn len(&self) -> usize {
        self.parked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Keep the pool at the service's `warm`, until shutdown; then empty it.
    ///
    /// How many are prepared at once follows the demand: as many as the
    /// arrival rate of connections times a refill's time (plus one), and
    /// as many as [`refill_limit`] allows when the pool ran dry or a
    /// connection waits for one; never more than `warm` in the pool and
    /// under way together. Refills run as `SCHED_BATCH`, so a refill does
    /// not preempt a container that a client is waiting for.
    async fn keep_filled(
        self: Arc<Self>,
        launcher: Arc<Launcher>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut jobs = tokio::task::JoinSet::new();
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let want = launcher.service().warm as usize;
            // After a reload: what the old definition built, or more than
            // the new `warm`, goes (scope stopped, stage ended).
            for p in self.surplus(&launcher.generation(), want) {
                tracing::info!(
                    service = %launcher.service().name, container = %p.id, event = "warm-discarded",
                    "warm sandbox discarded (definition {} replaced, or warm lowered)", p.generation
                );
                launcher.discard(p).await;
            }
            let may_start = launcher.throttle.remaining().is_none()
                && retry_at.is_none_or(|t| tokio::time::Instant::now() >= t);
            let parked = self.len();
            let limit = want.min(refill_limit());
            let (parallel, drained) = {
                let demand = self.demand.lock().unwrap_or_else(|p| p.into_inner());
                // Connections took the pool empty (not its first fill), or
                // one waits now.
                let drained = (parked == 0 && demand.last.is_some())
                    || self.waiting.load(std::sync::atomic::Ordering::SeqCst) > 0;
                let n = if drained {
                    limit
                } else {
                    demand.parallel(limit, Instant::now())
                };
                (n, drained)
            };
            let started = jobs.len();
            while may_start && self.len() + jobs.len() < want && jobs.len() < parallel {
                let l = launcher.clone();
                // SCHED_BATCH even once a connection waits for it: the
                // containers running meanwhile are waited for too; normal
                // priority for those refills measured no better
                // (docs/benchmarks.md, issue 14.2).
                jobs.spawn(async move {
                    let t = Instant::now();
                    (l.prepare_ahead(&[]).await, t.elapsed())
                });
            }
            if jobs.len() > started {
                tracing::debug!(
                    service = %launcher.service().name, event = "warm-refill",
                    refills = jobs.len(), parked, want, drained,
                    "warm pool: {} refill(s) under way, {parked} of {want} parked{}",
                    jobs.len(),
                    if drained { " (ran dry: all at once)" } else { "" }
                );
            }
            self.set_in_flight(jobs.len());
            // Waiters re-check: the count may have dropped (throttled, full).
            self.settled.notify_waiters();
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                    self.set_in_flight(jobs.len());
                    let done = done.map(|(p, took)| {
                        if p.is_some() {
                            let mut d = self.demand.lock().unwrap_or_else(|p| p.into_inner());
                            d.refill = Some(average(d.refill, took));
                        }
                        p
                    });
                    match done {
                        Ok(Some(p)) if launcher.is_current(&p) => {
                            self.park(p);
                            tracing::debug!(
                                service = %launcher.service().name, event = "warm-parked",
                                parked = self.len(), refills = jobs.len(), want,
                                "warm pool: {} of {want} parked", self.len()
                            );
                        }
                        // Built from a definition replaced meanwhile.
                        Ok(Some(p)) => launcher.discard(p).await,
                        _ => retry_at = Some(tokio::time::Instant::now() + Duration::from_millis(500)),
                    }
                    self.settled.notify_waiters();
                }
                _ = retry => retry_at = None,
                _ = self.taken.notified() => {}
                _ = launcher.reloaded.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = super::stopping(&mut shutdown) => break,
            }
        }
        // Preparations under way finish (each takes milliseconds) and are
        // thrown away with the rest; nobody waits for them any more.
        self.set_in_flight(0);
        self.settled.notify_waiters();
        while let Some(done) = jobs.join_next().await {
            if let Ok((Some(p), _)) = done {
                self.park(p);
            }
        }
        let all = self.surplus("", 0);
        for p in all {
            launcher.discard(p).await;
        }
    }

    fn park(&self, p: super::Parked) {
        self.parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(p);
    }
}

/// Containers of one service being launched at once at most.
const MAX_LAUNCHING: usize = 64;

/// Refills of one pool under way at once at most: two per CPU. A refill
/// costs CPU (about 10 ms of the stage's, systemd's and dbus-daemon's here)
/// and systemd runs scope jobs one at a time; beyond what the CPUs can run,
/// more at once only makes each one (and the connection waiting for the
/// first) finish later. Two per CPU overlaps the waits inside a refill
/// (D-Bus round trips, the kernel's cgroup moves).
fn refill_limit() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(2, usize::from)
            .saturating_mul(2)
            .clamp(2, MAX_LAUNCHING)
    })
}

/// Serve `listeners` until `shutdown` turns true, then end every container
/// and return once they are gone.
pub async fn serve(
    launcher: Arc<Launcher>,
    listeners: Vec<Listener>,
    mut shutdown: watch::Receiver<bool>,
) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    // Every container task holds a sender; recv() → None when all ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut acceptors = tokio::task::JoinSet::new();
    let launching = Arc::new(tokio::sync::Semaphore::new(MAX_LAUNCHING));
    let warm = Arc::new(WarmPool::new());
    let filler = tokio::spawn(warm.clone().keep_filled(launcher.clone(), shutdown.clone()));
    if launcher.service().idle_timeout.is_some() {
        for l in &listeners {
            if let crate::activation::ListenAddr::Unix(p) = &l.addr {
                // TCP_INFO says when data last moved; unix sockets have no
                // such record, and berth does not proxy to find out.
                tracing::warn!(
                    service = %launcher.service().name,
                    "idle_timeout is not enforced on connections from the unix socket {}",
                    p.display()
                );
            }
        }
    }
    for l in listeners {
        let launcher = launcher.clone();
        let counts = counts.clone();
        let alive = alive_tx.clone();
        let shutdown = shutdown.clone();
        acceptors.spawn(accept_loop(
            launcher,
            l,
            counts,
            alive,
            shutdown,
            warm.clone(),
            launching.clone(),
        ));
    }
    drop(alive_tx);
    super::stopping(&mut shutdown).await;
    acceptors.shutdown().await;
    let _ = filler.await;
    // The acceptors' senders are gone; wait for the containers' ones.
    let _ = alive_rx.recv().await;
}

async fn accept_loop(
    launcher: Arc<Launcher>,
    listener: Listener,
    counts: Arc<Mutex<Counts>>,
    alive: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
    warm: Arc<WarmPool>,
    launching: Arc<tokio::sync::Semaphore>,
) {
    let name = launcher.service().name.clone();
    let addr = listener.addr.to_string();
    if let Err(e) = nix::fcntl::fcntl(
        listener.fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    ) {
        tracing::error!(service = %name, "making {addr} non-blocking: {e}");
        return;
    }
    // SAFETY: the AsyncFd owns the listener's descriptor until this task
    // ends and never closes or replaces it while registered.
    let afd = match unsafe { AsyncFd::register_with_interest(listener.fd, Interest::READABLE) } {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(service = %name, "watching {addr}: {e}");
            return;
        }
    };
    loop {
        if let Some(delay) = launcher.throttle.remaining() {
            // Connections wait in the backlog meanwhile; none is dropped.
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = super::stopping(&mut shutdown) => return,
            }
        }
        // Out of descriptors: connections wait in the backlog until some
        // are free (checked before one is taken out of it, so none is
        // accepted only to be closed for lack of room to launch it).
        if let Some(delay) = launcher.exhaustion.remaining(Instant::now()) {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = super::stopping(&mut shutdown) => return,
            }
        }
        if launcher.exhaustion.active()
            && let Err(errno) = exhaustion::headroom(afd.get_ref())
        {
            launcher.note_exhaustion(&format!("accepting on {addr}"), errno);
            continue;
        }
        // A burst waits in the kernel's backlog rather than as hundreds of
        // half-built sandboxes in berth (memory, and D-Bus calls in flight).
        let permit = tokio::select! {
            p = launching.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = super::stopping(&mut shutdown) => return,
        };
        let conn = tokio::select! {
            c = accept(&afd) => c,
            _ = super::stopping(&mut shutdown) => return,
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                match e
                    .raw_os_error()
                    .filter(|n| exhaustion::is_exhaustion_errno(*n))
                {
                    Some(errno) => launcher.note_exhaustion(&format!("accept on {addr}"), errno),
                    None => {
                        tracing::warn!(service = %name, "accept on {addr}: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                continue;
            }
        };
        // Ran out while this accept waited (a launch in flight failed):
        // this connection waits for room in its launch (see `launch`), and
        // the next accept waits for the back-off above.
        let (source, peer) = peer_of(&conn);
        let svc = launcher.service();
        let source = source.keyed(svc.source_prefix_v6);
        let slot = {
            let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refusal = if svc
                .rate_limit_per_source
                .is_some_and(|limit| !c.buckets.admit(&source, limit, now))
            {
                Some(Refusal::RateLimit)
            } else if c.total >= svc.max_connections {
                Some(Refusal::MaxConnections)
            } else if svc
                .max_connections_per_source
                .is_some_and(|max| c.per_source.get(&source).copied().unwrap_or(0) >= max)
            {
                Some(Refusal::MaxConnectionsPerSource)
            } else {
                None
            };
            if let Some(why) = refusal {
                launcher.registry.metrics.refused(&name, why.key());
                // Closed at once (conn dropped); logged once per source,
                // reason and interval, so a flood cannot flood the journal.
                let interval = match (why, svc.rate_limit_per_source) {
                    (Refusal::RateLimit, Some(limit)) => limit.per,
                    _ => REFUSAL_LOG_INTERVAL,
                };
                if let Some(quiet) = c.refusals.should_log(&source, why, interval, now) {
                    let limit = match why {
                        Refusal::MaxConnections => {
                            format!("max_connections ({}) reached", svc.max_connections)
                        }
                        Refusal::MaxConnectionsPerSource => format!(
                            "max_connections_per_source ({}) reached for {source}",
                            svc.max_connections_per_source.unwrap_or(0)
                        ),
                        Refusal::RateLimit => format!(
                            "rate_limit_per_source ({}) exceeded by {source}",
                            svc.rate_limit_per_source
                                .map(|l| l.to_string())
                                .unwrap_or_default()
                        ),
                    };
                    let earlier = if quiet > 0 {
                        format!(" ({quiet} more refused since the last entry)")
                    } else {
                        String::new()
                    };
                    tracing::warn!(
                        service = %name, event = "refused", reason = why.key(),
                        peer = %peer, source = %source,
                        "{}: connection from {peer} refused: {limit}{earlier}; \
                         further such refusals for {source} in the next {interval:?} are not logged",
                        svc.name
                    );
                }
                continue;
            }
            c.total += 1;
            launcher.registry.metrics.accepted(&name);
            *c.per_source.entry(source.clone()).or_insert(0) += 1;
            Slot {
                counts: counts.clone(),
                source,
            }
        };
        let launcher = launcher.clone();
        let alive = alive.clone();
        let shutdown = shutdown.clone();
        let pool = (launcher.service().warm > 0).then(|| warm.clone());
        tokio::spawn(async move {
            let _ = run_one(launcher, conn, peer, shutdown, pool, Some(permit)).await;
            drop(slot);
            drop(alive);
        });
    }
}

async fn accept(afd: &AsyncFd<OwnedFd>) -> std::io::Result<OwnedFd> {
    loop {
        let mut guard = afd.readable().await?;
        // No SOCK_NONBLOCK: the application gets a blocking socket.
        match accept4(afd.get_ref().as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => {
                // SAFETY: accept4 returned a new descriptor nothing else owns.
                return Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
            }
            Err(nix::Error::EAGAIN) => {
                guard.clear_ready();
                continue;
            }
            Err(nix::Error::EINTR | nix::Error::ECONNABORTED) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One connection's container, from launch to its end. Returns the
/// container's status, `None` if it did not start or was left running.
pub async fn run_one(
    launcher: Arc<Launcher>,
    conn: OwnedFd,
    peer: String,
    mut shutdown: watch::Receiver<bool>,
    pool: Option<Arc<WarmPool>>,
    launching: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Option<std::process::ExitStatus> {
    let svc = launcher.service();
    let started = Instant::now();
    // Boxed: the launch (stage, scope, channel) is the largest state of this
    // future; on the heap only while it runs, a held container's task keeps
    // just what the rest needs.
    let launched = Box::pin(launch(&launcher, &conn, &peer, pool, &mut shutdown)).await;
    drop(launching);
    // On failure, dropping conn closes the connection.
    let mut c = launched?;
    let id = c.id.clone();
    launcher
        .registry
        .metrics
        .started(&svc.name, started.elapsed());
    // Listed in the registry until this function returns.
    let reg = launcher.register(&c, &peer);
    reg.update(|i| i.connections = 1);
    tracing::info!(
        service = %svc.name, container = %id, event = "started", peer = %peer,
        pid = c.running.init_pid(), unit = c.unit.as_deref().unwrap_or("-"),
        "{}: container started ({id}, for {peer})", svc.name
    );
    let (reason, status, peer_gone) = supervise(&launcher, &mut c, conn, &mut shutdown).await?;
    let status_text = match &status {
        Ok(s) => describe(*s),
        Err(e) => format!("wait failed: {e}"),
    };
    launcher.registry.metrics.stopped(
        &svc.name,
        match reason {
            "exited" => StopReason::Exit,
            "max_lifetime reached" => StopReason::Lifetime,
            "idle_timeout reached" => StopReason::Idle,
            _ => StopReason::Stop,
        },
    );
    tracing::info!(
        service = %svc.name, container = %id, event = "stopped", peer = %peer,
        "{}: container stopped ({reason}; {id}): {status_text}", svc.name
    );
    let ok = matches!(&status, Ok(s) if s.success());
    // A client that connects and hangs up at once makes many daemons exit
    // non-zero straight away; counting that would let any client throttle
    // the service for everyone.
    if reason == "exited" && !ok && started.elapsed() < QUICK_EXIT && !peer_gone {
        launcher.note_failure(&id);
    } else {
        launcher.note_success();
    }
    status.ok()
}

/// Start the connection's container: a parked one if the service has a
/// pool and it yields one, else a new one. A failure is logged and counted
/// for the throttle.
async fn launch(
    launcher: &Launcher,
    conn: &OwnedFd,
    peer: &str,
    pool: Option<Arc<WarmPool>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<super::Container> {
    let svc = launcher.service();
    let pooled = pool.is_some();
    let parked = match pool {
        Some(pool) => pool
            .take_or_wait(&launcher.generation())
            .await
            .map(|p| (p, pool)),
        None => None,
    };
    let warm = match parked {
        Some((p, pool)) => {
            let started = launcher.start_warm(p, conn, Some(conn), &[]).await;
            // Refill only now: preparing the next one must not delay this
            // connection's exec.
            pool.taken.notify_one();
            started
        }
        None => None,
    };
    if pooled {
        launcher.registry.metrics.warm(&svc.name, warm.is_some());
    }
    let launched = match warm {
        Some(c) => Ok(c),
        None => {
            // Out of descriptors (the accept loop checks for room first,
            // but launches run concurrently): the connection waits, and
            // the launch is tried again once there may be room, within the
            // stage deadline; a fresh id each time.
            let give_up = Instant::now() + crate::sandbox::spawn::stage_deadline();
            loop {
                let id = new_container_id();
                match launcher
                    .launch(&id, Some(peer), conn, Some(conn), &[], &[])
                    .await
                {
                    Err(e)
                        if let Some(errno) = e.exhaustion()
                            && Instant::now() < give_up =>
                    {
                        launcher
                            .note_exhaustion(&format!("starting a container for {peer}"), errno);
                        let delay = launcher
                            .exhaustion
                            .remaining(Instant::now())
                            .unwrap_or(Duration::from_millis(50));
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = super::stopping(shutdown) => break Err((id, e)),
                        }
                    }
                    r => break r.map_err(|e| (id, e)),
                }
            }
        }
    };
    match launched {
        Ok(c) => {
            launcher.exhaustion.success();
            Some(c)
        }
        Err((_, e)) if let Some(errno) = e.exhaustion() => {
            // Not the application's failure, and not one entry per
            // connection: the accept loop backs off.
            launcher.registry.metrics.failed(&svc.name);
            launcher.note_exhaustion(&format!("starting a container for {peer}"), errno);
            None
        }
        Err((id, e)) => {
            tracing::error!(
                service = %svc.name, container = %id, event = "failed", peer = %peer,
                "{}: container failed to start ({id}): {e}", svc.name
            );
            launcher.registry.metrics.failed(&svc.name);
            if !e.is_infrastructure() {
                launcher.note_failure(&id);
            }
            None
        }
    }
}

/// Wait until the container exits or must be ended (lifetime, idle
/// connection, shutdown), and end it. The reason and its status; `None`
/// when it is left running for the next supervisor.
async fn supervise(
    launcher: &Launcher,
    c: &mut super::Container,
    conn: OwnedFd,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(
    &'static str,
    std::io::Result<std::process::ExitStatus>,
    bool,
)> {
    let svc = launcher.service();
    // Only TCP_INFO tells idleness without proxying; keep our copy of the
    // connection for it. Otherwise keep it only for QUICK_EXIT, to tell a
    // quick failure from a client that hung up, then let the application
    // own it alone (our copy would hold the connection open after the
    // application closed it).
    let (idle_conn, mut early_conn) = match svc.idle_timeout {
        Some(_) if conns::tcp_idle_ms(&conn).is_some() => (Some(conn), None),
        _ => (None, Some(conn)),
    };
    let lifetime = async {
        match svc.max_lifetime {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let idle = async {
        match (&idle_conn, svc.idle_timeout) {
            (Some(c), Some(limit)) => idle_watch(c, limit).await,
            _ => std::future::pending().await,
        }
    };
    let why = {
        tokio::pin!(lifetime, idle);
        let early_end = tokio::time::sleep(QUICK_EXIT);
        tokio::pin!(early_end);
        loop {
            tokio::select! {
                s = c.running.wait() => break Ok(s),
                _ = &mut lifetime => break Err("max_lifetime reached"),
                _ = &mut idle => break Err("idle_timeout reached"),
                _ = super::stopping(shutdown) => break Err("supervisor stopping"),
                _ = &mut early_end, if early_conn.is_some() => early_conn = None,
            }
        }
    };
    let peer_gone = idle_conn
        .as_ref()
        .or(early_conn.as_ref())
        .is_some_and(conns::peer_hung_up);
    drop(early_conn);
    let ended = match why {
        Ok(s) => ("exited", s),
        Err("supervisor stopping") if launcher.keep_containers => {
            tracing::info!(
                service = %svc.name, container = %c.id, event = "detached",
                "supervisor stopping; container left running in its scope"
            );
            return None;
        }
        // Shutdown, lifetime, idle: SIGTERM, SIGKILL `stop_timeout` later.
        Err(r) => (r, launcher.kill(c).await),
    };
    drop(idle_conn);
    Some((ended.0, ended.1, peer_gone))
}

/// Watch a container an earlier supervisor started, until it ends or its
/// lifetime runs out.
pub async fn watch_adopted(
    launcher: Arc<Launcher>,
    mut c: super::Container,
    mut shutdown: watch::Receiver<bool>,
) {
    let _reg = launcher.register(&c, "");
    let svc = launcher.service();
    let lifetime = async {
        match svc.max_lifetime {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let why = tokio::select! {
        _ = c.running.wait() => StopReason::Exit,
        _ = lifetime => {
            let _ = launcher.kill(&mut c).await;
            StopReason::Lifetime
        }
        _ = super::stopping(&mut shutdown) => return,
    };
    launcher.registry.metrics.stopped(&svc.name, why);
    tracing::info!(
        service = %svc.name, container = %c.id, event = "stopped",
        "adopted container ended"
    );
}

async fn idle_watch(conn: &OwnedFd, limit: Duration) {
    let step = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        tokio::time::sleep(step).await;
        match conns::tcp_idle_ms(conn) {
            Some(ms) if u128::from(ms) >= limit.as_millis() => return,
            Some(_) => {}
            None => std::future::pending::<()>().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn refills_follow_the_arrival_rate_up_to_warm() {
        let t0 = Instant::now();
        let mut d = Demand::default();
        // Nothing known yet: as many as allowed.
        assert_eq!(d.parallel(4, t0), 4);
        assert_eq!(d.parallel(0, t0), 1);
        // A take every 4 ms, a refill taking 20 ms: 5 under way, plus one.
        d.refill = Some(ms(20));
        for i in 0..20 {
            d.took(t0 + ms(4 * i));
        }
        let now = t0 + ms(76);
        assert_eq!(d.parallel(8, now), 6);
        // Never more than the limit (warm, or two per CPU).
        assert_eq!(d.parallel(4, now), 4);
        // Slow arrivals (one every 100 ms): one refill at a time.
        let mut slow = Demand {
            refill: Some(ms(20)),
            ..Demand::default()
        };
        for i in 0..20 {
            slow.took(t0 + ms(100 * i));
        }
        assert_eq!(slow.parallel(8, t0 + ms(1900)), 2);
        // The clients stopped a second ago: the fast figure falls back.
        assert_eq!(d.parallel(8, now + Duration::from_secs(1)), 2);
    }

    #[test]
    fn averages_move_a_quarter_towards_each_sample() {
        assert_eq!(average(None, ms(8)), ms(8));
        assert_eq!(average(Some(ms(8)), ms(16)), ms(10));
    }
}
