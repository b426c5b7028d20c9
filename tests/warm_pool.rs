//! The warm pool keeps up (issue 14 point 2), on the host with `berth run
//! --no-scope`: after a burst drains the pool, refills run in parallel
//! (never more than `warm` parked and under way together), a burst larger
//! than the pool is served completely from sandboxes prepared ahead, the
//! pool is full again afterwards, and a zygote killed while refills are
//! under way is replaced and the pool recovers. No timing is asserted: the
//! tests read berth's own log (`event="warm-refill"`, `"warm-parked"`).
//!
//! Also the stage's new order (point 2's scope job as soon as the stage
//! exists): a parked PID 1 is in namespaces of its own, unshared by itself,
//! while its stage stayed in the host's, but for the pid namespace it made.

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

/// The tests count berth's children and read its log; one at a time keeps
/// the bursts of one from slowing the other's refills past recognition.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn inetd_toml(warm: u32) -> String {
    format!(
        "mode = \"inetd\"\nexec = [\"/probe\"]\nwarm = {warm}\nmax_connections = 200\n\
         [sandbox]\nread_only = [\"{}\"]\n",
        probe_bind()
    )
}

/// The value of `key=N` in a log line.
fn field(line: &str, key: &str) -> usize {
    let pat = format!(" {key}=");
    line.split(&pat)
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// Wait until a `warm-parked` line after the first `skip` lines says the
/// pool holds `warm`.
fn wait_full(b: &Berth, skip: usize, warm: usize) {
    let end = Instant::now() + T;
    loop {
        let full = b
            .log
            .lines()
            .iter()
            .skip(skip)
            .any(|l| l.contains("event=\"warm-parked\"") && field(l, "parked") == warm);
        if full {
            return;
        }
        assert!(
            Instant::now() < end,
            "the pool did not fill to {warm} again; berth said:\n{}",
            b.log.lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` clients at once, one connection each; their answers in order.
fn burst(addr: &str, n: usize, tag: &str) -> Vec<(String, String)> {
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let addr = addr.to_owned();
            let word = format!("{tag}{i}");
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).expect("connect");
                s.set_read_timeout(Some(T)).unwrap();
                s.write_all(format!("echo {word}\n").as_bytes()).unwrap();
                let mut out = String::new();
                let r = s.read_to_string(&mut out);
                assert!(r.is_ok(), "connection {word}: {r:?} (left hanging?)");
                (word, out)
            })
        })
        .collect();
    clients.into_iter().map(|c| c.join().unwrap()).collect()
}

/// Every `warm-refill` line: refills under way plus parked never above warm.
fn assert_never_over(lines: &[String], warm: usize) {
    for l in lines.iter().filter(|l| l.contains("event=\"warm-refill\"")) {
        assert!(
            field(l, "refills") + field(l, "parked") <= warm,
            "more than warm = {warm} parked and under way: {l}"
        );
    }
}

#[test]
fn a_burst_larger_than_the_pool_is_served_and_refilled_in_parallel() {
    if !require_root() {
        return;
    }
    let _one = one_at_a_time();
    let warm = 4;
    let (b, addr) = Berth::start_tcp("wpburst", &inetd_toml(warm as u32));
    wait_full(&b, 0, warm);
    let before = b.log.lines().len();

    // Three times the pool at once.
    let answers = burst(&addr, 3 * warm, "b");
    for (word, out) in &answers {
        assert_eq!(out, &format!("{word}\n"), "connection {word}");
    }
    let started = b.log.wait_count("event=\"started\"", 3 * warm, T);
    let lines = b.log.lines();
    let after: Vec<String> = lines[before..].to_vec();

    // Served from sandboxes prepared ahead, none built on demand: the
    // connections beyond the pool waited for the refills.
    let prepared: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("sandbox prepared ahead"))
        .map(|l| container_of(l))
        .collect();
    for s in &started {
        let id = container_of(s);
        assert!(prepared.contains(&id), "{id} was built on demand: {s}");
    }

    // The burst drained the pool: refills ran several at once, and all at
    // once ("drained") while connections waited.
    let refills: Vec<&String> = after
        .iter()
        .filter(|l| l.contains("event=\"warm-refill\""))
        .collect();
    assert!(
        refills.iter().any(|l| field(l, "refills") >= 2),
        "no parallel refill after the burst:\n{}",
        after.join("\n")
    );
    assert!(
        refills.iter().any(|l| l.contains("drained=true")),
        "the pool never counted as drained:\n{}",
        after.join("\n")
    );
    assert_never_over(&lines, warm);

    // Full again afterwards, and the next connection takes a parked one.
    wait_full(&b, before, warm);
    let n = b.log.count("event=\"started\"");
    assert_eq!(tcp_request(&addr, "echo after"), "after\n");
    let last = b
        .log
        .wait_count("event=\"started\"", n + 1, T)
        .pop()
        .unwrap();
    let prepared_now = b.log.lines();
    let id = container_of(&last);
    assert!(
        prepared_now
            .iter()
            .any(|l| l.contains("sandbox prepared ahead") && l.contains(&id)),
        "after the burst {id} was built on demand"
    );
    assert_never_over(&b.log.lines(), warm);
}

/// berth's child named `name`.
fn child_named(berth: u32, name: &str) -> Option<u32> {
    children(berth).into_iter().find(|p| comm(*p) == name)
}

#[test]
fn zygote_killed_while_refills_are_under_way_is_replaced_and_the_pool_recovers() {
    if !require_root() {
        return;
    }
    let _one = one_at_a_time();
    let warm = 4;
    let (b, addr) = Berth::start_tcp("wpzygote", &inetd_toml(warm as u32));
    wait_full(&b, 0, warm);
    let zygote = child_named(b.pid(), "berth-zygote").expect("a zygote");
    let before = b.log.lines().len();

    // A burst in the background; once it drained the pool and refills are
    // under way, the zygote is killed.
    let addr2 = addr.clone();
    let clients = std::thread::spawn(move || burst(&addr2, 3 * warm, "z"));
    let end = Instant::now() + T;
    while !b.log.lines()[before..]
        .iter()
        .any(|l| l.contains("event=\"warm-refill\"") && l.contains("drained=true"))
    {
        assert!(Instant::now() < end, "no refill after the burst began");
        std::thread::sleep(Duration::from_millis(1));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // No connection hangs (burst() asserts it), none gets a wrong answer.
    let answers = clients.join().unwrap();
    let served = answers
        .iter()
        .filter(|(word, out)| out == &format!("{word}\n"))
        .count();
    for (word, out) in &answers {
        assert!(
            out.is_empty() || out == &format!("{word}\n"),
            "connection {word}: a wrong answer {out:?}"
        );
    }
    eprintln!(
        "burst with the zygote killed: {served} of {} served",
        answers.len()
    );

    // A new zygote; the pool fills to warm again and serves.
    let end = Instant::now() + T;
    let replacement = loop {
        if let Some(z) = child_named(b.pid(), "berth-zygote").filter(|z| *z != zygote) {
            break z;
        }
        assert!(Instant::now() < end, "no new zygote");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !std::path::Path::new(&format!("/proc/{zygote}")).exists(),
        "the killed zygote {zygote} was not reaped"
    );
    wait_full(&b, before, warm);
    assert_eq!(tcp_request(&addr, "echo later"), "later\n");
    assert_eq!(
        child_named(b.pid(), "berth-zygote"),
        Some(replacement),
        "the replacement stays"
    );
    assert_never_over(&b.log.lines(), warm);
}

/// The namespace `name` of process `pid`.
fn ns(pid: u32, name: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{name}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn a_parked_pid1_is_berths_own_child_in_new_namespaces_with_no_outer_stage() {
    if !require_root() {
        return;
    }
    let _one = one_at_a_time();
    let (b, addr) = Berth::start_tcp("wpns", &inetd_toml(1));
    wait_full(&b, 0, 1);
    // The zygote forks PID 1 straight into its pid namespace, as berth's
    // child: no outer stage process is left to cost a fork and its memory.
    let init = child_named(b.pid(), "berth-init").expect("a parked PID 1, berth's child");
    assert!(
        child_named(b.pid(), "berth-stage").is_none(),
        "an outer stage next to PID 1"
    );
    assert!(children(init).is_empty(), "PID 1 forked before Start");
    for name in ["pid", "mnt", "net", "uts", "ipc"] {
        assert_ne!(
            ns(init, name),
            host_ns(name),
            "PID 1 shares the host's {name}"
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.ends_with("\t1"),
        "not PID 1 of its namespace: {nspid}"
    );
    // PID 1 keeps no namespace descriptor: the zygote's nursery network
    // namespace (net::nursery) was closed once PID 1's own was made from it.
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{init}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("net:[") || l.starts_with("mnt:["))
        .collect();
    assert!(held.is_empty(), "PID 1 holds namespaces: {held:?}");
    // And the sandbox serves as before.
    let r = json(&tcp_request(&addr, "report"));
    assert_eq!(r["uid"], 65534);
}

#[test]
fn a_connection_waiting_for_a_stuck_refill_costs_no_cpu_and_is_served_after_its_deadline() {
    if !require_root() {
        return;
    }
    let _one = one_at_a_time();
    // The pool's only refill hangs before Prepared (debug-build hook, as in
    // tests/deadline.rs) until the stage deadline kills it.
    let hang_dir = tempfile::tempdir().unwrap();
    let token = hang_dir.path().join("hang");
    std::fs::write(&token, "").unwrap();
    let (b, addr) = Berth::start_tcp_env(
        "wpstuck",
        &inetd_toml(1),
        &[
            ("BERTH_TEST_STAGE_HANG", Some(token.to_str().unwrap())),
            ("BERTH_STAGE_DEADLINE_MS", Some("5000")),
        ],
    );
    let end = Instant::now() + T;
    while token.exists() {
        assert!(Instant::now() < end, "no refill claimed the hang token");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A connection finds the pool empty with one refill under way: it
    // waits for that one.
    let addr2 = addr.clone();
    let client = std::thread::spawn(move || tcp_request(&addr2, "echo waited"));
    b.log.wait_for("event=\"warm-wait\"", T);
    // Waiting is sleeping: a resource bound (a filler and waiter waking
    // each other would use the whole window), not a speed claim.
    let window = Duration::from_secs(2);
    let cpu0 = cpu_time(b.pid());
    std::thread::sleep(window);
    let used = cpu_time(b.pid()) - cpu0;
    eprintln!("berth used {used:?} of CPU in {window:?} with a connection waiting");
    assert!(
        used < Duration::from_millis(600),
        "berth used {used:?} of CPU in {window:?} while a connection waited: it spins"
    );
    // The deadline ends the stuck refill; the connection is then served.
    assert_eq!(client.join().unwrap(), "waited\n");
    b.log.wait_for("timed out", T);
}
