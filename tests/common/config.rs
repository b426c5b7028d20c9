//! The `berth check` harness shared by the configuration tests: a
//! configuration directory in a temporary directory, the real binary run on
//! it, and assertions on where each error points.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// The first two lines of most test services: valid on their own.
pub const BASE: &str = "mode = \"inetd\"\nexec = [\"/usr/sbin/dropbear\", \"-i\"]\n";

pub struct Conf {
    pub dir: TempDir,
}

pub struct Outcome {
    pub code: i32,
    pub stderr: String,
}

impl Conf {
    pub fn new() -> Conf {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("services")).expect("mkdir services");
        Conf { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `services/FILE`.
    pub fn service(&self, file: &str, text: &str) -> PathBuf {
        let path = self.root().join("services").join(file);
        fs::write(&path, text).expect("write service");
        path
    }

    /// Writes `berth.toml`.
    pub fn defaults(&self, text: &str) -> PathBuf {
        let path = self.root().join("berth.toml");
        fs::write(&path, text).expect("write berth.toml");
        path
    }

    /// A directory under the tempdir, for bind sources.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let path = self.root().join(name);
        fs::create_dir_all(&path).expect("mkdir");
        path
    }

    /// `berth --config-dir ROOT check PATHS...`
    pub fn check(&self, paths: &[&Path]) -> Outcome {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--config-dir")
            .arg(self.root())
            .arg("check")
            .args(paths)
            .output()
            .expect("run berth");
        Outcome {
            code: out.status.code().expect("exit code"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Outcome {
    /// Exit 0 and nothing on stderr but `berth security`'s warnings.
    pub fn ok(&self) {
        assert_eq!(self.code, 0, "expected success, stderr:\n{}", self.stderr);
        assert_eq!(self.lines(), 0, "unexpected output:\n{}", self.stderr);
    }

    /// Exit 2 and a line `FILE:LINE:COLUMN: ...PHRASE...`.
    pub fn error_at(&self, file: &Path, line: usize, column: usize, phrase: &str) {
        self.error_prefixed(&format!("{}:{line}:{column}: ", file.display()), phrase);
    }

    /// Exit 2 and a file-level line `FILE: ...PHRASE...`.
    pub fn file_error(&self, file: &Path, phrase: &str) {
        self.error_prefixed(&format!("{}: ", file.display()), phrase);
    }

    pub fn error_prefixed(&self, prefix: &str, phrase: &str) {
        assert_eq!(self.code, 2, "expected exit 2, stderr:\n{}", self.stderr);
        assert!(
            self.stderr
                .lines()
                .any(|l| l.starts_with(prefix) && l.contains(phrase)),
            "no line starting {prefix:?} containing {phrase:?} in:\n{}",
            self.stderr
        );
    }

    /// Lines on stderr that are not warnings (those are tests/security.rs's).
    pub fn lines(&self) -> usize {
        self.stderr
            .lines()
            .filter(|l| !l.contains(": warning: "))
            .count()
    }
}

/// A service of `BASE` plus `extra`, checked as a file; errors in `extra`
/// start on line 3.
pub fn check_service(extra: &str) -> (Conf, PathBuf, Outcome) {
    let conf = Conf::new();
    let file = conf.service("app.toml", &format!("{BASE}{extra}"));
    let out = conf.check(&[&file]);
    (conf, file, out)
}

/// Every `const TABLE_KEYS: &[&str] = &[...]` of src/config/validate.rs: the keys
/// it accepts, per table ("TOP" for the top level).
pub fn accepted_keys() -> Vec<(String, BTreeSet<String>)> {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/validate.rs"),
    )
    .expect("read src/config/validate.rs");
    let mut tables = Vec::new();
    let mut rest = src.as_str();
    while let Some(start) = rest.find("\nconst ") {
        rest = &rest[start + "\nconst ".len()..];
        let Some((name, after)) = rest.split_once("_KEYS: &[&str] = &[") else {
            continue;
        };
        if name.contains(|c: char| !c.is_ascii_uppercase() && c != '_') {
            continue;
        }
        let list = &after[..after.find("];").expect("end of key list")];
        let keys: BTreeSet<String> = list
            .split(',')
            .map(|k| k.trim().trim_matches('"').to_string())
            .filter(|k| !k.is_empty())
            .collect();
        tables.push((name.to_string(), keys));
    }
    let names: Vec<&str> = tables.iter().map(|(n, _)| n.as_str()).collect();
    for t in ["TOP", "SANDBOX", "RESOURCES"] {
        assert!(
            names.contains(&t),
            "no {t}_KEYS in src/config/validate.rs (found {names:?})"
        );
    }
    tables
}
