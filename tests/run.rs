//! `berth run`: both modes over TCP v4/v6 and unix sockets, connection
//! limits, idle teardown, lifetime, SIGTERM, runtime errors, and leaks.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

fn inetd_toml(extra: &str) -> String {
    format!(
        "mode = \"inetd\"\nexec = [\"/probe\"]\n{extra}\n[sandbox]\nread_only = [\"{}\"]\n",
        probe_bind()
    )
}

fn listen_toml(extra: &str) -> String {
    format!(
        "mode = \"listen\"\nexec = [\"/probe\"]\n{extra}\n[sandbox]\nread_only = [\"{}\"]\n",
        probe_bind()
    )
}

/// A connection running the probe's `hold`: open until we close it.
fn hold(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"hold\n").expect("send hold");
    s
}

/// Read until EOF; returns what came (an immediate close reads "").
fn read_all(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(T)).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn net_ns_of(report: &str) -> String {
    json(report)["namespaces"]["net"]
        .as_str()
        .expect("net namespace in report")
        .to_owned()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn inetd_serves_tcp4_tcp6_and_unix() {
    if !require_root() {
        return;
    }
    let p4 = free_port();
    let p6 = free_port();
    let sockdir = tempfile::tempdir().unwrap();
    let sock = sockdir.path().join("probe.sock");
    let b = Berth::start(
        "probe",
        &inetd_toml(""),
        &[
            format!("127.0.0.1:{p4}"),
            format!("[::1]:{p6}"),
            sock.display().to_string(),
        ],
    );
    assert_eq!(tcp_request(&format!("127.0.0.1:{p4}"), "echo v4"), "v4\n");
    assert_eq!(tcp_request(&format!("[::1]:{p6}"), "echo v6"), "v6\n");
    assert_eq!(unix_request(&sock, "echo unix"), "unix\n");
    // One container per connection: each has its own network namespace.
    let a = net_ns_of(&tcp_request(&format!("127.0.0.1:{p4}"), "report"));
    let c = net_ns_of(&tcp_request(&format!("127.0.0.1:{p4}"), "report"));
    assert_ne!(a, c);
    b.log.wait_count("container stopped", 5, T);
}

#[test]
fn inetd_max_connections_refuses_and_recovers() {
    if !require_root() {
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = Berth::start("probe", &inetd_toml("max_connections = 2"), &[addr.clone()]);
    let h1 = hold(&addr);
    let _h2 = hold(&addr);
    b.log.wait_count("container started", 2, T);
    let mut third = TcpStream::connect(&addr).unwrap();
    let _ = third.write_all(b"echo no\n");
    assert_eq!(read_all(&mut third), "", "over the limit: closed at once");
    b.log.wait_for("max_connections (2) reached", T);
    assert!(b.log.count("event=\"refused\"") >= 1);
    drop(h1);
    b.log.wait_count("container stopped", 1, T);
    assert_eq!(tcp_request(&addr, "echo again"), "again\n");
}

#[test]
fn inetd_max_connections_per_source() {
    if !require_root() {
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = Berth::start(
        "probe",
        &inetd_toml("max_connections_per_source = 1"),
        &[addr.clone()],
    );
    let _h = hold(&addr);
    b.log.wait_count("container started", 1, T);
    let mut second = TcpStream::connect(&addr).unwrap();
    assert_eq!(read_all(&mut second), "");
    b.log.wait_for("max_connections_per_source (1) reached for 127.0.0.1", T);
    // Another source address on loopback is its own budget.
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .unwrap();
    let src: std::net::SocketAddrV4 = "127.0.0.2:0".parse().unwrap();
    nix::sys::socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        &nix::sys::socket::SockaddrIn::from(src),
    )
    .unwrap();
    let dst: std::net::SocketAddrV4 = addr.parse().unwrap();
    nix::sys::socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        &nix::sys::socket::SockaddrIn::from(dst),
    )
    .unwrap();
    let mut other = TcpStream::from(sock);
    other.write_all(b"echo other\n").unwrap();
    assert_eq!(read_all(&mut other), "other\n");
}

#[test]
fn inetd_max_lifetime_and_idle_timeout_end_containers() {
    if !require_root() {
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = Berth::start("probe", &inetd_toml("max_lifetime = \"500ms\""), &[addr.clone()]);
    let mut h = hold(&addr);
    assert_eq!(read_all(&mut h), "");
    b.log.wait_for("max_lifetime reached", T);
    drop(b);

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = Berth::start("probe", &inetd_toml("idle_timeout = \"300ms\""), &[addr.clone()]);
    let mut h = hold(&addr);
    assert_eq!(read_all(&mut h), "");
    b.log.wait_for("idle_timeout reached", T);
}

#[test]
fn listen_starts_on_demand_idles_out_and_wakes_again() {
    if !require_root() {
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = Berth::start("web", &listen_toml("idle_timeout = \"400ms\""), &[addr.clone()]);
    assert_eq!(b.log.count("container started"), 0, "nothing runs before a connection");
    let first = net_ns_of(&tcp_request(&addr, "report"));
    let again = net_ns_of(&tcp_request(&addr, "report"));
    assert_eq!(first, again, "the same container serves both connections");
    b.log.wait_for("idle_timeout reached", T);
    let woken = net_ns_of(&tcp_request(&addr, "report"));
    assert_ne!(first, woken, "a new container after the idle teardown");
    assert_eq!(b.log.count("container started"), 2);
}

#[test]
fn listen_open_connection_keeps_container() {
    if !require_root() {
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = Berth::start("web", &listen_toml("idle_timeout = \"200ms\""), &[addr.clone()]);
    let h = hold(&addr);
    b.log.wait_for("container started", T);
    // Several idle periods pass with the connection open: no teardown.
    let before = net_ns_of(&tcp_request(&addr, "report"));
    std::thread::sleep(Duration::from_millis(1200));
    let after = net_ns_of(&tcp_request(&addr, "report"));
    assert_eq!(before, after);
    assert_eq!(b.log.count("idle_timeout reached"), 0);
    drop(h);
    b.log.wait_for("idle_timeout reached", T);
}

#[test]
fn listen_connections_during_teardown_are_served() {
    if !require_root() {
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = Berth::start("web", &listen_toml("idle_timeout = \"60ms\""), &[addr.clone()]);
    // Clients arrive at intervals around the idle timeout, so several land
    // while a container is being torn down. Every one must be answered.
    let mut answered = 0;
    for i in 0..60u64 {
        let out = tcp_request(&addr, &format!("echo n{i}"));
        assert_eq!(out, format!("n{i}\n"), "request {i} lost");
        answered += 1;
        std::thread::sleep(Duration::from_millis(20 + (i * 37) % 90));
    }
    assert_eq!(answered, 60);
    let started = b.log.count("container started");
    assert!(started >= 3, "expected several idle teardowns, saw {started} starts");
}

#[test]
fn listen_max_lifetime_restarts_on_next_connection() {
    if !require_root() {
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let b = Berth::start("web", &listen_toml("max_lifetime = \"300ms\""), &[addr.clone()]);
    let mut h = hold(&addr);
    assert_eq!(read_all(&mut h), "");
    b.log.wait_for("max_lifetime reached", T);
    assert_eq!(tcp_request(&addr, "echo back"), "back\n");
}

#[test]
fn sigterm_stops_all_containers_and_exits_zero() {
    if !require_root() {
        return;
    }
    for (mode, toml) in [("inetd", inetd_toml("")), ("listen", listen_toml(""))] {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut b = Berth::start("svc", &toml, &[addr.clone()]);
        let mut h1 = hold(&addr);
        let mut h2 = hold(&addr);
        let want = if mode == "inetd" { 2 } else { 1 };
        let lines = b.log.wait_count("container started", want, T);
        let pids: Vec<u32> = lines
            .iter()
            .filter_map(|l| l.split("pid=").nth(1))
            .filter_map(|p| p.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(pids.len(), want);
        assert_eq!(b.stop(), Some(0), "{mode}: exit code after SIGTERM");
        assert_eq!(read_all(&mut h1), "");
        assert_eq!(read_all(&mut h2), "");
        for p in pids {
            assert!(!alive(p), "{mode}: container pid {p} outlived berth");
        }
    }
}
