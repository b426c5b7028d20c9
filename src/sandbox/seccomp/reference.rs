//! The three programs berth loaded into every application before the
//! merged one of [`super::filters_for`] (seccompiler's linear chains:
//! allow-list, deny-list, clone3), kept only as the reference the merged
//! program is compared with, number by number.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use super::{
    Arch, DENIED, DENIED_IOCTLS, NAMESPACE_FLAGS, PER_LINUX, PERSONALITY_QUERY, SeccompError,
    SeccompProfile, groups, prologue,
};

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(|e| SeccompError::Build(e.to_string()))
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SeccompError::Build(e.to_string()))
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
pub fn allow_list(arch: Arch) -> Result<BpfProgram, SeccompError> {
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
