//! `private_users`: the container's user namespace, made by the outer stage
//! before any other namespace and held as a descriptor.
//!
//! A helper child takes the block's first id as its uid and gid (so the
//! namespace's owner is that unprivileged uid, not root: a process left
//! with euid 0 on the host, like PID 1, has no capability in it) and
//! unshares `CLONE_NEWUSER`. The stage, outside and privileged, writes
//! `uid_map` and `gid_map` (`0 BASE 65536`), opens `/proc/CHILD/ns/user`
//! and lets the helper exit. The namespace lives on through the descriptor:
//! PID 1 idmaps the binds with it (`mount_setattr(MOUNT_ATTR_IDMAP)`, which
//! needs the host privileges the stage still has), and the application
//! enters it (`setns`) just before it takes its uid.
//!
//! Every other namespace of the container (mount, pid, uts, ipc, net,
//! cgroup) stays owned by the host's user namespace, so root inside cannot
//! mount, change the hostname or configure the network: what it holds is
//! uid 0 of its own namespace and the files mapped into it.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

/// Ids per container (0-65535 inside).
pub const BLOCK: u32 = 65536;

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("private_users: pipe for the user namespace helper: {0}")]
    Pipe(#[source] Errno),
    #[error("private_users: fork of the user namespace helper: {0}")]
    Fork(#[source] Errno),
    #[error("private_users: the helper could not {step}: {errno}")]
    Helper { step: &'static str, errno: Errno },
    #[error("private_users: the user namespace helper ended before it reported")]
    HelperGone,
    #[error("private_users: writing {path} ({line:?}): {source}")]
    WriteMap {
        path: String,
        line: String,
        source: std::io::Error,
    },
    #[error("private_users: opening {path}: {source}")]
    OpenNs {
        path: String,
        source: std::io::Error,
    },
    #[error("private_users: setns into the container's user namespace: {0}")]
    Setns(#[source] Errno),
}

/// What the helper child reports on the pipe: 0, or the step and errno of
/// its failure.
const STEPS: [&str; 4] = [
    "clear its groups",
    "take the block's gid",
    "take the block's uid",
    "unshare(CLONE_NEWUSER)",
];

/// A new user namespace with ids 0-65535 mapped to `base`.. on the host.
/// Must run before `CLONE_NEWPID` is unshared (the helper would become the
/// new namespace's PID 1).
pub(super) fn create(base: u32) -> Result<OwnedFd, UsernsError> {
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(UsernsError::Pipe)?;
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(UsernsError::Pipe)?;
    // SAFETY: the stage is single-threaded (exec'd fresh or forked from the
    // single-threaded zygote), so the child may do anything after fork; it
    // only makes raw system calls and _exits.
    let child = match unsafe { fork() }.map_err(UsernsError::Fork)? {
        ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            helper(base, &ready_w, &go_r)
        }
        ForkResult::Parent { child } => child,
    };
    drop(ready_w);
    drop(go_r);
    let result = map_and_open(child, base, &ready_r);
    // The helper exits once its end of the pipe reads EOF.
    drop(go_w);
    loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            Ok(WaitStatus::Stopped(..) | WaitStatus::Continued(_)) => continue,
            _ => break,
        }
    }
    result
}

fn map_and_open(child: Pid, base: u32, ready: &OwnedFd) -> Result<OwnedFd, UsernsError> {
    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        match nix::unistd::read(ready.as_raw_fd(), &mut report[got..]) {
            Ok(0) => return Err(UsernsError::HelperGone),
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(_) => return Err(UsernsError::HelperGone),
        }
    }
    let step = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]) as usize;
    let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
    if step != 0 {
        return Err(UsernsError::Helper {
            step: STEPS.get(step - 1).copied().unwrap_or("set up"),
            errno: Errno::from_raw(errno),
        });
    }
    let line = format!("0 {base} {BLOCK}\n");
    for map in ["uid_map", "gid_map"] {
        let path = format!("/proc/{child}/{map}");
        std::fs::write(&path, &line).map_err(|source| UsernsError::WriteMap {
            path,
            line: line.trim_end().to_owned(),
            source,
        })?;
    }
    let path = format!("/proc/{child}/ns/user");
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|source| UsernsError::OpenNs { path, source })
}

/// The helper child: become the block's first id, unshare the user
/// namespace, report, wait for the stage to let go. Only raw system calls
/// (the fork copied nothing that needs care, but it stays minimal).
fn helper(base: u32, ready: &OwnedFd, go: &OwnedFd) -> ! {
    // SAFETY: plain system calls on ids and on descriptors this process
    // owns; the buffers outlive the calls.
    unsafe {
        let mut failed: (u32, i32) = (0, 0);
        let steps: [&dyn Fn() -> libc::c_long; 4] = [
            &|| libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            &|| libc::syscall(libc::SYS_setresgid, base, base, base),
            &|| libc::syscall(libc::SYS_setresuid, base, base, base),
            &|| libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER),
        ];
        for (i, step) in steps.iter().enumerate() {
            if step() < 0 {
                failed = (i as u32 + 1, *libc::__errno_location());
                break;
            }
        }
        let mut report = [0u8; 8];
        report[..4].copy_from_slice(&failed.0.to_ne_bytes());
        report[4..].copy_from_slice(&failed.1.to_ne_bytes());
        libc::write(ready.as_raw_fd(), report.as_ptr().cast(), report.len());
        let mut byte = 0u8;
        while libc::read(go.as_raw_fd(), (&raw mut byte).cast(), 1) != 0 {
            if *libc::__errno_location() != libc::EINTR {
                break;
            }
        }
        libc::_exit(0)
    }
}

/// Enter the container's user namespace (the application, before it takes
/// its uid): afterwards its ids and capabilities are those of the
/// namespace.
pub(super) fn enter(ns: &OwnedFd) -> Result<(), UsernsError> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER).map_err(UsernsError::Setns)
}
