//! `berth security`: what a compromised application could reach beyond the
//! default container, setting by setting, and an overall exposure score.
//!
//! Pure: reads a validated [`Service`] and nothing of the host, so the same
//! report comes out of `berth security`, `berth check` and the unit tests.
//!
//! Each row has a severity in 0..=1 (0 = safe). The overall exposure is
//! `10 × (1 − Π(1 − severity))`: one way out of the sandbox alone (a bind of
//! `/proc`, `CAP_SYS_ADMIN`) makes a service UNSAFE, minor widenings add up
//! slowly, and a service without any scores 0.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{Bind, Network, Propagation, Seccomp, Service, UserRef};

/// One setting of a service and what it exposes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    /// The setting as written: `user = "root"`, `capabilities CAP_SYS_ADMIN`,
    /// `read_write /srv/d:/data`, `etc shadow`.
    pub setting: String,
    pub safe: bool,
    /// 0 (safe) ..= 1 (a way out of the sandbox on its own).
    pub severity: f64,
    /// One line: why it is (un)safe.
    pub description: String,
}

/// The exposure report of one service.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub service: String,
    pub file: PathBuf,
    pub checks: Vec<Check>,
}

/// The overall verdict, with `systemd-analyze security`'s names and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Safe,
    Ok,
    Medium,
    Exposed,
    Unsafe,
}

impl Level {
    /// The level of an exposure score (0.0 ..= 10.0, one decimal).
    pub fn of(exposure: f64) -> Level {
        if exposure >= 9.0 {
            Level::Unsafe
        } else if exposure >= 7.5 {
            Level::Exposed
        } else if exposure >= 5.0 {
            Level::Medium
        } else if exposure >= 1.0 {
            Level::Ok
        } else {
            Level::Safe
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Safe => "SAFE",
            Level::Ok => "OK",
            Level::Medium => "MEDIUM",
            Level::Exposed => "EXPOSED",
            Level::Unsafe => "UNSAFE",
        }
    }
}

impl Report {
    /// 0.0 (locked down) ..= 10.0 (exposed), rounded to one decimal.
    pub fn exposure(&self) -> f64 {
        let kept: f64 = self
            .checks
            .iter()
            .map(|c| 1.0 - c.severity.clamp(0.0, 1.0))
            .product();
        ((1.0 - kept) * 100.0).round() / 10.0
    }

    pub fn level(&self) -> Level {
        Level::of(self.exposure())
    }

    /// The unsafe rows.
    pub fn unsafe_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.safe)
    }

    /// `berth check`'s lines: `FILE: warning: SETTING: DESCRIPTION`.
    pub fn warnings(&self) -> Vec<String> {
        self.unsafe_checks()
            .map(|c| {
                format!(
                    "{}: warning: {}: {}",
                    self.file.display(),
                    c.setting,
                    c.description
                )
            })
            .collect()
    }

    /// The table of `berth security NAME`, in the form of
    /// `systemd-analyze security UNIT`.
    pub fn table(&self) -> String {
        let name_w = self
            .checks
            .iter()
            .map(|c| c.setting.chars().count())
            .chain([4])
            .max()
            .unwrap_or(4);
        let desc_w = self
            .checks
            .iter()
            .map(|c| c.description.chars().count())
            .chain([11])
            .max()
            .unwrap_or(11);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "  {:<name_w$}  {:<desc_w$}  EXPOSURE",
            "NAME", "DESCRIPTION"
        );
        for c in &self.checks {
            let mark = if c.safe { '✓' } else { '✗' };
            let exposure = if c.safe {
                String::new()
            } else {
                format!("{:>8.1}", c.severity * 10.0)
            };
            let line = format!(
                "{mark} {:<name_w$}  {:<desc_w$}  {exposure}",
                c.setting, c.description
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let exposure = self.exposure();
        let _ = writeln!(
            out,
            "\n→ Overall exposure level for {}: {exposure:.1} {}",
            self.service,
            Level::of(exposure).name()
        );
        out
    }
}

/// The report of one service.
pub fn analyze(service: &Service) -> Report {
    let sb = &service.sandbox;
    let host_net = sb.network == Network::Host;
    let mut checks = Vec::new();

    checks.push(user_check(service));
    checks.push(match sb.network {
        Network::None => safe(
            "network = \"none\"",
            "own network namespace with only lo: the passed socket is the only way out",
        ),
        Network::Host => risky(
            "network = \"host\"",
            0.7,
            "the host's network: all interfaces, loopback services, abstract unix sockets",
        ),
    });
    checks.push(seccomp_check(sb.seccomp));

    if sb.capabilities.is_empty() {
        checks.push(safe("capabilities = []", "no capabilities"));
    }
    for cap in &sb.capabilities {
        let (severity, why) = capability(cap, host_net);
        checks.push(check(format!("capabilities {cap}"), severity, why));
    }

    for b in &sb.read_only {
        checks.push(bind_check("read_only", b, false));
    }
    if sb.read_write.is_empty() {
        checks.push(safe(
            "read_write = []",
            "no writable binds: nothing written outlives the container",
        ));
    }
    for b in &sb.read_write {
        checks.push(bind_check("read_write", b, true));
    }

    let mut etc_flagged = false;
    for entry in &sb.etc {
        if let Some((severity, why)) = etc_entry(entry) {
            etc_flagged = true;
            checks.push(check(format!("etc {entry}"), severity, why));
        }
    }
    if !etc_flagged {
        checks.push(safe(
            "etc",
            "no entry known to hold secrets (shadow, sudoers, host keys)",
        ));
    }

    let binds = !sb.read_only.is_empty() || !sb.read_write.is_empty();
    checks.push(match sb.propagation {
        Propagation::Private => safe(
            "propagation = \"private\"",
            "no mount events between host and container",
        ),
        Propagation::Slave => check(
            "propagation = \"slave\"".to_string(),
            if binds { 0.05 } else { 0.0 },
            "host mounts made later under the binds appear inside".to_string(),
        ),
        Propagation::Shared => check(
            "propagation = \"shared\"".to_string(),
            if binds { 0.2 } else { 0.0 },
            "mounts made inside under the binds (with CAP_SYS_ADMIN) appear on the host"
                .to_string(),
        ),
    });

    Report {
        service: service.name.clone(),
        file: service.file.clone(),
        checks,
    }
}

fn check(setting: String, severity: f64, description: String) -> Check {
    Check {
        setting,
        safe: severity <= 0.0,
        severity,
        description,
    }
}

fn safe(setting: &str, description: &str) -> Check {
    check(setting.to_string(), 0.0, description.to_string())
}

fn risky(setting: &str, severity: f64, description: &str) -> Check {
    check(setting.to_string(), severity, description.to_string())
}

/// Whether root in this service's containers is root on the host too.
///
/// Hook: `private_users = true` (SPEC) maps root inside to an unprivileged
/// host uid; once `Sandbox` has that field this returns it, and root becomes
/// a safe row.
fn root_is_contained(_service: &Service) -> bool {
    false
}

fn user_check(service: &Service) -> Check {
    let root = matches!(&service.user, UserRef::Id(0))
        || matches!(&service.user, UserRef::Name(n) if n == "root");
    let setting = match &service.user {
        UserRef::Name(n) => format!("user = {n:?}"),
        UserRef::Id(id) => format!("user = {id}"),
    };
    if !root {
        check(setting, 0.0, "not root".to_string())
    } else if root_is_contained(service) {
        check(
            setting,
            0.0,
            "root in a private user namespace: nobody on the host".to_string(),
        )
    } else {
        check(
            setting,
            0.2,
            "uid 0 on the host (no private_users): owns root's files on its binds".to_string(),
        )
    }
}

fn seccomp_check(seccomp: Seccomp) -> Check {
    match seccomp {
        Seccomp::Default => safe(
            "seccomp = \"default\"",
            "allow-list of what system services call, deny-list on top",
        ),
        Seccomp::Off => risky(
            "seccomp = \"off\"",
            0.7,
            "no system call filter: all of the kernel's interface (io_uring, bpf, keyctl...)",
        ),
        Seccomp::Compat => risky(
            "seccomp = \"compat\"",
            0.3,
            "deny-list only: every call nobody thought to deny is reachable",
        ),
    }
}

/// Severity and reason of a kept capability. Capabilities act in the host's
/// user namespace (no private_users yet), limited only by the namespaces.
fn capability(cap: &str, host_net: bool) -> (f64, String) {
    let (severity, why): (f64, &str) = match cap {
        "CAP_SYS_ADMIN" => (
            0.9,
            "mount, namespaces, bpf and much more: the classic way out of a container",
        ),
        "CAP_SYS_MODULE" => (0.95, "loads kernel modules: its code in the host kernel"),
        "CAP_SYS_RAWIO" => (
            0.8,
            "raw I/O ports and memory, SG_IO: beneath the kernel's access checks",
        ),
        "CAP_SYS_PTRACE" => (
            0.7,
            "ptrace and /proc/PID/mem of the container's processes, PID 1 included",
        ),
        "CAP_DAC_READ_SEARCH" => (
            0.8,
            "open_by_handle_at opens any file of a bound file system (\"shocker\")",
        ),
        "CAP_DAC_OVERRIDE" => (
            0.5,
            "ignores file permissions: reads and writes every file its binds show",
        ),
        "CAP_BPF" => (0.6, "loads BPF programs: a large kernel attack surface"),
        "CAP_MKNOD" => (
            0.4,
            "device nodes on writable mounts (nodev and the device policy must hold)",
        ),
        "CAP_NET_ADMIN" if host_net => (
            0.8,
            "configures the host's interfaces, routes and firewall (network = \"host\")",
        ),
        "CAP_NET_ADMIN" => (
            0.4,
            "its own network namespace: netfilter, tc and more kernel attack surface",
        ),
        "CAP_NET_RAW" if host_net => (
            0.6,
            "raw and packet sockets on the host's interfaces: sniffs and spoofs traffic",
        ),
        "CAP_NET_RAW" => (
            0.2,
            "raw and packet sockets, on lo only: kernel attack surface",
        ),
        "CAP_NET_BIND_SERVICE" if host_net => (0.2, "binds the host's ports below 1024"),
        "CAP_NET_BIND_SERVICE" => (0.0, "ports below 1024 of its own network namespace only"),
        "CAP_SYS_TIME" => (0.5, "sets the host's clock"),
        "CAP_MAC_ADMIN" | "CAP_MAC_OVERRIDE" => (
            0.6,
            "changes or overrides the LSM policy (AppArmor, SELinux)",
        ),
        "CAP_SYSLOG" => (
            0.4,
            "reads the kernel log and kernel addresses (defeats KASLR)",
        ),
        "CAP_PERFMON" => (0.4, "perf events: kernel attack surface and side channels"),
        "CAP_SETUID" => (0.3, "becomes any uid: every user's files on its binds"),
        "CAP_FOWNER" => (
            0.3,
            "ignores ownership: chmod and utime on any file it can write to",
        ),
        "CAP_SETPCAP" | "CAP_SETFCAP" => (0.3, "grants capabilities to itself or to files"),
        "CAP_SYS_RESOURCE" => (0.3, "overrides resource limits and quotas"),
        "CAP_AUDIT_CONTROL" | "CAP_AUDIT_WRITE" | "CAP_AUDIT_READ" => {
            (0.3, "reads, writes or reconfigures the host's audit log")
        }
        "CAP_CHECKPOINT_RESTORE" => (0.3, "chooses pids and reads other processes' state"),
        "CAP_SETGID" => (0.1, "becomes any gid: the files of any group on its binds"),
        "CAP_CHOWN" => (0.1, "changes the owner of any file on writable mounts"),
        _ => (0.1, "more privilege than a service normally needs"),
    };
    (severity, why.to_string())
}

/// Host paths whose bind gives away more than files: `(path, read-only
/// severity, writable severity, why)`. A socket on a read-only bind can still
/// be connected to, so sockets weigh the same either way.
const SENSITIVE_SOURCES: &[(&str, f64, f64, &str)] = &[
    (
        "/",
        0.95,
        1.0,
        "the host's whole file system, its sockets included",
    ),
    (
        "/proc",
        0.9,
        0.9,
        "the host's /proc: every host process, and /proc/PID/root leads to the host's root",
    ),
    (
        "/sys",
        0.5,
        0.8,
        "the host's /sys: kernel and device settings",
    ),
    (
        "/sys/fs/cgroup",
        0.5,
        0.9,
        "the host's cgroups: limits and processes of every service (release_agent on v1)",
    ),
    (
        "/dev",
        0.7,
        0.8,
        "the host's devices: disks, memory, terminals",
    ),
    (
        "/run",
        0.95,
        0.95,
        "the host's /run: D-Bus, systemd, container runtime sockets",
    ),
    (
        "/tmp",
        0.3,
        0.5,
        "the host's /tmp: other programs' files and sockets, symlink races",
    ),
    (
        "/var/tmp",
        0.3,
        0.5,
        "the host's /var/tmp: other programs' files, symlink races",
    ),
    (
        "/run/dbus",
        0.7,
        0.7,
        "the D-Bus system bus: systemd, logind, polkit (as root: control of the host)",
    ),
    (
        "/run/systemd",
        0.8,
        0.8,
        "systemd's sockets: the manager's private socket, notify, journal",
    ),
    ("/run/user", 0.6, 0.7, "users' session buses and sockets"),
    (
        "/run/docker.sock",
        0.95,
        0.95,
        "a container runtime's socket: starts a privileged container, host root",
    ),
    (
        "/run/docker",
        0.95,
        0.95,
        "a container runtime's sockets: starts a privileged container, host root",
    ),
    (
        "/run/containerd",
        0.95,
        0.95,
        "a container runtime's sockets: starts a privileged container, host root",
    ),
    (
        "/run/podman",
        0.95,
        0.95,
        "a container runtime's socket: starts a privileged container, host root",
    ),
    (
        "/run/crio",
        0.95,
        0.95,
        "a container runtime's socket: starts a privileged container, host root",
    ),
    (
        "/var/lib/docker",
        0.6,
        0.95,
        "a container runtime's state: every container's files",
    ),
    (
        "/etc",
        0.5,
        0.9,
        "the host's configuration: password hashes, private keys",
    ),
    ("/root", 0.5, 0.8, "root's home: keys and tokens"),
    ("/home", 0.4, 0.6, "users' homes: keys and tokens"),
    ("/boot", 0.3, 0.9, "the kernel and boot loader"),
    (
        "/usr",
        0.0,
        0.9,
        "the host's programs: written to, code the host runs",
    ),
];

/// `/var/run` is `/run` on every systemd host.
fn canonical_source(source: &Path) -> PathBuf {
    match source.strip_prefix("/var/run") {
        Ok(rest) => Path::new("/run").join(rest),
        Err(_) => source.to_path_buf(),
    }
}

fn bind_check(key: &str, bind: &Bind, writable: bool) -> Check {
    let setting = if bind.source == bind.dest {
        format!("{key} {}", bind.source.display())
    } else {
        format!("{key} {}:{}", bind.source.display(), bind.dest.display())
    };
    let source = canonical_source(&bind.source);
    // A file or directory under /etc bound read-only is an `etc` entry by
    // another name: judged by what it holds, not by being configuration.
    if let Ok(rel) = source.strip_prefix("/etc")
        && !rel.as_os_str().is_empty()
    {
        if writable {
            return check(
                setting,
                0.9,
                "the host's configuration, writable: written to, host root".to_string(),
            );
        }
        return match etc_entry(&rel.to_string_lossy()) {
            Some((severity, why)) => check(setting, severity, why),
            None => check(setting, 0.0, "read-only".to_string()),
        };
    }
    // The worst sensitive path the bind is, is under, or contains; on a tie
    // the path it is under wins over one it contains, and the more specific
    // one wins (a bind of /run/dbus is about D-Bus).
    let mut worst: Option<(f64, bool, usize, String)> = None;
    for &(path, ro, rw, why) in SENSITIVE_SOURCES {
        let p = Path::new(path);
        let severity = if writable { rw } else { ro };
        let (under, description) = if source.starts_with(p) && (path != "/" || source == p) {
            (true, why.to_string())
        } else if source != Path::new("/") && p.starts_with(&source) {
            (false, format!("contains {path}: {why}"))
        } else {
            continue;
        };
        let better = match &worst {
            None => true,
            Some((s, u, len, _)) => (severity, under, path.len()) > (*s, *u, *len),
        };
        if severity > 0.0 && better {
            worst = Some((severity, under, path.len(), description));
        }
    }
    match worst {
        Some((severity, _, _, description)) => check(setting, severity, description),
        None if writable => check(
            setting,
            0.15,
            "writable: what it writes stays on the host for later containers".to_string(),
        ),
        None => check(setting, 0.0, "read-only".to_string()),
    }
}

/// `(name relative to /etc, severity, why)`; an entry that is, is under or
/// contains one of these is flagged.
const SENSITIVE_ETC: &[(&str, f64, &str)] = &[
    (
        "shadow",
        0.5,
        "password hashes of every host user, for offline cracking",
    ),
    ("shadow-", 0.5, "a backup of the host's password hashes"),
    ("gshadow", 0.5, "group password hashes of the host"),
    (
        "gshadow-",
        0.5,
        "a backup of the host's group password hashes",
    ),
    ("sudoers", 0.3, "who may become root on the host, and how"),
    ("sudoers.d", 0.3, "who may become root on the host, and how"),
    (
        "ssh",
        0.4,
        "the host's SSH private keys: whoever reads them can pass for the host",
    ),
    (
        "dropbear",
        0.2,
        "dropbear's host keys: right for the host's SSH server, else it can pass for it",
    ),
    ("ssl/private", 0.5, "the host's TLS private keys"),
    ("credstore", 0.5, "the host's systemd credentials"),
    (
        "credstore.encrypted",
        0.3,
        "the host's encrypted systemd credentials",
    ),
    ("krb5.keytab", 0.5, "the host's Kerberos keys"),
];

fn etc_entry(entry: &str) -> Option<(f64, String)> {
    let e = Path::new(entry);
    let mut worst: Option<(f64, String)> = None;
    for &(name, severity, why) in SENSITIVE_ETC {
        let n = Path::new(name);
        let description = if e.starts_with(n) {
            why.to_string()
        } else if n.starts_with(e) {
            format!("contains {name}: {why}")
        } else {
            continue;
        };
        if worst.as_ref().is_none_or(|(s, _)| severity > *s) {
            worst = Some((severity, description));
        }
    }
    worst
}

/// `berth security [NAME]`'s output for the loaded services.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("no service named {name:?} (services: {known})")]
    UnknownService { name: String, known: String },
    #[error("cannot write the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}

/// The text `berth security` prints: the table of `name`, or one summary
/// line per service; `json` for machines (reports with their scores).
pub fn render(
    services: &[Service],
    name: Option<&str>,
    json: bool,
) -> Result<String, SecurityError> {
    let selected: Vec<&Service> = match name {
        Some(n) => {
            let Some(s) = services.iter().find(|s| s.name == n) else {
                let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                return Err(SecurityError::UnknownService {
                    name: n.to_string(),
                    known: if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    },
                });
            };
            vec![s]
        }
        None => services.iter().collect(),
    };
    let reports: Vec<Report> = selected.into_iter().map(analyze).collect();
    if json {
        #[derive(serde::Serialize)]
        struct Scored<'a> {
            #[serde(flatten)]
            report: &'a Report,
            exposure: f64,
            level: Level,
        }
        let scored: Vec<Scored> = reports
            .iter()
            .map(|r| Scored {
                report: r,
                exposure: r.exposure(),
                level: r.level(),
            })
            .collect();
        let mut out = serde_json::to_string_pretty(&serde_json::json!({ "services": scored }))?;
        out.push('\n');
        return Ok(out);
    }
    if name.is_some() {
        return Ok(reports.iter().map(Report::table).collect());
    }
    let name_w = reports
        .iter()
        .map(|r| r.service.chars().count())
        .chain([7])
        .max()
        .unwrap_or(7);
    let mut out = format!("{:<name_w$}  EXPOSURE  LEVEL    WARNINGS\n", "SERVICE");
    for r in &reports {
        let _ = writeln!(
            out,
            "{:<name_w$}  {:>8.1}  {:<7}  {}",
            r.service,
            r.exposure(),
            r.level().name(),
            r.unsafe_checks().count()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn root_hook_and_propagation() {
        let mut s = service();
        s.user = UserRef::Name("root".into());
        assert!(!root_is_contained(&s), "private_users does not exist yet");
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
}
