//! `berth sandbox-stage`: the single-threaded process that builds one
//! container. It is exec'd by the supervisor (never forked from its threads)
//! and gets the control channel as fd 0. Setup is one linear sequence; each
//! step has its own error variant, and a failure is sent to the supervisor
//! as [`FromStage::Failed`] before the stage exits.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::socket::MsgFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, chdir, execve, fork, getpid, sethostname, setsid};

use super::creds::{self, CredsError};
use super::mounts::{self, MountError};
use super::net::{self, NetError};
use super::proto::{self, FromStage, FromZygote, ProtoError, StageFailure, ToStage, ToZygote};
use super::seccomp::{self, SeccompError};
use super::{DEFAULT_PATH, Spec};

/// Exit status of a stage that failed before the application ran.
pub const EXIT_SETUP_FAILED: u8 = 125;

/// Where the control channel lives once fd 0 is needed for stdin.
const CONTROL_FD: RawFd = 100;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("moving the control channel off fd 0: {0}")]
    ControlFd(#[source] nix::Error),
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
    #[error("exec {path}: {source}")]
    Exec { path: String, source: Errno },
}

/// Entry point of `berth sandbox-stage`.
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
    ExitCode::from(outer(control))
}

/// Entry point of `berth sandbox-zygote`: a single-threaded process, exec'd
/// once by the supervisor, that forks one stage per container. A fork of this
/// small process replaces an exec of the whole binary per container (loader,
/// relocation, runtime start: ~2 ms on the critical path in the benchmark),
/// and the stages share its pages. `CLONE_PARENT` makes each stage the
/// supervisor's own child, so the supervisor reaps it and gets the
/// application's status exactly as if it had exec'd the stage itself.
pub fn zygote_main() -> ExitCode {
    let _ = nix::sys::prctl::set_name(c"berth-zygote");
    // The zygote is only useful to the supervisor that started it.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        eprintln!("berth sandbox-zygote: prctl(PR_SET_PDEATHSIG): {e}");
        return ExitCode::from(EXIT_SETUP_FAILED);
    }
    // SAFETY: fd 0 is the zygote channel the supervisor passed; from here on
    // this process owns it.
    let channel = unsafe { OwnedFd::from_raw_fd(0) };
    let channel = match move_fd(channel, CONTROL_FD) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("berth sandbox-zygote: {e}");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
    loop {
        let control = match proto::recv::<ToZygote>(channel.as_raw_fd(), MsgFlags::empty()) {
            // The supervisor closed its end: nothing more to fork.
            Ok(None) => return ExitCode::SUCCESS,
            Ok(Some((ToZygote::Fork, mut fds))) if fds.len() == 1 => fds.remove(0),
            Ok(Some(_)) => {
                let _ = proto::send(
                    channel.as_raw_fd(),
                    &FromZygote::Failed(StageFailure {
                        message: "Fork without exactly one descriptor".into(),
                    }),
                    &[],
                );
                continue;
            }
            Err(e) => {
                eprintln!("berth sandbox-zygote: {e}");
                return ExitCode::from(EXIT_SETUP_FAILED);
            }
        };
        let reply = match clone_parent() {
            Ok(None) => {
                // The stage: it must not hold the zygote's channel.
                drop(channel);
                let _ = nix::sys::prctl::set_name(c"berth-stage");
                let code = match move_fd(control, CONTROL_FD) {
                    Ok(control) => outer(control),
                    Err(e) => {
                        eprintln!("berth sandbox-stage: {e}");
                        EXIT_SETUP_FAILED
                    }
                };
                std::process::exit(i32::from(code));
            }
            Ok(Some(pid)) => FromZygote::Forked { pid: pid.as_raw() },
            Err(e) => FromZygote::Failed(StageFailure {
                message: format!("clone(CLONE_PARENT): {e}"),
            }),
        };
        drop(control);
        if let Err(e) = proto::send(channel.as_raw_fd(), &reply, &[]) {
            eprintln!("berth sandbox-zygote: {e}");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    }
}

/// fork(), but the child's parent is this process's parent (the
/// supervisor). `Ok(None)` in the child.
fn clone_parent() -> Result<Option<Pid>, Errno> {
    // SAFETY: clone with a null stack continues the child on a copy of this
    // single-threaded process's stack, as fork does; no locks are held here
    // and the child uses only its own copy of the process state.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match rc {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// Report a setup failure to the supervisor and give the failure status.
fn fail(control: &OwnedFd, e: &StageError) -> u8 {
    report(control, e);
    EXIT_SETUP_FAILED
}

fn report(control: &OwnedFd, e: &StageError) {
    let failure = FromStage::Failed(StageFailure {
        message: e.to_string(),
    });
    if proto::send(control.as_raw_fd(), &failure, &[]).is_err() {
        eprintln!("berth sandbox-stage: {e}");
    }
}

/// Duplicate `fd` to the lowest free descriptor ≥ `min`, close-on-exec.
fn move_fd(fd: OwnedFd, min: RawFd) -> Result<OwnedFd, StageError> {
    let new = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))
        .map_err(StageError::ControlFd)?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The outer stage: unshare, fork PID 1 of the new pid namespace, tell the
/// supervisor its pid, close its end of the channel (the supervisor reads
/// EOF once the application's exec closed the last copy), then wait for
/// PID 1 and exit with its status.
fn outer(control: OwnedFd) -> u8 {
    let child = match outer_setup(&control) {
        Ok(Some(child)) => child,
        Ok(None) => return EXIT_SETUP_FAILED,
        Err(e) => return fail(&control, &e),
    };
    drop(control);
    wait_for(child)
}

/// Everything up to the fork; `Ok(None)` in the child once it is done.
fn outer_setup(control: &OwnedFd) -> Result<Option<Pid>, StageError> {
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
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID;
    if spec.private_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|source| StageError::Unshare { flags, source })?;

    // Block the signals PID 1 forwards (and SIGCHLD) before the fork, so
    // none arrives unhandled between fork and the reaper's sigwait.
    let forwarded = reaper_signals();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), None).map_err(StageError::SigMask)?;

    // SAFETY: the stage is single-threaded (exec'd fresh, no runtime), so
    // the child may do anything after fork.
    match unsafe { fork() }.map_err(StageError::Fork)? {
        ForkResult::Child => {
            let code = match inner(control, &spec) {
                Ok(code) => code,
                Err(e) => fail(control, &e),
            };
            std::process::exit(i32::from(code));
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

fn reaper_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    set
}

/// PID 1 of the new pid namespace: build the container, wait for Start,
/// fork the application, then reap until it exits.
fn inner(control: &OwnedFd, spec: &Spec) -> Result<u8, StageError> {
    if spec.die_with_supervisor {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| StageError::Prctl("PR_SET_PDEATHSIG", e))?;
    }
    let _ = nix::sys::prctl::set_name(c"berth-init");
    // Not dumpable: the application cannot open /proc/1/exe (this binary
    // on the host) or ptrace its reaper, even as uid 0.
    nix::sys::prctl::set_dumpable(false).map_err(|e| StageError::Prctl("PR_SET_DUMPABLE", e))?;
    sethostname(&spec.hostname).map_err(|source| StageError::Hostname {
        name: spec.hostname.clone(),
        source,
    })?;
    if spec.private_network {
        net::loopback_up()?;
    }
    // journald's stream socket is outside the new root: hold it by an
    // O_PATH descriptor and connect through /proc/self/fd once inside the
    // scope, so journald attributes the output to the scope.
    let journal_socket = match &spec.journal {
        Some(_) => Some(open_path(crate::journal::STDOUT_SOCKET)?),
        None => None,
    };
    mounts::assemble(spec)?;
    // Everything that can fail is prepared before the application's fork.
    let filters = seccomp::filters(spec.seccomp)?;
    let keep = creds::parse_caps(&spec.capabilities)?;
    let argv = cstrings(&spec.exec, "exec")?;
    let workdir = spec.working_directory.to_string_lossy().into_owned();

    proto::send(control.as_raw_fd(), &FromStage::Prepared, &[])?;
    let (listen_fds, mut fds) =
        match proto::recv::<ToStage>(control.as_raw_fd(), MsgFlags::empty())? {
            Some((ToStage::Start { listen_fds }, fds)) => (listen_fds, fds),
            Some(_) => return Err(StageError::Unexpected("Start")),
            None => return Err(StageError::Closed("Start")),
        };
    if fds.len() != 3 + listen_fds {
        return Err(StageError::FdCount {
            got: fds.len(),
            want: 3 + listen_fds,
        });
    }
    if let (Some(j), Some(sock)) = (&spec.journal, &journal_socket) {
        let path = std::path::PathBuf::from(format!("/proc/self/fd/{}", sock.as_raw_fd()));
        fds[2] = crate::journal::connect_stream(&path, &j.identifier, &j.unit)?;
        if j.stdout {
            fds[1] = crate::journal::connect_stream(&path, &j.identifier, &j.unit)?;
        }
    }
    drop(journal_socket);
    // Now inside the container's scope: its cgroup becomes the root of the
    // container's cgroup namespace.
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|source| StageError::Unshare {
        flags: CloneFlags::CLONE_NEWCGROUP,
        source,
    })?;

    // SAFETY: single-threaded process; see `outer`.
    match unsafe { fork() }.map_err(StageError::Fork)? {
        ForkResult::Child => {
            let e = app(spec, fds, listen_fds, &argv, &workdir, &keep, &filters);
            report(control, &e);
            // SAFETY: _exit skips destructors and atexit handlers that belong
            // to the parent's state; nothing here needs flushing.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(fds);
            Ok(reap(child))
        }
    }
}

fn open_path(path: &str) -> Result<OwnedFd, StageError> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|source| StageError::OpenPath {
        path: path.into(),
        source,
    })?;
    // SAFETY: open returned a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cstrings(items: &[String], what: &'static str) -> Result<Vec<CString>, StageError> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| StageError::Nul { what }))
        .collect()
}

/// The application's process: returns only on failure.
fn app(
    spec: &Spec,
    fds: Vec<OwnedFd>,
    listen_fds: usize,
    argv: &[CString],
    workdir: &str,
    keep: &HashSet<caps::Capability>,
    filters: &[seccompiler::BpfProgram],
) -> StageError {
    match app_setup(spec, fds, listen_fds, workdir, keep, filters) {
        Ok(envp) => {
            let path = argv.first().cloned().unwrap_or_default();
            match execve(&path, argv, &envp) {
                Err(source) => StageError::Exec {
                    path: path.to_string_lossy().into_owned(),
                    source,
                },
                Ok(never) => match never {},
            }
        }
        Err(e) => e,
    }
}

fn app_setup(
    spec: &Spec,
    fds: Vec<OwnedFd>,
    listen_fds: usize,
    workdir: &str,
    keep: &HashSet<caps::Capability>,
    filters: &[seccompiler::BpfProgram],
) -> Result<Vec<CString>, StageError> {
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(StageError::SigMask)?;
    setsid().map_err(StageError::Setsid)?;
    arrange_fds(fds)?;

    let mut env: Vec<String> = Vec::new();
    if !spec.env.iter().any(|(k, _)| k == "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    if listen_fds > 0 {
        env.push(format!("LISTEN_FDS={listen_fds}"));
        env.push(format!("LISTEN_PID={}", getpid()));
        env.push(format!("LISTEN_FDNAMES={}", spec.listen_fdnames.join(":")));
    }
    let envp = cstrings(&env, "the environment")?;

    chdir(workdir).map_err(|source| StageError::Chdir {
        path: workdir.to_owned(),
        source,
    })?;
    creds::drop_to(spec.uid, spec.gid, keep)?;
    seccomp::load(filters)?;
    Ok(envp)
}

/// Put stdin, stdout, stderr on 0-2 and the listening sockets on 3.., and
/// mark every other descriptor close-on-exec (the control channel closes at
/// exec, which is how the supervisor learns the exec happened).
fn arrange_fds(fds: Vec<OwnedFd>) -> Result<(), StageError> {
    // Move everything clear of the target range first so no dup2 below
    // overwrites a descriptor that is still to be placed.
    let n = fds.len() as RawFd;
    let high: Vec<OwnedFd> = fds
        .into_iter()
        .map(|fd| move_fd(fd, CONTROL_FD + 1 + n).map_err(|_| StageError::Fds(Errno::EMFILE)))
        .collect::<Result<_, _>>()?;
    for (target, fd) in high.iter().enumerate() {
        // dup2 clears close-on-exec on the target, which is what we want.
        nix::unistd::dup2(fd.as_raw_fd(), target as RawFd).map_err(StageError::Fds)?;
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only flags descriptors;
    // it closes nothing that Rust objects still use.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            n as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(StageError::Fds(Errno::last()));
    }
    Ok(())
}

/// PID 1's work after the fork: forward termination signals to the
/// application, reap orphans, and exit with the application's status (the
/// kernel then kills whatever is left in the namespace).
fn reap(app: Pid) -> u8 {
    // Close everything: the reaper must hold no connection or socket open.
    // SAFETY: closing all descriptors ≥ 0 in a process that has no Rust
    // object owning any of them past this point (control and fds dropped by
    // the caller's scope or never used again).
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            0 as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
    }
    let set = reaper_signals();
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(app, sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == app => return code as u8,
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == app => {
                    return 128u8.wrapping_add(sig as u8);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}
