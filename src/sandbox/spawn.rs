//! Supervisor side of the stage channel: start a stage (forked by the
//! zygote, or `berth sandbox-stage` exec'd), send the spec, learn the pids to
//! put in a scope, then hand over the application's descriptors and learn
//! whether the exec happened.
//!
//! Nothing here waits without a deadline ([`stage_deadline`]): a stage that
//! does not report `Forked`/`Prepared`, or exec the application after
//! `Start`, is killed through its pidfds and reaped in the background; a
//! zygote that does not answer a fork is replaced. A stage dropped unreaped
//! costs one small reaper task until it exits.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, socketpair};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};

use super::Spec;
use super::proto::{self, FromStage, FromZygote, ProtoError, StageFailure, ToStage, ToZygote};

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("socketpair for the stage channel: {0}")]
    SocketPair(#[source] nix::Error),
    #[error("registering the stage channel: {0}")]
    Register(#[source] std::io::Error),
    #[error("starting the sandbox stage: {0}")]
    Exec(#[source] std::io::Error),
    #[error("starting the sandbox zygote: {0}")]
    ZygoteExec(#[source] std::io::Error),
    #[error("the sandbox zygote: {0}")]
    Zygote(String),
    #[error("the sandbox zygote exited")]
    ZygoteGone,
    #[error("resetting the scheduling policy of stage {pid}: {error}")]
    Priority { pid: u32, error: String },
    #[error("{0}")]
    Pidfd(#[from] crate::pidfd::PidfdError),
    #[error("watching the pidfd of sandbox stage {pid}: {source}")]
    PidFd {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("sandbox setup failed: {0}")]
    Failed(#[from] StageFailure),
    #[error("the sandbox stage exited ({0}) before the application started")]
    Died(String),
    #[error("the sandbox stage sent {0} out of order")]
    OutOfOrder(&'static str),
    #[error("timed out after {after:?} waiting for the sandbox stage's {what}; stage killed")]
    Deadline { what: &'static str, after: Duration },
    #[error("timed out: the sandbox zygote did not fork a stage within {0:?}")]
    ZygoteDeadline(Duration),
}

/// How long a stage may take to build a sandbox (fork to `Prepared`), and
/// again to exec the application after `Start`. Both take milliseconds; a
/// stage still busy after 30 s is stuck (a bind source on a hung mount, a
/// FIFO) and would hold a launch slot forever.
pub const STAGE_DEADLINE: Duration = Duration::from_secs(30);

/// Environment variable that overrides [`STAGE_DEADLINE`] (milliseconds).
/// A testing knob: read once, at the first launch.
pub const STAGE_DEADLINE_ENV: &str = "BERTH_STAGE_DEADLINE_MS";

/// The stage deadline in force ([`STAGE_DEADLINE`] unless overridden).
pub fn stage_deadline() -> Duration {
    static D: OnceLock<Duration> = OnceLock::new();
    *D.get_or_init(|| {
        std::env::var(STAGE_DEADLINE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(STAGE_DEADLINE, Duration::from_millis)
    })
}

/// Debug builds only: a stage whose container claims (removes) the file
/// named by this variable hangs before reporting `Prepared`, as one stuck
/// on a hung mount would (tests/deadline.rs).
#[cfg(debug_assertions)]
pub const TEST_HANG_ENV: &str = "BERTH_TEST_STAGE_HANG";

/// Debug builds only: a zygote that claims (removes) the file named by
/// this variable kills itself between a fork and its reply, as a SIGKILL
/// from outside might (tests/faults.rs).
#[cfg(debug_assertions)]
pub const TEST_ZYGOTE_DIE_ENV: &str = "BERTH_TEST_ZYGOTE_DIE";

/// Debug builds only: while the file named by this variable exists, PID 1
/// fails its set-up at once, and the zygote waits for it to have ended,
/// removes the file and kills itself before its reply (tests/faults.rs).
#[cfg(debug_assertions)]
pub const TEST_ZYGOTE_DIE_AFTER_INIT_ENV: &str = "BERTH_TEST_ZYGOTE_DIE_AFTER_INIT";

/// Non-blocking end of the channel on the tokio reactor.
struct Channel(AsyncFd<OwnedFd>);

impl Channel {
    fn new(fd: OwnedFd) -> Result<Self, SpawnError> {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| SpawnError::Register(e.into()))?;
        // SAFETY: the channel owns the descriptor for as long as the AsyncFd
        // lives and never replaces or closes it while registered.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map(Channel)
            .map_err(|e| SpawnError::Register(e.into()))
    }

    fn raw(&self) -> RawFd {
        self.0.get_ref().as_raw_fd()
    }

    /// Next message, or `None` once the peer closed its end.
    async fn recv<T: for<'de> serde::Deserialize<'de>>(&self) -> Result<Option<T>, SpawnError> {
        loop {
            let mut guard = self.0.readable().await.map_err(SpawnError::Register)?;
            match proto::recv::<T>(self.raw(), MsgFlags::MSG_DONTWAIT) {
                Err(ProtoError::Recv(nix::Error::EAGAIN)) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => return Err(e.into()),
                Ok(m) => return Ok(m.map(|(msg, _fds)| msg)),
            }
        }
    }

    fn send(&self, msg: &ToStage, fds: &[RawFd]) -> Result<(), SpawnError> {
        // A few KiB into an empty seqpacket socket: never blocks for long,
        // and a full buffer (EAGAIN) would mean a stuck stage anyway.
        Ok(proto::send(self.raw(), msg, fds)?)
    }
}

/// How stages are started.
pub enum Stager {
    /// Exec `berth sandbox-stage` for each container: for one-shot use
    /// (`berth inetd`), where a zygote would be one more exec.
    Exec,
    /// Ask a long-lived `berth sandbox-zygote` to fork one (started on first
    /// use, again if it died).
    Zygote(Box<tokio::sync::Mutex<Option<Zygote>>>),
}

impl Stager {
    pub fn zygote() -> Stager {
        Stager::Zygote(Box::new(tokio::sync::Mutex::new(None)))
    }

    /// A new stage process, whether it is PID 1 itself (forked by the
    /// zygote into its pid namespace with the spec: no outer stage, no
    /// `Setup`), and our end of its control channel.
    async fn start(&self, spec: &Spec) -> Result<(StageProc, bool, OwnedFd), SpawnError> {
        let Stager::Zygote(z) = self else {
            let (ours, theirs) = channel_pair()?;
            let child = exec_stage("sandbox-stage", theirs).map_err(SpawnError::Exec)?;
            return Ok((StageProc::child(child)?, false, ours));
        };
        // A user namespace must be made outside the pid namespace, by an
        // outer stage; everything else gets PID 1 straight from the zygote.
        let direct = spec.private_users.is_none();
        // One request at a time: replies come back in order on one channel.
        let mut slot = z.lock().await;
        // A zygote that died (killed, or the binary was replaced and it
        // failed) is replaced once; a second failure is reported.
        let mut replaced = false;
        loop {
            // A channel per attempt: a PID 1 forked by a zygote that died
            // before reporting it starts at once and may have sent
            // `Prepared` before it is killed; on a shared channel the
            // retry's PID 1 would be told `Start` on that stale message.
            let (ours, theirs) = channel_pair()?;
            // Every message on `ours` then says who sent it: how a PID 1
            // that ended before its zygote reported it is found (it holds
            // no descriptor by then). Without it that rare case is only
            // left a zombie, so a failure here is not one of the launch.
            let _ = nix::sys::socket::setsockopt(&ours, nix::sys::socket::sockopt::PassCred, &true);
            let mut zygote = match slot.take() {
                Some(zygote) => zygote,
                None => Zygote::start()?,
            };
            // The zygote is ours, but one that stopped answering would
            // block every launch behind this lock: replace it.
            let forked =
                match tokio::time::timeout(stage_deadline(), zygote.fork(&theirs, spec, direct))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(SpawnError::ZygoteDeadline(stage_deadline())),
                };
            match forked {
                Err(
                    e @ (SpawnError::Proto(_)
                    | SpawnError::ZygoteGone
                    | SpawnError::ZygoteDeadline(_)),
                ) => {
                    let _ = zygote.child.start_kill();
                    let _ = zygote.child.wait().await;
                    // It may have forked a stage before it died and not
                    // reported it; that stage must not outlive us unreaped.
                    kill_unreported(&theirs, &ours);
                    if replaced {
                        return Err(e);
                    }
                    tracing::warn!("sandbox zygote unusable ({e}); starting a new one");
                    replaced = true;
                }
                forked => {
                    *slot = Some(zygote);
                    return Ok((StageProc::forked(forked?)?, direct, ours));
                }
            }
        }
    }
}

/// Kill and reap a stage that a zygote forked but died before reporting:
/// our child (`CLONE_PARENT`) that holds the stage channel `theirs`. Found
/// by that socket's inode among our children's descriptors; it waits on
/// the channel (for `Setup`, or as PID 1 for `Start`) until then. A PID 1
/// whose set-up failed at once may have ended already and holds nothing to
/// be found by: it is found by the message it sent on `ours` instead.
fn kill_unreported(theirs: &OwnedFd, ours: &OwnedFd) {
    let Ok(st) = nix::sys::stat::fstat(theirs.as_raw_fd()) else {
        return;
    };
    let link = format!("socket:[{}]", st.st_ino);
    let mut found = Vec::new();
    for pid in our_children() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str()));
        if holds {
            tracing::warn!("killing stage {pid}: forked by a zygote that died before reporting it");
            found.push(pid);
        }
    }
    // A PID 1 that sent its failure and ended holds no descriptor, so the
    // scan above misses it; its message names it. Children are read after
    // the scan so that one ending meanwhile is still among them.
    let children = our_children();
    for pid in senders(ours) {
        if children.contains(&pid) && !found.contains(&pid) {
            tracing::warn!(
                "reaping stage {pid}: forked by a zygote that died before reporting it, \
                 ended on its own"
            );
            found.push(pid);
        }
    }
    for pid in found {
        // Our unreaped child: its pid is still its own. Dropped at once, it
        // is reaped in the background once the kill lands (or at once).
        if let Ok(stage) = StageProc::forked(pid) {
            stage.signal(Signal::SIGKILL);
        }
    }
}

/// The supervisor's children, as `/proc` lists them (zombies included).
fn our_children() -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The pids that sent the messages still queued on `ours` (consumed): the
/// kernel recorded each sender as it sent, since `ours` has `SO_PASSCRED`
/// (`Stager::start`).
fn senders(ours: &OwnedFd) -> Vec<u32> {
    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    use std::os::fd::FromRawFd;
    let mut pids = Vec::new();
    let mut buf = [0u8; 1];
    let mut cmsg = nix::cmsg_space!(libc::ucred, [RawFd; proto::MAX_FDS]);
    loop {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<()>(
            ours.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) else {
            break;
        };
        let mut any = false;
        for c in msg.cmsgs().into_iter().flatten() {
            any = true;
            match c {
                ControlMessageOwned::ScmCredentials(cred) => {
                    pids.extend(u32::try_from(cred.pid()).ok());
                }
                ControlMessageOwned::ScmRights(fds) => {
                    for fd in fds {
                        // SAFETY: just received; nothing else owns it.
                        drop(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
                _ => {}
            }
        }
        // 0 bytes and nothing attached: the other end is closed.
        if msg.bytes == 0 && !any {
            break;
        }
    }
    pids
}

/// `berth sandbox-zygote` and its channel.
pub struct Zygote {
    child: Child,
    channel: Channel,
}

impl Zygote {
    fn start() -> Result<Zygote, SpawnError> {
        let (ours, theirs) = channel_pair()?;
        let child = exec_stage("sandbox-zygote", theirs).map_err(SpawnError::ZygoteExec)?;
        Ok(Zygote {
            child,
            channel: Channel::new(ours)?,
        })
    }

    async fn fork(
        &mut self,
        theirs: &OwnedFd,
        spec: &Spec,
        direct: bool,
    ) -> Result<u32, SpawnError> {
        // The zygote keeps a read-only template per definition; with
        // private users the whole tree is per container.
        let request = if direct {
            ToZygote::Init {
                spec: Box::new(spec.clone()),
            }
        } else {
            ToZygote::Fork {
                template: spec.private_users.is_none().then(|| Box::new(spec.clone())),
            }
        };
        proto::send(self.channel.raw(), &request, &[theirs.as_raw_fd()])?;
        match self.channel.recv::<FromZygote>().await? {
            Some(FromZygote::Forked { pid }) if pid > 0 => Ok(pid as u32),
            Some(FromZygote::Forked { pid }) => {
                Err(SpawnError::Zygote(format!("reported pid {pid}")))
            }
            Some(FromZygote::Failed(f)) => Err(SpawnError::Zygote(f.message)),
            None => Err(SpawnError::ZygoteGone),
        }
    }
}

/// Both ends of a control channel (close-on-exec; the child's end is
/// handed over explicitly).
fn channel_pair() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(SpawnError::SocketPair)
}

/// Exec `berth SUBCOMMAND` with `channel` as its stdin. std dup2s it
/// without CLOEXEC, so no pre_exec hook runs in the forked child of this
/// threaded process.
fn exec_stage(subcommand: &str, channel: OwnedFd) -> std::io::Result<Child> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("berth")
        .arg(subcommand)
        .env_clear()
        .stdin(Stdio::from(channel))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    // Documented switch (all builds): no read-only templates.
    if let Some(v) = std::env::var_os(super::mounts::template::DISABLE_ENV) {
        cmd.env(super::mounts::template::DISABLE_ENV, v);
    }
    #[cfg(debug_assertions)]
    for var in [
        TEST_HANG_ENV,
        TEST_ZYGOTE_DIE_ENV,
        TEST_ZYGOTE_DIE_AFTER_INIT_ENV,
        super::net::TEST_NO_NURSERY_ENV,
    ] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.spawn()
}

/// A stage process: our child either way, so its status is ours to reap.
enum StageProc {
    /// Exec'd by tokio (its pidfd for signals: tokio's own kill() takes
    /// the bare pid).
    Child { child: Child, pidfd: OwnedFd },
    /// Forked by the zygote with `CLONE_PARENT`: watched through a pidfd and
    /// reaped with `waitid(P_PIDFD)` (tokio reaps only what it spawned).
    Forked {
        pid: u32,
        pidfd: Option<AsyncFd<OwnedFd>>,
    },
}

impl StageProc {
    fn child(child: Child) -> Result<StageProc, SpawnError> {
        // Not waited for yet, so not reaped: the pid is still this child's.
        let pidfd = crate::pidfd::open(child.id().unwrap_or(0))?;
        Ok(StageProc::Child { child, pidfd })
    }

    fn forked(pid: u32) -> Result<StageProc, SpawnError> {
        // The stage is our child and nobody else can reap it, so its pid
        // cannot be reused before we open the pidfd.
        let fd = crate::pidfd::open(pid)?;
        // SAFETY: the AsyncFd owns the pidfd for its whole life.
        let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(
            |source| SpawnError::PidFd {
                pid,
                source: source.into(),
            },
        )?;
        Ok(StageProc::Forked {
            pid,
            pidfd: Some(afd),
        })
    }

    fn pid(&self) -> u32 {
        match self {
            StageProc::Child { child, .. } => child.id().unwrap_or(0),
            StageProc::Forked { pid, .. } => *pid,
        }
    }

    /// Signal the stage through its pidfd (nothing once it was reaped).
    fn signal(&self, sig: Signal) {
        let _ = match self {
            StageProc::Child { pidfd, .. } => crate::pidfd::signal(pidfd, sig),
            StageProc::Forked {
                pidfd: Some(afd), ..
            } => crate::pidfd::signal(afd.get_ref(), sig),
            StageProc::Forked { pidfd: None, .. } => Ok(()),
        };
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            StageProc::Child { child, .. } => child.wait().await,
            StageProc::Forked { pidfd, .. } => {
                let Some(afd) = pidfd.as_ref() else {
                    return Err(std::io::Error::other("stage already reaped"));
                };
                loop {
                    let mut guard = afd.readable().await?;
                    match reap_pidfd(afd.get_ref())? {
                        Some(status) => {
                            drop(guard);
                            *pidfd = None;
                            return Ok(status);
                        }
                        None => guard.clear_ready(),
                    }
                }
            }
        }
    }
}

impl Drop for StageProc {
    /// A forked stage dropped before it was reaped (the supervisor leaves a
    /// container running at shutdown, or an error path): reap it when it
    /// ends rather than leave a zombie.
    fn drop(&mut self) {
        if let StageProc::Forked { pidfd, .. } = self
            && let Some(afd) = pidfd.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                while let Ok(mut g) = afd.readable().await {
                    match reap_pidfd(afd.get_ref()) {
                        Ok(None) => g.clear_ready(),
                        _ => break,
                    }
                }
            });
        }
    }
}

/// Collect the status of the exited child behind `pidfd`; `None` while it
/// runs.
fn reap_pidfd(pidfd: &OwnedFd) -> std::io::Result<Option<ExitStatus>> {
    use std::os::fd::AsFd;
    use std::os::unix::process::ExitStatusExt;
    loop {
        return match waitid(
            Id::PIDFd(pidfd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(WaitStatus::Exited(_, code)) => Ok(Some(ExitStatus::from_raw((code & 0xff) << 8))),
            // As a stage reports its PID 1 killed by signal N (128+N):
            // a PID 1 forked directly by the zygote is reaped here itself.
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                Ok(Some(ExitStatus::from_raw(((128 + sig as i32) & 0xff) << 8)))
            }
            Ok(WaitStatus::StillAlive) => Ok(None),
            Ok(_) => Ok(None),
            Err(nix::Error::EINTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

/// A stage that has built its namespaces and waits for `Start`.
pub struct Prepared {
    child: StageProc,
    channel: Channel,
    inner_pid: u32,
    /// pidfd of PID 1 (opened when the stage reports its pid).
    inner: Option<OwnedFd>,
    low_priority: bool,
}

/// The descriptors the application gets.
pub struct StartFds<'a> {
    pub stdin: &'a OwnedFd,
    pub stdout: &'a OwnedFd,
    pub stderr: &'a OwnedFd,
    pub listeners: &'a [OwnedFd],
}

/// How the supervisor learns that a container ended.
enum Handle {
    /// Started by this supervisor: the stage is our child.
    Own(StageProc),
    /// Adopted after a supervisor restart: a pidfd on the stage, which is
    /// not our child (its exit status is not ours to collect).
    Adopted(AsyncFd<OwnedFd>),
}

/// A running container (its stage process is the handle).
pub struct Running {
    handle: Handle,
    inner_pid: u32,
    /// pidfd of PID 1: every signal to the container goes through it.
    init: OwnedFd,
}

/// A stage that has forked PID 1 of the container (its pids are known, so
/// the scope can be made) and may still be building the sandbox.
pub struct Pending {
    prepared: Prepared,
    parked: bool,
    /// When the stage must have reported `Prepared`.
    deadline: tokio::time::Instant,
}

/// Start a stage for `spec` and return once it has forked PID 1 of the
/// container; the sandbox is built meanwhile (see [`Pending::parked`]).
pub async fn spawn(spec: &Spec, stager: &Stager) -> Result<Pending, SpawnError> {
    let deadline = tokio::time::Instant::now() + stage_deadline();
    let (child, direct, ours) = stager.start(spec).await?;
    let channel = match Channel::new(ours) {
        Ok(channel) => channel,
        Err(e) => {
            // Dropped at once, it is reaped in the background.
            child.signal(Signal::SIGKILL);
            return Err(e);
        }
    };
    let mut pending = Pending {
        deadline,
        prepared: Prepared {
            child,
            channel,
            inner_pid: 0,
            inner: None,
            low_priority: spec.low_priority,
        },
        parked: false,
    };
    if direct {
        // PID 1 is our child: nobody else can reap it, so its pid is its
        // own until we do. It has the spec already.
        let pid = pending.prepared.child.pid();
        match crate::pidfd::open(pid) {
            Ok(fd) => {
                pending.prepared.inner = Some(fd);
                pending.prepared.inner_pid = pid;
            }
            Err(e) => {
                pending.prepared.kill();
                pending.prepared.reap().await;
                return Err(e.into());
            }
        }
        return Ok(pending);
    }
    if let Err(e) = pending
        .prepared
        .channel
        .send(&ToStage::Setup(Box::new(spec.clone())), &[])
    {
        pending.prepared.kill();
        pending.prepared.reap().await;
        return Err(e);
    }
    // Forked (from the outer stage) and Prepared (from the inner one) may
    // arrive in either order.
    while pending.prepared.inner_pid == 0 {
        pending.next().await?;
    }
    Ok(pending)
}

impl Pending {
    /// Host pids for the container's scope: the outer stage (if any) and
    /// PID 1.
    pub fn pids(&self) -> Vec<u32> {
        self.prepared.pids()
    }

    async fn next(&mut self) -> Result<(), SpawnError> {
        let p = &mut self.prepared;
        let Ok(received) =
            tokio::time::timeout_at(self.deadline, p.channel.recv::<FromStage>()).await
        else {
            return Err(p.expire(if p.inner_pid == 0 {
                "Forked"
            } else {
                "Prepared"
            }));
        };
        match received {
            Ok(Some(FromStage::Forked { pid })) => {
                // PID 1 is the stage's child, not ours: it could end and be
                // reaped (its pid reused) before this, hence the check.
                match crate::pidfd::open_child_of(pid as u32, p.child.pid()) {
                    Ok(fd) => {
                        p.inner = Some(fd);
                        p.inner_pid = pid as u32;
                    }
                    Err(e) => {
                        // PID 1 already ended (a set-up step failed at
                        // once): the failure it reported before exiting is
                        // in the channel and says more than the pidfd.
                        if e.process_ended()
                            && let Ok(Ok(Some(FromStage::Failed(f)))) =
                                tokio::time::timeout_at(self.deadline, p.channel.recv()).await
                        {
                            p.reap().await;
                            return Err(SpawnError::Failed(f));
                        }
                        p.kill();
                        p.reap().await;
                        return Err(e.into());
                    }
                }
            }
            Ok(Some(FromStage::Prepared)) => self.parked = true,
            Ok(Some(FromStage::Failed(f))) => {
                p.reap().await;
                return Err(SpawnError::Failed(f));
            }
            Ok(None) => {
                let status = p.reap().await;
                return Err(SpawnError::Died(status));
            }
            Err(e) => {
                p.kill();
                p.reap().await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Wait until the sandbox is built and the stage waits for `Start`.
    pub async fn parked(mut self) -> Result<Prepared, SpawnError> {
        while !self.parked {
            self.next().await?;
        }
        Ok(self.prepared)
    }
}

impl Prepared {
    /// Host pids to place in the container's scope: the outer stage (if
    /// any) and PID 1 of the container.
    pub fn pids(&self) -> Vec<u32> {
        let stage = self.child.pid();
        if stage == self.inner_pid {
            vec![stage]
        } else {
            vec![stage, self.inner_pid]
        }
    }

    /// A deadline passed: kill the stage (PID 1 first, which takes its pid
    /// namespace along) and leave the reaping to `StageProc`'s drop, so a
    /// stage stuck in the kernel does not hold the caller too.
    fn expire(&self, what: &'static str) -> SpawnError {
        self.kill();
        SpawnError::Deadline {
            what,
            after: stage_deadline(),
        }
    }

    fn kill(&self) {
        if let Some(init) = &self.inner {
            let _ = crate::pidfd::signal(init, Signal::SIGKILL);
        }
        self.child.signal(Signal::SIGKILL);
    }

    async fn reap(&mut self) -> String {
        match self.child.wait().await {
            Ok(s) => describe(s),
            Err(e) => format!("wait failed: {e}"),
        }
    }

    /// Abandon a prepared sandbox (warm pool shrink, shutdown).
    pub async fn discard(mut self) {
        self.kill();
        self.reap().await;
    }

    /// Hand over the descriptors and let the application exec. Returns once
    /// the exec succeeded (the channel closed) or failed.
    pub async fn start(mut self, fds: StartFds<'_>) -> Result<Running, SpawnError> {
        let mut raw = vec![
            fds.stdin.as_raw_fd(),
            fds.stdout.as_raw_fd(),
            fds.stderr.as_raw_fd(),
        ];
        raw.extend(fds.listeners.iter().map(|f| f.as_raw_fd()));
        if self.low_priority {
            // Built as SCHED_BATCH ahead of need; from now on a client waits.
            for pid in self.pids() {
                if let Err(e) = super::stage::set_policy(pid as libc::pid_t, libc::SCHED_OTHER) {
                    self.kill();
                    self.reap().await;
                    return Err(SpawnError::Priority {
                        pid,
                        error: e.to_string(),
                    });
                }
            }
        }
        let sent = self.channel.send(
            &ToStage::Start {
                listen_fds: fds.listeners.len(),
            },
            &raw,
        );
        if let Err(e) = sent {
            self.kill();
            self.reap().await;
            return Err(e);
        }
        let Ok(received) =
            tokio::time::timeout(stage_deadline(), self.channel.recv::<FromStage>()).await
        else {
            return Err(self.expire("exec of the application"));
        };
        match received {
            Ok(None) => match self.inner.take() {
                Some(init) => Ok(Running {
                    handle: Handle::Own(self.child),
                    inner_pid: self.inner_pid,
                    init,
                }),
                // spawn() returns only once PID 1's pidfd is open.
                None => {
                    self.kill();
                    self.reap().await;
                    Err(SpawnError::OutOfOrder("Start before PID 1 was known"))
                }
            },
            Ok(Some(FromStage::Failed(f))) => {
                self.reap().await;
                Err(SpawnError::Failed(f))
            }
            Ok(Some(_)) => {
                self.kill();
                self.reap().await;
                Err(SpawnError::OutOfOrder("a setup message after Start"))
            }
            Err(e) => {
                self.kill();
                self.reap().await;
                Err(e)
            }
        }
    }
}

impl Running {
    /// Take over a container started by an earlier supervisor: `stage` is
    /// its outer stage, `init` PID 1 of its pid namespace (the same process
    /// where the zygote forked PID 1 directly).
    pub fn adopt(stage: u32, init: u32) -> std::io::Result<Running> {
        let fd = crate::pidfd::open(stage).map_err(std::io::Error::other)?;
        let init_fd = if init == stage {
            crate::pidfd::open(init)
        } else {
            crate::pidfd::open_child_of(init, stage)
        }
        .map_err(std::io::Error::other)?;
        // SAFETY: the AsyncFd owns the pidfd for its whole life.
        let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Running {
            handle: Handle::Adopted(afd),
            inner_pid: init,
            init: init_fd,
        })
    }

    /// PID 1 of the container on the host.
    pub fn init_pid(&self) -> u32 {
        self.inner_pid
    }

    /// Ask the application to stop: PID 1 forwards the signal.
    pub fn signal(&self, sig: Signal) {
        let _ = crate::pidfd::signal(&self.init, sig);
    }

    /// End the container now: killing PID 1 of a pid namespace kills every
    /// process in it.
    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// Wait for the container to end; the status is the application's
    /// (reported as 0 for an adopted container, whose status is unknown).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match &mut self.handle {
            Handle::Own(c) => c.wait().await,
            Handle::Adopted(afd) => {
                // A pidfd turns readable when the process exits.
                let _guard = afd.readable().await?;
                Ok(std::os::unix::process::ExitStatusExt::from_raw(0))
            }
        }
    }

    pub fn adopted(&self) -> bool {
        matches!(self.handle, Handle::Adopted(_))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(r) => r,
            Err(_) => {
                self.kill();
                self.wait().await
            }
        }
    }
}

/// "exited 3", "killed by SIGKILL" for an application status relayed by
/// the stage (128+N means signal N).
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        if code > 128
            && code < 128 + 65
            && let Ok(sig) = Signal::try_from(code - 128)
        {
            return format!("killed by {}", sig.as_str());
        }
        if code == i32::from(super::stage::EXIT_SETUP_FAILED) {
            return format!("exited {code} (sandbox setup failed)");
        }
        return format!("exited {code}");
    }
    match status.signal().map(Signal::try_from) {
        Some(Ok(sig)) => format!("stage killed by {}", sig.as_str()),
        _ => "ended".to_owned(),
    }
}
