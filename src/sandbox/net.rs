//! The container's network namespace: only `lo`, and it is up; and the
//! nursery it is made from (its own small TCP hash table).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("writing 0 to {UNPRIVILEGED_PORT_START}: {0}")]
    PortStart(#[source] std::io::Error),
    #[error("socket(AF_INET) to configure lo: {0}")]
    Socket(#[source] nix::Error),
    #[error("ioctl(SIOCGIFFLAGS, lo): {0}")]
    GetFlags(#[source] std::io::Error),
    #[error("ioctl(SIOCSIFFLAGS, lo): {0}")]
    SetFlags(#[source] std::io::Error),
    #[error("opening {path}: {source}")]
    OpenNs {
        path: String,
        source: std::io::Error,
    },
    #[error("pipe to the nursery's child: {0}")]
    Pipe(#[source] nix::Error),
    #[error("fork of the nursery's child: {0}")]
    Fork(#[source] nix::Error),
    #[error("the nursery's child: unshare(CLONE_NEWNET) or writing {CHILD_EHASH}: {0}")]
    Child(#[source] nix::Error),
    #[error("setns into the nursery network namespace: {0}")]
    Enter(#[source] nix::Error),
}

/// `ip link set lo up`, with one ioctl instead of netlink.
pub fn loopback_up() -> Result<(), NetError> {
    let sock: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(NetError::Socket)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes ifru_flags of a valid,
    // properly sized ifreq that lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(NetError::GetFlags(std::io::Error::last_os_error()));
    }
    // SAFETY: the union member written by SIOCGIFFLAGS is ifru_flags.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS only reads the ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(NetError::SetFlags(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Where a network namespace keeps its first privileged port.
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// Let every uid of this (private) network namespace bind any port. For
/// `private_users` with `CAP_NET_BIND_SERVICE`: the namespace belongs to
/// the host's user namespace, where the application's capability does not
/// count, so the kept capability is honoured this way; in a network
/// namespace of its own no one else is there to bind them.
pub fn all_ports_unprivileged() -> Result<(), NetError> {
    std::fs::write(UNPRIVILEGED_PORT_START, "0").map_err(NetError::PortStart)
}

/// Buckets of the TCP hash table each container's network namespace gets
/// for itself: one page. Its TCP sockets are only what the application
/// makes on `lo` (the ones it was handed live in the host's namespace).
const CONTAINER_TCP_EHASH: u32 = 512;

/// Read from the *current* network namespace when a new one is made
/// (Linux 6.1+): 0 shares the host's table, N gives the new one its own.
const CHILD_EHASH: &str = "/proc/sys/net/ipv4/tcp_child_ehash_entries";

/// Debug builds (tests): the nursery's child fails as if `unshare` were
/// refused, to show that containers are still made without it.
#[cfg(debug_assertions)]
pub const TEST_NO_NURSERY_ENV: &str = "BERTH_TEST_NO_NURSERY";

/// An empty network namespace with `tcp_child_ehash_entries` set, made once
/// by the zygote; each container's namespace is made from inside it
/// ([`enter_nursery`]). Why: a namespace that shares the host's TCP hash
/// table makes its exit walk that whole table (`inet_twsk_purge`, 262,144
/// buckets on a 24 GB machine: up to 0.3 ms of a kernel thread per
/// container); with a table of its own the exit walks 512 buckets, and the
/// container's sockets stay out of the host's table. Set in a namespace of
/// berth's own, not the host's: the host's setting is the administrator's
/// and applies to every namespace made on the machine.
///
/// Made by a short-lived child, not by the caller: the caller could not
/// always come back to its own namespace (`setns` into it needs
/// `CAP_SYS_ADMIN` where it was made, which berth in a container lacks).
/// `None` where the kernel has no such setting (before 6.1) or the nursery
/// cannot be made (said on stderr): containers are then made from the
/// caller's namespace, as before. The caller must be single-threaded.
pub fn nursery() -> Option<OwnedFd> {
    if !std::path::Path::new(CHILD_EHASH).exists() {
        return None;
    }
    match make_nursery() {
        Ok(ns) => Some(ns),
        Err(e) => {
            eprintln!("berth: no nursery network namespace: {e}");
            None
        }
    }
}

fn make_nursery() -> Result<OwnedFd, NetError> {
    use nix::unistd::{ForkResult, fork, pipe, read, write};

    // `ready`: the child's result (0 or an errno); `hold`: keeps the child
    // (and so its namespace) alive until the parent has opened it.
    let (ready_r, ready_w) = pipe().map_err(NetError::Pipe)?;
    let (hold_r, hold_w) = pipe().map_err(NetError::Pipe)?;
    // SAFETY: the caller is single-threaded (the zygote, before its first
    // fork), so the child may do anything; it ends with _exit.
    match unsafe { fork() }.map_err(NetError::Fork)? {
        ForkResult::Child => {
            drop(ready_r);
            drop(hold_w);
            #[cfg(debug_assertions)]
            if std::env::var_os(TEST_NO_NURSERY_ENV).is_some() {
                let _ = write(&ready_w, &[libc::EPERM as u8]);
                // SAFETY: as below.
                unsafe { libc::_exit(0) }
            }
            let result = unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| e as i32)
                .and_then(|()| {
                    set_child_ehash(CONTAINER_TCP_EHASH)
                        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
                });
            let code = match result {
                Ok(()) => 0u8,
                Err(errno) => u8::try_from(errno).unwrap_or(u8::MAX),
            };
            let _ = write(&ready_w, &[code]);
            // Until the parent closes its end (EOF) or is gone.
            let _ = read(hold_r.as_raw_fd(), &mut [0u8; 1]);
            // SAFETY: _exit ends the forked child at once, without the
            // exit handlers of the process it was forked from.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(hold_r);
            let mut code = [0u8; 1];
            let result = match read(ready_r.as_raw_fd(), &mut code) {
                Ok(1) if code[0] == 0 => {
                    let path = format!("/proc/{child}/ns/net");
                    std::fs::File::open(&path)
                        .map(OwnedFd::from)
                        .map_err(|source| NetError::OpenNs { path, source })
                }
                Ok(1) => Err(NetError::Child(nix::errno::Errno::from_raw(i32::from(
                    code[0],
                )))),
                Ok(_) => Err(NetError::Child(nix::errno::Errno::EPIPE)),
                Err(e) => Err(NetError::Child(e)),
            };
            drop(hold_w);
            let _ = nix::sys::wait::waitpid(child, None);
            result
        }
    }
}

/// Write `tcp_child_ehash_entries` of the current network namespace. Where
/// `/proc/sys` is mounted read-only (a container manager's doing, e.g.
/// systemd-nspawn without a private network), through a procfs instance of
/// our own, detached and never attached anywhere: the namespace is ours.
fn set_child_ehash(entries: u32) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

    let value = entries.to_string();
    match std::fs::write(CHILD_EHASH, &value) {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            let fs = rustix::mount::fsopen("proc", FsOpenFlags::FSOPEN_CLOEXEC)?;
            rustix::mount::fsconfig_create(&fs)?;
            let proc = rustix::mount::fsmount(
                &fs,
                FsMountFlags::FSMOUNT_CLOEXEC,
                MountAttrFlags::empty(),
            )?;
            let path = CHILD_EHASH.trim_start_matches("/proc/");
            let file =
                rustix::fs::openat(&proc, path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
            std::io::Write::write_all(&mut std::fs::File::from(file), value.as_bytes())
        }
        other => other,
    }
}

/// Make the nursery current, just before `unshare(CLONE_NEWNET)`: the new
/// namespace takes its TCP table size from there. Needs the capabilities
/// PID 1 still has before it joins a private user namespace.
pub fn enter_nursery(nursery: OwnedFd) -> Result<(), NetError> {
    setns(nursery.as_fd(), CloneFlags::CLONE_NEWNET).map_err(NetError::Enter)
}
