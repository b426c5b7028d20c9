//! `escape`: what the application can do to PID 1 of its container (its
//! reaper, which runs the berth binary): open its memory or executable,
//! ptrace it; and what PID 1 holds (`/proc/1/status`).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;

use serde_json::{Map, Value, json};

use crate::sys::{errno_name, io_errno_name};

/// "opened" or the errno name; the file is closed at once, never written.
fn try_open(path: &str, read: bool, write: bool) -> String {
    match OpenOptions::new()
        .read(read)
        .write(write)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => {
            drop(f);
            "opened".into()
        }
        Err(e) => io_errno_name(&e),
    }
}

/// ptrace(`request`, 1): "attached" (then detached again) or the errno.
fn try_ptrace(request: libc::c_uint) -> String {
    // SAFETY: integer arguments only; the target is PID 1 of this pid
    // namespace.
    let rc = unsafe { libc::ptrace(request, 1, 0usize, 0usize) };
    if rc < 0 {
        return errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // Attached (the defence failed): let PID 1 go on. PTRACE_DETACH needs
    // the tracee stopped; ATTACH stops it with SIGSTOP, SEIZE needs an
    // interrupt.
    let mut status = 0;
    // SAFETY: integer arguments and a valid pointer to a local.
    unsafe {
        if request == libc::PTRACE_SEIZE {
            libc::ptrace(libc::PTRACE_INTERRUPT, 1, 0usize, 0usize);
        }
        libc::waitpid(1, &mut status, libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, 1, 0usize, 0usize);
    }
    "attached".into()
}

/// The fields of `/proc/1/status` that say what PID 1 holds.
fn pid1_status() -> Value {
    const FIELDS: &[&str] = &[
        "Uid",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
    ];
    match std::fs::read_to_string("/proc/1/status") {
        Ok(text) => {
            let mut m = Map::new();
            for line in text.lines() {
                if let Some((k, v)) = line.split_once(':')
                    && FIELDS.contains(&k)
                {
                    m.insert(k.into(), json!(v.trim()));
                }
            }
            Value::Object(m)
        }
        Err(e) => json!({ "error": io_errno_name(&e) }),
    }
}

pub fn escape() -> Value {
    json!({
        "proc1_mem_write": try_open("/proc/1/mem", false, true),
        "proc1_mem_read": try_open("/proc/1/mem", true, false),
        "proc1_exe_read": try_open("/proc/1/exe", true, false),
        "proc1_exe_write": try_open("/proc/1/exe", false, true),
        "ptrace_attach": try_ptrace(libc::PTRACE_ATTACH),
        "ptrace_seize": try_ptrace(libc::PTRACE_SEIZE),
        "pid1_status": pid1_status(),
    })
}
