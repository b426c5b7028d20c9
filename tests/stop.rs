//! `stop_timeout`: stopping a container sends SIGTERM to the application
//! and SIGKILL `stop_timeout` later (issue 10.3), under `berth run
//! --no-scope` (the scope side is in tests/system/run.sh).

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// An inetd service running `script` in /bin/sh.
fn sh_toml(script: &str, extra: &str) -> String {
    format!("mode = \"inetd\"\nexec = [\"/bin/sh\", \"-c\", {script:?}]\n{extra}\n")
}

/// Connect and wait until the container closes the connection; the time
/// from the connect to that.
fn served_for(addr: &str) -> Duration {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    t0.elapsed()
}

#[test]
fn term_ignoring_application_is_killed_stop_timeout_after_max_lifetime() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp(
        "stubborn",
        &sh_toml(
            "trap '' TERM; sleep 1000",
            "max_lifetime = \"1s\"\nstop_timeout = \"2s\"",
        ),
    );
    let took = served_for(&addr);
    let line = b
        .log
        .wait_for("max_lifetime reached", Duration::from_secs(10));
    assert!(line.contains("killed by SIGKILL"), "{line}");
    // 1 s lifetime, then 2 s of SIGTERM being ignored, then SIGKILL.
    assert!(
        took >= Duration::from_millis(2900),
        "killed before stop_timeout ran out: {took:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "not killed at stop_timeout: {took:?}"
    );
}

#[test]
fn term_handling_application_writes_its_last_line() {
    if !require_root() {
        return;
    }
    // `wait` (unlike a foreground command) returns on a trapped signal.
    let (b, addr) = Berth::start_tcp(
        "polite",
        &sh_toml(
            "trap 'echo bye-from-the-application >&2; exit 0' TERM; sleep 1000 & wait",
            "max_lifetime = \"1s\"\nstop_timeout = \"20s\"",
        ),
    );
    let took = served_for(&addr);
    b.log
        .wait_for("bye-from-the-application", Duration::from_secs(10));
    let line = b
        .log
        .wait_for("max_lifetime reached", Duration::from_secs(10));
    assert!(line.contains("exited 0"), "{line}");
    assert!(
        took < Duration::from_secs(10),
        "waited for the SIGKILL instead of the application's own exit: {took:?}"
    );
}

#[test]
fn supervisor_stop_is_bounded_by_stop_timeout() {
    if !require_root() {
        return;
    }
    let (mut b, addr) = Berth::start_tcp(
        "stubborn",
        &sh_toml(
            "trap '' TERM; echo ready; sleep 1000",
            "stop_timeout = \"1s\"",
        ),
    );
    // The application says when its trap is set.
    let mut conn = TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut ready = [0u8; 6];
    conn.read_exact(&mut ready).expect("read ready");
    assert_eq!(&ready, b"ready\n");
    let t0 = Instant::now();
    assert_eq!(b.stop(), Some(0));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "berth run stopped in {took:?} with stop_timeout = 1s"
    );
}
