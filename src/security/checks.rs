//! The per-setting checks: each setting of a [`Service`] and what it exposes.

use std::path::{Path, PathBuf};

use super::{Check, Report};
use crate::config::{Bind, Network, Propagation, Seccomp, Service, UserRef};

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

/// Whether root in this service's containers is contained: with
/// `private_users = true` uid 0 inside is an unprivileged uid of berth's
/// range on the host, with capabilities only in its own user namespace.
pub(super) fn root_is_contained(service: &Service) -> bool {
    service.sandbox.private_users
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

pub(super) fn seccomp_check(seccomp: Seccomp) -> Check {
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

/// Files of /etc/ssh that hold no key (`sshd_config`, its drop-ins,
/// `moduli`, public keys): an entry for one of them is not the host's keys.
fn ssh_without_keys(e: &Path) -> bool {
    let Ok(rest) = e.strip_prefix("ssh") else {
        return false;
    };
    let Some(first) = rest.components().next() else {
        return false; // /etc/ssh itself holds the keys
    };
    let first = first.as_os_str().to_string_lossy();
    !first.starts_with("ssh_host_") || first.ends_with(".pub")
}

fn etc_entry(entry: &str) -> Option<(f64, String)> {
    let e = Path::new(entry);
    let mut worst: Option<(f64, String)> = None;
    for &(name, severity, why) in SENSITIVE_ETC {
        if name == "ssh" && ssh_without_keys(e) {
            continue;
        }
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
