//! Bad input at the process edges: a malformed `LISTEN_*` environment for
//! `berth serve` (exit 2 and what is wrong), and every printing command
//! writing into a closed pipe (ends quietly, like other Unix tools).

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

/// `berth --config-dir EMPTY serve` with `LISTEN_PID` set to its own pid
/// (or `pid` if given), the other variables as given, and `fd3` (if any) as
/// descriptor 3.
fn serve(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    fd3: Option<OwnedFd>,
) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("services")).unwrap();
    std::fs::write(
        dir.path().join("services/web.toml"),
        "mode = \"inetd\"\nexec = [\"/bin/true\"]\n",
    )
    .unwrap();
    // The shell execs berth, so `$$` is berth's pid.
    let mut script = String::new();
    match pid {
        Some(p) => script.push_str(&format!("LISTEN_PID={p} ")),
        None => script.push_str("LISTEN_PID=$$ "),
    }
    if let Some(f) = fds {
        script.push_str(&format!("LISTEN_FDS='{f}' "));
    }
    if let Some(n) = names {
        script.push_str(&format!("LISTEN_FDNAMES='{n}' "));
    }
    script.push_str("exec \"$0\" --config-dir \"$1\" serve");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&script)
        .arg(BERTH)
        .arg(dir.path())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("NOTIFY_SOCKET")
        // No bus: a serve that got past its sockets ends there at once.
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .env("BERTH_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(fd) = &fd3 {
        let raw = fd.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe; the closure touches nothing
        // but the two descriptor numbers.
        unsafe {
            cmd.pre_exec(move || {
                if raw == 3 {
                    nix::fcntl::fcntl(
                        3,
                        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                    )?;
                } else {
                    nix::unistd::dup2(raw, 3)?;
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().expect("spawn");
    drop(fd3);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    Outcome {
        code: status.code(),
        stderr,
    }
}

fn usage_error(o: &Outcome, phrase: &str) {
    assert_eq!(o.code, Some(2), "expected exit 2; stderr:\n{}", o.stderr);
    assert!(o.stderr.contains(phrase), "no {phrase:?} in:\n{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
}

fn listening_socket() -> OwnedFd {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    OwnedFd::from(l)
}

#[test]
fn garbage_in_listen_fds_is_a_usage_error() {
    let o = serve(None, Some("three"), Some("web"), None);
    usage_error(&o, "LISTEN_FDS=\"three\" is not a number");
    let o = serve(None, Some("-1"), Some("web"), None);
    usage_error(&o, "LISTEN_FDS=\"-1\" is not a number");
    let o = serve(Some("x1"), Some("1"), Some("web"), None);
    usage_error(&o, "LISTEN_PID=\"x1\" is not a number");
}

#[test]
fn listen_pid_of_another_process_is_a_usage_error() {
    let o = serve(Some("1"), Some("1"), Some("web"), Some(listening_socket()));
    usage_error(&o, "LISTEN_PID=1 is not this process");
}

#[test]
fn counts_that_disagree_are_a_usage_error() {
    let o = serve(None, Some("2"), Some("web"), Some(listening_socket()));
    usage_error(
        &o,
        "LISTEN_FDNAMES has 1 name(s) (\"web\") but LISTEN_FDS=2",
    );
    let o = serve(None, Some("1"), None, Some(listening_socket()));
    usage_error(&o, "LISTEN_FDNAMES is not set");
    let o = serve(None, Some("1"), Some("web::"), Some(listening_socket()));
    usage_error(&o, "but LISTEN_FDS=1");
}

#[test]
fn descriptors_that_are_not_there_or_not_listening_sockets_are_a_usage_error() {
    // Descriptor 3 is not open at all.
    let o = serve(None, Some("1"), Some("web"), None);
    usage_error(&o, "descriptor 3 is not open");
    // A regular file.
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let o = serve(None, Some("1"), Some("web"), Some(OwnedFd::from(file)));
    usage_error(
        &o,
        "descriptor 3 (\"web\") is a regular file, expected a listening stream socket",
    );
    // A datagram socket.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let o = serve(None, Some("1"), Some("web"), Some(OwnedFd::from(udp)));
    usage_error(&o, "is a datagram socket");
    // A connected stream socket (what Accept=yes would pass).
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let o = serve(None, Some("1"), Some("web"), Some(OwnedFd::from(a)));
    usage_error(&o, "a stream socket that is not listening");
}

#[test]
fn a_well_formed_environment_passes_the_checks() {
    // With good sockets, serve gets past them (and then needs systemd's
    // bus, which these tests take away: any outcome but a usage error).
    let o = serve(None, Some("1"), Some("web"), Some(listening_socket()));
    assert!(
        !o.stderr.contains("sockets from systemd") && o.code != Some(2),
        "{:?}: {}",
        o.code,
        o.stderr
    );
    assert!(o.stderr.contains("system bus"), "{}", o.stderr);
}

#[test]
fn sockets_named_after_no_service_are_ignored_whatever_they_are() {
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let o = serve(
        None,
        Some("1"),
        Some("nosuchservice"),
        Some(OwnedFd::from(file)),
    );
    assert!(o.code != Some(2), "{:?}: {}", o.code, o.stderr);
    assert!(
        o.stderr
            .contains("socket named \"nosuchservice\" matches no service"),
        "unknown names are logged and ignored: {}",
        o.stderr
    );
}

/// Runs berth with stdout a pipe whose reader is gone already.
fn into_closed_pipe(args: &[&str]) -> (std::process::ExitStatus, String) {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = Command::new(BERTH)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .expect("run berth");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Like `cat` or `ls`: the writer dies of SIGPIPE (a shell shows 141),
/// quietly; no panic, no error text.
#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("services")).unwrap();
    std::fs::write(
        dir.path().join("services/a.toml"),
        "mode = \"inetd\"\nexec = [\"/bin/true\"]\n",
    )
    .unwrap();
    let conf = dir.path().to_str().unwrap();
    for args in [
        vec!["--help"],
        vec!["check", "--help"],
        vec!["completions", "bash"],
        vec!["completions", "zsh"],
        vec!["--config-dir", conf, "check"],
        vec!["--version"],
    ] {
        let (status, stderr) = into_closed_pipe(&args);
        assert!(
            status.success() || status.signal() == Some(libc::SIGPIPE),
            "berth {args:?}: {status:?}; stderr: {stderr}"
        );
        assert_eq!(stderr, "", "berth {args:?} wrote to stderr");
    }
}
