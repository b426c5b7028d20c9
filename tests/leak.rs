//! No leaks: 1,000 inetd containers leave the host's mounts, network
//! namespaces and berth's descriptors as they were. In its own test binary
//! so no other test's containers run meanwhile.

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

fn inetd_toml(extra: &str) -> String {
    format!(
        "mode = \"inetd\"\nexec = [\"/probe\"]\n{extra}\n[sandbox]\nread_only = [\"{}\"]\n",
        probe_bind()
    )
}

/// Host mounts berth could have left: anything under its staging
/// directory or made from its root tmpfs. (Unrelated mounts other jobs make
/// on the host meanwhile do not count.)
fn mount_table() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            let mount_point = l.split_whitespace().nth(4).unwrap_or("");
            mount_point.starts_with("/run/berth") || l.contains(" berth-root ")
        })
        .map(|l| l.to_owned())
        .collect()
}

#[test]
fn thousand_inetd_connections_leak_nothing() {
    if !require_root() {
        return;
    }
    let (b, addr) = Berth::start_tcp("leak", &inetd_toml(""));
    // Warm up once so lazily opened descriptors (runtime, /dev/null) exist.
    assert_eq!(tcp_request(&addr, "echo warm"), "warm\n");
    b.log.wait_count("event=\"stopped\"", 1, T);
    wait_settled(b.pid(), T);
    let mounts = mount_table();
    let netns = net_namespaces("leak");
    let fds = fd_count(b.pid());

    let n = 1000;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for i in 0..n / 4 {
                    let want = format!("c{t}-{i}\n");
                    assert_eq!(tcp_request(&addr, &format!("echo c{t}-{i}")), want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    b.log
        .wait_count("event=\"stopped\"", n + 1, Duration::from_secs(120));
    assert_eq!(b.log.count("event=\"started\""), n + 1);
    assert_eq!(mount_table(), mounts, "host mount table changed");
    assert_eq!(
        net_namespaces("leak"),
        netns,
        "network namespaces left behind"
    );
    wait_settled(b.pid(), T);
    let after = wait_fds_at_most(b.pid(), fds, T);
    assert!(
        after <= fds,
        "descriptors leaked in berth: {after} after, {fds} before"
    );
    // berth's only child left is the zygote that forks the stages.
    let children: Vec<String> = children(b.pid()).into_iter().map(comm).collect();
    assert_eq!(children, ["berth-zygote"], "processes left behind");
}
