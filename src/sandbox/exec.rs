//! The application's process, forked by PID 1 ([`super::init`]): its
//! descriptors, environment, session, working directory, credentials,
//! Landlock domain and seccomp filter, then execve. Returns only on failure.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use caps::Capability;
use landlock::{
    AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::unistd::{chdir, execve, getpid, setsid};

use super::stage::{CONTROL_FD, StageError};
use super::{DEFAULT_PATH, Spec, creds, seccomp, userns};

/// Everything the application's process needs, prepared by PID 1 before
/// the fork so that failures are reported as setup errors.
pub(super) struct App<'a> {
    pub spec: &'a Spec,
    /// stdin, stdout, stderr, then the listening sockets.
    pub fds: Vec<OwnedFd>,
    pub listen_fds: usize,
    pub argv: &'a [CString],
    pub workdir: &'a str,
    pub keep: &'a HashSet<Capability>,
    pub filters: &'a [seccompiler::BpfProgram],
    /// The Landlock domain to enter (see [`prepare_domain`]).
    pub domain: Option<RulesetCreated>,
    /// Read end of a pipe PID 1 closes once it has dropped its privileges.
    pub reaper_locked: OwnedFd,
    /// The container's user namespace (`private_users`), entered before
    /// the uid change.
    pub userns: Option<&'a OwnedFd>,
}

/// The filesystem rights the fallback ruleset handles, all granted on "/"
/// (see [`prepare_domain`]).
fn domain_rights() -> landlock::BitFlags<AccessFs> {
    // REFER must be handled and granted: a ruleset that handles any
    // filesystem right denies renames and links across directories unless
    // REFER is granted (ABI 2).
    AccessFs::MakeBlock | AccessFs::Refer
}

/// The Landlock ruleset the application enters, built in PID 1 once the
/// container's root is in place.
///
/// The point is the domain, not the rules: a process in a Landlock domain
/// cannot ptrace (nor open `/proc/PID/mem`, `/proc/PID/exe`, ... of) a
/// process outside it, whatever its capabilities. PID 1 stays outside, so
/// an application given CAP_SYS_PTRACE still cannot reach its reaper. A
/// ruleset must restrict something, so it restricts what changes least:
/// - Landlock ABI 6 (Linux 6.12): signals to processes outside the domain.
///   Inside the container that is PID 1 alone, which ignores or forwards
///   back whatever the application could send it.
/// - ABI 2 to 5: two filesystem rights (`MAKE_BLOCK`, `REFER`), both granted
///   on "/", so file access does not change; but any filesystem ruleset
///   also makes the kernel refuse mount, umount and pivot_root in the
///   domain (the default seccomp filter refuses them anyway).
///
/// Without Landlock (kernel before 5.19, or Landlock not enabled at boot):
/// an application without CAP_SYS_PTRACE cannot trace PID 1 anyway (PID 1
/// is not dumpable, which only CAP_SYS_PTRACE overrides), so it runs
/// without the domain; one that keeps CAP_SYS_PTRACE is refused with
/// [`StageError::LandlockRequired`] rather than run weaker.
pub(super) fn prepare_domain(
    keep: &HashSet<Capability>,
) -> Result<Option<RulesetCreated>, StageError> {
    let scoped = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .scope(Scope::Signal)
        .and_then(|r| r.create());
    if let Ok(ruleset) = scoped {
        return Ok(Some(ruleset));
    }
    let rights = domain_rights();
    let root = PathFd::new("/").map_err(StageError::LandlockRoot)?;
    let built = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(rights)
        .and_then(|r| r.create())
        .and_then(|r| r.add_rule(PathBeneath::new(root, rights)));
    match built {
        Ok(ruleset) => Ok(Some(ruleset)),
        Err(e) if keep.contains(&Capability::CAP_SYS_PTRACE) => {
            Err(StageError::LandlockRequired(e))
        }
        Err(_) => Ok(None),
    }
}

/// Enter the domain; it must be fully enforced (the ruleset was built with
/// `HardRequirement`, so anything else is a kernel surprise).
fn enter_domain(domain: Option<RulesetCreated>) -> Result<(), StageError> {
    let Some(ruleset) = domain else {
        return Ok(());
    };
    let status = ruleset.restrict_self().map_err(StageError::Landlock)?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(StageError::LandlockPartial(status.ruleset));
    }
    Ok(())
}

/// The application's process: returns only on failure.
pub(super) fn run(app: App<'_>) -> StageError {
    let argv = app.argv;
    match setup(app) {
        Ok(envp) => {
            let path = argv.first().cloned().unwrap_or_default();
            match execve(&path, argv, &envp) {
                Err(source) => StageError::Exec {
                    path: path.to_string_lossy().into_owned(),
                    source,
                },
                Ok(never) => match never {},
            }
        }
        Err(e) => e,
    }
}

fn setup(app: App<'_>) -> Result<Vec<CString>, StageError> {
    let spec = app.spec;
    // First: arrange_fds may reuse the ruleset's descriptor number (PID 1
    // has no fixed 0-2), and nothing below is affected by the domain.
    // restrict_self sets no_new_privs, which Landlock requires.
    enter_domain(app.domain)?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(StageError::SigMask)?;
    setsid().map_err(StageError::Setsid)?;
    // Before arrange_fds, which may reuse the namespace's descriptor number.
    // From here on uids and capabilities are the namespace's: `drop_to`
    // below takes uid N inside, which is base+N on the host.
    if let Some(ns) = app.userns {
        userns::enter(ns)?;
    }
    arrange_fds(app.fds)?;

    let mut env: Vec<String> = Vec::new();
    if !spec.env.iter().any(|(k, _)| k == "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    if app.listen_fds > 0 {
        env.push(format!("LISTEN_FDS={}", app.listen_fds));
        env.push(format!("LISTEN_PID={}", getpid()));
        env.push(format!("LISTEN_FDNAMES={}", spec.listen_fdnames.join(":")));
    }
    let envp = cstrings(&env, "the environment")?;

    chdir(app.workdir).map_err(|source| StageError::Chdir {
        path: app.workdir.to_owned(),
        source,
    })?;
    creds::drop_to(spec.uid, spec.gid, app.keep)?;
    wait_for_reaper(&app.reaper_locked)?;
    seccomp::load(app.filters)?;
    Ok(envp)
}

/// Block until PID 1 closed its end of the pipe (it has dropped its
/// privileges, or it failed and kills this process).
fn wait_for_reaper(fd: &OwnedFd) -> Result<(), StageError> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(StageError::LockPipe(e)),
        }
    }
}

pub(super) fn cstrings(items: &[String], what: &'static str) -> Result<Vec<CString>, StageError> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| StageError::Nul { what }))
        .collect()
}

/// Put stdin, stdout, stderr on 0-2 and the listening sockets on 3.., and
/// mark every other descriptor close-on-exec (the control channel closes at
/// exec, which is how the supervisor learns the exec happened).
fn arrange_fds(fds: Vec<OwnedFd>) -> Result<(), StageError> {
    // Move everything clear of the target range first so no dup2 below
    // overwrites a descriptor that is still to be placed.
    let n = fds.len() as RawFd;
    let high: Vec<OwnedFd> = fds
        .into_iter()
        .map(|fd| {
            rustix::io::fcntl_dupfd_cloexec(&fd, CONTROL_FD + 1 + n)
                .map_err(|e| StageError::Fds(Errno::from_raw(e.raw_os_error())))
        })
        .collect::<Result<_, _>>()?;
    for (target, fd) in high.iter().enumerate() {
        // dup2 clears close-on-exec on the target, which is what we want.
        nix::unistd::dup2(fd.as_raw_fd(), target as RawFd).map_err(StageError::Fds)?;
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only flags descriptors;
    // it closes nothing that Rust objects still use.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            n as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(StageError::Fds(Errno::last()));
    }
    Ok(())
}
