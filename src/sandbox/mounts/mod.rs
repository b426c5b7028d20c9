//! The container's file system, assembled inside the stage's private mount
//! namespace, then pivoted into: `plan` computes the steps from the spec
//! alone (tmpfs root → /usr (ro) and the merged-/usr links → /etc entries
//! (ro) → /tmp, /run (tmpfs) → /dev (minimal, sealed read-only) →
//! configured binds, parents first → /proc with its kernel parts read-only
//! or masked), `apply` executes them on descriptors, then pivot_root and
//! the root goes read-only.

mod apply;
mod dirs;
mod plan;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{chdir, fchdir, pivot_root};

use super::Spec;
pub use plan::{MountStep, Split, plan, split};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("making / a slave mount: {0}")]
    RootSlave(#[source] nix::Error),
    #[error("staging directory {path}: {source}")]
    Staging {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bind destination {dest} is not an absolute path without '..'")]
    BadDest { dest: PathBuf },
    #[error("bind destination {dest} is reserved (berth mounts /, /proc and /dev itself)")]
    ReservedDest { dest: PathBuf },
    #[error("{what} {name:?} is not a single path component")]
    BadName { what: &'static str, name: String },
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state directory {path} is a symbolic link (refused: it could redirect the bind and the chown)"
    )]
    StateSymlink { path: PathBuf },
    #[error("credential {name}: {} does not exist{}", .path.display(), inherited_hint(*.inherited))]
    CredentialMissing {
        name: String,
        path: PathBuf,
        inherited: bool,
    },
    #[error("credential {name}: {} is a {found}, expected a regular file", .path.display())]
    CredentialKind {
        name: String,
        path: PathBuf,
        found: &'static str,
    },
    #[error("credential {name}: {} is larger than {max} bytes", .path.display())]
    CredentialTooBig {
        name: String,
        path: PathBuf,
        max: u64,
    },
    #[error("credential {name}: reading {}: {source}", .path.display())]
    CredentialRead {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credential {name}: writing its copy: {source}")]
    CredentialWrite {
        name: String,
        source: std::io::Error,
    },
    #[error("etc entry {name:?} is not a relative path without '..'")]
    BadEtcName { name: String },
    #[error("bind source {path} does not exist")]
    SourceMissing { path: PathBuf },
    #[error(
        "bind source {path} is or passes through a symbolic link (refused: it could redirect the bind)"
    )]
    SourceSymlink { path: PathBuf },
    #[error("bind source {path}: {source}")]
    Source {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("resolving {path} inside the container root: {source}")]
    Resolve {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is a symbolic link to nothing inside the container (links on the way to a mount point are resolved inside it)"
    )]
    DanglingLink { path: PathBuf },
    #[error("mount point {path} is a symbolic link (refused: it could redirect the mount)")]
    DestSymlink { path: PathBuf },
    #[error("mount point {path} is a {found}, expected a {want}")]
    DestKind {
        path: PathBuf,
        found: &'static str,
        want: &'static str,
    },
    #[error("creating mount point {path}: {source}")]
    MountPoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("open_tree of {path}: {source}")]
    OpenTree {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{step} of a new {fstype} for {path}: {source}")]
    NewFs {
        step: &'static str,
        fstype: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("move_mount onto {path}: {source}")]
    MoveMount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "private_users: {path} cannot be idmapped ({source}): the kernel or this file system \
         lacks idmapped mounts; berth does not bind it without (mark the bind \":noidmap\" to \
         bind it with its host owners, nobody inside)"
    )]
    Idmap {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mount_setattr on {path}: {source}")]
    SetAttr {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("/etc/{name} does not exist on the host")]
    EtcMissing { name: String },
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setting the mode and owner of {path}: {source}")]
    Owner {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pivot_root into {path}: {source}")]
    PivotRoot { path: PathBuf, source: nix::Error },
    #[error("detaching the old root: {0}")]
    DetachOldRoot(#[source] nix::Error),
    #[error("chdir {path}: {source}")]
    Chdir { path: PathBuf, source: nix::Error },
    #[error("remounting / read-only: {0}")]
    RootReadOnly(#[source] nix::Error),
}

fn inherited_hint(inherited: bool) -> &'static str {
    if inherited {
        " in berth's $CREDENTIALS_DIRECTORY (pass it with LoadCredential= on berth.service)"
    } else {
        ""
    }
}

/// Build the tree on `spec.staging_dir` and pivot into it. The caller is
/// PID 1 of a fresh pid namespace (for /proc) in a fresh mount namespace.
/// `template`: a clone of the service's read-only template (see
/// [`template`]), on which only the per-container steps are applied; if
/// anything of that fails the clone is detached and the whole plan is
/// applied as without one, so a template can never fail a container.
pub fn assemble(
    spec: &Spec,
    userns: Option<&OwnedFd>,
    template: Option<OwnedFd>,
) -> Result<(), MountError> {
    let steps = plan(spec)?;
    // Nothing mounted from here on may reach the host; host mount events
    // still reach binds configured as "slave".
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(MountError::RootSlave)?;

    let staging = spec.staging_dir.as_path();
    if !staging.is_dir() {
        return Err(MountError::Staging {
            path: staging.into(),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    let root = match template.map(|t| on_template(spec, t, staging, userns)) {
        Some(Ok(root)) => root,
        _ => apply::apply(staging, &steps, userns)?,
    };

    // pivot_root(".", ".") stacks the old root on top of the new one; the
    // lazy unmount then drops the whole host tree from this namespace.
    fchdir(root.as_raw_fd()).map_err(|source| MountError::Chdir {
        path: staging.into(),
        source,
    })?;
    drop(root);
    pivot_root(".", ".").map_err(|source| MountError::PivotRoot {
        path: staging.into(),
        source,
    })?;
    umount2(".", MntFlags::MNT_DETACH).map_err(MountError::DetachOldRoot)?;
    chdir("/").map_err(|source| MountError::Chdir {
        path: "/".into(),
        source,
    })?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(MountError::RootReadOnly)?;
    Ok(())
}

/// Attach the template's clone `tree` on `staging` and mount the
/// per-container steps on it; on failure nothing of it stays attached.
fn on_template(
    spec: &Spec,
    tree: OwnedFd,
    staging: &std::path::Path,
    userns: Option<&OwnedFd>,
) -> Result<OwnedFd, MountError> {
    let Some(split) = split(spec)? else {
        return Err(MountError::Staging {
            path: staging.into(),
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    };
    apply::attach_root(&tree, staging)?;
    if let Err(e) = apply::apply_on(&tree, &split.per_container, userns, false) {
        umount2(staging, MntFlags::MNT_DETACH).map_err(MountError::DetachOldRoot)?;
        return Err(e);
    }
    Ok(tree)
}

/// Templates of the read-only tree, kept by the zygote (issue 14.1).
pub mod template {
    use std::os::fd::OwnedFd;
    use std::path::Path;

    use super::{MountError, Split, apply};

    /// Set to `0` in berth's environment: no templates, every container's
    /// tree built step by step (the path kernels without detached-tree
    /// cloning take; for tests and comparisons).
    pub const DISABLE_ENV: &str = "BERTH_MOUNT_TEMPLATE";

    /// Build the detached read-only tree of `split`.
    pub fn build(split: &Split) -> Result<OwnedFd, MountError> {
        apply::build_template(split)
    }

    /// A new detached copy of `template` (and every mount below it): what
    /// one container attaches as its root. Needs a kernel that clones
    /// detached trees (6.15 and later).
    pub fn clone(template: &OwnedFd) -> Result<OwnedFd, MountError> {
        apply::clone_tree(template, Path::new("/"))
    }

    /// Whether this kernel can do what templates need: mount onto a
    /// detached tree and clone a detached tree. Asked once, by the zygote.
    pub fn supported() -> bool {
        let probe = || -> Result<(), MountError> {
            let tmpfs = || {
                apply::new_fs(
                    "tmpfs",
                    "berth-probe",
                    &[],
                    Default::default(),
                    Path::new(""),
                )
            };
            let (a, b) = (tmpfs()?, tmpfs()?);
            let point = apply::mount_point(&a, Path::new("d"), true)?;
            apply::attach(&b, &point, Path::new("d"))?;
            clone(&a).map(drop)
        };
        probe().is_ok()
    }
}
