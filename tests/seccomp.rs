//! The seccomp profiles, seen from inside a container by the real probe:
//! `default` (allow-list of system-service calls, deny-list on top),
//! `compat` (the deny-list alone) and `off`.

mod common;

use common::Berth;
use serde_json::Value;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Inetd,
    Listen,
}

const MODES: [Mode; 2] = [Mode::Inetd, Mode::Listen];

/// Capabilities that get the calls past the kernel's own permission checks
/// (so that an EPERM is the filter's doing).
const CAPS: &str = "capabilities = [\"CAP_SYS_ADMIN\", \"CAP_SYS_BOOT\", \"CAP_SYS_PACCT\", \
                    \"CAP_SYS_TIME\", \"CAP_SYS_RAWIO\", \"CAP_SYSLOG\", \"CAP_SYS_TTY_CONFIG\", \
                    \"CAP_SYS_PTRACE\", \"CAP_SYS_CHROOT\"]";

/// The calls the deny-list gained with the allow-list (iopl and ioperm
/// exist on x86_64 only).
fn new_denied() -> Vec<&'static str> {
    let mut v = vec![
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "name_to_handle_at",
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "swapon",
        "swapoff",
        "quotactl",
        "acct",
        "reboot",
        "fanotify_init",
        "lookup_dcookie",
        "syslog",
        "vhangup",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "personality_set",
    ];
    if cfg!(target_arch = "x86_64") {
        v.extend(["iopl", "ioperm"]);
    }
    v
}

/// Calls outside the "default" allow-list that the deny-list lets through.
const OUTSIDE_ALLOW_LIST: &[&str] = &["chroot", "pkey_alloc"];

/// A root container running the probe with `seccomp = PROFILE` and [`CAPS`];
/// returns the probe's report.
fn report(mode: Mode, profile: &str) -> Value {
    let mode_lines = match mode {
        Mode::Inetd => "mode = \"inetd\"\n",
        Mode::Listen => "mode = \"listen\"\nidle_timeout = \"30s\"\n",
    };
    let toml = format!(
        "{mode_lines}exec = [\"/probe\"]\nuser = \"root\"\n\n[sandbox]\n\
         read_only = [{:?}]\nseccomp = \"{profile}\"\n{CAPS}\n",
        common::probe_bind()
    );
    let (mut berth, addr) = Berth::start_tcp("seccomp", &toml);
    let r = common::json(&common::tcp_request(&addr, "report"));
    berth.stop();
    assert_eq!(
        r["errors"],
        serde_json::json!({}),
        "{mode:?} {profile}: {r}"
    );
    let want = if profile == "off" { "0" } else { "2" };
    assert_eq!(r["status"]["Seccomp"], want, "{mode:?} {profile}");
    r
}

fn call<'a>(r: &'a Value, name: &str) -> &'a str {
    r["syscalls"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no result for {name}: {}", r["syscalls"]))
}

#[test]
fn new_denials_hold_under_default_and_compat() {
    if !common::require_root() {
        return;
    }
    for profile in ["default", "compat"] {
        for mode in MODES {
            let r = report(mode, profile);
            for name in new_denied() {
                let got = call(&r, name);
                assert!(
                    got == "EPERM" || got == "ENOSYS",
                    "{mode:?} {profile}: {name} answered {got}: {}",
                    r["syscalls"]
                );
            }
        }
    }
}

/// Calls a kernel may be built without (ENOSYS whatever the filter does):
/// lookup_dcookie is gone since 6.8, iopl and ioperm need
/// CONFIG_X86_IOPL_IOPERM (this testbed's kernel has neither).
const KERNEL_OPTIONAL: &[&str] = &["lookup_dcookie", "iopl", "ioperm"];

/// Without a filter the same calls answer something other than EPERM (the
/// capabilities are there), so the EPERM above is the filter's. Seen here
/// without a filter: io_uring_setup EFAULT; io_uring_enter, pidfd_getfd,
/// process_madvise EBADF; io_uring_register, reboot, fanotify_init,
/// settimeofday, clock_settime EINVAL; name_to_handle_at, swapon, swapoff,
/// acct ENOENT; kcmp, syslog, vhangup, personality_set ok; quotactl ENODEV;
/// clock_adjtime, adjtimex EFAULT.
#[test]
fn new_denials_are_the_filters_doing() {
    if !common::require_root() {
        return;
    }
    let r = report(Mode::Inetd, "off");
    for name in new_denied() {
        let got = call(&r, name);
        let kernel_lacks_it = got == "ENOSYS" && KERNEL_OPTIONAL.contains(&name);
        assert!(
            got != "EPERM" && (got != "ENOSYS" || kernel_lacks_it),
            "{name} answered {got} without a filter: {}",
            r["syscalls"]
        );
    }
}

#[test]
fn personality_queries_stay_allowed() {
    if !common::require_root() {
        return;
    }
    for profile in ["default", "compat", "off"] {
        let r = report(Mode::Inetd, profile);
        assert_eq!(call(&r, "personality_query"), "ok", "{profile}");
        assert_eq!(call(&r, "personality_linux"), "ok", "{profile}");
        let set = call(&r, "personality_set");
        let want = if profile == "off" { "ok" } else { "EPERM" };
        assert_eq!(set, want, "{profile}");
    }
}

#[test]
fn calls_outside_the_allow_list_fail_only_under_default() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let r = report(mode, "default");
        for name in OUTSIDE_ALLOW_LIST {
            assert_eq!(call(&r, name), "EPERM", "{mode:?} default: {name}");
        }
        let r = report(mode, "compat");
        for name in OUTSIDE_ALLOW_LIST {
            let got = call(&r, name);
            assert!(
                got != "EPERM" && got != "ENOSYS",
                "{mode:?} compat: {name} answered {got}"
            );
        }
    }
}

/// The allow-list does not loosen the older deny-list (keyctl, for one, is
/// in systemd's `@system-service` and still denied).
#[test]
fn default_profile_keeps_the_older_denials() {
    if !common::require_root() {
        return;
    }
    for mode in MODES {
        let r = report(mode, "default");
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "setns",
            "unshare",
            "bpf",
            "keyctl",
            "ptrace",
            "TIOCSTI",
        ] {
            assert_eq!(call(&r, name), "EPERM", "{mode:?}: {name}");
        }
    }
}

/// An ordinary shell script (fork, exec, pipes, directory listing, file
/// reads) runs unchanged under the allow-list.
#[test]
fn shell_script_runs_under_default() {
    if !common::require_root() {
        return;
    }
    let toml = "mode = \"inetd\"\n\
                exec = [\"/bin/sh\", \"-c\", \"echo hi; ls /; cat /etc/hostname; ls / | wc -l; \
                id -u; sleep 0.01 && echo done\"]\n\n\
                [sandbox]\nseccomp = \"default\"\netc = [\"passwd\", \"group\", \"hostname\"]\n";
    let (mut berth, addr) = Berth::start_tcp("shell", toml);
    let out = common::tcp_request(&addr, "");
    berth.stop();
    let host = std::fs::read_to_string("/etc/hostname").expect("read /etc/hostname");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"hi"), "{out:?}");
    for dir in ["usr", "etc", "tmp", "proc"] {
        assert!(lines.contains(&dir), "ls / lacks {dir}: {out:?}");
    }
    assert!(lines.contains(&host.trim()), "no hostname in {out:?}");
    assert!(lines.contains(&"65534"), "id -u is not nobody: {out:?}");
    assert_eq!(lines.last(), Some(&"done"), "{out:?}");
}
