//! The binary as systemd runs it as a generator: through a link named
//! `berth-generator`, with the three output directories as arguments and
//! the configuration directory from `BERTH_CONFIG_DIR`.

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("etc/services")).expect("mkdir services");
        for out in ["normal", "early", "late"] {
            fs::create_dir(dir.path().join(out)).expect("mkdir out");
        }
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_berth"),
            dir.path().join("berth-generator"),
        )
        .expect("link berth-generator");
        Setup { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn service(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(&format!("etc/services/{name}.toml"));
        fs::write(&path, text).expect("write service");
        path
    }

    fn run(&self) -> Output {
        self.run_in(&["normal", "early", "late"])
    }

    fn run_in(&self, outs: &[&str]) -> Output {
        Command::new(self.path("berth-generator"))
            .args(outs.iter().map(|o| self.path(o)))
            .env("BERTH_CONFIG_DIR", self.path("etc"))
            // The messages on stderr, not in the host's kernel log.
            .env("SYSTEMD_LOG_TARGET", "console")
            .output()
            .expect("run berth-generator")
    }

    /// The files below an output directory, relative, sorted.
    fn listing(&self, out: &str) -> Vec<String> {
        let mut found = Vec::new();
        walk(&self.path(out), &self.path(out), &mut found);
        found.sort();
        found
    }
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() && !path.is_symlink() {
            walk(root, &path, found);
        } else {
            found.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const WEB: &str = "mode = \"listen\"\nexec = [\"/usr/sbin/lighttpd\", \"-D\"]\nlisten = [\"127.0.0.1:8080\", \"[::1]:8080\"]\n";
const SSH: &str = "mode = \"inetd\"\nexec = [\"/usr/sbin/dropbear\", \"-i\"]\nlisten = [\"0.0.0.0:2222\"]\nip_allow = [\"127.0.0.2\"]\nip_deny = [\"any\"]\n";

#[test]
fn good_files_produce_units_and_wants_links() {
    let s = Setup::new();
    let web = s.service("web", WEB);
    let ssh = s.service("ssh", SSH);
    // No listen: a hand-written socket unit serves it, nothing generated.
    s.service(
        "plain",
        "mode = \"inetd\"\nexec = [\"/usr/sbin/dropbear\", \"-i\"]\n",
    );
    let out = s.run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert_eq!(
        s.listing("normal"),
        [
            "berth-ssh.socket",
            "berth-web.socket",
            "sockets.target.wants/berth-ssh.socket",
            "sockets.target.wants/berth-web.socket",
        ]
    );
    assert!(s.listing("early").is_empty());
    assert!(s.listing("late").is_empty());
    for name in ["ssh", "web"] {
        let link = s.path(&format!("normal/sockets.target.wants/berth-{name}.socket"));
        let unit = s.path(&format!("normal/berth-{name}.socket"));
        assert_eq!(fs::read_link(&link).unwrap(), unit);
    }
    let web_unit = fs::read_to_string(s.path("normal/berth-web.socket")).unwrap();
    for line in [
        format!("SourcePath={}", web.display()),
        "ListenStream=127.0.0.1:8080".to_string(),
        "ListenStream=[::1]:8080".to_string(),
        "FileDescriptorName=web".to_string(),
        "Service=berth.service".to_string(),
    ] {
        assert!(
            web_unit.lines().any(|l| l == line),
            "{line} in:\n{web_unit}"
        );
    }
    let ssh_unit = fs::read_to_string(s.path("normal/berth-ssh.socket")).unwrap();
    for line in [
        format!("SourcePath={}", ssh.display()),
        "ListenStream=0.0.0.0:2222".to_string(),
        "FileDescriptorName=ssh".to_string(),
        "Accept=no".to_string(),
        "IPAddressAllow=127.0.0.2".to_string(),
        "IPAddressDeny=any".to_string(),
    ] {
        assert!(
            ssh_unit.lines().any(|l| l == line),
            "{line} in:\n{ssh_unit}"
        );
    }

    // berth.toml's lists apply to the services with listen.
    fs::write(s.path("etc/berth.toml"), "ip_deny = [\"any\"]\n").unwrap();
    let out = s.run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let web_unit = fs::read_to_string(s.path("normal/berth-web.socket")).unwrap();
    assert!(web_unit.contains("\nIPAddressDeny=any\n"), "{web_unit}");
}

#[test]
fn a_broken_file_is_skipped_with_a_message_and_exit_0() {
    let s = Setup::new();
    s.service("web", WEB);
    let bad = s.service(
        "bad",
        "mode = \"inetd\"\nexec = [\"/bin/x\"]\nlisten = [\"127.0.0.1:99999\"]\n",
    );
    let out = s.run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("berth-generator: {}:3:11: listen:", bad.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "berth-generator: {}: skipped, no socket unit generated",
            bad.display()
        )),
        "{err}"
    );
    assert_eq!(
        s.listing("normal"),
        ["berth-web.socket", "sockets.target.wants/berth-web.socket"]
    );
}

#[test]
fn a_broken_berth_toml_generates_nothing() {
    let s = Setup::new();
    s.service("ssh", SSH);
    fs::write(s.path("etc/berth.toml"), "ip_deny = [\"nothing\"]\n").unwrap();
    let out = s.run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("berth.toml:1:12: ip_deny:"), "{err}");
    assert!(
        err.contains("no socket unit generated for any service"),
        "{err}"
    );
    assert!(s.listing("normal").is_empty());
}

#[test]
fn no_configuration_is_no_error() {
    let s = Setup::new();
    fs::remove_dir(s.path("etc/services")).unwrap();
    let out = s.run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert!(s.listing("normal").is_empty());
}

#[test]
fn an_unwritable_output_dir_is_an_error() {
    let s = Setup::new();
    s.service("web", WEB);
    let out = s.run_in(&["missing", "early", "late"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("berth-generator: writing "), "{err}");
    assert!(err.contains("missing/berth-web.socket"), "{err}");
}

#[test]
fn the_binary_under_its_own_name_is_not_a_generator() {
    let s = Setup::new();
    s.service("web", WEB);
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg(s.path("normal"))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(s.listing("normal").is_empty());
}

#[test]
fn host_facts_are_not_looked_up_at_boot() {
    // At boot, NSS services and other file systems may not be up yet: a user
    // only LDAP knows, a bind source on /srv are berth serve's to check.
    let s = Setup::new();
    s.service(
        "late",
        "mode = \"inetd\"\nexec = [\"/bin/x\"]\nuser = \"no-such-user-berth\"\ngroup = \"no-such-group-berth\"\nlisten = [\"127.0.0.1:7007\"]\n[sandbox]\nread_write = [\"/no/such/dir-berth:/data\"]\netc = [\"no-such-entry-berth\"]\n",
    );
    let out = s.run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert_eq!(
        s.listing("normal"),
        [
            "berth-late.socket",
            "sockets.target.wants/berth-late.socket"
        ]
    );
}
