//! Out of descriptors (or kernel memory) in the supervisor: `accept` or a
//! launch fails with `EMFILE`, `ENFILE`, `ENOBUFS` or `ENOMEM`. Retrying at
//! once would spin (the listener stays readable) and log per attempt;
//! counting it as the application's failure would throttle a healthy
//! service. Instead the service backs off (connections wait in the
//! kernel's backlog), retries with a growing delay, and logs once per
//! interval.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First retry after an exhaustion; doubled per failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between retries: how late berth notices that descriptors
/// are free again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// An exhaustion is logged at most once per service and this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Errors that mean a resource of the supervisor ran out, not that the
/// connection or the application is at fault.
pub fn is_exhaustion_errno(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

/// The errno an error was caused by, if it was an exhaustion, looking down
/// its chain of sources (and into `io::Error`s that wrap another error).
pub fn exhaustion_cause(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    // Bounded: a chain is a handful of levels; a cycle must not hang us.
    for _ in 0..16 {
        let err = cur?;
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(n) = io.raw_os_error().filter(|n| is_exhaustion_errno(*n)) {
                return Some(n);
            }
            if let Some(inner) = io.get_ref()
                && let Some(n) = exhaustion_cause(inner)
            {
                return Some(n);
            }
        }
        if let Some(errno) = err.downcast_ref::<nix::Error>()
            && is_exhaustion_errno(*errno as i32)
        {
            return Some(*errno as i32);
        }
        cur = err.source();
    }
    None
}

/// "EMFILE (the soft RLIMIT_NOFILE, 1024, is reached)".
pub fn describe(errno: i32) -> String {
    let name = nix::errno::Errno::from_raw(errno);
    match errno {
        libc::EMFILE => {
            match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
                Ok((soft, _)) => {
                    format!("{name} (berth's soft RLIMIT_NOFILE, {soft}, is reached)")
                }
                Err(_) => format!("{name} (berth's RLIMIT_NOFILE is reached)"),
            }
        }
        libc::ENFILE => format!("{name} (the system-wide file table is full)"),
        _ => format!("{name} (the kernel is short of memory)"),
    }
}

/// Descriptors a launch needs in the supervisor at most: the connection,
/// the stage channel pair, the pidfds of the stage and of PID 1, and a few
/// to spare.
const LAUNCH_FDS: usize = 8;

/// Whether there is room for one more launch: that many duplicates of `fd`
/// can be made (and are closed at once). `Err(errno)` if not.
pub fn headroom(fd: &impl std::os::fd::AsFd) -> Result<(), i32> {
    let mut held = Vec::with_capacity(LAUNCH_FDS);
    for _ in 0..LAUNCH_FDS {
        match fd.as_fd().try_clone_to_owned() {
            Ok(d) => held.push(d),
            Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EMFILE)),
        }
    }
    Ok(())
}

#[derive(Default)]
struct State {
    /// Failures in a row (reset by a success).
    in_a_row: u32,
    /// No new attempt before this.
    until: Option<Instant>,
    /// When an exhaustion was last logged.
    logged: Option<Instant>,
    /// Exhaustions since then that were not logged.
    quiet: u64,
}

/// One service's back-off and log limiter.
#[derive(Default)]
pub struct Exhaustion {
    state: Mutex<State>,
}

impl Exhaustion {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note an exhaustion at `now`. Returns whether to log it, and how many
    /// went unlogged before it.
    pub fn hit(&self, now: Instant) -> Option<u64> {
        let mut s = self.state();
        let backoff = FIRST_BACKOFF
            .saturating_mul(1u32 << s.in_a_row.min(10))
            .min(MAX_BACKOFF);
        s.in_a_row = s.in_a_row.saturating_add(1);
        s.until = Some(now + backoff);
        match s.logged {
            Some(t) if now.duration_since(t) < LOG_INTERVAL => {
                s.quiet += 1;
                None
            }
            _ => {
                s.logged = Some(now);
                Some(std::mem::take(&mut s.quiet))
            }
        }
    }

    /// An attempt succeeded: the next exhaustion backs off from the start.
    pub fn success(&self) {
        let mut s = self.state();
        s.in_a_row = 0;
        s.until = None;
    }

    /// Whether the last attempt ran out (and none succeeded since).
    pub fn active(&self) -> bool {
        self.state().in_a_row > 0
    }

    /// How long to wait before the next attempt, if at all.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.state()
            .until
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_doubling_to_a_bound_and_logs_once_per_interval() {
        let e = Exhaustion::default();
        let t0 = Instant::now();
        assert_eq!(e.remaining(t0), None);
        assert_eq!(e.hit(t0), Some(0), "the first one is logged");
        assert_eq!(e.remaining(t0), Some(FIRST_BACKOFF));
        let mut now = t0;
        for _ in 0..20 {
            now += Duration::from_millis(10);
            assert_eq!(e.hit(now), None, "within the interval: not logged");
        }
        assert_eq!(e.remaining(now), Some(MAX_BACKOFF));
        e.success();
        assert_eq!(e.remaining(now), None);
        assert_eq!(e.hit(now), None, "a success does not reopen the log");
        assert_eq!(e.remaining(now), Some(FIRST_BACKOFF));
        assert_eq!(
            e.hit(t0 + LOG_INTERVAL),
            Some(21),
            "the next entry says how many went unlogged"
        );
    }

    #[test]
    fn finds_the_errno_down_the_chain() {
        #[derive(Debug, thiserror::Error)]
        enum Outer {
            #[error("socketpair: {0}")]
            Pair(#[source] nix::Error),
            #[error("{0}")]
            Io(#[from] std::io::Error),
        }
        let e = Outer::Pair(nix::Error::EMFILE);
        assert_eq!(exhaustion_cause(&e), Some(libc::EMFILE));
        let e = Outer::Io(std::io::Error::from_raw_os_error(libc::ENFILE));
        assert_eq!(exhaustion_cause(&e), Some(libc::ENFILE));
        let e = Outer::Io(std::io::Error::other(Outer::Pair(nix::Error::EMFILE)));
        assert_eq!(exhaustion_cause(&e), Some(libc::EMFILE));
        let e = Outer::Pair(nix::Error::EPERM);
        assert_eq!(exhaustion_cause(&e), None);
    }
}
