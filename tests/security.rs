//! `berth security` and `berth check`'s warnings: the real binary against
//! configuration directories written to a temporary directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

const LOCKED: &str = "mode = \"inetd\"\nexec = [\"/bin/cat\"]\n";

const EXPOSED: &str = "mode = \"listen\"\nexec = [\"/bin/cat\"]\nuser = \"root\"\n\
[sandbox]\nnetwork = \"host\"\nseccomp = \"off\"\n\
capabilities = [\"CAP_SYS_ADMIN\", \"CAP_NET_RAW\"]\n\
read_only = [\"/proc:/hostproc\", \"/run:/hostrun\"]\n\
read_write = [\"/:/host\"]\netc = [\"passwd\", \"shadow\"]\n";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn conf(services: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("services")).expect("mkdir services");
    for (name, text) in services {
        fs::write(dir.path().join("services").join(name), text).expect("write service");
    }
    dir
}

fn berth(dir: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run berth");
    Out {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The score on the "→ Overall exposure level for NAME: X.Y LEVEL" line.
fn overall(out: &Out, name: &str) -> (f64, String) {
    let prefix = format!("→ Overall exposure level for {name}: ");
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no overall line in:\n{}", out.stdout));
    let (score, level) = line.split_once(' ').expect("score and level");
    (score.parse().expect("a number"), level.to_string())
}

fn service_file(dir: &TempDir, name: &str) -> PathBuf {
    dir.path().join("services").join(format!("{name}.toml"))
}

#[test]
fn locked_down_service_scores_zero_and_every_row_is_ticked() {
    let dir = conf(&[("locked.toml", LOCKED)]);
    let out = berth(dir.path(), &["security", "locked"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(overall(&out, "locked"), (0.0, "SAFE".into()));
    assert!(
        out.stdout.contains("✓ seccomp = \"default\""),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains('✗'), "{}", out.stdout);
}

#[test]
fn exposed_service_scores_high_and_names_every_setting() {
    let dir = conf(&[("exposed.toml", EXPOSED)]);
    let out = berth(dir.path(), &["security", "exposed"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (score, level) = overall(&out, "exposed");
    assert!(score >= 9.0, "{}", out.stdout);
    assert_eq!(level, "UNSAFE");
    for setting in [
        "✗ user = \"root\"",
        "✗ network = \"host\"",
        "✗ seccomp = \"off\"",
        "✗ capabilities CAP_SYS_ADMIN",
        "✗ capabilities CAP_NET_RAW",
        "✗ read_only /proc:/hostproc",
        "✗ read_only /run:/hostrun",
        "✗ read_write /:/host",
        "✗ etc shadow",
    ] {
        assert!(
            out.stdout.lines().any(|l| l.starts_with(setting)),
            "no row {setting:?} in:\n{}",
            out.stdout
        );
    }
}

#[test]
fn all_services_one_summary_line_each_and_json() {
    let dir = conf(&[("locked.toml", LOCKED), ("exposed.toml", EXPOSED)]);
    let out = berth(dir.path(), &["security"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[1].starts_with("exposed") && lines[1].contains("UNSAFE"));
    assert!(lines[2].starts_with("locked") && lines[2].contains("SAFE"));

    let out = berth(dir.path(), &["security", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let services = v["services"].as_array().expect("services");
    assert_eq!(services.len(), 2);
    assert_eq!(services[0]["service"], "exposed");
    assert!(services[0]["exposure"].as_f64().expect("exposure") >= 9.0);
    assert_eq!(services[1]["exposure"], 0.0);
    assert_eq!(services[1]["level"], "SAFE");
}

#[test]
fn unknown_name_exits_1_and_config_errors_exit_2() {
    let dir = conf(&[("locked.toml", LOCKED)]);
    let out = berth(dir.path(), &["security", "nope"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("no service named \"nope\""),
        "{}",
        out.stderr
    );

    let dir = conf(&[("locked.toml", LOCKED), ("bad.toml", "mode = 3\n")]);
    let out = berth(dir.path(), &["security", "locked"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("bad.toml:1:"), "{}", out.stderr);
}

#[test]
fn check_warns_on_stderr_and_still_exits_0() {
    let dir = conf(&[("locked.toml", LOCKED), ("exposed.toml", EXPOSED)]);
    let out = berth(dir.path(), &["check"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("2 files valid"), "{}", out.stdout);
    let exposed = format!("{}: warning: ", service_file(&dir, "exposed").display());
    for setting in [
        "capabilities CAP_SYS_ADMIN:",
        "seccomp = \"off\":",
        "network = \"host\":",
        "user = \"root\":",
        "read_only /proc:/hostproc:",
        "read_write /:/host:",
        "etc shadow:",
    ] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(&exposed) && l.contains(setting)),
            "no warning {setting:?} in:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.lines().all(|l| l.starts_with(&exposed)),
        "a warning for the locked-down service:\n{}",
        out.stderr
    );

    // Checking the file alone warns the same way; the locked one is silent.
    let out = berth(
        dir.path(),
        &["check", service_file(&dir, "locked").to_str().unwrap()],
    );
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));

    // A warning never turns an error into success or the reverse.
    let bad = conf(&[
        ("exposed.toml", EXPOSED),
        ("bad.toml", "mode = \"inetd\"\n"),
    ]);
    let out = berth(bad.path(), &["check"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("missing key `exec`"), "{}", out.stderr);
    assert!(out.stderr.contains(": warning: "), "{}", out.stderr);
}

#[test]
fn sys_as_a_destination_is_an_error() {
    let dir = conf(&[(
        "app.toml",
        "mode = \"inetd\"\nexec = [\"/bin/cat\"]\n[sandbox]\nread_only = [\"/usr/share:/sys/x\"]\n",
    )]);
    let out = berth(dir.path(), &["check"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let file = service_file(&dir, "app");
    assert!(
        out.stderr.starts_with(&format!(
            "{}:4:14: read_only: destination /sys/x is reserved",
            file.display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn help_lists_security_with_an_example() {
    let dir = conf(&[]);
    let out = berth(dir.path(), &["--help"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("security")),
        "{}",
        out.stdout
    );
    let out = berth(dir.path(), &["security", "--help"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("Example"), "{}", out.stdout);
}
