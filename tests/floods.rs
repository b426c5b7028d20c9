//! Floods in inetd mode: `rate_limit_per_source` holds against thousands of
//! connections from one source while another source is served, the
//! refusals are logged once per interval (no log flood), and nothing is
//! left afterwards. In its own test binary so that no other test's
//! containers run meanwhile.

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);
/// The limit under test: a burst of 5, then 5 per 2 s.
const RATE: u32 = 5;
const PER: Duration = Duration::from_secs(2);

/// The tests flood loopback and count what is left: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn toml() -> String {
    format!(
        "mode = \"inetd\"\nexec = [\"/probe\"]\nrate_limit_per_source = \"{RATE}/{}s\"\n\
         [sandbox]\nread_only = [\"{}\"]\n",
        PER.as_secs(),
        probe_bind()
    )
}

/// A connection from `source` (any address of 127/8 is loopback).
fn connect_from(source: &str, addr: &str) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let src: SocketAddrV4 = format!("{source}:0").parse().unwrap();
    bind(sock.as_raw_fd(), &SockaddrIn::from(src)).expect("bind the source address");
    let dst: SocketAddrV4 = addr.parse().unwrap();
    connect(sock.as_raw_fd(), &SockaddrIn::from(dst)).expect("connect");
    TcpStream::from(sock)
}

/// One probe `echo` from `source`: its answer and how long it took.
fn echo_from(source: &str, addr: &str, word: &str) -> (String, Duration) {
    let t = Instant::now();
    let mut s = connect_from(source, addr);
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(format!("echo {word}\n").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    (out, t.elapsed())
}

#[test]
fn flood_from_one_source_is_held_to_its_rate_and_others_are_served() {
    if !require_root() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (b, addr) = Berth::start_tcp("flood", &toml());
    // Warm up from a third source, so lazily opened descriptors exist and
    // the flooding source's budget is untouched.
    assert_eq!(echo_from("127.0.0.3", &addr, "warm").0, "warm\n");
    b.log.wait_count("event=\"stopped\"", 1, T);
    wait_settled(b.pid(), T);
    let fds = fd_count(b.pid());
    let netns = net_namespaces("flood");

    // Another source, within its own budget, asks meanwhile.
    let other_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = {
        let addr = addr.clone();
        let done = other_done.clone();
        std::thread::spawn(move || {
            let answers = (0..4)
                .map(|i| {
                    std::thread::sleep(Duration::from_millis(300));
                    echo_from("127.0.0.2", &addr, &format!("other{i}"))
                })
                .collect::<Vec<_>>();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            answers
        })
    };

    // Connect-and-close as fast as possible, until the other source is
    // done and for two intervals at least: bounded in count and time.
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let start = Instant::now();
    let (mut connected, mut failed) = (0u32, 0u32);
    let mut other_served_meanwhile = false;
    while connected < 50_000 && start.elapsed() < Duration::from_secs(10) {
        if other_done.load(std::sync::atomic::Ordering::SeqCst) {
            other_served_meanwhile = true;
            if start.elapsed() >= 2 * PER {
                break;
            }
        }
        match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            Ok(s) => {
                connected += 1;
                drop(s);
            }
            Err(_) => failed += 1,
        }
    }
    let flood_time = start.elapsed();
    eprintln!("flood: {connected} connections, {failed} failed, in {flood_time:?}");
    assert!(
        connected >= 1000,
        "not a flood: {connected} in {flood_time:?}"
    );
    assert!(
        other_served_meanwhile,
        "the other source was not done within the flood"
    );

    for (i, (answer, took)) in other.join().expect("other source").into_iter().enumerate() {
        assert_eq!(answer, format!("other{i}\n"), "the other source is served");
        assert!(
            took < Duration::from_secs(5),
            "other source waited {took:?}"
        );
    }

    // Every container that started has ended, and no more start: the
    // backlog is drained (refusals take microseconds, admitted connections
    // are few) and berth holds the descriptors it held before.
    let deadline = Instant::now() + T;
    loop {
        let started = b.log.count("event=\"started\"");
        let stopped = b.log.count("event=\"stopped\"");
        let stages = children(b.pid())
            .into_iter()
            .filter(|p| comm(*p) != "berth-zygote")
            .count();
        let open = fd_count(b.pid());
        if started == stopped && stages == 0 && open <= fds {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after the flood: {started} started, {stopped} stopped, {stages} stages, \
             {open} descriptors in berth (before: {fds})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let from_flood = b
        .log
        .lines()
        .iter()
        .filter(|l| l.contains("event=\"started\"") && l.contains("for 127.0.0.1:"))
        .count();
    // The bucket: RATE at once, then RATE per PER, over the flood (plus a
    // second for the backlog to drain after the last connect).
    let window = flood_time + Duration::from_secs(1);
    let allowed = RATE as usize
        + (f64::from(RATE) * window.as_secs_f64() / PER.as_secs_f64()).ceil() as usize;
    assert!(
        from_flood >= RATE as usize,
        "the burst is admitted: {from_flood}"
    );
    assert!(
        from_flood <= allowed,
        "{from_flood} containers for the flooding source, at most {allowed} allowed"
    );

    // Refusals: logged, but once per source and interval, not per connection.
    let refused = b.log.count("event=\"refused\"");
    let intervals = (window.as_secs_f64() / PER.as_secs_f64()).ceil() as usize;
    assert!(refused >= 1, "refusals are logged");
    assert!(
        refused <= intervals + 1,
        "{refused} refused entries for {connected} connections over {intervals} intervals"
    );
    b.log.wait_for("reason=\"rate_limit_per_source\"", T);
    b.log
        .wait_for("rate_limit_per_source (5/2s) exceeded by 127.0.0.1", T);
    assert!(
        !b.log
            .lines()
            .iter()
            .any(|l| l.contains("event=\"refused\"") && l.contains("from 127.0.0.2:")),
        "the other source was never refused"
    );

    // Nothing left.
    assert_eq!(
        net_namespaces("flood"),
        netns,
        "network namespaces left behind"
    );
    let children: Vec<String> = children(b.pid()).into_iter().map(comm).collect();
    assert_eq!(children, ["berth-zygote"], "processes left behind");
}

#[test]
fn refusals_over_max_connections_per_source_are_logged_once_per_interval() {
    if !require_root() {
        return;
    }
    let toml = format!(
        "mode = \"inetd\"\nexec = [\"/probe\"]\nmax_connections_per_source = 1\n\
         [sandbox]\nread_only = [\"{}\"]\n",
        probe_bind()
    );
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (b, addr) = Berth::start_tcp("perflood", &toml);
    let mut held = connect_from("127.0.0.1", &addr);
    held.write_all(b"hold\n").unwrap();
    b.log.wait_count("event=\"started\"", 1, T);
    let start = Instant::now();
    let mut refused = 0;
    while refused < 500 && start.elapsed() < Duration::from_secs(10) {
        let mut s = connect_from("127.0.0.1", &addr);
        s.set_read_timeout(Some(T)).unwrap();
        let mut out = String::new();
        // Over the limit: closed at once, no container.
        let _ = s.read_to_string(&mut out);
        assert_eq!(out, "");
        refused += 1;
    }
    assert_eq!(refused, 500, "bounded by time before the count");
    let first = b.log.wait_for("event=\"refused\"", T);
    assert!(first.contains("max_connections_per_source (1) reached for 127.0.0.1"));
    assert!(first.contains("reason=\"max_connections_per_source\""));
    // All within one interval: one entry, not 500.
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(b.log.count("event=\"refused\""), 1);
    assert_eq!(b.log.count("event=\"started\""), 1);
    // The next refusal after the interval would say how many went unlogged;
    // the other source is its own budget meanwhile.
    assert_eq!(echo_from("127.0.0.2", &addr, "other").0, "other\n");
    drop(held);
    b.log.wait_count("event=\"stopped\"", 2, T);
}
