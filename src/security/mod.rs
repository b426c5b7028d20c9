//! `berth security`: what a compromised application could reach beyond the
//! default container, setting by setting, and an overall exposure score.
//!
//! Pure: reads a validated [`Service`](crate::config::Service) and nothing of the host, so the same
//! report comes out of `berth security`, `berth check` and the unit tests.
//!
//! Each row has a severity in 0..=1 (0 = safe). The overall exposure is
//! `10 × (1 − Π(1 − severity))`: one way out of the sandbox alone (a bind of
//! `/proc`, `CAP_SYS_ADMIN`) makes a service UNSAFE, minor widenings add up
//! slowly, and a service without any scores 0.

mod checks;
mod render;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use checks::analyze;
pub use render::render;

/// One setting of a service and what it exposes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    /// The setting as written: `user = "root"`, `capabilities CAP_SYS_ADMIN`,
    /// `read_write /srv/d:/data`, `etc shadow`.
    pub setting: String,
    pub safe: bool,
    /// 0 (safe) ..= 1 (a way out of the sandbox on its own).
    pub severity: f64,
    /// One line: why it is (un)safe.
    pub description: String,
}

/// The exposure report of one service.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub service: String,
    pub file: PathBuf,
    pub checks: Vec<Check>,
}

/// The overall verdict, with `systemd-analyze security`'s names and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Safe,
    Ok,
    Medium,
    Exposed,
    Unsafe,
}

impl Level {
    /// The level of an exposure score (0.0 ..= 10.0, one decimal).
    pub fn of(exposure: f64) -> Level {
        if exposure >= 9.0 {
            Level::Unsafe
        } else if exposure >= 7.5 {
            Level::Exposed
        } else if exposure >= 5.0 {
            Level::Medium
        } else if exposure >= 1.0 {
            Level::Ok
        } else {
            Level::Safe
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Safe => "SAFE",
            Level::Ok => "OK",
            Level::Medium => "MEDIUM",
            Level::Exposed => "EXPOSED",
            Level::Unsafe => "UNSAFE",
        }
    }
}

impl Report {
    /// 0.0 (locked down) ..= 10.0 (exposed), rounded to one decimal.
    pub fn exposure(&self) -> f64 {
        let kept: f64 = self
            .checks
            .iter()
            .map(|c| 1.0 - c.severity.clamp(0.0, 1.0))
            .product();
        ((1.0 - kept) * 100.0).round() / 10.0
    }

    pub fn level(&self) -> Level {
        Level::of(self.exposure())
    }

    /// The unsafe rows.
    pub fn unsafe_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.safe)
    }

    /// `berth check`'s lines: `FILE: warning: SETTING: DESCRIPTION`.
    pub fn warnings(&self) -> Vec<String> {
        self.unsafe_checks()
            .map(|c| {
                format!(
                    "{}: warning: {}: {}",
                    self.file.display(),
                    c.setting,
                    c.description
                )
            })
            .collect()
    }
}

/// `berth security [NAME]`'s output for the loaded services.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("no service named {name:?} (services: {known})")]
    UnknownService { name: String, known: String },
    #[error("cannot write the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}
