//! The cgroup freezer of a container's scope: stops every process in it at
//! once (no pid walk, no window for a fork or an accept between signals)
//! and holds them until thawed or killed.
//!
//! Where it lives: the cgroup2 hierarchy (pure v2 at /sys/fs/cgroup, or the
//! hybrid layout's /sys/fs/cgroup/unified, which mirrors every unit even
//! without controllers) has the core freezer `cgroup.freeze` in every
//! non-root cgroup (Linux ≥ 5.2); a v1-only host may have a `freezer`
//! hierarchy, used when the scope has its own directory there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: &'static str,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} did not report frozen within {waited:?}")]
    NotFrozen { path: PathBuf, waited: Duration },
}

/// A scope's freezer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freezer {
    /// The cgroup2 directory: `cgroup.freeze`, `cgroup.events`.
    V2(PathBuf),
    /// The v1 freezer directory: `freezer.state`.
    V1(PathBuf),
}

/// The freezer of `unit`, the scope `pid` is in; `None` when `pid` is not
/// in a cgroup of that name (no scope: never freeze whatever cgroup the
/// caller is in) or no freezer reaches it.
pub fn freezer_of(pid: u32, unit: &str) -> Option<Freezer> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let f = locate(&cgroups, &mountinfo, unit)?;
    let knob = match &f {
        Freezer::V2(d) => d.join("cgroup.freeze"),
        Freezer::V1(d) => d.join("freezer.state"),
    };
    knob.exists().then_some(f)
}

/// [`freezer_of`] on the text of /proc/PID/cgroup and /proc/self/mountinfo.
fn locate(cgroups: &str, mountinfo: &str, unit: &str) -> Option<Freezer> {
    let mut v1 = None;
    for line in cgroups.lines() {
        // "ID:CONTROLLERS:PATH"; the cgroup2 line is "0::PATH".
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if Path::new(path).file_name().and_then(|n| n.to_str()) != Some(unit) {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            if let Some(dir) = mount_dir(mountinfo, |fstype, _| fstype == "cgroup2", path) {
                return Some(Freezer::V2(dir));
            }
        } else if controllers.split(',').any(|c| c == "freezer") {
            v1 = mount_dir(
                mountinfo,
                |fstype, opts| fstype == "cgroup" && opts.split(',').any(|o| o == "freezer"),
                path,
            )
            .map(Freezer::V1);
        }
    }
    v1
}

/// The directory of cgroup `path` under the first mount that `is_it`
/// accepts (by file system type and super options), minding the mount's
/// root within the hierarchy.
fn mount_dir(mountinfo: &str, is_it: impl Fn(&str, &str) -> bool, path: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mnt), Some(fstype)) = (left.get(3), left.get(4), right.first())
        else {
            continue;
        };
        if !is_it(fstype, right.get(2).copied().unwrap_or("")) {
            continue;
        }
        let rel = Path::new(path).strip_prefix(root).ok()?;
        return Some(Path::new(&unescape(mnt)).join(rel));
    }
    None
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let oct = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match oct {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Freezer {
    /// The file that is written to freeze and thaw.
    pub fn knob(&self) -> PathBuf {
        match self {
            Freezer::V2(d) => d.join("cgroup.freeze"),
            Freezer::V1(d) => d.join("freezer.state"),
        }
    }

    /// What [`Freezer::knob`] is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Freezer::V2(_) => "cgroup.freeze",
            Freezer::V1(_) => "freezer.state",
        }
    }

    fn write(&self, frozen: bool) -> Result<(), CgroupError> {
        let value = match (self, frozen) {
            (Freezer::V2(_), true) => "1",
            (Freezer::V2(_), false) => "0",
            (Freezer::V1(_), true) => "FROZEN",
            (Freezer::V1(_), false) => "THAWED",
        };
        let path = self.knob();
        std::fs::write(&path, value).map_err(|source| CgroupError::Write {
            path,
            value,
            source,
        })
    }

    /// Whether every process in the cgroup has stopped (the kernel's word:
    /// `frozen 1` in cgroup.events, `FROZEN` in freezer.state).
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        let path = match self {
            Freezer::V2(d) => d.join("cgroup.events"),
            Freezer::V1(d) => d.join("freezer.state"),
        };
        let text =
            std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
        Ok(match self {
            Freezer::V2(_) => text.lines().any(|l| l.trim() == "frozen 1"),
            Freezer::V1(_) => text.trim() == "FROZEN",
        })
    }

    /// Freeze, and return once the kernel reports every process stopped.
    /// A process in a system call leaves it (interruptibly sleeping ones
    /// restart it after the thaw; an accept() that has already taken a
    /// connection returns it first), so what is seen afterwards is final.
    pub async fn freeze(&self, within: Duration) -> Result<(), CgroupError> {
        self.write(true)?;
        let start = Instant::now();
        while !self.is_frozen()? {
            if start.elapsed() > within {
                return Err(CgroupError::NotFrozen {
                    path: self.knob(),
                    waited: within,
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.write(false)
    }

    /// Hand back the cgroup's reclaimable memory (page cache, and anonymous
    /// memory where there is swap) through cgroup v2's `memory.reclaim`
    /// (Linux ≥ 5.19, memory controller enabled for the scope). `Ok(None)`
    /// where the file does not exist: the v1 freezer, or the hybrid
    /// layout's cgroup2 hierarchy without controllers. Returns
    /// `memory.current` before and after. The kernel answers EAGAIN when it
    /// could not reclaim all it was asked for, which is the usual case
    /// (it was asked for everything) and no failure.
    pub fn reclaim(&self) -> Result<Option<(u64, u64)>, CgroupError> {
        let Freezer::V2(dir) = self else {
            return Ok(None);
        };
        let knob = dir.join("memory.reclaim");
        if !knob.exists() {
            return Ok(None);
        }
        let before = read_u64(&dir.join("memory.current"))?;
        if let Err(source) = std::fs::write(&knob, before.to_string())
            && source.raw_os_error() != Some(libc::EAGAIN)
        {
            return Err(CgroupError::Write {
                path: knob,
                value: "memory.current",
                source,
            });
        }
        let after = read_u64(&dir.join("memory.current"))?;
        Ok(Some((before, after)))
    }
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.trim().parse().map_err(|_| CgroupError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a number: {text:?}"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "berth-web-0123456789ab.scope";
    const HYBRID_CG: &str = "12:freezer:/\n\
        5:pids:/berth.slice/berth-web.slice/berth-web-0123456789ab.scope\n\
        1:name=systemd:/berth.slice/berth-web.slice/berth-web-0123456789ab.scope\n\
        0::/berth.slice/berth-web.slice/berth-web-0123456789ab.scope\n";
    const HYBRID_MI: &str = "30 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n\
        31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n\
        40 30 0:36 / /sys/fs/cgroup/freezer rw,nosuid shared:20 - cgroup cgroup rw,freezer\n";

    #[test]
    fn hybrid_layout_uses_the_unified_hierarchy() {
        assert_eq!(
            locate(HYBRID_CG, HYBRID_MI, UNIT),
            Some(Freezer::V2(PathBuf::from(
                "/sys/fs/cgroup/unified/berth.slice/berth-web.slice/berth-web-0123456789ab.scope"
            )))
        );
    }

    #[test]
    fn pure_v2_and_a_mount_root_below_the_top() {
        let cg = "0::/system.slice/berth-web.slice/berth-web-0123456789ab.scope\n";
        let mi = "25 1 0:22 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            locate(cg, mi, UNIT),
            Some(Freezer::V2(PathBuf::from(
                "/sys/fs/cgroup/system.slice/berth-web.slice/berth-web-0123456789ab.scope"
            )))
        );
        // A cgroup2 mounted from a subtree (a container's view).
        let mi = "25 1 0:22 /system.slice /mnt/cg\\040x rw shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            locate(cg, mi, UNIT),
            Some(Freezer::V2(PathBuf::from(
                "/mnt/cg x/berth-web.slice/berth-web-0123456789ab.scope"
            )))
        );
    }

    #[test]
    fn v1_freezer_only_with_the_scope_s_own_directory() {
        let mi = "40 30 0:36 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n";
        // systemd makes no v1 freezer cgroups: the scope is not there.
        assert_eq!(locate("12:freezer:/\n", mi, UNIT), None);
        let cg = "12:freezer:/berth-web-0123456789ab.scope\n";
        assert_eq!(
            locate(cg, mi, UNIT),
            Some(Freezer::V1(PathBuf::from(
                "/sys/fs/cgroup/freezer/berth-web-0123456789ab.scope"
            )))
        );
    }

    #[test]
    fn no_scope_no_freezer() {
        // Without a scope PID 1 is in its caller's cgroup, which must never
        // be frozen (it may hold berth itself).
        let cg = "0::/user.slice/user-0.slice/session-1.scope\n";
        assert_eq!(locate(cg, HYBRID_MI, UNIT), None);
        assert_eq!(locate("", HYBRID_MI, UNIT), None);
    }
}
