//! Raw system-call probes and the process/resource commands (`orphan`,
//! `fork-bomb`, `alloc`, `fill-tmp`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use libc::{c_int, c_long, c_void};
use serde_json::{Map, Value, json};

/// Default upper bound on children created by `fork-bomb`.
pub const FORK_BOMB_MAX: usize = 4096;

/// Safety stop for `fill-tmp` when /tmp has no size limit.
const FILL_CAP: u64 = 16 << 30;
/// Most files `fill-tmp-inodes` creates (a /tmp without an inode bound
/// stops it here rather than at the host's memory).
const FILL_FILES: u64 = 200_000;

/// Symbolic name of an errno value ("EPERM"), or "E<number>" if unknown.
pub fn errno_name(e: i32) -> String {
    let errno = nix::errno::Errno::from_raw(e);
    if errno == nix::errno::Errno::UnknownErrno {
        format!("E{e}")
    } else {
        format!("{errno:?}")
    }
}

/// Name for a nix error.
pub fn nix_errno_name(e: nix::errno::Errno) -> String {
    errno_name(e as i32)
}

/// Name for an I/O error: the errno name if it has one, else its message.
pub fn io_errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_name(n),
        None => e.to_string(),
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// "ok" for a non-negative return, else the errno name.
fn result_name(ret: c_long) -> String {
    if ret >= 0 {
        "ok".into()
    } else {
        errno_name(last_errno())
    }
}

/// Like [`result_name`], for calls that return a new fd on success: the fd
/// is closed.
fn fd_result_name(ret: c_long) -> String {
    if ret >= 0 {
        if let Ok(fd) = c_int::try_from(ret) {
            // SAFETY: the syscall just returned this fd to us; nothing else owns it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        "ok".into()
    } else {
        errno_name(last_errno())
    }
}

/// Calls each interesting syscall with harmless arguments. If the syscall is
/// allowed (and, where checked first, the caller is capable) it fails with a
/// specific errno; a seccomp filter or missing capability shows as EPERM.
pub fn probe_syscalls() -> Map<String, Value> {
    let mut m = Map::new();
    let null = std::ptr::null::<c_void>();
    let target = c"/nonexistent-probe-target";
    let a = c"/nonexistent-a";
    let b = c"/nonexistent-b";

    // SAFETY: all pointers are NUL-terminated literals or NULL; the target does not exist.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount,
            c"none".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0 as c_long,
            null,
        )
    };
    m.insert("mount".into(), json!(result_name(r)));

    // SAFETY: valid C string; the path does not exist.
    let r = unsafe { libc::syscall(libc::SYS_umount2, target.as_ptr(), 0 as c_long) };
    m.insert("umount2".into(), json!(result_name(r)));

    // SAFETY: valid C strings naming nonexistent paths.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, a.as_ptr(), b.as_ptr()) };
    m.insert("pivot_root".into(), json!(result_name(r)));

    // SAFETY: integer arguments only; fd -1 is invalid.
    let r = unsafe { libc::syscall(libc::SYS_setns, -1 as c_long, 0 as c_long) };
    m.insert("setns".into(), json!(result_name(r)));

    // SAFETY: integer argument only; all flag bits set is rejected with EINVAL.
    let r = unsafe { libc::syscall(libc::SYS_unshare, -1 as c_long) };
    m.insert("unshare".into(), json!(result_name(r)));

    // SAFETY: valid C string; nonexistent path; a returned fd is closed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            -1 as c_long,
            c"/nonexistent-probe".as_ptr(),
            0 as c_long,
        )
    };
    m.insert("open_tree".into(), json!(fd_result_name(r)));

    // SAFETY: valid C strings naming nonexistent paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            -1 as c_long,
            a.as_ptr(),
            -1 as c_long,
            b.as_ptr(),
            0 as c_long,
        )
    };
    m.insert("move_mount".into(), json!(result_name(r)));

    // SAFETY: valid C string; a returned fd is closed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsopen,
            c"probe-nonexistent-fs".as_ptr(),
            0 as c_long,
        )
    };
    m.insert("fsopen".into(), json!(fd_result_name(r)));

    // SAFETY: integer arguments only; fd -1 is invalid.
    let r = unsafe { libc::syscall(libc::SYS_fsmount, -1 as c_long, 0 as c_long, 0 as c_long) };
    m.insert("fsmount".into(), json!(fd_result_name(r)));

    // SAFETY: NULL segments with an invalid architecture in the flags, rejected with EINVAL.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0 as c_long,
            0 as c_long,
            null,
            0xffff_0000 as c_long,
        )
    };
    m.insert("kexec_load".into(), json!(result_name(r)));

    // SAFETY: NULL image of length 0 cannot load anything; params is a valid C string.
    let r = unsafe { libc::syscall(libc::SYS_init_module, null, 0 as c_long, c"".as_ptr()) };
    m.insert("init_module".into(), json!(result_name(r)));

    // SAFETY: invalid command with NULL attr; a returned fd is closed.
    let r = unsafe { libc::syscall(libc::SYS_bpf, -1 as c_long, null, 0 as c_long) };
    m.insert("bpf".into(), json!(fd_result_name(r)));

    // SAFETY: invalid operation, integer arguments only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            -1 as c_long,
            0 as c_long,
            0 as c_long,
            0 as c_long,
            0 as c_long,
        )
    };
    m.insert("keyctl".into(), json!(result_name(r)));

    // SAFETY: PTRACE_ATTACH to a pid above PID_MAX_LIMIT, which cannot exist.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ptrace,
            16 as c_long,
            0x3fff_ffff as c_long,
            0 as c_long,
            0 as c_long,
        )
    };
    m.insert("ptrace".into(), json!(result_name(r)));

    // SAFETY: NULL attr is rejected before anything happens; a returned fd is closed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            null,
            0 as c_long,
            -1 as c_long,
            -1 as c_long,
            0 as c_long,
        )
    };
    m.insert("perf_event_open".into(), json!(fd_result_name(r)));

    let (plain, high) = probe_tiocsti();
    m.insert("TIOCSTI".into(), json!(plain));
    m.insert("TIOCSTI_high_bits".into(), json!(high));
    crate::seccomp_calls::probe(&mut m);
    m
}

/// TIOCSTI on a fresh pty master, with the plain request number and with the
/// upper 32 bits of the request set.
fn probe_tiocsti() -> (String, String) {
    // SAFETY: valid C string; the returned fd is wrapped in an OwnedFd below.
    let fd = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = format!("noptmx:{}", errno_name(last_errno()));
        return (e.clone(), e);
    }
    // SAFETY: fd was just opened by us and is owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let unlock: c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int through the pointer, which is valid.
    unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCSPTLCK,
            &unlock as *const c_int,
        )
    };
    let c: u8 = b' ';
    // SAFETY: TIOCSTI reads one byte through the pointer, which is valid.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSTI, &c as *const u8) };
    let plain = result_name(c_long::from(r));

    #[cfg(target_pointer_width = "64")]
    let high = {
        let req: u64 = u64::from(libc::TIOCSTI as u32) | 0x1_0000_0000;
        // SAFETY: as above; the kernel ignores the upper 32 bits of the request.
        let r = unsafe {
            libc::syscall(
                libc::SYS_ioctl,
                c_long::from(master.as_raw_fd()),
                req,
                &c as *const u8,
            )
        };
        result_name(r)
    };
    #[cfg(not(target_pointer_width = "64"))]
    let high = String::from("unsupported");
    drop(master);
    (plain, high)
}

/// Tries to open /proc/1/exe for writing; never writes.
pub fn proc1_exe_write() -> String {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open("/proc/1/exe")
    {
        Ok(f) => {
            drop(f);
            "opened".into()
        }
        Err(e) => io_errno_name(&e),
    }
}

/// Writes 1 MiB chunks to /tmp/fill until a write fails, then removes it
/// (unless `keep`: the container then holds a full /tmp).
pub fn fill_tmp(keep: bool) -> Value {
    let path = "/tmp/fill";
    let chunk = vec![0xa5u8; 1 << 20];
    let mut written: u64 = 0;
    let mut capped = false;
    let error = match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Err(e) => Some(io_errno_name(&e)),
        Ok(mut f) => {
            let mut err = None;
            loop {
                if written >= FILL_CAP {
                    capped = true;
                    break;
                }
                match f.write(&chunk) {
                    Ok(0) => {
                        err = Some("short write".to_string());
                        break;
                    }
                    Ok(n) => written += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        err = Some(io_errno_name(&e));
                        break;
                    }
                }
            }
            if err.is_none()
                && let Err(e) = f.sync_all()
            {
                err = Some(io_errno_name(&e));
            }
            err
        }
    };
    let removed = match keep {
        true => Value::Bool(false),
        false => match std::fs::remove_file(path) {
            Ok(()) => Value::Bool(true),
            Err(e) => json!(io_errno_name(&e)),
        },
    };
    let mut v = json!({"written": written, "error": error, "removed": removed});
    if capped {
        v["capped"] = json!(true);
    }
    v
}

/// Closes every fd of the (forked) calling process and puts /dev/null on 0-2.
/// Only async-signal-safe calls.
fn detach_fds() {
    // SAFETY: close_range with integer arguments; closing everything is intended.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            0 as c_long,
            c_long::from(u32::MAX),
            0 as c_long,
        )
    };
    if r < 0 {
        for fd in 0..65536 {
            // SAFETY: closing a possibly unused fd number is harmless here.
            unsafe { libc::close(fd) };
        }
    }
    // SAFETY: valid C string; the result becomes fd 0 (lowest free).
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
    if null == 0 {
        // SAFETY: duplicating fd 0 onto 1 and 2.
        unsafe {
            libc::dup2(0, 1);
            libc::dup2(0, 2);
        }
    }
}

/// Double-forks a grandchild that calls setsid and sleeps an hour.
pub fn orphan() -> Value {
    let mut fds: [c_int; 2] = [-1, -1];
    // SAFETY: fds points to two writable ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return json!({"error": format!("pipe: {}", errno_name(last_errno()))});
    }
    // SAFETY: pipe2 returned two fresh fds owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let wr_raw = wr.as_raw_fd();

    // SAFETY: the child only makes async-signal-safe calls (fork, setsid,
    // close, open, dup2, sleep, write, _exit) and never returns.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return json!({"error": format!("fork: {}", errno_name(last_errno()))});
    }
    if child == 0 {
        // SAFETY: see above; this branch ends in _exit.
        unsafe {
            let grandchild = libc::fork();
            if grandchild == 0 {
                libc::setsid();
                detach_fds();
                let mut left: libc::c_uint = 3600;
                while left > 0 {
                    left = libc::sleep(left);
                }
                libc::_exit(0);
            }
            let bytes = grandchild.to_ne_bytes();
            libc::write(wr_raw, bytes.as_ptr().cast::<c_void>(), bytes.len());
            libc::_exit(0);
        }
    }
    drop(wr);
    let mut buf = [0u8; 4];
    let got = File::from(rd).read_exact(&mut buf);
    let mut status: c_int = 0;
    // SAFETY: child is our own child; status points to a valid int.
    unsafe { libc::waitpid(child, &mut status, 0) };
    match got {
        Ok(()) => {
            let pid = i32::from_ne_bytes(buf);
            if pid < 0 {
                json!({"error": "fork of grandchild failed"})
            } else {
                json!({"orphan_pid": pid})
            }
        }
        Err(e) => json!({"error": format!("read pid: {e}")}),
    }
}

/// Forks idle children until fork fails (or `max` is reached), then kills and
/// reaps them all and reports how many there were.
pub fn fork_bomb(max: usize) -> Value {
    let mut children: Vec<libc::pid_t> = Vec::new();
    let mut error = None;
    while children.len() < max {
        // SAFETY: the child only calls async-signal-safe functions (alarm,
        // pause) and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            error = Some(errno_name(last_errno()));
            break;
        }
        if pid == 0 {
            // SAFETY: async-signal-safe calls only; SIGALRM ends the child
            // should the parent never kill it.
            unsafe {
                libc::alarm(300);
                loop {
                    libc::pause();
                }
            }
        }
        children.push(pid);
    }
    for pid in &children {
        // SAFETY: pid is one of our own children, not yet reaped.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    for pid in &children {
        let mut status: c_int = 0;
        // SAFETY: pid is our own child; status points to a valid int.
        unsafe { libc::waitpid(*pid, &mut status, 0) };
    }
    json!({"forked": children.len(), "error": error})
}

/// Allocates and touches `mib` MiB; answers only if that worked.
pub fn alloc(mib: usize) -> Value {
    let Some(bytes) = mib.checked_mul(1 << 20) else {
        return json!({"error": "size overflow", "requested": mib});
    };
    let mut v: Vec<u8> = Vec::new();
    if v.try_reserve_exact(bytes).is_err() {
        return json!({"error": "allocation failed", "requested": mib});
    }
    // Writing every byte makes every page resident.
    v.resize(bytes, 1);
    std::hint::black_box(&v);
    drop(v);
    json!({"allocated": mib})
}

/// Creates empty files in /tmp until that fails (at most `FILL_FILES`),
/// then removes them: how many inodes the container's /tmp gives.
pub fn fill_tmp_inodes() -> Value {
    let mut made: u64 = 0;
    let mut error = None;
    while made < FILL_FILES {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(format!("/tmp/i{made}"))
        {
            Ok(_) => made += 1,
            Err(e) => {
                error = Some(io_errno_name(&e));
                break;
            }
        }
    }
    for i in 0..made {
        let _ = std::fs::remove_file(format!("/tmp/i{i}"));
    }
    json!({"files": made, "error": error})
}
