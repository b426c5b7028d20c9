//! Listening sockets: parsed from `--listen` and bound by `berth run`
//! (under `berth serve` they come from systemd instead).

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use socket2::{Domain, SockAddr, Socket, Type};

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// Shown by clap after "invalid value 'ADDR' for '--listen <ADDR>': ",
    /// which already names the value.
    #[error("expected 127.0.0.1:PORT, [::1]:PORT or an absolute socket path")]
    BadAddress,
    #[error("socket for {addr}: {source}")]
    Socket {
        addr: String,
        source: std::io::Error,
    },
    #[error("setsockopt({opt}) on {addr}: {source}")]
    SetOpt {
        opt: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} is in use by something that is not a stale socket")]
    PathInUse { addr: String },
    #[error("removing the stale socket {addr}: {source}")]
    RemoveStale {
        addr: String,
        source: std::io::Error,
    },
    #[error("bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
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
            .map_err(|_| ActivationError::BadAddress)
    }
}

/// A bound, listening socket the supervisor keeps for the whole run.
pub struct Listener {
    pub addr: ListenAddr,
    pub fd: OwnedFd,
}

/// Bind and listen like systemd's socket units would: SO_REUSEADDR,
/// IPV6_V6ONLY for v6 addresses, the kernel's maximum backlog. socket2
/// opens every socket close-on-exec.
pub fn bind_listener(addr: &ListenAddr) -> Result<Listener, ActivationError> {
    let name = addr.to_string();
    let (domain, sockaddr) = match addr {
        ListenAddr::Tcp(a) => (Domain::for_address(*a), SockAddr::from(*a)),
        ListenAddr::Unix(path) => {
            remove_stale(path, &name)?;
            let sa = SockAddr::unix(path).map_err(|source| ActivationError::Bind {
                addr: name.clone(),
                source,
            })?;
            (Domain::UNIX, sa)
        }
    };
    let sock =
        Socket::new(domain, Type::STREAM, None).map_err(|source| ActivationError::Socket {
            addr: name.clone(),
            source,
        })?;
    let set_opt = |opt: &'static str| {
        let name = name.clone();
        move |source| ActivationError::SetOpt {
            opt,
            addr: name,
            source,
        }
    };
    if let ListenAddr::Tcp(a) = addr {
        sock.set_reuse_address(true)
            .map_err(set_opt("SO_REUSEADDR"))?;
        if a.is_ipv6() {
            sock.set_only_v6(true).map_err(set_opt("IPV6_V6ONLY"))?;
        }
    }
    sock.bind(&sockaddr)
        .map_err(|source| ActivationError::Bind {
            addr: name.clone(),
            source,
        })?;
    if let ListenAddr::Unix(path) = addr {
        // Like SocketMode=0666: access control belongs to the directory.
        let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666));
    }
    sock.listen(libc::SOMAXCONN)
        .map_err(|source| ActivationError::Listen {
            addr: name.clone(),
            source,
        })?;
    // Port 0 asks the kernel for a free port: report the one it gave.
    let addr = match addr {
        ListenAddr::Tcp(a) if a.port() == 0 => sock
            .local_addr()
            .ok()
            .and_then(|s| s.as_socket())
            .map_or_else(|| addr.clone(), ListenAddr::Tcp),
        _ => addr.clone(),
    };
    Ok(Listener {
        addr,
        fd: OwnedFd::from(sock),
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

    #[test]
    fn binds_tcp_with_the_options_systemd_sets() {
        let l = bind_listener(&"127.0.0.1:0".parse().unwrap()).unwrap();
        let ListenAddr::Tcp(a) = l.addr else {
            panic!("not tcp: {}", l.addr)
        };
        assert_ne!(a.port(), 0, "the kernel's port is reported");
        let sock = socket2::SockRef::from(&l.fd);
        assert!(sock.reuse_address().unwrap());
        assert!(sock.is_listener().unwrap());
        // Close-on-exec: a container's application must not inherit it.
        let flags = rustix::io::fcntl_getfd(&l.fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        std::net::TcpStream::connect(a).unwrap();
    }

    #[test]
    fn binds_v6_only() {
        let Ok(l) = bind_listener(&"[::1]:0".parse().unwrap()) else {
            eprintln!("SKIPPED: no IPv6 loopback here");
            return;
        };
        assert!(socket2::SockRef::from(&l.fd).only_v6().unwrap());
    }

    #[test]
    fn replaces_a_stale_socket_and_keeps_other_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let addr = ListenAddr::Unix(path.clone());
        drop(bind_listener(&addr).unwrap());
        // The socket file is left behind, as after a crash.
        let l = bind_listener(&addr).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(l);
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            bind_listener(&ListenAddr::Unix(file.clone())),
            Err(ActivationError::PathInUse { .. })
        ));
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }
}
