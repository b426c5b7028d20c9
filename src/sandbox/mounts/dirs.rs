//! The service's own places in a container, made by the same descriptor
//! rules as the rest of the plan (see `apply`): the persistent state
//! directory on the host, bound without following a planted symlink, and the
//! credentials, copied into a read-only tmpfs that never touches a disk.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{
    AtFlags, CWD, FileType, Mode, OFlags, fchmod, fstat, mkdirat, openat, openat2, statat,
};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount,
    fsopen,
};

use super::MountError;
use super::apply::{
    ONE_NAME, attach, attr_flags, bind, chown_err, io_err, mount_point, new_fs, o_path, set_owner,
    setattr, shown, type_name,
};
use super::plan::Attrs;
use crate::sandbox::{CredentialSpec, Propagation};

/// Largest credential copied (systemd's limit too).
const CREDENTIAL_MAX: u64 = 1 << 20;

/// `base/name` on the host for the application's user, bound at `dest`.
/// `base`'s parent is the administrator's and is followed; `base` and
/// `base/name` are opened without following a symlink (one planted there
/// would turn the chown and the bind onto any host directory), and the
/// bind is made from that very descriptor.
pub(super) fn state_dir(
    root: &OwnedFd,
    base: &Path,
    name: &str,
    dest: &Path,
    owner: (u32, u32),
    idmap: Option<&OwnedFd>,
) -> Result<(), MountError> {
    let path = base.join(name);
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |e: Errno| MountError::StateDir {
            path: p.clone(),
            source: io_err(e),
        }
    };
    let (Some(parent), Some(base_name)) = (base.parent(), base.file_name()) else {
        return Err(MountError::StateDir {
            path,
            source: io::ErrorKind::InvalidInput.into(),
        });
    };
    let parent_fd =
        openat(CWD, parent, o_path() | OFlags::DIRECTORY, Mode::empty()).map_err(err(parent))?;
    // One component, never followed (the kernel says ELOOP or ENOTDIR for
    // a symlink there; the error names it as such).
    let open_one = |dir: &OwnedFd, n: &Path, full: &Path, flags: OFlags| {
        openat2(
            dir,
            n,
            flags | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ONE_NAME,
        )
        .map_err(|e| {
            let link = statat(dir, n, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
            if link || e == Errno::LOOP {
                MountError::StateSymlink { path: full.into() }
            } else {
                MountError::StateDir {
                    path: full.into(),
                    source: io_err(e),
                }
            }
        })
    };
    match mkdirat(&parent_fd, base_name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(err(base)(e)),
    }
    let base_fd = open_one(&parent_fd, Path::new(base_name), base, OFlags::PATH)?;
    let created = match mkdirat(&base_fd, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(err(&path)(e)),
    };
    let fd = open_one(&base_fd, Path::new(name), &path, OFlags::RDONLY)?;
    if created {
        fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(err(&path))?;
    }
    let st = fstat(&fd).map_err(err(&path))?;
    if (st.st_uid, st.st_gid) != owner {
        set_owner(&fd, owner).map_err(err(&path))?;
    }
    bind(
        root,
        &fd,
        &path,
        dest,
        Attrs::BIND_RW,
        Propagation::Private,
        idmap,
        false,
    )
}

/// The contents of one credential file on the host: a regular file (a
/// FIFO would block, a device is no credential) of at most
/// `CREDENTIAL_MAX` bytes.
fn read_credential(c: &CredentialSpec) -> Result<Vec<u8>, MountError> {
    use std::io::Read;
    let read_err = |e: Errno| MountError::CredentialRead {
        name: c.name.clone(),
        path: c.source.clone(),
        source: io_err(e),
    };
    let fd = openat(
        CWD,
        &c.source,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOENT => MountError::CredentialMissing {
            name: c.name.clone(),
            path: c.source.clone(),
            inherited: c.inherited,
        },
        e => read_err(e),
    })?;
    let st = fstat(&fd).map_err(read_err)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(MountError::CredentialKind {
            name: c.name.clone(),
            path: c.source.clone(),
            found: type_name(kind),
        });
    }
    let too_big = || MountError::CredentialTooBig {
        name: c.name.clone(),
        path: c.source.clone(),
        max: CREDENTIAL_MAX,
    };
    if st.st_size as u64 > CREDENTIAL_MAX {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(st.st_size as usize);
    std::fs::File::from(fd)
        .take(CREDENTIAL_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| MountError::CredentialRead {
            name: c.name.clone(),
            path: c.source.clone(),
            source,
        })?;
    if bytes.len() as u64 > CREDENTIAL_MAX {
        return Err(too_big());
    }
    Ok(bytes)
}

/// A new detached file system for credentials that never goes to swap:
/// tmpfs with `noswap` (Linux 6.4), else ramfs, as systemd does.
fn credential_fs(rel: &Path) -> Result<OwnedFd, MountError> {
    let attrs = attr_flags(Attrs::NOTHING);
    let tmpfs = || -> Result<OwnedFd, (&'static str, Errno)> {
        let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| ("fsopen", e))?;
        fsconfig_set_string(&fs, "source", "berth-credentials").map_err(|e| ("source", e))?;
        fsconfig_set_string(&fs, "mode", "0700").map_err(|e| ("mode", e))?;
        fsconfig_set_flag(&fs, "noswap").map_err(|e| ("noswap", e))?;
        fsconfig_create(&fs).map_err(|e| ("fsconfig create", e))?;
        fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(|e| ("fsmount", e))
    };
    match tmpfs() {
        Ok(m) => Ok(m),
        Err(("noswap", Errno::INVAL)) => new_fs(
            "ramfs",
            "berth-credentials",
            &[("mode", "0700".into())],
            Attrs::NOTHING,
            rel,
        ),
        Err((step, e)) => Err(MountError::NewFs {
            step,
            fstype: "tmpfs",
            path: shown(rel),
            source: io_err(e),
        }),
    }
}

/// Read every credential on the host (before the pivot), write the copies
/// into a fresh detached file system, make it read-only, and only then
/// attach it at `rel`: the application never sees it writable or half
/// filled.
pub(super) fn credentials(
    root: &OwnedFd,
    rel: &Path,
    files: &[CredentialSpec],
    owner: (u32, u32),
) -> Result<(), MountError> {
    use std::io::Write;
    let mut loaded = Vec::with_capacity(files.len());
    for c in files {
        loaded.push((c, read_credential(c)?));
    }
    let m = credential_fs(rel)?;
    for (c, bytes) in &mut loaded {
        let write_err = |source: io::Error| MountError::CredentialWrite {
            name: c.name.clone(),
            source,
        };
        let fd = openat2(
            &m,
            c.name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o400),
            ONE_NAME,
        )
        .map_err(|e| write_err(io_err(e)))?;
        fchmod(&fd, Mode::from_raw_mode(0o400)).map_err(|e| write_err(io_err(e)))?;
        set_owner(&fd, owner).map_err(|e| write_err(io_err(e)))?;
        std::fs::File::from(fd)
            .write_all(bytes)
            .map_err(write_err)?;
        // The copy is the only one berth keeps.
        bytes.fill(0);
    }
    let top = openat(
        &m,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| MountError::Create {
        path: shown(rel),
        source: io_err(e),
    })?;
    let shown_path = shown(rel);
    fchmod(&top, Mode::from_raw_mode(0o500)).map_err(chown_err(&shown_path))?;
    set_owner(&top, owner).map_err(chown_err(&shown_path))?;
    drop(top);
    let ro = Attrs {
        read_only: true,
        ..Attrs::NOTHING
    };
    setattr(&m, attr_flags(ro), None, false, &shown_path)?;
    let target = mount_point(root, rel, true)?;
    attach(&m, &target, rel)
}
