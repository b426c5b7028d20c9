//! The journal: where containers' output and berth's own events go.
//!
//! Application output uses journald's stream protocol, connected from
//! inside the container's scope (by its PID 1) so journald attributes it to
//! the scope: `journalctl -u berth-SERVICE-ID.scope` and `-t SERVICE` both
//! find it. Supervisor events are structured entries with `BERTH_*` fields.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// journald's stream socket (what `StandardOutput=journal` connects to).
pub const STDOUT_SOCKET: &str = "/run/systemd/journal/stdout";
/// journald's native socket, for structured entries.
pub const NATIVE_SOCKET: &str = "/run/systemd/journal/socket";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("connecting to journald's stream socket via {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("writing the journal stream header: {0}")]
    Header(#[source] std::io::Error),
}

/// Syslog priority of application output (info), as systemd uses for
/// services' stdout and stderr.
pub const PRIORITY_INFO: u8 = 6;

/// The stream protocol's header: identifier, unit, priority, level prefix,
/// forward to syslog, kmsg, console.
pub fn stream_header(identifier: &str, unit: &str, priority: u8) -> String {
    format!("{identifier}\n{unit}\n{priority}\n1\n0\n0\n0\n")
}

/// Connect a stream to journald through `socket_path` (inside a container
/// that is `/proc/self/fd/N` of an `O_PATH` descriptor opened before the
/// pivot) and send its header. Returns the write end for the application.
pub fn connect_stream(
    socket_path: &Path,
    identifier: &str,
    unit: &str,
) -> Result<OwnedFd, JournalError> {
    let mut s = UnixStream::connect(socket_path).map_err(|source| JournalError::Connect {
        path: socket_path.display().to_string(),
        source,
    })?;
    s.write_all(stream_header(identifier, unit, PRIORITY_INFO).as_bytes())
        .map_err(JournalError::Header)?;
    // journald never writes back; the application only writes.
    let _ = s.shutdown(std::net::Shutdown::Read);
    let fd = OwnedFd::from(s);
    debug_assert!(fd.as_raw_fd() >= 0);
    Ok(fd)
}

/// Whether journald is running on this host. Hand-written: libsystemd has
/// no such check (`daemon::booted()` only says systemd is PID 1, which it
/// can be without journald), and these two sockets are the ones berth uses.
pub fn available() -> bool {
    Path::new(NATIVE_SOCKET).exists() && Path::new(STDOUT_SOCKET).exists()
}

/// Whether our stderr already goes to the journal (systemd sets
/// `JOURNAL_STREAM=dev:ino` for services whose output it connects there).
pub fn stderr_is_journal() -> bool {
    libsystemd::logging::connected_to_journal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_has_seven_lines() {
        let h = stream_header("web", "berth-web-0123456789ab.scope", 6);
        assert_eq!(h.lines().count(), 7);
        assert!(h.starts_with("web\nberth-web-0123456789ab.scope\n6\n1\n"));
    }
}
