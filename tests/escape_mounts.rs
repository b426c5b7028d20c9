//! Containers attacking the mounts of the containers after them through
//! what they can write (runc CVE-2021-30465 class): a bind source or a
//! mount point under a writable bind replaced by a symlink, a FIFO or a
//! device node between two containers. And what every container's mount
//! table must show: nosuid,nodev on every bind, /proc's host-exposing
//! entries masked, no /sys.
//!
//! Attacks run as `/bin/sh -c` scripts in inetd containers: the first
//! connection plants, the next one is the victim.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Berth;
use serde_json::Value;

const T: Duration = Duration::from_secs(15);

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// An inetd service running `script` as root with `read_only` and
/// `read_write` binds and extra `[sandbox]` lines.
fn sh_service(script: &str, read_only: &[String], read_write: &[String], sandbox: &str) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|b| format!("{b:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "mode = \"inetd\"\nuser = \"root\"\nexec = [\"/bin/sh\", \"-c\", {script:?}]\n\n\
         [sandbox]\nread_only = [{}]\nread_write = [{}]\n{sandbox}\n",
        list(read_only),
        list(read_write),
    )
}

/// One connection: what the container wrote before closing it (empty if it
/// never started).
fn request(addr: &str) -> String {
    common::tcp_request(addr, "")
}

/// The log line of a container that failed to start, which must name `what`.
fn failed_start(b: &Berth, n: usize, what: &str) -> String {
    let lines = b.log.wait_count("container failed to start", n, T);
    let line = lines.last().expect("a failure line").clone();
    assert!(
        line.contains(what),
        "the failure does not name {what:?}: {line}"
    );
    line
}

// ---------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------

#[test]
fn source_swapped_for_a_symlink_to_root_is_refused() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("d");
    let up = d.join("up");
    std::fs::create_dir_all(&up).expect("mkdir");
    std::fs::write(up.join("marker"), "up").expect("write");
    // The victim looks for the host's copy of this very directory at /up.
    let script = format!(
        "if [ -L /data/up ]; then \
           if [ -d /up{d} ]; then echo HOST-ROOT; [ -w /up{d} ] && echo WRITABLE; fi; \
           echo victim-done; \
         else \
           cat /up/marker; rm -rf /data/up && ln -s / /data/up && echo planted; \
         fi",
        d = d.display()
    );
    let toml = sh_service(
        &script,
        &[],
        &[
            format!("{}:/data", d.display()),
            format!("{}:/up", up.display()),
        ],
        "",
    );
    let (b, addr) = Berth::start_tcp("swap", &toml);
    let first = request(&addr);
    assert_eq!(first, "upplanted\n", "the attack could not be set up");
    assert!(
        std::fs::symlink_metadata(&up)
            .expect("planted link")
            .file_type()
            .is_symlink()
    );

    let second = request(&addr);
    assert!(
        !second.contains("HOST-ROOT"),
        "the host's root is at /up: {second:?}"
    );
    // Refused with an error naming the source, not silently followed.
    assert_eq!(second, "", "the victim container started");
    let line = failed_start(&b, 1, &up.display().to_string());
    assert!(line.contains("symbolic link"), "{line}");
}

// ---------------------------------------------------------------------------
// Mount points under a writable bind
// ---------------------------------------------------------------------------

/// `d` bound read-write at /data, `payload` (a file) bound at /data/a/f,
/// nested in it. The attacker moves /data/a aside (it is not a
/// mount point itself, so rename works) and plants `plant` instead.
struct Nested {
    dir: tempfile::TempDir,
    berth: Berth,
    addr: String,
}

impl Nested {
    fn start(name: &str, plant: &str, sandbox: &str) -> Nested {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("d");
        std::fs::create_dir_all(d.join("a")).expect("mkdir");
        let payload = dir.path().join("payload");
        std::fs::write(&payload, "payload").expect("write");
        for p in [dir.path(), &d, &d.join("a")] {
            chmod(p, 0o755);
        }
        let script = format!(
            "if [ -e /data/planted ]; then cat /data/a/f; echo; echo victim-done; \
             else mv /data/a /data/a2 && {plant} && touch /data/planted && echo planted; fi"
        );
        // Both read-write, so the configured order (parent first) is the
        // order of the mounts before and after the mount plan.
        let toml = sh_service(
            &script,
            &[],
            &[
                format!("{}:/data", d.display()),
                format!("{}:/data/a/f", payload.display()),
            ],
            sandbox,
        );
        let (berth, addr) = Berth::start_tcp(name, &toml);
        let n = Nested { dir, berth, addr };
        assert_eq!(
            request(&n.addr),
            "planted\n",
            "the attack could not be set up"
        );
        n
    }

    /// The next container, bounded in time: what it answered.
    fn victim(&self) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        let addr = self.addr.clone();
        std::thread::spawn(move || {
            let _ = tx.send(request(&addr));
        });
        rx.recv_timeout(T)
            .expect("the next container hangs (a stage blocked on the mount point?)")
    }

    /// It must have failed to start, with an error naming `path`.
    fn refused(&self, answer: &str, path: &str) -> String {
        assert_eq!(answer, "", "the victim container started: {answer:?}");
        failed_start(&self.berth, 1, path)
    }

    fn victim_refused(&self, path: &str) -> String {
        let answer = self.victim();
        self.refused(&answer, path)
    }
}

#[test]
fn mount_point_parent_swapped_for_a_symlink_creates_nothing_on_the_host() {
    if !common::require_root() {
        return;
    }
    let host = tempfile::tempdir().expect("tempdir");
    let n = Nested::start(
        "dstlink",
        &format!("ln -s {} /data/a", host.path().display()),
        "",
    );
    let answer = n.victim();
    let created: Vec<_> = std::fs::read_dir(host.path())
        .expect("read host dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(created.is_empty(), "created on the host: {created:?}");
    let line = n.refused(&answer, "/data/a");
    assert!(line.contains("symbolic link"), "{line}");
}

#[test]
fn mount_point_swapped_for_a_symlink_to_a_host_file_is_refused() {
    if !common::require_root() {
        return;
    }
    let host = tempfile::tempdir().expect("tempdir");
    let victim = host.path().join("victim");
    std::fs::write(&victim, "host").expect("write");
    let n = Nested::start(
        "dstfile",
        &format!("mkdir /data/a && ln -s {} /data/a/f", victim.display()),
        "",
    );
    let line = n.victim_refused("/data/a/f");
    assert!(line.contains("symbolic link"), "{line}");
    assert_eq!(std::fs::read_to_string(&victim).expect("read"), "host");
}

#[test]
fn mount_point_swapped_for_a_fifo_does_not_hang_the_stage() {
    if !common::require_root() {
        return;
    }
    let n = Nested::start("dstfifo", "mkdir /data/a && mkfifo /data/a/f", "");
    let line = n.victim_refused("/data/a/f");
    assert!(line.contains("FIFO"), "{line}");
}

#[test]
fn mount_point_swapped_for_a_device_node_is_not_opened() {
    if !common::require_root() {
        return;
    }
    let n = Nested::start(
        "dstdev",
        "mkdir /data/a && mknod /data/a/f c 1 3",
        "capabilities = [\"CAP_MKNOD\"]\nseccomp = \"off\"",
    );
    let f = n.dir.path().join("d/a/f");
    let kind = std::fs::symlink_metadata(&f).expect("planted node");
    use std::os::unix::fs::FileTypeExt;
    assert!(kind.file_type().is_char_device(), "no device node planted");
    let line = n.victim_refused("/data/a/f");
    assert!(line.contains("character device"), "{line}");
}

/// Host block device to create a node of: the first disk the kernel lists.
fn a_block_device() -> Option<(u32, u32)> {
    let parts = std::fs::read_to_string("/proc/partitions").ok()?;
    parts.lines().skip(2).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        Some((f.first()?.parse().ok()?, f.get(1)?.parse().ok()?))
    })
}

#[test]
fn device_nodes_made_on_a_writable_bind_cannot_be_opened() {
    if !common::require_root() {
        return;
    }
    // A block device of the host's disk, and /dev/zero's numbers: a device
    // cgroup may deny block devices anyway (it does on some testbeds), the
    // character device shows that only `nodev` stops it.
    let (major, minor) = a_block_device().unwrap_or((7, 0));
    let dir = tempfile::tempdir().expect("tempdir");
    let script = format!(
        "mknod /data/blk b {major} {minor} && mknod /data/chr c 1 5 && echo made; \
         for n in blk chr; do \
           if head -c 1 /data/$n > /dev/null 2>&1; then echo \"$n OPENED\"; else echo \"$n refused\"; fi; \
         done"
    );
    let toml = sh_service(
        &script,
        &[],
        &[format!("{}:/data", dir.path().display())],
        "capabilities = [\"CAP_MKNOD\"]\nseccomp = \"off\"",
    );
    let (_b, addr) = Berth::start_tcp("mknod", &toml);
    assert_eq!(request(&addr), "made\nblk refused\nchr refused\n");
}

// ---------------------------------------------------------------------------
// What every container shows
// ---------------------------------------------------------------------------

fn probe_toml(read_only: &[String], read_write: &[String]) -> String {
    let mut ro = vec![common::probe_bind()];
    ro.extend(read_only.iter().cloned());
    let list = |v: &[String]| {
        v.iter()
            .map(|b| format!("{b:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "mode = \"inetd\"\nexec = [\"/probe\"]\n\n[sandbox]\nread_only = [{}]\n\
         read_write = [{}]\netc = [\"passwd\", \"group\", \"hosts\"]\n",
        list(&ro),
        list(read_write)
    )
}

fn probe_report(toml: &str, paths: &[&str]) -> Value {
    let (_b, addr) = Berth::start_tcp("probe", toml);
    let answer = common::tcp_request(&addr, &format!("report {}", paths.join(" ")));
    common::json(&answer)
}

fn opts(m: &Value) -> Vec<String> {
    m["mount_options"]
        .as_array()
        .expect("mount_options")
        .iter()
        .map(|o| o.as_str().expect("option").to_owned())
        .collect()
}

#[test]
fn mount_table_shows_nosuid_nodev_on_every_bind() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (ro, rw) = (dir.path().join("ro"), dir.path().join("rw"));
    for d in [&ro, &rw] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let toml = probe_toml(
        &[format!("{}:/srv/ro", ro.display())],
        &[format!("{}:/srv/rw", rw.display())],
    );
    let r = probe_report(&toml, &[]);
    let mounts = r["mounts"].as_array().expect("mounts");
    let devices = [
        "/dev",
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
        "/dev/pts",
    ];
    let mut seen = Vec::new();
    for m in mounts {
        let point = m["mount_point"].as_str().expect("mount point");
        seen.push(point);
        let o = opts(m);
        assert!(
            o.iter().any(|x| x == "nosuid"),
            "{point} without nosuid: {m}"
        );
        if !devices.contains(&point) {
            assert!(o.iter().any(|x| x == "nodev"), "{point} without nodev: {m}");
        }
    }
    for want in [
        "/",
        "/usr",
        "/etc/passwd",
        "/etc/hosts",
        "/probe",
        "/srv/ro",
        "/srv/rw",
        "/tmp",
        "/dev/shm",
    ] {
        assert!(seen.contains(&want), "no mount at {want}: {seen:?}");
    }
}

#[test]
fn proc_host_entries_are_masked_and_sys_is_absent() {
    if !common::require_root() {
        return;
    }
    let files = [
        "kcore",
        "keys",
        "timer_list",
        "sched_debug",
        "latency_stats",
    ];
    let dirs = ["acpi", "scsi", "asound"];
    let present = |n: &&str| Path::new("/proc").join(n).exists();
    let files: Vec<&str> = files.into_iter().filter(present).collect();
    let dirs: Vec<&str> = dirs.into_iter().filter(present).collect();
    assert!(
        files.contains(&"timer_list"),
        "no /proc/timer_list on this host: the test would prove nothing"
    );
    // Bytes readable from each file (0 when it cannot be opened) and
    // entries of each directory, as root.
    let script = format!(
        "for f in {}; do echo \"$f $(cat /proc/$f 2>/dev/null | head -c 4096 | wc -c)\"; done; \
         for d in {}; do echo \"$d $(ls -A /proc/$d | wc -l)\"; done; \
         [ -e /sys ] && echo SYS; echo done",
        files.join(" "),
        dirs.join(" ")
    );
    let toml = sh_service(&script, &[], &[], "");
    let (_b, addr) = Berth::start_tcp("procmask", &toml);
    let answer = request(&addr);
    let want: String = files
        .iter()
        .chain(dirs.iter())
        .map(|n| format!("{n} 0\n"))
        .chain(["done\n".to_string()])
        .collect();
    assert_eq!(
        answer, want,
        "masked /proc entries are readable or /sys exists"
    );

    let r = probe_report(&probe_toml(&[], &[]), &["/sys"]);
    assert!(
        r["missing"]
            .as_array()
            .expect("missing")
            .contains(&serde_json::json!("/sys")),
        "/sys exists: {}",
        r["missing"]
    );
    let mounts = r["mounts"].as_array().expect("mounts");
    let at = |p: &str| mounts.iter().rev().find(|m| m["mount_point"] == p);
    for name in ["sys", "sysrq-trigger", "irq", "bus", "fs"]
        .into_iter()
        .chain(files.iter().copied())
        .chain(dirs.iter().copied())
    {
        let p = format!("/proc/{name}");
        if !Path::new(&p).exists() {
            continue;
        }
        let m = at(&p).unwrap_or_else(|| panic!("nothing mounted on {p}"));
        assert!(opts(m).iter().any(|o| o == "ro"), "{p} not read-only: {m}");
    }
    assert!(at("/sys").is_none(), "sysfs is mounted");
}

#[test]
fn nested_binds_under_a_read_only_bind_work_in_any_order() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (outer, inner) = (dir.path().join("outer"), dir.path().join("inner"));
    std::fs::create_dir_all(outer.join("in")).expect("mkdir");
    std::fs::create_dir(&inner).expect("mkdir");
    std::fs::write(outer.join("outer-file"), "o").expect("write");
    std::fs::write(inner.join("inner-file"), "i").expect("write");
    for p in [dir.path(), &outer, &outer.join("in"), &inner] {
        chmod(p, 0o755);
    }
    // The nested bind listed first: it must still end up on top.
    let toml = sh_service(
        "cat /x/outer-file /x/in/inner-file; echo; touch /x/in/w 2>/dev/null && echo WRITABLE; echo done",
        &[
            format!("{}:/x/in", inner.display()),
            format!("{}:/x", outer.display()),
        ],
        &[],
        "",
    );
    let (_b, addr) = Berth::start_tcp("nested", &toml);
    assert_eq!(request(&addr), "oi\ndone\n");
}

/// Root inside (no capabilities: the owner of an inode needs none to chmod
/// it) must not change the host's device nodes or journal socket through
/// the binds berth gives every container; before they were bound read-only
/// `chmod 600 /dev/null` inside changed the host's. Both tree paths: the
/// template and the container built step by step.
#[test]
fn root_inside_cannot_change_the_hosts_device_nodes() {
    if !common::require_root() {
        return;
    }
    // Modes and owners set to what they are (a no-op if it were allowed),
    // each must fail with EROFS.
    let script = "for n in null zero full random urandom tty log; do \
                    [ -e /dev/$n ] || continue; \
                    m=$(stat -c %a /dev/$n); \
                    chmod $m /dev/$n 2>&1 | grep -q 'Read-only file system' || echo \"chmod /dev/$n: allowed\"; \
                    chown 0:0 /dev/$n 2>&1 | grep -q 'Read-only file system' || echo \"chown /dev/$n: allowed\"; \
                    touch -c /dev/$n 2>&1 | grep -q 'Read-only file system' || echo \"utimes /dev/$n: allowed\"; \
                  done; echo 0 > /dev/null && echo writes-ok";
    for template in ["1", "0"] {
        let (_b, addr) = Berth::start_tcp_env(
            "devnodes",
            &sh_service(script, &[], &[], ""),
            &[("BERTH_MOUNT_TEMPLATE", Some(template))],
        );
        assert_eq!(
            request(&addr),
            "writes-ok\n",
            "BERTH_MOUNT_TEMPLATE={template}: root inside changed a host device node's inode"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata("/dev/null").expect("/dev/null");
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o666,
        "the host's /dev/null"
    );
}
