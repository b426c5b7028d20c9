//! The container's file system, assembled as one linear sequence inside the
//! stage's private mount namespace, then pivoted into:
//!
//! tmpfs root → /usr (ro) and the merged-/usr links → /etc entries (ro) →
//! /tmp, /run (tmpfs) → /dev (minimal) → configured binds → /proc →
//! pivot_root → root read-only.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{chdir, pivot_root};

use super::{BindSpec, EtcEntry, Propagation, Spec};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("making / a slave mount: {0}")]
    RootSlave(#[source] nix::Error),
    #[error("staging directory {path}: {source}")]
    Staging {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mounting {what} on {path}: {source}")]
    Mount {
        what: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("bind source {path} does not exist")]
    SourceMissing { path: PathBuf },
    #[error("bind source {path}: {source}")]
    Source {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bind destination {dest} is not an absolute path without '..'")]
    BadDest { dest: PathBuf },
    #[error("binding {source_path} on {dest}: {source}")]
    Bind {
        source_path: PathBuf,
        dest: PathBuf,
        source: nix::Error,
    },
    #[error("creating mount point {path}: {source}")]
    MountPoint {
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
    #[error("pivot_root into {path}: {source}")]
    PivotRoot { path: PathBuf, source: nix::Error },
    #[error("detaching the old root: {0}")]
    DetachOldRoot(#[source] nix::Error),
    #[error("chdir {path}: {source}")]
    Chdir { path: PathBuf, source: nix::Error },
    #[error("remounting / read-only: {0}")]
    RootReadOnly(#[source] nix::Error),
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// `struct mount_attr` of mount_setattr(2); libc does not define it yet.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Apply attributes and propagation to a whole mount tree at once (the old
/// remount API only changes the top mount of a recursive bind).
fn setattr_recursive(
    path: &Path,
    read_only: bool,
    propagation: Option<MsFlags>,
) -> Result<(), MountError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| MountError::SetAttr {
        path: path.into(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let attr = MountAttr {
        attr_set: if read_only { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: 0,
        propagation: propagation.map_or(0, |p| p.bits()),
        userns_fd: 0,
    };
    // SAFETY: c is a valid NUL-terminated path and attr a properly sized
    // mount_attr; the kernel only reads both during the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            (libc::AT_RECURSIVE | libc::AT_NO_AUTOMOUNT) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(MountError::SetAttr {
            path: path.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn mnt(
    what: &'static str,
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    mount(src, target, fstype, flags, data).map_err(|source| MountError::Mount {
        what,
        path: target.into(),
        source,
    })
}

/// `root` joined with an absolute in-container path, refusing `..`.
fn inside(root: &Path, dest: &Path) -> Result<PathBuf, MountError> {
    let mut out = root.to_path_buf();
    let mut absolute = false;
    for c in dest.components() {
        match c {
            Component::RootDir => absolute = true,
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(MountError::BadDest { dest: dest.into() }),
        }
    }
    if !absolute {
        return Err(MountError::BadDest { dest: dest.into() });
    }
    Ok(out)
}

fn mkdir_p(path: &Path, mode: u32) -> Result<(), MountError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| MountError::MountPoint {
            path: path.into(),
            source,
        })
}

/// An empty file or directory to mount `source` on, matching its type.
fn mount_point_for(source: &Path, target: &Path) -> Result<(), MountError> {
    let meta = fs::metadata(source).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            MountError::SourceMissing {
                path: source.into(),
            }
        } else {
            MountError::Source {
                path: source.into(),
                source: e,
            }
        }
    })?;
    if meta.is_dir() {
        return mkdir_p(target, 0o755);
    }
    if let Some(parent) = target.parent() {
        mkdir_p(parent, 0o755)?;
    }
    match fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(target)
    {
        Ok(_) => Ok(()),
        // An existing directory or file at the target still works as a
        // mount point when the types match; mount(2) says if they do not.
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => Ok(()),
        Err(source) => Err(MountError::MountPoint {
            path: target.into(),
            source,
        }),
    }
}

fn bind(
    source: &Path,
    target: &Path,
    read_only: bool,
    propagation: MsFlags,
) -> Result<(), MountError> {
    mount_point_for(source, target)?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| MountError::Bind {
        source_path: source.into(),
        dest: target.into(),
        source: e,
    })?;
    setattr_recursive(target, read_only, Some(propagation))
}

fn propagation_flag(p: Propagation) -> MsFlags {
    match p {
        Propagation::Private => MsFlags::MS_PRIVATE,
        Propagation::Slave => MsFlags::MS_SLAVE,
        Propagation::Shared => MsFlags::MS_SHARED,
    }
}

fn create_symlink(target: &str, link: &Path) -> Result<(), MountError> {
    symlink(target, link).map_err(|source| MountError::Create {
        path: link.into(),
        source,
    })
}

/// Build the tree on `spec.staging_dir` and pivot into it. The caller is
/// PID 1 of a fresh pid namespace (for /proc) in a fresh mount namespace.
pub fn assemble(spec: &Spec) -> Result<(), MountError> {
    // Nothing mounted from here on may reach the host; host mount events
    // still reach binds configured as "slave".
    mnt(
        "slave propagation",
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    )
    .map_err(|e| match e {
        MountError::Mount { source, .. } => MountError::RootSlave(source),
        other => other,
    })?;

    let root = spec.staging_dir.as_path();
    if !root.is_dir() {
        return Err(MountError::Staging {
            path: root.into(),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    mnt(
        "the root tmpfs",
        Some("berth-root"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=4m,nr_inodes=4096"),
    )?;

    // /usr and the merged-/usr links (or binds where the host is unmerged).
    bind(
        Path::new("/usr"),
        &root.join("usr"),
        true,
        MsFlags::MS_PRIVATE,
    )?;
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&host).map_err(|source| MountError::Source {
                    path: host.clone(),
                    source,
                })?;
                create_symlink(&target.to_string_lossy(), &root.join(top))?;
            }
            Ok(m) if m.is_dir() => bind(&host, &root.join(top), true, MsFlags::MS_PRIVATE)?,
            _ => {}
        }
    }

    mkdir_p(&root.join("etc"), 0o755)?;
    for entry in &spec.etc {
        etc_entry(root, entry)?;
    }

    let tmp = root.join("tmp");
    mkdir_p(&tmp, 0o1777)?;
    mnt(
        "/tmp",
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&format!("mode=1777,size={}", spec.tmp_size)),
    )?;
    let run = root.join("run");
    mkdir_p(&run, 0o755)?;
    mnt(
        "/run",
        Some("tmpfs"),
        &run,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=16m"),
    )?;

    dev(root, spec.dev_log.as_deref())?;

    let propagation = propagation_flag(spec.propagation);
    for b in &spec.binds {
        user_bind(root, b, propagation)?;
    }

    proc(root)?;

    // pivot_root(".", ".") stacks the old root on top of the new one; the
    // lazy unmount then drops the whole host tree from this namespace.
    chdir(root).map_err(|source| MountError::Chdir {
        path: root.into(),
        source,
    })?;
    pivot_root(".", ".").map_err(|source| MountError::PivotRoot {
        path: root.into(),
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

fn etc_entry(root: &Path, entry: &EtcEntry) -> Result<(), MountError> {
    let host = Path::new("/etc").join(&entry.name);
    let target = inside(&root.join("etc"), &Path::new("/").join(&entry.name))?;
    let meta = match fs::symlink_metadata(&host) {
        Ok(m) => m,
        Err(_) if !entry.required => return Ok(()),
        Err(_) => {
            return Err(MountError::EtcMissing {
                name: entry.name.clone(),
            });
        }
    };
    // A link into /usr (localtime → /usr/share/zoneinfo/...) stays a link:
    // programs read the zone name from it, and /usr is there anyway.
    if meta.file_type().is_symlink() {
        if let Ok(t) = fs::read_link(&host) {
            if t.starts_with("/usr/") {
                if let Some(parent) = target.parent() {
                    mkdir_p(parent, 0o755)?;
                }
                return create_symlink(&t.to_string_lossy(), &target);
            }
        }
    }
    if !host.exists() {
        if entry.required {
            return Err(MountError::EtcMissing {
                name: entry.name.clone(),
            });
        }
        return Ok(());
    }
    bind(&host, &target, true, MsFlags::MS_PRIVATE)
}

fn user_bind(root: &Path, b: &BindSpec, propagation: MsFlags) -> Result<(), MountError> {
    let target = inside(root, &b.dest)?;
    if !b.source.exists() {
        return Err(MountError::SourceMissing {
            path: b.source.clone(),
        });
    }
    bind(&b.source, &target, b.read_only, propagation)
}

/// A minimal /dev: the harmless character devices bound from the host, a
/// private devpts, /dev/shm, the usual links, and /dev/log if asked for.
fn dev(root: &Path, dev_log: Option<&Path>) -> Result<(), MountError> {
    let dev = root.join("dev");
    mkdir_p(&dev, 0o755)?;
    mnt(
        "/dev",
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k,nr_inodes=256"),
    )?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(node);
        bind(&host, &dev.join(node), false, MsFlags::MS_PRIVATE)?;
    }
    let pts = dev.join("pts");
    mkdir_p(&pts, 0o755)?;
    mnt(
        "/dev/pts",
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    create_symlink("pts/ptmx", &dev.join("ptmx"))?;
    let shm = dev.join("shm");
    mkdir_p(&shm, 0o1777)?;
    mnt(
        "/dev/shm",
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=64m"),
    )?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        create_symlink(target, &dev.join(link))?;
    }
    if let Some(log) = dev_log {
        bind(log, &dev.join("log"), false, MsFlags::MS_PRIVATE)?;
    }
    // Nothing may add device nodes or files later.
    mnt(
        "/dev read-only",
        None,
        &dev,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k,nr_inodes=256"),
    )
}

/// A /proc of the new pid namespace, with the kernel-tuning parts
/// read-only: a root uid without capabilities can still write some sysctls.
fn proc(root: &Path) -> Result<(), MountError> {
    let p = root.join("proc");
    mkdir_p(&p, 0o555)?;
    mnt(
        "/proc",
        Some("proc"),
        &p,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    for sub in ["sys", "sysrq-trigger", "irq", "bus", "fs"] {
        let path = p.join(sub);
        if path.exists() {
            mnt(
                "a read-only /proc part",
                Some(path.to_string_lossy().as_ref()),
                &path,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            setattr_recursive(&path, true, None)?;
        }
    }
    Ok(())
}
