//! The `berth` binary: the only place that turns errors into exit codes.

use std::process::ExitCode;

use clap::Parser;

use berth::cli::{Cli, Command};

fn main() -> ExitCode {
    // The internal stages (not clap subcommands: berth starts them itself)
    // dispatch before clap builds its command tree, as they are on every
    // container's critical path. They must stay single-threaded: no runtime,
    // no logger threads.
    // Run by systemd as a generator, through the link named berth-generator.
    if std::env::args_os()
        .next()
        .as_deref()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == berth::generator::ARGV0)
    {
        return berth::generator::main();
    }
    match std::env::args_os()
        .nth(1)
        .as_deref()
        .and_then(|a| a.to_str())
    {
        Some("sandbox-stage") => return berth::sandbox::stage::main(),
        Some("sandbox-zygote") => return berth::sandbox::zygote::main(),
        _ => {}
    }
    // The commands that print (help and usage errors included) end quietly
    // when the reader goes away, like other Unix tools: killed by SIGPIPE
    // (status 141 in a shell), not a panic about a broken pipe. The daemon
    // forms keep Rust's SIGPIPE ignored: a client closing its connection
    // must be an EPIPE there, never the supervisor's death. (D-Bus calls
    // are unaffected either way: zbus sends with MSG_NOSIGNAL.)
    pipe_signal(nix::sys::signal::SigHandler::SigDfl);
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Serve | Command::Inetd { .. } | Command::Run { .. }
    ) {
        pipe_signal(nix::sys::signal::SigHandler::SigIgn);
    }
    match cli.command {
        Command::Check { paths } => {
            let (ok, errors, services) = berth::config::check_services(&paths, &cli.config_dir);
            for e in &errors {
                eprintln!("{e}");
            }
            for s in &services {
                for w in berth::security::analyze(s).warnings() {
                    eprintln!("{w}");
                }
            }
            if errors.is_empty() {
                println!("{ok} file{} valid", if ok == 1 { "" } else { "s" });
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Command::Security { name, json } => match berth::config::load_dir(&cli.config_dir) {
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                ExitCode::from(2)
            }
            Ok(services) => match berth::security::render(&services, name.as_deref(), json) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berth: {e}");
                    ExitCode::from(1)
                }
            },
        },
        Command::List { json } => admin_edge(berth::admin::list(json)),
        Command::Status { name } => admin_edge(berth::admin::status(&name)),
        Command::Top {
            iterations,
            delay,
            order,
            width,
        } => admin_edge(berth::top::run(
            iterations,
            std::time::Duration::from_secs_f64(delay),
            order,
            width.map(usize::from),
        )),
        Command::Metrics { http } => admin_edge(berth::admin::metrics(http)),
        Command::Stop { name } => admin_edge(berth::admin::stop(&name).map(|n| {
            println!("stopped {n} container{}", if n == 1 { "" } else { "s" });
        })),
        Command::Logs { name, follow } => admin_edge(Err(berth::admin::logs(&name, follow))),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "berth", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Manpage { out_dir } => match berth::manpage::write(out_dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth: {e}");
                ExitCode::from(1)
            }
        },
        Command::Serve => {
            init_logging();
            edge(
                preflight()
                    .and_then(|()| berth::supervisor::serve::main(&cli.config_dir).map(|()| 0)),
            )
        }
        Command::Inetd { service } => {
            init_logging();
            edge(
                preflight()
                    .and_then(|()| berth::supervisor::serve::inetd(&cli.config_dir, &service)),
            )
        }
        Command::Run {
            service_file,
            listen,
            no_scope,
        } => {
            init_logging();
            match preflight().and_then(|()| {
                berth::supervisor::run::main(&cli.config_dir, &service_file, &listen, no_scope)
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{}", render(&e));
                    ExitCode::from(berth::supervisor::exit_code(&e))
                }
            }
        }
    }
}

/// What must hold before any container is built: a seccomp filter can be
/// made for this architecture (SPEC: an error at start, not a killed
/// container).
fn preflight() -> anyhow::Result<()> {
    berth::sandbox::check_seccomp_architecture()?;
    ensure_nofile()?;
    Ok(())
}

/// Stages move their channel to descriptor 100 and the listeners above
/// it: with a lower soft RLIMIT_NOFILE every launch would fail. Raised to
/// this where the hard limit allows (the applications inherit it), else
/// an error at start rather than a throttled service.
const MIN_NOFILE: u64 = 128;

fn ensure_nofile() -> anyhow::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    // None is RLIM_INFINITY.
    let soft = lim.current.unwrap_or(u64::MAX);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    if soft >= MIN_NOFILE {
        return Ok(());
    }
    if hard < MIN_NOFILE {
        anyhow::bail!(
            "RLIMIT_NOFILE is {soft} (hard {hard}): berth needs at least {MIN_NOFILE} \
             descriptors (LimitNOFILE= in berth.service, ulimit -n)"
        );
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(MIN_NOFILE),
            maximum: lim.maximum,
        },
    )
    .map_err(|e| anyhow::anyhow!("raising RLIMIT_NOFILE from {soft} to {MIN_NOFILE}: {e}"))?;
    tracing::warn!("RLIMIT_NOFILE raised from {soft} to {MIN_NOFILE}, the least berth needs");
    Ok(())
}

fn pipe_signal(handler: nix::sys::signal::SigHandler) {
    // SAFETY: SIG_DFL and SIG_IGN are not handlers that run code; no other
    // thread exists yet that could rely on the previous disposition.
    if let Err(e) = unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, handler) }
    {
        eprintln!("berth: setting the SIGPIPE disposition: {e}");
    }
}

fn admin_edge(r: Result<(), berth::admin::AdminError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::from(1)
        }
    }
}

fn edge(r: anyhow::Result<u8>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{}", render(&e));
            ExitCode::from(berth::supervisor::exit_code(&e))
        }
    }
}

/// Events go to stderr (unless stderr is already the journal) and, where
/// journald runs, to the journal as structured entries with BERTH_* fields.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = if berth::journal::available() {
        tracing_journald::layer().ok().map(|l| {
            l.with_field_prefix(Some("BERTH".into()))
                .with_syslog_identifier("berth".into())
        })
    } else {
        None
    };
    let fmt = (journald.is_none() || !berth::journal::stderr_is_journal()).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(fmt)
        .init();
}

/// The error and its causes, each cause added only if the text so far does
/// not already say it (berth's error types embed their source's text).
fn render(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}
