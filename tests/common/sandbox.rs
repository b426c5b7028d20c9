//! The harness of the sandbox tests (tests/sandbox_*.rs): a service under
//! test, `berth run` started in either mode with the real probe, and
//! accessors into the probe's `report`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::Berth;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Inetd,
    Listen,
}

pub const MODES: [Mode; 2] = [Mode::Inetd, Mode::Listen];

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Inetd => "inetd",
            Mode::Listen => "listen",
        }
    }
}

/// A service under test: top-level lines, `[sandbox]` lines and extra
/// read-only binds (the probe bind is always there).
#[derive(Clone)]
pub struct Svc {
    pub name: String,
    pub top: Vec<String>,
    pub sandbox: Vec<String>,
    pub read_only: Vec<String>,
}

impl Svc {
    pub fn new(name: &str) -> Svc {
        Svc {
            name: name.into(),
            top: Vec::new(),
            sandbox: Vec::new(),
            read_only: Vec::new(),
        }
    }

    pub fn top(mut self, line: &str) -> Svc {
        self.top.push(line.into());
        self
    }

    pub fn sandbox(mut self, line: &str) -> Svc {
        self.sandbox.push(line.into());
        self
    }

    pub fn ro(mut self, bind: &str) -> Svc {
        self.read_only.push(bind.into());
        self
    }

    pub fn toml(&self, mode: Mode) -> String {
        let mut t = format!("mode = \"{}\"\nexec = [\"/probe\"]\n", mode.name());
        if mode == Mode::Listen {
            t.push_str("idle_timeout = \"30s\"\n");
        }
        for l in &self.top {
            t.push_str(l);
            t.push('\n');
        }
        t.push_str("\n[sandbox]\n");
        let mut ro = vec![super::probe_bind()];
        ro.extend(self.read_only.iter().cloned());
        let ro: Vec<String> = ro.iter().map(|b| format!("{b:?}")).collect();
        t.push_str(&format!("read_only = [{}]\n", ro.join(", ")));
        for l in &self.sandbox {
            t.push_str(l);
            t.push('\n');
        }
        t
    }
}

/// A listen address of `berth run`.
pub enum Addr {
    Tcp(String),
    Unix(PathBuf),
}

#[derive(Clone, Copy)]
pub enum Kind {
    Tcp4,
    Tcp6,
    Unix,
}

impl Addr {
    pub fn arg(&self) -> String {
        match self {
            Addr::Tcp(a) => a.clone(),
            Addr::Unix(p) => p.to_string_lossy().into_owned(),
        }
    }

    pub fn request(&self, cmd: &str) -> String {
        match self {
            Addr::Tcp(a) => super::tcp_request(a, cmd),
            Addr::Unix(p) => super::unix_request(p, cmd),
        }
    }
}

/// A running `berth run` with its addresses.
pub struct Running {
    pub mode: Mode,
    pub berth: Berth,
    pub addrs: Vec<Addr>,
    _sockets: tempfile::TempDir,
}

pub fn start(mode: Mode, svc: &Svc, kinds: &[Kind]) -> Running {
    let sockets = tempfile::tempdir().expect("tempdir for sockets");
    // TCP on port 0: the kernel picks a free port as berth binds it (a port
    // picked here first could be taken by another test before berth binds).
    let args: Vec<String> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| match k {
            Kind::Tcp4 => "127.0.0.1:0".to_string(),
            Kind::Tcp6 => "[::1]:0".to_string(),
            Kind::Unix => sockets
                .path()
                .join(format!("s{i}.sock"))
                .to_string_lossy()
                .into_owned(),
        })
        .collect();
    let berth = Berth::start(&svc.name, &svc.toml(mode), &args);
    // berth logs "listening on ADDR" per listener, in order, before "serving".
    let bound = berth.listening();
    assert_eq!(bound.len(), kinds.len(), "listening lines: {bound:?}");
    let addrs: Vec<Addr> = kinds
        .iter()
        .zip(args)
        .zip(bound)
        .map(|((k, arg), bound)| match k {
            Kind::Tcp4 | Kind::Tcp6 => Addr::Tcp(bound),
            Kind::Unix => Addr::Unix(arg.into()),
        })
        .collect();
    Running {
        mode,
        berth,
        addrs,
        _sockets: sockets,
    }
}

impl Running {
    /// `report PATHS` over address `idx`, checked to be a clean report from
    /// a probe in the expected mode.
    pub fn report(&self, idx: usize, paths: &[&str]) -> Value {
        let cmd = if paths.is_empty() {
            "report".to_string()
        } else {
            format!("report {}", paths.join(" "))
        };
        let answer = self.addrs[idx].request(&cmd);
        let r = super::json(&answer);
        check_report(&r, self.mode);
        r
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.berth.stop();
    }
}

pub fn check_report(r: &Value, mode: Mode) {
    assert_eq!(r["mode"], mode.name(), "probe ran in the wrong mode: {r}");
    assert_eq!(
        r["errors"],
        serde_json::json!({}),
        "{mode:?}: probe errors in its report"
    );
}

/// One container of `svc` in `mode`, one `report PATHS`.
pub fn report(mode: Mode, svc: &Svc, paths: &[&str]) -> Value {
    start(mode, svc, &[Kind::Tcp4]).report(0, paths)
}

// ---------------------------------------------------------------------------
// Report accessors
// ---------------------------------------------------------------------------

pub fn mounts(r: &Value) -> &Vec<Value> {
    r["mounts"].as_array().expect("mounts is a list")
}

/// The topmost mount at `point`.
pub fn mount_at<'a>(r: &'a Value, point: &str) -> Option<&'a Value> {
    mounts(r).iter().rev().find(|m| m["mount_point"] == point)
}

pub fn mount_must<'a>(r: &'a Value, point: &str, mode: Mode) -> &'a Value {
    mount_at(r, point).unwrap_or_else(|| {
        let points: Vec<&Value> = mounts(r).iter().map(|m| &m["mount_point"]).collect();
        panic!("{mode:?}: no mount at {point}; mounts: {points:?}")
    })
}

pub fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")))
        .collect()
}

pub fn has_opt(m: &Value, field: &str, opt: &str) -> bool {
    strs(&m[field]).contains(&opt)
}

pub fn writable(r: &Value, path: &str) -> bool {
    r["writable"][path]
        .as_bool()
        .unwrap_or_else(|| panic!("no writable entry for {path}: {}", r["writable"]))
}

pub fn write_error<'a>(r: &'a Value, path: &str) -> &'a Value {
    &r["writable_errors"][path]
}

pub fn missing(r: &Value) -> BTreeSet<String> {
    strs(&r["missing"]).into_iter().map(String::from).collect()
}

pub fn status_hex(r: &Value, field: &str) -> u64 {
    let s = r["status"][field]
        .as_str()
        .unwrap_or_else(|| panic!("no status field {field}: {}", r["status"]));
    u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("{field} {s:?}: {e}"))
}

pub fn int(r: &Value, field: &str) -> i64 {
    r[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} is not a number: {}", r[field]))
}

pub fn env(r: &Value) -> &serde_json::Map<String, Value> {
    r["env"].as_object().expect("env is an object")
}

/// `(fd, target)` pairs of a fd list.
pub fn fds(v: &Value) -> Vec<(i64, String)> {
    v.as_array()
        .expect("fd list")
        .iter()
        .map(|f| {
            (
                f["fd"].as_i64().expect("fd number"),
                f["target"].as_str().expect("fd target").to_string(),
            )
        })
        .collect()
}

pub const CAPS: &[&str] = &["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"];
