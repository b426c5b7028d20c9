//! `berth-probe`: a test application that runs inside a berth container and
//! reports, as JSON, what it sees.
//!
//! It is written like an ordinary socket-activated service:
//!
//! * inetd style (no `LISTEN_FDS`): the connection is fd 0 / fd 1; one
//!   command line is read from stdin, answered on stdout, then the process
//!   exits;
//! * listen style (`LISTEN_FDS` set): every passed socket is taken with the
//!   `listenfd` crate and served forever, a thread per listener and a thread
//!   per connection; each connection carries one command line.
//!
//! `berth-probe --exit-now CODE` exits at once with `CODE`.

#[path = "probe/escape.rs"]
mod escape;
#[path = "probe/report.rs"]
mod report;
#[path = "probe/seccomp.rs"]
mod seccomp_calls;
#[path = "probe/sys.rs"]
mod sys;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::OnceLock;

use serde_json::{Value, json};

/// What the probe saw before `listenfd` touched anything.
pub struct Start {
    /// Environment at program start.
    pub env: BTreeMap<String, String>,
    /// Open fds at program start (JSON list), or an error message.
    pub fds: Result<Vec<Value>, String>,
    /// Number of sockets `listenfd` found.
    pub listen_fds: usize,
    /// `"inetd"` or `"listen"`.
    pub mode: &'static str,
}

static START: OnceLock<Start> = OnceLock::new();

/// Returns the start-of-program snapshot.
pub fn start() -> Option<&'static Start> {
    START.get()
}

/// Longest command line accepted.
const MAX_LINE: usize = 64 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--exit-now") {
        let code = args.get(2).and_then(|c| c.parse::<i32>().ok()).unwrap_or(2);
        std::process::exit(code);
    }

    // Snapshot before listenfd unsets LISTEN_PID / LISTEN_FDS.
    let env: BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let fds = report::list_fds();
    let listen_style = env.contains_key("LISTEN_FDS");

    if !listen_style {
        let _ = START.set(Start {
            env,
            fds,
            listen_fds: 0,
            mode: "inetd",
        });
        let stdin = io::stdin();
        let stdout = io::stdout();
        let mut input = stdin.lock();
        let mut output = stdout.lock();
        serve_one(&mut input, &mut output);
        let _ = output.flush();
        return;
    }

    let mut listenfd = listenfd::ListenFd::from_env();
    let count = listenfd.len();
    let _ = START.set(Start {
        env,
        fds,
        listen_fds: count,
        mode: "listen",
    });

    let mut threads = Vec::new();
    for idx in 0..count {
        let spawned = match listenfd.take_tcp_listener(idx) {
            Ok(Some(l)) => spawn_tcp(idx, l),
            Ok(None) => None,
            Err(tcp_err) => match listenfd.take_unix_listener(idx) {
                Ok(Some(l)) => spawn_unix(idx, l),
                Ok(None) => None,
                Err(unix_err) => {
                    eprintln!(
                        "berth-probe: passed fd #{idx} is neither a TCP ({tcp_err}) nor a unix stream listener ({unix_err})"
                    );
                    None
                }
            },
        };
        if let Some(t) = spawned {
            threads.push(t);
        }
    }
    if threads.is_empty() {
        eprintln!("berth-probe: LISTEN_FDS set but no usable listening socket");
        std::process::exit(1);
    }
    for t in threads {
        let _ = t.join();
    }
}

fn spawn_tcp(idx: usize, listener: TcpListener) -> Option<std::thread::JoinHandle<()>> {
    spawn_listener(idx, move || serve_incoming(listener.incoming()))
}

fn spawn_unix(idx: usize, listener: UnixListener) -> Option<std::thread::JoinHandle<()>> {
    spawn_listener(idx, move || serve_incoming(listener.incoming()))
}

/// Accept forever, each connection on its own thread.
fn serve_incoming<S>(incoming: impl Iterator<Item = std::io::Result<S>>)
where
    S: Send + 'static,
    for<'a> &'a S: Read + Write,
{
    for conn in incoming {
        match conn {
            Ok(stream) => dispatch(move || {
                let mut r = &stream;
                let mut w = &stream;
                serve_one(&mut r, &mut w);
            }),
            Err(e) => accept_failed(&e),
        }
    }
}

fn spawn_listener(
    idx: usize,
    body: impl FnOnce() + Send + 'static,
) -> Option<std::thread::JoinHandle<()>> {
    match std::thread::Builder::new()
        .name(format!("listen-{idx}"))
        .spawn(body)
    {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("berth-probe: cannot start listener thread: {e}");
            None
        }
    }
}

fn accept_failed(e: &io::Error) {
    eprintln!("berth-probe: accept: {e}");
    if e.kind() != io::ErrorKind::Interrupted {
        // Avoid spinning on EMFILE and the like.
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Runs `job` on a new thread, or inline if no thread can be created (for
/// instance under a tasks limit).
fn dispatch<F: FnOnce() + Send + 'static>(job: F) {
    let job = std::sync::Arc::new(std::sync::Mutex::new(Some(job)));
    let for_thread = std::sync::Arc::clone(&job);
    let spawned = std::thread::Builder::new().spawn(move || {
        let taken = for_thread.lock().ok().and_then(|mut g| g.take());
        if let Some(f) = taken {
            f();
        }
    });
    if let Err(e) = spawned {
        eprintln!("berth-probe: cannot start connection thread ({e}); serving inline");
        let taken = job.lock().ok().and_then(|mut g| g.take());
        if let Some(f) = taken {
            f();
        }
    }
}

/// Reads one line (without the trailing newline) byte by byte, so nothing
/// after it is consumed. `None` on EOF before any byte or on a read error.
fn read_line(input: &mut dyn Read) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                if byte[0] == b'\n' {
                    break;
                }
                line.push(byte[0]);
                if line.len() >= MAX_LINE {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    if line.is_empty() && byte[0] != b'\n' {
        return None;
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

fn send_json(output: &mut dyn Write, value: &Value) {
    let mut text = value.to_string();
    text.push('\n');
    send_raw(output, &text);
}

fn send_raw(output: &mut dyn Write, text: &str) {
    if let Err(e) = output
        .write_all(text.as_bytes())
        .and_then(|()| output.flush())
    {
        eprintln!("berth-probe: cannot send answer: {e}");
    }
}

/// Reads one command line from `input` and answers it on `output`.
fn serve_one(input: &mut dyn Read, output: &mut dyn Write) {
    let Some(line) = read_line(input) else {
        return;
    };
    let (cmd, rest) = match line.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (line.as_str(), ""),
    };
    match cmd {
        "report" => {
            let extra: Vec<&str> = rest.split_whitespace().collect();
            send_json(output, &report::report(&extra));
        }
        "escape" => send_json(output, &escape::escape()),
        "echo" => send_raw(output, &format!("{rest}\n")),
        "stderr" => {
            let mut err = io::stderr().lock();
            let ok = err
                .write_all(format!("{rest}\n").as_bytes())
                .and_then(|()| err.flush());
            drop(err);
            match ok {
                Ok(()) => send_json(output, &json!({"ok": true})),
                Err(e) => send_json(
                    output,
                    &json!({"ok": false, "error": sys::io_errno_name(&e)}),
                ),
            }
        }
        "hold" => hold(input),
        "fill-tmp" => {
            let keep = rest.trim() == "keep";
            send_json(output, &sys::fill_tmp(keep));
            if keep {
                hold(input);
            }
        }
        "fill-tmp-inodes" => send_json(output, &sys::fill_tmp_inodes()),
        "orphan" => send_json(output, &sys::orphan()),
        "fork-bomb" => {
            let max = rest.trim().parse::<usize>().unwrap_or(sys::FORK_BOMB_MAX);
            send_json(output, &sys::fork_bomb(max));
        }
        "alloc" => match rest.trim().parse::<usize>() {
            Ok(mib) => send_json(output, &sys::alloc(mib)),
            Err(_) => send_json(output, &json!({"error": format!("bad size {rest:?}")})),
        },
        "exit" => match rest.trim().parse::<i32>() {
            Ok(code) => {
                send_json(output, &json!({"exiting": code}));
                std::process::exit(code);
            }
            Err(_) => send_json(output, &json!({"error": format!("bad exit code {rest:?}")})),
        },
        other => send_json(
            output,
            &json!({"error": format!("unknown command {other}")}),
        ),
    }
}

/// Keeps the connection open until the peer closes it.
fn hold(input: &mut dyn Read) {
    let mut buf = [0u8; 4096];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
