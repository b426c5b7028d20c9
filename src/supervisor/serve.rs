//! `berth serve` (berth.service, Type=notify) and `berth inetd SERVICE`
//! (berth-inetd@.service): the systemd forms of the supervisor.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
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
    #[error("receiving sockets from systemd: {0}")]
    Sockets(String),
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
async fn find_adoptable(scopes: &Scopes) -> BTreeMap<String, Vec<Container>> {
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
        // Exec'd or forked by the zygote, every outer stage names itself.
        let stage = pids.iter().copied().find(|p| {
            ppid(*p).is_some_and(|pp| !pids.contains(&pp))
                && std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim_end() == "berth-stage")
        });
        let Some(stage) = stage else { continue };
        let Some(init) = pids.iter().copied().find(|p| ppid(*p) == Some(stage)) else {
            continue;
        };
        match Running::adopt(stage, init) {
            Ok(running) => out.entry(service.to_owned()).or_default().push(Container {
                id: id.to_owned(),
                running,
                unit: Some(unit.clone()),
            }),
            Err(e) => tracing::warn!("adopting {unit}: {e}"),
        }
    }
    out
}

pub fn main(config_dir: &Path) -> anyhow::Result<()> {
    let services = load(config_dir)?;
    // LISTEN_* are cleared here so nothing berth starts inherits them.
    let fds = libsystemd::activation::receive_descriptors_with_names(true)
        .map_err(|e| ServeError::Sockets(e.to_string()))?;
    let mut by_name: BTreeMap<String, Vec<Listener>> = BTreeMap::new();
    for (fd, name) in fds {
        // SAFETY: systemd passed this descriptor to us; it is ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd.into_raw_fd()) };
        match addr_of(&fd) {
            Some(addr) => by_name.entry(name).or_default().push(Listener { addr, fd }),
            None => tracing::warn!("socket {name:?} is not a TCP or unix stream socket; ignored"),
        }
    }
    for name in by_name.keys() {
        if !services.iter().any(|s| &s.name == name) {
            tracing::warn!(
                "socket named {name:?} matches no service (no services/{name}.toml); ignored"
            );
        }
    }
    std::fs::create_dir_all(DEFAULT_STAGING_DIR)
        .with_context(|| format!("creating {DEFAULT_STAGING_DIR}"))?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let config_dir = config_dir.to_path_buf();
    rt.block_on(async move {
        let scopes = Scopes::connect().await?;
        let mut adoptable = find_adoptable(&scopes).await;
        let (tx, rx) = watch::channel(false);
        let registry = Arc::new(super::registry::Registry::default());
        // One zygote forks the stages of every service.
        let stager = Arc::new(crate::sandbox::spawn::Stager::zygote());
        let mut launchers: BTreeMap<String, Arc<Launcher>> = BTreeMap::new();
        let mut tasks = tokio::task::JoinSet::new();
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
            let rx = rx.clone();
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
        let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<crate::bus::ReloadRequest>(4);
        if let Err(e) = crate::bus::export(crate::bus::Supervisor {
            registry: registry.clone(),
            scopes: scopes.clone(),
            reload: reload_tx,
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
        let status = |n: usize, extra: &str| {
            let plural = |k: usize, w: &str| format!("{k} {w}{}", if k == 1 { "" } else { "s" });
            format!(
                "{}, {}{extra}",
                plural(launchers.len(), "service"),
                plural(n, "container")
            )
        };
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
                    let r = reload_now(&config_dir, &launchers);
                    note = if r.is_ok() { String::new() } else { "; last reload failed, see the journal".into() };
                    notify(&[NotifyState::Ready, NotifyState::Status(status(registry.running(), &note))]);
                }
                Some(answer) = reload_rx.recv() => {
                    let r = reload_now(&config_dir, &launchers);
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
        notify(&[NotifyState::Stopping]);
        tracing::info!("stopping; containers keep running in their scopes");
        let _ = tx.send(true);
        while tasks.join_next().await.is_some() {}
        Ok(())
    })
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
