//! `berth run`: one service in the foreground, on sockets berth binds.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::Launcher;
use crate::activation::{self, ListenAddr};
use crate::config::{self, Mode};
use crate::sandbox::DEFAULT_STAGING_DIR;

/// SIGHUP: read the service file (and berth.toml) again and use it for new
/// containers and warm sandboxes; a broken file or a changed mode keeps the
/// old definition, with the reason in the log.
fn reload(config_dir: &Path, service_file: &Path, launcher: &Launcher) {
    let defaults_path = config_dir.join("berth.toml");
    let defaults = if defaults_path.exists() {
        config::load_defaults(&defaults_path).map(Some)
    } else {
        Ok(None)
    };
    let loaded = match defaults {
        Ok(d) => config::load_service(service_file, d.as_ref()),
        Err(e) => Err(e),
    };
    let name = launcher.service().name.clone();
    match loaded {
        Ok(svc) if svc.mode != launcher.service().mode => tracing::error!(
            service = %name, event = "reload-failed",
            "reload refused, old configuration kept: the mode changed; restart berth run for that"
        ),
        Ok(svc) => {
            launcher.replace_service(svc);
            tracing::info!(
                service = %name, event = "reloaded",
                "configuration reloaded (definition {})", launcher.generation()
            );
        }
        Err(e) => tracing::error!(
            service = %name, event = "reload-failed",
            "reload refused, old configuration kept: {e}"
        ),
    }
}

/// A usage error at the edge (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(
        "no reachable systemd ({0}); berth puts every container in a systemd scope. \
         Pass --no-scope to run without scopes (no cgroup accounting, no [resources] limits)"
    )]
    NoSystemd(String),
    #[error(
        "{0}: no address to listen on; expected --listen ADDR or `listen = [...]` in the service file"
    )]
    NoListen(String),
}

pub fn main(
    config_dir: &Path,
    service_file: &Path,
    addrs: &[ListenAddr],
    no_scope: bool,
) -> anyhow::Result<()> {
    let defaults_path = config_dir.join("berth.toml");
    let defaults = if defaults_path.exists() {
        Some(config::load_defaults(&defaults_path)?)
    } else {
        None
    };
    let service = config::load_service(service_file, defaults.as_ref())?;

    if no_scope {
        tracing::warn!(
            service = %service.name,
            "--no-scope: containers run WITHOUT systemd scopes: no cgroup accounting, \
             [resources] limits are NOT applied, and nothing but berth cleans up after them"
        );
    } else if !libsystemd::daemon::booted() {
        return Err(UsageError::NoSystemd("/run/systemd/system does not exist".into()).into());
    }

    // Without --listen, the addresses the service file declares.
    let addrs = if addrs.is_empty() {
        service.listen.clone()
    } else {
        addrs.to_vec()
    };
    if addrs.is_empty() {
        return Err(UsageError::NoListen(service_file.display().to_string()).into());
    }
    let mut listeners = Vec::new();
    for a in &addrs {
        let l = activation::bind_listener(a)?;
        tracing::info!(service = %service.name, "listening on {}", l.addr);
        listeners.push(l);
    }
    std::fs::create_dir_all(DEFAULT_STAGING_DIR)
        .with_context(|| format!("creating the staging directory {DEFAULT_STAGING_DIR}"))?;
    let output: OwnedFd = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr for the containers")?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let scopes = if no_scope {
            None
        } else {
            Some(
                crate::scope::Scopes::connect()
                    .await
                    .map_err(|e| UsageError::NoSystemd(e.to_string()))?,
            )
        };
        let launcher = Arc::new(Launcher::new(
            service,
            output,
            scopes,
            false,
            Arc::default(),
            Arc::new(crate::sandbox::spawn::Stager::zygote()),
        ));
        let (tx, rx) = watch::channel(false);
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let reloader = launcher.clone();
        let name = launcher.service().name.clone();
        let mode = launcher.service().mode;
        let server = tokio::spawn(async move {
            match mode {
                Mode::Inetd => super::inetd::serve(launcher, listeners, rx).await,
                Mode::Listen => super::listen::serve(launcher, listeners, rx, None).await,
            }
        });
        tracing::info!(service = %name, event = "ready", "serving");
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => reload(config_dir, service_file, &reloader),
            }
        }
        tracing::info!(service = %name, "stopping: ending all containers");
        let _ = tx.send(true);
        let _ = server.await;
        for a in addrs {
            if let ListenAddr::Unix(p) = a {
                let _ = std::fs::remove_file(p);
            }
        }
        tracing::info!(service = %name, "stopped");
        Ok(())
    })
}
