//! The man pages: berth(1) and berth-COMMAND(1) generated from the command
//! line, and the hand-written configuration reference berth.toml(5), which
//! must document exactly the keys src/config/validate.rs accepts.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;

use common::config::accepted_keys;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn manpage(args: &[&str]) -> String {
    let out = Command::new(BERTH)
        .arg("manpage")
        .args(args)
        .output()
        .expect("run berth manpage");
    assert!(
        out.status.success(),
        "berth manpage {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("roff is UTF-8")
}

/// The subcommands a user sees (not the hidden packaging helpers).
fn visible_subcommands() -> Vec<String> {
    let names: Vec<String> = berth::cli::Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .collect();
    assert!(names.len() >= 8, "too few subcommands: {names:?}");
    names
}

#[test]
fn berth_1_names_every_subcommand() {
    let page = manpage(&[]);
    assert!(
        page.lines().any(|l| l.starts_with(".TH BERTH 1 ")),
        "no .TH BERTH 1:\n{page}"
    );
    for name in visible_subcommands() {
        // In SUBCOMMANDS and SEE ALSO, roff-escaped: berth\-run(1).
        assert!(
            page.contains(&format!("berth\\-{name}(1)")),
            "berth(1) does not mention berth-{name}(1):\n{page}"
        );
    }
    for hidden in ["completions", "manpage"] {
        assert!(
            !page.contains(&format!("berth\\-{hidden}")),
            "berth(1) shows the hidden {hidden}"
        );
    }
    assert!(
        page.contains("berth.toml\\fR(5)"),
        "no berth.toml(5) in SEE ALSO"
    );
}

#[test]
fn out_dir_gets_one_page_per_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = manpage(&["--out-dir", dir.path().to_str().expect("utf-8 path")]);
    assert!(out.is_empty(), "--out-dir also wrote to stdout");
    let mut expected: BTreeSet<String> = visible_subcommands()
        .iter()
        .map(|n| format!("berth-{n}.1"))
        .collect();
    expected.insert("berth.1".into());
    let written: BTreeSet<String> = std::fs::read_dir(dir.path())
        .expect("read out dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(written, expected);
    for name in visible_subcommands() {
        let page =
            std::fs::read_to_string(dir.path().join(format!("berth-{name}.1"))).expect("read page");
        let title = format!(".TH BERTH-{} 1 ", name.to_uppercase());
        assert!(
            page.lines().any(|l| l.starts_with(&title)),
            "berth-{name}.1 lacks {title}:\n{page}"
        );
        assert!(
            page.contains(&format!("\\fBberth {name}\\fR")),
            "berth-{name}.1: synopsis does not start with berth {name}:\n{page}"
        );
    }
}

/// The keys berth.toml.5 documents per section: an entry is `.TP` followed
/// by `.B KEY`.
fn documented_keys(page: &str, section: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_section = false;
    let mut after_tp = false;
    for line in page.lines() {
        if let Some(title) = line.strip_prefix(".SH ") {
            in_section = title.trim_matches('"') == section;
        } else if in_section
            && after_tp
            && let Some(key) = line.strip_prefix(".B ")
        {
            keys.insert(key.trim().to_string());
        }
        after_tp = line == ".TP";
    }
    keys
}

#[test]
fn berth_toml_5_documents_exactly_the_accepted_keys() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/man/berth.toml.5");
    let page = std::fs::read_to_string(&path).expect("read berth.toml.5");
    assert!(page.lines().any(|l| l.starts_with(".TH BERTH.TOML 5 ")));
    for (table, accepted) in accepted_keys() {
        let section = match table.as_str() {
            "TOP" => "TOP-LEVEL KEYS".to_string(),
            t => format!("THE [{}] TABLE", t.to_lowercase()),
        };
        let documented = documented_keys(&page, &section);
        let missing: Vec<_> = accepted.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&accepted).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{}: section {section:?} does not match {table}_KEYS of src/config/validate.rs: \
             undocumented {missing:?}, not accepted {extra:?}",
            path.display()
        );
    }
}
