//! Supervisor side of the stage channel: spawn `berth sandbox-stage`, send
//! the spec, learn the pids to put in a scope, then hand over the
//! application's descriptors and learn whether the exec happened.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, socketpair};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};

use super::Spec;
use super::proto::{self, FromStage, ProtoError, StageFailure, ToStage};

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("socketpair for the stage channel: {0}")]
    SocketPair(#[source] nix::Error),
    #[error("registering the stage channel: {0}")]
    Register(#[source] std::io::Error),
    #[error("starting the sandbox stage: {0}")]
    Exec(#[source] std::io::Error),
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("sandbox setup failed: {0}")]
    Failed(#[from] StageFailure),
    #[error("the sandbox stage exited ({0}) before the application started")]
    Died(String),
    #[error("the sandbox stage sent {0} out of order")]
    OutOfOrder(&'static str),
}

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

    /// Next message, or `None` once every stage process closed its end.
    async fn recv(&self) -> Result<Option<FromStage>, SpawnError> {
        loop {
            let mut guard = self.0.readable().await.map_err(SpawnError::Register)?;
            match proto::recv::<FromStage>(self.raw(), MsgFlags::MSG_DONTWAIT) {
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

/// A stage that has built its namespaces and waits for `Start`.
pub struct Prepared {
    child: Child,
    channel: Channel,
    stage_pid: u32,
    inner_pid: u32,
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
    Child(Child),
    /// Adopted after a supervisor restart: a pidfd on the stage, which is
    /// not our child (its exit status is not ours to collect).
    Adopted(AsyncFd<OwnedFd>),
}

/// A running container (its stage process is the handle).
pub struct Running {
    handle: Handle,
    inner_pid: u32,
}

/// A stage that has forked PID 1 of the container (its pids are known, so
/// the scope can be made) and may still be building the sandbox.
pub struct Pending {
    prepared: Prepared,
    parked: bool,
}

/// Spawn a stage for `spec` and return once it has forked PID 1 of the
/// container; the sandbox is built meanwhile (see [`Pending::parked`]).
pub async fn spawn(spec: &Spec) -> Result<Pending, SpawnError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(SpawnError::SocketPair)?;
    // The stage's end becomes its stdin (std dup2s it without CLOEXEC), so
    // no pre_exec hook runs in the forked child of this threaded process.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("berth")
        .arg("sandbox-stage")
        .env_clear()
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    let child = cmd.spawn().map_err(SpawnError::Exec)?;
    let stage_pid = child.id().unwrap_or(0);
    let channel = Channel::new(ours)?;
    channel.send(&ToStage::Setup(Box::new(spec.clone())), &[])?;
    let mut pending = Pending {
        prepared: Prepared {
            child,
            channel,
            stage_pid,
            inner_pid: 0,
        },
        parked: false,
    };
    // Forked (from the outer stage) and Prepared (from the inner one) may
    // arrive in either order.
    while pending.prepared.inner_pid == 0 {
        pending.next().await?;
    }
    Ok(pending)
}

impl Pending {
    /// Host pids for the container's scope: the outer stage and PID 1.
    pub fn pids(&self) -> [u32; 2] {
        self.prepared.pids()
    }

    async fn next(&mut self) -> Result<(), SpawnError> {
        let p = &mut self.prepared;
        match p.channel.recv().await {
            Ok(Some(FromStage::Forked { pid })) => p.inner_pid = pid as u32,
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
    /// Host pids to place in the container's scope: the outer stage and
    /// PID 1 of the container.
    pub fn pids(&self) -> [u32; 2] {
        [self.stage_pid, self.inner_pid]
    }

    fn kill(&self) {
        if self.inner_pid != 0 {
            let _ = kill(Pid::from_raw(self.inner_pid as i32), Signal::SIGKILL);
        }
        if self.stage_pid != 0 {
            let _ = kill(Pid::from_raw(self.stage_pid as i32), Signal::SIGKILL);
        }
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
        match self.channel.recv().await {
            Ok(None) => Ok(Running {
                handle: Handle::Child(self.child),
                inner_pid: self.inner_pid,
            }),
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
    /// its outer stage, `init` PID 1 of its pid namespace.
    pub fn adopt(stage: u32, init: u32) -> std::io::Result<Running> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, stage as libc::pid_t, 0u32) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pidfd_open returned a new descriptor nothing else owns.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) };
        // SAFETY: the AsyncFd owns the pidfd for its whole life.
        let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Running {
            handle: Handle::Adopted(afd),
            inner_pid: init,
        })
    }

    /// PID 1 of the container on the host.
    pub fn init_pid(&self) -> u32 {
        self.inner_pid
    }

    /// Ask the application to stop: PID 1 forwards the signal.
    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.inner_pid as i32), sig);
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
            Handle::Child(c) => c.wait().await,
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
        if code > 128 && code < 128 + 65 {
            if let Ok(sig) = Signal::try_from(code - 128) {
                return format!("killed by {}", sig.as_str());
            }
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
