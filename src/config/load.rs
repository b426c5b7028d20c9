//! Finding and reading configuration files: a configuration directory, the
//! berth.toml whose defaults apply to a service file, and `berth check`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Location};
use super::schema::Service;
use super::settings::{FileSettings, MISSING_MODE};
use super::validate::FileValidator;

/// The parsed global `berth.toml`: defaults for every service key but `exec`.
/// `[sandbox]`, `[resources]` and `[slice]` merge key by key; the service file wins.
/// Other keys (including the `environment` table) are replaced as a whole.
#[derive(Debug, Clone)]
pub struct Defaults {
    file: PathBuf,
    settings: FileSettings,
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
        settings: FileSettings::default(),
        incomplete: true,
    };
    let text = match read_text(path) {
        Ok(text) => text,
        Err(e) => return (defaults, vec![e]),
    };
    let mut validator = FileValidator::new(path, &text);
    if let Some(root) = validator.parse() {
        defaults.settings = validator.settings(&root, true);
        defaults.incomplete = validator.has_errors();
    }
    (defaults, validator.into_errors())
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
    let mut validator = FileValidator::new(path, &text);
    let mut file_errors = Vec::new();
    let service = validator.parse().and_then(|root| {
        let settings = validator.settings(&root, false);
        let merged = match defaults {
            Some(d) => settings.over(&d.settings),
            None => settings,
        };
        let incomplete = defaults.is_some_and(|d| d.incomplete);
        merged.into_service(name.as_deref(), path, incomplete, &mut file_errors)
    });
    for error in file_errors {
        validator.push(error);
    }
    let ok = !validator.has_errors();
    errors.extend(validator.into_errors());
    if ok && name.is_some() { service } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::{Mode, Network};
    use crate::config::settings::DEFAULT_ETC;

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
}
