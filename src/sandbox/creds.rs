//! Credentials of the application: user, group, no supplementary groups,
//! only the configured capabilities, `no_new_privs`.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("unknown capability {0}")]
    UnknownCapability(String),
    #[error("dropping {cap} from the bounding set: {source}")]
    DropBounding {
        cap: Capability,
        source: caps::errors::CapsError,
    },
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
    // The bounding set needs CAP_SETPCAP, so it shrinks while still root.
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|source| CredsError::DropBounding { cap, source })?;
        }
    }
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
