//! Deadlines on what berth waits for (issue 10.2): a stage that hangs while
//! building its sandbox is killed when its deadline passes, its launch slot
//! is freed and the service serves the next connection.
//!
//! The hang comes from a debug-build hook (`BERTH_TEST_STAGE_HANG`): the
//! container that claims (removes) the named file stops before reporting
//! `Prepared`, as one stuck on a bind from a hung mount would.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(30);

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

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// berth's containers (PID 1, or a stage) and their children.
fn stage_tree(berth: u32) -> Vec<u32> {
    let stages = common::containers(berth);
    let mut all = stages.clone();
    for s in stages {
        all.extend(children(s));
    }
    all
}

#[test]
fn hung_stages_are_killed_and_their_slots_serve_the_next_connection() {
    if !require_root() {
        return;
    }
    let hang_dir = tempfile::tempdir().expect("tempdir");
    let token = hang_dir.path().join("hang");
    let toml = format!(
        "mode = \"inetd\"\nexec = [\"/probe\"]\nmax_connections = 2\n\
         [sandbox]\nread_only = [\"{}\"]\n",
        probe_bind()
    );
    let (dir, file) = service_dir("hang", &toml);
    let b = Berth::start_file_env(
        dir,
        file,
        &["127.0.0.1:0".to_string()],
        &[
            (
                "BERTH_TEST_STAGE_HANG",
                Some(token.to_str().expect("utf-8 path")),
            ),
            ("BERTH_STAGE_DEADLINE_MS", Some("8000")),
        ],
    );
    let addr = b.addr();

    // Two connections whose containers hang: each claims the token.
    let mut hung = Vec::new();
    for _ in 0..2 {
        std::fs::write(&token, "").expect("write token");
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.write_all(b"echo never\n").expect("send");
        hung.push(s);
        until("a stage to claim the hang token", || {
            (!token.exists()).then_some(())
        });
    }
    // PID 1 of each (forked by the zygote, no outer stage).
    let stuck = until("both hung containers' PID 1", || {
        let t = stage_tree(b.pid());
        (t.len() >= 2).then_some(t)
    });

    // Both slots are held: a third connection is refused at once.
    let mut third = TcpStream::connect(&addr).expect("connect");
    let _ = third.write_all(b"echo refused\n");
    third.set_read_timeout(Some(T)).unwrap();
    let mut out = String::new();
    let _ = third.read_to_string(&mut out);
    assert_eq!(out, "", "over max_connections while the stages hang");
    b.log.wait_for("max_connections (2) reached", T);

    // The deadline kills both stages and logs why.
    let failed = b
        .log
        .wait_count("waiting for the sandbox stage's Prepared", 2, T);
    for l in &failed {
        assert!(l.contains("event=\"failed\""), "not a failed event: {l}");
    }
    // Their connections are closed, not left hanging.
    for mut s in hung {
        s.set_read_timeout(Some(T)).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert_eq!(out, "", "a hung container's connection");
    }
    // The freed slots serve the next connection.
    assert_eq!(tcp_request(&addr, "echo served"), "served\n");
    // No hung stage or container process is left.
    until("the hung stages to be gone", || {
        stuck.iter().all(|p| !alive(*p)).then_some(())
    });
}
