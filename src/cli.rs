//! Command line: the commands of SPEC.md that exist so far.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Run socket-activated network services in throw-away application containers"
)]
pub struct Cli {
    /// Configuration directory holding berth.toml and services/NAME.toml.
    #[arg(long, global = true, default_value = "/etc/berth", value_name = "DIR")]
    pub config_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve one service in the foreground, binding the listen addresses itself.
    #[command(
        after_help = "Example:\n  berth run /etc/berth/services/web.toml --listen 127.0.0.1:8080 --no-scope"
    )]
    Run {
        /// The service file (services/NAME.toml); its stem is the service name.
        service_file: PathBuf,
        /// Address to listen on: 127.0.0.1:8080, [::1]:8080 or /path/to.sock
        /// (repeatable; default: the service's own `listen` addresses).
        #[arg(long = "listen", value_name = "ADDR")]
        listen: Vec<crate::activation::ListenAddr>,
        /// Do not put containers in systemd scopes (no cgroup accounting or limits).
        #[arg(long)]
        no_scope: bool,
    },
    /// The supervisor, run by berth.service: takes its sockets from systemd.
    #[command(after_help = "Example (in berth.service):\n  ExecStart=/usr/bin/berth serve")]
    Serve,
    /// Run one container for a connection on stdin/stdout (Accept=yes sockets).
    #[command(
        after_help = "Example (in berth-inetd@.service, linked as dropbear@.service):\n  ExecStart=/usr/bin/berth inetd %p"
    )]
    Inetd {
        /// The service (services/SERVICE.toml, mode = \"inetd\").
        service: String,
    },
    /// One row per container: unit, service, pid, state, uptime, connections, memory, CPU, tasks, idle timer, definition.
    #[command(
        after_help = "Examples:\n  berth list\n  berth list --json | jq '.containers[].unit'"
    )]
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// A live table of the containers, redrawn in place (like systemd-cgtop): CPU, memory, tasks, connections, state, idle timer.
    #[command(
        after_help = "Examples:\n  berth top\n  berth top --order memory\n  berth top -n 1 --width 100 > snapshot.txt"
    )]
    Top {
        /// Print this many tables, then exit (without a terminal, tables follow each other).
        #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        iterations: Option<u64>,
        /// Seconds between tables (CPU% is the use over this time).
        #[arg(short, long, default_value_t = 1.0, value_name = "SECONDS", value_parser = parse_delay)]
        delay: f64,
        /// Sort by this column, largest first.
        #[arg(short, long, value_enum, default_value_t = crate::top::Order::Cpu)]
        order: crate::top::Order,
        /// Line width (default: $COLUMNS, then the terminal's, then 80).
        #[arg(long, value_name = "COLUMNS", value_parser = clap::value_parser!(u16).range(20..))]
        width: Option<u16>,
    },
    /// OpenMetrics text: counters per service and each container's accounting.
    #[command(
        after_help = "Examples:\n  berth metrics\n  berth metrics --http   (in berth-metrics@.service, Accept=yes)"
    )]
    Metrics {
        /// Answer one HTTP request on stdin/stdout (for an Accept=yes socket).
        #[arg(long)]
        http: bool,
    },
    /// A service's or a container's state, resources, limits, timers and recent log lines.
    #[command(
        after_help = "Examples:\n  berth status web\n  berth status berth-web-0123456789ab.scope"
    )]
    Status {
        /// Service name, container id or scope name.
        name: String,
    },
    /// Stop a container, or all of a service's containers (its socket keeps working).
    #[command(after_help = "Examples:\n  berth stop web\n  berth stop 0123456789ab")]
    Stop {
        /// Service name, container id or scope name.
        name: String,
    },
    /// A service's or container's log from the journal (a journalctl wrapper).
    #[command(
        after_help = "Examples:\n  berth logs web -f\n  berth logs berth-web-0123456789ab.scope"
    )]
    Logs {
        /// Service name, container id or scope name.
        name: String,
        /// Follow new entries.
        #[arg(short, long)]
        follow: bool,
    },
    /// Validate configuration files or directories; exit 0 only if all is valid.
    #[command(after_help = "Examples:\n  berth check\n  berth check /etc/berth/services/ssh.toml")]
    Check {
        /// Service files, berth.toml, or directories (default: the config directory).
        paths: Vec<PathBuf>,
    },
    /// What a compromised service could reach: each risky setting and an exposure score (0-10).
    #[command(
        after_help = "Examples:\n  berth security\n  berth security ssh\n  berth security ssh --json"
    )]
    Security {
        /// The service (default: a summary line for every service).
        name: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions (bash, zsh, fish) for packaging.
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page berth(1), or write berth.1 and berth-COMMAND.1 into a directory, for packaging.
    #[command(hide = true)]
    Manpage {
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// A delay from 0.1 to 3600 seconds.
fn parse_delay(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if (0.1..=3600.0).contains(&d) => Ok(d),
        _ => Err(format!(
            "{s:?}: expected seconds from 0.1 to 3600, such as 2 or 0.5"
        )),
    }
}
