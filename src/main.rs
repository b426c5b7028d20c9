//! The `berth` binary: the only place that turns errors into exit codes.

use std::process::ExitCode;

use clap::Parser;

use berth::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The stage must stay single-threaded: no runtime, no logger threads.
        Command::SandboxStage => berth::sandbox::stage::main(),
        Command::Check { paths } => {
            let (_ok, errors) = berth::config::check(&paths, &cli.config_dir);
            for e in &errors {
                eprintln!("{e}");
            }
            if errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Command::Run {
            service_file,
            listen,
            no_scope,
        } => {
            init_logging();
            match berth::supervisor::run::main(&cli.config_dir, &service_file, &listen, no_scope) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{}", render(&e));
                    ExitCode::from(berth::supervisor::exit_code(&e))
                }
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
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
