//! `berth-generator`: the berth binary run by systemd as a generator
//! (systemd.generator(7)), through the link
//! `/usr/lib/systemd/system-generators/berth-generator -> /usr/bin/berth`.
//!
//! For every valid service file with `listen`, it writes
//! `berth-NAME.socket` into the normal generator directory (the first
//! argument, `/run/systemd/generator`) and links it into
//! `sockets.target.wants/` there. That directory ranks below
//! /etc/systemd/system and /run/systemd/system, so a hand-written
//! `berth-NAME.socket` there takes precedence over the generated one.
//!
//! A generator runs at boot and on every `systemctl daemon-reload`; it must
//! never break either. A bad service file (or a bad berth.toml) is skipped
//! with a message on the kernel log (`/dev/kmsg`, or stderr where that is not
//! writable, or where `SYSTEMD_LOG_TARGET=console`), and the exit code is 0.
//! Only a failure to write the output directory is an error (exit 1).
//!
//! Generators take no options: `BERTH_CONFIG_DIR` (default `/etc/berth`)
//! names another configuration directory, for tests.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::activation::ListenAddr;
use crate::config::{self, Mode, Service};

/// The name the binary answers to as a generator (argv[0]'s file name).
pub const ARGV0: &str = "berth-generator";
/// Where the configuration is read when `BERTH_CONFIG_DIR` is not set.
const DEFAULT_CONFIG_DIR: &str = "/etc/berth";

#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    #[error("usage: berth-generator NORMAL-DIR [EARLY-DIR LATE-DIR] (run by systemd)")]
    Usage,
    #[error("creating {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("linking {} to {}: {source}", link.display(), target.display())]
    Link {
        link: PathBuf,
        target: PathBuf,
        source: std::io::Error,
    },
}

/// Entry point when argv[0] is `berth-generator`.
pub fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let config_dir = std::env::var_os("BERTH_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR));
    let mut log = Log::open();
    let result = match args.as_slice() {
        [normal] | [normal, _, _] => generate(&config_dir, normal, &mut |m| log.say(m)),
        _ => Err(GeneratorError::Usage),
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            log.say(&e.to_string());
            ExitCode::from(1)
        }
    }
}

/// Writes the socket units of `config_dir`'s services into `out`; returns
/// the names of the units written. `say` gets one line per skipped file.
pub fn generate(
    config_dir: &Path,
    out: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<Vec<String>, GeneratorError> {
    let services = match valid_services(config_dir, say) {
        Some(services) => services,
        None => return Ok(Vec::new()),
    };
    let mut written = Vec::new();
    for service in services.iter().filter(|s| !s.listen.is_empty()) {
        written.push(write_unit(out, service)?);
    }
    Ok(written)
}

/// The services whose files are valid; every other file is named with its
/// errors through `say`. `None`: nothing to generate (no configuration, or
/// a berth.toml with errors: its ip_deny might be among them, and a socket
/// must not open without the restriction the administrator wrote).
fn valid_services(config_dir: &Path, say: &mut dyn FnMut(&str)) -> Option<Vec<Service>> {
    if !config_dir.join("services").is_dir() {
        return None;
    }
    // Host facts (users, bind sources) may not be there yet at boot; berth
    // serve checks them when it loads the service.
    let (_, errors, services) =
        config::without_host_checks(|| config::check_services(&[], config_dir));
    let defaults = config_dir.join("berth.toml");
    if errors.iter().any(|e| e.location().file == defaults) {
        for e in &errors {
            say(&e.to_string());
        }
        say(&format!(
            "{}: has errors, no socket unit generated for any service",
            defaults.display()
        ));
        return None;
    }
    let mut skipped: Vec<&Path> = Vec::new();
    for e in &errors {
        say(&e.to_string());
        let file = e.location().file.as_path();
        if !skipped.contains(&file) {
            skipped.push(file);
        }
    }
    for file in skipped {
        say(&format!(
            "{}: skipped, no socket unit generated",
            file.display()
        ));
    }
    Some(services)
}

/// Writes `berth-NAME.socket` and its `sockets.target.wants` link.
fn write_unit(out: &Path, service: &Service) -> Result<String, GeneratorError> {
    let unit = format!("berth-{}.socket", service.name);
    let path = out.join(&unit);
    std::fs::write(&path, socket_unit(service)).map_err(|source| GeneratorError::Write {
        path: path.clone(),
        source,
    })?;
    let wants = out.join("sockets.target.wants");
    std::fs::create_dir_all(&wants).map_err(|source| GeneratorError::CreateDir {
        path: wants.clone(),
        source,
    })?;
    let link = wants.join(&unit);
    // A link left by an earlier run (systemd empties the directory before
    // each run, a test may not).
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&path, &link).map_err(|source| GeneratorError::Link {
        link,
        target: path,
        source,
    })?;
    Ok(unit)
}

/// The text of `berth-NAME.socket` for a service with `listen`.
pub fn socket_unit(service: &Service) -> String {
    let mut u = String::new();
    let source = escape(&service.file.to_string_lossy());
    let mode = match service.mode {
        Mode::Inetd => "inetd",
        Mode::Listen => "listen",
    };
    // (writing to a String cannot fail)
    let _ = writeln!(u, "# Generated by berth-generator from {source}.");
    let _ = writeln!(
        u,
        "# A berth-{}.socket in /etc/systemd/system takes precedence.",
        service.name
    );
    let _ = writeln!(u, "[Unit]");
    let _ = writeln!(
        u,
        "Description=berth socket of service {} ({mode} mode)",
        service.name
    );
    let _ = writeln!(u, "Documentation=file:/usr/share/doc/berth/README.md");
    if !source.chars().any(char::is_control) {
        let _ = writeln!(u, "SourcePath={source}");
    }
    let _ = writeln!(u);
    let _ = writeln!(u, "[Socket]");
    for addr in &service.listen {
        let _ = writeln!(u, "ListenStream={}", escape(&addr.to_string()));
    }
    // As `berth run --listen` binds them: [::]:P and 0.0.0.0:P side by side.
    if service
        .listen
        .iter()
        .any(|a| matches!(a, ListenAddr::Tcp(std::net::SocketAddr::V6(_))))
    {
        let _ = writeln!(u, "BindIPv6Only=ipv6-only");
    }
    // The descriptor's name is the berth service it belongs to.
    let _ = writeln!(u, "FileDescriptorName={}", service.name);
    let _ = writeln!(u, "Service=berth.service");
    // berth serve accepts itself in inetd mode too.
    let _ = writeln!(u, "Accept=no");
    for rule in &service.ip_allow {
        let _ = writeln!(u, "IPAddressAllow={rule}");
    }
    for rule in &service.ip_deny {
        let _ = writeln!(u, "IPAddressDeny={rule}");
    }
    u
}

/// `%` starts a specifier in unit files.
fn escape(s: &str) -> String {
    s.replace('%', "%%")
}

/// Messages go to the kernel log at warning level, as systemd's own
/// generators do (the journal is not up yet at boot).
struct Log {
    kmsg: Option<std::fs::File>,
}

impl Log {
    fn open() -> Log {
        let console = matches!(
            std::env::var("SYSTEMD_LOG_TARGET").as_deref(),
            Ok("console") | Ok("stderr")
        );
        let kmsg = if console {
            None
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/kmsg")
                .ok()
        };
        Log { kmsg }
    }

    fn say(&mut self, message: &str) {
        // One record per line; a failed write falls back to stderr.
        for line in message.lines() {
            let sent = self.kmsg.as_mut().is_some_and(|k| {
                k.write_all(format!("<4>{ARGV0}: {line}\n").as_bytes())
                    .is_ok()
            });
            if !sent {
                eprintln!("{ARGV0}: {line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IpRule;

    fn service(text: &str) -> (tempfile::TempDir, Service) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("services")).unwrap();
        let file = dir.path().join("services/hello.toml");
        std::fs::write(&file, text).unwrap();
        let service = config::load_service(&file, None).unwrap();
        (dir, service)
    }

    #[test]
    fn inetd_service_with_two_addresses_and_ip_lists() {
        let (_dir, s) = service(
            "mode = \"inetd\"\nexec = [\"/bin/x\"]\nlisten = [\"0.0.0.0:2222\", \"[::]:2222\", \"/run/x%y.sock\"]\nip_allow = [\"127.0.0.2\", \"10.0.0.0/8\", \"::1/128\"]\nip_deny = [\"any\"]\n",
        );
        assert_eq!(
            s.ip_allow,
            [
                IpRule::Prefix("127.0.0.2".parse().unwrap(), 32),
                IpRule::Prefix("10.0.0.0".parse().unwrap(), 8),
                IpRule::Prefix("::1".parse().unwrap(), 128),
            ]
        );
        let file = s.file.display().to_string();
        assert_eq!(
            socket_unit(&s),
            format!(
                "# Generated by berth-generator from {file}.
# A berth-hello.socket in /etc/systemd/system takes precedence.
[Unit]
Description=berth socket of service hello (inetd mode)
Documentation=file:/usr/share/doc/berth/README.md
SourcePath={file}

[Socket]
ListenStream=0.0.0.0:2222
ListenStream=[::]:2222
ListenStream=/run/x%%y.sock
BindIPv6Only=ipv6-only
FileDescriptorName=hello
Service=berth.service
Accept=no
IPAddressAllow=127.0.0.2
IPAddressAllow=10.0.0.0/8
IPAddressAllow=::1
IPAddressDeny=any
"
            )
        );
    }

    #[test]
    fn listen_service_without_ip_lists() {
        let (_dir, s) =
            service("mode = \"listen\"\nexec = [\"/bin/x\"]\nlisten = [\"127.0.0.1:7007\"]\n");
        let text = socket_unit(&s);
        assert!(text.contains("Description=berth socket of service hello (listen mode)\n"));
        assert!(text.contains("\n[Socket]\nListenStream=127.0.0.1:7007\nFileDescriptorName=hello\nService=berth.service\nAccept=no\n"), "{text}");
        assert!(!text.contains("IPAddress"), "{text}");
        assert!(!text.contains("BindIPv6Only"), "{text}");
        assert!(!text.contains("[Install]"), "{text}");
    }

    #[test]
    fn ip_rules_parse_like_systemd() {
        for good in [
            "any",
            "localhost",
            "link-local",
            "multicast",
            "192.168.1.0/24",
            "fe80::/10",
            "0.0.0.0/0",
            "::/0",
        ] {
            let rule: IpRule = good.parse().unwrap_or_else(|()| panic!("{good}"));
            assert_eq!(rule.to_string(), good);
        }
        for bad in [
            "",
            "all",
            "10.0.0.0/33",
            "::1/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0",
            "host.example",
            "10.0.0.1:80",
        ] {
            assert!(bad.parse::<IpRule>().is_err(), "{bad}");
        }
    }
}
