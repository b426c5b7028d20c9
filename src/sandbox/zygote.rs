//! `berth sandbox-zygote`: a single-threaded process, exec'd once by the
//! supervisor, that forks one stage per container.
//!
//! A fork of this small process replaces an exec of the whole binary per
//! container (loader, relocation, runtime start: ~2 ms on the critical path
//! in the benchmark), and the stages share its pages. `CLONE_PARENT` makes
//! each stage the supervisor's own child, so the supervisor reaps it and gets
//! the application's status exactly as if it had exec'd the stage itself.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::MsgFlags;
use nix::unistd::Pid;

use super::mounts::{self, Split};
use super::proto::{self, FromZygote, StageFailure, ToZygote};
use super::stage::{self, CONTROL_FD, EXIT_SETUP_FAILED};
use super::{Spec, creds, net, seccomp};

/// Entry point of `berth sandbox-zygote`.
pub fn main() -> ExitCode {
    debug_assert_single_threaded();
    let _ = nix::sys::prctl::set_name(c"berth-zygote");
    // The zygote is only useful to the supervisor that started it.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        eprintln!("berth sandbox-zygote: prctl(PR_SET_PDEATHSIG): {e}");
        return ExitCode::from(EXIT_SETUP_FAILED);
    }
    // Built once here, copied by every stage forked below.
    seccomp::prepare();
    creds::prepare();
    // SAFETY: fd 0 is the zygote channel the supervisor passed; from here on
    // this process owns it.
    let channel = unsafe { OwnedFd::from_raw_fd(0) };
    let channel = match stage::move_fd(channel, CONTROL_FD) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("berth sandbox-zygote: {e}");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
    // Before any fork: every container's network namespace is made from
    // this one (its own small TCP table, see net::nursery).
    let nursery = net::nursery();
    let mut templates = Templates::new();
    loop {
        let (control, request) =
            match proto::recv::<ToZygote>(channel.as_raw_fd(), MsgFlags::empty()) {
                // The supervisor closed its end: nothing more to fork.
                Ok(None) => return ExitCode::SUCCESS,
                Ok(Some((request, mut fds))) if fds.len() == 1 => (fds.remove(0), request),
                Ok(Some(_)) => {
                    let _ = proto::send(
                        channel.as_raw_fd(),
                        &FromZygote::Failed(StageFailure {
                            message: "Fork without exactly one descriptor".into(),
                        }),
                        &[],
                    );
                    continue;
                }
                Err(e) => {
                    eprintln!("berth sandbox-zygote: {e}");
                    return ExitCode::from(EXIT_SETUP_FAILED);
                }
            };
        let reply = match request {
            ToZygote::Fork { template: spec } => {
                let template = spec.and_then(|spec| templates.find(&spec));
                fork_stage(
                    &channel,
                    control,
                    &mut templates,
                    template,
                    nursery.as_ref(),
                )
            }
            ToZygote::Init { spec } if spec.private_users.is_some() => {
                drop(control);
                FromZygote::Failed(StageFailure {
                    message: "Init with private_users (it needs the outer stage)".into(),
                })
            }
            ToZygote::Init { spec } => {
                let template = templates.find(&spec);
                fork_init(
                    &channel,
                    control,
                    &mut templates,
                    template,
                    nursery.as_ref(),
                    *spec,
                )
            }
        };
        if let Err(e) = proto::send(channel.as_raw_fd(), &reply, &[]) {
            eprintln!("berth sandbox-zygote: {e}");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    }
}

/// Fork an outer stage (`Fork`): it gets `Setup` on `control` and forks
/// PID 1 itself. Returns the reply for the supervisor.
fn fork_stage(
    channel: &OwnedFd,
    control: OwnedFd,
    templates: &mut Templates,
    template: Option<usize>,
    nursery: Option<&OwnedFd>,
) -> FromZygote {
    debug_assert_single_threaded();
    match clone_parent(0) {
        Ok(None) => {
            // The stage: it must not hold the zygote's channel, nor the
            // templates of other definitions.
            close_channel(channel);
            let template = template.and_then(|i| templates.take_index(i));
            exit(stage::forked(control, template, nursery.map(take_in_child)))
        }
        Ok(Some(pid)) => forked(pid),
        Err(e) => FromZygote::Failed(StageFailure {
            message: format!("clone(CLONE_PARENT): {e}"),
        }),
    }
}

/// Fork PID 1 of a new pid namespace directly (`Init`): one process and
/// one fork fewer per container than a stage that forks it.
fn fork_init(
    channel: &OwnedFd,
    control: OwnedFd,
    templates: &mut Templates,
    template: Option<usize>,
    nursery: Option<&OwnedFd>,
    spec: Spec,
) -> FromZygote {
    debug_assert_single_threaded();
    // Blocked across the fork, as the stage does before it forks PID 1:
    // a signal PID 1 forwards must not arrive before its reaper waits.
    let forwarded = super::init::reaper_signals();
    let mut old = nix::sys::signal::SigSet::empty();
    if let Err(e) = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&forwarded),
        Some(&mut old),
    ) {
        return FromZygote::Failed(StageFailure {
            message: format!("sigprocmask: {e}"),
        });
    }
    let cloned = clone_parent(libc::CLONE_NEWPID);
    if let Ok(None) = cloned {
        // Named at once: tests and adoption tell PID 1 by its name.
        let _ = nix::sys::prctl::set_name(c"berth-init");
        close_channel(channel);
        let template = template.and_then(|i| templates.take_index(i));
        exit(stage::direct(
            control,
            spec,
            template,
            nursery.map(take_in_child),
        ));
    }
    let _ =
        nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&old), None);
    match cloned {
        Ok(Some(pid)) => forked(pid),
        Ok(None) => unreachable!("the child exits above"),
        Err(e) => FromZygote::Failed(StageFailure {
            message: format!("clone(CLONE_PARENT|CLONE_NEWPID): {e}"),
        }),
    }
}

/// The reply for a child forked as `pid`.
fn forked(pid: Pid) -> FromZygote {
    #[cfg(debug_assertions)]
    if let Some(token) = std::env::var_os(super::spawn::TEST_ZYGOTE_DIE_ENV)
        && std::fs::remove_file(token).is_ok()
    {
        let _ = nix::sys::signal::raise(Signal::SIGKILL);
    }
    #[cfg(debug_assertions)]
    if let Some(token) = std::env::var_os(super::spawn::TEST_ZYGOTE_DIE_AFTER_INIT_ENV)
        && std::path::Path::new(&token).exists()
    {
        // PID 1 fails at once while the token exists (stage::direct): wait
        // until it has ended (a zombie of the supervisor's), then die.
        let stat = format!("/proc/{pid}/stat");
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end
            && std::fs::read_to_string(&stat)
                .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.starts_with(" Z")))
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = std::fs::remove_file(&token);
        let _ = nix::sys::signal::raise(Signal::SIGKILL);
    }
    FromZygote::Forked { pid: pid.as_raw() }
}

/// In a forked child: close the zygote's channel (the child must not hold
/// it). The `OwnedFd` itself stays with the zygote's frame, which the child
/// leaves only through `exit`.
fn close_channel(channel: &OwnedFd) {
    // SAFETY: the child never uses `channel` again and ends with `_exit`,
    // so the descriptor is not closed twice.
    unsafe { libc::close(channel.as_raw_fd()) };
}

/// In a forked child: own the child's copy of a descriptor the zygote's
/// frame holds, so the child can close it when done with it.
fn take_in_child(fd: &OwnedFd) -> OwnedFd {
    // SAFETY: the zygote's `OwnedFd` is never dropped in this child (it
    // ends with `_exit` and never returns to that frame), so the returned
    // one is this copy's only owner and the descriptor is closed once.
    unsafe { OwnedFd::from_raw_fd(fd.as_raw_fd()) }
}

/// End a forked child without the zygote's exit handlers and destructors
/// (they belong to the zygote; stderr is unbuffered, stdout unused).
fn exit(code: u8) -> ! {
    // SAFETY: _exit ends the process at once; nothing of the zygote's
    // state needs running down in a child.
    unsafe { libc::_exit(i32::from(code)) }
}

/// The zygote forks and lets the child carry on with arbitrary work, which
/// is only sound while it has a single thread: a second one (a library
/// starting a helper thread, a logger) could hold a lock across the fork.
fn debug_assert_single_threaded() {
    debug_assert_eq!(
        std::fs::read_dir("/proc/self/task")
            .map(Iterator::count)
            .ok(),
        Some(1),
        "berth-zygote must be single-threaded"
    );
}

/// fork(), but the child's parent is this process's parent (the
/// supervisor), with `extra` clone flags (`CLONE_NEWPID`). `Ok(None)` in
/// the child.
fn clone_parent(extra: libc::c_int) -> Result<Option<Pid>, Errno> {
    // SAFETY: clone with a null stack continues the child on a copy of this
    // single-threaded process's stack, as fork does; no locks are held here
    // and the child uses only its own copy of the process state.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | extra | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match rc {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// Most templates kept (one per live definition; a reload adds one).
const MAX_TEMPLATES: usize = 32;
/// A template that failed to build is tried again after this long (its
/// containers are built step by step meanwhile and report the error).
const RETRY_FAILED: Duration = Duration::from_secs(5);

/// The read-only templates (issue 14.1), one per split of a definition,
/// built here once and inherited by every stage forked after.
struct Templates {
    /// None: not asked yet; false: the kernel cannot, or switched off.
    usable: Option<bool>,
    list: Vec<Template>,
}

struct Template {
    split: Split,
    /// What the template's sources were when it was built: a file the host
    /// replaced (a new `/etc/resolv.conf`, journald's new socket) makes a
    /// new template, as it would make a different bind.
    sources: Vec<Option<(u64, u64)>>,
    tree: Option<OwnedFd>,
    built: Instant,
    used: Instant,
}

impl Templates {
    fn new() -> Templates {
        Templates {
            usable: None,
            list: Vec::new(),
        }
    }

    /// The index of a usable template for `spec`, built if needed.
    fn find(&mut self, spec: &Spec) -> Option<usize> {
        let usable = *self.usable.get_or_insert_with(|| {
            std::env::var_os(mounts::template::DISABLE_ENV).is_none_or(|v| v != "0")
                && mounts::template::supported()
        });
        if !usable {
            return None;
        }
        let split = mounts::split(spec).ok()??;
        let sources = identities(&split);
        let now = Instant::now();
        let found = self.list.iter().position(|t| t.split == split);
        let i = match found {
            Some(i)
                if self.list[i].sources == sources
                    && (self.list[i].tree.is_some()
                        || now.duration_since(self.list[i].built) < RETRY_FAILED) =>
            {
                i
            }
            found => {
                let tree = mounts::template::build(&split).ok();
                let t = Template {
                    split,
                    sources,
                    tree,
                    built: now,
                    used: now,
                };
                match found {
                    Some(i) => {
                        self.list[i] = t;
                        i
                    }
                    None => {
                        if self.list.len() >= MAX_TEMPLATES
                            && let Some(old) =
                                (0..self.list.len()).min_by_key(|&i| self.list[i].used)
                        {
                            self.list.swap_remove(old);
                        }
                        self.list.push(t);
                        self.list.len() - 1
                    }
                }
            }
        };
        self.list[i].used = now;
        self.list[i].tree.as_ref().map(|_| i)
    }

    /// The tree of template `i`, taken out (in a forked child); the others'
    /// trees are closed.
    fn take_index(&mut self, i: usize) -> Option<OwnedFd> {
        let tree = if i < self.list.len() {
            self.list.swap_remove(i).tree
        } else {
            None
        };
        self.list.clear();
        tree
    }
}

/// Device and inode of every host path the template binds or links, as
/// a link and as what it points to.
fn identities(split: &Split) -> Vec<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    let id = |m: std::io::Result<std::fs::Metadata>| m.ok().map(|m| (m.dev(), m.ino()));
    let mut out = Vec::new();
    for step in &split.template {
        let path: PathBuf = match step {
            mounts::MountStep::Bind { source, .. } => source.clone(),
            mounts::MountStep::HostTop { name } => Path::new("/").join(name),
            mounts::MountStep::Etc { name, .. } => Path::new("/etc").join(name),
            _ => continue,
        };
        out.push(id(std::fs::symlink_metadata(&path)));
        out.push(id(std::fs::metadata(&path)));
    }
    out
}
