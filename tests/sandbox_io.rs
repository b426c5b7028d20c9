//! What a container is, as the application sees it — what it is handed: its
//! file descriptors, its environment, and IPv6 and unix listeners (SPEC.md
//! "What a container is"), checked from the real probe's `report` in
//! containers of the real `berth run`.
//!
//! Every test runs each configuration twice: `mode = "inetd"` (one container
//! per connection, the probe answers on fd 0/1) and `mode = "listen"` (the
//! probe takes LISTEN_FDS and answers per connection).

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

use common::sandbox::*;

// ---------------------------------------------------------------------------
// 9. File descriptors
// ---------------------------------------------------------------------------

#[test]
fn inetd_fds_are_the_connection_and_stderr() {
    if !common::require_root() {
        return;
    }
    let r = report(Mode::Inetd, &Svc::new("fdsinetd"), &[]);
    for field in ["fds_at_start", "fds"] {
        let f = fds(&r[field]);
        let nums: Vec<i64> = f.iter().map(|(n, _)| *n).collect();
        assert_eq!(nums, [0, 1, 2], "{field}: {f:?}");
        assert!(f[0].1.starts_with("socket:["), "{field}: fd 0 {f:?}");
        assert_eq!(f[0].1, f[1].1, "{field}: fd 0 and 1 differ");
    }
    assert_eq!(r["listen_fds"], 0);
}

fn check_listen_fds(r: &Value, n: usize) {
    let f = fds(&r["fds_at_start"]);
    let nums: Vec<i64> = f.iter().map(|(n, _)| *n).collect();
    let want: Vec<i64> = (0..3 + n as i64).collect();
    assert_eq!(nums, want, "fds at start: {f:?}");
    assert_eq!(f[0].1, "/dev/null", "fd 0: {f:?}");
    for (fd, target) in &f[3..] {
        assert!(target.starts_with("socket:["), "fd {fd}: {target}");
    }
    assert_eq!(r["listen_fds"], n, "listen_fds");
    assert_eq!(env(r)["LISTEN_FDS"], n.to_string());
}

#[test]
fn listen_fds_one_socket() {
    if !common::require_root() {
        return;
    }
    let r = report(Mode::Listen, &Svc::new("fdslisten"), &[]);
    check_listen_fds(&r, 1);
}

#[test]
fn listen_fds_two_sockets() {
    if !common::require_root() {
        return;
    }
    let run = start(
        Mode::Listen,
        &Svc::new("fdslisten2"),
        &[Kind::Tcp4, Kind::Unix],
    );
    let a = run.report(0, &[]);
    let b = run.report(1, &[]);
    check_listen_fds(&a, 2);
    assert_eq!(a["pid"], b["pid"], "both sockets must reach one container");
    assert_eq!(env(&a)["LISTEN_FDNAMES"], "fdslisten2:fdslisten2");
}

// ---------------------------------------------------------------------------
// 10. Environment
// ---------------------------------------------------------------------------

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn check_env(r: &Value, mode: Mode, name: &str, fdnames: &str) {
    let e = env(r);
    let keys: BTreeSet<&str> = e.keys().map(String::as_str).collect();
    let mut want: BTreeSet<&str> =
        ["PATH", "BERTH_SERVICE", "RUNTIME_DIRECTORY", "LANG", "FOO"].into();
    if mode == Mode::Listen {
        want.extend(["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"]);
    }
    assert_eq!(keys, want, "{mode:?}: environment {e:?}");
    assert_eq!(e["PATH"], PATH, "{mode:?}");
    assert_eq!(e["BERTH_SERVICE"], name, "{mode:?}");
    assert_eq!(e["RUNTIME_DIRECTORY"], format!("/run/{name}"), "{mode:?}");
    assert_eq!(e["LANG"], "C.UTF-8", "{mode:?}");
    assert_eq!(e["FOO"], "bar", "{mode:?}");
    assert!(!e.contains_key("BERTH_LOG"), "{mode:?}: berth's env leaked");
    assert!(!e.contains_key("NOTIFY_SOCKET"), "{mode:?}: NOTIFY_SOCKET");
    if mode == Mode::Listen {
        assert_eq!(
            e["LISTEN_PID"],
            r["pid"].to_string(),
            "LISTEN_PID is not the pid the app sees"
        );
        assert_eq!(e["LISTEN_FDNAMES"], fdnames);
    }
}

fn env_svc(name: &str) -> Svc {
    Svc::new(name).top("environment = { LANG = \"C.UTF-8\", FOO = \"bar\" }")
}

#[test]
fn environment_is_exactly_the_configured_one() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let r = report(mode, &env_svc("envsvc"), &[]);
        check_env(&r, mode, "envsvc", "envsvc");
    }
}

#[test]
fn environment_with_two_listen_sockets() {
    if !common::require_root() {
        return;
    }
    let run = start(Mode::Listen, &env_svc("envtwo"), &[Kind::Unix, Kind::Tcp4]);
    let r = run.report(1, &[]);
    check_env(&r, Mode::Listen, "envtwo", "envtwo:envtwo");
}

/// `berth run` itself started with NOTIFY_SOCKET, HOME, LANGUAGE and a
/// stray variable: none of them reaches the application.
#[test]
fn environment_of_berth_itself_is_not_inherited() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let name = "envleak";
        let (_berth, addr) = common::Berth::start_tcp_env(
            name,
            &env_svc(name).toml(mode),
            &[
                ("NOTIFY_SOCKET", Some("/run/berth-test-no-such-notify.sock")),
                ("BERTH_TEST_LEAK", Some("1")),
                ("LANGUAGE", Some("xx")),
                ("HOME", Some("/root")),
            ],
        );
        let r = common::json(&common::tcp_request(&addr, "report"));
        check_report(&r, mode);
        check_env(&r, mode, name, name);
    }
}

// ---------------------------------------------------------------------------
// Listeners: IPv6 and unix sockets
// ---------------------------------------------------------------------------

#[test]
fn ipv6_and_unix_listeners_work() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let run = start(mode, &Svc::new("ipv6unix"), &[Kind::Tcp6, Kind::Unix]);
        let a = run.report(0, &[]);
        let b = run.report(1, &[]);
        for r in [&a, &b] {
            assert_eq!(r["hostname"], "ipv6unix", "{mode:?}");
            assert_eq!(int(r, "pid"), 2, "{mode:?}");
        }
        if mode == Mode::Inetd {
            let f = fds(&b["fds_at_start"]);
            assert!(f[0].1.starts_with("socket:["), "{f:?}");
        } else {
            assert_eq!(a["listen_fds"], 2, "{mode:?}");
        }
    }
}
