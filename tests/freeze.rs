//! `freeze_after` (listen mode): an idle container is held still instead of
//! stopped, the next connection is answered by the same container, and
//! `idle_timeout` still stops it later.
//!
//! Mechanism exercised here: `berth run --no-scope` gives a container no
//! scope, so there is no cgroup of its own to freeze and berth stops its
//! processes with SIGSTOP (the fallback; the log says `freezer="SIGSTOP"`,
//! and the application's state in /proc is `T`). The cgroup freezer proper
//! (`cgroup.freeze`) is exercised on testbed 1 (tests/system/run.sh block h,
//! through the hybrid layout's cgroup2 directory) and, with
//! `memory.reclaim`, in the cgroup v2 VM (tests/vm/guest.sh).

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(20);

fn listen_toml(extra: &str) -> String {
    format!(
        "mode = \"listen\"\nexec = [\"/probe\"]\n{extra}\n[sandbox]\nread_only = [\"{}\"]\n",
        probe_bind()
    )
}

fn net_ns_of(report: &str) -> String {
    json(report)["namespaces"]["net"]
        .as_str()
        .expect("net namespace in report")
        .to_owned()
}

/// The process tree below `pid` (children of children), `pid` excluded.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children(p) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// The state letter of /proc/PID/stat ('T' stopped, 'S' sleeping, ...).
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The probe processes (the application) under berth.
fn probes(berth: u32) -> Vec<u32> {
    descendants(berth)
        .into_iter()
        .filter(|p| comm(*p) == "probe")
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn idle_container_is_frozen_and_the_next_connection_thaws_the_same_one() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp(
        "web",
        &listen_toml("freeze_after = \"300ms\"\nidle_timeout = \"1min\""),
    );
    let first = net_ns_of(&tcp_request(&addr, "report"));
    let frozen = b.log.wait_for("event=\"frozen\"", T);
    assert!(frozen.contains("freezer=\"SIGSTOP\""), "{frozen}");
    let app = probes(b.pid());
    assert!(!app.is_empty(), "no probe process under berth");
    for p in &app {
        assert_eq!(
            state_of(*p),
            Some('T'),
            "probe {p} not stopped while frozen"
        );
    }
    // The next connection: same network namespace, so the same container.
    let again = net_ns_of(&tcp_request(&addr, "report"));
    assert_eq!(first, again, "a frozen container was replaced, not thawed");
    b.log.wait_for("event=\"thawed\"", T);
    assert_eq!(b.log.count("event=\"started\""), 1);
    assert_eq!(b.log.count("event=\"stopped\""), 0);
    for p in &app {
        assert_ne!(
            state_of(*p),
            Some('T'),
            "probe {p} still stopped after the thaw"
        );
    }
    // Idle again: frozen a second time.
    b.log.wait_count("event=\"frozen\"", 2, T);
}

#[test]
fn idle_timeout_still_stops_a_frozen_container() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp(
        "web",
        &listen_toml("freeze_after = \"200ms\"\nidle_timeout = \"1500ms\""),
    );
    assert_eq!(tcp_request(&addr, "echo hi"), "hi\n");
    b.log.wait_for("event=\"frozen\"", T);
    let stopped = b.log.wait_for("event=\"stopped\"", T);
    assert!(stopped.contains("idle_timeout reached"), "{stopped}");
    // Nothing is left stopped behind: the container's processes are gone.
    wait_until("the frozen container's processes to end", || {
        probes(b.pid()).is_empty()
    });
    // A new container answers (namespace inodes are reused once freed, so
    // it is told by berth's start events).
    assert!(tcp_request(&addr, "report").contains("\"namespaces\""));
    b.log.wait_count("event=\"started\"", 2, T);
}

/// Hostile clients: one connects while the container is frozen and sends
/// nothing; then many connect at once. The silent one thaws the container
/// and holds it awake; every other one is answered by the same container;
/// once the silent one leaves, it is frozen again.
#[test]
fn silent_client_and_a_crowd_at_thaw_lose_nothing() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp(
        "web",
        &listen_toml("freeze_after = \"300ms\"\nidle_timeout = \"1min\""),
    );
    let first = net_ns_of(&tcp_request(&addr, "report"));
    b.log.wait_for("event=\"frozen\"", T);
    let silent = TcpStream::connect(&addr).unwrap();
    b.log.wait_for("event=\"thawed\"", T);
    // Frozen again only once it is gone: an open connection is not idle.
    // A crowd arriving together, all while the silent one holds on.
    let crowd: Vec<_> = (0..64)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(T)).unwrap();
                s.write_all(format!("echo c{i}\n").as_bytes()).unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                (i, out)
            })
        })
        .collect();
    for t in crowd {
        let (i, out) = t.join().unwrap();
        assert_eq!(out, format!("c{i}\n"), "client {i} lost");
    }
    assert_eq!(first, net_ns_of(&tcp_request(&addr, "report")));
    assert_eq!(
        b.log.count("event=\"frozen\""),
        1,
        "frozen while a connection was open"
    );
    drop(silent);
    b.log.wait_count("event=\"frozen\"", 2, T);

    // The crowd again, this time arriving at a frozen container.
    let crowd: Vec<_> = (0..64)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let r = tcp_request(&addr, "report");
                (i, r)
            })
        })
        .collect();
    for t in crowd {
        let (i, r) = t.join().unwrap();
        assert_eq!(
            net_ns_of(&r),
            first,
            "client {i} not served by the same container"
        );
    }
    assert_eq!(b.log.count("event=\"started\""), 1);
    assert_eq!(b.log.count("event=\"stopped\""), 0);
}

/// Kill what the thaw depends on: the frozen application itself dies
/// (SIGKILL from outside while it is stopped). berth sees the exit, and
/// the next connection gets a new container.
#[test]
fn a_frozen_container_killed_from_outside_is_replaced() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp(
        "web",
        &listen_toml("freeze_after = \"200ms\"\nidle_timeout = \"1min\""),
    );
    assert_eq!(tcp_request(&addr, "echo hi"), "hi\n");
    b.log.wait_for("event=\"frozen\"", T);
    // The container's PID 1 is the probe's parent: killing it ends the
    // whole pid namespace.
    let app = probes(b.pid());
    assert_eq!(app.len(), 1, "{app:?}");
    let init = std::fs::read_to_string(format!("/proc/{}/stat", app[0]))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse::<i32>()
                .ok()
        })
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let stopped = b.log.wait_for("event=\"stopped\"", T);
    assert!(stopped.contains("exited"), "{stopped}");
    // The next connection gets a new container (told by the start events:
    // namespace inodes are reused once freed).
    assert!(tcp_request(&addr, "report").contains("\"namespaces\""));
    b.log.wait_count("event=\"started\"", 2, T);
}
