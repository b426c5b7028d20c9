//! Issue 14.1: the read-only part of the container tree (the root tmpfs
//! with its mount points, /usr, the merged-/usr links, the /etc entries,
//! /dev with its nodes, read-only binds) is built once per definition by
//! the zygote and cloned into each container; everything writable stays
//! per container. Seen from inside two containers of one service, with
//! `/bin/sh` scripts run as root; `BERTH_MOUNT_TEMPLATE=0` forces the
//! step-by-step path (the one kernels without detached-tree cloning take).

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::Berth;

const T: Duration = Duration::from_secs(20);

/// What every container runs: `write` leaves a marker everywhere it can
/// and waits; `look` reports what it sees. Both report the devices of the
/// mounts and which writes failed.
const SCRIPT: &str = r#"read mode
for d in / /usr /etc /dev /tmp /run /dev/shm /ro; do echo "dev $d $(stat -c %d $d)"; done
for f in /x /usr/x /etc/x /dev/x /ro/x; do touch $f 2>/dev/null && echo "wrote $f"; done
# The same mode again: harmless on the host if it were allowed.
chmod 666 /dev/null 2>/dev/null && echo "wrote /dev/null mode"
if [ "$mode" = write ]; then
  for d in /tmp /run /dev/shm $STATE_DIRECTORY; do echo secret > $d/marker && echo "wrote $d/marker"; done
  echo written
  read wait
else
  for f in /tmp/marker /run/marker /dev/shm/marker; do [ -e $f ] && echo "saw $f"; done
  echo "state $(cat $STATE_DIRECTORY/marker 2>/dev/null)"
fi
echo "which $(cat /ro/which)"
echo end
"#;

fn service(ro: &Path) -> String {
    format!(
        "mode = \"inetd\"\nuser = \"root\"\nexec = [\"/bin/sh\", \"-c\", {SCRIPT:?}]\n\
         [sandbox]\nread_only = [\"{}:/ro\"]\nstate_directory = true\n",
        ro.display()
    )
}

/// Lines of one connection after sending `mode`.
struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str, mode: &str) -> Conn {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(T)).unwrap();
        writeln!(stream, "{mode}").unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Conn { stream, reader }
    }

    /// Lines up to and including `last`.
    fn until(&mut self, last: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "connection ended before {last:?}: {out:?}");
            let line = line.trim_end().to_owned();
            let done = line == last;
            out.push(line);
            if done {
                return out;
            }
        }
    }

    fn finish(mut self) -> Vec<String> {
        writeln!(self.stream).unwrap();
        let out = self.until("end");
        let mut rest = String::new();
        let _ = self.reader.read_to_string(&mut rest);
        out
    }
}

fn devs(lines: &[String]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("dev "))
        .filter_map(|l| l.split_once(' '))
        .map(|(p, d)| (p.to_owned(), d.to_owned()))
        .collect()
}

fn value<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} in {lines:?}"))
        .trim()
}

/// Whether this kernel can build a tree detached and clone it (6.15 and
/// later): what berth's zygote asks before it keeps templates.
fn kernel_clones_detached_trees() -> bool {
    use rustix::fs::{CWD, Mode, OFlags, mkdirat, openat};
    use rustix::mount::*;
    let tmpfs = || -> rustix::io::Result<_> {
        let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
        fsconfig_create(&fs)?;
        fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
    };
    let probe = || -> rustix::io::Result<()> {
        let (a, b) = (tmpfs()?, tmpfs()?);
        mkdirat(&a, "d", Mode::from_raw_mode(0o755))?;
        let d = openat(&a, "d", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
        let e = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
        move_mount(&b, "", &d, "", e)?;
        let flags = OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH
            | OpenTreeFlags::AT_RECURSIVE;
        open_tree(&a, "", flags).map(drop)
    };
    let _ = CWD;
    probe().is_ok()
}

/// `/var/lib/berth/NAME`, removed now and when dropped.
struct HostState(std::path::PathBuf);

impl HostState {
    fn new(name: &str) -> HostState {
        let s = HostState(Path::new("/var/lib/berth").join(name));
        s.remove();
        s
    }

    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Two containers at once: one writes everywhere it may and waits, the
/// other looks.
fn two_containers(prefix: &str, env: &[(&str, Option<&str>)]) -> (Vec<String>, Vec<String>) {
    let name = format!("{prefix}{}", std::process::id());
    let _state = HostState::new(&name);
    let ro = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("which"), "A\n").unwrap();
    let (_b, addr) = Berth::start_tcp_env(&name, &service(ro.path()), env);
    let mut writer = Conn::open(&addr, "write");
    let mut written = writer.until("written");
    let looked = Conn::open(&addr, "look").finish();
    written.extend(writer.finish());
    (written, looked)
}

fn assert_isolated(written: &[String], looked: &[String]) {
    for out in [written, looked] {
        // The read-only tree, and the host's device nodes (read-only
        // mounts), stay as they are.
        for f in [
            "/x",
            "/usr/x",
            "/etc/x",
            "/dev/x",
            "/ro/x",
            "/dev/null mode",
        ] {
            assert!(
                !out.contains(&format!("wrote {f}")),
                "{f} writable: {out:?}"
            );
        }
        assert_eq!(value(out, "which"), "A", "{out:?}");
    }
    for d in ["/tmp", "/run", "/dev/shm"] {
        assert!(
            written.contains(&format!("wrote {d}/marker")),
            "{d} not writable: {written:?}"
        );
    }
    assert!(
        written
            .iter()
            .any(|l| l.starts_with("wrote /var/lib/tpl") && l.ends_with("/marker")),
        "state directory not writable: {written:?}"
    );
    // Nothing one wrote reaches the other (the state directory is the
    // service's own, shared on purpose).
    assert!(
        !looked.iter().any(|l| l.starts_with("saw ")),
        "a container saw another's files: {looked:?}"
    );
    assert_eq!(value(looked, "state"), "secret", "{looked:?}");
    let (w, l) = (devs(written), devs(looked));
    for d in ["/tmp", "/run", "/dev/shm"] {
        assert_ne!(w[d], l[d], "{d} shared between containers: {w:?} {l:?}");
    }
}

#[test]
fn two_containers_share_only_the_read_only_tree() {
    if !common::require_root() {
        return;
    }
    let (written, looked) = two_containers("tpl", &[("BERTH_MOUNT_TEMPLATE", None)]);
    assert_isolated(&written, &looked);
    let (w, l) = (devs(&written), devs(&looked));
    if kernel_clones_detached_trees() {
        // One template: the same root tmpfs and /dev in both.
        assert_eq!(w["/"], l["/"], "{w:?} {l:?}");
        assert_eq!(w["/dev"], l["/dev"], "{w:?} {l:?}");
    } else {
        eprintln!("this kernel clones no detached tree: every container on the fallback path");
        assert_ne!(w["/"], l["/"], "{w:?} {l:?}");
    }
}

#[test]
fn the_fallback_path_builds_each_tree_alone() {
    if !common::require_root() {
        return;
    }
    let (written, looked) = two_containers("tplfb", &[("BERTH_MOUNT_TEMPLATE", Some("0"))]);
    assert_isolated(&written, &looked);
    let (w, l) = (devs(&written), devs(&looked));
    assert_ne!(w["/"], l["/"], "{w:?} {l:?}");
    assert_ne!(w["/dev"], l["/dev"], "{w:?} {l:?}");
}

/// The mount points, file system types and flags of a container's tree
/// (mount ids and devices differ from container to container).
fn layout(addr: &str) -> Vec<String> {
    let out = common::tcp_request(addr, "");
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let sep = f.iter().position(|x| *x == "-").unwrap();
            format!("{} {} {}", f[4], f[5], f[sep + 1])
        })
        .collect()
}

#[test]
fn template_and_fallback_build_the_same_tree() {
    if !common::require_root() {
        return;
    }
    let toml = "mode = \"inetd\"\nexec = [\"/bin/cat\", \"/proc/self/mountinfo\"]\n";
    let (_a, addr) = Berth::start_tcp_env("tpl-a", toml, &[("BERTH_MOUNT_TEMPLATE", None)]);
    let (_b, addr_b) = Berth::start_tcp_env("tpl-b", toml, &[("BERTH_MOUNT_TEMPLATE", Some("0"))]);
    let (mut with, mut without) = (layout(&addr), layout(&addr_b));
    // The same mounts with the same flags (in another order: the
    // template's come first).
    with.sort();
    without.sort();
    assert_eq!(with, without);
    assert!(
        with.iter().any(|l| l.starts_with("/usr ro,nosuid,nodev")),
        "{with:?}"
    );
}

fn reload(b: &Berth, toml: &str, nth: usize) {
    b.reload(toml, nth, T);
}

#[test]
fn the_next_container_sees_a_changed_bind_and_a_replaced_file() {
    if !common::require_root() {
        return;
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(a.path().join("which"), "A").unwrap();
    std::fs::write(b.path().join("which"), "B").unwrap();
    let files = tempfile::tempdir().unwrap();
    let f = files.path().join("f");
    std::fs::write(&f, "one").unwrap();
    let toml = |dir: &Path| {
        format!(
            "mode = \"inetd\"\nexec = [\"/bin/sh\", \"-c\", \"cat /ro/which /f\"]\n\
             [sandbox]\nread_only = [\"{}:/ro\", \"{}:/f\"]\n",
            dir.display(),
            f.display()
        )
    };
    let (berth, addr) = Berth::start_tcp("tpl-reload", &toml(a.path()));
    assert_eq!(common::tcp_request(&addr, ""), "Aone");
    assert_eq!(common::tcp_request(&addr, ""), "Aone");
    // A reload that changes a read-only bind: a new template.
    reload(&berth, &toml(b.path()), 1);
    assert_eq!(common::tcp_request(&addr, ""), "Bone");
    // The host replaces a bound file (rename over it, as editors and
    // resolvers do): the next container binds the new one.
    let new = files.path().join("f.new");
    std::fs::write(&new, "two").unwrap();
    std::fs::rename(&new, &f).unwrap();
    assert_eq!(common::tcp_request(&addr, ""), "Btwo");
}
