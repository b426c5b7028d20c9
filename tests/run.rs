//! `berth run`: both modes over TCP v4/v6 and unix sockets, connection
//! limits, idle teardown, lifetime, SIGTERM, runtime errors, and leaks.

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

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
    let sockdir = tempfile::tempdir().unwrap();
    let sock = sockdir.path().join("probe.sock");
    let b = Berth::start(
        "probe",
        &inetd_toml(""),
        &[
            "127.0.0.1:0".to_string(),
            "[::1]:0".to_string(),
            sock.display().to_string(),
        ],
    );
    let [v4, v6, _] = &b.listening()[..] else {
        panic!("three listeners: {:?}", b.listening());
    };
    assert_eq!(tcp_request(v4, "echo v4"), "v4\n");
    assert_eq!(tcp_request(v6, "echo v6"), "v6\n");
    assert_eq!(unix_request(&sock, "echo unix"), "unix\n");
    // One container per connection, each in its own network namespace
    // (told by berth's events: a freed namespace's inode is reused).
    for _ in 0..2 {
        let ns = net_ns_of(&tcp_request(v4, "report"));
        assert_ne!(ns, host_ns("net"));
    }
    b.log.wait_count("event=\"stopped\"", 5, T);
    assert_eq!(b.log.count("event=\"started\""), 5);
}

#[test]
fn inetd_max_connections_refuses_and_recovers() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp("probe", &inetd_toml("max_connections = 2"));
    let h1 = hold(&addr);
    let _h2 = hold(&addr);
    b.log.wait_count("event=\"started\"", 2, T);
    let mut third = TcpStream::connect(&addr).unwrap();
    let _ = third.write_all(b"echo no\n");
    assert_eq!(read_all(&mut third), "", "over the limit: closed at once");
    b.log.wait_for("max_connections (2) reached", T);
    assert!(b.log.count("event=\"refused\"") >= 1);
    drop(h1);
    b.log.wait_count("event=\"stopped\"", 1, T);
    assert_eq!(tcp_request(&addr, "echo again"), "again\n");
}

#[test]
fn inetd_max_connections_per_source() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp("probe", &inetd_toml("max_connections_per_source = 1"));
    let _h = hold(&addr);
    b.log.wait_count("event=\"started\"", 1, T);
    let mut second = TcpStream::connect(&addr).unwrap();
    assert_eq!(read_all(&mut second), "");
    b.log
        .wait_for("max_connections_per_source (1) reached for 127.0.0.1", T);
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
    let (b, addr) = Berth::start_tcp("probe", &inetd_toml("max_lifetime = \"500ms\""));
    let mut h = hold(&addr);
    assert_eq!(read_all(&mut h), "");
    b.log.wait_for("max_lifetime reached", T);
    drop(b);

    let (b, addr) = Berth::start_tcp("probe", &inetd_toml("idle_timeout = \"300ms\""));
    let mut h = hold(&addr);
    assert_eq!(read_all(&mut h), "");
    b.log.wait_for("idle_timeout reached", T);
}

#[test]
fn listen_starts_on_demand_idles_out_and_wakes_again() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp("web", &listen_toml("idle_timeout = \"400ms\""));
    assert_eq!(
        b.log.count("event=\"started\""),
        0,
        "nothing runs before a connection"
    );
    let first = net_ns_of(&tcp_request(&addr, "report"));
    let again = net_ns_of(&tcp_request(&addr, "report"));
    assert_eq!(first, again, "the same container serves both connections");
    b.log.wait_for("idle_timeout reached", T);
    let woken = net_ns_of(&tcp_request(&addr, "report"));
    assert!(woken.starts_with("net:"), "{woken}");
    // A new container after the idle teardown, told by berth's events (a
    // freed namespace's inode may be reused); it may answer before
    // berth's "started" line is written.
    b.log.wait_count("event=\"started\"", 2, T);
    assert_eq!(b.log.count("event=\"started\""), 2);
}

#[test]
fn listen_open_connection_keeps_container() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp("web", &listen_toml("idle_timeout = \"200ms\""));
    let h = hold(&addr);
    b.log.wait_for("event=\"started\"", T);
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
    let (b, addr) = Berth::start_tcp("web", &listen_toml("idle_timeout = \"60ms\""));
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
    let started = b.log.count("event=\"started\"");
    assert!(
        started >= 3,
        "expected several idle teardowns, saw {started} starts"
    );
}

#[test]
fn listen_max_lifetime_restarts_on_next_connection() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp("web", &listen_toml("max_lifetime = \"300ms\""));
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
        let (mut b, addr) = Berth::start_tcp("svc", &toml);
        let mut h1 = hold(&addr);
        let mut h2 = hold(&addr);
        let want = if mode == "inetd" { 2 } else { 1 };
        let lines = b.log.wait_count("event=\"started\"", want, T);
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

/// A service whose binary lives in a read-write bind, so a test can take it
/// away and put it back while berth keeps running.
struct AppDir {
    dir: tempfile::TempDir,
}

impl AppDir {
    fn new() -> AppDir {
        let dir = tempfile::tempdir().unwrap();
        let a = AppDir { dir };
        a.restore();
        a
    }
    fn bin(&self) -> std::path::PathBuf {
        self.dir.path().join("probe")
    }
    fn restore(&self) {
        std::fs::copy(PROBE, self.bin()).unwrap();
        set_mode(&self.bin(), 0o755);
    }
}

fn set_mode(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// What to look for in the log, how to break the service, how to repair it.
type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, Box<dyn Fn() + 'a>);

#[test]
fn runtime_errors_close_the_connection_and_berth_keeps_serving() {
    if !require_root() {
        return;
    }
    let app = AppDir::new();
    let data = tempfile::tempdir().unwrap();
    let data_src = data.path().join("data");
    std::fs::create_dir(&data_src).unwrap();
    let toml = format!(
        "mode = \"inetd\"\nexec = [\"/app/probe\"]\n[sandbox]\nread_write = [\"{}:/app\", \"{}:/data\"]\n",
        app.dir.path().display(),
        data_src.display()
    );
    let (b, addr) = Berth::start_tcp("errs", &toml);
    assert_eq!(tcp_request(&addr, "echo ok"), "ok\n");

    // Each case: break something, see a clear error and a closed
    // connection, repair it, see the next connection served.
    let cases: Vec<Case> = vec![
        (
            "exec /app/probe: ENOENT",
            Box::new(|| std::fs::remove_file(app.bin()).unwrap()),
            Box::new(|| app.restore()),
        ),
        (
            "exec /app/probe: EACCES",
            Box::new(|| set_mode(&app.bin(), 0o644)),
            Box::new(|| set_mode(&app.bin(), 0o755)),
        ),
        (
            &*Box::leak(
                format!("bind source {} does not exist", data_src.display()).into_boxed_str(),
            ),
            Box::new(|| std::fs::remove_dir(&data_src).unwrap()),
            Box::new(|| std::fs::create_dir(&data_src).unwrap()),
        ),
    ];
    for (i, (needle, brk, fix)) in cases.iter().enumerate() {
        brk();
        let out = tcp_request(&addr, "echo broken");
        assert_eq!(
            out, "",
            "case {needle}: connection closed without an answer"
        );
        let line = b.log.wait_for(needle, T);
        assert!(line.contains("event=\"failed\""), "failure event: {line}");
        assert_eq!(b.log.count("event=\"failed\""), i + 1);
        fix();
        assert_eq!(
            tcp_request(&addr, "echo fixed"),
            "fixed\n",
            "case {needle}: served again"
        );
    }
}

#[test]
fn deleted_user_is_an_error_for_that_connection_only() {
    if !require_root() {
        return;
    }
    let user = format!("berthtest{}", std::process::id() % 100000);
    let useradd = |u: &str| {
        let ok = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                u,
            ])
            .status()
            .expect("run useradd");
        assert!(ok.success(), "useradd {u}");
    };
    let userdel = |u: &str| {
        let _ = std::process::Command::new("userdel").arg(u).status();
    };
    struct Cleanup<'a>(&'a str, &'a dyn Fn(&str));
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            (self.1)(self.0)
        }
    }
    useradd(&user);
    let _c = Cleanup(&user, &userdel);
    let (b, addr) = Berth::start_tcp("usr", &inetd_toml(&format!("user = \"{user}\"")));
    let uid = json(&tcp_request(&addr, "report"))["uid"].as_u64().unwrap();
    assert_ne!(uid, 0);
    userdel(&user);
    assert_eq!(tcp_request(&addr, "echo x"), "");
    b.log
        .wait_for(&format!("user \"{user}\" does not exist"), T);
    useradd(&user);
    assert_eq!(tcp_request(&addr, "echo back"), "back\n");
}

#[test]
fn full_tmp_is_enospc_inside_and_berth_carries_on() {
    if !require_root() {
        return;
    }
    let toml = format!(
        "mode = \"inetd\"\nexec = [\"/probe\"]\n[sandbox]\ntmp_size = \"4M\"\nread_only = [\"{}\"]\n",
        probe_bind()
    );
    let (_b, addr) = Berth::start_tcp("tmp", &toml);
    let r = json(&tcp_request(&addr, "fill-tmp"));
    assert_eq!(r["error"], "ENOSPC", "{r}");
    let written = r["written"].as_u64().unwrap();
    assert!(
        (3 << 20..=4 << 20).contains(&written),
        "tmp held {written} bytes"
    );
    // A fresh container gets a fresh, empty /tmp.
    let next = json(&tcp_request(&addr, "report"));
    assert_eq!(next["tmp_entries"], serde_json::json!([]));
}

#[test]
fn app_exiting_at_once_is_reported_and_throttled() {
    if !require_root() {
        return;
    }
    let toml = format!(
        "mode = \"inetd\"\nexec = [\"/probe\", \"--exit-now\", \"3\"]\n[sandbox]\nread_only = [\"{}\"]\n",
        probe_bind()
    );
    let (b, addr) = Berth::start_tcp("crash", &toml);
    for _ in 0..4 {
        assert_eq!(tcp_request(&addr, "echo x"), "");
    }
    b.log.wait_count("exited 3", 4, T);
    let t = b.log.wait_for("event=\"throttled\"", T);
    assert!(t.contains("failed starts in a row"), "{t}");
    // Throttled, not dead: the next connection waits, then gets a container.
    assert_eq!(tcp_request(&addr, "echo x"), "");
    b.log.wait_count("exited 3", 5, T);
}

#[test]
fn run_without_listen_uses_the_service_files_addresses() {
    if !require_root() {
        return;
    }
    let b = Berth::start("own", &inetd_toml("listen = [\"127.0.0.1:0\"]"), &[]);
    let addr = &b.listening()[..];
    let [addr] = addr else {
        panic!("one listener from the service file: {addr:?}");
    };
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_eq!(tcp_request(addr, "echo mine"), "mine\n");
}

#[test]
fn clients_that_hang_up_at_once_do_not_throttle_the_service() {
    if !require_root() {
        return;
    }
    // Like many daemons (sshd -i exits 255), this one exits non-zero when
    // its client hangs up before saying anything; and fails on any input.
    let toml = "mode = \"inetd\"\nexec = [\"/bin/sh\", \"-c\", \"read x || exit 255; exit 3\"]\n";
    let (b, addr) = Berth::start_tcp("hangup", toml);
    // A hostile client: connect and close, over and over.
    for _ in 0..8 {
        drop(TcpStream::connect(&addr).expect("connect"));
    }
    b.log.wait_count("exited 255", 8, T);
    assert_eq!(
        b.log.count("event=\"throttled\""),
        0,
        "hang-ups counted as failed starts: {:#?}",
        b.log.lines()
    );
    // The same quick non-zero exit with the client still there is a
    // failed start: the throttle still catches a crashing service.
    for _ in 0..4 {
        assert_eq!(tcp_request(&addr, "x"), "");
    }
    b.log.wait_count("exited 3", 4, T);
    let t = b.log.wait_for("event=\"throttled\"", T);
    assert!(t.contains("failed starts in a row"), "{t}");
}

/// berth's children named `name` (berth-stage, berth-zygote).
fn children_named(berth: u32, name: &str) -> Vec<u32> {
    children(berth)
        .into_iter()
        .filter(|p| comm(*p) == name)
        .collect()
}

/// berth's containers: PID 1 of each (forked by the zygote).
fn stage_children(berth: u32) -> Vec<u32> {
    common::containers(berth)
}

/// Poll until `f` returns Some, or panic after T.
fn until<R>(what: &str, mut f: impl FnMut() -> Option<R>) -> R {
    let end = std::time::Instant::now() + T;
    loop {
        if let Some(r) = f() {
            return r;
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn stages_come_from_a_zygote_that_is_replaced_if_it_dies() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp("zyg", &inetd_toml(""));
    assert_eq!(tcp_request(&addr, "echo one"), "one\n");
    let zygotes = children_named(b.pid(), "berth-zygote");
    assert_eq!(zygotes.len(), 1, "zygotes: {zygotes:?}");
    let z1 = zygotes[0];
    // What a zygote forks (PID 1 of the container) is berth's own child
    // (CLONE_PARENT), so berth reaps it and gets the application's exit
    // status.
    let held = hold(&addr);
    let stage = until("a stage for the held connection", || {
        stage_children(b.pid()).first().copied()
    });
    assert_ne!(stage, z1);
    drop(held);
    tcp_request(&addr, "exit 7");
    b.log.wait_for("exited 7", T);
    // SAFETY: kill takes a pid and a signal; z1 is a process this test's
    // berth started.
    unsafe { libc::kill(z1 as i32, libc::SIGKILL) };
    assert_eq!(tcp_request(&addr, "echo two"), "two\n");
    b.log.wait_for("sandbox zygote unusable", T);
    let now = children_named(b.pid(), "berth-zygote");
    assert_eq!(now.len(), 1, "zygotes after the kill: {now:?}");
    assert_ne!(now[0], z1, "the dead zygote is still listed");
}

#[test]
fn a_killed_foreground_berth_takes_its_containers_along() {
    if !require_root() {
        return;
    }
    // Without scopes nothing else would clean up: PID 1 (forked by the
    // zygote, but berth's child) dies with berth.
    let (mut b, addr) = Berth::start_tcp("orphan", &inetd_toml(""));
    let held = hold(&addr);
    let stage = until("a stage for the held connection", || {
        stage_children(b.pid()).first().copied()
    });
    let init = until("PID 1 of the held connection", || {
        inits(b.pid()).first().copied()
    });
    let zygote = children_named(b.pid(), "berth-zygote");
    assert_eq!(zygote.len(), 1);
    // SAFETY: kill takes a pid and a signal; this is the berth this test started.
    unsafe { libc::kill(b.pid() as i32, libc::SIGKILL) };
    let _ = b.stop();
    // Gone, or a zombie waiting for whoever inherited it.
    let ended = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
            st.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    };
    until("the container and the zygote to end with berth", || {
        (ended(stage) && ended(init) && ended(zygote[0])).then_some(())
    });
    drop(held);
}

#[test]
fn listen_warm_one_prepares_the_next_container_before_it_is_needed() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp(
        "webwarm",
        &listen_toml("warm = 1\nidle_timeout = \"300ms\""),
    );
    // Before any connection: a parked stage with its PID 1, no application.
    b.log.wait_count("sandbox prepared ahead", 1, T);
    let init = until("PID 1 of the parked sandbox", || {
        inits(b.pid()).first().copied()
    });
    assert_eq!(comm(init), "berth-init");
    assert!(
        children(init).is_empty(),
        "an application runs before any connection"
    );
    assert_eq!(b.log.count("event=\"started\""), 0);
    // The first connection is served by that very sandbox.
    let r = json(&tcp_request(&addr, "report"));
    assert_eq!(r["uid"], 65534);
    let started = b.log.wait_for("event=\"started\"", T);
    let prepared = b.log.wait_for("sandbox prepared ahead", T);
    assert_eq!(container_of(&started), container_of(&prepared));
    assert!(started.contains(&format!("pid={init}")), "{started}");
    // Idled out, the next one is prepared at once, in a new PID 1.
    b.log.wait_for("idle_timeout reached", T);
    b.log.wait_count("sandbox prepared ahead", 2, T);
    let init2 = until("PID 1 of the next parked sandbox", || {
        inits(b.pid()).first().copied()
    });
    assert_ne!(init2, init);
    assert!(!alive(init), "the idled container's PID 1 is still there");
    assert_eq!(tcp_request(&addr, "echo again"), "again\n");
    let started2 = b.log.wait_count("event=\"started\"", 2, T);
    assert!(
        started2[1].contains(&format!("pid={init2}")),
        "{}",
        started2[1]
    );
}

#[test]
fn warm_sandboxes_wait_parked_and_serve_connections() {
    if !require_root() {
        return;
    }
    let (mut b, addr) = Berth::start_tcp("warm", &inetd_toml("warm = 2"));
    b.log.wait_count("sandbox prepared ahead", 2, T);
    // Two parked stages, no application yet.
    let parked = stage_children(b.pid());
    assert_eq!(parked.len(), 2, "parked stages: {parked:?}");
    assert_eq!(b.log.count("event=\"started\""), 0);
    // A connection takes a parked sandbox: the container id is the one
    // prepared ahead, and the pool is refilled.
    let r = json(&tcp_request(&addr, "report"));
    assert_eq!(r["uid"], 65534);
    let started = b.log.wait_for("event=\"started\"", T);
    let prepared: Vec<String> = b
        .log
        .lines()
        .into_iter()
        .filter(|l| l.contains("sandbox prepared ahead"))
        .collect();
    let id = started
        .split("container=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(
        prepared.iter().any(|l| l.contains(&id)),
        "started {id} was not a warm one"
    );
    b.log.wait_count("sandbox prepared ahead", 3, T);
    assert_eq!(tcp_request(&addr, "echo again"), "again\n");
    // Stopping discards the parked ones too.
    assert_eq!(b.stop(), Some(0));
    for p in parked {
        assert!(!alive(p), "parked stage {p} outlived berth");
    }
}

#[test]
fn connections_beyond_the_pool_wait_for_sandboxes_under_way() {
    if !require_root() {
        return;
    }
    // warm = 1 and five connections at once: the first takes the parked
    // sandbox, the others wait for the refills under way instead of each
    // building its own (which would queue behind them in systemd).
    let (b, addr) = Berth::start_tcp("burst", &inetd_toml("warm = 1"));
    b.log.wait_count("sandbox prepared ahead", 1, T);
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || tcp_request(&addr, &format!("echo b{i}")))
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        assert_eq!(c.join().unwrap(), format!("b{i}\n"));
    }
    let started = b.log.wait_count("event=\"started\"", 5, T);
    let prepared: Vec<String> = b
        .log
        .lines()
        .into_iter()
        .filter(|l| l.contains("sandbox prepared ahead"))
        .map(|l| container_of(&l))
        .collect();
    for s in &started {
        let id = container_of(s);
        assert!(prepared.contains(&id), "{id} was built on demand: {s}");
    }
}

#[test]
fn listen_steady_short_connections_keep_one_container() {
    if !require_root() {
        return;
    }
    // Each request takes about a millisecond, far less than the idle
    // sampling step (a tenth of idle_timeout); arriving every 100 ms they
    // must still count as activity against the 3 s idle timeout (the
    // margin is for loaded machines, where a 100 ms sleep has been seen
    // to take a second).
    let (b, addr) = Berth::start_tcp("web", &listen_toml("idle_timeout = \"3s\""));
    let first = net_ns_of(&tcp_request(&addr, "report"));
    // Twice the idle timeout at least: without the activity the
    // container would be stopped within it.
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(7) {
        assert_eq!(tcp_request(&addr, &format!("echo s{i}")), format!("s{i}\n"));
        std::thread::sleep(Duration::from_millis(100));
        i += 1;
    }
    let last = net_ns_of(&tcp_request(&addr, "report"));
    assert_eq!(
        first,
        last,
        "the container was replaced under steady traffic; berth said:\n{}",
        b.log.lines().join("\n")
    );
    assert_eq!(b.log.count("event=\"started\""), 1);
    assert_eq!(b.log.count("idle_timeout reached"), 0);
    b.log.wait_for("idle_timeout reached", T);
}
