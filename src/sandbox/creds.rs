//! Credentials of the application: user, group, no supplementary groups,
//! only the configured capabilities, `no_new_privs`; and those of PID 1 once
//! it only reaps ([`drop_reaper`]).

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::OnceLock;

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("unknown capability {0}")]
    UnknownCapability(String),
    #[error("reading {CAP_LAST_CAP}: {0}")]
    LastCap(#[source] std::io::Error),
    #[error("{CAP_LAST_CAP} holds {0:?}, not a capability number below 64")]
    LastCapValue(String),
    #[error("dropping capability {cap} from the bounding set: {source}")]
    DropBounding { cap: u32, source: rustix::io::Errno },
    #[error("prctl(PR_SET_KEEPCAPS): {0}")]
    KeepCaps(#[source] nix::Error),
    #[error("setgroups([]): {0}")]
    SetGroups(#[source] nix::Error),
    #[error("setresgid({0}): {1}")]
    SetGid(u32, #[source] nix::Error),
    #[error("setresuid({0}): {1}")]
    SetUid(u32, #[source] nix::Error),
    #[error("setting the {set:?} capability set: {source}")]
    SetCaps {
        set: CapSet,
        source: caps::errors::CapsError,
    },
    #[error("raising ambient {cap}: {source}")]
    Ambient {
        cap: Capability,
        source: caps::errors::CapsError,
    },
    #[error("prctl(PR_SET_NO_NEW_PRIVS): {0}")]
    NoNewPrivs(#[source] nix::Error),
    #[error("capset (PID 1's capabilities): {0}")]
    ReaperCaps(#[source] rustix::io::Errno),
    #[error("clearing the ambient capability set: {0}")]
    ClearAmbient(#[source] rustix::io::Errno),
}

/// The highest capability number the running kernel knows. The bounding
/// set is dropped up to it, not up to what the `caps` crate knows, so a
/// capability newer than berth is not left in the bounding set.
const CAP_LAST_CAP: &str = "/proc/sys/kernel/cap_last_cap";

/// Read once per process and kept; the zygote reads it before it forks
/// any stage ([`prepare`]).
fn last_cap() -> Result<u32, CredsError> {
    static LAST_CAP: OnceLock<u32> = OnceLock::new();
    if let Some(n) = LAST_CAP.get() {
        return Ok(*n);
    }
    let n = read_last_cap()?;
    let _ = LAST_CAP.set(n);
    Ok(n)
}

/// Read what every container needs from the host once, ahead of the forks
/// (the zygote calls this at start). Errors are left for the container to
/// report.
pub fn prepare() {
    let _ = last_cap();
}

fn read_last_cap() -> Result<u32, CredsError> {
    let text = std::fs::read_to_string(CAP_LAST_CAP).map_err(CredsError::LastCap)?;
    match text.trim().parse::<u32>() {
        Ok(n) if n < 64 => Ok(n),
        _ => Err(CredsError::LastCapValue(text.trim().to_owned())),
    }
}

/// Drop every capability but `keep` from the bounding set (needs
/// CAP_SETPCAP, so it runs while still root). PID 1 drops it before it
/// forks the application ([`drop_bounding_for_app`]), so the application
/// and PID 1's lock-down find little left: each drop replaces the
/// process's credentials, a read does not.
fn drop_bounding(keep: &HashSet<Capability>) -> Result<(), CredsError> {
    let kept: HashSet<u8> = keep.iter().map(|c| c.index()).collect();
    for cap in 0..=last_cap()? {
        if kept.contains(&(cap as u8)) {
            continue;
        }
        let set = rustix::thread::CapabilitySet::from_bits_retain(1 << cap);
        // An error reading is no reason to skip the drop.
        if rustix::thread::capability_is_in_bounding_set(set) == Ok(false) {
            continue;
        }
        rustix::thread::remove_capability_from_bounding_set(set)
            .map_err(|source| CredsError::DropBounding { cap, source })?;
    }
    Ok(())
}

/// PID 1 before it forks the application: the bounding set down to what
/// the application keeps. PID 1 execs nothing, so its own work is
/// unchanged; the application inherits the smaller set, and
/// [`drop_to`] and [`drop_reaper`] still drop whatever is left.
pub fn drop_bounding_for_app(keep: &HashSet<Capability>) -> Result<(), CredsError> {
    drop_bounding(keep)
}

/// PID 1 after it forked the application: an empty bounding set, no
/// supplementary groups, no capability but `keep` (effective and permitted;
/// inheritable and ambient empty), `no_new_privs`; with `real_uid`, that
/// as its real uid (effective and saved uid stay 0). See `init::lock_down`
/// for the choice.
pub fn drop_reaper(real_uid: Option<u32>, keep: &[Capability]) -> Result<(), CredsError> {
    drop_bounding(&HashSet::new())?;
    setgroups(&[]).map_err(CredsError::SetGroups)?;
    if let Some(uid) = real_uid {
        // Not the effective uid: changing it would clear the parent-death
        // signal (and reset "dumpable"), and PID 1 must still die with its
        // stage when berth runs in the foreground.
        let root = Uid::from_raw(0);
        setresuid(Uid::from_raw(uid), root, root).map_err(|e| CredsError::SetUid(uid, e))?;
    }
    let mut kept = rustix::thread::CapabilitySet::empty();
    for cap in keep {
        kept |= rustix::thread::CapabilitySet::from_bits_retain(1 << cap.index());
    }
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: kept,
            permitted: kept,
            inheritable: rustix::thread::CapabilitySet::empty(),
        },
    )
    .map_err(CredsError::ReaperCaps)?;
    rustix::thread::clear_ambient_capability_set().map_err(CredsError::ClearAmbient)?;
    nix::sys::prctl::set_no_new_privs().map_err(CredsError::NoNewPrivs)?;
    Ok(())
}

pub fn parse_caps(names: &[String]) -> Result<HashSet<Capability>, CredsError> {
    names
        .iter()
        .map(|n| Capability::from_str(n).map_err(|_| CredsError::UnknownCapability(n.clone())))
        .collect()
}

/// Become `uid:gid` keeping exactly `keep`, then set `no_new_privs`.
/// Runs in the application's process right before seccomp and exec.
pub fn drop_to(uid: u32, gid: u32, keep: &HashSet<Capability>) -> Result<(), CredsError> {
    drop_bounding(keep)?;
    if !keep.is_empty() {
        // Keep the permitted set across setresuid to a non-root uid.
        nix::sys::prctl::set_keepcaps(true).map_err(CredsError::KeepCaps)?;
    }
    setgroups(&[]).map_err(CredsError::SetGroups)?;
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).map_err(|e| CredsError::SetGid(gid, e))?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).map_err(|e| CredsError::SetUid(uid, e))?;

    // Effective first: the kernel insists effective ⊆ permitted at each step.
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        caps::set(None, set, keep).map_err(|source| CredsError::SetCaps { set, source })?;
    }
    // Ambient carries the kept capabilities across exec for a non-root uid.
    caps::clear(None, CapSet::Ambient).map_err(|source| CredsError::SetCaps {
        set: CapSet::Ambient,
        source,
    })?;
    for cap in keep {
        caps::raise(None, CapSet::Ambient, *cap)
            .map_err(|source| CredsError::Ambient { cap: *cap, source })?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(CredsError::NoNewPrivs)?;
    Ok(())
}
