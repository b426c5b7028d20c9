//! The container's network namespace: only `lo`, and it is up.

use std::os::fd::{AsRawFd, OwnedFd};

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
