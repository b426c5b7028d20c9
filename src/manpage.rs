//! Man pages of the command line, generated from its clap definition for
//! packaging: `berth(1)` and one `berth-COMMAND(1)` per visible subcommand.
//! The configuration reference `berth.toml(5)` is hand-written
//! (packaging/man/berth.toml.5).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::cli::Cli;

#[derive(Debug, thiserror::Error)]
pub enum ManpageError {
    #[error("cannot render man page {name}: {source}")]
    Render {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write man page {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write man page to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

/// Every page as (file name such as `berth-run.1`, roff source); `berth.1`
/// first.
pub fn pages() -> Result<Vec<(String, Vec<u8>)>, ManpageError> {
    // Built as clap_mangen::generate_to does, so subcommands carry their
    // full names (`berth-run`, synopsis `berth run`).
    let mut top = Cli::command().disable_help_subcommand(true);
    top.build();
    let subcommands: Vec<String> = visible_subcommands(&top)
        .map(|c| display_name(c).to_string())
        .collect();
    let mut pages = Vec::new();
    let mut see_also: Vec<(String, &str)> = subcommands.iter().map(|n| (n.clone(), "1")).collect();
    see_also.extend(REFERENCES.iter().map(|(n, s)| (n.to_string(), *s)));
    pages.push(render(&top, &see_also, true)?);
    collect(&top, &mut pages)?;
    Ok(pages)
}

/// Writes `berth.1` to `out`, or every page into `dir`.
pub fn write(dir: Option<&Path>) -> Result<(), ManpageError> {
    let pages = pages()?;
    match dir {
        None => {
            let (_, text) = &pages[0];
            std::io::stdout()
                .write_all(text)
                .map_err(ManpageError::Stdout)
        }
        Some(dir) => {
            for (name, text) in &pages {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .map_err(|source| ManpageError::Write { path, source })?;
            }
            Ok(())
        }
    }
}

/// Pages berth(1) points to besides its subcommands'.
const REFERENCES: &[(&str, &str)] = &[
    ("berth.toml", "5"),
    ("systemd.socket", "5"),
    ("systemd.scope", "5"),
    ("journalctl", "1"),
];

fn collect(parent: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> Result<(), ManpageError> {
    for cmd in visible_subcommands(parent) {
        let see_also = [("berth".to_string(), "1"), ("berth.toml".to_string(), "5")];
        pages.push(render(cmd, &see_also, false)?);
        collect(cmd, pages)?;
    }
    Ok(())
}

fn visible_subcommands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|c| !c.is_hide_set())
}

fn display_name(cmd: &clap::Command) -> &str {
    cmd.get_display_name().unwrap_or_else(|| cmd.get_name())
}

fn render(
    cmd: &clap::Command,
    see_also: &[(String, &str)],
    top: bool,
) -> Result<(String, Vec<u8>), ManpageError> {
    let name = display_name(cmd).to_string();
    // The examples of `after_help` become an EXAMPLES section with their
    // lines kept (clap_mangen would fill them into one paragraph).
    let examples = cmd.get_after_help().map(|s| s.to_string());
    let mut cmd = cmd.clone().after_help(None::<&str>);
    if top {
        cmd = cmd.long_about(DESCRIPTION);
    }
    let man = Man::new(cmd)
        .title(name.to_uppercase())
        .section("1")
        .source(format!("berth {}", env!("CARGO_PKG_VERSION")))
        .manual("berth manual");
    let mut out = Vec::new();
    let fail = |source| ManpageError::Render {
        name: name.clone(),
        source,
    };
    man.render(&mut out).map_err(fail)?;
    let mut roff = Roff::new();
    if let Some(examples) = examples {
        roff.control("SH", ["EXAMPLES"]);
        let mut in_block = false;
        for line in examples.lines() {
            if let Some(example) = line.strip_prefix("  ") {
                if !in_block {
                    roff.control("PP", [])
                        .control("nf", [])
                        .control("RS", ["4"]);
                    in_block = true;
                }
                roff.text([roman(example)]);
                continue;
            }
            if in_block {
                roff.control("RE", []).control("fi", []);
                in_block = false;
            }
            // "Example (in berth.service):" says where the lines go.
            let note = line.trim_end_matches(':');
            if let Some(rest) = note
                .strip_prefix("Example (")
                .and_then(|n| n.strip_suffix(')'))
            {
                roff.control("PP", [])
                    .text([roman(format!("{}:", upper_first(rest)))]);
            }
        }
        if in_block {
            roff.control("RE", []).control("fi", []);
        }
    }
    if top {
        roff.control("SH", ["EXIT STATUS"])
            .text([roman(
                "0: success; 1: a runtime failure; 2: a usage or configuration error.",
            )])
            .control("SH", ["FILES"])
            .control("TP", [])
            .text([bold("/etc/berth/berth.toml")])
            .text([roman(
                "Optional defaults for every service (see the --config-dir option).",
            )])
            .control("TP", [])
            .text([bold("/etc/berth/services/NAME.toml")])
            .text([roman("One file per service, named after it.")]);
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut refs = Vec::new();
    for (i, (page, section)) in see_also.iter().enumerate() {
        refs.push(bold(page.as_str()));
        let sep = if i + 1 == see_also.len() { "" } else { ", " };
        refs.push(roman(format!("({section}){sep}")));
    }
    roff.text(refs);
    // to_roff: without a second copy of the preamble render() already wrote
    // (none of these lines has an apostrophe).
    out.extend_from_slice(roff.to_roff().as_bytes());
    Ok((format!("{name}.1"), out))
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// berth(1)'s DESCRIPTION (the command line's `about` is one line).
const DESCRIPTION: &str = "berth runs network services in throw-away application containers that \
systemd wakes up on demand. systemd owns the listening sockets; berth receives them (or single \
connections, inetd style), starts each application in a sandbox whose only network is the socket \
it was handed, puts every sandbox in its own transient systemd scope for accounting and resource \
limits, sends its output to the journal, and tears it down when it goes idle.

Services are configured in /etc/berth/services/NAME.toml, with defaults in /etc/berth/berth.toml; \
see berth.toml(5). berth.service runs berth serve; berth-inetd@.service runs berth inetd for \
Accept=yes sockets; the other commands inspect and control what runs.";
