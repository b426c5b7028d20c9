//! What the container's file system consists of, as a list of steps computed
//! from the spec alone (no system calls): the layout, the flags of every
//! mount and the order are unit-tested here; `apply` only executes them.
//!
//! Destinations are relative to the new root ("usr", "dev/null"); `apply`
//! resolves them inside it.

use std::path::{Component, Path, PathBuf};

use super::MountError;
use crate::sandbox::{Propagation, Spec};

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
    /// A directory created in the new root.
    Dir {
        path: PathBuf,
        mode: u32,
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

fn etc_name(name: &str) -> Result<PathBuf, MountError> {
    let p = Path::new(name);
    if name.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(MountError::BadEtcName { name: name.into() });
    }
    Ok(p.to_path_buf())
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
    });
    steps.extend(HOST_TOPS.map(|name| MountStep::HostTop { name }));

    steps.push(MountStep::Dir {
        path: "etc".into(),
        mode: 0o755,
    });
    for e in &spec.etc {
        steps.push(MountStep::Etc {
            name: etc_name(&e.name)?,
            required: e.required,
        });
    }

    steps.push(MountStep::Tmpfs {
        path: "tmp".into(),
        options: vec![("mode", "1777".into()), ("size", spec.tmp_size.to_string())],
        attrs: Attrs::TMPFS,
    });
    steps.push(MountStep::Tmpfs {
        path: "run".into(),
        options: vec![("mode", "0755".into()), ("size", "16m".into())],
        attrs: Attrs::TMPFS,
    });

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
            attrs: Attrs::DEVICE,
            propagation: Propagation::Private,
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
            attrs: Attrs::NOTHING,
            propagation: Propagation::Private,
        });
    }
    // Nothing may add device nodes or files later.
    steps.push(MountStep::Seal { path: "dev".into() });

    // Parents before children whatever the configured order, so a nested
    // bind is not hidden by its parent's.
    let mut binds = Vec::with_capacity(spec.binds.len());
    for b in &spec.binds {
        binds.push((container_path(&b.dest)?, b));
    }
    binds.sort_by_key(|(dest, _)| dest.components().count());
    for (dest, b) in binds {
        steps.push(MountStep::Bind {
            source: b.source.clone(),
            origin: Origin::User,
            dest,
            attrs: if b.read_only {
                Attrs::BIND_RO
            } else {
                Attrs::BIND_RW
            },
            propagation: spec.propagation,
        });
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

    #[test]
    fn plan_layout_is_the_documented_tree() {
        let steps = plan(&spec(&[("/srv/d", "/data", false)])).expect("plan");
        assert!(matches!(&steps[0], MountStep::Root { .. }));
        let dests: Vec<&Path> = binds(&steps).iter().map(|b| b.1).collect();
        let want: Vec<&Path> = [
            "usr",
            "dev/null",
            "dev/zero",
            "dev/full",
            "dev/random",
            "dev/urandom",
            "dev/tty",
            "dev/log",
            "data",
        ]
        .iter()
        .map(Path::new)
        .collect();
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
                | MountStep::Tmpfs { path, .. }
                | MountStep::Devpts { path }
                | MountStep::Seal { path }
                | MountStep::Proc { path }
                | MountStep::ProcReadOnly { path }
                | MountStep::ProcMask { path } => path.as_path(),
                MountStep::Bind { dest, .. } => dest.as_path(),
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
}
