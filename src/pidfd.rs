//! Signals to container processes through pidfds: a pidfd names one
//! process for its whole life, where a bare pid may have been reaped and
//! reused by an unrelated process by the time the signal is sent.

use std::os::fd::{AsFd, OwnedFd};

use nix::sys::signal::Signal;

#[derive(Debug, thiserror::Error)]
pub enum PidfdError {
    #[error("pidfd_open({pid}): {source}")]
    Open { pid: u32, source: std::io::Error },
    #[error("pid {pid} is no longer the child of {parent} (it ended; the pid may be reused)")]
    NotChild { pid: u32, parent: u32 },
    #[error("reading /proc/{pid}/stat: {source}")]
    Stat { pid: u32, source: std::io::Error },
}

impl PidfdError {
    /// The process had already ended (no such process, or its pid now
    /// names another parent's child).
    pub fn process_ended(&self) -> bool {
        match self {
            PidfdError::Open { source, .. } => source.raw_os_error() == Some(libc::ESRCH),
            PidfdError::NotChild { .. } => true,
            PidfdError::Stat { .. } => false,
        }
    }
}

/// A pidfd for `pid`. Only sound while `pid` cannot have been reused: our
/// own unreaped child, or a process checked afterwards ([`open_child_of`]).
pub fn open(pid: u32) -> Result<OwnedFd, PidfdError> {
    let err = |source: std::io::Error| PidfdError::Open { pid, source };
    let p = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).map_err(|e| err(e.into()))
}

/// A pidfd for `pid`, which must be a child of `parent` (PID 1 of a
/// container and its stage). Checked after the open: if `pid` had ended
/// and been reused, the process the pidfd names has another parent, since
/// the stage forks just once.
pub fn open_child_of(pid: u32, parent: u32) -> Result<OwnedFd, PidfdError> {
    let fd = open(pid)?;
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) if parent_in(&stat) == Some(parent) => Ok(fd),
        Ok(_) => Err(PidfdError::NotChild { pid, parent }),
        // Gone meanwhile.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
            Err(PidfdError::NotChild { pid, parent })
        }
        // Not a fact about the process (out of descriptors, say).
        Err(source) => Err(PidfdError::Stat { pid, source }),
    }
}

/// The parent pid from /proc/PID/stat.
pub fn parent_of(pid: u32) -> Option<u32> {
    parent_in(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The parent pid in the text of a /proc/PID/stat: the field after the
/// parenthesised command, which may itself hold spaces and parentheses.
fn parent_in(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Send `sig` to the process behind `pidfd` (ESRCH once it has ended).
pub fn signal(pidfd: impl AsFd, sig: Signal) -> std::io::Result<()> {
    let sig = rustix::process::Signal::from_named_raw(sig as i32)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    rustix::process::pidfd_send_signal(pidfd, sig).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_reach_the_process_of_the_pidfd() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let me = std::process::id();
        assert_eq!(parent_of(child.id()), Some(me));
        let fd = open_child_of(child.id(), me).expect("pidfd of our child");
        assert!(matches!(
            open_child_of(child.id(), me + 1),
            Err(PidfdError::NotChild { .. })
        ));
        signal(&fd, Signal::SIGKILL).expect("pidfd_send_signal");
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Reaped: the pidfd still names that process, which is gone, so
        // nothing else can receive the signal.
        let e = signal(&fd, Signal::SIGKILL).expect_err("process gone");
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    }
}
