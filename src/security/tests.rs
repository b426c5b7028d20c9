//! The report's rows and scores, on services loaded from files.

use std::path::PathBuf;

use super::checks::{root_is_contained, seccomp_check};
use super::*;
use crate::config::{Bind, Network, Propagation, Seccomp, Service, UserRef};

/// A default service, loaded from a file so that fields added to
/// `Service` later need no change here; tests then set fields directly.
fn service() -> Service {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.toml");
    std::fs::write(&file, "mode = \"inetd\"\nexec = [\"/bin/true\"]\n").unwrap();
    let mut s = crate::config::load_service(&file, None).unwrap();
    s.file = PathBuf::from("/etc/berth/services/app.toml");
    s
}

fn bind(spec: &str) -> Bind {
    let (s, d) = spec.split_once(':').unwrap_or((spec, spec));
    Bind {
        source: s.into(),
        dest: d.into(),
        idmap: true,
    }
}

/// The unsafe row whose setting is `setting`, or a panic listing all rows.
fn row<'a>(r: &'a Report, setting: &str) -> &'a Check {
    r.checks
        .iter()
        .find(|c| c.setting == setting)
        .unwrap_or_else(|| panic!("no row {setting:?} in {:#?}", r.checks))
}

fn flagged(r: &Report, setting: &str, at_least: f64) {
    let c = row(r, setting);
    assert!(!c.safe, "{setting} not flagged: {c:?}");
    assert!(c.severity >= at_least, "{setting} weighs only {c:?}");
}

#[test]
fn default_service_is_safe_with_every_row_ticked() {
    let r = analyze(&service());
    assert!(r.checks.iter().all(|c| c.safe), "{:#?}", r.checks);
    assert_eq!(r.exposure(), 0.0);
    assert_eq!(r.level(), Level::Safe);
    assert!(r.warnings().is_empty());
    let t = r.table();
    assert!(t.contains("✓ network = \"none\""), "{t}");
    assert!(
        t.ends_with("→ Overall exposure level for app: 0.0 SAFE\n"),
        "{t}"
    );
}

#[test]
fn dangerous_capabilities_are_flagged_each_above_half() {
    for cap in [
        "CAP_SYS_ADMIN",
        "CAP_SYS_PTRACE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_MODULE",
        "CAP_DAC_READ_SEARCH",
        "CAP_BPF",
    ] {
        let mut s = service();
        s.sandbox.capabilities = vec![cap.into()];
        let r = analyze(&s);
        flagged(&r, &format!("capabilities {cap}"), 0.6);
        assert!(r.exposure() >= 6.0, "{cap}: {}", r.exposure());
    }
    for cap in [
        "CAP_MKNOD",
        "CAP_DAC_OVERRIDE",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
    ] {
        let mut s = service();
        s.sandbox.capabilities = vec![cap.into()];
        flagged(&analyze(&s), &format!("capabilities {cap}"), 0.2);
    }
    let mut s = service();
    s.sandbox.capabilities = vec!["CAP_SYS_ADMIN".into()];
    assert_eq!(analyze(&s).level(), Level::Unsafe);
}

#[test]
fn other_capabilities_weigh_less_and_network_ones_more_with_host_network() {
    let mut s = service();
    s.sandbox.capabilities = vec!["CAP_LEASE".into(), "CAP_NET_RAW".into()];
    let r = analyze(&s);
    let lease = row(&r, "capabilities CAP_LEASE").severity;
    assert!(lease > 0.0 && lease < row(&r, "capabilities CAP_NET_RAW").severity);
    let private_raw = row(&r, "capabilities CAP_NET_RAW").severity;
    s.sandbox.network = Network::Host;
    let r = analyze(&s);
    assert!(row(&r, "capabilities CAP_NET_RAW").severity > private_raw);
    // Harmless in a private namespace, not on the host's.
    s.sandbox.capabilities = vec!["CAP_NET_BIND_SERVICE".into()];
    assert!(!row(&analyze(&s), "capabilities CAP_NET_BIND_SERVICE").safe);
    s.sandbox.network = Network::None;
    assert!(row(&analyze(&s), "capabilities CAP_NET_BIND_SERVICE").safe);
}

#[test]
fn seccomp_off_and_compat_are_flagged_off_worse() {
    let mut s = service();
    s.sandbox.seccomp = Seccomp::Off;
    let r = analyze(&s);
    flagged(&r, "seccomp = \"off\"", 0.5);
    assert!(seccomp_check(Seccomp::Off).severity > 0.3);
    // "compat" sits between default and off.
    let compat = seccomp_check(Seccomp::Compat).severity;
    assert!(seccomp_check(Seccomp::Default).severity < compat);
    assert!(compat < seccomp_check(Seccomp::Off).severity);
    assert!(r.warnings()[0].starts_with("/etc/berth/services/app.toml: warning: seccomp"));
}

#[test]
fn host_network_and_root_are_flagged() {
    let mut s = service();
    s.sandbox.network = Network::Host;
    flagged(&analyze(&s), "network = \"host\"", 0.5);
    let mut s = service();
    s.user = UserRef::Name("root".into());
    flagged(&analyze(&s), "user = \"root\"", 0.1);
    s.user = UserRef::Id(0);
    flagged(&analyze(&s), "user = 0", 0.1);
    s.user = UserRef::Id(1000);
    assert!(row(&analyze(&s), "user = 1000").safe);
}

#[test]
fn sensitive_bind_sources_are_flagged_read_only_or_not() {
    for src in [
        "/",
        "/proc",
        "/proc/1",
        "/sys",
        "/sys/fs/cgroup",
        "/sys/kernel/debug",
        "/dev",
        "/dev/sda",
        "/run",
        "/run/dbus",
        "/var/run/dbus/system_bus_socket",
        "/run/systemd",
        "/run/systemd/private",
        "/run/docker.sock",
        "/var/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/run/podman/podman.sock",
        "/run/crio/crio.sock",
    ] {
        let mut s = service();
        s.sandbox.read_only = vec![bind(&format!("{src}:/mnt"))];
        flagged(&analyze(&s), &format!("read_only {src}:/mnt"), 0.5);
    }
    // A bind that contains a runtime socket is as bad as the socket.
    let mut s = service();
    s.sandbox.read_only = vec![bind("/run:/x")];
    let r = analyze(&s);
    let run = row(&r, "read_only /run:/x");
    assert!(run.severity >= 0.9 && run.description.starts_with("the host's /run"));
    s.sandbox.read_only = vec![bind("/var:/x")];
    let var = analyze(&s);
    assert!(
        row(&var, "read_only /var:/x")
            .description
            .contains("/var/lib/docker")
    );
    s.sandbox.read_only = vec![bind("/tmp/.X11-unix")];
    flagged(&analyze(&s), "read_only /tmp/.X11-unix", 0.2);
    // Writable is worse where writing matters.
    let mut s = service();
    s.sandbox.read_write = vec![bind("/:/host")];
    let rw = row(&analyze(&s), "read_write /:/host").severity;
    s.sandbox.read_write = vec![];
    s.sandbox.read_only = vec![bind("/:/host")];
    assert!(row(&analyze(&s), "read_only /:/host").severity < rw);
}

#[test]
fn ordinary_binds_read_only_are_safe_writable_are_minor() {
    let mut s = service();
    s.sandbox.read_only = vec![bind("/srv/www"), bind("/usr/share/doc:/doc")];
    s.sandbox.read_write = vec![bind("/srv/data:/data")];
    let r = analyze(&s);
    assert!(row(&r, "read_only /srv/www").safe);
    assert!(row(&r, "read_only /usr/share/doc:/doc").safe);
    let rw = row(&r, "read_write /srv/data:/data");
    assert!(!rw.safe && rw.severity < 0.3, "{rw:?}");
    assert_eq!(r.level(), Level::Ok);
    // Under /etc: judged like an `etc` entry; writable, like /etc.
    s.sandbox.read_write = vec![];
    s.sandbox.read_only = vec![bind("/etc/berth/keys:/k"), bind("/etc/ssh:/s")];
    let r = analyze(&s);
    assert!(row(&r, "read_only /etc/berth/keys:/k").safe);
    flagged(&r, "read_only /etc/ssh:/s", 0.3);
    s.sandbox.read_only = vec![bind("/etc")];
    flagged(&analyze(&s), "read_only /etc", 0.4);
    // /usr writable is not ordinary; /srv/runner is not /run.
    s.sandbox.read_only = vec![];
    s.sandbox.read_write = vec![bind("/usr/local:/l"), bind("/srv/runner")];
    let r = analyze(&s);
    flagged(&r, "read_write /usr/local:/l", 0.8);
    assert!(row(&r, "read_write /srv/runner").severity < 0.3);
}

#[test]
fn secret_etc_entries_are_flagged() {
    for entry in [
        "shadow",
        "gshadow",
        "sudoers",
        "sudoers.d",
        "sudoers.d/admins",
        "ssh",
        "ssh/ssh_host_ed25519_key",
        "ssl/private",
        "ssl",
    ] {
        let mut s = service();
        s.sandbox.etc = vec!["passwd".into(), entry.into()];
        let r = analyze(&s);
        flagged(&r, &format!("etc {entry}"), 0.2);
        assert!(r.checks.iter().all(|c| c.setting != "etc"), "{entry}");
    }
    let mut s = service();
    s.sandbox.etc = vec!["passwd".into(), "shadow.d".into(), "ssl/certs".into()];
    assert!(row(&analyze(&s), "etc").safe);
    // sshd's configuration next to the keys is not the keys.
    let mut s = service();
    s.sandbox.etc = vec![
        "ssh/sshd_config".into(),
        "ssh/sshd_config.d".into(),
        "ssh/moduli".into(),
        "ssh/ssh_host_ed25519_key.pub".into(),
    ];
    assert!(row(&analyze(&s), "etc").safe);
}

#[test]
fn root_hook_and_propagation() {
    let mut s = service();
    s.user = UserRef::Name("root".into());
    assert!(
        !root_is_contained(&s),
        "root without private_users is host root"
    );
    flagged(&analyze(&s), "user = \"root\"", 0.2);
    s.sandbox.private_users = true;
    assert!(root_is_contained(&s));
    assert!(row(&analyze(&s), "user = \"root\"").safe);
    s.sandbox.private_users = false;
    s.sandbox.read_only = vec![bind("/srv/www")];
    s.sandbox.propagation = Propagation::Shared;
    flagged(&analyze(&s), "propagation = \"shared\"", 0.1);
}

#[test]
fn exposure_combines_and_levels_follow_systemd_bounds() {
    let mut s = service();
    s.user = UserRef::Name("root".into());
    s.sandbox.capabilities = vec!["CAP_SYS_ADMIN".into(), "CAP_SYS_PTRACE".into()];
    s.sandbox.seccomp = Seccomp::Off;
    s.sandbox.network = Network::Host;
    s.sandbox.read_write = vec![bind("/")];
    let r = analyze(&s);
    assert!(
        r.exposure() >= 9.9 && r.exposure() <= 10.0,
        "{}",
        r.exposure()
    );
    assert_eq!(r.warnings().len(), 6, "{:#?}", r.warnings());
    assert_eq!(Level::of(0.9), Level::Safe);
    assert_eq!(Level::of(1.0), Level::Ok);
    assert_eq!(Level::of(5.0), Level::Medium);
    assert_eq!(Level::of(7.5), Level::Exposed);
    assert_eq!(Level::of(9.0), Level::Unsafe);
}

#[test]
fn render_summary_table_json_and_unknown_name() {
    let mut bad = service();
    bad.name = "bad".into();
    bad.sandbox.seccomp = Seccomp::Off;
    let services = vec![service(), bad];
    let all = render(&services, None, false).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    assert!(lines[0].starts_with("SERVICE"), "{all}");
    assert!(
        lines[1].starts_with("app ") && lines[1].contains("SAFE"),
        "{all}"
    );
    assert!(
        lines[2].starts_with("bad ") && lines[2].contains("MEDIUM"),
        "{all}"
    );
    let one = render(&services, Some("bad"), false).unwrap();
    assert!(one.contains("✗ seccomp = \"off\""), "{one}");
    assert!(
        one.contains("→ Overall exposure level for bad: 7.0 MEDIUM"),
        "{one}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&render(&services, Some("bad"), true).unwrap()).unwrap();
    assert_eq!(json["services"][0]["level"], "MEDIUM");
    assert_eq!(json["services"][0]["exposure"], 7.0);
    assert!(matches!(
        render(&services, Some("nope"), false),
        Err(SecurityError::UnknownService { .. })
    ));
}
