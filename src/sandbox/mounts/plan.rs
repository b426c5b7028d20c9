//! What the container's file system consists of, as a list of steps computed
//! from the spec alone (no system calls): the layout, the flags of every
//! mount and the order are unit-tested here; `apply` only executes them.
//!
//! Destinations are relative to the new root ("usr", "dev/null"); `apply`
//! resolves them inside it.

use std::path::{Component, Path, PathBuf};

use super::MountError;
use crate::sandbox::{CREDENTIALS_BASE, CredentialSpec, Propagation, STATE_BASE, Spec};

/// Per-mount attributes (`MOUNT_ATTR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attrs {
    pub read_only: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

impl Attrs {
    /// Binds of files, directories and sockets: no set-uid, no devices.
    pub const BIND_RW: Attrs = Attrs {
        read_only: false,
        nosuid: true,
        nodev: true,
        noexec: false,
    };
    pub const BIND_RO: Attrs = Attrs {
        read_only: true,
        ..Attrs::BIND_RW
    };
    /// Device nodes need `dev`; nothing on them is executable.
    pub const DEVICE: Attrs = Attrs {
        read_only: false,
        nosuid: true,
        nodev: false,
        noexec: true,
    };
    /// The host's device nodes bound into /dev: read-only mounts, so root
    /// inside cannot chmod or chown the host's inodes (they still open for
    /// writing: a read-only mount does not stop I/O on a device).
    pub const DEVICE_NODE: Attrs = Attrs {
        read_only: true,
        ..Attrs::DEVICE
    };
    pub const TMPFS: Attrs = Attrs::BIND_RW;
    /// /dev: the nodes bound on it carry their own `dev`.
    pub const DEV: Attrs = Attrs {
        read_only: false,
        nosuid: true,
        nodev: false,
        noexec: true,
    };
    /// /proc, /dev/pts, a masking tmpfs.
    pub const NOTHING: Attrs = Attrs {
        read_only: false,
        nosuid: true,
        nodev: true,
        noexec: true,
    };
}

/// Where a bind source comes from, which decides how it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A path of the host berth chose itself (/usr, /dev/null, /dev/log):
    /// links on it are the administrator's and are followed.
    Host,
    /// A configured bind: may lie under a directory some container can
    /// write, so no component may be a symlink.
    User,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    /// The tmpfs root on the staging directory.
    Root {
        options: Vec<(&'static str, String)>,
    },
    /// A directory created in the new root, with exactly `mode`, owned by
    /// `owner` (uid, gid) if given (root otherwise).
    Dir {
        path: PathBuf,
        mode: u32,
        owner: Option<(u32, u32)>,
    },
    /// `base/name` on the host, created 0700 for `owner` if missing (owned by
    /// it in any case), never through a symlink, bound read-write at `dest`.
    StateDir {
        base: PathBuf,
        name: String,
        dest: PathBuf,
        owner: (u32, u32),
        /// Idmapped (`private_users`): `owner` is then the in-container
        /// owner, stored unshifted, so the data outlives the block of the
        /// container that wrote it.
        idmap: bool,
    },
    /// A read-only tmpfs at `path` holding a copy of each file (0400, in a
    /// 0500 directory, all owned by `owner`), filled before it is attached.
    Credentials {
        path: PathBuf,
        files: Vec<CredentialSpec>,
        owner: (u32, u32),
    },
    Tmpfs {
        path: PathBuf,
        options: Vec<(&'static str, String)>,
        attrs: Attrs,
    },
    Bind {
        source: PathBuf,
        origin: Origin,
        dest: PathBuf,
        attrs: Attrs,
        propagation: Propagation,
        /// Idmapped through the container's user namespace (configured
        /// binds with `private_users`): files keep their owners inside.
        idmap: bool,
    },
    /// A top-level directory of the host (`bin`, `lib64` ...): a link where
    /// the host has a link (merged /usr), a read-only bind where it has a
    /// directory, nothing where it has nothing.
    HostTop {
        name: &'static str,
    },
    /// `/etc/NAME` of the host read-only, or the link it is when it points
    /// into /usr.
    Etc {
        name: PathBuf,
        required: bool,
    },
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    Devpts {
        path: PathBuf,
    },
    /// Make a mount read-only (not its children).
    Seal {
        path: PathBuf,
    },
    /// `private_users`: berth's own skeleton on the tmpfs at `path` (its
    /// root, the directories and mount points berth made there as host
    /// root) handed to root of the container's block, `base`, so it is root
    /// inside as it would be without private users (dropbear refuses a home
    /// or `~/.ssh` owned by nobody). Only host uid/gid 0 is shifted: a
    /// runtime directory made for the service user keeps its owner. What is
    /// mounted on the tmpfs is not touched.
    OwnSkeleton {
        path: PathBuf,
        base: u32,
    },
    Proc {
        path: PathBuf,
    },
    /// A /proc entry bound read-only on itself, if it exists.
    ProcReadOnly {
        path: PathBuf,
    },
    /// A /proc entry hidden, if it exists: /dev/null over a file, an empty
    /// read-only tmpfs over a directory.
    ProcMask {
        path: PathBuf,
    },
}

pub const HOST_TOPS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];
pub const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Kernel tunables: root without capabilities can still write some.
pub const PROC_READ_ONLY: [&str; 5] = ["sys", "sysrq-trigger", "irq", "bus", "fs"];
/// What OCI runtimes mask (`maskedPaths`): host memory, keys, kernel
/// internals and hardware.
pub const PROC_MASKED: [&str; 8] = [
    "kcore",
    "keys",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "acpi",
    "scsi",
    "asound",
];

/// An absolute in-container path as a path relative to the new root,
/// refusing `..`, relative paths and the places berth mounts itself.
pub fn container_path(dest: &Path) -> Result<PathBuf, MountError> {
    let mut out = PathBuf::new();
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
    if out.as_os_str().is_empty() || out.starts_with("proc") || out.starts_with("dev") {
        return Err(MountError::ReservedDest { dest: dest.into() });
    }
    Ok(out)
}

/// A name that must be a single path component (a service, a runtime
/// directory, a credential).
fn one_name(what: &'static str, name: &str) -> Result<String, MountError> {
    let mut c = Path::new(name).components();
    match (c.next(), c.next()) {
        (Some(Component::Normal(n)), None) if n == name => Ok(name.to_string()),
        _ => Err(MountError::BadName {
            what,
            name: name.into(),
        }),
    }
}

fn etc_name(name: &str) -> Result<PathBuf, MountError> {
    let p = Path::new(name);
    if name.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(MountError::BadEtcName { name: name.into() });
    }
    Ok(p.to_path_buf())
}

/// Inodes of the container's /tmp: one per 4 KiB of its size, at least 64.
pub fn tmp_inodes(tmp_size: u64) -> u64 {
    (tmp_size / 4096).max(64)
}

pub fn plan(spec: &Spec) -> Result<Vec<MountStep>, MountError> {
    let mut steps = vec![MountStep::Root {
        options: vec![
            ("mode", "0755".into()),
            ("size", "4m".into()),
            ("nr_inodes", "4096".into()),
        ],
    }];
    steps.push(MountStep::Bind {
        source: "/usr".into(),
        origin: Origin::Host,
        dest: "usr".into(),
        attrs: Attrs::BIND_RO,
        propagation: Propagation::Private,
        idmap: false,
    });
    steps.extend(HOST_TOPS.map(|name| MountStep::HostTop { name }));

    steps.push(MountStep::Dir {
        path: "etc".into(),
        mode: 0o755,
        owner: None,
    });
    for e in &spec.etc {
        steps.push(MountStep::Etc {
            name: etc_name(&e.name)?,
            required: e.required,
        });
    }

    steps.push(MountStep::Tmpfs {
        path: "tmp".into(),
        options: vec![
            ("mode", "1777".into()),
            ("size", spec.tmp_size.to_string()),
            // Empty files cost no size but kernel memory: one inode per
            // page of `tmp_size`, the ratio of the kernel's own default.
            ("nr_inodes", tmp_inodes(spec.tmp_size).to_string()),
        ],
        attrs: Attrs::TMPFS,
    });
    steps.push(MountStep::Tmpfs {
        path: "run".into(),
        options: vec![("mode", "0755".into()), ("size", "16m".into())],
        attrs: Attrs::TMPFS,
    });
    let service = one_name("service name", &spec.service)?;
    // Owners on the host: shifted into the block with private users.
    let owner = spec.host_ids((spec.uid, spec.gid));
    steps.push(MountStep::Dir {
        path: Path::new("run").join(one_name("runtime directory", &spec.runtime_directory)?),
        mode: 0o755,
        owner: Some(owner),
    });
    if !spec.credentials.is_empty() {
        for c in &spec.credentials {
            one_name("credential name", &c.name)?;
        }
        steps.push(MountStep::Credentials {
            path: container_path(&Path::new(CREDENTIALS_BASE).join(&service))?,
            files: spec.credentials.clone(),
            owner,
        });
    }

    steps.push(MountStep::Tmpfs {
        path: "dev".into(),
        options: vec![
            ("mode", "0755".into()),
            ("size", "64k".into()),
            ("nr_inodes", "256".into()),
        ],
        attrs: Attrs::DEV,
    });
    for node in DEV_NODES {
        steps.push(MountStep::Bind {
            source: Path::new("/dev").join(node),
            origin: Origin::Host,
            dest: Path::new("dev").join(node),
            attrs: Attrs::DEVICE_NODE,
            propagation: Propagation::Private,
            idmap: false,
        });
    }
    steps.push(MountStep::Devpts {
        path: "dev/pts".into(),
    });
    steps.push(MountStep::Symlink {
        target: "pts/ptmx".into(),
        link: "dev/ptmx".into(),
    });
    steps.push(MountStep::Tmpfs {
        path: "dev/shm".into(),
        options: vec![("mode", "1777".into()), ("size", "64m".into())],
        attrs: Attrs::TMPFS,
    });
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(MountStep::Symlink {
            target: target.into(),
            link: Path::new("dev").join(link),
        });
    }
    if let Some(log) = &spec.dev_log {
        steps.push(MountStep::Bind {
            source: log.clone(),
            origin: Origin::Host,
            dest: "dev/log".into(),
            // Read-only: connecting needs no write to the mount.
            attrs: Attrs {
                read_only: true,
                ..Attrs::NOTHING
            },
            propagation: Propagation::Private,
            idmap: false,
        });
    }
    // Nothing may add device nodes or files later.
    steps.push(MountStep::Seal { path: "dev".into() });

    // Parents before children whatever the configured order, so a nested
    // bind is not hidden by its parent's.
    let mut binds = Vec::with_capacity(spec.binds.len() + 1);
    if spec.state_directory {
        let dest = Path::new("var/lib").join(&service);
        binds.push((
            dest.clone(),
            MountStep::StateDir {
                base: STATE_BASE.into(),
                name: service.clone(),
                dest,
                // Idmapped with private users: the next container has
                // another block, and must still own what this one wrote.
                owner: (spec.uid, spec.gid),
                idmap: spec.private_users.is_some(),
            },
        ));
    }
    for b in &spec.binds {
        let dest = container_path(&b.dest)?;
        binds.push((
            dest.clone(),
            MountStep::Bind {
                source: b.source.clone(),
                origin: Origin::User,
                dest,
                attrs: if b.read_only {
                    Attrs::BIND_RO
                } else {
                    Attrs::BIND_RW
                },
                propagation: spec.propagation,
                idmap: b.idmap && spec.private_users.is_some(),
            },
        ));
    }
    binds.sort_by_key(|(dest, _)| dest.components().count());
    steps.extend(binds.into_iter().map(|(_, step)| step));

    // Every mount point exists now.
    if let Some(base) = spec.private_users {
        for path in ["", "tmp", "run"] {
            steps.push(MountStep::OwnSkeleton {
                path: path.into(),
                base,
            });
        }
    }

    steps.push(MountStep::Proc {
        path: "proc".into(),
    });
    for p in PROC_READ_ONLY {
        steps.push(MountStep::ProcReadOnly {
            path: Path::new("proc").join(p),
        });
    }
    for p in PROC_MASKED {
        steps.push(MountStep::ProcMask {
            path: Path::new("proc").join(p),
        });
    }
    Ok(steps)
}

/// The plan cut in two (issue 14.1): `template`, the read-only part, built
/// once per key into a detached tree that every container of the service
/// clones (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`), and `per_container`,
/// what each container still mounts on its clone: everything writable or
/// its own (/tmp, /run, credentials, /dev/pts, /dev/shm, the state
/// directory, writable or idmapped binds, /proc). The whole split is the
/// key: a definition that changes any part of it gets another template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Starts with `Root`; the tree ends read-only, nosuid, nodev.
    pub template: Vec<MountStep>,
    /// Mounted on the clone; their mount points are made in the template.
    pub per_container: Vec<MountStep>,
}

/// Split the plan of `spec`, or None where it has to be built per
/// container: `private_users` (the skeleton's owners are per container),
/// and an application that keeps CAP_SYS_ADMIN (with `seccomp = "off"` it
/// could remount a shared mount read-write; its own tree it may).
pub fn split(spec: &Spec) -> Result<Option<Split>, MountError> {
    let remounts = crate::sandbox::creds::parse_caps(&spec.capabilities)
        .map_or(true, |keep| keep.contains(&caps::Capability::CAP_SYS_ADMIN));
    if spec.private_users.is_some() || remounts {
        return Ok(None);
    }
    let mut template = Vec::new();
    let mut per_container = Vec::new();
    // Destinations mounted per container: nothing of the template may lie
    // at or under one, or the per-container mount would hide it.
    let mut own: Vec<PathBuf> = Vec::new();
    for step in plan(spec)? {
        let shared = match &step {
            MountStep::Root { .. }
            | MountStep::HostTop { .. }
            | MountStep::Etc { .. }
            | MountStep::Seal { .. } => true,
            MountStep::Dir { owner, .. } => owner.is_none(),
            MountStep::Symlink { link, .. } => link.starts_with("dev"),
            MountStep::Tmpfs { path, .. } => path == Path::new("dev"),
            MountStep::Bind {
                origin: Origin::Host,
                ..
            } => true,
            MountStep::Bind {
                origin: Origin::User,
                dest,
                attrs,
                propagation,
                idmap,
                ..
            } => {
                attrs.read_only
                    && !idmap
                    && *propagation != Propagation::Shared
                    && !own.iter().any(|o| dest.starts_with(o))
            }
            MountStep::StateDir { .. }
            | MountStep::Credentials { .. }
            | MountStep::Devpts { .. }
            | MountStep::Proc { .. }
            | MountStep::ProcReadOnly { .. }
            | MountStep::ProcMask { .. }
            // Only with private_users, which has no template.
            | MountStep::OwnSkeleton { .. } => false,
        };
        if shared {
            template.push(step);
            continue;
        }
        match &step {
            MountStep::Tmpfs { path, .. } | MountStep::Devpts { path }
                if path.starts_with("dev") =>
            {
                // /dev is sealed in the template: its mount points first.
                template.push(MountStep::Dir {
                    path: path.clone(),
                    mode: 0o755,
                    owner: None,
                });
            }
            MountStep::Tmpfs { path, .. } | MountStep::Proc { path } => own.push(path.clone()),
            MountStep::Bind { dest, .. } | MountStep::StateDir { dest, .. } => {
                own.push(dest.clone());
            }
            _ => {}
        }
        per_container.push(step);
    }
    Ok(Some(Split {
        template,
        per_container,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{BindSpec, EtcEntry};

    fn spec(binds: &[(&str, &str, bool)]) -> Spec {
        Spec {
            service: "t".into(),
            exec: vec!["/bin/true".into()],
            env: Vec::new(),
            listen_fdnames: Vec::new(),
            uid: 65534,
            gid: 65534,
            hostname: "t".into(),
            working_directory: "/".into(),
            private_network: true,
            staging_dir: "/run/berth/root".into(),
            binds: binds
                .iter()
                .map(|(s, d, ro)| BindSpec {
                    source: s.into(),
                    dest: d.into(),
                    read_only: *ro,
                    idmap: true,
                })
                .collect(),
            propagation: Propagation::Slave,
            tmp_size: 1 << 20,
            etc: vec![EtcEntry {
                name: "passwd".into(),
                required: true,
            }],
            capabilities: Vec::new(),
            seccomp: crate::sandbox::SeccompProfile::Default,
            dev_log: Some("/run/systemd/journal/dev-log".into()),
            journal: None,
            die_with_supervisor: false,
            low_priority: false,
            runtime_directory: "t".into(),
            state_directory: false,
            credentials: Vec::new(),
            private_users: None,
        }
    }

    fn binds(steps: &[MountStep]) -> Vec<(&Path, &Path, Attrs, Origin)> {
        steps
            .iter()
            .filter_map(|s| match s {
                MountStep::Bind {
                    source,
                    dest,
                    attrs,
                    origin,
                    ..
                } => Some((source.as_path(), dest.as_path(), *attrs, *origin)),
                _ => None,
            })
            .collect()
    }

    fn index(steps: &[MountStep], want: impl Fn(&MountStep) -> bool) -> usize {
        steps
            .iter()
            .position(want)
            .unwrap_or_else(|| panic!("step missing in {steps:#?}"))
    }

    /// The binds of a plan in order: /usr, the device nodes, /dev/log, then
    /// the one configured at `last`.
    fn binds_in_order(last: &str) -> Vec<PathBuf> {
        let mut v = vec![PathBuf::from("usr")];
        v.extend(DEV_NODES.iter().map(|n| Path::new("dev").join(n)));
        v.push("dev/log".into());
        v.push(last.into());
        v
    }

    #[test]
    fn plan_layout_is_the_documented_tree() {
        let steps = plan(&spec(&[("/srv/d", "/data", false)])).expect("plan");
        assert!(matches!(&steps[0], MountStep::Root { .. }));
        let dests: Vec<&Path> = binds(&steps).iter().map(|b| b.1).collect();
        let want = binds_in_order("data");
        let want: Vec<&Path> = want.iter().map(PathBuf::as_path).collect();
        assert_eq!(dests, want);
        for top in HOST_TOPS {
            assert!(steps.contains(&MountStep::HostTop { name: top }));
        }
        assert!(steps.contains(&MountStep::Etc {
            name: "passwd".into(),
            required: true
        }));
        let tmpfs: Vec<&Path> = steps
            .iter()
            .filter_map(|s| match s {
                MountStep::Tmpfs { path, .. } => Some(path.as_path()),
                _ => None,
            })
            .collect();
        assert_eq!(
            tmpfs,
            [
                Path::new("tmp"),
                "run".as_ref(),
                "dev".as_ref(),
                "dev/shm".as_ref()
            ]
        );
        assert!(steps.contains(&MountStep::Proc {
            path: "proc".into()
        }));
        for m in PROC_MASKED {
            assert!(steps.contains(&MountStep::ProcMask {
                path: Path::new("proc").join(m)
            }));
        }
        // /sys is never mounted: nothing in the plan lies under it.
        for s in &steps {
            let path = match s {
                MountStep::Dir { path, .. }
                | MountStep::Credentials { path, .. }
                | MountStep::Tmpfs { path, .. }
                | MountStep::Devpts { path }
                | MountStep::Seal { path }
                | MountStep::OwnSkeleton { path, .. }
                | MountStep::Proc { path }
                | MountStep::ProcReadOnly { path }
                | MountStep::ProcMask { path } => path.as_path(),
                MountStep::Bind { dest, .. } | MountStep::StateDir { dest, .. } => dest.as_path(),
                MountStep::Symlink { link, .. } => link.as_path(),
                MountStep::Root { .. } | MountStep::HostTop { .. } | MountStep::Etc { .. } => {
                    continue;
                }
            };
            assert!(!path.starts_with("sys"), "{s:?}");
        }
    }

    #[test]
    fn plan_flags_nosuid_nodev_on_every_bind_but_device_nodes() {
        let steps = plan(&spec(&[
            ("/srv/ro", "/ro", true),
            ("/srv/rw", "/rw", false),
        ]))
        .expect("plan");
        for (source, dest, attrs, origin) in binds(&steps) {
            assert!(attrs.nosuid, "{dest:?} without nosuid");
            if dest.starts_with("dev") && dest != Path::new("dev/log") {
                assert!(!attrs.nodev, "{dest:?}: device node without dev");
                assert!(attrs.noexec, "{dest:?}");
                assert_eq!(origin, Origin::Host);
            } else {
                assert!(attrs.nodev, "{dest:?} without nodev");
            }
            let user = source.starts_with("/srv");
            assert_eq!(origin == Origin::User, user, "{source:?}");
        }
        let attrs_of = |d: &str| {
            binds(&steps)
                .into_iter()
                .find(|b| b.1 == Path::new(d))
                .expect("bind")
                .2
        };
        assert!(attrs_of("usr").read_only);
        assert!(attrs_of("ro").read_only);
        assert!(!attrs_of("rw").read_only);
        for s in &steps {
            if let MountStep::Tmpfs { path, attrs, .. } = s {
                assert!(attrs.nosuid, "{path:?}");
                assert!(attrs.nodev || path == Path::new("dev"), "{path:?}");
                assert!(path != Path::new("dev") || attrs.noexec);
            }
        }
        // User binds keep the configured propagation, berth's own are private.
        for s in &steps {
            if let MountStep::Bind {
                origin,
                propagation,
                ..
            } = s
            {
                let want = match origin {
                    Origin::User => Propagation::Slave,
                    Origin::Host => Propagation::Private,
                };
                assert_eq!(*propagation, want);
            }
        }
    }

    #[test]
    fn plan_order_parents_first_then_seal_dev_then_proc() {
        let steps = plan(&spec(&[
            ("/srv/b", "/a/b/c", true),
            ("/srv/a", "/a", false),
            ("/srv/x", "/x", true),
            ("/srv/ab", "/a/b", true),
        ]))
        .expect("plan");
        let user: Vec<&Path> = binds(&steps)
            .into_iter()
            .filter(|b| b.3 == Origin::User)
            .map(|b| b.1)
            .collect();
        // Stable: equally deep binds keep the configured order.
        assert_eq!(
            user,
            [
                Path::new("a"),
                "x".as_ref(),
                "a/b".as_ref(),
                "a/b/c".as_ref()
            ]
        );
        let seal = index(&steps, |s| matches!(s, MountStep::Seal { .. }));
        let devnode = index(
            &steps,
            |s| matches!(s, MountStep::Bind { dest, .. } if dest == Path::new("dev/log")),
        );
        let first_user = index(&steps, |s| {
            matches!(
                s,
                MountStep::Bind {
                    origin: Origin::User,
                    ..
                }
            )
        });
        let proc = index(&steps, |s| matches!(s, MountStep::Proc { .. }));
        let mask = index(&steps, |s| matches!(s, MountStep::ProcMask { .. }));
        let etc_dir = index(&steps, |s| matches!(s, MountStep::Dir { .. }));
        let etc = index(&steps, |s| matches!(s, MountStep::Etc { .. }));
        assert!(etc_dir < etc);
        assert!(devnode < seal && seal < first_user && first_user < proc && proc < mask);
    }

    #[test]
    fn plan_refuses_reserved_and_escaping_destinations() {
        for bad in ["/", "/proc", "/proc/sys", "/dev", "/dev/null", "/dev/x/y"] {
            match plan(&spec(&[("/srv", bad, true)])) {
                Err(MountError::ReservedDest { dest }) => assert_eq!(dest, Path::new(bad)),
                other => panic!("{bad}: {other:?}"),
            }
        }
        for bad in ["relative", "/a/../../etc", "/.."] {
            match plan(&spec(&[("/srv", bad, true)])) {
                Err(MountError::BadDest { dest }) => assert_eq!(dest, Path::new(bad)),
                other => panic!("{bad}: {other:?}"),
            }
        }
        // Not reserved: names that only start like them.
        let steps = plan(&spec(&[
            ("/srv", "/devices", true),
            ("/srv", "/./x/./y", true),
        ]))
        .expect("plan");
        let dests: Vec<&Path> = binds(&steps).iter().map(|b| b.1).collect();
        assert!(dests.contains(&Path::new("devices")));
        assert!(dests.contains(&Path::new("x/y")));
        let mut s = spec(&[]);
        s.etc[0].name = "../shadow".into();
        assert!(matches!(plan(&s), Err(MountError::BadEtcName { .. })));
    }

    #[test]
    fn plan_nested_paths_under_the_bind_they_sit_on() {
        let steps = plan(&spec(&[
            ("/srv/d/up", "/up", false),
            ("/srv/d", "/data", false),
        ]))
        .expect("plan");
        let user: Vec<(&Path, &Path)> = binds(&steps)
            .into_iter()
            .filter(|b| b.3 == Origin::User)
            .map(|b| (b.0, b.1))
            .collect();
        assert_eq!(
            user,
            [
                (Path::new("/srv/d/up"), Path::new("up")),
                (Path::new("/srv/d"), Path::new("data"))
            ]
        );
        // An etc entry in a subdirectory lands under etc/.
        let mut s = spec(&[]);
        s.etc[0].name = "ssl/certs".into();
        let steps = plan(&s).expect("plan");
        assert!(steps.contains(&MountStep::Etc {
            name: "ssl/certs".into(),
            required: true
        }));
    }

    #[test]
    fn plan_runtime_directory_on_run_owned_by_the_service_user() {
        let mut s = spec(&[]);
        s.runtime_directory = "sshd".into();
        let steps = plan(&s).expect("plan");
        let run = index(
            &steps,
            |st| matches!(st, MountStep::Tmpfs { path, .. } if path == Path::new("run")),
        );
        let dir = index(&steps, |st| {
            *st == MountStep::Dir {
                path: "run/sshd".into(),
                mode: 0o755,
                owner: Some((65534, 65534)),
            }
        });
        assert!(run < dir);
        // Nothing else of the plan is owned by the service user.
        assert!(steps.iter().all(|st| !matches!(
            st,
            MountStep::Dir { path, owner: Some(_), .. } if path != Path::new("run/sshd")
        )));
    }

    #[test]
    fn plan_private_users_idmaps_configured_binds_and_shifts_owners() {
        let mut s = spec(&[("/srv/a", "/a", false), ("/srv/b", "/b", true)]);
        s.binds[1].idmap = false; // ":noidmap"
        s.state_directory = true;
        s.uid = 7;
        s.gid = 8;
        let idmapped = |steps: &[MountStep]| -> Vec<PathBuf> {
            steps
                .iter()
                .filter_map(|st| match st {
                    MountStep::Bind {
                        dest, idmap: true, ..
                    } => Some(dest.clone()),
                    _ => None,
                })
                .collect()
        };
        // Without private users nothing is idmapped, owners are as given.
        let steps = plan(&s).expect("plan");
        assert!(idmapped(&steps).is_empty());
        assert!(steps.contains(&MountStep::Dir {
            path: "run/t".into(),
            mode: 0o755,
            owner: Some((7, 8)),
        }));
        s.private_users = Some(0x7001_0000);
        let steps = plan(&s).expect("plan");
        // Only the configured bind without ":noidmap": /usr, /dev nodes,
        // /etc entries and /dev/log stay the host's (nobody inside).
        assert_eq!(idmapped(&steps), vec![PathBuf::from("a")]);
        let host = (0x7001_0000 + 7, 0x7001_0000 + 8);
        assert!(steps.contains(&MountStep::Dir {
            path: "run/t".into(),
            mode: 0o755,
            owner: Some(host),
        }));
        // berth's own tmpfs skeletons are root of the block inside, last
        // (after every mount point was made); none without private users.
        let skeletons: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, st)| {
                matches!(
                    st,
                    MountStep::OwnSkeleton {
                        base: 0x7001_0000,
                        ..
                    }
                )
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(skeletons.len(), 3, "{steps:?}");
        let last_bind = steps
            .iter()
            .rposition(|st| matches!(st, MountStep::Bind { .. } | MountStep::StateDir { .. }))
            .expect("binds");
        assert!(skeletons[0] > last_bind);
        assert!(
            !plan(&spec(&[]))
                .expect("plan")
                .iter()
                .any(|st| matches!(st, MountStep::OwnSkeleton { .. }))
        );
        // The state directory is idmapped, owned as inside.
        assert!(steps.iter().any(|st| matches!(
            st,
            MountStep::StateDir {
                owner: (7, 8),
                idmap: true,
                ..
            }
        )));
    }

    #[test]
    fn plan_state_directory_is_bound_at_var_lib_parents_first() {
        let mut s = spec(&[
            ("/srv/cache", "/var/lib/t/cache", false),
            ("/srv/v", "/var", true),
        ]);
        assert!(
            !plan(&s)
                .expect("plan")
                .iter()
                .any(|st| matches!(st, MountStep::StateDir { .. })),
            "a state directory without state_directory = true"
        );
        s.state_directory = true;
        let steps = plan(&s).expect("plan");
        let state = index(&steps, |st| {
            *st == MountStep::StateDir {
                base: "/var/lib/berth".into(),
                name: "t".into(),
                dest: "var/lib/t".into(),
                owner: (65534, 65534),
                idmap: false,
            }
        });
        let dest_of = |d: &str| {
            index(
                &steps,
                |st| matches!(st, MountStep::Bind { dest, .. } if dest == Path::new(d)),
            )
        };
        let seal = index(&steps, |st| matches!(st, MountStep::Seal { .. }));
        let proc = index(&steps, |st| matches!(st, MountStep::Proc { .. }));
        assert!(seal < dest_of("var") && dest_of("var") < state);
        assert!(state < dest_of("var/lib/t/cache") && dest_of("var/lib/t/cache") < proc);
    }

    #[test]
    fn plan_credentials_on_a_tmpfs_under_run_credentials() {
        let mut s = spec(&[]);
        assert!(
            !plan(&s)
                .expect("plan")
                .iter()
                .any(|st| matches!(st, MountStep::Credentials { .. })),
            "a credentials directory without credentials"
        );
        s.credentials = vec![
            CredentialSpec {
                name: "db".into(),
                source: "/etc/berth/secrets/db".into(),
                inherited: false,
            },
            CredentialSpec {
                name: "tls-key".into(),
                source: "/run/credentials/berth.service/tls-key".into(),
                inherited: true,
            },
        ];
        let steps = plan(&s).expect("plan");
        let run = index(
            &steps,
            |st| matches!(st, MountStep::Tmpfs { path, .. } if path == Path::new("run")),
        );
        let creds = index(&steps, |st| {
            *st == MountStep::Credentials {
                path: "run/credentials/t".into(),
                files: s.credentials.clone(),
                owner: (65534, 65534),
            }
        });
        assert!(run < creds);
    }

    #[test]
    fn plan_refuses_names_that_are_not_one_component() {
        for bad in ["", ".", "..", "a/b", "/x", "x/"] {
            let mut s = spec(&[]);
            s.runtime_directory = bad.into();
            match plan(&s) {
                Err(MountError::BadName { what, name }) => {
                    assert_eq!((what, name.as_str()), ("runtime directory", bad));
                }
                other => panic!("runtime directory {bad:?}: {other:?}"),
            }
            let mut s = spec(&[]);
            s.credentials = vec![CredentialSpec {
                name: bad.into(),
                source: "/x".into(),
                inherited: false,
            }];
            assert!(
                matches!(
                    plan(&s),
                    Err(MountError::BadName {
                        what: "credential name",
                        ..
                    })
                ),
                "credential {bad:?}"
            );
            let mut s = spec(&[]);
            s.service = bad.into();
            s.state_directory = true;
            assert!(
                matches!(
                    plan(&s),
                    Err(MountError::BadName {
                        what: "service name",
                        ..
                    })
                ),
                "service {bad:?}"
            );
        }
    }

    fn dest_of(st: &MountStep) -> Option<&Path> {
        match st {
            MountStep::Bind { dest, .. } | MountStep::StateDir { dest, .. } => Some(dest),
            MountStep::Tmpfs { path, .. }
            | MountStep::Devpts { path }
            | MountStep::Proc { path }
            | MountStep::Credentials { path, .. } => Some(path),
            _ => None,
        }
    }

    #[test]
    fn split_template_is_the_read_only_part_and_the_rest_per_container() {
        let mut s = spec(&[
            ("/srv/ro", "/ro", true),
            ("/srv/rw", "/rw", false),
            ("/srv/under", "/rw/under", true),
            ("/srv/tmpro", "/tmp/x", true),
        ]);
        s.state_directory = true;
        s.credentials = vec![CredentialSpec {
            name: "db".into(),
            source: "/etc/berth/db".into(),
            inherited: false,
        }];
        let sp = split(&s).expect("plan").expect("a template");
        let t = &sp.template;
        assert!(matches!(t[0], MountStep::Root { .. }));
        // Shared: /usr, the tops, etc, /dev and its nodes, the read-only
        // bind nothing per container lies above.
        let shared: Vec<&Path> = binds(t).iter().map(|b| b.1).collect();
        let want = binds_in_order("ro");
        let want: Vec<&Path> = want.iter().map(PathBuf::as_path).collect();
        assert_eq!(shared, want);
        for top in HOST_TOPS {
            assert!(t.contains(&MountStep::HostTop { name: top }));
        }
        assert!(t.iter().any(|st| matches!(st, MountStep::Etc { .. })));
        assert!(t.contains(&MountStep::Seal { path: "dev".into() }));
        // The template holds no writable file system and nothing of one
        // container: only the root and /dev are tmpfs there, both end
        // read-only; every bind in it is read-only.
        for st in t {
            match st {
                MountStep::Tmpfs { path, .. } => assert_eq!(path, Path::new("dev")),
                MountStep::Bind {
                    dest, attrs, idmap, ..
                } => {
                    assert!(!idmap, "{dest:?}");
                    assert!(attrs.read_only, "{dest:?}");
                }
                MountStep::Dir { owner, path, .. } => assert!(owner.is_none(), "{path:?}"),
                MountStep::StateDir { .. }
                | MountStep::Credentials { .. }
                | MountStep::Devpts { .. }
                | MountStep::Proc { .. }
                | MountStep::ProcReadOnly { .. }
                | MountStep::ProcMask { .. } => {
                    panic!("per-container step in the template: {st:?}")
                }
                _ => {}
            }
        }
        // Per container: the writable mounts, a read-only bind under a
        // per-container one (it would be hidden), the state directory,
        // credentials, /proc.
        let own: Vec<&Path> = sp.per_container.iter().filter_map(dest_of).collect();
        for d in [
            "tmp",
            "run",
            "run/credentials/t",
            "dev/pts",
            "dev/shm",
            "rw",
            "rw/under",
            "tmp/x",
            "var/lib/t",
            "proc",
        ] {
            assert!(
                own.contains(&Path::new(d)),
                "{d} not per container: {own:?}"
            );
        }
        assert!(sp.per_container.iter().any(|st| matches!(
            st,
            MountStep::Dir { path, owner: Some(_), .. } if path == Path::new("run/t")
        )));
        // The sealed /dev gets the mount points of its per-container mounts
        // before the seal.
        let seal = index(t, |st| matches!(st, MountStep::Seal { .. }));
        for d in ["dev/pts", "dev/shm"] {
            let at = index(
                t,
                |st| matches!(st, MountStep::Dir { path, .. } if path == Path::new(d)),
            );
            assert!(at < seal, "{d}");
        }
    }

    #[test]
    fn split_keeps_every_step_of_the_plan_once_and_in_order() {
        let mut s = spec(&[("/srv/a", "/a", true), ("/srv/b", "/a/b", false)]);
        s.state_directory = true;
        let all = plan(&s).expect("plan");
        let sp = split(&s).expect("plan").expect("a template");
        let added = |st: &MountStep| matches!(st, MountStep::Dir { path, owner: None, .. } if path.starts_with("dev"));
        let mut t = sp.template.iter().filter(|st| !added(st)).peekable();
        let mut p = sp.per_container.iter().peekable();
        for st in &all {
            if t.peek() == Some(&st) {
                t.next();
            } else {
                assert_eq!(p.next(), Some(st), "{st:?} lost or out of order");
            }
        }
        assert!(t.next().is_none() && p.next().is_none());
    }

    #[test]
    fn split_none_with_private_users_or_cap_sys_admin_and_shared_binds_per_container() {
        let mut s = spec(&[("/srv/a", "/a", true)]);
        s.private_users = Some(0x7001_0000);
        assert_eq!(split(&s).expect("plan"), None);
        let mut s = spec(&[("/srv/a", "/a", true)]);
        s.capabilities = vec!["CAP_SYS_ADMIN".into()];
        assert_eq!(split(&s).expect("plan"), None);
        let mut s = spec(&[("/srv/a", "/a", true)]);
        s.propagation = Propagation::Shared;
        let sp = split(&s).expect("plan").expect("a template");
        assert!(binds(&sp.template).iter().all(|b| b.3 == Origin::Host));
    }

    #[test]
    fn split_is_the_key_only_what_the_tree_depends_on_changes_it() {
        let base = spec(&[("/srv/a", "/a", true)]);
        let key = split(&base).expect("plan");
        // The command, environment, hostname, capabilities: same template.
        let mut other = base.clone();
        other.exec = vec!["/bin/false".into()];
        other.hostname = "elsewhere".into();
        other.env = vec![("A".into(), "b".into())];
        assert_eq!(split(&other).expect("plan"), key);
        // A changed read-only bind, an etc entry, the device log: another.
        let mut other = base.clone();
        other.binds[0].source = "/srv/b".into();
        assert_ne!(split(&other).expect("plan"), key);
        let mut other = base.clone();
        other.etc[0].name = "group".into();
        assert_ne!(split(&other).expect("plan"), key);
        let mut other = base;
        other.dev_log = None;
        assert_ne!(split(&other).expect("plan"), key);
    }
}
