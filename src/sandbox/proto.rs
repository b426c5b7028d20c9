//! The typed channel between the supervisor and the sandbox stage.
//!
//! A `SOCK_SEQPACKET` socketpair: every message is one datagram of JSON, and
//! file descriptors travel with `Start` as `SCM_RIGHTS`. Both sides use the
//! same framing; the stage uses it blocking, the supervisor non-blocking.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

use super::Spec;

/// Largest message; a spec is a few KiB.
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Most descriptors one `Start` may carry: stdio plus listening sockets.
pub const MAX_FDS: usize = 64;

/// Supervisor → stage.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToStage {
    /// Build the sandbox described by the spec and park before the exec.
    Setup(Box<Spec>),
    /// Run the application. Carries fds: stdin, stdout, stderr, then the
    /// listening sockets (`listen_fds` of them).
    Start { listen_fds: usize },
}

/// Stage → supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromStage {
    /// The outer stage forked the inner one: its pid on the host. The
    /// supervisor puts both in the container's scope.
    Forked { pid: i32 },
    /// Namespaces and the root are ready; waiting for `Start`.
    Prepared,
    /// A setup step failed; the container will not run.
    Failed(StageFailure),
}

/// Supervisor → zygote (`berth sandbox-zygote`).
#[derive(Debug, Serialize, Deserialize)]
pub enum ToZygote {
    /// Fork a stage as the supervisor's child. Carries one fd: the stage's
    /// end of its control channel. `template`: the spec the stage will get,
    /// for the read-only template the stage clones (None: build it all).
    Fork { template: Option<Box<Spec>> },
    /// Fork PID 1 of a new pid namespace directly, as the supervisor's
    /// child, for `spec` (no outer stage, no `Setup`: the child has the spec
    /// from the fork). Carries one fd, as `Fork`. Not for `private_users`,
    /// whose user namespace must be made outside the pid namespace.
    Init { spec: Box<Spec> },
}

/// Zygote → supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromZygote {
    /// The new stage's pid; it is the supervisor's child (`CLONE_PARENT`).
    Forked {
        pid: i32,
    },
    Failed(StageFailure),
}

/// Why the stage gave up: the step and the error text (the stage's error
/// type does not cross the process boundary).
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct StageFailure {
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("sending to the sandbox stage: {0}")]
    Send(#[source] nix::Error),
    #[error("receiving from the sandbox stage: {0}")]
    Recv(#[source] nix::Error),
    #[error("encoding a stage message: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("malformed stage message: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("stage message truncated (over {MAX_MESSAGE} bytes or too many fds)")]
    Truncated,
}

pub fn send<T: Serialize>(fd: RawFd, msg: &T, fds: &[RawFd]) -> Result<(), ProtoError> {
    let bytes = serde_json::to_vec(msg).map_err(ProtoError::Encode)?;
    let iov = [IoSlice::new(&bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(ProtoError::Send(e)),
        }
    }
}

/// One received datagram: `None` at end of stream (peer closed).
pub fn recv<T: for<'de> Deserialize<'de>>(
    fd: RawFd,
    flags: MsgFlags,
) -> Result<Option<(T, Vec<OwnedFd>)>, ProtoError> {
    // Size the buffer to the datagram (MSG_PEEK|MSG_TRUNC gives its length
    // on a seqpacket socket) instead of zeroing MAX_MESSAGE for each one.
    let want = loop {
        match nix::sys::socket::recv(
            fd,
            &mut [],
            flags | MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
        ) {
            Ok(n) => break n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(ProtoError::Recv(e)),
        }
    };
    let mut buf = vec![0u8; want.clamp(1, MAX_MESSAGE)];
    // Room for SCM_CREDENTIALS too: the supervisor's ends of stage channels
    // have SO_PASSCRED (spawn::kill_unreported), and the kernel puts the
    // credentials before any descriptors.
    let mut cmsg_space = nix::cmsg_space!(libc::ucred, [RawFd; MAX_FDS]);
    let (len, fds, truncated) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = loop {
            match recvmsg::<()>(
                fd,
                &mut iov,
                Some(&mut cmsg_space),
                flags | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => break m,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(ProtoError::Recv(e)),
            }
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(ProtoError::Recv)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for r in raw {
                    // SAFETY: SCM_RIGHTS just installed these descriptors in
                    // this process; nothing else owns them.
                    fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                }
            }
        }
        let truncated = msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        (msg.bytes, fds, truncated)
    };
    if truncated {
        return Err(ProtoError::Truncated);
    }
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[..len]).map_err(ProtoError::Decode)?;
    Ok(Some((msg, fds)))
}
