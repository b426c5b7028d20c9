//! `freeze_after` in `berth check`: listen mode only, shorter than
//! `idle_timeout`, a duration; each error names the file, line and column.

mod common;

use common::config::*;

const LISTEN: &str = "mode = \"listen\"\nexec = [\"/usr/sbin/lighttpd\"]\n";

#[test]
fn freeze_after_in_listen_mode_is_accepted() {
    let conf = Conf::new();
    let file = conf.service(
        "web.toml",
        &format!("{LISTEN}freeze_after = \"30s\"\nidle_timeout = \"10min\"\n"),
    );
    conf.check(&[&file]).ok();
    // Without idle_timeout: frozen until the next connection, never stopped.
    let file = conf.service("web2.toml", &format!("{LISTEN}freeze_after = \"30s\"\n"));
    conf.check(&[&file]).ok();
}

#[test]
fn freeze_after_in_inetd_mode_is_refused_where_it_is_written() {
    let (_c, file, out) = check_service("freeze_after = \"30s\"\n");
    out.error_at(
        &file,
        3,
        16,
        "freeze_after: only applies to mode = \"listen\"",
    );
}

#[test]
fn freeze_after_from_berth_toml_applies_to_listen_services_only() {
    let conf = Conf::new();
    let defaults = conf.defaults("freeze_after = \"30s\"\n");
    let inetd = conf.service("ssh.toml", BASE);
    let listen = conf.service("web.toml", LISTEN);
    conf.check(&[&defaults, &inetd, &listen]).ok();
    // ...but must still fit each listen service's idle_timeout.
    let listen = conf.service("web.toml", &format!("{LISTEN}idle_timeout = \"10s\"\n"));
    conf.check(&[&defaults, &inetd, &listen]).error_at(
        &defaults,
        1,
        16,
        "freeze_after: expected less than idle_timeout (10s), found 30s",
    );
}

#[test]
fn freeze_after_must_be_shorter_than_idle_timeout() {
    let conf = Conf::new();
    for (freeze, idle, shown) in [
        ("\"5min\"", "\"1min\"", "(60s), found 300s"),
        ("\"1min\"", "\"1min\"", "(60s), found 60s"),
        ("\"1500ms\"", "\"1s\"", "(1s), found 1.5s"),
    ] {
        let file = conf.service(
            "web.toml",
            &format!("{LISTEN}idle_timeout = {idle}\nfreeze_after = {freeze}\n"),
        );
        conf.check(&[&file]).error_at(
            &file,
            4,
            16,
            &format!("freeze_after: expected less than idle_timeout {shown}"),
        );
    }
}

#[test]
fn freeze_after_must_be_a_positive_duration() {
    let conf = Conf::new();
    let file = conf.service("web.toml", &format!("{LISTEN}freeze_after = \"0s\"\n"));
    conf.check(&[&file]).error_at(
        &file,
        3,
        16,
        "freeze_after: expected a duration greater than zero",
    );
    let file = conf.service("web.toml", &format!("{LISTEN}freeze_after = 30\n"));
    conf.check(&[&file])
        .error_at(&file, 3, 16, "freeze_after: expected a duration");
    let file = conf.service("web.toml", &format!("{LISTEN}freeze_after = \"soon\"\n"));
    conf.check(&[&file])
        .error_at(&file, 3, 16, "freeze_after: expected a duration");
}
