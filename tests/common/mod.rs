//! Shared harness for the integration tests: runs the real `berth` binary
//! (`berth run ... --no-scope`) with the real probe inside its containers.
#![allow(dead_code)]
// Harness failures are test failures: unwrap is the report here.
#![allow(clippy::unwrap_used)]

pub mod config;
pub mod sandbox;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");
pub const PROBE: &str = env!("CARGO_BIN_EXE_berth-probe");

/// These tests build real namespaces and mounts: they need root. Outside
/// CI a non-root run skips with a reason; in CI it fails.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("integration tests must run as root in CI");
    }
    eprintln!("SKIPPED: not root (the sandbox needs real namespaces and mounts)");
    false
}

#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Log {
    pub fn lines(&self) -> Vec<String> {
        self.inner.0.lock().unwrap().clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Wait until `n` lines contain `needle`; panics with the log on timeout.
    pub fn wait_count(&self, needle: &str, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.inner;
        let mut lines = lock.lock().unwrap();
        loop {
            let hits: Vec<String> = lines
                .iter()
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if hits.len() >= n {
                return hits;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "timed out waiting for {n}× {needle:?} in berth's log:\n{}",
                    lines.join("\n")
                );
            }
            lines = cv.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_count(needle, 1, timeout).remove(0)
    }
}

pub struct Berth {
    pub child: Child,
    pub log: Log,
    pub dir: tempfile::TempDir,
    pub service_file: PathBuf,
}

/// Write `toml` as `services/NAME.toml` in a fresh config dir.
pub fn service_dir(name: &str, toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let services = dir.path().join("services");
    std::fs::create_dir_all(&services).expect("mkdir services");
    let file = services.join(format!("{name}.toml"));
    std::fs::write(&file, toml).expect("write service");
    (dir, file)
}

/// The probe bound into the container at /probe.
pub fn probe_bind() -> String {
    format!("{PROBE}:/probe")
}

impl Berth {
    /// Start `berth run` on `listen` and wait until it reports it serves.
    pub fn start(name: &str, toml: &str, listen: &[String]) -> Berth {
        let (dir, file) = service_dir(name, toml);
        Self::start_file(dir, file, listen)
    }

    /// Start on a loopback port the kernel picks (no race with other
    /// tests); returns berth and the address it reports listening on.
    pub fn start_tcp(name: &str, toml: &str) -> (Berth, String) {
        Self::start_tcp_env(name, toml, &[])
    }

    /// `start_tcp` with extra environment for berth itself (`None`: unset).
    pub fn start_tcp_env(name: &str, toml: &str, env: &[(&str, Option<&str>)]) -> (Berth, String) {
        let (dir, file) = service_dir(name, toml);
        let b = Self::start_file_env(dir, file, &["127.0.0.1:0".to_string()], env);
        let addr = b.addr();
        (b, addr)
    }

    pub fn start_file(dir: tempfile::TempDir, file: PathBuf, listen: &[String]) -> Berth {
        Self::start_file_env(dir, file, listen, &[])
    }

    /// `start_file` with extra environment for berth itself (`None`: unset).
    pub fn start_file_env(
        dir: tempfile::TempDir,
        file: PathBuf,
        listen: &[String],
        env: &[(&str, Option<&str>)],
    ) -> Berth {
        let mut cmd = Command::new(BERTH);
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.arg("--config-dir")
            .arg(dir.path())
            .arg("run")
            .arg(&file);
        for l in listen {
            cmd.arg("--listen").arg(l);
        }
        cmd.arg("--no-scope")
            .env("BERTH_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn berth");
        let log = Log::default();
        let stderr = child.stderr.take().expect("stderr");
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("berth| {line}");
                let (lock, cv) = &*l2.inner;
                lock.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        let b = Berth {
            child,
            log,
            dir,
            service_file: file,
        };
        b.log.wait_for("serving", Duration::from_secs(20));
        b
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first address berth listens on (see [`Berth::listening`]).
    pub fn addr(&self) -> String {
        let all = self.listening();
        all.into_iter()
            .next()
            .expect("a \"listening on\" line in the log")
    }

    /// The addresses berth listens on, in `--listen` order, as it logged
    /// them before "serving" (so port 0 shows the port the kernel picked).
    pub fn listening(&self) -> Vec<String> {
        self.log
            .lines()
            .iter()
            .filter_map(|l| l.split("listening on ").nth(1))
            .filter_map(|r| r.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }

    /// Replace the service file with `toml`, send SIGHUP and wait (up to
    /// `within`) until berth logged its `nth` reload.
    pub fn reload(&self, toml: &str, nth: usize, within: Duration) {
        std::fs::write(&self.service_file, toml).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        self.log.wait_count("configuration reloaded", nth, within);
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Send one command line over TCP and read the answer to EOF.
pub fn tcp_request(addr: &str, cmd: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub fn unix_request(path: &Path, cmd: &str) -> String {
    let mut s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {path:?}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim())
        .unwrap_or_else(|e| panic!("probe answer is not JSON ({e}): {s:?}"))
}

/// Namespace link targets of this (host) process.
pub fn host_ns(name: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{name}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Children of `pid` (of its main thread, which is where berth forks).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The top process of each container berth started: its PID 1, forked by
/// the zygote into the container's pid namespace (`berth-init`), or an
/// outer stage (`berth-stage`: `private_users`, `berth inetd`).
pub fn containers(berth: u32) -> Vec<u32> {
    children(berth)
        .into_iter()
        .filter(|p| matches!(comm(*p).as_str(), "berth-init" | "berth-stage"))
        .collect()
}

/// PID 1 of each container berth started (under its stage if it has one).
pub fn inits(berth: u32) -> Vec<u32> {
    containers(berth)
        .into_iter()
        .flat_map(|p| match comm(p).as_str() {
            "berth-stage" => children(p),
            _ => vec![p],
        })
        .collect()
}

/// The container id in a berth log line (`container=ID`).
pub fn container_of(line: &str) -> String {
    line.split("container=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

/// A process's name (`berth-stage`, `berth-init`, `berth-zygote` ...).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Network namespaces held by the applications of `service` (their
/// environment has `BERTH_SERVICE=service`): other berths and testbeds on the
/// host meanwhile do not count.
pub fn net_namespaces(service: &str) -> std::collections::BTreeSet<String> {
    let want = format!("BERTH_SERVICE={service}");
    let mut out = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if !env.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            continue;
        }
        if let Ok(l) = std::fs::read_link(e.path().join("ns/net")) {
            out.insert(l.to_string_lossy().into_owned());
        }
    }
    out
}

/// Open descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Wait (bounded) until process `pid` holds at most `most` descriptors;
/// returns the count last seen. A container's descriptors (channel, pidfd)
/// are closed by berth just after its stage is reaped, so a count taken as
/// a baseline may include one in flight: callers compare "no more than
/// before", which still catches a leak per container or per connection.
pub fn wait_fds_at_most(pid: u32, most: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let n = fd_count(pid);
        if n <= most || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (bounded) until berth's only child is the zygote: the stages of
/// containers that ended have been reaped, and the descriptors berth held
/// for them (channels, pidfds) are closed. Counting berth's descriptors
/// before that counts a container's leftovers as berth's own.
pub fn wait_settled(berth: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while children(berth)
        .into_iter()
        .any(|p| comm(p) != "berth-zygote")
    {
        assert!(
            Instant::now() < deadline,
            "stages still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time (user + system) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}
