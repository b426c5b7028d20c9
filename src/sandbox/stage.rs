//! `berth sandbox-stage`: the outer stage of one container. It is exec'd by
//! the supervisor (`berth inetd`) or forked by the zygote
//! ([`super::zygote`]), never forked from the supervisor's threads, and gets
//! the control channel as fd 0 (exec) or as a descriptor (fork).
//!
//! The process roles of a container, each in its own module:
//! - this one: unshare the pid namespace, fork PID 1, report
//!   [`FromStage::Forked`], wait for PID 1 and exit with its status;
//! - `init`: PID 1, unshares the other namespaces (here, before
//!   `init::run`), builds the container, forks the application,
//!   then reaps with nothing left to steal;
//! - `exec`: the application's process up to its execve.
//!
//! Setup is one linear sequence; each step has its own error variant, and a
//! failure is sent to the supervisor as [`FromStage::Failed`] before the
//! process exits.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigmaskHow, Signal, sigprocmask};
use nix::sys::socket::MsgFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::Spec;
use super::creds::CredsError;
use super::init;
use super::mounts::{self, MountError};
use super::net::{self, NetError};
use super::proto::{self, FromStage, ProtoError, StageFailure, ToStage};
use super::seccomp::SeccompError;
use super::userns::{self, UsernsError};

/// Exit status of a stage that failed before the application ran.
pub const EXIT_SETUP_FAILED: u8 = 125;

/// Where the control channel lives once fd 0 is needed for stdin.
pub(super) const CONTROL_FD: RawFd = 100;

/// The errors of every process role of a container (stage, PID 1, the
/// application before exec): they all end up as one [`FromStage::Failed`].
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("moving the control channel off fd 0: {0}")]
    ControlFd(#[source] rustix::io::Errno),
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("the supervisor closed the channel before {0}")]
    Closed(&'static str),
    #[error("unexpected message from the supervisor (wanted {0})")]
    Unexpected(&'static str),
    #[error("unshare({flags:?}): {source}")]
    Unshare { flags: CloneFlags, source: Errno },
    #[error("fork: {0}")]
    Fork(#[source] Errno),
    #[error("prctl({0}): {1}")]
    Prctl(&'static str, #[source] Errno),
    #[error("sethostname({name}): {source}")]
    Hostname { name: String, source: Errno },
    #[error("{0}")]
    Net(#[from] NetError),
    #[error("{0}")]
    Mount(#[from] MountError),
    #[error("{0}")]
    Seccomp(#[from] SeccompError),
    #[error("{0}")]
    Creds(#[from] CredsError),
    #[error("{0}")]
    Userns(#[from] UsernsError),
    #[error("Start carried {got} file descriptors, expected {want}")]
    FdCount { got: usize, want: usize },
    #[error("arranging file descriptors: {0}")]
    Fds(#[source] Errno),
    #[error("sigprocmask: {0}")]
    SigMask(#[source] Errno),
    #[error("sched_setscheduler: {0}")]
    Scheduler(#[source] Errno),
    #[error("setsid: {0}")]
    Setsid(#[source] Errno),
    #[error("working directory {path}: {source}")]
    Chdir { path: String, source: Errno },
    #[error("{what} contains a NUL byte")]
    Nul { what: &'static str },
    #[error("opening {path}: {source}")]
    OpenPath { path: String, source: Errno },
    #[error("{0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error(
        "Landlock is unavailable ({0}): an application that keeps CAP_SYS_PTRACE could trace \
         PID 1 without it; remove CAP_SYS_PTRACE or run on a kernel with Landlock enabled"
    )]
    LandlockRequired(#[source] landlock::RulesetError),
    #[error("opening / for the application's Landlock rule: {0}")]
    LandlockRoot(#[source] landlock::PathFdError),
    #[error("entering the Landlock domain: {0}")]
    Landlock(#[source] landlock::RulesetError),
    #[error("entering the Landlock domain: the kernel enforced it only partly ({0:?})")]
    LandlockPartial(landlock::RulesetStatus),
    #[error("the pipe to wait for PID 1's lock-down: {0}")]
    LockPipe(#[source] Errno),
    #[error("exec {path}: {source}")]
    Exec { path: String, source: Errno },
    #[cfg(debug_assertions)]
    #[error(
        "set-up failed at once (test hook {})",
        super::spawn::TEST_ZYGOTE_DIE_AFTER_INIT_ENV
    )]
    TestFailAtOnce,
}

/// Entry point of `berth sandbox-stage` (exec'd, control channel on fd 0).
pub fn main() -> ExitCode {
    // exec of /proc/self/exe names the process "exe"; say what it is.
    let _ = nix::sys::prctl::set_name(c"berth-stage");
    // SAFETY: fd 0 is the control channel the supervisor passed; from here
    // on this process owns it.
    let stdin = unsafe { OwnedFd::from_raw_fd(0) };
    let control = match move_fd(stdin, CONTROL_FD) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("berth sandbox-stage: {e}");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
    ExitCode::from(outer(control, None, None))
}

/// The stage forked by the zygote, with its control channel, the
/// read-only template of its definition if the zygote has one and the
/// zygote's nursery network namespace (`net::nursery`); returns the exit
/// status.
pub(super) fn forked(control: OwnedFd, template: Option<OwnedFd>, nursery: Option<OwnedFd>) -> u8 {
    let _ = nix::sys::prctl::set_name(c"berth-stage");
    match move_fd(control, CONTROL_FD) {
        Ok(control) => outer(control, template, nursery),
        Err(e) => {
            eprintln!("berth sandbox-stage: {e}");
            EXIT_SETUP_FAILED
        }
    }
}

/// Report a setup failure to the supervisor and give the failure status.
pub(super) fn fail(control: &OwnedFd, e: &StageError) -> u8 {
    report(control, e);
    EXIT_SETUP_FAILED
}

pub(super) fn report(control: &OwnedFd, e: &StageError) {
    let failure = FromStage::Failed(StageFailure {
        message: e.to_string(),
    });
    if proto::send(control.as_raw_fd(), &failure, &[]).is_err() {
        eprintln!("berth sandbox-stage: {e}");
    }
}

/// Duplicate `fd` to the lowest free descriptor ≥ `min`, close-on-exec.
pub(super) fn move_fd(fd: OwnedFd, min: RawFd) -> Result<OwnedFd, StageError> {
    rustix::io::fcntl_dupfd_cloexec(&fd, min).map_err(StageError::ControlFd)
}

/// The outer stage: unshare, fork PID 1 of the new pid namespace, tell the
/// supervisor its pid, close its end of the channel (the supervisor reads
/// EOF once the application's exec closed the last copy), then wait for
/// PID 1 and exit with its status.
fn outer(control: OwnedFd, template: Option<OwnedFd>, nursery: Option<OwnedFd>) -> u8 {
    let child = match outer_setup(&control, template, nursery) {
        Ok(Some(child)) => child,
        Ok(None) => return EXIT_SETUP_FAILED,
        Err(e) => return fail(&control, &e),
    };
    drop(control);
    wait_for(child)
}

/// Everything up to the fork; `Ok(None)` in the child once it is done.
fn outer_setup(
    control: &OwnedFd,
    template: Option<OwnedFd>,
    nursery: Option<OwnedFd>,
) -> Result<Option<Pid>, StageError> {
    let spec = match proto::recv::<ToStage>(control.as_raw_fd(), MsgFlags::empty())? {
        Some((ToStage::Setup(spec), _)) => *spec,
        Some(_) => return Err(StageError::Unexpected("Setup")),
        None => return Err(StageError::Closed("Setup")),
    };
    if spec.die_with_supervisor {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| StageError::Prctl("PR_SET_PDEATHSIG", e))?;
    }
    if spec.low_priority {
        // A sandbox built ahead of need must not preempt one a client is
        // waiting for. SCHED_BATCH (no wake-up preemption), not SCHED_IDLE or
        // nice: leaving those needs CAP_SYS_NICE in the initial user
        // namespace, which berth in a container lacks, and a starved task
        // holding the kernel's namespace or mount locks would stall everyone.
        // PID 1 inherits it; the supervisor resets both before Start.
        set_policy(0, libc::SCHED_BATCH)?;
    }
    // The user namespace first: its helper must not become PID 1 of the
    // new pid namespace. Every namespace below stays the host's.
    let userns = spec.private_users.map(userns::create).transpose()?;
    // This container's copy of the read-only template, cloned while still
    // in the namespace the template was made in; PID 1 attaches it. A clone
    // that fails means the tree is built step by step, as without one.
    let tree = template.and_then(|t| mounts::template::clone(&t).ok());
    // Only the pid namespace here (cheap): PID 1 is forked and reported at
    // once, so the supervisor's scope job for both pids overlaps the rest
    // (the network namespace alone takes about a millisecond), which PID 1
    // unshares itself before it builds the container.
    let pid_ns = CloneFlags::CLONE_NEWPID;
    unshare(pid_ns).map_err(|source| StageError::Unshare {
        flags: pid_ns,
        source,
    })?;

    // Block the signals PID 1 forwards (and SIGCHLD) before the fork, so
    // none arrives unhandled between fork and the reaper's sigwait.
    let forwarded = init::reaper_signals();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), None).map_err(StageError::SigMask)?;

    // SAFETY: the stage is single-threaded (exec'd fresh, no runtime), so
    // the child may do anything after fork.
    match unsafe { fork() }.map_err(StageError::Fork)? {
        ForkResult::Child => {
            let code = inner(control, &spec, userns.as_ref(), tree, nursery);
            // SAFETY: _exit ends the forked child at once, without the
            // exit handlers of the process it was forked from.
            unsafe { libc::_exit(i32::from(code)) }
        }
        ForkResult::Parent { child } => {
            proto::send(
                control.as_raw_fd(),
                &FromStage::Forked {
                    pid: child.as_raw(),
                },
                &[],
            )?;
            Ok(Some(child))
        }
    }
}

/// PID 1 forked by the zygote directly (`ToZygote::Init`): the new pid
/// namespace is made by that fork, `spec` came with it, so there is no
/// outer stage and no `Setup`. The same steps as `outer_setup` for the
/// rest; returns the exit status.
pub(super) fn direct(
    control: OwnedFd,
    spec: Spec,
    template: Option<OwnedFd>,
    nursery: Option<OwnedFd>,
) -> u8 {
    let _ = nix::sys::prctl::set_name(c"berth-init");
    let control = match move_fd(control, CONTROL_FD) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("berth sandbox-stage: {e}");
            return EXIT_SETUP_FAILED;
        }
    };
    #[cfg(debug_assertions)]
    if std::env::var_os(super::spawn::TEST_ZYGOTE_DIE_AFTER_INIT_ENV)
        .is_some_and(|t| std::path::Path::new(&t).exists())
    {
        return fail(&control, &StageError::TestFailAtOnce);
    }
    if spec.low_priority
        && let Err(e) = set_policy(0, libc::SCHED_BATCH)
    {
        return fail(&control, &e);
    }
    // Cloned while still in the zygote's mount namespace, as the stage does.
    let tree = template.and_then(|t| mounts::template::clone(&t).ok());
    inner(&control, &spec, None, tree, nursery)
}

/// PID 1, just forked into its pid namespace: unshare the others (the
/// network namespace from inside the nursery, if there is one), build the
/// container and run it (`init::run`); returns the exit status.
fn inner(
    control: &OwnedFd,
    spec: &Spec,
    userns: Option<&OwnedFd>,
    tree: Option<OwnedFd>,
    nursery: Option<OwnedFd>,
) -> u8 {
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    // network = "host": stay in the zygote's namespace (the nursery is
    // closed unused).
    let nursery = nursery.filter(|_| spec.private_network);
    if spec.private_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let built = nursery
        .map_or(Ok(()), net::enter_nursery)
        .map_err(StageError::from)
        .and_then(|()| unshare(flags).map_err(|source| StageError::Unshare { flags, source }))
        .and_then(|()| init::run(control, spec, userns, tree));
    match built {
        Ok(code) => code,
        Err(e) => fail(control, &e),
    }
}

/// sched_setscheduler(pid, policy) with priority 0 (0: this process).
pub fn set_policy(pid: libc::pid_t, policy: libc::c_int) -> Result<(), StageError> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads the param struct and nothing else.
    if unsafe { libc::sched_setscheduler(pid, policy, &param) } < 0 {
        return Err(StageError::Scheduler(Errno::last()));
    }
    Ok(())
}

/// Wait for `child` and turn its end into an exit code (128+N for signal N).
fn wait_for(child: Pid) -> u8 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code as u8,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128u8.wrapping_add(sig as u8),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return EXIT_SETUP_FAILED,
        }
    }
}
