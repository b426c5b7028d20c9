//! `berth sandbox-zygote`: a single-threaded process, exec'd once by the
//! supervisor, that forks one stage per container.
//!
//! A fork of this small process replaces an exec of the whole binary per
//! container (loader, relocation, runtime start: ~2 ms on the critical path
//! in the benchmark), and the stages share its pages. `CLONE_PARENT` makes
//! each stage the supervisor's own child, so the supervisor reaps it and gets
//! the application's status exactly as if it had exec'd the stage itself.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::MsgFlags;
use nix::unistd::Pid;

use super::proto::{self, FromZygote, StageFailure, ToZygote};
use super::stage::{self, CONTROL_FD, EXIT_SETUP_FAILED};
use super::{creds, seccomp};

/// Entry point of `berth sandbox-zygote`.
pub fn main() -> ExitCode {
    debug_assert_single_threaded();
    let _ = nix::sys::prctl::set_name(c"berth-zygote");
    // The zygote is only useful to the supervisor that started it.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        eprintln!("berth sandbox-zygote: prctl(PR_SET_PDEATHSIG): {e}");
        return ExitCode::from(EXIT_SETUP_FAILED);
    }
    // Built once here, copied by every stage forked below.
    seccomp::prepare();
    creds::prepare();
    // SAFETY: fd 0 is the zygote channel the supervisor passed; from here on
    // this process owns it.
    let channel = unsafe { OwnedFd::from_raw_fd(0) };
    let channel = match stage::move_fd(channel, CONTROL_FD) {
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
        debug_assert_single_threaded();
        let reply = match clone_parent() {
            Ok(None) => {
                // The stage: it must not hold the zygote's channel.
                drop(channel);
                std::process::exit(i32::from(stage::forked(control)));
            }
            Ok(Some(pid)) => {
                #[cfg(debug_assertions)]
                if let Some(token) = std::env::var_os(super::spawn::TEST_ZYGOTE_DIE_ENV)
                    && std::fs::remove_file(token).is_ok()
                {
                    let _ = nix::sys::signal::raise(Signal::SIGKILL);
                }
                FromZygote::Forked { pid: pid.as_raw() }
            }
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

/// The zygote forks and lets the child carry on with arbitrary work, which
/// is only sound while it has a single thread: a second one (a library
/// starting a helper thread, a logger) could hold a lock across the fork.
fn debug_assert_single_threaded() {
    debug_assert_eq!(
        std::fs::read_dir("/proc/self/task")
            .map(Iterator::count)
            .ok(),
        Some(1),
        "berth-zygote must be single-threaded"
    );
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
