//! The command line: help, usage errors, exit codes.

use std::process::Command;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BERTH)
        .args(args)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .output()
        .expect("run berth");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_commands_that_exist() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for cmd in [
        "serve", "inetd", "run", "check", "list", "status", "stop", "logs",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(cmd)),
            "--help lacks {cmd}:\n{out}"
        );
    }
    assert!(
        !out.contains("sandbox-stage"),
        "the internal stage is hidden"
    );
}

#[test]
fn each_command_help_has_an_example() {
    for cmd in [
        "serve", "inetd", "run", "check", "list", "status", "stop", "logs",
    ] {
        let (code, out, _) = run(&[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd} --help");
        assert!(
            out.contains("Example"),
            "{cmd} --help has no example:\n{out}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["no-such-command"]).0, 2);
    assert_eq!(run(&["run"]).0, 2, "run without a service file");
    let dir = tempfile::tempdir().unwrap();
    let svc = dir.path().join("x.toml");
    std::fs::write(&svc, "mode = \"inetd\"\nexec = [\"/bin/true\"]\n").unwrap();
    let (code, _, err) = run(&[
        "run",
        svc.to_str().unwrap(),
        "--listen",
        "localhost:80",
        "--no-scope",
    ]);
    assert_eq!(code, 2, "bad --listen address: {err}");
    assert!(err.contains("expected 127.0.0.1:PORT"), "{err}");
}

#[test]
fn run_without_systemd_and_without_no_scope_is_refused() {
    if std::path::Path::new("/run/systemd/system").exists() {
        eprintln!("SKIPPED: this host runs systemd; the refusal is for hosts without it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let svc = dir.path().join("x.toml");
    std::fs::write(&svc, "mode = \"inetd\"\nexec = [\"/bin/true\"]\n").unwrap();
    let (code, _, err) = run(&["run", svc.to_str().unwrap(), "--listen", "127.0.0.1:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no reachable systemd") && err.contains("--no-scope"),
        "{err}"
    );
}

#[test]
fn run_with_no_address_anywhere_says_what_is_expected() {
    let dir = tempfile::tempdir().unwrap();
    let svc = dir.path().join("x.toml");
    std::fs::write(&svc, "mode = \"inetd\"\nexec = [\"/bin/true\"]\n").unwrap();
    let (code, _, err) = run(&["run", svc.to_str().unwrap(), "--no-scope"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no address to listen on") && err.contains("--listen ADDR"),
        "{err}"
    );
}

#[test]
fn serve_without_sockets_or_config_says_why() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("services")).unwrap();
    std::fs::write(
        dir.path().join("services/bad.toml"),
        "mode = \"sideways\"\nexec = [\"/bin/true\"]\n",
    )
    .unwrap();
    let (code, _, err) = run(&["--config-dir", dir.path().to_str().unwrap(), "serve"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.toml:1:8"), "{err}");
    let (code, _, err) = run(&[
        "--config-dir",
        dir.path().to_str().unwrap(),
        "inetd",
        "nope",
    ]);
    assert_eq!(code, 2, "{err}");
}

// --listen is parsed by clap into a typed address: a bad value is a usage
// error (exit 2) naming the flag, the value and what is expected, before
// anything else (the service file) is looked at.

#[test]
fn bad_listen_values_are_usage_errors_from_the_parser() {
    // The service file does not exist: only a parse of --listen that comes
    // first can report the address rather than the missing file.
    for bad in [
        "localhost:80",
        "x.sock",
        "[::1]",
        "127.0.0.1",
        "127.0.0.1:99999",
        "",
    ] {
        let (code, _, err) = run(&[
            "run",
            "/nonexistent/services/x.toml",
            "--listen",
            bad,
            "--no-scope",
        ]);
        assert_eq!(code, 2, "--listen {bad:?}: {err}");
        assert!(
            err.contains(&format!("invalid value '{bad}' for '--listen <ADDR>'")),
            "--listen {bad:?} not named: {err}"
        );
        assert!(
            err.contains("expected 127.0.0.1:PORT, [::1]:PORT or an absolute socket path"),
            "--listen {bad:?} without what is expected: {err}"
        );
        assert!(
            !err.contains("x.toml"),
            "--listen {bad:?} reported after the service file: {err}"
        );
        assert_eq!(
            err.matches("expected 127.0.0.1:PORT").count(),
            1,
            "said more than once: {err}"
        );
    }
}

#[test]
fn good_listen_values_pass_the_parser() {
    // Past the parser the missing service file is what fails (exit 2 too,
    // but naming the file, not --listen).
    for good in ["127.0.0.1:0", "[::1]:8080", "/run/berth-test.sock"] {
        let (code, _, err) = run(&[
            "run",
            "/nonexistent/services/x.toml",
            "--listen",
            good,
            "--no-scope",
        ]);
        assert_ne!(code, 0, "{err}");
        assert!(
            !err.contains("--listen"),
            "--listen {good:?} refused: {err}"
        );
        assert!(err.contains("x.toml"), "{err}");
    }
}

/// A berth service file running `/bin/echo hi` per connection.
fn echo_service(dir: &std::path::Path) -> String {
    let svc = dir.join("echo.toml");
    std::fs::write(&svc, "mode = \"inetd\"\nexec = [\"/bin/echo\", \"hi\"]\n")
        .expect("write the service file");
    svc.to_string_lossy().into_owned()
}

#[test]
fn too_few_descriptors_allowed_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let svc = echo_service(dir.path());
    let out = Command::new("prlimit")
        .args(["--nofile=64:64", BERTH, "run", &svc])
        .args(["--listen", "127.0.0.1:0", "--no-scope"])
        .output()
        .expect("prlimit (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("RLIMIT_NOFILE is 64 (hard 64): berth needs at least 128"),
        "{err}"
    );
}

#[test]
fn a_low_soft_descriptor_limit_is_raised_and_containers_start() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: containers need root");
        return;
    }
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let svc = echo_service(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new("prlimit")
        .args(["--nofile=64:4096", BERTH, "run", &svc])
        .args(["--listen", &addr, "--no-scope"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let answer = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "berth never listened");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    assert_eq!(answer, "hi\n", "{err}");
    assert!(err.contains("RLIMIT_NOFILE raised from 64 to 128"), "{err}");
}
