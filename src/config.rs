//! Configuration: `berth.toml` (global defaults) and `services/NAME.toml`.
//!
//! A file is parsed into a tree that keeps the span of every key and value,
//! then each key is validated on its own, so that one run reports every
//! problem, each rendered `FILE:LINE:COLUMN: what is wrong, what was expected`.
//! Host facts (users, groups, bind sources, /etc entries) are checked at load
//! time; users and groups are resolved again at each container start by
//! [`resolve_credentials`].

// Errors are built on the cold path only and carry a location each.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// How connections reach the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One container per connection; the connection is fd 0 and 1.
    Inetd,
    /// One container per service; listening sockets passed as LISTEN_FDS.
    Listen,
}

/// A user as written in the configuration: a name or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Name(String),
    Id(u32),
}

/// A group as written in the configuration: a name or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRef {
    Name(String),
    Id(u32),
}

/// A bind mount `SRC[:DST]`; `dest` defaults to `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub dest: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Private network namespace holding only `lo`, up.
    None,
    /// The host's network namespace.
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    Private,
    Slave,
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seccomp {
    Default,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub network: Network,
    /// Extra read-only binds; `/usr` and the merged-/usr links are always there.
    pub read_only: Vec<Bind>,
    pub read_write: Vec<Bind>,
    pub propagation: Propagation,
    /// Size of the private /tmp in bytes.
    pub tmp_size: u64,
    /// Host /etc entries (relative to /etc) bound read-only.
    pub etc: Vec<String>,
    /// Whether `etc` was written explicitly (missing entries are then errors;
    /// missing entries of the default list are skipped).
    pub etc_explicit: bool,
    /// Capabilities kept, normalised to upper case `CAP_*` names.
    pub capabilities: Vec<String>,
    pub seccomp: Seccomp,
    pub syslog: bool,
}

/// `[resources]`: properties of the container's transient scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub cpu_weight: Option<u64>,
    /// Percent of one CPU, e.g. 50 for "50%", 200 for "200%".
    pub cpu_quota: Option<u32>,
    pub tasks_max: Option<u64>,
    pub io_weight: Option<u64>,
}

/// One fully validated service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The file stem.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    pub mode: Mode,
    /// `exec[0]` is an absolute path, resolved inside the container.
    pub exec: Vec<String>,
    pub user: UserRef,
    pub group: Option<GroupRef>,
    pub environment: BTreeMap<String, String>,
    pub working_directory: PathBuf,
    pub hostname: String,
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    pub max_connections: u32,
    pub max_connections_per_source: Option<u32>,
    pub warm: u32,
    pub sandbox: Sandbox,
    pub resources: Resources,
}

/// Numeric credentials a container runs with, resolved from the host's
/// user database when the container starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Where an error is: a file, and for errors inside it a 1-based line and
/// column. Renders as `FILE:LINE:COLUMN` or just `FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based `(line, column)`; `None` for errors about the file as a whole.
    pub position: Option<(usize, usize)>,
}

impl Location {
    fn file(file: &Path) -> Location {
        Location {
            file: file.to_path_buf(),
            position: None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        Ok(())
    }
}

/// A configuration error. Every variant renders as one line,
/// `FILE[:LINE:COLUMN]: what is wrong, what was expected`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A path given to `berth check` (or the configuration directory) does not exist.
    #[error("{at}: no such file or directory")]
    NotFound { at: Location },
    /// A file or directory exists but cannot be read.
    #[error("{at}: cannot read: {error}")]
    Read { at: Location, error: std::io::Error },
    /// The file name of a service file is not `NAME.toml` with a valid NAME.
    #[error("{at}: {message}")]
    BadServiceName { at: Location, message: String },
    /// The file is not valid TOML.
    #[error("{at}: invalid TOML: {message}")]
    Syntax { at: Location, message: String },
    /// A key berth does not know.
    #[error("{at}: unknown key `{key}`{table}, expected one of: {valid}{hint}")]
    UnknownKey {
        at: Location,
        key: String,
        /// `""` for the top level, `" in [sandbox]"` for a table.
        table: String,
        valid: String,
        hint: String,
    },
    /// A value of the wrong TOML type.
    #[error("{at}: {key}: expected {expected}, found {found}")]
    WrongType {
        at: Location,
        key: String,
        expected: String,
        found: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("{at}: {key}: {message}")]
    Invalid {
        at: Location,
        key: String,
        message: String,
    },
    /// A required key is set neither in the service file nor in berth.toml.
    #[error("{at}: missing key `{key}`, expected {expected}")]
    Missing {
        at: Location,
        key: &'static str,
        expected: &'static str,
    },
    /// `exec` in berth.toml.
    #[error("{at}: exec: not allowed in berth.toml, expected it in each services/NAME.toml")]
    ExecInDefaults { at: Location },
    /// A bind mount whose source does not exist on the host.
    #[error("{at}: {key}: bind source {} does not exist", path.display())]
    MissingBindSource {
        at: Location,
        key: String,
        path: PathBuf,
    },
    /// An explicit `etc` entry that does not exist under the host's /etc.
    #[error("{at}: etc: /etc/{entry} does not exist on this host")]
    MissingEtcEntry { at: Location, entry: String },
    /// A user name unknown to the host.
    #[error(
        "{at}: user: no user \"{name}\" on this host, expected an existing user name or a numeric uid"
    )]
    UnknownUser { at: Location, name: String },
    /// A group name unknown to the host.
    #[error(
        "{at}: group: no group \"{name}\" on this host, expected an existing group name or a numeric gid"
    )]
    UnknownGroup { at: Location, name: String },
}

impl ConfigError {
    /// The file (and position) the error is about.
    pub fn location(&self) -> &Location {
        match self {
            ConfigError::NotFound { at }
            | ConfigError::Read { at, .. }
            | ConfigError::BadServiceName { at, .. }
            | ConfigError::Syntax { at, .. }
            | ConfigError::UnknownKey { at, .. }
            | ConfigError::WrongType { at, .. }
            | ConfigError::Invalid { at, .. }
            | ConfigError::Missing { at, .. }
            | ConfigError::ExecInDefaults { at }
            | ConfigError::MissingBindSource { at, .. }
            | ConfigError::MissingEtcEntry { at, .. }
            | ConfigError::UnknownUser { at, .. }
            | ConfigError::UnknownGroup { at, .. } => at,
        }
    }
}

/// Resolving a service's user and group when a container starts.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "user \"{0}\" does not exist on this host (deleted since the configuration was loaded?)"
    )]
    UnknownUser(String),
    #[error(
        "group \"{0}\" does not exist on this host (deleted since the configuration was loaded?)"
    )]
    UnknownGroup(String),
    #[error("cannot look up {what}: {error}")]
    Lookup { what: String, error: nix::Error },
}

// ---------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------

/// The parsed global `berth.toml`: defaults for every service key but `exec`.
/// `[sandbox]` and `[resources]` merge key by key; the service file wins.
/// Other keys (including the `environment` table) are replaced as a whole.
#[derive(Debug, Clone)]
pub struct Defaults {
    file: PathBuf,
    values: Partial,
    /// The file had errors: keys that did not validate are unknown, so
    /// services must not be blamed for "missing" keys.
    incomplete: bool,
}

impl Defaults {
    /// The berth.toml these defaults were read from.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

/// The berth.toml whose defaults apply to `service_file`:
/// `DIR/../berth.toml` for `DIR/NAME.toml`.
pub fn defaults_path_for(service_file: &Path) -> PathBuf {
    let parent = service_file.parent().unwrap_or(Path::new(""));
    parent.join("..").join(DEFAULTS_FILE)
}

/// Reads and validates a global `berth.toml`.
pub fn load_defaults(path: &Path) -> Result<Defaults, ConfigError> {
    let (defaults, mut errors) = defaults_with_errors(path);
    if errors.is_empty() {
        Ok(defaults)
    } else {
        Err(errors.swap_remove(0))
    }
}

/// Reads and validates one service file, returning its first error.
pub fn load_service(path: &Path, defaults: Option<&Defaults>) -> Result<Service, ConfigError> {
    load_service_all(path, defaults).map_err(|mut errors| errors.swap_remove(0))
}

/// Like [`load_service`], but returns every error found in the file.
pub fn load_service_all(
    path: &Path,
    defaults: Option<&Defaults>,
) -> Result<Service, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let service = service_with_errors(path, defaults, &mut errors);
    match service {
        Some(service) if errors.is_empty() => Ok(service),
        _ if !errors.is_empty() => Err(errors),
        // Only with incomplete defaults, which load_defaults never returns.
        _ => Err(vec![ConfigError::Missing {
            at: Location::file(path),
            key: "mode",
            expected: MISSING_MODE,
        }]),
    }
}

/// Loads a configuration directory: the optional `berth.toml` and every
/// `services/*.toml`, sorted by name. Collects the errors of all files.
pub fn load_dir(config_dir: &Path) -> Result<Vec<Service>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut services = Vec::new();
    let mut cache = DefaultsCache::default();
    load_config_dir(config_dir, &mut cache, &mut errors, &mut services);
    if errors.is_empty() {
        Ok(services)
    } else {
        Err(errors)
    }
}

/// `berth check [FILE or DIR]...`: returns the number of files that are
/// valid and the errors of all others.
///
/// No paths: check `config_dir`. A directory holding `services/` or
/// `berth.toml` is a configuration directory; any other directory is checked
/// as a set of service files (`*.toml`). A file named `berth.toml` is checked
/// as defaults; any other file as a service, with the defaults of the
/// `berth.toml` next to its directory (`DIR/../berth.toml`) if there is one.
pub fn check(paths: &[PathBuf], config_dir: &Path) -> (usize, Vec<ConfigError>) {
    let (ok, errors, _) = check_services(paths, config_dir);
    (ok, errors)
}

/// [`check`], also returning the valid services (for `berth check`'s warnings).
pub fn check_services(
    paths: &[PathBuf],
    config_dir: &Path,
) -> (usize, Vec<ConfigError>, Vec<Service>) {
    let mut cache = DefaultsCache::default();
    let mut errors = Vec::new();
    let mut services = Vec::new();

    if paths.is_empty() {
        load_config_dir(config_dir, &mut cache, &mut errors, &mut services);
    }
    for path in paths {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                errors.push(ConfigError::NotFound {
                    at: Location::file(path),
                });
                continue;
            }
            Err(e) => {
                errors.push(ConfigError::Read {
                    at: Location::file(path),
                    error: e,
                });
                continue;
            }
        };
        if meta.is_dir() {
            if path.join(SERVICES_DIR).exists() || path.join(DEFAULTS_FILE).exists() {
                load_config_dir(path, &mut cache, &mut errors, &mut services);
            } else {
                let files = match toml_files(path) {
                    Ok(files) => files,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                let defaults =
                    cache.get(&defaults_path_for(&path.join("x.toml")), false, &mut errors);
                for file in files {
                    if let Some(service) =
                        service_with_errors(&file, defaults.as_ref(), &mut errors)
                    {
                        services.push(service);
                    }
                }
            }
        } else if path.file_name() == Some(DEFAULTS_FILE.as_ref()) {
            cache.get(path, true, &mut errors);
        } else {
            let defaults = cache.get(&defaults_path_for(path), false, &mut errors);
            if let Some(service) = service_with_errors(path, defaults.as_ref(), &mut errors) {
                services.push(service);
            }
        }
    }

    // A service is returned only when its file had no error.
    (services.len() + cache.ok, errors, services)
}

/// Resolves a service's user and group to numeric ids, at container start.
///
/// A user name must exist; a numeric uid without a passwd entry is allowed
/// and then its gid defaults to the same number. The default group is the
/// user's primary group. A group name must exist; a numeric gid is used as is.
pub fn resolve_credentials(
    user: &UserRef,
    group: Option<&GroupRef>,
) -> Result<Credentials, CredentialsError> {
    let (uid, primary_gid) = match user {
        UserRef::Name(name) => match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
            Ok(None) => return Err(CredentialsError::UnknownUser(name.clone())),
            Err(error) => {
                return Err(CredentialsError::Lookup {
                    what: format!("user \"{name}\""),
                    error,
                });
            }
        },
        UserRef::Id(id) => match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*id)) {
            Ok(Some(u)) => (*id, u.gid.as_raw()),
            Ok(None) => (*id, *id),
            Err(error) => {
                return Err(CredentialsError::Lookup {
                    what: format!("uid {id}"),
                    error,
                });
            }
        },
    };
    let gid = match group {
        None => primary_gid,
        Some(GroupRef::Id(id)) => *id,
        Some(GroupRef::Name(name)) => match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => g.gid.as_raw(),
            Ok(None) => return Err(CredentialsError::UnknownGroup(name.clone())),
            Err(error) => {
                return Err(CredentialsError::Lookup {
                    what: format!("group \"{name}\""),
                    error,
                });
            }
        },
    };
    Ok(Credentials { uid, gid })
}

/// Parses a duration: one or more `NUMBER UNIT` pairs such as `"250ms"`,
/// `"30s"`, `"5min"`, `"1h"`, `"2d"`, `"1min30s"` (spaces between parts are
/// allowed). Units: `ms`, `s`, `sec`, `m`, `min`, `h`, `d`. A unit is
/// required. Returns `None` if malformed or too large; zero is returned as is.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim_start();
    if rest.is_empty() {
        return None;
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let letters = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_lowercase())
                .len();
        let unit_ms: u64 = match &rest[..letters] {
            "ms" => 1,
            "s" | "sec" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        rest = rest[letters..].trim_start();
        total_ms = total_ms.checked_add(number.checked_mul(unit_ms)?)?;
    }
    Some(Duration::from_millis(total_ms))
}

/// Parses a size: a number with a unit `K`, `M`, `G` or `T` (powers of 1024),
/// optionally followed by `B`, or a number followed by `B` alone (bytes):
/// `"64K"`, `"256M"`, `"2G"`, `"1T"`, `"512B"`. Returns `None` if malformed
/// or too large; zero is returned as is.
pub fn parse_size(s: &str) -> Option<u64> {
    let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let number: u64 = s[..digits].parse().ok()?;
    let shift = match &s[digits..] {
        "B" => 0,
        "K" | "KB" => 10,
        "M" | "MB" => 20,
        "G" | "GB" => 30,
        "T" | "TB" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

// ---------------------------------------------------------------------------
// Files and directories
// ---------------------------------------------------------------------------

const DEFAULTS_FILE: &str = "berth.toml";
const SERVICES_DIR: &str = "services";

/// berth.toml files loaded once each while checking, with their errors.
#[derive(Default)]
struct DefaultsCache {
    loaded: HashMap<PathBuf, Option<Defaults>>,
    /// Number of berth.toml files without errors.
    ok: usize,
}

impl DefaultsCache {
    /// The defaults at `path`; `None` if the file is absent (an error only
    /// when `required`). Errors are added to `errors` once per file.
    fn get(
        &mut self,
        path: &Path,
        required: bool,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Defaults> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if let Some(d) = self.loaded.get(&key) {
            return d.clone();
        }
        let result = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
            _ => {
                let (defaults, file_errors) = defaults_with_errors(path);
                if file_errors.is_empty() {
                    self.ok += 1;
                }
                errors.extend(file_errors);
                Some(defaults)
            }
        };
        self.loaded.insert(key, result.clone());
        result
    }
}

/// Loads `DIR/berth.toml` (if present) and `DIR/services/*.toml`.
fn load_config_dir(
    dir: &Path,
    cache: &mut DefaultsCache,
    errors: &mut Vec<ConfigError>,
    services: &mut Vec<Service>,
) {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            errors.push(ConfigError::Read {
                at: Location::file(dir),
                error: std::io::Error::other("not a directory"),
            });
            return;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            errors.push(ConfigError::NotFound {
                at: Location::file(dir),
            });
            return;
        }
        Err(e) => {
            errors.push(ConfigError::Read {
                at: Location::file(dir),
                error: e,
            });
            return;
        }
    }
    let defaults = cache.get(&dir.join(DEFAULTS_FILE), false, errors);
    let services_dir = dir.join(SERVICES_DIR);
    if !services_dir.exists() {
        return;
    }
    let files = match toml_files(&services_dir) {
        Ok(files) => files,
        Err(e) => {
            errors.push(e);
            return;
        }
    };
    for file in files {
        if let Some(service) = service_with_errors(&file, defaults.as_ref(), errors) {
            services.push(service);
        }
    }
}

/// The `*.toml` files of a directory, sorted by name.
fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read_error = |error| ConfigError::Read {
        at: Location::file(dir),
        error,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let path = entry.path();
        if path.extension() == Some("toml".as_ref()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            ConfigError::NotFound {
                at: Location::file(path),
            }
        } else {
            ConfigError::Read {
                at: Location::file(path),
                error,
            }
        }
    })
}

/// The service name of a service file, or why the file name is not valid.
fn service_name(path: &Path) -> Result<String, ConfigError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bad = |message: String| ConfigError::BadServiceName {
        at: Location::file(path),
        message,
    };
    let Some(stem) = file_name.strip_suffix(".toml") else {
        return Err(bad(format!(
            "expected a service file named NAME.toml, found {file_name:?}"
        )));
    };
    if !is_valid_service_name(stem) {
        return Err(bad(format!(
            "service name {stem:?} is not valid, expected a file name NAME.toml with NAME matching [a-z0-9][a-z0-9_-]{{0,62}}"
        )));
    }
    Ok(stem.to_string())
}

fn is_valid_service_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn defaults_with_errors(path: &Path) -> (Defaults, Vec<ConfigError>) {
    let mut defaults = Defaults {
        file: path.to_path_buf(),
        values: Partial::default(),
        incomplete: true,
    };
    let text = match read_text(path) {
        Ok(text) => text,
        Err(e) => return (defaults, vec![e]),
    };
    let mut cx = Cx {
        file: path,
        text: &text,
        errors: Vec::new(),
    };
    if let Some(root) = cx.parse() {
        defaults.values = cx.table(root, true);
        defaults.incomplete = !cx.errors.is_empty();
    }
    (defaults, cx.sorted_errors())
}

fn service_with_errors(
    path: &Path,
    defaults: Option<&Defaults>,
    errors: &mut Vec<ConfigError>,
) -> Option<Service> {
    let name = match service_name(path) {
        Ok(name) => Some(name),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let text = match read_text(path) {
        Ok(text) => text,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let mut cx = Cx {
        file: path,
        text: &text,
        errors: Vec::new(),
    };
    let root = cx.parse();
    let service = root.and_then(|root| {
        let values = cx.table(root, false);
        let merged = match defaults {
            Some(d) => values.merge(&d.values),
            None => values,
        };
        let lenient = defaults.is_some_and(|d| d.incomplete);
        cx.finish(name.as_deref(), merged, lenient)
    });
    let ok = cx.errors.is_empty();
    errors.extend(cx.sorted_errors());
    if ok && name.is_some() { service } else { None }
}

// ---------------------------------------------------------------------------
// A spanned TOML tree
// ---------------------------------------------------------------------------

type Span = Range<usize>;

/// A TOML value with the spans of every nested key and value, so that each
/// error can point at the offending text and all errors can be collected.
#[derive(Debug, Clone)]
enum Node {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Item>),
    Table(Vec<(Key, Item)>),
}

#[derive(Debug, Clone)]
struct Item {
    span: Option<Span>,
    node: Node,
}

#[derive(Debug, Clone)]
struct Key {
    name: String,
    span: Option<Span>,
}

impl<'de> serde::Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<Node>::deserialize(d)?;
        Ok(Item {
            span: Some(spanned.span()),
            node: spanned.into_inner(),
        })
    }
}

// The names toml's deserializer recognises to hand out a span (the protocol
// behind `toml::Spanned`). A key is asked for a span this way but also
// accepts a plain string: the keys of toml's internal datetime maps have none.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const DATETIME_FIELD: &str = "$__toml_private_datetime";

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key {
                    name: v.to_string(),
                    span: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
                let (mut start, mut end, mut name) = (None, None, None);
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        SPANNED_START => start = Some(map.next_value::<usize>()?),
                        SPANNED_END => end = Some(map.next_value::<usize>()?),
                        SPANNED_VALUE => name = Some(map.next_value::<String>()?),
                        _ => return Err(serde::de::Error::custom("unexpected key structure")),
                    }
                }
                let name = name.ok_or_else(|| serde::de::Error::missing_field("value"))?;
                let span = match (start, end) {
                    (Some(s), Some(e)) => Some(s..e),
                    _ => None,
                };
                Ok(Key { name, span })
            }
        }
        d.deserialize_struct(
            SPANNED_NAME,
            &[SPANNED_START, SPANNED_END, SPANNED_VALUE],
            KeyVisitor,
        )
    }
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> serde::de::Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a TOML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Node, E> {
                i64::try_from(v)
                    .map(Node::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Item>()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Key>()? {
                    if key.span.is_none() && key.name == DATETIME_FIELD {
                        return Ok(Node::Datetime(map.next_value::<String>()?));
                    }
                    let item = map.next_value::<Item>()?;
                    entries.push((key, item));
                }
                Ok(Node::Table(entries))
            }
        }
        d.deserialize_any(NodeVisitor)
    }
}

/// What a value is, for "found ..." in messages.
fn describe(node: &Node) -> String {
    match node {
        Node::Str(s) => format!("{s:?}"),
        Node::Int(i) => format!("integer {i}"),
        Node::Float(f) => format!("float {f}"),
        Node::Bool(b) => format!("boolean {b}"),
        Node::Datetime(d) => format!("date/time {d}"),
        Node::Array(a) if a.is_empty() => "an empty array".to_string(),
        Node::Array(_) => "an array".to_string(),
        Node::Table(_) => "a table".to_string(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

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
    "warm",
    "sandbox",
    "resources",
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
];
const RESOURCES_KEYS: &[&str] = &[
    "memory_max",
    "memory_high",
    "cpu_weight",
    "cpu_quota",
    "tasks_max",
    "io_weight",
];
const RESERVED_ENV: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "BERTH_SERVICE",
    "NOTIFY_SOCKET",
];
const DEFAULT_ETC: &[&str] = &["passwd", "group", "nsswitch.conf", "hosts", "localtime"];
const MISSING_MODE: &str =
    "mode = \"inetd\" or mode = \"listen\" (in the service file or berth.toml)";
const DEFAULT_TMP_SIZE: u64 = 64 << 20;
const DEFAULT_MAX_CONNECTIONS: u32 = 64;

const EXPECT_DURATION: &str = "a duration such as \"250ms\", \"30s\", \"5min\" or \"1h\"";
const EXPECT_SIZE: &str =
    "a size such as \"64K\", \"256M\" or \"2G\" (or an integer number of bytes)";

/// A value and where it was written.
#[derive(Debug, Clone)]
struct Val<T> {
    v: T,
    at: Location,
}

/// The keys one file sets, each validated on its own. A service is a
/// service file's `Partial` merged over berth.toml's.
#[derive(Debug, Clone, Default)]
struct Partial {
    /// Keys present, valid or not (to tell "missing" from "invalid").
    seen: BTreeSet<&'static str>,
    mode: Option<Val<Mode>>,
    exec: Option<Vec<String>>,
    user: Option<UserRef>,
    group: Option<Option<GroupRef>>,
    environment: Option<BTreeMap<String, String>>,
    working_directory: Option<PathBuf>,
    hostname: Option<String>,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    max_connections: Option<u32>,
    max_connections_per_source: Option<u32>,
    warm: Option<Val<u32>>,
    network: Option<Network>,
    read_only: Option<Vec<Bind>>,
    read_write: Option<Vec<Bind>>,
    propagation: Option<Propagation>,
    tmp_size: Option<u64>,
    etc: Option<Vec<String>>,
    capabilities: Option<Vec<String>>,
    seccomp: Option<Seccomp>,
    syslog: Option<bool>,
    memory_max: Option<u64>,
    memory_high: Option<u64>,
    cpu_weight: Option<u64>,
    cpu_quota: Option<u32>,
    tasks_max: Option<u64>,
    io_weight: Option<u64>,
}

impl Partial {
    /// `self` (the service file) over `d` (berth.toml), key by key.
    fn merge(self, d: &Partial) -> Partial {
        macro_rules! pick {
            ($($f:ident),*) => {
                Partial {
                    seen: self.seen.union(&d.seen).copied().collect(),
                    $($f: self.$f.or_else(|| d.$f.clone()),)*
                }
            };
        }
        pick!(
            mode,
            exec,
            user,
            group,
            environment,
            working_directory,
            hostname,
            idle_timeout,
            max_lifetime,
            max_connections,
            max_connections_per_source,
            warm,
            network,
            read_only,
            read_write,
            propagation,
            tmp_size,
            etc,
            capabilities,
            seccomp,
            syslog,
            memory_max,
            memory_high,
            cpu_weight,
            cpu_quota,
            tasks_max,
            io_weight
        )
    }
}

/// Validation context for one file: turns spans into locations and
/// collects errors.
struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

type R<T> = Result<T, ConfigError>;

impl Cx<'_> {
    /// The errors in the order of the file (file-level ones first).
    fn sorted_errors(self) -> Vec<ConfigError> {
        let mut errors = self.errors;
        errors.sort_by_key(|e| e.location().position);
        errors
    }

    fn at(&self, span: Option<&Span>) -> Location {
        Location {
            file: self.file.to_path_buf(),
            position: span.map(|s| line_col(self.text, s.start)),
        }
    }

    fn wrong_type(&self, key: &str, item: &Item, expected: &str) -> ConfigError {
        ConfigError::WrongType {
            at: self.at(item.span.as_ref()),
            key: key.to_string(),
            expected: expected.to_string(),
            found: describe(&item.node),
        }
    }

    fn invalid(&self, key: &str, item: &Item, message: String) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(item.span.as_ref()),
            key: key.to_string(),
            message,
        }
    }

    /// "expected X, found <the value>" for a value of the right type.
    fn bad_value(&self, key: &str, item: &Item, expected: &str) -> ConfigError {
        self.invalid(
            key,
            item,
            format!("expected {expected}, found {}", describe(&item.node)),
        )
    }

    /// Parses the file into a spanned tree; a syntax error is recorded.
    fn parse(&mut self) -> Option<Vec<(Key, Item)>> {
        match toml::from_str::<Node>(self.text) {
            Ok(Node::Table(entries)) => Some(entries),
            Ok(_) => None,
            Err(e) => {
                let message = e
                    .message()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.errors.push(ConfigError::Syntax {
                    at: self.at(e.span().as_ref()),
                    message,
                });
                None
            }
        }
    }

    fn unknown_key(&self, key: &Key, item: &Item, table: &str, valid: &[&str]) -> ConfigError {
        let mut hint = String::new();
        if table.is_empty() {
            if SANDBOX_KEYS.contains(&key.name.as_str()) {
                hint = format!(" (`{}` belongs in [sandbox])", key.name);
            } else if RESOURCES_KEYS.contains(&key.name.as_str()) {
                hint = format!(" (`{}` belongs in [resources])", key.name);
            }
        }
        let close = valid
            .iter()
            .find(|v| edit_distance(v, &key.name) <= 2 || v.eq_ignore_ascii_case(&key.name));
        if let (true, Some(close)) = (hint.is_empty(), close) {
            hint = format!(" (did you mean `{close}`?)");
        }
        ConfigError::UnknownKey {
            at: self.at(key.span.as_ref().or(item.span.as_ref())),
            key: key.name.clone(),
            table: if table.is_empty() {
                String::new()
            } else {
                format!(" in {table}")
            },
            valid: valid.join(", "),
            hint,
        }
    }

    /// Stores `result` or records its error.
    fn keep<T>(&mut self, result: R<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    /// Validates the top level of a file.
    fn table(&mut self, root: Vec<(Key, Item)>, is_defaults: bool) -> Partial {
        let mut p = Partial::default();
        for (key, item) in &root {
            let k = key.name.as_str();
            if let Some(&known) = TOP_KEYS.iter().find(|&&t| t == k) {
                p.seen.insert(known);
            }
            match k {
                "mode" => {
                    let r =
                        self.one_of(k, item, &[("inetd", Mode::Inetd), ("listen", Mode::Listen)]);
                    p.mode = self.keep(r).map(|v| Val {
                        v,
                        at: self.at(item.span.as_ref()),
                    });
                }
                "exec" if is_defaults => self.errors.push(ConfigError::ExecInDefaults {
                    at: self.at(key.span.as_ref().or(item.span.as_ref())),
                }),
                "exec" => {
                    let r = self.exec(item);
                    p.exec = self.keep(r);
                }
                "user" => {
                    let r = self.user(item);
                    p.user = self.keep(r);
                }
                "group" => {
                    let r = self.group(item);
                    p.group = self.keep(r);
                }
                "environment" => {
                    let r = self.environment(item);
                    p.environment = self.keep(r);
                }
                "working_directory" => {
                    let r = self.absolute_path(k, item);
                    p.working_directory = self.keep(r);
                }
                "hostname" => {
                    let r = self.hostname(item);
                    p.hostname = self.keep(r);
                }
                "idle_timeout" => {
                    let r = self.duration(k, item);
                    p.idle_timeout = self.keep(r);
                }
                "max_lifetime" => {
                    let r = self.duration(k, item);
                    p.max_lifetime = self.keep(r);
                }
                "max_connections" => {
                    let r = self.integer(k, item, 1, 65536);
                    p.max_connections = self.keep(r).map(|v| v as u32);
                }
                "max_connections_per_source" => {
                    let r = self.integer(k, item, 1, u32::MAX as i64);
                    p.max_connections_per_source = self.keep(r).map(|v| v as u32);
                }
                "warm" => {
                    let r = self.integer(k, item, 0, 1024);
                    p.warm = self.keep(r).map(|v| Val {
                        v: v as u32,
                        at: self.at(item.span.as_ref()),
                    });
                }
                "sandbox" => match &item.node {
                    Node::Table(entries) => self.sandbox(entries, &mut p),
                    _ => self
                        .errors
                        .push(self.wrong_type(k, item, "a table [sandbox]")),
                },
                "resources" => match &item.node {
                    Node::Table(entries) => self.resources(entries, &mut p),
                    _ => self
                        .errors
                        .push(self.wrong_type(k, item, "a table [resources]")),
                },
                _ => self.errors.push(self.unknown_key(key, item, "", TOP_KEYS)),
            }
        }
        p
    }

    fn sandbox(&mut self, entries: &[(Key, Item)], p: &mut Partial) {
        for (key, item) in entries {
            let k = key.name.as_str();
            match k {
                "network" => {
                    let r =
                        self.one_of(k, item, &[("none", Network::None), ("host", Network::Host)]);
                    p.network = self.keep(r);
                }
                "read_only" => {
                    let r = self.binds(k, item);
                    p.read_only = self.keep(r);
                }
                "read_write" => {
                    let r = self.binds(k, item);
                    p.read_write = self.keep(r);
                }
                "propagation" => {
                    let r = self.one_of(
                        k,
                        item,
                        &[
                            ("private", Propagation::Private),
                            ("slave", Propagation::Slave),
                            ("shared", Propagation::Shared),
                        ],
                    );
                    p.propagation = self.keep(r);
                }
                "tmp_size" => {
                    let r = self.size(k, item);
                    p.tmp_size = self.keep(r);
                }
                "etc" => {
                    let r = self.etc(item);
                    p.etc = self.keep(r);
                }
                "capabilities" => {
                    let r = self.capabilities(item);
                    p.capabilities = self.keep(r);
                }
                "seccomp" => {
                    let r = self.one_of(
                        k,
                        item,
                        &[("default", Seccomp::Default), ("off", Seccomp::Off)],
                    );
                    p.seccomp = self.keep(r);
                }
                "syslog" => match item.node {
                    Node::Bool(b) => p.syslog = Some(b),
                    _ => self.errors.push(self.wrong_type(k, item, "true or false")),
                },
                _ => self
                    .errors
                    .push(self.unknown_key(key, item, "[sandbox]", SANDBOX_KEYS)),
            }
        }
    }

    fn resources(&mut self, entries: &[(Key, Item)], p: &mut Partial) {
        for (key, item) in entries {
            let k = key.name.as_str();
            match k {
                "memory_max" => {
                    let r = self.size(k, item);
                    p.memory_max = self.keep(r);
                }
                "memory_high" => {
                    let r = self.size(k, item);
                    p.memory_high = self.keep(r);
                }
                "cpu_weight" => {
                    let r = self.integer(k, item, 1, 10000);
                    p.cpu_weight = self.keep(r).map(|v| v as u64);
                }
                "cpu_quota" => {
                    let r = self.percent(k, item);
                    p.cpu_quota = self.keep(r);
                }
                "tasks_max" => {
                    let r = self.integer(k, item, 1, i64::MAX);
                    p.tasks_max = self.keep(r).map(|v| v as u64);
                }
                "io_weight" => {
                    let r = self.integer(k, item, 1, 10000);
                    p.io_weight = self.keep(r).map(|v| v as u64);
                }
                _ => self
                    .errors
                    .push(self.unknown_key(key, item, "[resources]", RESOURCES_KEYS)),
            }
        }
    }

    /// Builds the service from the merged keys; checks what needs all of them.
    fn finish(&mut self, name: Option<&str>, p: Partial, lenient: bool) -> Option<Service> {
        let file_at = Location::file(self.file);
        if p.mode.is_none() && !p.seen.contains("mode") && !lenient {
            self.errors.push(ConfigError::Missing {
                at: file_at.clone(),
                key: "mode",
                expected: MISSING_MODE,
            });
        }
        if p.exec.is_none() && !p.seen.contains("exec") {
            self.errors.push(ConfigError::Missing {
                at: file_at.clone(),
                key: "exec",
                expected: "the command to run, such as exec = [\"/usr/bin/app\", \"--flag\"]",
            });
        }
        match (&p.mode, &p.warm) {
            (Some(mode), Some(warm)) if mode.v == Mode::Listen && warm.v > 1 => {
                // Point at whichever of the two the service file itself sets.
                let at = if warm.at.file == self.file || mode.at.file != self.file {
                    warm.at.clone()
                } else {
                    mode.at.clone()
                };
                self.errors.push(ConfigError::Invalid {
                    at,
                    key: "warm".to_string(),
                    message: format!(
                        "expected 0 or 1 with mode = \"listen\" (one container serves all connections; 1 keeps the next one prepared), found {}",
                        warm.v
                    ),
                });
            }
            _ => {}
        }
        let name = name?;
        let (Some(mode), Some(exec)) = (p.mode, p.exec) else {
            return None;
        };
        let etc_explicit = p.etc.is_some();
        Some(Service {
            name: name.to_string(),
            file: self.file.to_path_buf(),
            mode: mode.v,
            exec,
            user: p
                .user
                .unwrap_or_else(|| UserRef::Name("nobody".to_string())),
            group: p.group.flatten(),
            environment: p.environment.unwrap_or_default(),
            working_directory: p.working_directory.unwrap_or_else(|| PathBuf::from("/")),
            hostname: p.hostname.unwrap_or_else(|| name.replace('_', "-")),
            idle_timeout: p.idle_timeout,
            max_lifetime: p.max_lifetime,
            max_connections: p.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_connections_per_source: p.max_connections_per_source,
            warm: p.warm.map_or(0, |w| w.v),
            sandbox: Sandbox {
                network: p.network.unwrap_or(Network::None),
                read_only: p.read_only.unwrap_or_default(),
                read_write: p.read_write.unwrap_or_default(),
                propagation: p.propagation.unwrap_or(Propagation::Private),
                tmp_size: p.tmp_size.unwrap_or(DEFAULT_TMP_SIZE),
                etc: p
                    .etc
                    .unwrap_or_else(|| DEFAULT_ETC.iter().map(|s| s.to_string()).collect()),
                etc_explicit,
                capabilities: p.capabilities.unwrap_or_default(),
                seccomp: p.seccomp.unwrap_or(Seccomp::Default),
                syslog: p.syslog.unwrap_or(true),
            },
            resources: Resources {
                memory_max: p.memory_max,
                memory_high: p.memory_high,
                cpu_weight: p.cpu_weight,
                cpu_quota: p.cpu_quota,
                tasks_max: p.tasks_max,
                io_weight: p.io_weight,
            },
        })
    }

    // --- single values -----------------------------------------------------

    fn string<'i>(&self, key: &str, item: &'i Item, expected: &str) -> R<&'i str> {
        match &item.node {
            Node::Str(s) if s.contains('\0') => Err(self.invalid(
                key,
                item,
                format!("expected {expected} without NUL characters"),
            )),
            Node::Str(s) => Ok(s),
            _ => Err(self.wrong_type(key, item, expected)),
        }
    }

    fn array<'i>(&self, key: &str, item: &'i Item, expected: &str) -> R<&'i [Item]> {
        match &item.node {
            Node::Array(items) => Ok(items),
            _ => Err(self.wrong_type(key, item, expected)),
        }
    }

    fn one_of<T: Copy>(&self, key: &str, item: &Item, choices: &[(&str, T)]) -> R<T> {
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        let expected = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        let s = self.string(key, item, &expected)?;
        choices
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| self.bad_value(key, item, &expected))
    }

    fn integer(&self, key: &str, item: &Item, min: i64, max: i64) -> R<i64> {
        let expected = if max == i64::MAX || max == u32::MAX as i64 {
            format!("an integer of at least {min}")
        } else {
            format!("an integer from {min} to {max}")
        };
        match item.node {
            Node::Int(i) if (min..=max).contains(&i) => Ok(i),
            Node::Int(_) => Err(self.bad_value(key, item, &expected)),
            _ => Err(self.wrong_type(key, item, &expected)),
        }
    }

    fn duration(&self, key: &str, item: &Item) -> R<Duration> {
        let s = self.string(key, item, EXPECT_DURATION)?;
        match parse_duration(s) {
            Some(d) if d.is_zero() => {
                Err(self.bad_value(key, item, "a duration greater than zero"))
            }
            Some(d) => Ok(d),
            None => Err(self.bad_value(key, item, EXPECT_DURATION)),
        }
    }

    fn size(&self, key: &str, item: &Item) -> R<u64> {
        let bytes = match &item.node {
            Node::Int(i) if *i > 0 => return Ok(*i as u64),
            Node::Int(_) => return Err(self.bad_value(key, item, "a size greater than zero")),
            Node::Str(_) => parse_size(self.string(key, item, EXPECT_SIZE)?),
            _ => return Err(self.wrong_type(key, item, EXPECT_SIZE)),
        };
        match bytes {
            Some(0) => Err(self.bad_value(key, item, "a size greater than zero")),
            Some(b) => Ok(b),
            None => Err(self.bad_value(key, item, EXPECT_SIZE)),
        }
    }

    fn percent(&self, key: &str, item: &Item) -> R<u32> {
        const EXPECTED: &str = "a percentage of one CPU such as \"50%\" or \"200%\"";
        let s = self.string(key, item, EXPECTED)?;
        match s.strip_suffix('%').and_then(|n| {
            if n.bytes().all(|b| b.is_ascii_digit()) {
                n.parse::<u32>().ok()
            } else {
                None
            }
        }) {
            Some(0) => Err(self.bad_value(key, item, "a percentage of at least \"1%\"")),
            Some(n) => Ok(n),
            None => Err(self.bad_value(key, item, EXPECTED)),
        }
    }

    fn absolute_path(&self, key: &str, item: &Item) -> R<PathBuf> {
        const EXPECTED: &str = "an absolute path";
        let s = self.string(key, item, EXPECTED)?;
        if !s.starts_with('/') {
            return Err(self.bad_value(key, item, EXPECTED));
        }
        if s.split('/').any(|c| c == "..") {
            return Err(self.bad_value(key, item, "an absolute path without \"..\""));
        }
        Ok(normalize(s))
    }

    fn exec(&self, item: &Item) -> R<Vec<String>> {
        const EXPECTED: &str =
            "a non-empty array of strings such as [\"/usr/bin/app\", \"--flag\"]";
        let items = self.array("exec", item, EXPECTED)?;
        if items.is_empty() {
            return Err(self.bad_value("exec", item, EXPECTED));
        }
        let mut argv = Vec::with_capacity(items.len());
        for (i, arg) in items.iter().enumerate() {
            argv.push(
                self.string(&format!("exec[{i}]"), arg, "a string")?
                    .to_string(),
            );
        }
        if !argv[0].starts_with('/') {
            return Err(self.bad_value(
                "exec[0]",
                &items[0],
                "an absolute path to the program (it is resolved inside the container)",
            ));
        }
        Ok(argv)
    }

    fn user(&self, item: &Item) -> R<UserRef> {
        const EXPECTED: &str = "a user name or a numeric uid";
        match &item.node {
            Node::Int(i) if (0..u32::MAX as i64).contains(i) => Ok(UserRef::Id(*i as u32)),
            Node::Int(_) => Err(self.bad_value("user", item, "a uid from 0 to 4294967294")),
            Node::Str(_) => {
                let name = self.string("user", item, EXPECTED)?;
                if name.is_empty() {
                    return Err(self.bad_value("user", item, EXPECTED));
                }
                if let Some(id) = name.parse::<u32>().ok().filter(|&id| id != u32::MAX) {
                    return Ok(UserRef::Id(id));
                }
                match nix::unistd::User::from_name(name) {
                    Ok(Some(_)) => Ok(UserRef::Name(name.to_string())),
                    Ok(None) => Err(ConfigError::UnknownUser {
                        at: self.at(item.span.as_ref()),
                        name: name.to_string(),
                    }),
                    Err(e) => Err(self.invalid(
                        "user",
                        item,
                        format!("cannot look up user {name:?}: {e}"),
                    )),
                }
            }
            _ => Err(self.wrong_type("user", item, EXPECTED)),
        }
    }

    fn group(&self, item: &Item) -> R<Option<GroupRef>> {
        const EXPECTED: &str = "a group name, a numeric gid or \"\" for the user's primary group";
        match &item.node {
            Node::Int(i) if (0..u32::MAX as i64).contains(i) => Ok(Some(GroupRef::Id(*i as u32))),
            Node::Int(_) => Err(self.bad_value("group", item, "a gid from 0 to 4294967294")),
            Node::Str(_) => {
                let name = self.string("group", item, EXPECTED)?;
                if name.is_empty() {
                    return Ok(None);
                }
                if let Some(id) = name.parse::<u32>().ok().filter(|&id| id != u32::MAX) {
                    return Ok(Some(GroupRef::Id(id)));
                }
                match nix::unistd::Group::from_name(name) {
                    Ok(Some(_)) => Ok(Some(GroupRef::Name(name.to_string()))),
                    Ok(None) => Err(ConfigError::UnknownGroup {
                        at: self.at(item.span.as_ref()),
                        name: name.to_string(),
                    }),
                    Err(e) => Err(self.invalid(
                        "group",
                        item,
                        format!("cannot look up group {name:?}: {e}"),
                    )),
                }
            }
            _ => Err(self.wrong_type("group", item, EXPECTED)),
        }
    }

    fn environment(&mut self, item: &Item) -> R<BTreeMap<String, String>> {
        const EXPECTED: &str = "a table of strings such as { LANG = \"C.UTF-8\" }";
        let Node::Table(entries) = &item.node else {
            return Err(self.wrong_type("environment", item, EXPECTED));
        };
        let mut env = BTreeMap::new();
        let mut first_error = None;
        for (key, value) in entries {
            let key_item = Item {
                span: key.span.clone().or_else(|| value.span.clone()),
                node: Node::Str(key.name.clone()),
            };
            let r = if !is_env_name(&key.name) {
                Err(self.bad_value(
                    "environment",
                    &key_item,
                    "a variable name matching [A-Za-z_][A-Za-z0-9_]*",
                ))
            } else if RESERVED_ENV.contains(&key.name.as_str()) {
                Err(self.invalid(
                    "environment",
                    &key_item,
                    format!(
                        "{} is set by berth and cannot be configured, expected another variable name",
                        key.name
                    ),
                ))
            } else {
                self.string(&format!("environment.{}", key.name), value, "a string")
            };
            match r {
                Ok(v) => {
                    env.insert(key.name.clone(), v.to_string());
                }
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(e) => self.errors.push(e),
            }
        }
        match first_error {
            None => Ok(env),
            Some(e) => Err(e),
        }
    }

    fn hostname(&self, item: &Item) -> R<String> {
        const EXPECTED: &str = "a host name of 1 to 64 letters, digits, \"-\" and \".\"";
        let s = self.string("hostname", item, EXPECTED)?;
        let valid = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !s.starts_with(['-', '.'])
            && !s.contains("..");
        if valid {
            Ok(s.to_string())
        } else {
            Err(self.bad_value("hostname", item, EXPECTED))
        }
    }

    fn binds(&mut self, key: &str, item: &Item) -> R<Vec<Bind>> {
        const EXPECTED: &str =
            "an array of \"SRC[:DST]\" absolute paths such as [\"/srv/data:/data\"]";
        let items = self.array(key, item, EXPECTED)?;
        let mut binds = Vec::new();
        let mut first_error = None;
        for entry in items {
            match self.bind(key, entry) {
                Ok(b) => binds.push(b),
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(e) => self.errors.push(e),
            }
        }
        match first_error {
            None => Ok(binds),
            Some(e) => Err(e),
        }
    }

    fn bind(&self, key: &str, item: &Item) -> R<Bind> {
        const EXPECTED: &str = "\"SRC[:DST]\" with absolute paths";
        let s = self.string(key, item, EXPECTED)?;
        let (src, dst) = s.split_once(':').unwrap_or((s, s));
        if !src.starts_with('/') || !dst.starts_with('/') {
            return Err(self.bad_value(key, item, EXPECTED));
        }
        if s.split([':', '/']).any(|c| c == "..") {
            return Err(self.bad_value(key, item, "\"SRC[:DST]\" without \"..\" in the paths"));
        }
        let source = normalize(src);
        let dest = normalize(dst);
        if dest == Path::new("/") || dest.starts_with("/proc") || dest.starts_with("/dev") {
            return Err(self.invalid(
                key,
                item,
                format!(
                    "destination {} is reserved (berth mounts /, /proc and /dev itself), expected another path",
                    dest.display()
                ),
            ));
        }
        // /sys stays unmounted in a container (SPEC): nothing may appear there.
        if dest.starts_with("/sys") {
            return Err(self.invalid(
                key,
                item,
                format!(
                    "destination {} is refused (/sys stays unmounted in a container), expected another path",
                    dest.display()
                ),
            ));
        }
        match std::fs::metadata(&source) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::MissingBindSource {
                    at: self.at(item.span.as_ref()),
                    key: key.to_string(),
                    path: source,
                });
            }
            Err(e) => {
                return Err(self.invalid(
                    key,
                    item,
                    format!("cannot access bind source {}: {e}", source.display()),
                ));
            }
        }
        Ok(Bind { source, dest })
    }

    fn etc(&mut self, item: &Item) -> R<Vec<String>> {
        const EXPECTED: &str =
            "an array of names relative to /etc such as [\"passwd\", \"ssl/certs\"]";
        let items = self.array("etc", item, EXPECTED)?;
        let mut names = Vec::new();
        let mut first_error = None;
        for entry in items {
            let r = self
                .string("etc", entry, "a name relative to /etc")
                .and_then(|name| {
                    if name.is_empty()
                        || name.starts_with('/')
                        || name.split('/').any(|c| c == ".." || c == ".")
                    {
                        return Err(self.bad_value(
                            "etc",
                            entry,
                            "a name relative to /etc such as \"passwd\" or \"ssl/certs\"",
                        ));
                    }
                    let host = Path::new("/etc").join(name);
                    match std::fs::metadata(&host) {
                        Ok(_) => Ok(name.trim_end_matches('/').to_string()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            Err(ConfigError::MissingEtcEntry {
                                at: self.at(entry.span.as_ref()),
                                entry: name.to_string(),
                            })
                        }
                        Err(e) => Err(self.invalid(
                            "etc",
                            entry,
                            format!("cannot access /etc/{name}: {e}"),
                        )),
                    }
                });
            match r {
                Ok(n) => names.push(n),
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(e) => self.errors.push(e),
            }
        }
        match first_error {
            None => Ok(names),
            Some(e) => Err(e),
        }
    }

    fn capabilities(&mut self, item: &Item) -> R<Vec<String>> {
        const EXPECTED: &str = "an array of capability names such as [\"CAP_NET_BIND_SERVICE\"]";
        let items = self.array("capabilities", item, EXPECTED)?;
        let mut caps_out: Vec<String> = Vec::new();
        let mut first_error = None;
        for entry in items {
            let r = self
                .string("capabilities", entry, "a capability name such as \"CAP_NET_BIND_SERVICE\"")
                .and_then(|name| {
                    normalize_capability(name).ok_or_else(|| {
                        self.invalid(
                            "capabilities",
                            entry,
                            format!(
                                "unknown capability {name:?}, expected a name such as \"CAP_NET_BIND_SERVICE\" or \"net_bind_service\""
                            ),
                        )
                    })
                });
            match r {
                Ok(c) if !caps_out.contains(&c) => caps_out.push(c),
                Ok(_) => {}
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(e) => self.errors.push(e),
            }
        }
        match first_error {
            None => Ok(caps_out),
            Some(e) => Err(e),
        }
    }
}

/// `"net_bind_service"`, `"CAP_NET_BIND_SERVICE"`, `"cap_net_bind_service"`
/// → `"CAP_NET_BIND_SERVICE"`, if the `caps` crate knows it.
fn normalize_capability(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    caps::Capability::from_str(&full)
        .ok()
        .map(|c| c.to_string())
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An absolute path without empty or `.` components or a trailing slash.
fn normalize(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        if let Component::Normal(c) = c {
            out.push(c);
        }
    }
    out
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), ms(250));
        assert_eq!(parse_duration("30s"), ms(30_000));
        assert_eq!(parse_duration("10sec"), ms(10_000));
        assert_eq!(parse_duration("5min"), ms(300_000));
        assert_eq!(parse_duration("5m"), ms(300_000));
        assert_eq!(parse_duration("1h"), ms(3_600_000));
        assert_eq!(parse_duration("2d"), ms(172_800_000));
        assert_eq!(parse_duration("1min30s"), ms(90_000));
        assert_eq!(parse_duration("1h 1min 1s 1ms"), ms(3_661_001));
        assert_eq!(parse_duration("5 min"), ms(300_000));
        assert_eq!(parse_duration("0s"), ms(0));
    }

    #[test]
    fn malformed_durations() {
        for bad in [
            "",
            " ",
            "30",
            "5 minutes",
            "-5s",
            "+5s",
            "1.5h",
            "s",
            "5S",
            "5s x",
            "5s5",
            "1w",
            "99999999999999999999d",
            "999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("64KB"), Some(64 << 10));
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("2GB"), Some(2 << 30));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("512B"), Some(512));
        assert_eq!(parse_size("0M"), Some(0));
    }

    #[test]
    fn malformed_sizes() {
        for bad in [
            "",
            "64",
            "K",
            "64k",
            "64 M",
            "64MiB",
            "-1K",
            "1.5G",
            "64KBB",
            "1P",
            "99999999999T",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn line_and_column_are_one_based_in_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(line_col(text, text.find('"').unwrap()), (2, 6));
        assert_eq!(line_col(text, 1000), (3, 1));
    }

    #[test]
    fn service_names() {
        assert!(is_valid_service_name("ssh"));
        assert!(is_valid_service_name("0web_2-x"));
        assert!(is_valid_service_name(&"a".repeat(63)));
        assert!(!is_valid_service_name(&"a".repeat(64)));
        for bad in ["", "_a", "-a", "Web", "a.b", "a b", "é"] {
            assert!(!is_valid_service_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn capability_names_are_normalised() {
        let want = Some("CAP_NET_BIND_SERVICE".to_string());
        assert_eq!(normalize_capability("CAP_NET_BIND_SERVICE"), want);
        assert_eq!(normalize_capability("net_bind_service"), want);
        assert_eq!(normalize_capability("Cap_Net_Bind_Service"), want);
        assert_eq!(normalize_capability("fly"), None);
        assert_eq!(normalize_capability(""), None);
    }

    #[test]
    fn locations_render_with_and_without_position() {
        let at = Location {
            file: PathBuf::from("/etc/berth/services/ssh.toml"),
            position: Some((7, 16)),
        };
        assert_eq!(at.to_string(), "/etc/berth/services/ssh.toml:7:16");
        assert_eq!(Location::file(Path::new("/x.toml")).to_string(), "/x.toml");
    }

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn load_service_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let d = write(
            dir.path(),
            "berth.toml",
            "mode = \"inetd\"\nenvironment = { A = \"1\" }\n[sandbox]\ncapabilities = [\"chown\"]\n",
        );
        let s = write(
            dir.path(),
            "services/my_app.toml",
            "exec = [\"/bin/app\"]\n[sandbox]\nnetwork = \"host\"\n",
        );
        let defaults = load_defaults(&d).unwrap();
        assert_eq!(defaults.file(), d);
        assert_eq!(
            defaults_path_for(&s),
            dir.path().join("services/../berth.toml")
        );
        let service = load_service(&s, Some(&defaults)).unwrap();
        assert_eq!(service.name, "my_app");
        assert_eq!(service.hostname, "my-app");
        assert_eq!(service.mode, Mode::Inetd);
        assert_eq!(service.environment.get("A").map(String::as_str), Some("1"));
        assert_eq!(service.sandbox.network, Network::Host);
        assert_eq!(service.sandbox.capabilities, ["CAP_CHOWN"]);
        assert_eq!(service.sandbox.etc, DEFAULT_ETC);
        let err = load_service(&s, None).unwrap_err();
        assert!(
            matches!(err, ConfigError::Missing { key: "mode", .. }),
            "{err}"
        );
    }

    #[test]
    fn one_error_per_problem_and_all_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = write(
            dir.path(),
            "services/x.toml",
            "mode = \"inetd\"\nexec = [\"/bin/x\"]\nwarm = \"2\"\nhostname = \"-x\"\n",
        );
        let errors = load_service_all(&s, None).unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].ends_with("x.toml:3:8: warm: expected an integer from 0 to 1024, found \"2\"")
        );
        assert!(text[1].contains("x.toml:4:12: hostname:"));
    }

    #[test]
    fn datetime_values_are_reported_not_crashed_on() {
        let dir = tempfile::tempdir().unwrap();
        let s = write(
            dir.path(),
            "services/x.toml",
            "mode = \"inetd\"\nexec = [\"/bin/x\"]\nidle_timeout = 00:05:00\n",
        );
        let err = load_service(&s, None).unwrap_err().to_string();
        assert!(err.ends_with(":3:16: idle_timeout: expected a duration such as \"250ms\", \"30s\", \"5min\" or \"1h\", found date/time 00:05:00"), "{err}");
    }

    #[test]
    fn credentials() {
        let root = resolve_credentials(&UserRef::Name("root".into()), None).unwrap();
        assert_eq!(root, Credentials { uid: 0, gid: 0 });
        let by_id = resolve_credentials(&UserRef::Id(0), Some(&GroupRef::Id(5))).unwrap();
        assert_eq!(by_id, Credentials { uid: 0, gid: 5 });
        // A uid without a passwd entry: gid defaults to the same number.
        let anon = resolve_credentials(&UserRef::Id(3_999_999), None).unwrap();
        assert_eq!(
            anon,
            Credentials {
                uid: 3_999_999,
                gid: 3_999_999
            }
        );
        let root_group = resolve_credentials(
            &UserRef::Id(3_999_999),
            Some(&GroupRef::Name("root".into())),
        )
        .unwrap();
        assert_eq!(root_group.gid, 0);
        assert!(matches!(
            resolve_credentials(&UserRef::Name("berth-no-such-user".into()), None),
            Err(CredentialsError::UnknownUser(_))
        ));
        assert!(matches!(
            resolve_credentials(
                &UserRef::Id(0),
                Some(&GroupRef::Name("berth-no-such-group".into()))
            ),
            Err(CredentialsError::UnknownGroup(_))
        ));
    }
}
