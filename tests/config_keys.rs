//! `berth check` on the keys added since the first release: per-source
//! rate limits, the generator's `listen`/`ip_allow`/`ip_deny`, runtime and
//! state directories, credentials, `stop_timeout` and `[slice]`. Same
//! harness as `config_check.rs`.

mod common;

use std::fs;

use common::config::*;

// --- rate_limit_per_source and source_prefix_v6 ---------------------------

#[test]
fn rate_limit_per_source_malformed() {
    for bad in [
        "20",
        "20/10",
        "x/10s",
        "+2/10s",
        "20/ten",
        "/10s",
        "99999999999/1s",
    ] {
        let (_c, file, out) = check_service(&format!("rate_limit_per_source = \"{bad}\"\n"));
        out.error_at(
            &file,
            3,
            25,
            &format!("rate_limit_per_source: expected a rate such as \"20/10s\" or \"100/1min\" (connections, then a duration), found \"{bad}\""),
        );
    }
    let (_c, file, out) = check_service("rate_limit_per_source = 20\n");
    out.error_at(
        &file,
        3,
        25,
        "rate_limit_per_source: expected a rate such as \"20/10s\"",
    );
}

#[test]
fn rate_limit_per_source_zero() {
    let (_c, file, out) = check_service("rate_limit_per_source = \"0/10s\"\n");
    out.error_at(
        &file,
        3,
        25,
        "rate_limit_per_source: expected a rate of at least one connection per interval",
    );
    let (_c, file, out) = check_service("rate_limit_per_source = \"5/0s\"\n");
    out.error_at(
        &file,
        3,
        25,
        "rate_limit_per_source: expected a rate over an interval greater than zero",
    );
}

#[test]
fn rate_limit_per_source_in_listen_mode() {
    let conf = Conf::new();
    let file = conf.service(
        "web.toml",
        "mode = \"listen\"\nexec = [\"/usr/bin/httpd\"]\nrate_limit_per_source = \"20/10s\"\n",
    );
    conf.check(&[&file]).error_at(
        &file,
        3,
        25,
        "rate_limit_per_source: only applies to mode = \"inetd\"",
    );
    // Set in berth.toml for every service: the listen service's own mode
    // is what is wrong there.
    let conf = Conf::new();
    conf.defaults("rate_limit_per_source = \"20/10s\"\n");
    let file = conf.service(
        "web.toml",
        "mode = \"listen\"\nexec = [\"/usr/bin/httpd\"]\n",
    );
    conf.check(&[&file]).error_at(
        &file,
        1,
        8,
        "rate_limit_per_source: only applies to mode = \"inetd\"",
    );
}

#[test]
fn source_prefix_v6_out_of_range() {
    for bad in ["0", "129", "-1"] {
        let (_c, file, out) = check_service(&format!("source_prefix_v6 = {bad}\n"));
        out.error_at(
            &file,
            3,
            20,
            "source_prefix_v6: expected an integer from 1 to 128",
        );
    }
    let (_c, file, out) = check_service("source_prefix_v6 = \"64\"\n");
    out.error_at(
        &file,
        3,
        20,
        "source_prefix_v6: expected an integer from 1 to 128, found \"64\"",
    );
}

#[test]
fn flood_limits_defaults_and_berth_toml() {
    let conf = Conf::new();
    conf.defaults("rate_limit_per_source = \"100/1min\"\nsource_prefix_v6 = 56\n");
    conf.service("a.toml", BASE);
    conf.service(
        "b.toml",
        &format!("{BASE}rate_limit_per_source = \"20/10s\"\nsource_prefix_v6 = 128\n"),
    );
    conf.check(&[]).ok();
    let services = berth::config::load_dir(conf.root()).expect("valid");
    let rate = |count, secs| {
        Some(berth::config::RateLimit {
            count,
            per: std::time::Duration::from_secs(secs),
        })
    };
    assert_eq!(services[0].rate_limit_per_source, rate(100, 60));
    assert_eq!(services[0].source_prefix_v6, 56);
    assert_eq!(services[1].rate_limit_per_source, rate(20, 10));
    assert_eq!(services[1].source_prefix_v6, 128);

    let conf = Conf::new();
    conf.service("a.toml", BASE);
    let s = &berth::config::load_dir(conf.root()).expect("valid")[0];
    assert_eq!(s.rate_limit_per_source, None);
    assert_eq!(s.source_prefix_v6, 64);
}

// --- listen, ip_allow, ip_deny (the generator's keys) -----------------------

#[test]
fn listen_and_ip_lists_accept_what_systemd_accepts() {
    let (_c, _file, out) = check_service(
        "listen = [\"0.0.0.0:2222\", \"[::]:2222\", \"/run/x.sock\"]\nip_allow = [\"localhost\", \"link-local\", \"multicast\", \"10.0.0.0/8\", \"192.168.1.7\", \"::1\", \"fd00::/8\"]\nip_deny = [\"any\"]\n",
    );
    out.ok();
}

#[test]
fn listen_address_that_is_not_one() {
    let (_c, file, out) = check_service("listen = [\"127.0.0.1:22\", \"localhost:22\"]\n");
    out.error_at(
        &file,
        3,
        27,
        "listen: expected an address IPV4:PORT, [IPV6]:PORT or an absolute socket path, found \"localhost:22\"",
    );
    assert_eq!(out.lines(), 1, "{}", out.stderr);
}

#[test]
fn listen_port_out_of_range() {
    let (_c, file, out) = check_service("listen = [\"127.0.0.1:65536\"]\n");
    out.error_at(&file, 3, 11, "listen: expected an address IPV4:PORT");
}

#[test]
fn listen_socket_path_with_a_space() {
    let (_c, file, out) = check_service("listen = [\"/run/my app.sock\"]\n");
    out.error_at(
        &file,
        3,
        11,
        "listen: expected an absolute socket path without spaces",
    );
}

#[test]
fn listen_empty_or_not_an_array() {
    let (_c, file, out) = check_service("listen = []\n");
    out.error_at(
        &file,
        3,
        10,
        "listen: expected a non-empty array of addresses",
    );
    let (_c, file, out) = check_service("listen = \"127.0.0.1:22\"\n");
    out.error_at(
        &file,
        3,
        10,
        "listen: expected a non-empty array of addresses",
    );
}

#[test]
fn listen_address_twice() {
    let (_c, file, out) = check_service("listen = [\"127.0.0.1:22\", \"127.0.0.1:22\"]\n");
    out.error_at(&file, 3, 27, "listen: 127.0.0.1:22 is listed twice");
}

#[test]
fn listen_in_berth_toml_is_rejected() {
    let conf = Conf::new();
    let defaults = conf.defaults("mode = \"inetd\"\nlisten = [\"127.0.0.1:22\"]\n");
    let out = conf.check(&[]);
    out.error_at(&defaults, 2, 1, "listen: not allowed in berth.toml");
}

#[test]
fn ip_rule_that_systemd_would_refuse() {
    let (_c, file, out) = check_service(
        "listen = [\"127.0.0.1:22\"]\nip_allow = [\"10.0.0.0/33\", \"all\", \"::1\"]\nip_deny = [\"10.0.0.0/\"]\n",
    );
    out.error_at(&file, 4, 13, "ip_allow: expected \"any\", \"localhost\", \"link-local\", \"multicast\", an IPv4 or IPv6 address or a prefix ADDRESS/LENGTH, found \"10.0.0.0/33\"");
    out.error_at(&file, 4, 28, "ip_allow: expected \"any\"");
    out.error_at(&file, 5, 12, "ip_deny: expected \"any\"");
    assert_eq!(out.lines(), 3, "{}", out.stderr);
}

#[test]
fn ip_lists_without_listen_are_an_error() {
    let (_c, file, out) = check_service("ip_deny = [\"any\"]\nip_allow = [\"::1\"]\n");
    out.error_at(&file, 3, 1, "ip_deny: needs `listen` in the same file");
    out.error_at(&file, 4, 1, "ip_allow: needs `listen` in the same file");
    assert_eq!(out.lines(), 2, "{}", out.stderr);
}

#[test]
fn ip_lists_of_berth_toml_apply_only_with_listen() {
    // berth.toml's lists are defaults for the services that have `listen`;
    // a service with a hand-written socket unit is not blamed for them.
    let conf = Conf::new();
    conf.defaults("ip_deny = [\"any\"]\n");
    conf.service("a.toml", BASE);
    conf.service("b.toml", &format!("{BASE}listen = [\"127.0.0.1:22\"]\n"));
    conf.check(&[]).ok();
}

// --- runtime and state directories, credentials (issue 13) -----------------

#[test]
fn runtime_directory_must_be_one_path_component() {
    for bad in ["a/b", "..", "", "/run/x"] {
        let (_c, file, out) = check_service(&format!("[sandbox]\nruntime_directory = {bad:?}\n"));
        out.error_at(
            &file,
            4,
            21,
            &format!(
                "runtime_directory: expected a directory name (one path component) such as \"sshd\", found {bad:?}"
            ),
        );
    }
    let (_c, file, out) = check_service("[sandbox]\nruntime_directory = \"credentials\"\n");
    out.error_at(
        &file,
        4,
        21,
        "runtime_directory: \"credentials\" is reserved",
    );
    let (_c, file, out) = check_service("[sandbox]\nruntime_directory = 1\n");
    out.error_at(&file, 4, 21, "runtime_directory: expected a directory name");
    check_service("[sandbox]\nruntime_directory = \"sshd\"\n")
        .2
        .ok();
}

#[test]
fn state_directory_must_be_a_boolean() {
    let (_c, file, out) = check_service("[sandbox]\nstate_directory = \"yes\"\n");
    out.error_at(
        &file,
        4,
        19,
        "state_directory: expected true or false, found \"yes\"",
    );
    check_service("[sandbox]\nstate_directory = true\n").2.ok();
}

#[test]
fn credentials_paths_are_checked_names_are_one_component() {
    let conf = Conf::new();
    let secret = conf.root().join("secret");
    fs::write(&secret, "x").expect("write");
    let missing = conf.root().join("missing");
    let text = format!(
        "{BASE}[sandbox]\ncredentials = [\"db:{}\", \"tls-key\", \"gone:{}\", \"../x:{}\", \".\", \"rel:etc/x\", \"dir:{}\", \"db\"]\n",
        secret.display(),
        missing.display(),
        secret.display(),
        conf.root().display(),
    );
    let file = conf.service("app.toml", &text);
    let out = conf.check(&[&file]);
    let col = |entry: &str| text.lines().nth(3).unwrap().find(entry).unwrap() + 1;
    out.error_at(
        &file,
        4,
        col("\"gone:"),
        &format!("credentials: gone: {} does not exist", missing.display()),
    );
    for entry in ["\"../x:", "\".\""] {
        out.error_at(
            &file,
            4,
            col(entry),
            "credentials: expected \"NAME[:PATH]\" with NAME a file name (not empty, no \"/\", not \".\" or \"..\")",
        );
    }
    out.error_at(
        &file,
        4,
        col("\"rel:"),
        "credentials: expected \"NAME:PATH\" with PATH absolute and without \"..\", found \"rel:etc/x\"",
    );
    out.error_at(
        &file,
        4,
        col("\"dir:"),
        "is not a regular file, expected a file to copy",
    );
    assert_eq!(out.lines(), 5, "{}", out.stderr);

    // Bare names are systemd credentials of berth.service: checked at start.
    let ok = conf.service(
        "ok.toml",
        &format!(
            "{BASE}[sandbox]\ncredentials = [\"db:{}\", \"tls-key\"]\n",
            secret.display()
        ),
    );
    conf.check(&[&ok]).ok();
    let dup = conf.service(
        "dup.toml",
        &format!(
            "{BASE}[sandbox]\ncredentials = [\"db:{}\", \"db\"]\n",
            secret.display()
        ),
    );
    let col = format!("credentials = [\"db:{}\", ", secret.display()).len() + 1;
    conf.check(&[&dup]).error_at(
        &dup,
        4,
        col,
        "credentials: credential \"db\" is listed twice",
    );
}

#[test]
fn directory_variables_are_set_by_berth() {
    for var in [
        "RUNTIME_DIRECTORY",
        "STATE_DIRECTORY",
        "CREDENTIALS_DIRECTORY",
    ] {
        let (_c, file, out) = check_service(&format!("environment = {{ {var} = \"/x\" }}\n"));
        out.error_at(&file, 3, 17, &format!("environment: {var} is set by berth"));
    }
}

#[test]
fn stop_timeout_is_a_duration_greater_than_zero() {
    let (_c, _file, out) = check_service("stop_timeout = \"250ms\"\n");
    out.ok();
    let (_c, file, out) = check_service("stop_timeout = 5\n");
    out.error_at(&file, 3, 16, "stop_timeout: expected a duration");
    let (_c, file, out) = check_service("stop_timeout = \"0s\"\n");
    out.error_at(
        &file,
        3,
        16,
        "stop_timeout: expected a duration greater than zero",
    );
    // berth.toml may set it for every service.
    let conf = Conf::new();
    conf.defaults("stop_timeout = \"10s\"\n");
    let file = conf.service("app.toml", BASE);
    conf.check(&[&file]).ok();
}

#[test]
fn slice_table_keys_are_checked() {
    let (_c, _file, out) = check_service(
        "[slice]\nmemory_max = \"2G\"\ntasks_max = 512\ncpu_quota = \"200%\"\ncpu_weight = 100\n",
    );
    out.ok();
    let (_c, file, out) = check_service("[slice]\nmemory_high = \"1G\"\n");
    out.error_at(&file, 4, 1, "unknown key `memory_high` in [slice]");
    out.error_at(&file, 4, 1, "memory_max, tasks_max, cpu_quota, cpu_weight");
    let (_c, file, out) = check_service("[slice]\ntasks_max = 0\n");
    out.error_at(&file, 4, 13, "tasks_max: expected");
    let (_c, file, out) = check_service("[slice]\ncpu_quota = \"2\"\n");
    out.error_at(&file, 4, 13, "cpu_quota: expected");
    let (_c, file, out) = check_service("[slice]\nmemory_max = \"0M\"\n");
    out.error_at(
        &file,
        4,
        14,
        "memory_max: expected a size greater than zero",
    );
    let (_c, file, out) = check_service("[slice]\ncpu_weight = 20000\n");
    out.error_at(&file, 4, 14, "cpu_weight: expected");
    let (_c, file, out) = check_service("slice = 3\n");
    out.error_at(&file, 3, 9, "a table [slice]");
    // In berth.toml, merged key by key like [resources].
    let conf = Conf::new();
    conf.defaults("[slice]\ntasks_max = 100\n");
    let file = conf.service("app.toml", &format!("{BASE}[slice]\nmemory_max = \"1G\"\n"));
    conf.check(&[&file]).ok();
    let bad = conf.defaults("[slice]\ntasks_max = \"many\"\n");
    conf.check(&[]).error_at(&bad, 2, 13, "tasks_max: expected");
}
