//! The `report` command: everything the probe can see, as one JSON object.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};

use crate::sys::{io_errno_name, nix_errno_name};

/// Paths always checked for writability.
const WRITABLE_PATHS: &[&str] = &[
    "/",
    "/usr",
    "/etc",
    "/tmp",
    "/run",
    "/dev",
    "/dev/shm",
    "/proc/sys",
    "/bin",
    "/var",
];

/// `/proc/self/status` fields reported.
const STATUS_FIELDS: &[&str] = &[
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
    "Seccomp_filters",
];

const NAMESPACES: &[&str] = &["mnt", "pid", "net", "ipc", "uts", "cgroup", "user", "time"];

/// Builds the full report; `extra` are additional paths to test for
/// writability.
pub fn report(extra: &[&str]) -> Value {
    let mut f = Fields::default();
    identity(&mut f);
    let interfaces = interfaces().map(Value::Array);
    f.put_or("interfaces", interfaces, json!([]));
    file_system(&mut f, extra);
    status(&mut f);
    handed_over(&mut f);
    namespaces(&mut f);
    surroundings(&mut f);
    f.put("syscalls", Value::Object(crate::sys::probe_syscalls()));
    f.put("proc1_exe_write", json!(crate::sys::proc1_exe_write()));
    let Fields { mut r, errors } = f;
    r.insert("errors".into(), Value::Object(errors));
    Value::Object(r)
}

/// The report under construction: its fields, and under `errors` what
/// failed, by field.
#[derive(Default)]
struct Fields {
    r: Map<String, Value>,
    errors: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, key: &str, value: Value) {
        self.r.insert(key.into(), value);
    }

    fn error(&mut self, key: &str, error: impl Into<Value>) {
        self.errors.insert(key.into(), error.into());
    }

    /// `key` from `result`, or `fallback` with the error recorded.
    fn put_or<E: Into<Value>>(&mut self, key: &str, result: Result<Value, E>, fallback: Value) {
        match result {
            Ok(v) => self.put(key, v),
            Err(e) => {
                self.error(key, e);
                self.put(key, fallback);
            }
        }
    }
}

/// Ids, session, process group and hostname.
fn identity(f: &mut Fields) {
    f.put("pid", json!(nix::unistd::getpid().as_raw()));
    f.put("ppid", json!(nix::unistd::getppid().as_raw()));
    f.put("uid", json!(nix::unistd::getuid().as_raw()));
    f.put("euid", json!(nix::unistd::geteuid().as_raw()));
    f.put("gid", json!(nix::unistd::getgid().as_raw()));
    f.put("egid", json!(nix::unistd::getegid().as_raw()));
    let groups = nix::unistd::getgroups()
        .map(|g| json!(g.iter().map(|g| g.as_raw()).collect::<Vec<u32>>()))
        .map_err(nix_errno_name);
    f.put_or("groups", groups, json!([]));
    let sid = nix::unistd::getsid(None)
        .map(|s| json!(s.as_raw()))
        .map_err(nix_errno_name);
    f.put_or("sid", sid, Value::Null);
    f.put("pgid", json!(nix::unistd::getpgrp().as_raw()));
    let hostname = nix::unistd::gethostname()
        .map(|h| json!(h.to_string_lossy()))
        .map_err(nix_errno_name);
    f.put_or("hostname", hostname, Value::Null);
}

/// The mount table, and which paths are writable: fixed paths, directory
/// mount points, `extra`.
fn file_system(f: &mut Fields, extra: &[&str]) {
    let mounts = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => parse_mountinfo(&text),
        Err(e) => {
            f.error("mounts", e.to_string());
            Vec::new()
        }
    };
    let mut paths: Vec<String> = WRITABLE_PATHS.iter().map(|p| p.to_string()).collect();
    for m in &mounts {
        if std::fs::metadata(&m.mount_point).is_ok_and(|md| md.is_dir()) {
            paths.push(m.mount_point.clone());
        }
    }
    paths.extend(extra.iter().map(|p| p.to_string()));
    let mut writable = Map::new();
    let mut writable_errors = Map::new();
    let mut missing: Vec<String> = Vec::new();
    for p in paths {
        if writable.contains_key(&p) {
            continue;
        }
        match check_writable(&p) {
            Writable::Yes => {
                writable.insert(p.clone(), json!(true));
                writable_errors.insert(p, Value::Null);
            }
            Writable::No(e) => {
                writable.insert(p.clone(), json!(false));
                writable_errors.insert(p, json!(e));
            }
            Writable::Missing => {
                writable.insert(p.clone(), json!(false));
                writable_errors.insert(p.clone(), json!("ENOENT"));
                missing.push(p);
            }
        }
    }
    f.put(
        "mounts",
        Value::Array(mounts.iter().map(Mount::to_json).collect()),
    );
    f.put("writable", Value::Object(writable));
    f.put("writable_errors", Value::Object(writable_errors));
    f.put("missing", json!(missing));
}

/// The `/proc/self/status` fields of [`STATUS_FIELDS`].
fn status(f: &mut Fields) {
    let mut status = Map::new();
    match std::fs::read_to_string("/proc/self/status") {
        Ok(text) => {
            for field in STATUS_FIELDS {
                let value = text.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k == *field).then(|| v.trim().to_string())
                });
                status.insert((*field).into(), json!(value));
            }
        }
        Err(e) => f.error("status", e.to_string()),
    }
    f.put("status", Value::Object(status));
}

/// What berth handed over: descriptors now and at start, the environment,
/// LISTEN_FDS and the mode the probe runs in.
fn handed_over(f: &mut Fields) {
    f.put_or("fds", list_fds().map(Value::Array), json!([]));
    let start = crate::start();
    match start.map(|s| &s.fds) {
        Some(fds) => f.put_or("fds_at_start", fds.clone().map(|v| json!(v)), json!([])),
        None => f.put("fds_at_start", json!([])),
    }
    let env: BTreeMap<String, String> = start.map(|s| s.env.clone()).unwrap_or_default();
    f.put("env", json!(env));
    f.put(
        "listen_fds",
        json!(start.map(|s| s.listen_fds).unwrap_or(0)),
    );
    f.put("mode", json!(start.map(|s| s.mode)));
}

/// The namespaces' identities and the cgroup.
fn namespaces(f: &mut Fields) {
    let mut ns = Map::new();
    for name in NAMESPACES {
        let target = std::fs::read_link(format!("/proc/self/ns/{name}"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned());
        ns.insert((*name).into(), json!(target));
    }
    f.put("namespaces", Value::Object(ns));
    // Positive: this network namespace has a TCP hash table of its own;
    // negative: it shares the host's (of that many buckets).
    let ehash = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_ehash_entries")
        .map_err(|e| e.to_string())
        .and_then(|t| t.trim().parse::<i64>().map_err(|e| e.to_string()))
        .map(|n| json!(n));
    f.put_or("tcp_ehash_entries", ehash, Value::Null);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .map(|c| json!(c))
        .map_err(|e| e.to_string());
    f.put_or("cgroup", cgroup, Value::Null);
}

/// Other processes visible, what is in /tmp, the working directory.
fn surroundings(f: &mut Fields) {
    let processes = std::fs::read_dir("/proc")
        .map(|rd| {
            let mut pids: Vec<u64> = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            pids.sort_unstable();
            json!(pids)
        })
        .map_err(|e| e.to_string());
    f.put_or("processes", processes, json!([]));
    let tmp_entries = std::fs::read_dir("/tmp")
        .map(|rd| {
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            json!(names)
        })
        .map_err(|e| e.to_string());
    f.put_or("tmp_entries", tmp_entries, json!([]));
    let cwd = std::env::current_dir()
        .map(|d| json!(d.to_string_lossy()))
        .map_err(|e| e.to_string());
    f.put_or("cwd", cwd, Value::Null);
}

/// Interfaces from getifaddrs, aggregated by name in first-seen order.
fn interfaces() -> Result<Vec<Value>, String> {
    use nix::net::if_::InterfaceFlags;
    let mut list: Vec<(String, bool, Vec<String>)> = Vec::new();
    let addrs = nix::ifaddrs::getifaddrs().map_err(nix_errno_name)?;
    for ifa in addrs {
        let idx = match list.iter().position(|(n, _, _)| *n == ifa.interface_name) {
            Some(i) => i,
            None => {
                list.push((ifa.interface_name.clone(), false, Vec::new()));
                list.len() - 1
            }
        };
        let entry = &mut list[idx];
        entry.1 |= ifa.flags.contains(InterfaceFlags::IFF_UP);
        if let Some(addr) = ifa.address {
            let text = if let Some(a) = addr.as_sockaddr_in() {
                Some(a.ip().to_string())
            } else {
                addr.as_sockaddr_in6().map(|a| a.ip().to_string())
            };
            if let Some(t) = text
                && !entry.2.contains(&t)
            {
                entry.2.push(t);
            }
        }
    }
    Ok(list
        .into_iter()
        .map(|(name, up, addresses)| json!({"name": name, "up": up, "addresses": addresses}))
        .collect())
}

/// One line of `/proc/self/mountinfo`.
pub struct Mount {
    id: Option<u64>,
    parent: Option<u64>,
    root: String,
    mount_point: String,
    mount_options: Vec<String>,
    optional: Vec<String>,
    fs_type: String,
    source: String,
    super_options: Vec<String>,
}

impl Mount {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "parent": self.parent,
            "mount_point": self.mount_point,
            "root": self.root,
            "fs_type": self.fs_type,
            "source": self.source,
            "mount_options": self.mount_options,
            "super_options": self.super_options,
            "optional": self.optional,
        })
    }
}

/// Undoes the octal escapes (`\040` etc.) of mountinfo fields.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn split_opts(s: &str) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(',').map(unescape).collect()
    }
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 6 || fields.len() < sep + 3 {
            continue;
        }
        out.push(Mount {
            id: fields[0].parse().ok(),
            parent: fields[1].parse().ok(),
            root: unescape(fields[3]),
            mount_point: unescape(fields[4]),
            mount_options: split_opts(fields[5]),
            optional: fields[6..sep].iter().map(|f| unescape(f)).collect(),
            fs_type: unescape(fields[sep + 1]),
            source: unescape(fields[sep + 2]),
            super_options: fields
                .get(sep + 3)
                .map(|s| split_opts(s))
                .unwrap_or_default(),
        });
    }
    out
}

/// Lists open fds with their link targets, excluding the fd used to read
/// `/proc/self/fd`.
pub fn list_fds() -> Result<Vec<Value>, String> {
    let fds = read_fd_dir()?;
    Ok(fds
        .into_iter()
        .map(|fd| {
            let target = match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
                Ok(t) => t.to_string_lossy().into_owned(),
                Err(e) => format!("error:{}", io_errno_name(&e)),
            };
            json!({"fd": fd, "target": target})
        })
        .collect())
}

/// Reads the numeric entries of `/proc/self/fd`, sorted, leaving out the fd
/// of the directory stream itself.
fn read_fd_dir() -> Result<Vec<i32>, String> {
    // SAFETY: valid C string; the fd is handed to fdopendir or closed below.
    let dfd = unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dfd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("/proc/self/fd: {}", io_errno_name(&e)));
    }
    // SAFETY: dfd is an open directory fd we own; on success the stream owns it.
    let dir = unsafe { libc::fdopendir(dfd) };
    if dir.is_null() {
        let e = std::io::Error::last_os_error();
        // SAFETY: fdopendir failed, so dfd is still ours to close.
        unsafe { libc::close(dfd) };
        return Err(format!("/proc/self/fd: {}", io_errno_name(&e)));
    }
    let mut fds = Vec::new();
    loop {
        // SAFETY: dir is a valid, open directory stream used by this thread only.
        let ent = unsafe { libc::readdir(dir) };
        if ent.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid entry whose d_name is NUL-terminated
        // and stays valid until the next readdir/closedir on this stream.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        if let Some(fd) = name.to_str().ok().and_then(|n| n.parse::<i32>().ok())
            && fd != dfd
        {
            fds.push(fd);
        }
    }
    // SAFETY: dir is a valid stream not used after this; closes dfd too.
    unsafe { libc::closedir(dir) };
    fds.sort_unstable();
    Ok(fds)
}

enum Writable {
    Yes,
    No(String),
    Missing,
}

static PROBE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Directory: creates and removes a fresh file in it. Anything else: opens it
/// for writing (no truncation, nothing written).
///
/// `/proc/sys` cannot hold new files even when writable, so for it the test
/// is opening `/proc/sys/kernel/hostname` for writing (nothing is written).
fn check_writable(path: &str) -> Writable {
    if path.trim_end_matches('/') == "/proc/sys" {
        return match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Writable::Missing,
            _ => open_for_write("/proc/sys/kernel/hostname"),
        };
    }
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Writable::Missing,
        Err(e) => return Writable::No(io_errno_name(&e)),
    };
    if md.is_dir() {
        let n = PROBE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}/.probe-{}-{n}",
            path.trim_end_matches('/'),
            std::process::id()
        );
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(&name)
        {
            Ok(f) => {
                drop(f);
                let _ = std::fs::remove_file(&name);
                Writable::Yes
            }
            Err(e) => Writable::No(io_errno_name(&e)),
        }
    } else {
        open_for_write(path)
    }
}

/// Opens an existing file for writing without truncating or writing.
fn open_for_write(path: &str) -> Writable {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(_) => Writable::Yes,
        Err(e) => Writable::No(io_errno_name(&e)),
    }
}
