//! `berth serve` (berth.service, Type=notify) and `berth inetd SERVICE`
//! (berth-inetd@.service): the systemd forms of the supervisor.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use libsystemd::daemon::{self, NotifyState};
use nix::sys::socket::{SockaddrLike, SockaddrStorage, getsockname};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::{Container, Launcher};
use crate::activation::{ListenAddr, Listener};
use crate::config::{self, Mode, Service};
use crate::sandbox::DEFAULT_STAGING_DIR;
use crate::sandbox::spawn::Running;
use crate::scope::{self, Scopes};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("sockets from systemd: {0}")]
    Activation(#[from] ListenEnvError),
    #[error("configuration in {dir}:\n{errors}")]
    Config { dir: PathBuf, errors: String },
    #[error("service {0:?} is not configured (no services/{0}.toml)")]
    UnknownService(String),
    #[error("service {0:?} is in listen mode; `berth inetd` runs inetd-mode services")]
    NotInetd(String),
    #[error("stdin is not a connected socket: {0}")]
    NoConnection(String),
}

/// What a listening socket is, for idle accounting.
fn addr_of(fd: &OwnedFd) -> Option<ListenAddr> {
    let a = getsockname::<SockaddrStorage>(fd.as_raw_fd()).ok()?;
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(ListenAddr::Tcp(std::net::SocketAddr::V4((*v4).into())));
    }
    if let Some(v6) = a.as_sockaddr_in6() {
        return Some(ListenAddr::Tcp(std::net::SocketAddr::V6((*v6).into())));
    }
    let path = a.as_unix_addr()?.path()?;
    Some(ListenAddr::Unix(path.to_path_buf()))
}

fn load(config_dir: &Path) -> Result<Vec<Service>, ServeError> {
    config::load_dir(config_dir).map_err(|errs| ServeError::Config {
        dir: config_dir.to_path_buf(),
        errors: errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

fn output_fd() -> anyhow::Result<OwnedFd> {
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr")
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = daemon::notify(false, state) {
        tracing::warn!("sd_notify: {e}");
    }
}

/// Containers an earlier supervisor left running, by service: the outer
/// stage (parent not in the scope) and PID 1 (child of the outer stage).
async fn find_adoptable(
    scopes: &Scopes,
    serves: &dyn Fn(&str) -> bool,
) -> BTreeMap<String, Vec<Container>> {
    let mut out: BTreeMap<String, Vec<Container>> = BTreeMap::new();
    let units = match scopes.list().await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!("looking for running containers: {e}");
            return out;
        }
    };
    for (unit, procs) in units {
        let Some((service, id)) = scope::parse_unit_name(&unit) else {
            continue;
        };
        let pids: Vec<u32> = procs.iter().map(|(p, _)| *p).collect();
        let ppid = |p: u32| -> Option<u32> {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        // The scope's top process: an outer stage (exec'd, or forked by the
        // zygote for private_users) with PID 1 as its child, or PID 1 itself
        // (forked by the zygote into its pid namespace). Each names itself.
        let top = |name: &str| {
            pids.iter().copied().find(|p| {
                ppid(*p).is_some_and(|pp| !pids.contains(&pp))
                    && std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim_end() == name)
            })
        };
        let (stage, init) = match top("berth-stage") {
            Some(s) => (Some(s), pids.iter().copied().find(|p| ppid(*p) == Some(s))),
            None => {
                let init = top("berth-init");
                (init, init)
            }
        };
        let (Some(stage), Some(init)) = (stage, init) else {
            if !serves(service) {
                // Another berth's (`berth inetd`), perhaps mid-launch.
                continue;
            }
            // Nothing to adopt: a scope whose process died before systemd
            // attached it (systemd then starts it empty and keeps it until
            // a reload) or a sandbox half-built when the last supervisor
            // died. Nothing else would ever stop it.
            tracing::warn!(
                unit = %unit, event = "stopped",
                "{unit}: no container to adopt in it ({} processes); stopping it", pids.len()
            );
            if let Err(e) = scopes.stop(&unit).await {
                tracing::warn!("stopping {unit}: {e}");
            }
            continue;
        };
        match Running::adopt(stage, init) {
            Ok(running) => out.entry(service.to_owned()).or_default().push(Container {
                id: id.to_owned(),
                running,
                unit: Some(unit.clone()),
                // Its block is in use again before any new container starts.
                lease: super::userns::adopt(&pids),
                generation: String::new(),
            }),
            Err(e) => tracing::warn!("adopting {unit}: {e}"),
        }
    }
    out
}

pub fn main(config_dir: &Path) -> anyhow::Result<()> {
    let services = load(config_dir)?;
    let known = |name: &str| services.iter().any(|s| s.name == name);
    let fds = receive_sockets(&known).map_err(ServeError::from)?;
    let by_name = group_sockets(fds, &known);
    std::fs::create_dir_all(DEFAULT_STAGING_DIR)
        .with_context(|| format!("creating {DEFAULT_STAGING_DIR}"))?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let config_dir = config_dir.to_path_buf();
    rt.block_on(async move {
        let scopes = Scopes::connect().await?;
        let (tx, rx) = watch::channel(false);
        let registry = Arc::new(super::registry::Registry::default());
        let mut tasks = tokio::task::JoinSet::new();
        let launchers = arm(services, by_name, &scopes, &registry, &rx, &mut tasks).await?;
        tasks.spawn(super::history::sample(
            registry.clone(),
            scopes.clone(),
            rx.clone(),
        ));
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel::<crate::bus::ReloadRequest>(4);
        export_interface(&registry, &scopes, reload_tx).await;
        serve_until_signalled(&config_dir, &launchers, &registry, reload_rx).await?;
        notify(&[NotifyState::Stopping]);
        tracing::info!("stopping; containers keep running in their scopes");
        let _ = tx.send(true);
        while tasks.join_next().await.is_some() {}
        Ok(())
    })
}

/// The listeners systemd passed, by service; sockets named after no service
/// or of another kind are logged and left out.
fn group_sockets(
    fds: Vec<(OwnedFd, String)>,
    known: &dyn Fn(&str) -> bool,
) -> BTreeMap<String, Vec<Listener>> {
    let mut by_name: BTreeMap<String, Vec<Listener>> = BTreeMap::new();
    for (fd, name) in fds {
        if !known(&name) {
            tracing::warn!(
                "socket named {name:?} matches no service (no services/{name}.toml); ignored"
            );
            continue;
        }
        match addr_of(&fd) {
            Some(addr) => by_name.entry(name).or_default().push(Listener { addr, fd }),
            None => tracing::warn!("socket {name:?} is not a TCP or unix stream socket; ignored"),
        }
    }
    by_name
}

/// Start the serving task of every service that has sockets, handing it the
/// containers an earlier supervisor left running. The launchers, by service.
async fn arm(
    services: Vec<Service>,
    mut by_name: BTreeMap<String, Vec<Listener>>,
    scopes: &Scopes,
    registry: &Arc<super::registry::Registry>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<BTreeMap<String, Arc<Launcher>>> {
    let mut adoptable = find_adoptable(scopes, &|name| by_name.contains_key(name)).await;
    // One zygote forks the stages of every service.
    let stager = Arc::new(crate::sandbox::spawn::Stager::zygote());
    let mut launchers: BTreeMap<String, Arc<Launcher>> = BTreeMap::new();
    for svc in services {
        let Some(listeners) = by_name.remove(&svc.name) else {
            tracing::info!(service = %svc.name, "no socket named {:?}; not armed", svc.name);
            continue;
        };
        let name = svc.name.clone();
        let mode = svc.mode;
        let launcher = Arc::new(Launcher::new(
            svc,
            output_fd()?,
            Some(scopes.clone()),
            true,
            registry.clone(),
            stager.clone(),
        ));
        let adopted = adoptable.remove(&name).unwrap_or_default();
        let rx = shutdown.clone();
        let l = launcher.clone();
        match mode {
            Mode::Inetd => {
                for c in adopted {
                    tracing::info!(
                        service = %name, container = %c.id, event = "adopted",
                        pid = c.running.init_pid(), "took over a running container"
                    );
                    tasks.spawn(super::inetd::watch_adopted(l.clone(), c, rx.clone()));
                }
                tasks.spawn(super::inetd::serve(l, listeners, rx));
            }
            Mode::Listen => {
                let mut adopted = adopted.into_iter();
                let first = adopted.next();
                // A listen service has one container; extra ones (should
                // not exist) are stopped.
                for mut extra in adopted {
                    let _ = l.kill(&mut extra).await;
                }
                tasks.spawn(super::listen::serve(l, listeners, rx, first));
            }
        }
        tracing::info!(service = %name, event = "armed", "{name}: armed ({} mode)", if mode == Mode::Inetd { "inetd" } else { "listen" });
        launchers.insert(name, launcher);
    }
    Ok(launchers)
}

/// Export berth's D-Bus interface; without it berth still serves.
async fn export_interface(
    registry: &Arc<super::registry::Registry>,
    scopes: &Scopes,
    reload: tokio::sync::mpsc::Sender<crate::bus::ReloadRequest>,
) {
    if let Err(e) = crate::bus::export(crate::bus::Supervisor {
        registry: registry.clone(),
        scopes: scopes.clone(),
        reload,
    })
    .await
    {
        // berth works without its interface; list/status fall back to systemd.
        tracing::error!(
            "exporting {} on the system bus: {e}. Is the D-Bus policy \
             /usr/share/dbus-1/system.d/{}.conf installed (and dbus reloaded)? \
             Until then `berth list` and `berth status` show only what systemd knows",
            crate::bus::NAME,
            crate::bus::NAME
        );
    }
}

/// STATUS= text: how many services and containers, and `extra`.
fn status_text(services: usize, containers: usize, extra: &str) -> String {
    let plural = |k: usize, w: &str| format!("{k} {w}{}", if k == 1 { "" } else { "s" });
    format!(
        "{}, {}{extra}",
        plural(services, "service"),
        plural(containers, "container")
    )
}

/// Tell systemd berth is ready, then serve reloads (SIGHUP, D-Bus) and keep
/// STATUS= current until SIGTERM or SIGINT.
async fn serve_until_signalled(
    config_dir: &Path,
    launchers: &BTreeMap<String, Arc<Launcher>>,
    registry: &super::registry::Registry,
    mut reload_rx: tokio::sync::mpsc::Receiver<crate::bus::ReloadRequest>,
) -> anyhow::Result<()> {
    let status = |n: usize, extra: &str| status_text(launchers.len(), n, extra);
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(status(registry.running(), "")),
    ]);
    tracing::info!("serving {} services", launchers.len());

    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut last = usize::MAX;
    let mut note = String::new();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let r = reload_now(config_dir, launchers);
                note = if r.is_ok() { String::new() } else { "; last reload failed, see the journal".into() };
                notify(&[NotifyState::Ready, NotifyState::Status(status(registry.running(), &note))]);
            }
            Some(answer) = reload_rx.recv() => {
                let r = reload_now(config_dir, launchers);
                note = if r.is_ok() { String::new() } else { "; last reload failed, see the journal".into() };
                notify(&[NotifyState::Ready, NotifyState::Status(status(registry.running(), &note))]);
                let _ = answer.send(r);
            }
            _ = tick.tick() => {
                let n = registry.running();
                if n != last {
                    last = n;
                    notify(&[NotifyState::Status(status(n, &note))]);
                }
            }
        }
    }
    Ok(())
}

/// Reload and report it, for SIGHUP and the D-Bus method alike.
fn reload_now(
    config_dir: &Path,
    launchers: &BTreeMap<String, Arc<Launcher>>,
) -> Result<(), String> {
    notify(&[NotifyState::Reloading]);
    match reload(config_dir, launchers) {
        Ok(()) => {
            tracing::info!(event = "reloaded", "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            let text = format!("reload refused, old configuration kept: {e}");
            tracing::error!(event = "reload-failed", "{text}");
            Err(text)
        }
    }
}

/// Validate the whole new configuration, then swap it in. Changes that
/// need new listening loops (a service's mode) are refused with the reason.
fn reload(config_dir: &Path, launchers: &BTreeMap<String, Arc<Launcher>>) -> anyhow::Result<()> {
    let new = load(config_dir)?;
    let mut swaps = Vec::new();
    for (name, l) in launchers {
        let Some(svc) = new.iter().find(|s| &s.name == name) else {
            anyhow::bail!(
                "service {name} has sockets but its file is gone; restart berth.service to drop it"
            );
        };
        if svc.mode != l.service().mode {
            anyhow::bail!(
                "service {name} changes mode ({:?} → {:?}); restart berth.service for that",
                l.service().mode,
                svc.mode
            );
        }
        swaps.push((l.clone(), svc.clone()));
    }
    for s in new.iter().filter(|s| !launchers.contains_key(&s.name)) {
        tracing::info!(service = %s.name, "new service has no socket of its name yet; add a socket unit and restart berth.service");
    }
    for (l, svc) in swaps {
        l.replace_service(svc);
    }
    Ok(())
}

/// `berth inetd SERVICE`: the connection is stdin/stdout.
pub fn inetd(config_dir: &Path, name: &str) -> anyhow::Result<u8> {
    let services = load(config_dir)?;
    let svc = services
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ServeError::UnknownService(name.to_owned()))?;
    if svc.mode != Mode::Inetd {
        return Err(ServeError::NotInetd(name.to_owned()).into());
    }
    let conn = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stdin")?;
    let peer = match getsockname::<SockaddrStorage>(conn.as_raw_fd()) {
        Ok(a) if a.family().is_some() => super::inetd::peer_of(&conn).1,
        Ok(_) | Err(_) => {
            return Err(ServeError::NoConnection("getsockname failed".into()).into());
        }
    };
    // Our own stdin/stdout must not keep the connection open once the
    // container ends: point them at /dev/null.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    nix::unistd::dup2(null.as_raw_fd(), 0).context("dup2 /dev/null to stdin")?;
    nix::unistd::dup2(null.as_raw_fd(), 1).context("dup2 /dev/null to stdout")?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        std::fs::create_dir_all(DEFAULT_STAGING_DIR)
            .with_context(|| format!("creating {DEFAULT_STAGING_DIR}"))?;
        let scopes = Scopes::connect().await?;
        let launcher = Arc::new(Launcher::new(
            svc,
            output_fd()?,
            Some(scopes),
            false,
            Arc::default(),
            // One container: a zygote would only add an exec.
            Arc::new(crate::sandbox::spawn::Stager::Exec),
        ));
        let (tx, rx) = watch::channel(false);
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let run = super::inetd::run_one(launcher, conn, peer, rx, None, None);
        tokio::pin!(run);
        let status = tokio::select! {
            s = &mut run => s,
            _ = term.recv() => {
                let _ = tx.send(true);
                run.await
            }
        };
        Ok(match status {
            Some(s) if s.success() => 0,
            Some(_) => 1,
            None => 1,
        })
    })
}

/// What is wrong with the `LISTEN_*` environment systemd (or whoever
/// started `berth serve`) passed: a unit file or wrapper error, exit 2.
#[derive(Debug, thiserror::Error)]
pub enum ListenEnvError {
    #[error("{var}={value:?} is not a number ({expected})")]
    NotANumber {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{set} is set but {unset} is not (systemd sets both)")]
    Half {
        set: &'static str,
        unset: &'static str,
    },
    #[error(
        "LISTEN_PID={listen_pid} is not this process (pid {ours}): the sockets were meant for another process"
    )]
    NotOurs { listen_pid: u32, ours: u32 },
    #[error(
        "LISTEN_FDNAMES is not set: berth needs each socket's name (FileDescriptorName= in the socket unit) to find its service"
    )]
    NoNames,
    #[error("LISTEN_FDNAMES has {names} name(s) ({value:?}) but LISTEN_FDS={fds}")]
    CountMismatch {
        fds: usize,
        names: usize,
        value: String,
    },
    #[error(
        "LISTEN_FDNAMES entry {index} is {name:?}: expected a service name (FileDescriptorName=)"
    )]
    BadName { index: usize, name: String },
    #[error(
        "LISTEN_FDS={fds} names descriptors 3 to {last}, but descriptor {fd} is not open: {error}"
    )]
    NotOpen {
        fds: usize,
        last: i64,
        fd: i32,
        error: nix::Error,
    },
    #[error(
        "descriptor {fd} ({name:?}) is {what}, expected a listening stream socket (ListenStream= in the socket unit)"
    )]
    NotListening { fd: i32, name: String, what: String },
}

/// The `LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES` triple, checked: each
/// descriptor with its name, starting at 3. All unset: no sockets. Any
/// inconsistency is an error (libsystemd's receive ignores some silently
/// and reports others only as "failed to parse").
pub fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Result<Vec<(i32, String)>, ListenEnvError> {
    let (pid, fds) = match (pid, fds) {
        (None, None) if names.is_none() => return Ok(Vec::new()),
        (None, None) => {
            return Err(ListenEnvError::Half {
                set: "LISTEN_FDNAMES",
                unset: "LISTEN_FDS",
            });
        }
        (Some(_), None) => {
            return Err(ListenEnvError::Half {
                set: "LISTEN_PID",
                unset: "LISTEN_FDS",
            });
        }
        (None, Some(_)) => {
            return Err(ListenEnvError::Half {
                set: "LISTEN_FDS",
                unset: "LISTEN_PID",
            });
        }
        (Some(p), Some(f)) => (p, f),
    };
    let number = |var, value: &str, expected| {
        // Digits only: `u32::from_str` would also take "+5".
        value
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| value.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| ListenEnvError::NotANumber {
                var,
                value: value.to_owned(),
                expected,
            })
    };
    let listen_pid = number("LISTEN_PID", pid, "a process id")?;
    if listen_pid != u64::from(our_pid) {
        return Err(ListenEnvError::NotOurs {
            listen_pid: u32::try_from(listen_pid).unwrap_or(u32::MAX),
            ours: our_pid,
        });
    }
    // Descriptors are ints from 3 on; a count beyond that is not a count.
    let count = number("LISTEN_FDS", fds, "a count of descriptors")?;
    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n <= (i32::MAX - 3) as usize)
        .ok_or_else(|| ListenEnvError::NotANumber {
            var: "LISTEN_FDS",
            value: fds.to_owned(),
            expected: "a count of descriptors",
        })?;
    let names = names.ok_or(ListenEnvError::NoNames)?;
    let list: Vec<&str> = if count == 0 && names.is_empty() {
        Vec::new()
    } else {
        names.split(':').collect()
    };
    if list.len() != count {
        return Err(ListenEnvError::CountMismatch {
            fds: count,
            names: list.len(),
            value: names.to_owned(),
        });
    }
    list.iter()
        .enumerate()
        .map(|(i, name)| {
            // systemd's own rule for fd names (fdname_is_valid): 1 to 255
            // printable ASCII characters. A valid name that matches no
            // service is logged and ignored later, not an error.
            if name.is_empty()
                || name.len() > 255
                || !name.bytes().all(|b| (b' '..0x7f).contains(&b))
            {
                return Err(ListenEnvError::BadName {
                    index: i + 1,
                    name: (*name).to_owned(),
                });
            }
            Ok((3 + i as i32, (*name).to_owned()))
        })
        .collect()
}

/// Takes the sockets systemd passed: checks the `LISTEN_*` environment,
/// that every descriptor is open and that those named after a service
/// (`known`) are listening stream sockets (others are ignored later, as
/// the SPEC says, whatever they are), marks them close-on-exec, and clears
/// `LISTEN_*` so nothing berth starts inherits them.
fn receive_sockets(known: &dyn Fn(&str) -> bool) -> Result<Vec<(OwnedFd, String)>, ListenEnvError> {
    let var = |k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
    let (pid, fds, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called from main before the runtime or any other thread
        // starts; nothing reads the environment concurrently.
        unsafe { std::env::remove_var(k) };
    }
    let list = parse_listen_env(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?;
    // Every descriptor is checked before any is taken, so that an error
    // leaves none of them owned twice.
    for (fd, name) in &list {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        fcntl(*fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|error| {
            ListenEnvError::NotOpen {
                fds: list.len(),
                last: 2 + list.len() as i64,
                fd: *fd,
                error,
            }
        })?;
        if !known(name) {
            continue;
        }
        if let Some(what) = not_a_listener(*fd) {
            return Err(ListenEnvError::NotListening {
                fd: *fd,
                name: name.clone(),
                what,
            });
        }
    }
    Ok(list
        .into_iter()
        // SAFETY: systemd passed these descriptors to this process (checked
        // above: LISTEN_PID is ours, each is open); nothing else owns them.
        .map(|(fd, name)| (unsafe { OwnedFd::from_raw_fd(fd) }, name))
        .collect())
}

/// What `fd` is if it is not a listening stream socket.
fn not_a_listener(fd: i32) -> Option<String> {
    use nix::sys::socket::{SockType, getsockopt, sockopt};
    // SAFETY: borrowed only for these calls; `fd` was checked to be open.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    match getsockopt(&borrowed, sockopt::SockType) {
        Err(nix::Error::ENOTSOCK) => {
            let kind = match nix::sys::stat::fstat(fd) {
                Ok(st) => match st.st_mode & libc::S_IFMT {
                    libc::S_IFREG => "a regular file",
                    libc::S_IFDIR => "a directory",
                    libc::S_IFIFO => "a FIFO",
                    libc::S_IFCHR => "a character device",
                    _ => "not a socket",
                },
                Err(_) => "not a socket",
            };
            Some(kind.to_owned())
        }
        Err(e) => Some(format!("a socket berth cannot inspect ({e})")),
        Ok(SockType::Stream) => match getsockopt(&borrowed, sockopt::AcceptConn) {
            Ok(true) => None,
            Ok(false) => Some("a stream socket that is not listening (Accept=yes passes connections to berth-inetd@.service, not to berth serve)".to_owned()),
            Err(e) => Some(format!("a socket berth cannot inspect ({e})")),
        },
        Ok(SockType::Datagram) => Some("a datagram socket".to_owned()),
        Ok(t) => Some(format!("a {t:?} socket")),
    }
}

#[cfg(test)]
mod listen_env_tests {
    use super::{ListenEnvError as E, parse_listen_env as parse};

    #[test]
    fn well_formed() {
        assert_eq!(parse(None, None, None, 7).unwrap(), vec![]);
        assert_eq!(
            parse(Some("7"), Some("2"), Some("web:ssh"), 7).unwrap(),
            vec![(3, "web".to_owned()), (4, "ssh".to_owned())]
        );
        assert_eq!(parse(Some("7"), Some("0"), Some(""), 7).unwrap(), vec![]);
    }

    #[test]
    fn malformed() {
        let err = |p, f, n| parse(p, f, n, 7).unwrap_err();
        assert!(matches!(
            err(Some("x"), Some("1"), Some("a")),
            E::NotANumber {
                var: "LISTEN_PID",
                ..
            }
        ));
        assert!(matches!(
            err(Some("7"), Some("one"), Some("a")),
            E::NotANumber {
                var: "LISTEN_FDS",
                ..
            }
        ));
        assert!(matches!(
            err(Some("7"), Some("-1"), Some("a")),
            E::NotANumber { .. }
        ));
        assert!(matches!(
            err(Some("7"), Some("+1"), Some("a")),
            E::NotANumber { .. }
        ));
        assert!(matches!(
            err(Some("7"), Some("99999999999999999999"), Some("a")),
            E::NotANumber { .. }
        ));
        assert!(matches!(
            err(Some("7"), Some("4294967295"), Some("a")),
            E::NotANumber { .. }
        ));
        assert!(matches!(
            err(Some("8"), Some("1"), Some("a")),
            E::NotOurs {
                listen_pid: 8,
                ours: 7
            }
        ));
        assert!(matches!(
            err(None, Some("1"), Some("a")),
            E::Half {
                set: "LISTEN_FDS",
                ..
            }
        ));
        assert!(matches!(
            err(Some("7"), None, None),
            E::Half {
                set: "LISTEN_PID",
                ..
            }
        ));
        assert!(matches!(err(None, None, Some("a")), E::Half { .. }));
        assert!(matches!(err(Some("7"), Some("1"), None), E::NoNames));
        assert!(matches!(
            err(Some("7"), Some("2"), Some("a")),
            E::CountMismatch {
                fds: 2,
                names: 1,
                ..
            }
        ));
        assert!(matches!(
            err(Some("7"), Some("1"), Some("a:b")),
            E::CountMismatch {
                fds: 1,
                names: 2,
                ..
            }
        ));
        assert!(matches!(
            err(Some("7"), Some("2"), Some("a:")),
            E::BadName { index: 2, .. }
        ));
        assert!(matches!(
            err(Some("7"), Some("1"), Some("a\tb")),
            E::BadName { index: 1, .. }
        ));
    }
}
