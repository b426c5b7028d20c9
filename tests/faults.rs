//! Faults survived (issue 10.6 e, f, g), on the host with `berth run
//! --no-scope`:
//!
//! * the supervisor runs out of descriptors (`RLIMIT_NOFILE`): it backs off
//!   instead of spinning, says why once, and serves again once descriptors
//!   are free (inetd and listen mode);
//! * a container fills its `/tmp`: ENOSPC there, while another container,
//!   berth and the host's `/tmp` carry on;
//! * the zygote is killed in a burst: replaced, every connection in flight
//!   is answered or closed, none left hanging, and later ones are served.
//!
//! In its own test binary and one test at a time: the tests count berth's
//! CPU time, descriptors and children.

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn toml(mode: &str, extra: &str) -> String {
    format!(
        "mode = \"{mode}\"\nexec = [\"/probe\"]\n{extra}\n[sandbox]\nread_only = [\"{}\"]\n",
        probe_bind()
    )
}

/// Poll until `f` returns Some, or panic after T.
fn until<R>(what: &str, mut f: impl FnMut() -> Option<R>) -> R {
    let end = Instant::now() + T;
    loop {
        if let Some(r) = f() {
            return r;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A connection running the probe's `hold`: open until we close it.
fn hold(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"hold\n").expect("send hold");
    s
}

/// Set the soft `RLIMIT_NOFILE` of process `pid` (the hard limit stays).
fn set_nofile(pid: u32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with a null new limit only reads into `old`.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "prlimit(get): {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit; the old value is not asked for.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit(set): {}", std::io::Error::last_os_error());
}

/// What berth logs when it runs out of descriptors.
const EXHAUSTED: &str = "event=\"exhausted\"";
/// How long berth is watched while out of descriptors.
const WINDOW: Duration = Duration::from_secs(3);
/// CPU berth may use in WINDOW while out of descriptors: a resource bound
/// (an accept loop that spins uses the whole window), not a speed claim.
const CPU_BOUND: Duration = Duration::from_millis(600);

/// While berth is out of descriptors: over WINDOW it burns little CPU and
/// logs the exhaustion once (the first entry, already there, and no more).
fn assert_quiet_while_exhausted(b: &Berth) {
    let first = b.log.wait_for(EXHAUSTED, T);
    assert!(
        first.contains("EMFILE") && first.contains("RLIMIT_NOFILE"),
        "the entry says why: {first}"
    );
    let cpu0 = cpu_time(b.pid());
    std::thread::sleep(WINDOW);
    let used = cpu_time(b.pid()) - cpu0;
    eprintln!("berth used {used:?} of CPU in {WINDOW:?} while out of descriptors");
    assert!(
        used < CPU_BOUND,
        "berth used {used:?} of CPU in {WINDOW:?} while out of descriptors: it spins"
    );
    assert_eq!(
        b.log.count(EXHAUSTED),
        1,
        "logged once per interval, not per attempt"
    );
    assert_eq!(
        b.log.count("event=\"throttled\""),
        0,
        "running out of descriptors is not the application's failure"
    );
}

#[test]
fn inetd_out_of_descriptors_backs_off_logs_once_and_recovers() {
    if !require_root() {
        return;
    }
    let _one = one_at_a_time();
    let (b, addr) = Berth::start_tcp("nofile", &toml("inetd", "max_connections = 200"));
    assert_eq!(tcp_request(&addr, "echo warm"), "warm\n");
    b.log.wait_count("event=\"stopped\"", 1, T);
    wait_settled(b.pid(), T);
    // Room for a few containers only (each holds a couple of descriptors
    // in berth while it runs).
    let base = fd_count(b.pid()) as u64;
    set_nofile(b.pid(), base + 12);

    // Hold connections until berth runs out.
    let mut held = Vec::new();
    while b.log.count(EXHAUSTED) == 0 {
        assert!(
            held.len() < 40,
            "40 held connections and berth never ran out"
        );
        let started = b.log.count("event=\"started\"");
        held.push(hold(&addr));
        until("a container to start or berth to run out", || {
            (b.log.count("event=\"started\"") > started || b.log.count(EXHAUSTED) > 0).then_some(())
        });
    }
    let running = b.log.count("event=\"started\"") - 1;
    assert!(running >= 1, "some containers ran before berth ran out");

    // Connections meanwhile wait in the backlog.
    let mut waiting = TcpStream::connect(&addr).expect("connect while exhausted");
    waiting.write_all(b"echo waited\n").unwrap();
    assert_quiet_while_exhausted(&b);

    // Descriptors free up: the waiting connection and new ones are served.
    drop(held);
    waiting.set_read_timeout(Some(T)).unwrap();
    let mut out = String::new();
    let _ = waiting.read_to_string(&mut out);
    assert_eq!(out, "waited\n", "the connection that waited is served");
    assert_eq!(tcp_request(&addr, "echo after"), "after\n");
    let children: Vec<String> = children(b.pid()).into_iter().map(comm).collect();
    assert!(children.contains(&"berth-zygote".to_string()));
}

#[test]
fn listen_out_of_descriptors_backs_off_logs_once_and_recovers() {
    if !require_root() {
        return;
    }
    let _one = one_at_a_time();
    let (b, addr) = Berth::start_tcp("nofilel", &toml("listen", "idle_timeout = \"1s\""));
    // Served once (berth's own descriptors are all open), then idle.
    assert_eq!(tcp_request(&addr, "echo warm"), "warm\n");
    b.log.wait_count("event=\"stopped\"", 1, T);
    wait_settled(b.pid(), T);
    let base = fd_count(b.pid()) as u64;
    // Not one descriptor more: the container cannot be started. The limit
    // bounds descriptor numbers, not their count, so it is the lowest free
    // number (a hole below the highest open one would still be allocated).
    shut_fd_table(b.pid());
    let mut waiting = TcpStream::connect(&addr).expect("connect");
    waiting.write_all(b"echo waited\n").unwrap();
    assert_quiet_while_exhausted(&b);
    assert_eq!(b.log.count("event=\"started\""), 1);

    // Room again: the connection that waited is served.
    set_nofile(b.pid(), base + 64);
    waiting.set_read_timeout(Some(T)).unwrap();
    let mut out = String::new();
    let _ = waiting.read_to_string(&mut out);
    assert_eq!(out, "waited\n", "the connection that waited is served");
    assert_eq!(tcp_request(&addr, "echo after"), "after\n");
}

/// The lowest descriptor number `pid` does not have open.
fn lowest_free_fd(pid: u32) -> u64 {
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

/// RLIMIT_NOFILE of `pid` at its lowest free descriptor number, so it can
/// open none; set again until no descriptor closed meanwhile left a hole
/// below it (berth closes a container's last ones just after the reap).
fn shut_fd_table(pid: u32) {
    let end = Instant::now() + T;
    loop {
        let free = lowest_free_fd(pid);
        set_nofile(pid, free);
        std::thread::sleep(Duration::from_millis(50));
        if lowest_free_fd(pid) == free {
            return;
        }
        assert!(Instant::now() < end, "berth's descriptors never settled");
    }
}

/// berth's child named berth-zygote.
fn zygote(berth: u32) -> Option<u32> {
    children(berth)
        .into_iter()
        .find(|p| comm(*p) == "berth-zygote")
}

#[test]
fn zygote_killed_in_a_burst_is_replaced_and_no_connection_hangs() {
    if !require_root() {
        return;
    }
    let _one = one_at_a_time();
    let (b, addr) = Berth::start_tcp("zykill", &toml("inetd", "max_connections = 200"));
    assert_eq!(tcp_request(&addr, "echo warm"), "warm\n");
    let first = zygote(b.pid()).expect("a zygote after the first container");

    // A burst: 24 clients, 8 connections each, one after another.
    let clients: Vec<_> = (0..24)
        .map(|c| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                (0..8)
                    .map(|i| {
                        let word = format!("c{c}n{i}");
                        let mut s = TcpStream::connect(&addr).expect("connect");
                        s.set_read_timeout(Some(T)).unwrap();
                        let _ = s.write_all(format!("echo {word}\n").as_bytes());
                        let mut out = String::new();
                        let r = s.read_to_string(&mut out);
                        let hung = matches!(&r, Err(e) if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ));
                        (word, out, hung)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();

    // Kill the zygote three times while the burst is under way, each time
    // once its replacement has forked a stage.
    let mut killed = vec![];
    let mut victim = first;
    for round in 0..3 {
        let started = b.log.count("event=\"started\"");
        until("containers to start in the burst", || {
            (b.log.count("event=\"started\"") >= started + 3).then_some(())
        });
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap_or_else(|e| panic!("kill zygote {victim} (round {round}): {e}"));
        killed.push(victim);
        victim = until("a new zygote", || {
            zygote(b.pid()).filter(|z| !killed.contains(z))
        });
    }

    let mut served = 0;
    let mut closed = 0;
    for c in clients {
        for (word, out, hung) in c.join().expect("client thread") {
            assert!(!hung, "connection {word} left hanging");
            if out == format!("{word}\n") {
                served += 1;
            } else {
                assert_eq!(out, "", "connection {word}: a wrong answer");
                closed += 1;
            }
        }
    }
    eprintln!("burst: {served} served, {closed} closed unanswered");
    assert!(served > 0, "the burst was served");
    b.log.wait_for("sandbox zygote unusable", T);

    // Later connections are served, by the last zygote.
    assert_eq!(tcp_request(&addr, "echo later"), "later\n");
    assert_eq!(zygote(b.pid()), Some(victim), "the replacement stays");
    // Every stage was reaped: berth's only child is the zygote, no zombie.
    wait_settled(b.pid(), T);
    for k in killed {
        assert!(
            !std::path::Path::new(&format!("/proc/{k}")).exists(),
            "killed zygote {k} not reaped"
        );
    }
}

/// The application processes of `service` (their environment has
/// `BERTH_SERVICE=service`).
fn apps_of(service: &str) -> Vec<u32> {
    let want = format!("BERTH_SERVICE={service}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .any(|v| v == want.as_bytes())
        })
        .collect()
}

#[test]
fn full_tmp_is_enospc_in_that_container_only() {
    if !require_root() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let _one = one_at_a_time();
    let (b, addr) = Berth::start_tcp(
        "tmpfull",
        &format!(
            "mode = \"inetd\"\nexec = [\"/probe\"]\n[sandbox]\ntmp_size = \"4M\"\n\
             read_only = [\"{}\"]\n",
            probe_bind()
        ),
    );
    // A fills its /tmp and keeps it full.
    let mut a = TcpStream::connect(&addr).expect("connect");
    a.write_all(b"fill-tmp keep\n").unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    a.set_read_timeout(Some(T)).unwrap();
    while a.read(&mut byte).expect("A's answer") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let r = json(&String::from_utf8_lossy(&line));
    assert_eq!(r["error"], "ENOSPC", "{r}");
    let written = r["written"].as_u64().unwrap();
    assert!(
        (3 << 20..=4 << 20).contains(&written),
        "A's /tmp held {written} bytes"
    );
    // The full file is in A's own /tmp, not the host's.
    let app = until("A's application", || apps_of("tmpfull").first().copied());
    let in_a = std::fs::metadata(format!("/proc/{app}/root/tmp/fill")).expect("A's /tmp/fill");
    assert!(in_a.len() >= 3 << 20);
    let host_tmp = std::fs::metadata("/tmp").unwrap();
    assert_ne!(
        in_a.dev(),
        host_tmp.dev(),
        "A's /tmp is its own file system"
    );

    // Meanwhile: another container has its whole /tmp, in bytes and files,
    // and berth serves as before.
    let r = json(&tcp_request(&addr, "fill-tmp"));
    assert_eq!(r["error"], "ENOSPC", "{r}");
    assert!(
        r["written"].as_u64().unwrap() >= 3 << 20,
        "B's /tmp is not A's: {r}"
    );
    let r = json(&tcp_request(&addr, "fill-tmp-inodes"));
    assert_eq!(r["error"], "ENOSPC", "{r}");
    let files = r["files"].as_u64().unwrap();
    assert!(
        (900..=1024).contains(&files),
        "4M of /tmp gives 1024 inodes: {files} files"
    );
    assert_eq!(tcp_request(&addr, "echo still"), "still\n");
    assert_eq!(b.log.count("event=\"failed\""), 0);

    // A ends: its /tmp goes with it; the next container's is empty.
    drop(a);
    b.log.wait_count("event=\"stopped\"", 4, T);
    let next = json(&tcp_request(&addr, "report"));
    assert_eq!(next["tmp_entries"], serde_json::json!([]));
}

/// An inetd service whose zygote has the debug-build hook `hook` pointed at
/// a token file, written once berth serves: the next zygote to claim the
/// token misbehaves once. The directory must outlive the test's use of it.
fn start_with_armed_hook(
    name: &str,
    hook: &str,
) -> (Berth, String, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    let (b, addr) = Berth::start_tcp_env(
        name,
        &toml("inetd", ""),
        &[(hook, Some(token.to_str().expect("utf-8 path")))],
    );
    std::fs::write(&token, "").expect("write token");
    (b, addr, dir, token)
}

#[test]
fn a_stage_forked_by_a_zygote_that_died_before_reporting_it_is_reaped() {
    if !require_root() {
        return;
    }
    let _one = one_at_a_time();
    // The zygote forks a stage, then dies before it says so.
    let (b, addr, _dir, token) = start_with_armed_hook("zyorphan", "BERTH_TEST_ZYGOTE_DIE");
    assert_eq!(
        tcp_request(&addr, "echo retried"),
        "retried\n",
        "the fork is retried on a new zygote, with a channel of its own"
    );
    assert!(!token.exists(), "the zygote claimed the token");
    b.log.wait_for("sandbox zygote unusable", T);
    b.log
        .wait_for("forked by a zygote that died before reporting it", T);
    // The unreported stage is killed and reaped: no stage, no zombie.
    b.log.wait_count("event=\"stopped\"", 1, T);
    wait_settled(b.pid(), T);
    assert_eq!(tcp_request(&addr, "echo later"), "later\n");
}

/// The nursery network namespace (`net::nursery`) cannot be made (its
/// child fails as if `unshare` were refused): the zygote says so once and
/// containers are made as before, each in its own network namespace, only
/// sharing the host's TCP table. Fails if a missing nursery broke launches.
#[test]
fn without_the_nursery_namespace_containers_are_still_made() {
    if !require_root() {
        return;
    }
    if !std::path::Path::new("/proc/sys/net/ipv4/tcp_child_ehash_entries").exists() {
        println!("skipped: no tcp_child_ehash_entries on this kernel (no nursery either way)");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run on Linux 6.1+"
        );
        return;
    }
    let _one = one_at_a_time();
    let (b, addr) = Berth::start_tcp_env(
        "nonursery",
        &toml("inetd", ""),
        &[("BERTH_TEST_NO_NURSERY", Some("1"))],
    );
    for _ in 0..2 {
        let r = json(&tcp_request(&addr, "report"));
        assert_ne!(r["namespaces"]["net"], host_ns("net"), "{r}");
        let entries = r["tcp_ehash_entries"].as_i64().expect("tcp_ehash_entries");
        assert!(
            entries < 0,
            "the host's table is shared without the nursery: {entries}"
        );
    }
    let line = b.log.wait_for("no nursery network namespace", T);
    assert!(line.contains("EPERM"), "{line}");
    assert_eq!(b.log.count("no nursery network namespace"), 1);
    assert_eq!(b.log.count("event=\"failed\""), 0);
}

/// The zygote forks PID 1, PID 1's set-up fails at once and it ends, and
/// only then does the zygote die before its reply (a debug-build hook,
/// `BERTH_TEST_ZYGOTE_DIE_AFTER_INIT`). That PID 1 holds no descriptor by
/// which the supervisor could find it: it is found by the failure it sent
/// and reaped, not left a zombie; the connection is served by the next
/// zygote. Fails while such a PID 1 stays an unreaped child of berth.
#[test]
fn a_pid1_that_ended_before_its_zygote_died_is_reaped() {
    if !require_root() {
        return;
    }
    let _one = one_at_a_time();
    let (b, addr, _dir, token) =
        start_with_armed_hook("zyended", "BERTH_TEST_ZYGOTE_DIE_AFTER_INIT");
    assert_eq!(tcp_request(&addr, "echo retried"), "retried\n");
    assert!(!token.exists(), "the zygote claimed the token");
    b.log.wait_for("sandbox zygote unusable", T);
    b.log.wait_for("ended on its own", T);
    wait_settled(b.pid(), T);
    assert_eq!(tcp_request(&addr, "echo later"), "later\n");
}
