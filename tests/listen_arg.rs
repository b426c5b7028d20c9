//! `--listen` is parsed by clap into a typed address: a bad value is a
//! usage error (exit 2) naming the flag, the value and what is expected,
//! before anything else (the service file) is looked at.

use std::process::Command;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BERTH)
        .args(args)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .output()
        .expect("run berth");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
        let (code, err) = run(&[
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
        let (code, err) = run(&[
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
