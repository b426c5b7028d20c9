//! The shipped dropbear example (`config/services/ssh.toml`: root inside a
//! user namespace of its own, the host key as a credential, the idmapped
//! `authorized_keys`) served by `berth run` on the host and logged into by
//! a real ssh client: the production path of `private_users` on the host's
//! own file system (testbed 1 shows the same under systemd, with its keys on
//! a tmpfs: tests/system/run.sh, blocks a and v).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::Berth;

/// berth's default `private_users_range`.
const DEFAULT_FIRST: u64 = 0x7000_0000;
const DEFAULT_LAST: u64 = 0x7fff_ffff;

/// The real peers this test needs (tests/ci.sh installs them): missing
/// outside CI skips with the reason, in CI it fails.
fn have_tools() -> bool {
    let missing: Vec<&str> = [
        "/usr/sbin/dropbear",
        "/usr/bin/dropbearkey",
        "/usr/bin/ssh",
        "/usr/bin/ssh-keygen",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("missing in CI: {missing:?} (tests/ci.sh installs dropbear-bin and openssh-client)");
    }
    eprintln!("SKIPPED: missing {missing:?} (apt install dropbear-bin openssh-client)");
    false
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shipped example with the two host paths an administrator fills in
/// moved into `dir`.
fn example(dir: &Path) -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/services/ssh.toml"
    ))
    .expect("config/services/ssh.toml");
    for (what, path) in [
        ("private_users", "private_users = true"),
        (
            "the authorized keys",
            "/etc/berth/ssh/authorized_keys:/root/.ssh/authorized_keys",
        ),
        (
            "the host key credential",
            "host_key:/etc/dropbear/dropbear_ed25519_host_key",
        ),
        ("dropbear reading it", "/run/credentials/ssh/host_key"),
    ] {
        assert!(
            shipped.contains(path),
            "ssh.toml no longer has {what} ({path})"
        );
    }
    shipped
        .replace(
            "/etc/berth/ssh/authorized_keys",
            &dir.join("authorized_keys").display().to_string(),
        )
        .replace(
            "/etc/dropbear/dropbear_ed25519_host_key",
            &dir.join("host_key").display().to_string(),
        )
}

#[test]
fn the_shipped_ssh_example_logs_in_with_private_users() {
    if !common::require_root() || !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    run(Command::new("dropbearkey")
        .args(["-t", "ed25519", "-f"])
        .arg(d.join("host_key")));
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("id")));
    // As an administrator writes it: root's, 0644 (the host key stays 0600).
    std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).expect("authorized_keys");
    std::fs::set_permissions(
        d.join("authorized_keys"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");

    let (_b, addr) = Berth::start_tcp("ssh", &example(d));
    let port = addr.rsplit(':').next().expect("port").to_owned();
    let ssh = |extra: &[&str], cmd: &str| -> String {
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null", "-i"])
            .arg(d.join("id"))
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=10",
                "-p",
                &port,
            ])
            .args(extra)
            .arg("root@127.0.0.1")
            .arg(cmd)
            .stdin(std::process::Stdio::null());
        run(&mut c).replace('\r', "")
    };

    let out = ssh(
        &[],
        "id -u; head -n1 /proc/self/uid_map; stat -c %u:%g /root /root/.ssh /root/.ssh/authorized_keys; \
         stat -c %u:%a /run/credentials/ssh/host_key; \
         echo key >> /root/.ssh/authorized_keys 2>/dev/null && echo KEYS-WRITABLE || echo keys-read-only",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    assert_eq!(lines[0], "0", "root inside: {out}");
    let map: Vec<u64> = lines[1]
        .split_whitespace()
        .map(|x| x.parse().expect("uid_map number"))
        .collect();
    assert_eq!(map.len(), 3, "{out}");
    assert_eq!((map[0], map[2]), (0, 65536), "one block: {out}");
    assert!(
        map[1].is_multiple_of(65536) && map[1] >= DEFAULT_FIRST && map[1] + 65535 <= DEFAULT_LAST,
        "root inside is uid {} on the host, not a block of the default range: {out}",
        map[1]
    );
    // dropbear's own check: home, ~/.ssh and the key file owned by root.
    assert_eq!(&lines[2..5], ["0:0", "0:0", "0:0"], "{out}");
    assert_eq!(lines[5], "0:400", "the host key credential: {out}");
    assert_eq!(lines[6], "keys-read-only", "{out}");

    // A session with a pty: dropbear chowns it to root, group tty (CAP_CHOWN
    // inside the user namespace).
    let out = ssh(&["-tt"], "tty; stat -c %u:%g $(tty)");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("/dev/pts/")),
        "{out}"
    );
    assert_eq!(lines.get(1).copied(), Some("0:5"), "{out}");
}
