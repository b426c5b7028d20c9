//! PID 1 of a container (the reaper, running the berth binary) has nothing
//! to steal and cannot be reached: an application given CAP_SYS_PTRACE, as
//! root, cannot ptrace PID 1 nor open its `/proc/1/mem` or `/proc/1/exe`
//! (with the seccomp filter off too, so the Landlock domain is what is
//! proven), and PID 1 holds no capability, `no_new_privs` and a seccomp
//! filter. The probe's `escape` command reports what it could do.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::Berth;
use serde_json::Value;

const T: Duration = Duration::from_secs(20);
const MODES: [&str; 2] = ["inetd", "listen"];
const CAP_KILL: u64 = 1 << 5;

fn toml(mode: &str, user: &str, sandbox: &[&str]) -> String {
    let mut t = format!("mode = \"{mode}\"\nexec = [\"/probe\"]\nuser = \"{user}\"\n");
    if mode == "listen" {
        t.push_str("idle_timeout = \"30s\"\n");
    }
    t.push_str(&format!(
        "\n[sandbox]\nread_only = [\"{}\"]\n",
        common::probe_bind()
    ));
    for l in sandbox {
        t.push_str(l);
        t.push('\n');
    }
    t
}

/// One `escape` answer from a container of this service.
fn escape(mode: &str, user: &str, sandbox: &[&str]) -> Value {
    let (_b, addr) = Berth::start_tcp("escape", &toml(mode, user, sandbox));
    common::json(&common::tcp_request(&addr, "escape"))
}

fn hex(v: &Value, field: &str) -> u64 {
    let s = v["pid1_status"][field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in PID 1's status: {v}"));
    u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("{field} {s:?}: {e}"))
}

const PTRACE: &str = "capabilities = [\"CAP_SYS_PTRACE\"]";

#[test]
fn app_with_cap_sys_ptrace_cannot_open_pid1_mem_or_exe() {
    if !common::require_root() {
        return;
    }
    for seccomp in ["default", "off"] {
        let filter = format!("seccomp = \"{seccomp}\"");
        for mode in MODES {
            let r = escape(mode, "root", &[PTRACE, &filter]);
            for what in [
                "proc1_mem_write",
                "proc1_mem_read",
                "proc1_exe_read",
                "proc1_exe_write",
            ] {
                let got = r[what].as_str().expect(what);
                assert_ne!(got, "opened", "{mode} seccomp={seccomp}: {what}: {r}");
                assert!(got.starts_with('E'), "{mode}: {what}: {r}");
            }
        }
    }
}

#[test]
fn app_with_cap_sys_ptrace_and_no_seccomp_cannot_ptrace_pid1() {
    if !common::require_root() {
        return;
    }
    for seccomp in ["off", "default"] {
        let filter = format!("seccomp = \"{seccomp}\"");
        for mode in MODES {
            let r = escape(mode, "root", &[PTRACE, &filter]);
            for what in ["ptrace_attach", "ptrace_seize"] {
                assert_eq!(r[what], "EPERM", "{mode} seccomp={seccomp}: {what}: {r}");
            }
        }
    }
}

#[test]
fn pid1_keeps_no_capability_no_new_privs_and_a_filter() {
    if !common::require_root() {
        return;
    }
    for (user, extra) in [("root", PTRACE), ("nobody", PTRACE), ("root", "")] {
        for mode in MODES {
            let r = escape(mode, user, &[extra, "seccomp = \"off\""]);
            for c in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
                assert_eq!(hex(&r, c), 0, "{mode} user {user}: PID 1 {c}: {r}");
            }
            assert_eq!(r["pid1_status"]["NoNewPrivs"], "1", "{mode} {user}: {r}");
            assert_eq!(r["pid1_status"]["Seccomp"], "2", "{mode} {user}: {r}");
        }
    }
}

/// An application that may change its uid could move out of reach of a
/// reaper without CAP_KILL: there PID 1 keeps CAP_KILL and nothing else.
#[test]
fn pid1_keeps_only_cap_kill_when_the_app_can_change_uid() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let r = escape(mode, "nobody", &["capabilities = [\"CAP_SETUID\"]"]);
        for c in ["CapEff", "CapPrm"] {
            assert_eq!(hex(&r, c), CAP_KILL, "{mode}: PID 1 {c}: {r}");
        }
        for c in ["CapBnd", "CapInh", "CapAmb"] {
            assert_eq!(hex(&r, c), 0, "{mode}: PID 1 {c}: {r}");
        }
        assert_eq!(r["pid1_status"]["Seccomp"], "2", "{mode}: {r}");
    }
}

/// The reaper without capabilities still forwards SIGTERM to the
/// application: berth's stop ends it by SIGTERM, not by the SIGKILL that
/// follows after the grace period.
#[test]
fn stripped_pid1_still_forwards_sigterm() {
    if !common::require_root() {
        return;
    }
    for (user, caps) in [
        ("nobody", ""),
        ("root", ""),
        ("nobody", "capabilities = [\"CAP_SETUID\"]"),
    ] {
        for mode in MODES {
            let (mut b, addr) = Berth::start_tcp("fwd", &toml(mode, user, &[caps]));
            let mut held = TcpStream::connect(&addr).expect("connect");
            std::io::Write::write_all(&mut held, b"hold\n").expect("send hold");
            b.log.wait_for("event=\"started\"", T);
            b.stop();
            let line = b.log.wait_for("container stopped", T);
            assert!(
                line.contains("killed by SIGTERM"),
                "{mode} user {user} {caps}: {line}"
            );
        }
    }
}

/// Dropping PID 1's privileges must not cost its parent-death signal (a
/// change of effective uid clears it): with berth in the foreground without
/// scopes, a killed berth still takes a running container along.
#[test]
fn stripped_pid1_still_dies_with_a_killed_foreground_berth() {
    if !common::require_root() {
        return;
    }
    for user in ["nobody", "root"] {
        let (mut b, addr) = Berth::start_tcp("orphan", &toml("inetd", user, &[""]));
        let mut held = TcpStream::connect(&addr).expect("connect");
        std::io::Write::write_all(&mut held, b"hold\n").expect("send hold");
        let init = until("PID 1 for the held connection", || {
            common::inits(b.pid()).first().copied()
        });
        // PID 1 has dropped its privileges once its filter is on.
        until("PID 1 locked down", || {
            std::fs::read_to_string(format!("/proc/{init}/status"))
                .ok()?
                .lines()
                .any(|l| l.starts_with("Seccomp:") && l.ends_with('2'))
                .then_some(())
        });
        // SAFETY: kill takes a pid and a signal; this is the berth this
        // test started.
        unsafe { libc::kill(b.pid() as i32, libc::SIGKILL) };
        let _ = b.stop();
        until("PID 1 to end with berth", || {
            let gone = std::fs::read_to_string(format!("/proc/{init}/stat")).map_or(true, |st| {
                st.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            });
            gone.then_some(())
        });
        drop(held);
    }
}

/// Poll `f` (every 20 ms, up to 20 s) until it gives a value.
fn until<R>(what: &str, mut f: impl FnMut() -> Option<R>) -> R {
    let deadline = std::time::Instant::now() + T;
    loop {
        if let Some(r) = f() {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
