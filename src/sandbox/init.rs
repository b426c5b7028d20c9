//! PID 1 of a container's pid namespace (`berth-init`): builds the
//! container, reports [`FromStage::Prepared`], waits for
//! [`ToStage::Start`], forks the application, then stays as its reaper.
//!
//! Once the application is forked, PID 1 keeps nothing worth stealing (see
//! [`lock_down`]): no capability (CAP_KILL alone where the application may
//! change its uid), an empty bounding set, `no_new_privs`, not dumpable,
//! and its own seccomp allow-list ([`seccomp::reaper_filter`]). The
//! application runs in a Landlock domain that PID 1 is outside of
//! ([`exec::prepare_domain`]), so even with CAP_SYS_PTRACE it cannot
//! ptrace PID 1 or open its `/proc/1/mem` or `/proc/1/exe`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use caps::Capability;
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::socket::MsgFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, sethostname};

use super::Spec;
use super::creds;
use super::exec;
use super::mounts;
use super::net;
use super::proto::{self, FromStage, ToStage};
use super::seccomp;
use super::stage::{CONTROL_FD, StageError, report};

/// Build the container, start the application and reap until it exits;
/// the application's status (128+N for signal N) is PID 1's exit status.
/// `userns`: the container's user namespace (`private_users`), which the
/// binds are idmapped through and the application enters. `template`: a
/// clone of the read-only template to build the tree on (see
/// [`mounts::assemble`]).
pub(super) fn run(
    control: &OwnedFd,
    spec: &Spec,
    userns: Option<&OwnedFd>,
    template: Option<OwnedFd>,
) -> Result<u8, StageError> {
    if spec.die_with_supervisor {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| StageError::Prctl("PR_SET_PDEATHSIG", e))?;
    }
    let _ = nix::sys::prctl::set_name(c"berth-init");
    // Decided before the mounts hide the host's files.
    #[cfg(debug_assertions)]
    let hang = test_hang_claimed();
    // Not dumpable: the application cannot open /proc/1/exe (this binary
    // on the host) or ptrace its reaper without CAP_SYS_PTRACE, even as
    // uid 0 (the Landlock domain covers the case with it).
    nix::sys::prctl::set_dumpable(false).map_err(|e| StageError::Prctl("PR_SET_DUMPABLE", e))?;
    sethostname(&spec.hostname).map_err(|source| StageError::Hostname {
        name: spec.hostname.clone(),
        source,
    })?;
    if spec.private_network {
        net::loopback_up()?;
        if spec.private_users.is_some()
            && spec
                .capabilities
                .iter()
                .any(|c| c == "CAP_NET_BIND_SERVICE")
        {
            net::all_ports_unprivileged()?;
        }
    }
    // journald's stream socket is outside the new root: hold it by an
    // O_PATH descriptor and connect through /proc/self/fd once inside the
    // scope, so journald attributes the output to the scope.
    let journal_socket = match &spec.journal {
        Some(_) => Some(open_path(crate::journal::STDOUT_SOCKET)?),
        None => None,
    };
    mounts::assemble(spec, userns, template)?;
    // Everything that can fail is prepared before the application's fork.
    let filters = seccomp::filters(spec.seccomp)?;
    let keep = creds::parse_caps(&spec.capabilities)?;
    // Once here, not in the application and again in the lock-down, both
    // of which are on the way to the exec.
    creds::drop_bounding_for_app(&keep)?;
    let domain = exec::prepare_domain(&keep)?;
    let reaper_filter = seccomp::reaper_filter()?;
    // An application that can change its uid may move to one PID 1 could
    // not signal without CAP_KILL (see `lock_down`).
    let reaper_keeps_kill = keep.contains(&Capability::CAP_SETUID);
    let argv = exec::cstrings(&spec.exec, "exec")?;
    let workdir = spec.working_directory.to_string_lossy().into_owned();

    #[cfg(debug_assertions)]
    if hang {
        // Stuck like a bind on a hung mount: only SIGKILL ends this.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
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
    // The application waits for the write end to close before it execs:
    // PID 1 has then dropped its privileges (`lock_down`), so the
    // application never runs next to a privileged reaper. The read end goes
    // above where the application's descriptors are placed.
    let (rx, locked_tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(StageError::LockPipe)?;
    let locked_rx = rustix::io::fcntl_dupfd_cloexec(&rx, CONTROL_FD + 1 + fds.len() as RawFd)
        .map_err(|e| StageError::LockPipe(nix::errno::Errno::from_raw(e.raw_os_error())))?;
    drop(rx);
    // Now inside the container's scope: its cgroup becomes the root of the
    // container's cgroup namespace.
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|source| StageError::Unshare {
        flags: CloneFlags::CLONE_NEWCGROUP,
        source,
    })?;

    let app = exec::App {
        spec,
        fds,
        listen_fds,
        argv: &argv,
        workdir: &workdir,
        keep: &keep,
        filters: &filters,
        domain,
        reaper_locked: locked_rx,
        userns,
    };
    // SAFETY: PID 1 is single-threaded (forked from the single-threaded
    // stage, no runtime), so the child may do anything after fork.
    match unsafe { fork() }.map_err(StageError::Fork)? {
        ForkResult::Child => {
            drop(locked_tx);
            let e = exec::run(app);
            report(control, &e);
            // SAFETY: _exit skips destructors and atexit handlers that belong
            // to the parent's state; nothing here needs flushing.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            // The application's descriptors and Landlock ruleset are its own.
            drop(app);
            if let Err(e) = lock_down(spec, reaper_keeps_kill, &reaper_filter) {
                // A reaper that kept its privileges must not run the
                // container: take the application down with the failure.
                let _ = kill(child, Signal::SIGKILL);
                return Err(e);
            }
            drop(locked_tx);
            Ok(reap(child))
        }
    }
}

/// Leave PID 1 with nothing an application that got hold of it could use.
///
/// The reaper only waits for children and forwards signals to the
/// application. Signalling another process needs CAP_KILL or one of the
/// sender's real or effective uid matching the target's real or saved uid
/// (being its parent does not count, nor does a pidfd). So:
/// - normally PID 1 keeps no capability at all and takes the application's
///   uid as its real uid, which is what lets it signal the application: the
///   application cannot change its uid (no CAP_SETUID; `no_new_privs` stops
///   set-uid binaries), so they match for good. The effective (and saved)
///   uid stays 0: changing it would clear the parent-death signal that makes
///   PID 1 die with a foreground berth. Without capabilities, with an empty
///   bounding set, `no_new_privs` and a filter that allows no open or exec,
///   euid 0 gives PID 1 nothing; and because ptrace, prlimit and the like
///   need all of PID 1's uids to match, the application (never uid 0 in
///   effect unless it is root) has even less hold on PID 1 than with a
///   full uid change;
/// - if the application keeps CAP_SETUID it may move to any uid, so PID 1
///   stays uid 0 with CAP_KILL alone, which reaches only processes of its
///   own pid namespace, that is the container itself.
fn lock_down(
    spec: &Spec,
    keep_kill: bool,
    filter: &seccompiler::BpfProgram,
) -> Result<(), StageError> {
    if keep_kill {
        creds::drop_reaper(None, &[Capability::CAP_KILL])?;
    } else {
        // The application's uid as the host sees it (in the block with
        // private users): the uid the kill permission check compares.
        let (uid, _) = spec.host_ids((spec.uid, spec.gid));
        creds::drop_reaper(Some(uid), &[])?;
    }
    // Still not dumpable (set at the start; the effective uid is unchanged,
    // so nothing reset it), said again so no later edit can lose it.
    nix::sys::prctl::set_dumpable(false).map_err(|e| StageError::Prctl("PR_SET_DUMPABLE", e))?;
    seccomp::load(std::slice::from_ref(filter))?;
    Ok(())
}

/// The signals PID 1 forwards to the application, and SIGCHLD.
pub(super) fn reaper_signals() -> SigSet {
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

/// PID 1's work after the fork: forward termination signals to the
/// application, reap orphans, and exit with the application's status (the
/// kernel then kills whatever is left in the namespace). Runs under
/// [`seccomp::reaper_filter`]: only the calls made here are allowed.
fn reap(app: Pid) -> u8 {
    // Close everything: the reaper must hold no connection or socket open.
    // SAFETY: closing all descriptors ≥ 0 in a process that has no Rust
    // object owning any of them past this point (the caller dropped the
    // application's; the control channel's owner is never used again).
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

/// Test hook (debug builds): this container hangs before `Prepared` if it
/// is the one to remove the file named by `BERTH_TEST_STAGE_HANG`, so a
/// test decides exactly which containers hang. Single-threaded process:
/// reading the environment is safe.
#[cfg(debug_assertions)]
fn test_hang_claimed() -> bool {
    std::env::var_os(super::spawn::TEST_HANG_ENV)
        .is_some_and(|path| std::fs::remove_file(path).is_ok())
}
