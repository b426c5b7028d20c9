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

mod groups;
mod numbers;

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

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

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(|e| SeccompError::Build(e.to_string()))
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SeccompError::Build(e.to_string()))
}

/// Compile a deny-style program for the native architecture. Unused by the
/// application's filters (built per architecture); kept for other filters
/// of berth's own processes.
#[allow(dead_code)]
fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    action: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    compile_for(Arch::native()?, rules, SeccompAction::Allow, action)
}

/// `rules` answer `matched`, every other call `mismatched`; a foreign
/// architecture is killed (seccompiler's arch check).
fn compile_for(
    arch: Arch,
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatched: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(rules, mismatched, matched, arch.target())
        .map_err(|e| SeccompError::Build(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Build(e.to_string()))
}

/// The programs to load for `profile` on the native architecture. Built
/// before the exec path so that a failure is reported as a setup error,
/// not a half-sandboxed process.
pub fn filters(profile: SeccompProfile) -> Result<Vec<BpfProgram>, SeccompError> {
    match profile {
        SeccompProfile::Off => Ok(Vec::new()),
        _ => filters_for(Arch::native()?, profile),
    }
}

/// The programs for `profile` on `arch`, in load order. The kernel runs
/// every loaded program and the strictest answer wins; between two errno
/// answers the program loaded last wins. So the allow-list (EPERM for what
/// it lacks) comes first, the deny-list (EPERM, ENOSYS for x32) after it,
/// clone3's ENOSYS last.
pub fn filters_for(arch: Arch, profile: SeccompProfile) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut out = Vec::new();
    match profile {
        SeccompProfile::Off => return Ok(out),
        SeccompProfile::Compat => {}
        SeccompProfile::Default => out.push(allow_list(arch)?),
    }
    out.push(deny_list(arch)?);

    // clone3 passes its flags in memory the filter cannot read: answer
    // ENOSYS so libc falls back to clone, whose flags the deny-list sees.
    let mut clone3 = BTreeMap::new();
    clone3.insert(arch.must("clone3")?, vec![]);
    out.push(compile_for(
        arch,
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )?);
    Ok(out)
}

/// Every call of the groups allowed, everything else EPERM.
fn allow_list(arch: Arch) -> Result<BpfProgram, SeccompError> {
    let mut allow: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, group) in groups::ALLOWED {
        for nr in group.iter().filter_map(|name| arch.nr(name)) {
            allow.insert(nr, vec![]);
        }
    }
    compile_for(
        arch,
        allow,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
    )
}

/// The denied calls EPERM, everything else allowed; x32 numbers ENOSYS.
fn deny_list(arch: Arch) -> Result<BpfProgram, SeccompError> {
    let mut deny: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in DENIED.iter().filter_map(|name| arch.nr(name)) {
        deny.insert(nr, vec![]);
    }
    let mut ioctl = Vec::new();
    for req in DENIED_IOCTLS {
        ioctl.push(rule(vec![cond(1, SeccompCmpOp::Eq, *req)?])?);
    }
    deny.insert(arch.must("ioctl")?, ioctl);
    let mut clone = Vec::new();
    for flag in NAMESPACE_FLAGS {
        clone.push(rule(vec![cond(0, SeccompCmpOp::MaskedEq(*flag), *flag)?])?);
    }
    deny.insert(arch.must("clone")?, clone);
    // personality takes an `unsigned int`: Dword compares what the kernel sees.
    let personality = rule(vec![
        cond(0, SeccompCmpOp::Ne, PERSONALITY_QUERY)?,
        cond(0, SeccompCmpOp::Ne, PER_LINUX)?,
    ])?;
    deny.insert(arch.must("personality")?, vec![personality]);
    let mut prog = prologue(arch);
    prog.extend(compile_for(
        arch,
        deny,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
    )?);
    Ok(prog)
}

/// [`prologue`] for the native architecture (kill everything where berth
/// has no tables: `compile` refuses to build there anyway). Kept, like
/// `compile`, for other filters of berth's own processes.
#[allow(dead_code)]
fn x32_prologue() -> Vec<sock_filter> {
    match Arch::native() {
        Ok(arch) => prologue(arch),
        Err(_) => vec![sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_KILL_PROCESS,
        }],
    }
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
            assert_eq!(n(SeccompProfile::Compat), 2, "{arch:?}");
            assert_eq!(n(SeccompProfile::Default), 3, "{arch:?}");
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

    /// The allow-list program differs per architecture and begins with
    /// seccompiler's check of that architecture's audit number.
    #[test]
    fn allow_list_checks_its_architecture() {
        for arch in ARCHES {
            let prog = allow_list(arch).expect("allow-list builds");
            assert!(
                prog.iter().take(3).any(|i| i.k == arch.audit_arch()),
                "{arch:?}"
            );
        }
    }

    #[test]
    fn native_architecture_is_supported_here() {
        let arch = Arch::native().expect("berth is built for x86_64 or aarch64");
        assert_eq!(filters(SeccompProfile::Default).expect("builds").len(), 3);
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
        assert_eq!(f.len(), 3);
        assert!(f[0].len() > DENIED.len());
    }

    #[test]
    fn reaper_filter_compiles() {
        assert!(!reaper_filter().expect("reaper filter builds").is_empty());
    }
}
