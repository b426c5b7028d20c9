//! The report as text: `systemd-analyze security`'s table, the one-line
//! summary per service, or JSON.

use std::fmt::Write as _;

use super::{Level, Report, SecurityError, analyze};
use crate::config::Service;

impl Report {
    /// The table of `berth security NAME`, in the form of
    /// `systemd-analyze security UNIT`.
    pub fn table(&self) -> String {
        let name_w = self
            .checks
            .iter()
            .map(|c| c.setting.chars().count())
            .chain([4])
            .max()
            .unwrap_or(4);
        let desc_w = self
            .checks
            .iter()
            .map(|c| c.description.chars().count())
            .chain([11])
            .max()
            .unwrap_or(11);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "  {:<name_w$}  {:<desc_w$}  EXPOSURE",
            "NAME", "DESCRIPTION"
        );
        for c in &self.checks {
            let mark = if c.safe { '✓' } else { '✗' };
            let exposure = if c.safe {
                String::new()
            } else {
                format!("{:>8.1}", c.severity * 10.0)
            };
            let line = format!(
                "{mark} {:<name_w$}  {:<desc_w$}  {exposure}",
                c.setting, c.description
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let exposure = self.exposure();
        let _ = writeln!(
            out,
            "\n→ Overall exposure level for {}: {exposure:.1} {}",
            self.service,
            Level::of(exposure).name()
        );
        out
    }
}

/// The text `berth security` prints: the table of `name`, or one summary
/// line per service; `json` for machines (reports with their scores).
pub fn render(
    services: &[Service],
    name: Option<&str>,
    json: bool,
) -> Result<String, SecurityError> {
    let selected: Vec<&Service> = match name {
        Some(n) => {
            let Some(s) = services.iter().find(|s| s.name == n) else {
                let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                return Err(SecurityError::UnknownService {
                    name: n.to_string(),
                    known: if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    },
                });
            };
            vec![s]
        }
        None => services.iter().collect(),
    };
    let reports: Vec<Report> = selected.into_iter().map(analyze).collect();
    if json {
        #[derive(serde::Serialize)]
        struct Scored<'a> {
            #[serde(flatten)]
            report: &'a Report,
            exposure: f64,
            level: Level,
        }
        let scored: Vec<Scored> = reports
            .iter()
            .map(|r| Scored {
                report: r,
                exposure: r.exposure(),
                level: r.level(),
            })
            .collect();
        let mut out = serde_json::to_string_pretty(&serde_json::json!({ "services": scored }))?;
        out.push('\n');
        return Ok(out);
    }
    if name.is_some() {
        return Ok(reports.iter().map(Report::table).collect());
    }
    let name_w = reports
        .iter()
        .map(|r| r.service.chars().count())
        .chain([7])
        .max()
        .unwrap_or(7);
    let mut out = format!("{:<name_w$}  EXPOSURE  LEVEL    WARNINGS\n", "SERVICE");
    for r in &reports {
        let _ = writeln!(
            out,
            "{:<name_w$}  {:>8.1}  {:<7}  {}",
            r.service,
            r.exposure(),
            r.level().name(),
            r.unsafe_checks().count()
        );
    }
    Ok(out)
}
