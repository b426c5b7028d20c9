//! Blocks of host ids for `private_users`: one 65536-wide block of
//! `private_users_range` per live container, never shared by two.
//!
//! Per container rather than per service: two containers of one service
//! in one block would be the same uid on the host, so one could signal,
//! ptrace (with the other's help) or read the files of the other; a block
//! of its own makes every container a stranger to every other. What must
//! outlive a block (the state directory, configured binds) is idmapped, so
//! it is stored with its owner inside, whatever block wrote it.
//!
//! The set of blocks in use lives in the supervisor ([`BLOCKS`]); a
//! [`Lease`] holds one until the container it was taken for is gone. Each
//! lease also holds an exclusive `flock` on `/run/berth/userns/BASE`, so
//! separate berth processes (`berth inetd`, one per connection of an
//! `Accept=yes` socket, next to `berth serve`) never take the same block.
//! After a restart the blocks of adopted containers are read back from the
//! `uid_map` of their processes ([`adopt`]) and locked again before any new
//! container starts, so a restarted supervisor cannot hand out a block
//! still in use.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::config::{USERNS_BLOCK, UidRange};

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("private_users: the block lock {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "private_users: all {blocks} blocks of private_users_range {first}-{last} are in use by \
         running containers (widen the range in berth.toml)"
    )]
    Exhausted { blocks: u32, first: u32, last: u32 },
}

/// The blocks in use, by first host id.
pub struct Blocks {
    used: Mutex<BTreeSet<u32>>,
    /// Where the per-block lock files are (`None`: this process alone, for
    /// unit tests).
    lock_dir: Option<&'static str>,
}

/// Where the block locks shared by every berth process live.
pub const LOCK_DIR: &str = "/run/berth/userns";

/// The supervisor's blocks (one process, one set; other berth processes
/// through the locks).
pub static BLOCKS: Blocks = Blocks {
    used: Mutex::new(BTreeSet::new()),
    lock_dir: Some(LOCK_DIR),
};

impl Blocks {
    /// A set of this process only, without lock files.
    pub const fn new() -> Blocks {
        Blocks {
            used: Mutex::new(BTreeSet::new()),
            lock_dir: None,
        }
    }

    /// Lock `base` against other processes: `Ok(None)` if one holds it.
    fn lock(&self, base: u32) -> Result<Option<Option<std::fs::File>>, UsernsError> {
        let Some(dir) = self.lock_dir else {
            return Ok(Some(None));
        };
        let path = format!("{dir}/{base}");
        let err = |source| UsernsError::Lock {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        // O_CLOEXEC (std's default): no stage inherits the lock.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Some(file))),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(err(e.into())),
        }
    }

    fn used(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lowest free block of `range`.
    pub fn allocate(&'static self, range: UidRange) -> Result<Lease, UsernsError> {
        let mut used = self.used();
        let mut base = range.first;
        loop {
            if u64::from(base) + u64::from(USERNS_BLOCK) - 1 > u64::from(range.last) {
                return Err(UsernsError::Exhausted {
                    blocks: ((u64::from(range.last) + 1 - u64::from(range.first))
                        / u64::from(USERNS_BLOCK)) as u32,
                    first: range.first,
                    last: range.last,
                });
            }
            if !used.contains(&base)
                && let Some(lock) = self.lock(base)?
            {
                used.insert(base);
                return Ok(Lease {
                    base,
                    pool: self,
                    _lock: lock,
                });
            }
            base += USERNS_BLOCK;
        }
    }

    /// Mark `base` in use (an adopted container's block).
    pub fn claim(&'static self, base: u32) -> Lease {
        self.used().insert(base);
        // Best effort: a block another berth process holds is still this
        // container's, and stays out of this process's allocations.
        let lock = match self.lock(base) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tracing::warn!(
                    "private_users: block {base} of an adopted container is locked by another berth process"
                );
                None
            }
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        };
        Lease {
            base,
            pool: self,
            _lock: lock,
        }
    }

    /// How many blocks are in use.
    pub fn in_use(&self) -> usize {
        self.used().len()
    }
}

impl Default for Blocks {
    fn default() -> Self {
        Blocks::new()
    }
}

/// One block, in use until dropped.
pub struct Lease {
    base: u32,
    pool: &'static Blocks,
    /// The flock on the block's lock file, released with the lease.
    _lock: Option<std::fs::File>,
}

impl Lease {
    /// The first host id of the block (uid and gid 0 inside).
    pub fn base(&self) -> u32 {
        self.base
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", self.base)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.used().remove(&self.base);
    }
}

/// The block of an adopted container, read from the `uid_map` of its
/// processes (the application is in the container's user namespace; its
/// PID 1 is not). `None` for a container without private users.
pub fn adopt(pids: &[u32]) -> Option<Lease> {
    // Only a process in another user namespace than berth's: the stage and
    // PID 1 share berth's, whose map (not the identity when berth itself
    // runs in a container) is no block. Read from another namespace, a map
    // is shown in berth's own ids.
    let own = std::fs::read_link("/proc/self/ns/user").ok()?;
    pids.iter()
        .find_map(|p| {
            let ns = std::fs::read_link(format!("/proc/{p}/ns/user")).ok()?;
            if ns == own {
                return None;
            }
            let map = std::fs::read_to_string(format!("/proc/{p}/uid_map")).ok()?;
            block_of(&map)
        })
        .map(|base| BLOCKS.claim(base))
}

/// The block a `uid_map` (as berth sees it) lies in; `None` for the
/// host's own identity map.
pub fn block_of(uid_map: &str) -> Option<u32> {
    let line = uid_map.lines().next()?;
    let mut f = line.split_whitespace().map(|x| x.parse::<u64>().ok());
    let (inside, outside, count) = (f.next()??, f.next()??, f.next()??);
    if inside == 0 && outside == 0 && count == u64::from(u32::MAX) {
        return None;
    }
    let base = outside - outside % u64::from(USERNS_BLOCK);
    u32::try_from(base).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> &'static Blocks {
        Box::leak(Box::new(Blocks::new()))
    }

    const RANGE: UidRange = UidRange {
        first: 0x7000_0000,
        last: 0x7000_0000 + 3 * USERNS_BLOCK - 1,
    };

    #[test]
    fn live_leases_never_share_a_block_and_freed_blocks_are_reused() {
        let p = pool();
        let a = p.allocate(RANGE).expect("a");
        let b = p.allocate(RANGE).expect("b");
        let c = p.allocate(RANGE).expect("c");
        let mut bases = vec![a.base(), b.base(), c.base()];
        bases.dedup();
        assert_eq!(bases.len(), 3, "{bases:?}");
        assert!(
            bases
                .iter()
                .all(|b| b % USERNS_BLOCK == 0 && *b >= RANGE.first)
        );
        let e = p.allocate(RANGE).expect_err("the range holds three blocks");
        assert!(e.to_string().contains("all 3 blocks"), "{e}");
        let freed = b.base();
        drop(b);
        assert_eq!(p.in_use(), 2);
        assert_eq!(p.allocate(RANGE).expect("reused").base(), freed);
    }

    #[test]
    fn claimed_blocks_are_skipped() {
        let p = pool();
        let adopted = p.claim(RANGE.first);
        let next = p.allocate(RANGE).expect("next");
        assert_eq!(next.base(), RANGE.first + USERNS_BLOCK);
        drop(adopted);
        assert_eq!(p.allocate(RANGE).expect("freed").base(), RANGE.first);
    }

    #[test]
    fn blocks_from_uid_maps() {
        assert_eq!(block_of("         0          0 4294967295\n"), None);
        assert_eq!(
            block_of("         0 1879048192      65536\n"),
            Some(1_879_048_192)
        );
        // A namespace nested in the container's: still its block.
        assert_eq!(block_of("0 1879113728 1\n"), Some(1_879_113_728));
        assert_eq!(block_of("0 1879113729 1\n"), Some(1_879_113_728));
        assert_eq!(block_of("garbage"), None);
        assert_eq!(block_of(""), None);
    }
}
