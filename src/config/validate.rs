//! Validation of one file: toml's spanned document, key by key, into
//! [`FileSettings`], collecting every error with its position.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::error::{ConfigError, Location, line_col};
use super::schema::{Mode, Network, Propagation, Seccomp};
use super::settings::{FileSettings, Located};

/// A value of the document with the byte range of its text.
pub(super) type TomlValue<'i> = Spanned<DeValue<'i>>;
/// A key of the document with the byte range of its text.
pub(super) type TomlKey<'i> = Spanned<DeString<'i>>;

const TOP_KEYS: &[&str] = &[
    "mode",
    "exec",
    "user",
    "group",
    "environment",
    "working_directory",
    "hostname",
    "idle_timeout",
    "max_lifetime",
    "max_connections",
    "max_connections_per_source",
    "rate_limit_per_source",
    "source_prefix_v6",
    "warm",
    "stop_timeout",
    "freeze_after",
    "listen",
    "ip_allow",
    "ip_deny",
    "sandbox",
    "resources",
    "slice",
    "private_users_range",
];
const SANDBOX_KEYS: &[&str] = &[
    "network",
    "read_only",
    "read_write",
    "propagation",
    "tmp_size",
    "etc",
    "capabilities",
    "seccomp",
    "syslog",
    "runtime_directory",
    "state_directory",
    "credentials",
    "private_users",
];
const RESOURCES_KEYS: &[&str] = &[
    "memory_max",
    "memory_high",
    "cpu_weight",
    "cpu_quota",
    "tasks_max",
    "io_weight",
];
const SLICE_KEYS: &[&str] = &["memory_max", "tasks_max", "cpu_quota", "cpu_weight"];

thread_local! {
    /// Whether users, groups, bind sources and /etc entries are looked up
    /// on the host while validating (see [`without_host_checks`]).
    static HOST_CHECKS: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `f` with validation that does not look at the host: users and
/// groups are not resolved (no NSS), bind sources and /etc entries not
/// checked. For berth-generator: it runs at boot before NSS services and
/// other file systems are up; `berth serve` checks these facts itself.
pub fn without_host_checks<T>(f: impl FnOnce() -> T) -> T {
    let before = HOST_CHECKS.with(|h| h.replace(false));
    let result = f();
    HOST_CHECKS.with(|h| h.set(before));
    result
}

pub(super) fn host_checks() -> bool {
    HOST_CHECKS.with(|h| h.get())
}

/// Validates one file: turns spans into locations and collects errors.
pub(super) struct FileValidator<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl<'a> FileValidator<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str) -> Self {
        FileValidator {
            file,
            text,
            errors: Vec::new(),
        }
    }

    pub(super) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The errors in the order of the file (file-level ones first).
    pub(super) fn into_errors(self) -> Vec<ConfigError> {
        let mut errors = self.errors;
        errors.sort_by_key(|e| e.location().position);
        errors
    }

    /// Records an error found outside this validator (about the same file).
    pub(super) fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// Parses the file; every syntax error is recorded, and then there is no
    /// document to validate (what the parser recovered would be guesswork).
    pub(super) fn parse(&mut self) -> Option<DeTable<'a>> {
        let (document, syntax_errors) = DeTable::parse_recoverable(self.text);
        if syntax_errors.is_empty() {
            return Some(document.into_inner());
        }
        for error in syntax_errors {
            let mut message = error
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(", ");
            // toml points at the repeated key but does not name it.
            if let Some(key) = error
                .span()
                .filter(|_| message == "duplicate key")
                .and_then(|span| self.text.get(span))
            {
                message = format!("duplicate key `{key}`");
            }
            self.errors.push(ConfigError::Syntax {
                at: self.at_offset(error.span().map(|s| s.start)),
                message,
            });
        }
        None
    }

    /// Stores `result`'s value or records its error.
    pub(super) fn ok_or_record<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    // --- locations and errors ----------------------------------------------

    fn at_offset(&self, offset: Option<usize>) -> Location {
        Location {
            file: self.file.to_path_buf(),
            position: offset.map(|o| line_col(self.text, o)),
        }
    }

    /// The location of the text at `span`.
    pub(super) fn at(&self, span: Range<usize>) -> Location {
        self.at_offset(Some(span.start))
    }

    pub(super) fn wrong_type(&self, key: &str, value: &TomlValue, expected: &str) -> ConfigError {
        ConfigError::WrongType {
            at: self.at(value.span()),
            key: key.to_string(),
            expected: expected.to_string(),
            found: describe(value.get_ref()),
        }
    }

    pub(super) fn invalid(&self, key: &str, span: Range<usize>, message: String) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(span),
            key: key.to_string(),
            message,
        }
    }

    /// "expected X, found <the value>" for a value of the right type.
    pub(super) fn bad_value(&self, key: &str, value: &TomlValue, expected: &str) -> ConfigError {
        self.invalid(
            key,
            value.span(),
            format!("expected {expected}, found {}", describe(value.get_ref())),
        )
    }

    fn unknown_key(&self, key: &TomlKey, table: &str, valid: &[&str]) -> ConfigError {
        let name: &str = key.get_ref();
        let mut hint = String::new();
        if table.is_empty() {
            if SANDBOX_KEYS.contains(&name) {
                hint = format!(" (`{name}` belongs in [sandbox])");
            } else if RESOURCES_KEYS.contains(&name) {
                hint = format!(" (`{name}` belongs in [resources])");
            }
        }
        let close = valid
            .iter()
            .find(|v| strsim::levenshtein(v, name) <= 2 || v.eq_ignore_ascii_case(name));
        if let (true, Some(close)) = (hint.is_empty(), close) {
            hint = format!(" (did you mean `{close}`?)");
        }
        ConfigError::UnknownKey {
            at: self.at(key.span()),
            key: name.to_string(),
            table: if table.is_empty() {
                String::new()
            } else {
                format!(" in {table}")
            },
            valid: valid.join(", "),
            hint,
        }
    }

    // --- tables ------------------------------------------------------------

    /// Validates the top level of a file (`is_defaults`: berth.toml).
    pub(super) fn settings(&mut self, root: &DeTable, is_defaults: bool) -> FileSettings {
        let mut s = FileSettings::default();
        for (key, value) in root.iter() {
            let k: &str = key.get_ref();
            if let Some(&known) = TOP_KEYS.iter().find(|&&t| t == k) {
                s.seen.insert(known);
            }
            match k {
                "mode" => {
                    let r = self.one_of(
                        k,
                        value,
                        &[("inetd", Mode::Inetd), ("listen", Mode::Listen)],
                    );
                    s.mode = self.ok_or_record(r).map(|mode| Located {
                        value: mode,
                        at: self.at(value.span()),
                    });
                }
                "exec" if is_defaults => self.errors.push(ConfigError::ExecInDefaults {
                    at: self.at(key.span()),
                }),
                "exec" => {
                    let r = self.exec(value);
                    s.exec = self.ok_or_record(r);
                }
                "user" => {
                    let r = self.user(value);
                    s.user = self.ok_or_record(r);
                }
                "group" => {
                    let r = self.group(value);
                    s.group = self.ok_or_record(r);
                }
                "environment" => {
                    let r = self.environment(value);
                    s.environment = self.ok_or_record(r);
                }
                "working_directory" => {
                    let r = self.absolute_path(k, value);
                    s.working_directory = self.ok_or_record(r);
                }
                "hostname" => {
                    let r = self.hostname(value);
                    s.hostname = self.ok_or_record(r);
                }
                "idle_timeout" => {
                    let r = self.duration(k, value);
                    s.idle_timeout = self.ok_or_record(r);
                }
                "max_lifetime" => {
                    let r = self.duration(k, value);
                    s.max_lifetime = self.ok_or_record(r);
                }
                "max_connections" => {
                    let r = self.integer(k, value, 1, 65536);
                    s.max_connections = self.ok_or_record(r).map(|n| n as u32);
                }
                "max_connections_per_source" => {
                    let r = self.integer(k, value, 1, u32::MAX as i64);
                    s.max_connections_per_source = self.ok_or_record(r).map(|n| n as u32);
                }
                "rate_limit_per_source" => {
                    let r = self.rate_limit(k, value);
                    s.rate_limit_per_source = self.ok_or_record(r).map(|limit| Located {
                        value: limit,
                        at: self.at(value.span()),
                    });
                }
                "source_prefix_v6" => {
                    let r = self.integer(k, value, 1, 128);
                    s.source_prefix_v6 = self.ok_or_record(r).map(|n| n as u8);
                }
                "warm" => {
                    let r = self.integer(k, value, 0, 1024);
                    s.warm = self.ok_or_record(r).map(|n| Located {
                        value: n as u32,
                        at: self.at(value.span()),
                    });
                }
                "stop_timeout" => {
                    let r = self.duration(k, value);
                    s.stop_timeout = self.ok_or_record(r);
                }
                "freeze_after" => {
                    let r = self.duration(k, value);
                    s.freeze_after = self.ok_or_record(r).map(|d| Located {
                        value: d,
                        at: self.at(value.span()),
                    });
                }
                // One address belongs to one service.
                "listen" if is_defaults => self.errors.push(self.invalid(
                    k,
                    key.span(),
                    "not allowed in berth.toml, expected it in each services/NAME.toml".to_string(),
                )),
                "listen" => {
                    let r = self.listen(value);
                    s.listen = self.ok_or_record(r);
                }
                "ip_allow" | "ip_deny" => {
                    let r = self.ip_rules(k, value);
                    let list = self.ok_or_record(r).map(|rules| Located {
                        value: rules,
                        at: self.at(key.span()),
                    });
                    if k == "ip_allow" {
                        s.ip_allow = list;
                    } else {
                        s.ip_deny = list;
                    }
                }
                // One allocation for all containers of one supervisor.
                "private_users_range" if !is_defaults => self.errors.push(self.invalid(
                    k,
                    key.span(),
                    "not allowed in a service file, expected it in berth.toml".to_string(),
                )),
                "private_users_range" => {
                    let r = self.uid_range(k, value);
                    s.private_users_range = self.ok_or_record(r);
                }
                "sandbox" => match value.get_ref() {
                    DeValue::Table(table) => self.sandbox(table, &mut s),
                    _ => self
                        .errors
                        .push(self.wrong_type(k, value, "a table [sandbox]")),
                },
                "resources" => match value.get_ref() {
                    DeValue::Table(table) => self.resources(table, &mut s),
                    _ => self
                        .errors
                        .push(self.wrong_type(k, value, "a table [resources]")),
                },
                "slice" => match value.get_ref() {
                    DeValue::Table(table) => self.slice(table, &mut s),
                    _ => self
                        .errors
                        .push(self.wrong_type(k, value, "a table [slice]")),
                },
                _ => self.errors.push(self.unknown_key(key, "", TOP_KEYS)),
            }
        }
        s
    }

    fn sandbox(&mut self, table: &DeTable, s: &mut FileSettings) {
        for (key, value) in table.iter() {
            let k: &str = key.get_ref();
            match k {
                "network" => {
                    let r = self.one_of(
                        k,
                        value,
                        &[("none", Network::None), ("host", Network::Host)],
                    );
                    s.network = self.ok_or_record(r);
                }
                "read_only" => {
                    let r = self.binds(k, value);
                    s.read_only = self.ok_or_record(r);
                }
                "read_write" => {
                    let r = self.binds(k, value);
                    s.read_write = self.ok_or_record(r);
                }
                "propagation" => {
                    let r = self.one_of(
                        k,
                        value,
                        &[
                            ("private", Propagation::Private),
                            ("slave", Propagation::Slave),
                            ("shared", Propagation::Shared),
                        ],
                    );
                    s.propagation = self.ok_or_record(r);
                }
                "tmp_size" => {
                    let r = self.size(k, value);
                    s.tmp_size = self.ok_or_record(r);
                }
                "etc" => {
                    let r = self.etc(value);
                    s.etc = self.ok_or_record(r);
                }
                "capabilities" => {
                    let r = self.capabilities(value);
                    s.capabilities = self.ok_or_record(r);
                }
                "seccomp" => {
                    let r = self.one_of(
                        k,
                        value,
                        &[
                            ("default", Seccomp::Default),
                            ("compat", Seccomp::Compat),
                            ("off", Seccomp::Off),
                        ],
                    );
                    s.seccomp = self.ok_or_record(r);
                }
                "syslog" => match value.get_ref() {
                    DeValue::Boolean(b) => s.syslog = Some(*b),
                    _ => self.errors.push(self.wrong_type(k, value, "true or false")),
                },
                "runtime_directory" => {
                    let r = self.runtime_directory(value);
                    s.runtime_directory = self.ok_or_record(r);
                }
                "state_directory" => match value.get_ref() {
                    DeValue::Boolean(b) => s.state_directory = Some(*b),
                    _ => self.errors.push(self.wrong_type(k, value, "true or false")),
                },
                "credentials" => {
                    let r = self.credentials(value);
                    s.credentials = self.ok_or_record(r);
                }
                "private_users" => match value.get_ref() {
                    DeValue::Boolean(b) => s.private_users = Some(*b),
                    _ => self.errors.push(self.wrong_type(k, value, "true or false")),
                },
                _ => self
                    .errors
                    .push(self.unknown_key(key, "[sandbox]", SANDBOX_KEYS)),
            }
        }
    }

    fn resources(&mut self, table: &DeTable, s: &mut FileSettings) {
        for (key, value) in table.iter() {
            let k: &str = key.get_ref();
            match k {
                "memory_max" => {
                    let r = self.size(k, value);
                    s.memory_max = self.ok_or_record(r);
                }
                "memory_high" => {
                    let r = self.size(k, value);
                    s.memory_high = self.ok_or_record(r);
                }
                "cpu_weight" => {
                    let r = self.integer(k, value, 1, 10000);
                    s.cpu_weight = self.ok_or_record(r).map(|n| n as u64);
                }
                "cpu_quota" => {
                    let r = self.percent(k, value);
                    s.cpu_quota = self.ok_or_record(r);
                }
                "tasks_max" => {
                    let r = self.integer(k, value, 1, i64::MAX);
                    s.tasks_max = self.ok_or_record(r).map(|n| n as u64);
                }
                "io_weight" => {
                    let r = self.integer(k, value, 1, 10000);
                    s.io_weight = self.ok_or_record(r).map(|n| n as u64);
                }
                _ => self
                    .errors
                    .push(self.unknown_key(key, "[resources]", RESOURCES_KEYS)),
            }
        }
    }

    fn slice(&mut self, table: &DeTable, s: &mut FileSettings) {
        for (key, value) in table.iter() {
            let k: &str = key.get_ref();
            match k {
                "memory_max" => {
                    let r = self.size(k, value);
                    s.slice_memory_max = self.ok_or_record(r);
                }
                "tasks_max" => {
                    let r = self.integer(k, value, 1, i64::MAX);
                    s.slice_tasks_max = self.ok_or_record(r).map(|n| n as u64);
                }
                "cpu_quota" => {
                    let r = self.percent(k, value);
                    s.slice_cpu_quota = self.ok_or_record(r);
                }
                "cpu_weight" => {
                    let r = self.integer(k, value, 1, 10000);
                    s.slice_cpu_weight = self.ok_or_record(r).map(|n| n as u64);
                }
                _ => self
                    .errors
                    .push(self.unknown_key(key, "[slice]", SLICE_KEYS)),
            }
        }
    }
}

/// What a value is, for "found ..." in messages.
pub(super) fn describe(value: &DeValue) -> String {
    match value {
        DeValue::String(s) => format!("{s:?}"),
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {f}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("date/time {d}"),
        DeValue::Array(a) if a.is_empty() => "an empty array".to_string(),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::{CredentialFile, Seccomp, Service, load_service_all};

    const BASE: &str = "mode = \"inetd\"\nexec = [\"/bin/x\"]\n";

    fn load(text: &str) -> (tempfile::TempDir, PathBuf, Result<Service, Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.toml");
        std::fs::write(&file, text).unwrap();
        let result = load_service_all(&file, None)
            .map_err(|errors| errors.iter().map(|e| e.to_string()).collect());
        (dir, file, result)
    }

    #[test]
    fn seccomp_modes() {
        for (text, want) in [
            ("default", Seccomp::Default),
            ("compat", Seccomp::Compat),
            ("off", Seccomp::Off),
        ] {
            let (_dir, _, service) = load(&format!("{BASE}[sandbox]\nseccomp = \"{text}\"\n"));
            assert_eq!(service.unwrap().sandbox.seccomp, want);
        }
        let (_dir, _, service) = load(BASE);
        assert_eq!(service.unwrap().sandbox.seccomp, Seccomp::Default);
    }

    #[test]
    fn directories_and_credentials() {
        let (_dir, _, service) = load(BASE);
        let sandbox = service.unwrap().sandbox;
        assert_eq!(sandbox.runtime_directory, "x", "default: the service name");
        assert!(!sandbox.state_directory);
        assert!(sandbox.credentials.is_empty());
        let (_dir, _, service) = load(&format!(
            "{BASE}[sandbox]\nruntime_directory = \"sshd\"\nstate_directory = true\n\
             credentials = [\"tls-key\", \"db:/etc//passwd\"]\n"
        ));
        let sandbox = service.unwrap().sandbox;
        assert_eq!(sandbox.runtime_directory, "sshd");
        assert!(sandbox.state_directory);
        assert_eq!(
            sandbox.credentials,
            [
                CredentialFile {
                    name: "tls-key".into(),
                    source: None
                },
                CredentialFile {
                    name: "db".into(),
                    source: Some("/etc/passwd".into())
                },
            ]
        );
    }

    #[test]
    fn binds_onto_sys_are_rejected() {
        let (_dir, file, service) = load(&format!(
            "{BASE}[sandbox]\nread_only = [\"/usr:/sys\", \"/usr:/sys/fs/cgroup\", \"/usr:/sysroot\"]\n"
        ));
        let errors = service.unwrap_err();
        let file = file.display();
        assert_eq!(
            errors,
            [
                format!(
                    "{file}:4:14: read_only: destination /sys is reserved (/sys stays unmounted in containers), expected another path"
                ),
                format!(
                    "{file}:4:27: read_only: destination /sys/fs/cgroup is reserved (/sys stays unmounted in containers), expected another path"
                ),
            ]
        );
    }

    #[test]
    fn every_syntax_error_is_reported_in_file_order() {
        let (_dir, file, service) = load("a = \"\n[x\n");
        let errors = service.unwrap_err();
        let file = file.display();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("{file}:1:6: invalid TOML: invalid basic string")),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with(&format!("{file}:2:3: invalid TOML: unclosed table")),
            "{errors:?}"
        );
    }

    #[test]
    fn integers_beyond_64_bits_are_reported() {
        let (_dir, file, service) = load(&format!("{BASE}warm = 99999999999999999999\n"));
        assert_eq!(
            service.unwrap_err(),
            [format!(
                "{}:3:8: warm: expected an integer from 0 to 1024, found integer 99999999999999999999",
                file.display()
            )]
        );
    }
}
