//! Executes a mount plan on descriptors, never on paths the application
//! could have changed: every destination is resolved inside the new root
//! with `openat2(RESOLVE_IN_ROOT)` (a symlink planted in a writable bind
//! cannot lead out of it), its last component is never followed nor opened
//! for reading or writing (`O_PATH|O_NOFOLLOW`: no FIFO hangs, no device is
//! opened), missing mount points are made with `mkdirat`/`O_CREAT|O_EXCL`
//! relative to the parent's descriptor, and mounts are cloned, flagged and
//! attached with `open_tree`, `mount_setattr` and `move_mount` on those
//! descriptors. Configured bind sources may not pass through any symlink.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, CWD, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Uid, chownat, fchmod, fchown,
    fstat, mkdirat, openat2, statat, symlinkat,
};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags, fsconfig_create,
    fsconfig_set_string, fsmount, fsopen, move_mount, open_tree,
};

use super::MountError;
use super::dirs::{credentials, state_dir};
use super::plan::{Attrs, MountStep, Origin, Split};
use crate::sandbox::Propagation;

/// The in-container path of a path relative to the new root, for errors.
pub(super) fn shown(rel: &Path) -> PathBuf {
    Path::new("/").join(rel)
}

pub(super) fn io_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);
pub(super) const ONE_NAME: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

pub(super) fn o_path() -> OFlags {
    OFlags::PATH | OFlags::CLOEXEC
}

/// The directory `rel` inside `root`, created (mode 0755) component by
/// component where missing. Symlinks met on the way resolve as if `root`
/// were `/`, so they cannot point out of the new root.
fn resolve_dir(root: &OwnedFd, rel: &Path) -> Result<OwnedFd, MountError> {
    let open = |p: &Path| {
        openat2(
            root,
            p,
            o_path() | OFlags::DIRECTORY,
            Mode::empty(),
            IN_ROOT,
        )
    };
    let mut cur = open(Path::new(".")).map_err(|e| MountError::Resolve {
        path: "/".into(),
        source: io_err(e),
    })?;
    let mut prefix = PathBuf::new();
    for comp in rel.iter() {
        prefix.push(comp);
        cur = match open(&prefix) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match mkdirat(&cur, comp, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(MountError::MountPoint {
                            path: shown(&prefix),
                            source: io_err(e),
                        });
                    }
                }
                open(&prefix).map_err(|e| {
                    // A link to a place that does not exist inside the new
                    // root (one to a host path, typically) is not followed
                    // out of it: say so rather than just ENOENT.
                    let link = statat(&cur, comp, AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                    if link {
                        MountError::DanglingLink {
                            path: shown(&prefix),
                        }
                    } else {
                        MountError::Resolve {
                            path: shown(&prefix),
                            source: io_err(e),
                        }
                    }
                })?
            }
            Err(e) => {
                return Err(MountError::Resolve {
                    path: shown(&prefix),
                    source: io_err(e),
                });
            }
        };
    }
    Ok(cur)
}

pub(super) fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown type",
    }
}

fn file_type(fd: &OwnedFd, path: &Path) -> Result<FileType, MountError> {
    fstat(fd)
        .map(|st| FileType::from_raw_mode(st.st_mode))
        .map_err(|e| MountError::Resolve {
            path: path.into(),
            source: io_err(e),
        })
}

/// Accept an existing mount point only if it is what a mount of this kind
/// goes on: a directory, or a regular file for everything else.
fn check_kind(fd: &OwnedFd, rel: &Path, dir: bool) -> Result<(), MountError> {
    let found = file_type(fd, &shown(rel))?;
    match found {
        FileType::Directory if dir => Ok(()),
        FileType::RegularFile if !dir => Ok(()),
        FileType::Symlink => Err(MountError::DestSymlink { path: shown(rel) }),
        _ => Err(MountError::DestKind {
            path: shown(rel),
            found: type_name(found),
            want: if dir { "directory" } else { "regular file" },
        }),
    }
}

/// A descriptor of the mount point `rel` (a directory or a regular file),
/// created if missing, never followed if a symlink, never opened for I/O.
pub(super) fn mount_point(root: &OwnedFd, rel: &Path, dir: bool) -> Result<OwnedFd, MountError> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(MountError::ReservedDest { dest: shown(rel) });
    };
    let parent = resolve_dir(root, parent)?;
    let open = || {
        openat2(
            &parent,
            name,
            o_path() | OFlags::NOFOLLOW,
            Mode::empty(),
            ONE_NAME,
        )
    };
    let resolve_err = |e: Errno| MountError::Resolve {
        path: shown(rel),
        source: io_err(e),
    };
    let fd = match open() {
        Ok(fd) => fd,
        Err(Errno::NOENT) if dir => {
            match mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => {
                    return Err(MountError::MountPoint {
                        path: shown(rel),
                        source: io_err(e),
                    });
                }
            }
            open().map_err(resolve_err)?
        }
        Err(Errno::NOENT) => {
            // A new empty file: O_EXCL, so nothing that appeared meanwhile
            // (a FIFO, a device, a link) is opened.
            let create = OFlags::CREATE
                | OFlags::EXCL
                | OFlags::NOFOLLOW
                | OFlags::RDONLY
                | OFlags::NOCTTY
                | OFlags::CLOEXEC;
            match openat2(&parent, name, create, Mode::from_raw_mode(0o644), ONE_NAME) {
                Ok(fd) => return Ok(fd),
                Err(Errno::EXIST) => open().map_err(resolve_err)?,
                Err(e) => {
                    return Err(MountError::MountPoint {
                        path: shown(rel),
                        source: io_err(e),
                    });
                }
            }
        }
        Err(Errno::LOOP) => return Err(MountError::DestSymlink { path: shown(rel) }),
        Err(e) => return Err(resolve_err(e)),
    };
    check_kind(&fd, rel, dir)?;
    Ok(fd)
}

/// `O_PATH` descriptor of a bind source on the host. A configured source
/// may not be or pass through a symlink: one planted by a container in a
/// writable bind would otherwise redirect the next container's bind.
fn open_source(path: &Path, origin: Origin) -> Result<OwnedFd, MountError> {
    let how = match origin {
        Origin::Host => ResolveFlags::NO_MAGICLINKS,
        Origin::User => ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    };
    openat2(CWD, path, o_path(), Mode::empty(), how).map_err(|e| match e {
        Errno::NOENT => MountError::SourceMissing { path: path.into() },
        Errno::LOOP if origin == Origin::User => MountError::SourceSymlink { path: path.into() },
        e => MountError::Source {
            path: path.into(),
            source: io_err(e),
        },
    })
}

/// `struct mount_attr` of mount_setattr(2); neither libc nor rustix wraps
/// the call yet.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub(super) fn attr_flags(a: Attrs) -> MountAttrFlags {
    let mut f = MountAttrFlags::empty();
    for (on, flag) in [
        (a.read_only, MountAttrFlags::MOUNT_ATTR_RDONLY),
        (a.nosuid, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (a.nodev, MountAttrFlags::MOUNT_ATTR_NODEV),
        (a.noexec, MountAttrFlags::MOUNT_ATTR_NOEXEC),
    ] {
        if on {
            f |= flag;
        }
    }
    f
}

fn propagation_flag(p: Propagation) -> u64 {
    match p {
        Propagation::Private => libc::MS_PRIVATE,
        Propagation::Slave => libc::MS_SLAVE,
        Propagation::Shared => libc::MS_SHARED,
    }
}

/// Set attributes and/or propagation on the mount `fd` refers to (and the
/// mounts below it if `recursive`).
pub(super) fn setattr(
    fd: &OwnedFd,
    set: MountAttrFlags,
    propagation: Option<Propagation>,
    recursive: bool,
    path: &Path,
) -> Result<(), MountError> {
    let attr = MountAttr {
        attr_set: u64::from(set.bits()),
        attr_clr: 0,
        propagation: propagation.map_or(0, propagation_flag),
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    mount_setattr(fd, &attr, flags).map_err(|source| MountError::SetAttr {
        path: path.into(),
        source,
    })
}

/// `mount_setattr(2)` on the detached or attached tree `fd` itself.
fn mount_setattr(fd: &OwnedFd, attr: &MountAttr, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: fd is an open descriptor, the path an empty NUL-terminated
    // string and attr a properly sized mount_attr; the kernel only reads
    // them during the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Idmap the detached tree `fd` (and every mount below it) through the
/// user namespace `ns`: a file owned by host uid N shows as N inside, and
/// what the container creates is stored with its in-container owner. The
/// kernel refuses it for a file system that does not support idmapped
/// mounts; that is an error, never a bind without the mapping.
fn set_idmap(fd: &OwnedFd, ns: &OwnedFd, path: &Path) -> Result<(), MountError> {
    let attr = MountAttr {
        attr_set: u64::from(MountAttrFlags::MOUNT_ATTR_IDMAP.bits()),
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    let flags = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
    mount_setattr(fd, &attr, flags).map_err(|source| MountError::Idmap {
        path: path.into(),
        source,
    })
}

pub(super) fn attach(tree: &OwnedFd, target: &OwnedFd, rel: &Path) -> Result<(), MountError> {
    move_mount(
        tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| MountError::MoveMount {
        path: shown(rel),
        source: io_err(e),
    })
}

pub(super) fn clone_tree(source: &OwnedFd, path: &Path) -> Result<OwnedFd, MountError> {
    open_tree(
        source,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| MountError::OpenTree {
        path: path.into(),
        source: io_err(e),
    })
}

/// Bind the already opened `source` at `rel`: clone, flag while still
/// detached (nothing is ever visible without its flags), attach, then set
/// the propagation. `detached`: `root` is a detached tree (a template),
/// where only a tree's own root takes attributes, so the propagation is
/// set before the attach.
#[allow(clippy::too_many_arguments)]
pub(super) fn bind(
    root: &OwnedFd,
    source: &OwnedFd,
    source_path: &Path,
    rel: &Path,
    attrs: Attrs,
    propagation: Propagation,
    idmap: Option<&OwnedFd>,
    detached: bool,
) -> Result<(), MountError> {
    let dir = file_type(source, source_path)? == FileType::Directory;
    let target = mount_point(root, rel, dir)?;
    let tree = clone_tree(source, source_path)?;
    if let Some(ns) = idmap {
        set_idmap(&tree, ns, source_path)?;
    }
    setattr(&tree, attr_flags(attrs), None, true, &shown(rel))?;
    let propagate = || {
        setattr(
            &tree,
            MountAttrFlags::empty(),
            Some(propagation),
            true,
            &shown(rel),
        )
    };
    if detached {
        propagate()?;
        attach(&tree, &target, rel)
    } else {
        attach(&tree, &target, rel)?;
        propagate()
    }
}

/// A new, detached file system instance of `fstype` with `options`.
pub(super) fn new_fs(
    fstype: &'static str,
    source: &str,
    options: &[(&'static str, String)],
    attrs: Attrs,
    rel: &Path,
) -> Result<OwnedFd, MountError> {
    let err = |step: &'static str| {
        move |e: Errno| MountError::NewFs {
            step,
            fstype,
            path: shown(rel),
            source: io_err(e),
        }
    };
    let fs = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).map_err(err("fsopen"))?;
    fsconfig_set_string(&fs, "source", source).map_err(err("fsconfig source"))?;
    for (k, v) in options {
        fsconfig_set_string(&fs, *k, v.as_str()).map_err(err(k))?;
    }
    fsconfig_create(&fs).map_err(err("fsconfig create"))?;
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attr_flags(attrs)).map_err(err("fsmount"))
}

fn mount_new_fs(
    root: &OwnedFd,
    fstype: &'static str,
    options: &[(&'static str, String)],
    attrs: Attrs,
    rel: &Path,
) -> Result<(), MountError> {
    let target = mount_point(root, rel, true)?;
    let m = new_fs(fstype, fstype, options, attrs, rel)?;
    attach(&m, &target, rel)
}

fn symlink(root: &OwnedFd, target: &Path, rel: &Path) -> Result<(), MountError> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(MountError::ReservedDest { dest: shown(rel) });
    };
    let parent = resolve_dir(root, parent)?;
    symlinkat(target, &parent, name).map_err(|e| MountError::Create {
        path: shown(rel),
        source: io_err(e),
    })
}

/// An existing entry of the new root (under /proc), not followed if a
/// link; None if it does not exist.
fn existing(root: &OwnedFd, rel: &Path) -> Result<Option<OwnedFd>, MountError> {
    match openat2(
        root,
        rel,
        o_path() | OFlags::NOFOLLOW,
        Mode::empty(),
        IN_ROOT | ResolveFlags::NO_SYMLINKS,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(MountError::Resolve {
            path: shown(rel),
            source: io_err(e),
        }),
    }
}

fn host_top(root: &OwnedFd, name: &str, detached: bool) -> Result<(), MountError> {
    let host = Path::new("/").join(name);
    match std::fs::symlink_metadata(&host) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(&host).map_err(|source| MountError::Source {
                path: host.clone(),
                source,
            })?;
            symlink(root, &target, Path::new(name))
        }
        Ok(m) if m.is_dir() => {
            let src = open_source(&host, Origin::Host)?;
            bind(
                root,
                &src,
                &host,
                Path::new(name),
                Attrs::BIND_RO,
                Propagation::Private,
                None,
                detached,
            )
        }
        _ => Ok(()),
    }
}

fn etc_entry(
    root: &OwnedFd,
    name: &Path,
    required: bool,
    detached: bool,
) -> Result<(), MountError> {
    let host = Path::new("/etc").join(name);
    let rel = Path::new("etc").join(name);
    let missing = || {
        if required {
            Err(MountError::EtcMissing {
                name: name.to_string_lossy().into_owned(),
            })
        } else {
            Ok(())
        }
    };
    let Ok(meta) = std::fs::symlink_metadata(&host) else {
        return missing();
    };
    // A link into /usr (localtime → /usr/share/zoneinfo/...) stays a link:
    // programs read the zone name from it, and /usr is there anyway.
    if meta.file_type().is_symlink()
        && let Ok(t) = std::fs::read_link(&host)
        && t.starts_with("/usr/")
    {
        return symlink(root, &t, &rel);
    }
    let src = match open_source(&host, Origin::Host) {
        Ok(fd) => fd,
        Err(MountError::SourceMissing { .. }) => return missing(),
        Err(e) => return Err(e),
    };
    bind(
        root,
        &src,
        &host,
        &rel,
        Attrs::BIND_RO,
        Propagation::Private,
        None,
        detached,
    )
}

fn proc_read_only(root: &OwnedFd, rel: &Path) -> Result<(), MountError> {
    let Some(fd) = existing(root, rel)? else {
        return Ok(());
    };
    let tree = clone_tree(&fd, &shown(rel))?;
    let ro = Attrs {
        read_only: true,
        ..Attrs::NOTHING
    };
    setattr(&tree, attr_flags(ro), None, true, &shown(rel))?;
    attach(&tree, &fd, rel)
}

fn proc_mask(root: &OwnedFd, rel: &Path) -> Result<(), MountError> {
    let Some(fd) = existing(root, rel)? else {
        return Ok(());
    };
    let hidden = Attrs {
        read_only: true,
        ..Attrs::NOTHING
    };
    let cover = if file_type(&fd, &shown(rel))? == FileType::Directory {
        new_fs("tmpfs", "tmpfs", &[("size", "4k".into())], hidden, rel)?
    } else {
        // /dev/null on a nodev mount: the entry cannot even be opened.
        let null = Path::new("/dev/null");
        let tree = clone_tree(&open_source(null, Origin::Host)?, null)?;
        setattr(&tree, attr_flags(hidden), None, true, &shown(rel))?;
        tree
    };
    attach(&cover, &fd, rel)
}

pub(super) fn chown_err(path: &Path) -> impl Fn(Errno) -> MountError + '_ {
    move |e| MountError::Owner {
        path: path.into(),
        source: io_err(e),
    }
}

pub(super) fn set_owner(fd: &OwnedFd, (uid, gid): (u32, u32)) -> Result<(), Errno> {
    fchown(
        fd,
        Some(Uid::from_raw_unchecked(uid)),
        Some(Gid::from_raw_unchecked(gid)),
    )
}

/// A directory of the new root with exactly `mode` (whatever the umask)
/// and `owner`.
fn dir(root: &OwnedFd, rel: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), MountError> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(());
    };
    let p = resolve_dir(root, parent)?;
    match mkdirat(&p, name, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => {
            return Err(MountError::MountPoint {
                path: shown(rel),
                source: io_err(e),
            });
        }
    }
    mount_point(root, rel, true)?;
    // Opened for reading (fchmod and fchown refuse O_PATH), never followed.
    let fd = openat2(
        &p,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ONE_NAME,
    )
    .map_err(|e| MountError::Resolve {
        path: shown(rel),
        source: io_err(e),
    })?;
    let shown_path = shown(rel);
    fchmod(&fd, Mode::from_raw_mode(mode)).map_err(chown_err(&shown_path))?;
    if let Some(owner) = owner {
        set_owner(&fd, owner).map_err(chown_err(&shown_path))?;
    }
    Ok(())
}

/// Shift host uid/gid 0 to `base` on the tmpfs mounted at `rel` and
/// everything on it, seen through a non-recursive clone of that mount:
/// the clone holds the tmpfs alone, so what is mounted on it (binds, other
/// file systems) is neither seen nor changed. No container process exists
/// yet, and the clone is private to this process.
fn own_skeleton(root: &OwnedFd, rel: &Path, base: u32) -> Result<(), MountError> {
    let at = resolve_dir(root, rel)?;
    let view = open_tree(
        &at,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| MountError::OpenTree {
        path: shown(rel),
        source: io_err(e),
    })?;
    shift_root_owned(&view, &shown(rel), base, 0)
}

/// Depth bound of the skeleton walk: berth's own directories are a few
/// levels deep (`root/.ssh/authorized_keys`, `run/credentials/NAME`).
const SKELETON_DEPTH: u32 = 32;

fn shift_root_owned(dir: &OwnedFd, path: &Path, base: u32, depth: u32) -> Result<(), MountError> {
    let shift = |fd: &OwnedFd, name: &str, p: &Path| -> Result<(), MountError> {
        let st = statat(fd, name, AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH)
            .map_err(chown_err(p))?;
        let uid = (st.st_uid == 0).then(|| Uid::from_raw_unchecked(base));
        let gid = (st.st_gid == 0).then(|| Gid::from_raw_unchecked(base));
        if uid.is_some() || gid.is_some() {
            chownat(
                fd,
                name,
                uid,
                gid,
                AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH,
            )
            .map_err(chown_err(p))?;
        }
        Ok(())
    };
    shift(dir, "", path)?;
    if depth >= SKELETON_DEPTH {
        return Err(MountError::Owner {
            path: path.into(),
            source: io::ErrorKind::InvalidInput.into(),
        });
    }
    let list = openat2(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ONE_NAME,
    )
    .map_err(chown_err(path))?;
    let entries = Dir::read_from(&list).map_err(chown_err(path))?;
    for entry in entries {
        let entry = entry.map_err(chown_err(path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        let p = path.join(&name);
        if entry.file_type() == FileType::Directory {
            let sub = openat2(
                dir,
                name.as_str(),
                o_path() | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                Mode::empty(),
                ONE_NAME,
            )
            .map_err(chown_err(&p))?;
            shift_root_owned(&sub, &p, base, depth + 1)?;
        } else {
            shift(dir, name.as_str(), &p)?;
        }
    }
    Ok(())
}

/// Execute `steps` (starting with `Root`) on `staging_dir`; returns the
/// descriptor of the new root's mount.
/// `userns`: the container's user namespace, for idmapped binds.
pub fn apply(
    staging_dir: &Path,
    steps: &[MountStep],
    userns: Option<&OwnedFd>,
) -> Result<OwnedFd, MountError> {
    let bad = || MountError::Staging {
        path: staging_dir.into(),
        source: io::ErrorKind::InvalidInput.into(),
    };
    let Some((MountStep::Root { options }, rest)) = steps.split_first() else {
        return Err(bad());
    };
    let m = new_fs("tmpfs", "berth-root", options, Attrs::TMPFS, Path::new(""))?;
    attach_root(&m, staging_dir)?;
    apply_on(&m, rest, userns, false)?;
    Ok(m)
}

/// Attach the detached root `m` (a new tmpfs, or a template's clone) on
/// `staging_dir`.
pub fn attach_root(m: &OwnedFd, staging_dir: &Path) -> Result<(), MountError> {
    move_mount(
        m,
        "",
        CWD,
        staging_dir,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| MountError::MoveMount {
        path: staging_dir.into(),
        source: io_err(e),
    })
}

/// The read-only template of `split` as a detached tree: its root tmpfs
/// with the shared steps applied and the mount point of every
/// per-container mount made, then flagged read-only, nosuid, nodev (the
/// flags every clone starts with; nothing writes to it after this).
pub fn build_template(split: &Split) -> Result<OwnedFd, MountError> {
    let staging = Path::new("");
    let bad = || MountError::Staging {
        path: staging.into(),
        source: io::ErrorKind::InvalidInput.into(),
    };
    let Some((MountStep::Root { options }, rest)) = split.template.split_first() else {
        return Err(bad());
    };
    let root = new_fs("tmpfs", "berth-root", options, Attrs::TMPFS, staging)?;
    apply_on(&root, rest, None, true)?;
    for step in &split.per_container {
        match step {
            MountStep::Tmpfs { path, .. }
            | MountStep::Devpts { path }
            | MountStep::Proc { path }
            | MountStep::StateDir { dest: path, .. } => {
                mount_point(&root, path, true)?;
            }
            MountStep::Bind {
                source,
                origin,
                dest,
                ..
            } => {
                let src = open_source(source, *origin)?;
                let dir = file_type(&src, source)? == FileType::Directory;
                mount_point(&root, dest, dir)?;
            }
            // On a per-container tmpfs (/run) or /proc: made there.
            MountStep::Root { .. }
            | MountStep::Dir { .. }
            | MountStep::Credentials { .. }
            | MountStep::HostTop { .. }
            | MountStep::Etc { .. }
            | MountStep::Symlink { .. }
            | MountStep::Seal { .. }
            | MountStep::ProcReadOnly { .. }
            | MountStep::ProcMask { .. }
            | MountStep::OwnSkeleton { .. } => {}
        }
    }
    // Every mount of it read-only (the device nodes too: they still open
    // for writing, a read-only mount only stops changes to the inodes),
    // the root tmpfs also nosuid, nodev, as the root is after the pivot.
    let ro = Attrs {
        read_only: true,
        ..Attrs::default()
    };
    setattr(&root, attr_flags(ro), None, true, &shown(staging))?;
    setattr(
        &root,
        attr_flags(Attrs::BIND_RO),
        None,
        false,
        &shown(staging),
    )?;
    Ok(root)
}

/// Execute `steps` (no `Root`) on the root mount `r`; `detached`: `r` is
/// a template being built, not attached anywhere.
pub fn apply_on(
    r: &OwnedFd,
    steps: &[MountStep],
    userns: Option<&OwnedFd>,
    detached: bool,
) -> Result<(), MountError> {
    for step in steps {
        match step {
            MountStep::Root { .. } => {
                return Err(MountError::Staging {
                    path: "/".into(),
                    source: io::ErrorKind::InvalidInput.into(),
                });
            }
            MountStep::Dir { path, mode, owner } => dir(r, path, *mode, *owner)?,
            MountStep::StateDir {
                base,
                name,
                dest,
                owner,
                idmap,
            } => {
                let ns = if *idmap { userns } else { None };
                if *idmap && ns.is_none() {
                    return Err(MountError::Idmap {
                        path: base.join(name),
                        source: io::ErrorKind::InvalidInput.into(),
                    });
                }
                state_dir(r, base, name, dest, *owner, ns)?
            }
            MountStep::Credentials { path, files, owner } => credentials(r, path, files, *owner)?,
            MountStep::Tmpfs {
                path,
                options,
                attrs,
            } => mount_new_fs(r, "tmpfs", options, *attrs, path)?,
            MountStep::Bind {
                source,
                origin,
                dest,
                attrs,
                propagation,
                idmap,
            } => {
                let ns = match (idmap, userns) {
                    (false, _) => None,
                    (true, Some(ns)) => Some(ns),
                    (true, None) => {
                        return Err(MountError::Idmap {
                            path: source.clone(),
                            source: io::ErrorKind::InvalidInput.into(),
                        });
                    }
                };
                let src = open_source(source, *origin)?;
                bind(r, &src, source, dest, *attrs, *propagation, ns, detached)?;
            }
            MountStep::HostTop { name } => host_top(r, name, detached)?,
            MountStep::Etc { name, required } => etc_entry(r, name, *required, detached)?,
            MountStep::Symlink { target, link } => symlink(r, target, link)?,
            MountStep::Devpts { path } => mount_new_fs(
                r,
                "devpts",
                &[("ptmxmode", "0666".into()), ("mode", "0620".into())],
                // ptmx and the ptys are devices.
                Attrs::DEVICE,
                path,
            )?,
            // In a template the whole tree goes read-only at the end
            // (`build_template`): inside a detached tree only its root
            // takes attributes.
            MountStep::Seal { .. } if detached => {}
            MountStep::Seal { path } => {
                let fd = resolve_dir(r, path)?;
                let ro = Attrs {
                    read_only: true,
                    ..Attrs::default()
                };
                setattr(&fd, attr_flags(ro), None, false, &shown(path))?;
            }
            MountStep::OwnSkeleton { path, base } => own_skeleton(r, path, *base)?,
            MountStep::Proc { path } => mount_new_fs(r, "proc", &[], Attrs::NOTHING, path)?,
            MountStep::ProcReadOnly { path } => proc_read_only(r, path)?,
            MountStep::ProcMask { path } => proc_mask(r, path)?,
        }
    }
    Ok(())
}
