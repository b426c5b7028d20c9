//! Listening sockets: parsed from `--listen` and bound by `berth run`
//! (under `berth serve` they come from systemd instead).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, UnixAddr, bind, listen,
    setsockopt, socket, sockopt,
};

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("listen address {0:?}: expected 127.0.0.1:PORT, [::1]:PORT or an absolute socket path")]
    BadAddress(String),
    #[error("socket for {addr}: {source}")]
    Socket { addr: String, source: nix::Error },
    #[error("setsockopt({opt}) on {addr}: {source}")]
    SetOpt {
        opt: &'static str,
        addr: String,
        source: nix::Error,
    },
    #[error("{addr} is in use by something that is not a stale socket")]
    PathInUse { addr: String },
    #[error("removing the stale socket {addr}: {source}")]
    RemoveStale {
        addr: String,
        source: std::io::Error,
    },
    #[error("bind {addr}: {source}")]
    Bind { addr: String, source: nix::Error },
    #[error("listen on {addr}: {source}")]
    Listen { addr: String, source: nix::Error },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = ActivationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with('/') {
            return Ok(ListenAddr::Unix(PathBuf::from(s)));
        }
        s.parse::<SocketAddr>()
            .map(ListenAddr::Tcp)
            .map_err(|_| ActivationError::BadAddress(s.to_owned()))
    }
}

/// A bound, listening socket the supervisor keeps for the whole run.
pub struct Listener {
    pub addr: ListenAddr,
    pub fd: OwnedFd,
}

/// Bind and listen like systemd's socket units would: SO_REUSEADDR,
/// IPV6_V6ONLY for v6 addresses, the kernel's maximum backlog.
pub fn bind_listener(addr: &ListenAddr) -> Result<Listener, ActivationError> {
    let name = addr.to_string();
    let flags = SockFlag::SOCK_CLOEXEC;
    let fd = match addr {
        ListenAddr::Tcp(SocketAddr::V4(a)) => {
            let fd =
                socket(AddressFamily::Inet, SockType::Stream, flags, None).map_err(|source| {
                    ActivationError::Socket {
                        addr: name.clone(),
                        source,
                    }
                })?;
            reuse(&fd, &name)?;
            bind(fd.as_raw_fd(), &SockaddrIn::from(*a)).map_err(|source| {
                ActivationError::Bind {
                    addr: name.clone(),
                    source,
                }
            })?;
            fd
        }
        ListenAddr::Tcp(SocketAddr::V6(a)) => {
            let fd =
                socket(AddressFamily::Inet6, SockType::Stream, flags, None).map_err(|source| {
                    ActivationError::Socket {
                        addr: name.clone(),
                        source,
                    }
                })?;
            reuse(&fd, &name)?;
            setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(|source| {
                ActivationError::SetOpt {
                    opt: "IPV6_V6ONLY",
                    addr: name.clone(),
                    source,
                }
            })?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(*a)).map_err(|source| {
                ActivationError::Bind {
                    addr: name.clone(),
                    source,
                }
            })?;
            fd
        }
        ListenAddr::Unix(path) => {
            remove_stale(path, &name)?;
            let fd =
                socket(AddressFamily::Unix, SockType::Stream, flags, None).map_err(|source| {
                    ActivationError::Socket {
                        addr: name.clone(),
                        source,
                    }
                })?;
            let ua = UnixAddr::new(path).map_err(|source| ActivationError::Bind {
                addr: name.clone(),
                source,
            })?;
            bind(fd.as_raw_fd(), &ua).map_err(|source| ActivationError::Bind {
                addr: name.clone(),
                source,
            })?;
            // Like SocketMode=0666: access control belongs to the directory.
            let _ =
                std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666));
            fd
        }
    };
    listen(&fd, Backlog::MAXCONN).map_err(|source| ActivationError::Listen {
        addr: name.clone(),
        source,
    })?;
    // Port 0 asks the kernel for a free port: report the one it gave.
    let addr = match addr {
        ListenAddr::Tcp(a) if a.port() == 0 => {
            nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd.as_raw_fd())
                .ok()
                .and_then(|s| {
                    s.as_sockaddr_in()
                        .map(|v4| std::net::SocketAddr::V4((*v4).into()))
                        .or_else(|| {
                            s.as_sockaddr_in6()
                                .map(|v6| std::net::SocketAddr::V6((*v6).into()))
                        })
                })
                .map_or_else(|| addr.clone(), ListenAddr::Tcp)
        }
        _ => addr.clone(),
    };
    Ok(Listener { addr, fd })
}

fn reuse(fd: &OwnedFd, name: &str) -> Result<(), ActivationError> {
    setsockopt(fd, sockopt::ReuseAddr, &true).map_err(|source| ActivationError::SetOpt {
        opt: "SO_REUSEADDR",
        addr: name.to_owned(),
        source,
    })
}

/// A socket file left by an earlier run is replaced; anything else at the
/// path is an error, never deleted.
fn remove_stale(path: &std::path::Path, name: &str) -> Result<(), ActivationError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| ActivationError::RemoveStale {
                addr: name.to_owned(),
                source,
            })
        }
        Ok(_) => Err(ActivationError::PathInUse {
            addr: name.to_owned(),
        }),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            "127.0.0.1:80".parse::<ListenAddr>().ok(),
            Some(ListenAddr::Tcp("127.0.0.1:80".parse().unwrap()))
        );
        assert!(matches!(
            "[::1]:8080".parse::<ListenAddr>(),
            Ok(ListenAddr::Tcp(SocketAddr::V6(_)))
        ));
        assert!(matches!(
            "/run/x.sock".parse::<ListenAddr>(),
            Ok(ListenAddr::Unix(_))
        ));
        assert!("localhost:80".parse::<ListenAddr>().is_err());
        assert!("x.sock".parse::<ListenAddr>().is_err());
    }
}
