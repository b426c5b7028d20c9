//! Configuration errors, each rendered `FILE[:LINE:COLUMN]: what is wrong,
//! what was expected`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where an error is: a file, and for errors inside it a 1-based line and
/// column. Renders as `FILE:LINE:COLUMN` or just `FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based `(line, column)`; `None` for errors about the file as a whole.
    pub position: Option<(usize, usize)>,
}

impl Location {
    pub(super) fn file(file: &Path) -> Location {
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
    /// A credential file that does not exist on the host.
    #[error("{at}: credentials: {name}: {} does not exist", path.display())]
    MissingCredential {
        at: Location,
        name: String,
        path: PathBuf,
    },
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
            | ConfigError::MissingCredential { at, .. }
            | ConfigError::UnknownUser { at, .. }
            | ConfigError::UnknownGroup { at, .. } => at,
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn locations_render_with_and_without_position() {
        let at = Location {
            file: PathBuf::from("/etc/berth/services/ssh.toml"),
            position: Some((7, 16)),
        };
        assert_eq!(at.to_string(), "/etc/berth/services/ssh.toml:7:16");
        assert_eq!(Location::file(Path::new("/x.toml")).to_string(), "/x.toml");
    }
}
