//! What a container is, as the application sees it — its file system: the
//! tree, /etc, /tmp, /run, /proc, /sys, /dev, binds and propagation, the
//! reaper binary and the working directory (SPEC.md "What a container is"),
//! checked from the real probe's `report` in containers of the real
//! `berth run`.
//!
//! Every test runs each configuration twice: `mode = "inetd"` (one container
//! per connection, the probe answers on fd 0/1) and `mode = "listen"` (the
//! probe takes LISTEN_FDS and answers per connection).

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::sandbox::*;

// ---------------------------------------------------------------------------
// 3. Mounts
// ---------------------------------------------------------------------------

/// As root (owner of every directory, so only a read-only mount stops a
/// write), the fixed parts of the tree are read-only and the scratch parts
/// writable.
#[test]
fn root_is_read_only_tmpfs_and_usr_read_only() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let svc = Svc::new("rootfs").top("user = \"root\"");
        let r = report(mode, &svc, &[]);
        let root = mount_must(&r, "/", mode);
        assert_eq!(root["fs_type"], "tmpfs", "{mode:?}: / is {root}");
        assert!(has_opt(root, "mount_options", "ro"), "{mode:?}: / {root}");
        assert!(!writable(&r, "/"), "{mode:?}: / writable as root");
        assert_eq!(write_error(&r, "/"), "EROFS", "{mode:?}");

        let usr = mount_must(&r, "/usr", mode);
        assert!(has_opt(usr, "mount_options", "ro"), "{mode:?}: /usr {usr}");
        assert_eq!(usr["root"], "/usr", "{mode:?}: /usr is not the host's /usr");
        assert!(!writable(&r, "/usr"), "{mode:?}: /usr writable as root");
        assert_eq!(write_error(&r, "/usr"), "EROFS", "{mode:?}");

        // Every mount but the writable scratch areas is read-only.
        for m in mounts(&r) {
            let point = m["mount_point"].as_str().expect("mount point");
            let rw_ok = [
                "/tmp",
                "/run",
                "/dev/shm",
                "/dev/pts",
                "/proc",
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty",
                "/dev/log",
            ];
            if !rw_ok.contains(&point) {
                assert!(
                    has_opt(m, "mount_options", "ro"),
                    "{mode:?}: {point} is not read-only: {m}"
                );
            }
        }
    }
}

#[test]
fn merged_usr_links_are_links_not_mounts() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let svc = Svc::new("links").top("user = \"root\"");
        let r = report(mode, &svc, &["/bin/sh", "/usr/bin/sh"]);
        let gone = missing(&r);
        for top in ["bin", "sbin", "lib", "lib64"] {
            let host = Path::new("/").join(top);
            let Ok(target) = std::fs::read_link(&host) else {
                continue; // not a merged-/usr link on this host
            };
            assert!(
                target.starts_with("usr/") || target.starts_with("/usr/"),
                "host /{top} -> {target:?}"
            );
            let point = format!("/{top}");
            assert!(
                mount_at(&r, &point).is_none(),
                "{mode:?}: {point} is a mount, not a link into /usr"
            );
        }
        // /bin resolves into the read-only /usr: it exists, is not writable
        // and the error is the one of /usr.
        assert!(!gone.contains("/bin"), "{mode:?}: /bin missing");
        assert!(!writable(&r, "/bin"), "{mode:?}: /bin writable");
        assert_eq!(write_error(&r, "/bin"), "EROFS", "{mode:?}");
        assert!(!gone.contains("/bin/sh"), "{mode:?}: /bin/sh missing");
    }
}

#[test]
fn etc_has_only_the_listed_files_read_only() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let svc = Svc::new("etc").top("user = \"root\"");
        let paths = [
            "/etc/passwd",
            "/etc/group",
            "/etc/nsswitch.conf",
            "/etc/hosts",
            "/etc/localtime",
            "/etc/shadow",
            "/etc/hostname",
            "/etc/fstab",
        ];
        let r = report(mode, &svc, &paths);
        let gone = missing(&r);
        for f in ["passwd", "group", "nsswitch.conf", "hosts", "localtime"] {
            let host = Path::new("/etc").join(f);
            let point = format!("/etc/{f}");
            let Ok(meta) = std::fs::symlink_metadata(&host) else {
                assert!(gone.contains(&point), "{mode:?}: {point} not on the host");
                continue;
            };
            assert!(!gone.contains(&point), "{mode:?}: {point} missing");
            assert!(!writable(&r, &point), "{mode:?}: {point} writable as root");
            let into_usr = meta.file_type().is_symlink()
                && std::fs::read_link(&host).is_ok_and(|t| t.starts_with("/usr/"));
            if into_usr {
                // localtime → /usr/share/zoneinfo/...: a link, not a mount.
                assert!(mount_at(&r, &point).is_none(), "{mode:?}: {point}");
                assert_eq!(write_error(&r, &point), "EROFS", "{mode:?}: {point}");
            } else {
                let m = mount_must(&r, &point, mode);
                assert!(has_opt(m, "mount_options", "ro"), "{mode:?}: {m}");
                assert_eq!(write_error(&r, &point), "EROFS", "{mode:?}: {point}");
            }
        }
        for f in ["/etc/shadow", "/etc/hostname", "/etc/fstab"] {
            assert!(gone.contains(f), "{mode:?}: {f} is in the container");
        }
        assert!(!writable(&r, "/etc"), "{mode:?}: /etc writable as root");
        assert_eq!(write_error(&r, "/etc"), "EROFS", "{mode:?}");
    }
}

#[test]
fn tmp_is_private_sized_tmpfs() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let svc = Svc::new("tmp").sandbox("tmp_size = \"8M\"");
        let r = report(mode, &svc, &[]);
        let tmp = mount_must(&r, "/tmp", mode);
        assert_eq!(tmp["fs_type"], "tmpfs", "{mode:?}: {tmp}");
        for opt in ["rw", "nosuid", "nodev"] {
            assert!(has_opt(tmp, "mount_options", opt), "{mode:?}: {opt}: {tmp}");
        }
        assert!(
            has_opt(tmp, "super_options", "size=8192k"),
            "{mode:?}: tmp_size not applied: {tmp}"
        );
        assert!(
            writable(&r, "/tmp"),
            "{mode:?}: /tmp not writable by nobody"
        );
        assert_eq!(
            r["tmp_entries"],
            serde_json::json!([]),
            "{mode:?}: /tmp not empty"
        );
    }
}

#[test]
fn run_is_tmpfs_and_proc_is_new_with_read_only_sys() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let svc = Svc::new("runproc").top("user = \"root\"");
        let r = report(mode, &svc, &[]);
        let run = mount_must(&r, "/run", mode);
        assert_eq!(run["fs_type"], "tmpfs", "{mode:?}: {run}");
        assert!(has_opt(run, "mount_options", "rw"), "{mode:?}: {run}");
        assert!(writable(&r, "/run"), "{mode:?}: /run not writable as root");

        let proc = mount_must(&r, "/proc", mode);
        assert_eq!(proc["fs_type"], "proc", "{mode:?}: {proc}");
        // root without capabilities may still open a sysctl it owns: only the
        // read-only mount stops it.
        assert!(!writable(&r, "/proc/sys"), "{mode:?}: /proc/sys writable");
        assert_eq!(write_error(&r, "/proc/sys"), "EROFS", "{mode:?}");
        let sys = mount_must(&r, "/proc/sys", mode);
        assert!(has_opt(sys, "mount_options", "ro"), "{mode:?}: {sys}");
    }
}

#[test]
fn dev_is_minimal_and_read_only() {
    if !common::require_root() {
        return;
    }
    let present = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
        "/dev/pts",
        "/dev/shm",
        "/dev/ptmx",
        "/dev/fd",
        "/dev/stdin",
        "/dev/stdout",
        "/dev/stderr",
    ];
    let absent = [
        "/dev/mem",
        "/dev/kmem",
        "/dev/kmsg",
        "/dev/console",
        "/dev/tty0",
        "/dev/vda",
        "/dev/sda",
        "/dev/loop0",
        "/dev/net",
        "/dev/mqueue",
        "/dev/hugepages",
    ];
    for mode in MODES {
        let svc = Svc::new("dev").top("user = \"root\"");
        let mut paths = present.to_vec();
        paths.extend(absent);
        let r = report(mode, &svc, &paths);
        let dev = mount_must(&r, "/dev", mode);
        assert_eq!(dev["fs_type"], "tmpfs", "{mode:?}: {dev}");
        assert!(has_opt(dev, "mount_options", "ro"), "{mode:?}: {dev}");
        assert!(!writable(&r, "/dev"), "{mode:?}: /dev writable as root");
        assert_eq!(write_error(&r, "/dev"), "EROFS", "{mode:?}");

        let under: BTreeSet<&str> = mounts(&r)
            .iter()
            .filter_map(|m| m["mount_point"].as_str())
            .filter(|p| p.starts_with("/dev/"))
            .collect();
        let mut want: BTreeSet<&str> = [
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty",
            "/dev/pts",
            "/dev/shm",
        ]
        .into();
        if under.contains("/dev/log") {
            want.insert("/dev/log");
        }
        assert_eq!(under, want, "{mode:?}: mounts under /dev");
        for node in ["null", "zero", "full", "random", "urandom", "tty"] {
            let m = mount_must(&r, &format!("/dev/{node}"), mode);
            assert_eq!(m["root"], format!("/{node}"), "{mode:?}: {m}");
        }
        assert_eq!(mount_must(&r, "/dev/pts", mode)["fs_type"], "devpts");
        let shm = mount_must(&r, "/dev/shm", mode);
        assert_eq!(shm["fs_type"], "tmpfs", "{mode:?}: {shm}");
        assert!(writable(&r, "/dev/shm"), "{mode:?}: /dev/shm not writable");

        let gone = missing(&r);
        for p in present {
            assert!(!gone.contains(p), "{mode:?}: {p} missing");
        }
        for p in absent {
            assert!(gone.contains(p), "{mode:?}: {p} is in the container");
        }
    }
}

#[test]
fn no_host_directories_leak_in() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let r = report(
            mode,
            &Svc::new("nohost"),
            &["/sys", "/home", "/root", "/var", "/srv", "/opt", "/mnt"],
        );
        let gone = missing(&r);
        for p in ["/sys", "/home", "/root", "/var", "/srv", "/opt", "/mnt"] {
            assert!(gone.contains(p), "{mode:?}: {p} exists in the container");
        }
        assert!(mount_at(&r, "/sys").is_none(), "{mode:?}: sysfs is mounted");
    }
}

// ---------------------------------------------------------------------------
// 4. Binds and propagation
// ---------------------------------------------------------------------------

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn binds_read_only_and_read_write() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ro = dir.path().join("ro");
    let rw = dir.path().join("rw");
    for d in [&ro, &rw] {
        std::fs::create_dir(d).expect("mkdir");
        // World-writable, so only the mount decides.
        chmod(d, 0o777);
    }
    std::fs::write(ro.join("ro-file"), "ro").expect("write");
    std::fs::write(rw.join("host-file"), "rw").expect("write");
    chmod(&ro.join("ro-file"), 0o666);
    chmod(&rw.join("host-file"), 0o666);
    for mode in MODES {
        let svc = Svc::new("binds")
            .ro(&format!("{}:/data-ro", ro.display()))
            .sandbox(&format!("read_write = [\"{}:/data\"]", rw.display()));
        let r = report(
            mode,
            &svc,
            &[
                "/data",
                "/data-ro",
                "/data/host-file",
                "/data-ro/ro-file",
                "/data/not-there",
            ],
        );
        assert!(
            writable(&r, "/data"),
            "{mode:?}: read_write bind not writable"
        );
        assert!(writable(&r, "/data/host-file"), "{mode:?}");
        assert!(
            !writable(&r, "/data-ro"),
            "{mode:?}: read_only bind writable"
        );
        assert_eq!(write_error(&r, "/data-ro"), "EROFS", "{mode:?}");
        assert!(!writable(&r, "/data-ro/ro-file"), "{mode:?}");
        assert_eq!(write_error(&r, "/data-ro/ro-file"), "EROFS", "{mode:?}");

        let gone = missing(&r);
        assert!(
            !gone.contains("/data/host-file"),
            "{mode:?}: host file not seen"
        );
        assert!(!gone.contains("/data-ro/ro-file"), "{mode:?}");
        assert!(gone.contains("/data/not-there"), "{mode:?}");

        let data = mount_must(&r, "/data", mode);
        assert!(has_opt(data, "mount_options", "rw"), "{mode:?}: {data}");
        let data_ro = mount_must(&r, "/data-ro", mode);
        assert!(
            has_opt(data_ro, "mount_options", "ro"),
            "{mode:?}: {data_ro}"
        );
        // Default propagation is private.
        for m in [data, data_ro] {
            assert_eq!(m["optional"], serde_json::json!([]), "{mode:?}: {m}");
        }
    }
    // The probe's writability check created and removed files in /data: it
    // wrote through to the host directory, which is as it was.
    let left: Vec<_> = std::fs::read_dir(&rw)
        .expect("read rw")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["host-file"], "rw bind directory changed");
}

/// A shared tmpfs mounted in a tempdir on the host, unmounted on drop.
struct HostMount {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl HostMount {
    fn new() -> HostMount {
        use nix::mount::{MsFlags, mount};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("src");
        std::fs::create_dir(&path).expect("mkdir");
        mount(
            Some("berth-test"),
            &path,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=0777,size=1m"),
        )
        .expect("mount tmpfs");
        let hm = HostMount { path, _dir: dir };
        mount(
            None::<&str>,
            &hm.path,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .expect("make-shared");
        std::fs::write(hm.path.join("marker"), "x").expect("write marker");
        hm
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn propagation_fields(propagation: &str, mode: Mode) -> Vec<String> {
    let hm = HostMount::new();
    let svc = Svc::new("prop").sandbox(&format!(
        "read_write = [\"{}:/data\"]\npropagation = \"{propagation}\"",
        hm.path.display()
    ));
    let r = report(mode, &svc, &["/data/marker"]);
    assert!(
        !missing(&r).contains("/data/marker"),
        "{mode:?}: bind does not show the host tmpfs"
    );
    let m = mount_must(&r, "/data", mode);
    assert_eq!(m["fs_type"], "tmpfs", "{mode:?}: {m}");
    strs(&m["optional"]).into_iter().map(String::from).collect()
}

#[test]
fn propagation_private() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let opt = propagation_fields("private", mode);
        assert!(
            opt.iter()
                .all(|o| !o.starts_with("shared:") && !o.starts_with("master:")),
            "{mode:?}: private bind has {opt:?}"
        );
    }
}

#[test]
fn propagation_slave() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let opt = propagation_fields("slave", mode);
        assert!(
            opt.iter().any(|o| o.starts_with("master:")),
            "{mode:?}: slave bind has {opt:?}"
        );
        assert!(
            !opt.iter().any(|o| o.starts_with("shared:")),
            "{mode:?}: slave bind is shared: {opt:?}"
        );
    }
}

#[test]
fn propagation_shared() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let opt = propagation_fields("shared", mode);
        assert!(
            opt.iter().any(|o| o.starts_with("shared:")),
            "{mode:?}: shared bind has {opt:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 12. /proc/1/exe
// ---------------------------------------------------------------------------

#[test]
fn reaper_binary_cannot_be_opened_for_writing() {
    if !common::require_root() {
        return;
    }
    let cases = [
        ("nobody", ""),
        ("root", ""),
        ("root", "capabilities = [\"CAP_DAC_OVERRIDE\"]"),
    ];
    for (user, caps) in cases {
        for mode in MODES {
            let svc = Svc::new("exe")
                .top(&format!("user = \"{user}\""))
                .sandbox(caps);
            let r = report(mode, &svc, &[]);
            let got = r["proc1_exe_write"].as_str().expect("proc1_exe_write");
            assert_ne!(got, "opened", "{mode:?} user {user} {caps}");
        }
    }
}

// ---------------------------------------------------------------------------
// 13. Working directory
// ---------------------------------------------------------------------------

#[test]
fn working_directory_is_honoured() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let svc = Svc::new("cwd").top("working_directory = \"/tmp\"");
        let r = report(mode, &svc, &[]);
        assert_eq!(r["cwd"], "/tmp", "{mode:?}");
        let r = report(mode, &Svc::new("cwd"), &[]);
        assert_eq!(r["cwd"], "/", "{mode:?}: default");
    }
}
