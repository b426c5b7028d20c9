//! Reload (SIGHUP to `berth run`, as to `berth serve`): parked warm
//! sandboxes of the old definition are replaced, `warm` resizes the pool,
//! and a container already running keeps the definition it started with.

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(20);

fn toml(mode: &str, extra: &str, greeting: &str) -> String {
    format!(
        "mode = \"{mode}\"\nexec = [\"/probe\"]\n{extra}\nenvironment = {{ GREETING = \"{greeting}\" }}\n[sandbox]\nread_only = [\"{}\"]\n",
        probe_bind()
    )
}

/// The parked (or running) containers: PID 1 of each, berth's child.
fn stages(berth: u32) -> Vec<u32> {
    common::containers(berth)
}

/// Poll until `f` holds, or panic with `what` after T.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn greeting(addr: &str) -> String {
    let r = json(&tcp_request(addr, "report"));
    r["env"]["GREETING"].as_str().unwrap_or("").to_owned()
}

fn reload(b: &Berth, toml: &str, nth: usize) {
    b.reload(toml, nth, T);
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn inetd_reload_replaces_parked_sandboxes_and_resizes_the_pool() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp("rewarm", &toml("inetd", "warm = 2", "old"));
    b.log.wait_count("sandbox prepared ahead", 2, T);
    until("two parked stages", || stages(b.pid()).len() == 2);
    let parked = stages(b.pid());

    // Right after the reload, with sandboxes of the old definition still
    // parked, a connection gets the new definition.
    reload(&b, &toml("inetd", "warm = 2", "new"), 1);
    assert_eq!(greeting(&addr), "new");
    // The old parked ones are gone (stage ended), the pool is full again.
    until("the old parked stages to end", || {
        parked.iter().all(|p| !alive(*p))
    });
    until("two parked stages again", || stages(b.pid()).len() == 2);

    // warm up: the pool grows.
    reload(&b, &toml("inetd", "warm = 3", "new"), 2);
    until("three parked stages", || stages(b.pid()).len() == 3);
    let three = stages(b.pid());
    // Unchanged definition, warm down: extras discarded, the rest stay.
    reload(&b, &toml("inetd", "warm = 1", "new"), 3);
    until("one parked stage", || stages(b.pid()).len() == 1);
    assert!(
        three.contains(&stages(b.pid())[0]),
        "an unchanged sandbox was replaced"
    );
    // warm = 0: none parked, connections still served on demand.
    reload(&b, &toml("inetd", "warm = 0", "zero"), 4);
    until("no parked stage", || stages(b.pid()).is_empty());
    assert_eq!(greeting(&addr), "zero");
    assert!(b.log.count("warm sandbox discarded") >= 4);
}

#[test]
fn reload_refuses_a_broken_file_and_keeps_the_pool() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp("rebroken", &toml("inetd", "warm = 1", "old"));
    b.log.wait_count("sandbox prepared ahead", 1, T);
    until("a parked stage", || stages(b.pid()).len() == 1);
    let parked = stages(b.pid());
    std::fs::write(
        &b.service_file,
        toml("inetd", "warm = 1\nbogus_key = 1", "new"),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let m = b.log.wait_for("reload refused, old configuration kept", T);
    assert!(m.contains("bogus_key"), "{m}");
    assert_eq!(stages(b.pid()), parked, "a refused reload touched the pool");
    assert_eq!(greeting(&addr), "old");
}

#[test]
fn listen_running_container_keeps_its_definition_and_the_next_gets_the_new() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp(
        "relisten",
        &toml("listen", "warm = 1\nidle_timeout = \"300ms\"", "old"),
    );
    b.log.wait_count("sandbox prepared ahead", 1, T);
    // A held connection keeps the running container busy across the reload.
    let mut held = TcpStream::connect(&addr).unwrap();
    held.write_all(b"hold\n").unwrap();
    assert_eq!(greeting(&addr), "old");
    b.log.wait_for("event=\"started\"", T);
    reload(
        &b,
        &toml("listen", "warm = 1\nidle_timeout = \"300ms\"", "new"),
        1,
    );
    assert_eq!(greeting(&addr), "old", "the running container changed");
    drop(held);
    b.log.wait_for("idle_timeout reached", T);
    // The next one, parked after the reload, has the new definition.
    assert_eq!(greeting(&addr), "new");
}

#[test]
fn listen_reload_replaces_the_parked_sandbox() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp("relpark", &toml("listen", "warm = 1", "old"));
    b.log.wait_count("sandbox prepared ahead", 1, T);
    until("a parked stage", || stages(b.pid()).len() == 1);
    let parked = stages(b.pid())[0];
    reload(&b, &toml("listen", "warm = 1", "new"), 1);
    until("the old parked stage to end", || !alive(parked));
    b.log.wait_count("sandbox prepared ahead", 2, T);
    until("a new parked stage", || stages(b.pid()).len() == 1);
    // warm = 0: the parked one goes and none replaces it.
    reload(&b, &toml("listen", "warm = 0", "zero"), 2);
    until("no parked stage", || stages(b.pid()).is_empty());
    assert_eq!(greeting(&addr), "zero");
}

#[test]
fn a_storm_of_reloads_under_load_leaks_no_sandbox() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp("restorm", &toml("inetd", "warm = 2", "g0"));
    b.log.wait_count("sandbox prepared ahead", 2, T);
    // Clients keep connecting while the definition changes twenty times.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (addr, stop) = (addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if tcp_request(&addr, "echo x") == "x\n" {
                    served += 1;
                }
            }
            served
        })
    };
    for i in 1..=20 {
        let warm = 1 + i % 3;
        reload(
            &b,
            &toml("inetd", &format!("warm = {warm}"), &format!("g{i}")),
            i,
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        client.join().unwrap() > 0,
        "no connection served during the storm"
    );
    // The last definition had warm = 1 + 20 % 3 = 3: exactly three parked
    // stages stay, nothing of the earlier pools.
    until("three parked stages", || stages(b.pid()).len() == 3);
    assert_eq!(greeting(&addr), "g20");
    until("three parked stages again", || stages(b.pid()).len() == 3);
}
