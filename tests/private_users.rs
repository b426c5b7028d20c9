//! `private_users = true`: each container in its own user namespace, uid
//! and gid 0-65535 inside mapped to a 65536-wide block of host ids that no
//! other live container has; configured binds idmapped so files keep their
//! owners; `:noidmap` binds (and everything berth binds itself) keep the
//! host's owners, which root inside has no power over.
//!
//! Each test runs `/bin/sh -c` scripts as root in inetd containers; what a
//! container prints is the answer to its connection.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::Berth;

const T: Duration = Duration::from_secs(15);
/// berth's default `private_users_range` (SPEC: above nspawn's range).
const DEFAULT_FIRST: u64 = 0x7000_0000;
const DEFAULT_LAST: u64 = 0x7fff_ffff;
const NOBODY: u32 = 65534;

fn service(script: &str, top: &str, sandbox: &str) -> String {
    format!(
        "mode = \"inetd\"\nuser = \"root\"\nexec = [\"/bin/sh\", \"-c\", {script:?}]\n{top}\n\
         [sandbox]\nprivate_users = true\n{sandbox}\n"
    )
}

fn request(addr: &str) -> String {
    common::tcp_request(addr, "")
}

/// The host base of a `uid_map` line `0 BASE 65536`, checked to be a whole
/// block of the default range.
fn block(line: &str) -> u64 {
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|x| {
            x.parse()
                .unwrap_or_else(|_| panic!("uid_map line {line:?}"))
        })
        .collect();
    assert_eq!(f.len(), 3, "{line:?}");
    assert_eq!((f[0], f[2]), (0, 65536), "{line:?}");
    assert!(f[1].is_multiple_of(65536), "{line:?}");
    assert!(
        f[1] >= DEFAULT_FIRST && f[1] + 65535 <= DEFAULT_LAST,
        "{line:?} outside the default range"
    );
    f[1]
}

fn file(dir: &Path, name: &str, text: &str, mode: u32) {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn root_inside_is_uid_0_of_a_block_of_the_range() {
    if !common::require_root() {
        return;
    }
    let script = "id -u; id -g; head -1 /proc/self/uid_map; head -1 /proc/self/gid_map; \
                  grep -c . /proc/self/uid_map";
    let (_b, addr) = Berth::start_tcp("pu-id", &service(script, "", ""));
    let out = request(&addr);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(&lines[..2], ["0", "0"], "{out}");
    let uid_base = block(lines[2]);
    assert_eq!(
        block(lines[3]),
        uid_base,
        "gid block differs from uid block: {out}"
    );
    assert_eq!(lines[4], "1", "one mapping line only: {out}");
}

#[test]
fn idmapped_binds_keep_owners_and_store_what_is_created_with_its_inside_owner() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    file(dir.path(), "own", "secret", 0o600);
    std::os::unix::fs::chown(dir.path().join("own"), Some(0), Some(0)).expect("chown");
    file(dir.path(), "theirs", "x", 0o644);
    std::os::unix::fs::chown(dir.path().join("theirs"), Some(4242), Some(4243)).expect("chown");
    let src = dir.path().display();
    let script = "stat -c '%u %g' /data/own /data/theirs; cat /data/own; echo; \
                  echo made > /data/by-root; \
                  setpriv --reuid=4242 --regid=4243 --clear-groups sh -c 'echo t >> /data/theirs' \
                    && echo their-write-ok; \
                  setpriv --reuid=1000 --regid=1000 --clear-groups touch /data/by-1000 \
                    2>/dev/null && echo 1000-CREATED || echo 1000-denied";
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (_b, addr) = Berth::start_tcp(
        "pu-idmap",
        &service(
            script,
            "",
            &format!(
                "read_write = [\"{src}:/data\"]\ncapabilities = [\"CAP_SETUID\", \"CAP_SETGID\"]"
            ),
        ),
    );
    assert_eq!(
        request(&addr),
        "0 0\n4242 4243\nsecret\ntheir-write-ok\n1000-denied\n",
        "owners are the host's, unshifted, inside an idmapped bind"
    );
    // What root inside created is owned by root on the host: an idmapped
    // bind stores the inside owner unshifted (docs/security.md).
    let made = std::fs::metadata(dir.path().join("by-root")).expect("by-root on the host");
    assert_eq!((made.uid(), made.gid()), (0, 0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("theirs")).expect("theirs"),
        "xt\n"
    );
}

#[test]
fn without_idmap_root_inside_reaches_nothing_of_the_host() {
    if !common::require_root() {
        return;
    }
    // A host directory root owns, with a root-only file and a world-readable
    // one, and a sticky world-writable one to see who creates files.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    file(dir.path(), "own", "secret", 0o600);
    file(dir.path(), "pub", "public", 0o644);
    let open = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let script = "stat -c '%u %g' /data/own; \
                  cat /data/own 2>/dev/null && echo READ || echo read-denied; \
                  cat /data/pub; echo; \
                  echo x >> /data/pub 2>/dev/null && echo APPENDED || echo write-denied; \
                  chmod 666 /data/pub 2>/dev/null && echo CHMOD || echo chmod-denied; \
                  chown 0 /data/pub 2>/dev/null && echo CHOWN || echo chown-denied; \
                  rm -f /data/pub 2>/dev/null; test -e /data/pub && echo rm-denied; \
                  touch /data/new 2>/dev/null && echo CREATED || echo create-denied; \
                  echo mine > /open/made && stat -c '%u %g' /open/made; \
                  mount -t tmpfs none /tmp 2>/dev/null && echo MOUNTED || echo mount-denied; \
                  hostname evil 2>/dev/null && echo HOSTNAME || echo hostname-denied";
    let (_b, addr) = Berth::start_tcp(
        "pu-noidmap",
        &service(
            script,
            "",
            &format!(
                "read_write = [\"{}:/data:noidmap\", \"{}:/open:noidmap\"]\n\
                 capabilities = [\"CAP_DAC_OVERRIDE\", \"CAP_FOWNER\", \"CAP_CHOWN\", \
                 \"CAP_SYS_ADMIN\"]\nseccomp = \"off\"",
                dir.path().display(),
                open.path().display()
            ),
        ),
    );
    let out = request(&addr);
    assert_eq!(
        out,
        format!(
            "{NOBODY} {NOBODY}\nread-denied\npublic\nwrite-denied\nchmod-denied\nchown-denied\n\
             rm-denied\ncreate-denied\n0 0\nmount-denied\nhostname-denied\n"
        ),
        "root inside with CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_CHOWN, CAP_SYS_ADMIN and no \
         seccomp must not reach host-owned files on a bind without idmap"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pub")).expect("pub"),
        "public"
    );
    // On a bind without idmap, what root inside creates is owned on the host
    // by the container's block: uid 0 inside is BASE outside.
    let made = std::fs::metadata(open.path().join("made")).expect("made on the host");
    assert!(
        u64::from(made.uid()) >= DEFAULT_FIRST && made.uid().is_multiple_of(65536),
        "created by host uid {}",
        made.uid()
    );
    assert_eq!(made.uid(), made.gid());
}

/// A connection whose container prints its `uid_map` and then waits.
struct Held {
    stream: TcpStream,
    base: u64,
}

fn hold(addr: &str) -> Held {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(T)).expect("timeout");
    let mut line = String::new();
    BufReader::new(stream.try_clone().expect("clone"))
        .read_line(&mut line)
        .expect("uid_map line");
    Held {
        base: block(&line),
        stream,
    }
}

#[test]
fn concurrent_containers_never_share_a_block_warm_ones_included() {
    if !common::require_root() {
        return;
    }
    let script = "head -1 /proc/self/uid_map; read x; echo bye";
    // warm = 1: the sandboxes built ahead hold blocks of their own too.
    let (b, addr) = Berth::start_tcp("pu-many", &service(script, "warm = 1", ""));
    let held: Vec<Held> = (0..4).map(|_| hold(&addr)).collect();
    let mut bases: Vec<u64> = held.iter().map(|h| h.base).collect();
    bases.sort_unstable();
    bases.dedup();
    assert_eq!(bases.len(), 4, "blocks shared: {bases:?}");
    for mut h in held {
        h.stream.write_all(b"\n").expect("release");
        let mut rest = String::new();
        BufReader::new(h.stream)
            .read_line(&mut rest)
            .expect("answer");
        assert_eq!(rest, "bye\n");
    }
    b.log.wait_count("container stopped", 4, T);
}

#[test]
fn a_file_system_without_idmapped_mounts_is_refused_not_bound_weaker() {
    if !common::require_root() {
        return;
    }
    // sysfs does not support idmapped mounts.
    let (b, addr) = Berth::start_tcp(
        "pu-refuse",
        &service("echo RAN", "", "read_only = [\"/sys/kernel:/k\"]"),
    );
    let out = request(&addr);
    assert!(!out.contains("RAN"), "ran without the idmap: {out}");
    let line = b.log.wait_for("container failed to start", T);
    assert!(
        line.contains("/sys/kernel cannot be idmapped") && line.contains("private_users"),
        "{line}"
    );
    // Bound as the host's files on purpose, it runs.
    let (_b, addr) = Berth::start_tcp(
        "pu-refuse2",
        &service("echo RAN", "", "read_only = [\"/sys/kernel:/k:noidmap\"]"),
    );
    assert_eq!(request(&addr), "RAN\n");
}

#[test]
fn the_state_directory_is_idmapped_so_the_next_block_still_owns_it() {
    if !common::require_root() {
        return;
    }
    let name = format!("pustate{}", std::process::id());
    let host = Path::new("/var/lib/berth").join(&name);
    let _ = std::fs::remove_dir_all(&host);
    let script = "head -1 /proc/self/uid_map; f=\"$STATE_DIRECTORY/v\"; \
                  if [ -e \"$f\" ]; then cat \"$f\"; echo more >> \"$f\" && echo appended; \
                  else echo one > \"$f\" && chmod 600 \"$f\" && echo wrote; fi; read x";
    let (_b, addr) = Berth::start_tcp(&name, &service(script, "", "state_directory = true"));
    let read_to = |s: &TcpStream, n: usize| -> Vec<String> {
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        (0..n)
            .map(|_| {
                let mut l = String::new();
                r.read_line(&mut l).expect("line");
                l.trim_end().to_owned()
            })
            .collect()
    };
    // The first stays open, so the second has another block.
    let first = TcpStream::connect(&addr).expect("connect");
    first.set_read_timeout(Some(T)).expect("timeout");
    let a = read_to(&first, 2);
    assert_eq!(a[1], "wrote", "{a:?}");
    let second = TcpStream::connect(&addr).expect("connect");
    second.set_read_timeout(Some(T)).expect("timeout");
    let b = read_to(&second, 3);
    assert_ne!(
        block(&a[0]),
        block(&b[0]),
        "same block for two live containers"
    );
    assert_eq!(&b[1..], ["one", "appended"], "{b:?}");
    // Stored with the inside owner (root), unshifted, in a 0700 directory.
    let meta = std::fs::metadata(host.join("v")).expect("v on the host");
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (0, 0, 0o600));
    let dir = std::fs::metadata(&host).expect("state dir");
    assert_eq!((dir.uid(), dir.mode() & 0o777), (0, 0o700));
    drop((first, second));
    let _ = std::fs::remove_dir_all(&host);
}

/// The probe in listen mode, as root with private users.
fn listen_probe(extra: &str) -> String {
    format!(
        "mode = \"listen\"\nuser = \"root\"\nexec = [\"/probe\"]\n{extra}\n[sandbox]\n\
         private_users = true\nread_only = [\"{}\"]\n",
        common::probe_bind()
    )
}

#[test]
fn listen_mode_gets_its_sockets_idles_out_and_wakes_in_a_new_namespace() {
    if !common::require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp(
        "pu-listen",
        &listen_probe("warm = 1\nidle_timeout = \"400ms\""),
    );
    let report = |s: &str| common::json(s);
    let host_user = common::host_ns("user");
    let first = report(&common::tcp_request(&addr, "report"));
    assert_eq!(first["uid"], 0, "{first}");
    assert_eq!(first["listen_fds"], 1, "{first}");
    assert_eq!(first["env"]["LISTEN_FDNAMES"], "pu-listen", "{first}");
    let user = first["namespaces"]["user"]
        .as_str()
        .expect("user ns")
        .to_owned();
    assert_ne!(
        user, host_user,
        "the application is in the host's user namespace"
    );
    // The default seccomp filter is in force inside the namespace too.
    assert_eq!(first["status"]["Seccomp"], "2", "{first}");
    // Its network namespace, made by the outer stage, has its own TCP
    // table too (net::nursery), where the kernel has them.
    if std::path::Path::new("/proc/sys/net/ipv4/tcp_child_ehash_entries").exists() {
        assert_eq!(first["tcp_ehash_entries"], 512, "{first}");
    }
    b.log.wait_for("idle_timeout reached", T);
    let woken = report(&common::tcp_request(&addr, "report"));
    assert_eq!(woken["uid"], 0);
    let again = woken["namespaces"]["user"].as_str().expect("user ns");
    assert_ne!(again, user, "a new container, a new user namespace");
    assert_ne!(again, host_user);
}

/// Like [`hold`] for a block outside the default range: `0 BASE 65536`.
fn held_in(addr: &str, base: u64) -> Held {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(T)).expect("timeout");
    let mut line = String::new();
    BufReader::new(stream.try_clone().expect("clone"))
        .read_line(&mut line)
        .expect("uid_map line");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f, ["0", &base.to_string(), "65536"], "{line:?}");
    Held { stream, base }
}

#[test]
fn a_full_range_refuses_the_next_container_until_a_block_is_freed() {
    if !common::require_root() {
        return;
    }
    let script = "head -1 /proc/self/uid_map; read x; echo bye";
    let (dir, file) = common::service_dir("pu-full", &service(script, "", ""));
    // One block only, outside the default range other tests use.
    std::fs::write(
        dir.path().join("berth.toml"),
        "private_users_range = \"2147483648-2147549183\"\n",
    )
    .expect("berth.toml");
    let b = Berth::start_file(dir, file, &["127.0.0.1:0".to_string()]);
    let addr = b.addr();
    let mut first = held_in(&addr, 2_147_483_648);
    // The second container has no block: refused, never given a shared one.
    assert_eq!(request(&addr), "", "a second container ran in a full range");
    let failed = b.log.wait_for("container failed to start", T);
    assert!(failed.contains("all 1 blocks"), "{failed}");
    first.stream.write_all(b"\n").expect("release");
    b.log.wait_for("container stopped", T);
    // Freed with the container: the next one gets it.
    held_in(&addr, 2_147_483_648);
}

#[test]
fn a_service_user_inside_the_block_works_one_outside_is_refused() {
    if !common::require_root() {
        return;
    }
    let script = "id -u; stat -c '%u %g' \"$RUNTIME_DIRECTORY\"; \
                  echo x > \"$RUNTIME_DIRECTORY/f\" && echo wrote";
    let toml = service(script, "", "").replace("user = \"root\"", "user = \"nobody\"");
    let (_b, addr) = Berth::start_tcp("pu-nobody", &toml);
    assert_eq!(
        request(&addr),
        format!("{NOBODY}\n{NOBODY} {NOBODY}\nwrote\n")
    );
    let toml = service("echo RAN", "", "").replace("user = \"root\"", "user = 100000");
    let (b, addr) = Berth::start_tcp("pu-far", &toml);
    assert_eq!(request(&addr), "");
    let line = b.log.wait_for("container failed to start", T);
    assert!(
        line.contains("uid 100000") && line.contains("0-65535"),
        "{line}"
    );
}

#[test]
fn cap_net_bind_service_still_binds_low_ports_in_a_private_network() {
    if !common::require_root() {
        return;
    }
    let script = "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 80)); \
                  print(\"bound\")' 2>/dev/null || echo bind-denied; \
                  cat /proc/sys/net/ipv4/ip_unprivileged_port_start";
    let kept = service(script, "", "capabilities = [\"CAP_NET_BIND_SERVICE\"]");
    let (_b, addr) = Berth::start_tcp("pu-bind", &kept);
    assert_eq!(request(&addr), "bound\n0\n");
    // Without the capability, root inside binds no port below 1024.
    let (_b, addr) = Berth::start_tcp("pu-nobind", &service(script, "", ""));
    assert_eq!(request(&addr), "bind-denied\n1024\n");
}

#[test]
fn two_berth_processes_never_share_a_block() {
    if !common::require_root() {
        return;
    }
    // As `berth inetd` per connection next to `berth serve`: separate
    // processes, coordinated by the block locks in /run/berth/userns.
    let script = "head -1 /proc/self/uid_map; read x; echo bye";
    let (_a, addr_a) = Berth::start_tcp("pu-proc-a", &service(script, "", ""));
    let (_b, addr_b) = Berth::start_tcp("pu-proc-b", &service(script, "", ""));
    let held = [hold(&addr_a), hold(&addr_b), hold(&addr_a), hold(&addr_b)];
    let mut bases: Vec<u64> = held.iter().map(|h| h.base).collect();
    bases.sort_unstable();
    bases.dedup();
    assert_eq!(bases.len(), 4, "blocks shared across processes: {bases:?}");
}

#[test]
fn berth_security_counts_root_with_private_users_as_contained() {
    // No root needed: `berth security` reads the configuration only.
    let run = |private: bool| -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("services")).expect("mkdir");
        let text = format!(
            "mode = \"inetd\"\nexec = [\"/bin/cat\"]\nuser = \"root\"\n[sandbox]\n\
             private_users = {private}\n"
        );
        std::fs::write(dir.path().join("services/r.toml"), text).expect("write");
        let out = std::process::Command::new(common::BERTH)
            .arg("--config-dir")
            .arg(dir.path())
            .args(["security", "r"])
            .output()
            .expect("berth security");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let row = |out: &str| -> String {
        out.lines()
            .find(|l| l.contains("user = \"root\""))
            .unwrap_or_else(|| panic!("no user row in {out}"))
            .to_owned()
    };
    let host_root = run(false);
    assert!(row(&host_root).starts_with('✗'), "{host_root}");
    let contained = run(true);
    assert!(row(&contained).starts_with('✓'), "{contained}");
    assert!(
        contained.contains("Overall exposure level for r: 0.0 SAFE"),
        "{contained}"
    );
}

#[test]
fn root_inside_with_cap_sys_ptrace_has_no_hold_on_pid_1() {
    if !common::require_root() {
        return;
    }
    // PID 1 stays in the host's user namespace (euid 0 there): capabilities
    // of the container's namespace do not reach it.
    let script = "cat /proc/1/environ >/dev/null 2>&1 && echo ENVIRON || echo environ-denied; \
                  readlink /proc/1/exe >/dev/null 2>&1 && echo EXE || echo exe-denied; \
                  head -c1 /proc/1/mem >/dev/null 2>&1 && echo MEM || echo mem-denied; \
                  ls /proc/1/root/ >/dev/null 2>&1 && echo ROOT || echo root-denied";
    let (_b, addr) = Berth::start_tcp(
        "pu-pid1",
        &service(
            script,
            "",
            "capabilities = [\"CAP_SYS_PTRACE\", \"CAP_DAC_OVERRIDE\", \"CAP_DAC_READ_SEARCH\"]\n\
             seccomp = \"off\"",
        ),
    );
    assert_eq!(
        request(&addr),
        "environ-denied\nexe-denied\nmem-denied\nroot-denied\n"
    );
}

#[test]
fn the_container_skeleton_is_root_of_the_block_binds_keep_their_owners() {
    if !common::require_root() {
        return;
    }
    // A directory of the host, root's, bound without idmap below a mount
    // point berth makes (/deep/er): the skeleton walk must not reach into
    // it, in the container or on the host.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    let src = dir.path().display();
    let script = "stat -c '%n %u:%g' / /tmp /run /etc /deep /deep/er /deep/er/sub /usr /run/pu-skel /dev; \
                  touch /run/made && echo run-writable";
    let (_b, addr) = Berth::start_tcp(
        "pu-skel",
        &service(
            script,
            "",
            &format!("read_only = [\"{src}:/deep/er:noidmap\"]"),
        ),
    );
    let out = request(&addr);
    assert_eq!(
        out,
        "/ 0:0\n/tmp 0:0\n/run 0:0\n/etc 0:0\n/deep 0:0\n/deep/er 65534:65534\n\
         /deep/er/sub 65534:65534\n/usr 65534:65534\n/run/pu-skel 0:0\n/dev 65534:65534\nrun-writable\n",
        "berth's own tmpfs skeleton is root's inside; binds and /dev keep the host's owners"
    );
    for p in [dir.path().to_path_buf(), dir.path().join("sub")] {
        let m = std::fs::metadata(&p).expect("stat");
        assert_eq!(
            (m.uid(), m.gid()),
            (0, 0),
            "{} changed on the host",
            p.display()
        );
    }
}
