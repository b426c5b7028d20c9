//! The seccomp filters: an allow-list and a deny-list.
//!
//! `seccomp = "default"` allows what system services need (systemd's
//! `@system-service`, see `groups.rs`); anything else fails with EPERM, not
//! a kill, so applications take their ordinary "not permitted" path. On
//! top of it, and alone under `seccomp = "compat"`, a deny-list removes the
//! calls that reshape the kernel's view of the container (mounts,
//! namespaces, modules, kexec, keyrings, tracing, io_uring, clocks, swap,
//! reboot) whatever the allow-list says. `seccomp = "off"` loads nothing.
//!
//! Syscall numbers differ per architecture: berth has tables for x86_64
//! and aarch64 (`numbers.rs`) and builds the filter for the architecture it
//! was built for; on any other the filter cannot be built, which fails the
//! container's setup with a clear error instead of killing the application.

mod bpf;
mod groups;
mod numbers;
#[cfg(test)]
mod reference;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch, sock_filter};

use super::SeccompProfile;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter: {0}")]
    Build(String),
    #[error("loading the seccomp filter: {0}")]
    Load(String),
    #[error(
        "building the seccomp filter: no syscall table for architecture {0} \
         (berth knows x86_64 and aarch64)"
    )]
    UnsupportedArch(&'static str),
}

/// An architecture berth has syscall numbers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture this berth was built for (and so runs on).
    pub fn native() -> Result<Arch, SeccompError> {
        if cfg!(target_arch = "x86_64") {
            Ok(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Ok(Arch::Aarch64)
        } else {
            Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
        }
    }

    #[cfg(test)]
    fn target(self) -> TargetArch {
        match self {
            Arch::X86_64 => TargetArch::x86_64,
            Arch::Aarch64 => TargetArch::aarch64,
        }
    }

    /// `seccomp_data.arch` of this architecture's native ABI.
    fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 => AUDIT_ARCH_X86_64,
            Arch::Aarch64 => AUDIT_ARCH_AARCH64,
        }
    }

    fn table(self) -> &'static [(&'static str, i64)] {
        match self {
            Arch::X86_64 => numbers::X86_64,
            Arch::Aarch64 => numbers::AARCH64,
        }
    }

    /// The number of `name` here, None where the call does not exist.
    fn nr(self, name: &str) -> Option<i64> {
        let table = self.table();
        table
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| table[i].1)
    }

    /// Like [`Arch::nr`], for calls every supported architecture has.
    fn must(self, name: &str) -> Result<i64, SeccompError> {
        self.nr(name)
            .ok_or_else(|| SeccompError::Build(format!("no number for {name} on {self:?}")))
    }
}

/// Syscalls that fail with EPERM whatever their arguments, under both
/// "default" and "compat". Names an architecture lacks (iopl and ioperm
/// on aarch64, stime on both) are skipped there.
const DENIED: &[&str] = &[
    // Mounts and namespaces: the container's view of the file system.
    "mount",
    "umount2",
    "pivot_root",
    "setns",
    "unshare",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // The kernel itself: kexec, modules, BPF, reboot, swap, raw I/O ports.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "reboot",
    "swapon",
    "swapoff",
    "iopl",
    "ioperm",
    // Host-wide state: accounting, quotas, the kernel log, terminals,
    // fanotify, profiling cookies.
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "vhangup",
    "fanotify_init",
    "lookup_dcookie",
    // Clocks are not namespaced (except by CLONE_NEWTIME, denied below).
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "stime",
    // Keyrings are not namespaced.
    "keyctl",
    "add_key",
    "request_key",
    // Other processes' memory and descriptors, tracing, comparing kernel
    // objects across processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "kcmp",
    "perf_event_open",
    "userfaultfd",
    // File handles bypass the mount namespace's view of paths.
    "open_by_handle_at",
    "name_to_handle_at",
    // io_uring: a second syscall interface seccomp cannot see into.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// ioctl requests that push input into a terminal. The request is an
/// `unsigned int` for the kernel, so only the low 32 bits are compared
/// (`Dword`): setting high bits must not slip past the filter. Both
/// supported architectures use the generic tty ioctl numbers.
const DENIED_IOCTLS: &[u64] = &[libc::TIOCSTI, libc::TIOCLINUX];

/// clone flags that create namespaces (unshare is denied outright; clone
/// with these flags is the other door).
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWTIME as u64,
];

/// personality() arguments that stay allowed: the query and plain Linux.
/// Anything else (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, other ABIs) would
/// weaken the exec of whatever the application starts next.
const PERSONALITY_QUERY: u64 = 0xffff_ffff;
const PER_LINUX: u64 = 0;

/// Syscall numbers with this bit are the x32 ABI: same audit arch as
/// x86_64, other numbers, so a per-number deny-list would not see them.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// A foreign architecture for the tests (32-bit x86, which an x86_64
/// kernel may run).
#[cfg(test)]
const AUDIT_ARCH_I386: u32 = 0x4000_0003;

/// The programs to load for `profile` on the native architecture. Built
/// before the exec path so that a failure is reported as a setup error,
/// not a half-sandboxed process. Built once per process and kept: the
/// zygote builds them before it forks any stage ([`prepare`]), so stages
/// only copy them.
pub fn filters(profile: SeccompProfile) -> Result<Vec<BpfProgram>, SeccompError> {
    static DEFAULT: OnceLock<BpfProgram> = OnceLock::new();
    static COMPAT: OnceLock<BpfProgram> = OnceLock::new();
    let cell = match profile {
        SeccompProfile::Off => return Ok(Vec::new()),
        SeccompProfile::Default => &DEFAULT,
        SeccompProfile::Compat => &COMPAT,
    };
    if let Some(prog) = cell.get() {
        return Ok(vec![prog.clone()]);
    }
    let built = filters_for(Arch::native()?, profile)?;
    if let [prog] = built.as_slice() {
        let _ = cell.set(prog.clone());
    }
    Ok(built)
}

/// Build every program once, ahead of the forks that use them (the
/// zygote calls this at start). Errors are left for the container that
/// needs the program to report.
pub fn prepare() {
    let _ = filters(SeccompProfile::Default);
    let _ = filters(SeccompProfile::Compat);
    let _ = reaper_filter();
}

/// The program for `profile` on `arch` (none for "off"): one program that
/// answers, in this order, KILL for a foreign architecture, ENOSYS for x32
/// numbers (x86_64), ENOSYS for clone3 (its flags are in memory the filter
/// cannot read, so libc falls back to clone, whose flags it sees), EPERM
/// for the deny-list (names, and ioctl, clone, personality by argument),
/// then the allow-list's answer: ALLOW for its calls, EPERM for any other
/// ("default"), or ALLOW ("compat").
///
/// It answers exactly what the three programs berth loaded before
/// answered together (allow-list, deny-list, clone3; the kernel takes the
/// strictest answer, the last loaded among errnos): `profile_tests`
/// compares the two for every number on both architectures.
pub fn filters_for(arch: Arch, profile: SeccompProfile) -> Result<Vec<BpfProgram>, SeccompError> {
    let allow_set = match profile {
        SeccompProfile::Off => return Ok(Vec::new()),
        SeccompProfile::Compat => None,
        SeccompProfile::Default => Some(allowed_numbers(arch)),
    };
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let allow = libc::SECCOMP_RET_ALLOW;
    // The allow-list's answer for a number it does not name.
    let unlisted = if allow_set.is_some() { eperm } else { allow };
    let allowed = |nr: u32| match &allow_set {
        Some(set) if !set.contains(&nr) => eperm,
        _ => allow,
    };
    let denied: BTreeSet<u32> = DENIED
        .iter()
        .filter_map(|name| arch.nr(name))
        .map(nr32)
        .collect();
    let clone3 = nr32(arch.must("clone3")?);
    let ioctl = nr32(arch.must("ioctl")?);
    let clone = nr32(arch.must("clone")?);
    let personality = nr32(arch.must("personality")?);
    let ns_mask = NAMESPACE_FLAGS.iter().fold(0u32, |m, f| m | *f as u32);
    let by_args = |nr: u32, tests: Vec<bpf::ArgTest>| {
        let otherwise = allowed(nr);
        if otherwise == eperm {
            bpf::Verdict::Ret(eperm)
        } else {
            bpf::Verdict::Args {
                tests: tests.into_iter().map(|t| (t, eperm)).collect(),
                otherwise,
            }
        }
    };
    let verdict = |nr: u32| {
        if nr == clone3 {
            bpf::Verdict::Ret(enosys)
        } else if denied.contains(&nr) {
            bpf::Verdict::Ret(eperm)
        } else if nr == ioctl {
            let tests = DENIED_IOCTLS
                .iter()
                .map(|req| bpf::ArgTest::Eq {
                    arg: 1,
                    value: *req as u32,
                })
                .collect();
            by_args(nr, tests)
        } else if nr == clone {
            by_args(
                nr,
                vec![bpf::ArgTest::AnyBit {
                    arg: 0,
                    mask: ns_mask,
                }],
            )
        } else if nr == personality {
            let values = vec![PERSONALITY_QUERY as u32, PER_LINUX as u32];
            by_args(nr, vec![bpf::ArgTest::NoneOf { arg: 0, values }])
        } else {
            bpf::Verdict::Ret(allowed(nr))
        }
    };
    let last = arch
        .table()
        .iter()
        .map(|(_, nr)| nr32(*nr))
        .max()
        .unwrap_or(0);
    let runs = bpf::runs(last, verdict, bpf::Verdict::Ret(unlisted));
    let mut prog = prologue(arch);
    bpf::search(&mut prog, &runs);
    if prog.len() > BPF_MAXINSNS {
        return Err(SeccompError::Build(format!(
            "{} instructions, the kernel takes {BPF_MAXINSNS}",
            prog.len()
        )));
    }
    Ok(vec![prog])
}

/// The kernel's limit on a program's length.
const BPF_MAXINSNS: usize = 4096;

/// Syscall numbers are small and positive in the tables.
fn nr32(nr: i64) -> u32 {
    nr as u32
}

/// The numbers of every call of the allowed groups on `arch`.
fn allowed_numbers(arch: Arch) -> BTreeSet<u32> {
    groups::ALLOWED
        .iter()
        .flat_map(|(_, group)| group.iter())
        .filter_map(|name| arch.nr(name))
        .map(nr32)
        .collect()
}

/// Kill on a foreign architecture and, on x86_64, ENOSYS for x32 numbers;
/// then fall through to seccompiler's program (which checks the arch
/// again).
fn prologue(arch: Arch) -> Vec<sock_filter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let f = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let mut prog = vec![
        // seccomp_data.arch is at offset 4, .nr at 0.
        f(LD_W_ABS, 0, 0, 4),
        f(JEQ_K, 1, 0, arch.audit_arch()),
        f(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    if arch == Arch::X86_64 {
        prog.extend([
            f(LD_W_ABS, 0, 0, 0),
            f(JGE_K, 0, 1, X32_SYSCALL_BIT),
            f(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        ]);
    }
    prog
}

#[cfg(test)]
mod profile_tests {
    use super::*;

    const ARCHES: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    #[test]
    fn every_profile_builds_for_both_architectures() {
        for arch in ARCHES {
            let n = |p| filters_for(arch, p).expect("filter builds").len();
            assert_eq!(n(SeccompProfile::Off), 0, "{arch:?}");
            assert_eq!(n(SeccompProfile::Compat), 1, "{arch:?}");
            assert_eq!(n(SeccompProfile::Default), 1, "{arch:?}");
        }
    }

    /// A misspelt name would silently allow or deny nothing.
    #[test]
    fn every_name_is_a_syscall_somewhere() {
        let names = groups::ALLOWED
            .iter()
            .flat_map(|(_, g)| g.iter())
            .chain(DENIED);
        for name in names {
            assert!(
                ARCHES.iter().any(|a| a.nr(name).is_some()) || numbers::ELSEWHERE.contains(name),
                "{name} is no syscall berth knows"
            );
        }
    }

    #[test]
    fn tables_are_sorted_for_binary_search() {
        for arch in ARCHES {
            assert!(arch.table().is_sorted_by(|a, b| a.0 < b.0), "{arch:?}");
        }
    }

    #[test]
    fn numbers_differ_per_architecture() {
        assert_eq!(Arch::X86_64.nr("read"), Some(0));
        assert_eq!(Arch::Aarch64.nr("read"), Some(63));
        assert_eq!(Arch::X86_64.nr("iopl"), Some(172));
        assert_eq!(Arch::Aarch64.nr("iopl"), None);
        assert_eq!(Arch::X86_64.nr("io_uring_setup"), Some(425));
        assert_eq!(Arch::Aarch64.nr("io_uring_setup"), Some(425));
    }

    /// The program differs per architecture and begins with the check of
    /// that architecture's audit number.
    #[test]
    fn program_checks_its_architecture() {
        for arch in ARCHES {
            let prog = &filters_for(arch, SeccompProfile::Default).expect("builds")[0];
            assert!(
                prog.iter().take(3).any(|i| i.k == arch.audit_arch()),
                "{arch:?}"
            );
            // The reference's allow-list checks it as well.
            let old = reference::allow_list(arch).expect("allow-list builds");
            assert!(old.iter().take(3).any(|i| i.k == arch.audit_arch()));
        }
    }

    /// Argument vectors that tell the argument checks apart: zeros, each
    /// namespace flag of clone (alone, with other flags, only in the high
    /// half), the denied ioctls and others, personality values.
    fn arg_cases() -> Vec<[u64; 6]> {
        let mut out = vec![[0; 6], [u64::MAX; 6]];
        for f in NAMESPACE_FLAGS {
            out.push([*f, 0, 0, 0, 0, 0]);
            out.push([
                *f | libc::CLONE_VM as u64 | libc::SIGCHLD as u64,
                0,
                0,
                0,
                0,
                0,
            ]);
            out.push([*f << 32, 0, 0, 0, 0, 0]);
        }
        out.push([
            (libc::CLONE_VM | libc::CLONE_FS | libc::SIGCHLD) as u64,
            0,
            0,
            0,
            0,
            0,
        ]);
        for req in DENIED_IOCTLS.iter().chain(&[libc::TCGETS, libc::FIONREAD]) {
            out.push([0, *req, 0, 0, 0, 0]);
            out.push([0, *req | 1 << 32, 0, 0, 0, 0]);
            out.push([3, *req + 1, 0, 0, 0, 0]);
        }
        for p in [
            PERSONALITY_QUERY,
            PER_LINUX,
            0x0040000,
            0x0008,
            0xffff_fffe,
            1 << 32,
        ] {
            out.push([p, 0, 0, 0, 0, 0]);
            out.push([p | 0xffff_ffff_0000_0000, 0, 0, 0, 0, 0]);
        }
        out
    }

    /// The merged program answers exactly what the three programs loaded
    /// before it answered together, for every number of both tables (and
    /// beyond, x32, a foreign architecture), every profile, and argument
    /// values on both sides of each argument check.
    #[test]
    fn merged_program_answers_as_the_three_it_replaces() {
        use bpf::interp::{Data, combined};
        let args = arg_cases();
        for arch in ARCHES {
            let last = arch
                .table()
                .iter()
                .map(|(_, nr)| *nr as u32)
                .max()
                .unwrap_or(0);
            let special: Vec<u32> = ["ioctl", "clone", "personality", "clone3", "read"]
                .iter()
                .map(|n| nr32(arch.must(n).expect("known")))
                .collect();
            let mut numbers: Vec<u32> = (0..=last + 64).collect();
            numbers.extend([0x3fff_ffff, 0x7fff_ffff, 0xffff_ffff, u32::MAX - 1]);
            numbers.extend((0..=last + 8).map(|nr| nr | X32_SYSCALL_BIT));
            for profile in [SeccompProfile::Default, SeccompProfile::Compat] {
                let new = filters_for(arch, profile).expect("builds");
                let old = reference::filters_for(arch, profile).expect("builds");
                assert_eq!(new.len(), 1);
                // Smaller than what it replaces, by far under "default"
                // (x86_64: 228 instructions against 1,515 + 332 + 10).
                let old_len: usize = old.iter().map(Vec::len).sum();
                assert!(new[0].len() < old_len, "{arch:?} {profile:?}");
                if profile == SeccompProfile::Default {
                    assert!(new[0].len() * 4 < old_len, "{arch:?}");
                }
                for &nr in &numbers {
                    let cases: &[[u64; 6]] = if special.contains(&(nr & !X32_SYSCALL_BIT)) {
                        &args
                    } else {
                        &args[..2]
                    };
                    for a in cases {
                        for arch_word in [arch.audit_arch(), AUDIT_ARCH_I386, 0] {
                            let d = Data {
                                nr,
                                arch: arch_word,
                                args: *a,
                            };
                            assert_eq!(
                                combined(&new, &d),
                                combined(&old, &d),
                                "{arch:?} {profile:?} nr {nr:#x} arch {arch_word:#x} args {a:x?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn native_architecture_is_supported_here() {
        let arch = Arch::native().expect("berth is built for x86_64 or aarch64");
        assert_eq!(filters(SeccompProfile::Default).expect("builds").len(), 1);
        // Built once: the second call gives the kept copy.
        assert_eq!(
            filters(SeccompProfile::Default).expect("builds"),
            filters_for(arch, SeccompProfile::Default).expect("builds")
        );
        assert_eq!(filters(SeccompProfile::Off).expect("builds").len(), 0);
        assert!(matches!(arch, Arch::X86_64 | Arch::Aarch64));
    }

    #[test]
    fn unsupported_architecture_error_names_it() {
        let e = SeccompError::UnsupportedArch("riscv64").to_string();
        assert!(e.contains("riscv64") && e.contains("x86_64"), "{e}");
    }
}

/// Load the filters into this thread. `no_new_privs` must already be set.
pub fn load(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for f in filters {
        seccompiler::apply_filter(f).map_err(|e| SeccompError::Load(e.to_string()))?;
    }
    Ok(())
}

/// PID 1's allow-list, loaded by the reaper once the application runs
/// (`init::lock_down`): exactly what its loop needs (wait for signals,
/// forward them, reap, close its descriptors, exit). Anything else fails
/// with EPERM rather than killing PID 1, which would take the container
/// down with a misleading status. Self-contained on purpose: it shares
/// nothing with the application's filters.
pub fn reaper_filter() -> Result<BpfProgram, SeccompError> {
    const ALLOWED: &[i64] = &[
        libc::SYS_rt_sigtimedwait,
        libc::SYS_rt_sigreturn,
        libc::SYS_restart_syscall,
        libc::SYS_wait4,
        libc::SYS_waitid,
        libc::SYS_kill,
        libc::SYS_pidfd_send_signal,
        libc::SYS_close_range,
        libc::SYS_close,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Build(e.to_string()))?;
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|nr| (*nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| SeccompError::Build(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        let f = filters(SeccompProfile::Default).expect("filters build");
        assert_eq!(f.len(), 1);
        assert!(f[0].len() > DENIED.len());
    }

    #[test]
    fn reaper_filter_compiles() {
        assert!(!reaper_filter().expect("reaper filter builds").is_empty());
    }
}
