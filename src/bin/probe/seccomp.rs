//! Syscall attempts for the seccomp profiles: the calls berth's deny-list
//! added, personality() with allowed and denied arguments, and calls that
//! only the allow-list of `seccomp = "default"` leaves out. Every call
//! gets arguments the kernel rejects (or that change nothing), so without
//! a filter each answers with a specific errno or "ok", never doing harm.

use std::os::fd::{FromRawFd, OwnedFd};

use libc::{c_int, c_long, c_void};
use serde_json::{Map, Value, json};

use crate::sys::errno_name;

/// "ok" for a non-negative return (an fd returned is closed), else the errno name.
fn answer(ret: c_long, returns_fd: bool) -> String {
    if ret < 0 {
        return errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    if returns_fd && let Ok(fd) = c_int::try_from(ret) {
        // SAFETY: the syscall just returned this fd to us; nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    "ok".into()
}

/// Adds one entry per call to `m` (the report's "syscalls").
pub fn probe(m: &mut Map<String, Value>) {
    let null = std::ptr::null::<c_void>();
    let nowhere = c"/nonexistent-probe-target";
    let mut put = |name: &str, ret: c_long, fd: bool| {
        m.insert(name.into(), json!(answer(ret, fd)));
    };

    // SAFETY: for every call below: integer arguments, NULL, or pointers to
    // live locals and NUL-terminated literals; the arguments are chosen so
    // that the kernel rejects the call or it changes nothing.
    unsafe {
        // NULL params: EFAULT.
        put(
            "io_uring_setup",
            libc::syscall(libc::SYS_io_uring_setup, 1 as c_long, null),
            true,
        );
        // fd -1: EBADF.
        put(
            "io_uring_enter",
            libc::syscall(
                libc::SYS_io_uring_enter,
                -1 as c_long,
                0 as c_long,
                0 as c_long,
                0 as c_long,
                null,
                0 as c_long,
            ),
            false,
        );
        put(
            "io_uring_register",
            libc::syscall(
                libc::SYS_io_uring_register,
                -1 as c_long,
                0 as c_long,
                null,
                0 as c_long,
            ),
            false,
        );
        // Nonexistent path: ENOENT.
        put(
            "name_to_handle_at",
            libc::syscall(
                libc::SYS_name_to_handle_at,
                libc::AT_FDCWD as c_long,
                nowhere.as_ptr(),
                null,
                null,
                0 as c_long,
            ),
            false,
        );
        // Our own fd 0 against itself (KCMP_FILE): 0.
        let pid = c_long::from(libc::getpid());
        put(
            "kcmp",
            libc::syscall(
                libc::SYS_kcmp,
                pid,
                pid,
                0 as c_long,
                0 as c_long,
                0 as c_long,
            ),
            false,
        );
        // pidfd -1: EBADF.
        put(
            "pidfd_getfd",
            libc::syscall(
                libc::SYS_pidfd_getfd,
                -1 as c_long,
                0 as c_long,
                0 as c_long,
            ),
            true,
        );
        // pidfd -1, no vectors: EINVAL or EBADF.
        put(
            "process_madvise",
            libc::syscall(
                libc::SYS_process_madvise,
                -1 as c_long,
                null,
                0 as c_long,
                0 as c_long,
                0 as c_long,
            ),
            false,
        );
        // Needs CAP_SYS_ADMIN, then ENOENT.
        put(
            "swapon",
            libc::syscall(libc::SYS_swapon, nowhere.as_ptr(), 0 as c_long),
            false,
        );
        put(
            "swapoff",
            libc::syscall(libc::SYS_swapoff, nowhere.as_ptr()),
            false,
        );
        // Q_GETINFO without a device: ENODEV.
        put(
            "quotactl",
            libc::syscall(
                libc::SYS_quotactl,
                0x8000_0500 as c_long,
                null,
                0 as c_long,
                null,
            ),
            false,
        );
        // Needs CAP_SYS_PACCT, then ENOENT.
        put(
            "acct",
            libc::syscall(libc::SYS_acct, nowhere.as_ptr()),
            false,
        );
        // Needs CAP_SYS_BOOT, then the wrong magic: EINVAL.
        put(
            "reboot",
            libc::syscall(
                libc::SYS_reboot,
                0 as c_long,
                0 as c_long,
                0 as c_long,
                null,
            ),
            false,
        );
        // An unknown flag: EINVAL.
        put(
            "fanotify_init",
            libc::syscall(libc::SYS_fanotify_init, 0x8000_0000 as c_long, 0 as c_long),
            true,
        );
        // Gone from the kernel since 6.8 (ENOSYS); EINVAL before.
        put(
            "lookup_dcookie",
            libc::syscall(libc::SYS_lookup_dcookie, 0 as c_long, null, 0 as c_long),
            false,
        );
        // SYSLOG_ACTION_SIZE_BUFFER: reads the buffer's size.
        put(
            "syslog",
            libc::syscall(libc::SYS_syslog, 10 as c_long, null, 0 as c_long),
            false,
        );
        // Needs CAP_SYS_TTY_CONFIG; without a controlling terminal (the
        // container's session has none) it hangs up nothing.
        put("vhangup", libc::syscall(libc::SYS_vhangup), false);
        // Invalid times: EINVAL before any permission check.
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 2_000_000,
        };
        put(
            "settimeofday",
            libc::syscall(libc::SYS_settimeofday, &tv as *const libc::timeval, null),
            false,
        );
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: -1,
        };
        put(
            "clock_settime",
            libc::syscall(
                libc::SYS_clock_settime,
                libc::CLOCK_REALTIME as c_long,
                &ts as *const libc::timespec,
            ),
            false,
        );
        // NULL buffer: EFAULT.
        put(
            "clock_adjtime",
            libc::syscall(
                libc::SYS_clock_adjtime,
                libc::CLOCK_REALTIME as c_long,
                null,
            ),
            false,
        );
        put("adjtimex", libc::syscall(libc::SYS_adjtimex, null), false);

        #[cfg(target_arch = "x86_64")]
        {
            // Level 4 and an empty range: EINVAL.
            put("iopl", libc::syscall(libc::SYS_iopl, 4 as c_long), false);
            put(
                "ioperm",
                libc::syscall(libc::SYS_ioperm, 0 as c_long, 0 as c_long, 0 as c_long),
                false,
            );
        }

        // personality: the query and PER_LINUX stay allowed; anything
        // else is denied. The old persona is put back if the change worked.
        let old = libc::syscall(libc::SYS_personality, 0xffff_ffff as c_long);
        put("personality_query", old, false);
        put(
            "personality_linux",
            libc::syscall(libc::SYS_personality, 0 as c_long),
            false,
        );
        let set = libc::syscall(libc::SYS_personality, libc::ADDR_NO_RANDOMIZE as c_long);
        put("personality_set", set, false);
        if set >= 0 && old >= 0 {
            libc::syscall(libc::SYS_personality, old);
        }

        // Outside the "default" allow-list, not on the deny-list.
        // Nonexistent path: ENOENT before the capability check.
        put(
            "chroot",
            libc::syscall(libc::SYS_chroot, nowhere.as_ptr()),
            false,
        );
        // Flags must be 0: EINVAL.
        put(
            "pkey_alloc",
            libc::syscall(libc::SYS_pkey_alloc, 1 as c_long, 0 as c_long),
            false,
        );
    }
}
