//! The default seccomp deny-list.
//!
//! A deny-list, not an allow-list: berth runs arbitrary daemons, and the
//! point is to remove the calls that reshape the kernel's view of the
//! container (mounts, namespaces, modules, kexec, keyrings, tracing) rather
//! than to guess what each application needs. Denied calls fail with EPERM
//! so applications take their ordinary "not permitted" path.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter: {0}")]
    Build(String),
    #[error("loading the seccomp filter: {0}")]
    Load(String),
}

/// Syscalls that fail with EPERM whatever their arguments.
const DENIED: &[(&str, i64)] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("setns", libc::SYS_setns),
    ("unshare", libc::SYS_unshare),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("bpf", libc::SYS_bpf),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
];

/// ioctl requests that push input into a terminal. The request is an
/// `unsigned int` for the kernel, so only the low 32 bits are compared
/// (`Dword`): setting high bits must not slip past the filter.
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

/// Syscall numbers with this bit are the x32 ABI: same audit arch as
/// x86_64, other numbers, so a per-number deny-list would not see them.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(|e| SeccompError::Build(e.to_string()))
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SeccompError::Build(e.to_string()))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    action: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, TargetArch::x86_64)
        .map_err(|e| SeccompError::Build(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Build(e.to_string()))
}

/// The programs to load, in order. Built before the exec path so that a
/// failure is reported as a setup error, not a half-sandboxed process.
pub fn default_filters() -> Result<Vec<BpfProgram>, SeccompError> {
    let mut deny: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in DENIED {
        deny.insert(*nr, vec![]);
    }
    let mut ioctl = Vec::new();
    for req in DENIED_IOCTLS {
        ioctl.push(rule(vec![cond(1, SeccompCmpOp::Eq, *req)?])?);
    }
    deny.insert(libc::SYS_ioctl, ioctl);
    let mut clone = Vec::new();
    for flag in NAMESPACE_FLAGS {
        clone.push(rule(vec![cond(0, SeccompCmpOp::MaskedEq(*flag), *flag)?])?);
    }
    deny.insert(libc::SYS_clone, clone);
    let mut deny_prog = x32_prologue();
    deny_prog.extend(compile(deny, SeccompAction::Errno(libc::EPERM as u32))?);

    // clone3 passes its flags in memory the filter cannot read: answer
    // ENOSYS so libc falls back to clone, whose flags the rule above sees.
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, vec![]);
    let clone3_prog = compile(clone3, SeccompAction::Errno(libc::ENOSYS as u32))?;
    Ok(vec![deny_prog, clone3_prog])
}

/// Kill on a foreign architecture, ENOSYS for x32 numbers; then fall
/// through to seccompiler's program (which checks the arch again).
fn x32_prologue() -> Vec<sock_filter> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let f = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // seccomp_data.arch is at offset 4, .nr at 0.
        f(LD_W_ABS, 0, 0, 4),
        f(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        f(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        f(LD_W_ABS, 0, 0, 0),
        f(JGE_K, 0, 1, X32_SYSCALL_BIT),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ]
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
        let f = default_filters().expect("filters build");
        assert_eq!(f.len(), 2);
        assert!(f[0].len() > DENIED.len());
    }

    #[test]
    fn reaper_filter_compiles() {
        assert!(!reaper_filter().expect("reaper filter builds").is_empty());
    }
}
