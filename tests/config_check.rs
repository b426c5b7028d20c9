//! `berth check`: the real binary against configurations written to a
//! temporary directory. Every bad configuration must exit 2 and name the
//! file, line and column of the problem and what was expected.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::config::*;

// --- bad configurations ----------------------------------------------------

#[test]
fn duration_in_words_is_rejected_with_the_documented_message() {
    let conf = Conf::new();
    let file = conf.service(
        "ssh.toml",
        "mode = \"inetd\"\n\
         exec = [\"/usr/sbin/dropbear\", \"-i\", \"-R\", \"-E\"]\n\
         user = \"root\"\n\
         group = \"\"\n\
         environment = { LANG = \"C.UTF-8\" }\n\
         working_directory = \"/\"\n\
         idle_timeout = \"5 minutes\"\n",
    );
    let out = conf.check(&[]);
    out.error_at(
        &file,
        7,
        16,
        "idle_timeout: expected a duration such as \"250ms\", \"30s\", \"5min\" or \"1h\", found \"5 minutes\"",
    );
    assert_eq!(out.lines(), 1, "{}", out.stderr);
}

#[test]
fn duration_without_unit_is_rejected() {
    let (_c, file, out) = check_service("max_lifetime = \"30\"\n");
    out.error_at(&file, 3, 16, "max_lifetime: expected a duration");
}

#[test]
fn zero_duration_is_rejected() {
    let (_c, file, out) = check_service("idle_timeout = \"0s\"\n");
    out.error_at(
        &file,
        3,
        16,
        "idle_timeout: expected a duration greater than zero",
    );
}

#[test]
fn duration_as_integer_is_a_type_error() {
    let (_c, file, out) = check_service("idle_timeout = 300\n");
    out.error_at(&file, 3, 16, "found integer 300");
}

#[test]
fn unknown_top_level_key() {
    let (_c, file, out) = check_service("hostnme = \"x\"\n");
    out.error_at(&file, 3, 1, "unknown key `hostnme`");
    out.error_at(&file, 3, 1, "expected one of: mode, exec,");
    out.error_at(&file, 3, 1, "did you mean `hostname`?");
}

#[test]
fn sandbox_key_at_top_level_says_where_it_belongs() {
    let (_c, file, out) = check_service("network = \"host\"\n");
    out.error_at(&file, 3, 1, "`network` belongs in [sandbox]");
}

#[test]
fn unknown_sandbox_key() {
    let (_c, file, out) = check_service("[sandbox]\nnetwork_mode = \"none\"\n");
    out.error_at(&file, 4, 1, "unknown key `network_mode` in [sandbox]");
    out.error_at(&file, 4, 1, "read_only, read_write");
}

#[test]
fn unknown_resources_key() {
    let (_c, file, out) = check_service("[resources]\nmemory_limit = \"1G\"\n");
    out.error_at(&file, 4, 1, "unknown key `memory_limit` in [resources]");
    out.error_at(&file, 4, 1, "memory_max, memory_high");
}

#[test]
fn bad_mode() {
    let conf = Conf::new();
    let file = conf.service("app.toml", "mode = \"daemon\"\nexec = [\"/bin/true\"]\n");
    let out = conf.check(&[&file]);
    out.error_at(
        &file,
        1,
        8,
        "mode: expected \"inetd\" or \"listen\", found \"daemon\"",
    );
}

#[test]
fn exec_must_start_with_an_absolute_path() {
    let conf = Conf::new();
    let file = conf.service(
        "app.toml",
        "mode = \"inetd\"\nexec = [\"dropbear\", \"-i\"]\n",
    );
    let out = conf.check(&[&file]);
    out.error_at(&file, 2, 9, "exec[0]: expected an absolute path");
}

#[test]
fn exec_must_not_be_empty() {
    let conf = Conf::new();
    let file = conf.service("app.toml", "mode = \"inetd\"\nexec = []\n");
    let out = conf.check(&[&file]);
    out.error_at(&file, 2, 8, "exec: expected a non-empty array of strings");
}

#[test]
fn exec_as_string_is_a_type_error() {
    let conf = Conf::new();
    let file = conf.service("app.toml", "mode = \"inetd\"\nexec = \"/bin/sh -c x\"\n");
    let out = conf.check(&[&file]);
    out.error_at(&file, 2, 8, "exec: expected a non-empty array of strings");
}

#[test]
fn exec_argument_of_wrong_type() {
    let conf = Conf::new();
    let file = conf.service("app.toml", "mode = \"inetd\"\nexec = [\"/bin/app\", 42]\n");
    let out = conf.check(&[&file]);
    out.error_at(&file, 2, 21, "exec[1]: expected a string, found integer 42");
}

#[test]
fn unknown_user() {
    let (_c, file, out) = check_service("user = \"berth-no-such-user\"\n");
    out.error_at(
        &file,
        3,
        8,
        "user: no user \"berth-no-such-user\" on this host",
    );
}

#[test]
fn user_of_wrong_type() {
    let (_c, file, out) = check_service("user = true\n");
    out.error_at(
        &file,
        3,
        8,
        "user: expected a user name or a numeric uid, found boolean true",
    );
}

#[test]
fn unknown_group() {
    let (_c, file, out) = check_service("user = \"root\"\ngroup = \"berth-no-such-group\"\n");
    out.error_at(
        &file,
        4,
        9,
        "group: no group \"berth-no-such-group\" on this host",
    );
}

#[test]
fn reserved_environment_variable() {
    let (_c, file, out) = check_service("environment = { LANG = \"C\", LISTEN_FDS = \"3\" }\n");
    out.error_at(&file, 3, 29, "environment: LISTEN_FDS is set by berth");
}

#[test]
fn invalid_environment_variable_name() {
    let (_c, file, out) = check_service("[environment]\n\"1X\" = \"a\"\n");
    out.error_at(
        &file,
        4,
        1,
        "expected a variable name matching [A-Za-z_][A-Za-z0-9_]*",
    );
}

#[test]
fn environment_value_must_be_a_string() {
    let (_c, file, out) = check_service("environment = { WORKERS = 4 }\n");
    out.error_at(
        &file,
        3,
        27,
        "environment.WORKERS: expected a string, found integer 4",
    );
}

#[test]
fn relative_working_directory() {
    let (_c, file, out) = check_service("working_directory = \"srv\"\n");
    out.error_at(&file, 3, 21, "working_directory: expected an absolute path");
}

#[test]
fn invalid_hostname() {
    let (_c, file, out) = check_service("hostname = \"my host\"\n");
    out.error_at(&file, 3, 12, "hostname: expected a host name");
}

#[test]
fn max_connections_out_of_range() {
    let (_c, file, out) = check_service("max_connections = 70000\n");
    out.error_at(
        &file,
        3,
        19,
        "max_connections: expected an integer from 1 to 65536, found integer 70000",
    );
}

#[test]
fn max_connections_per_source_zero() {
    let (_c, file, out) = check_service("max_connections_per_source = 0\n");
    out.error_at(
        &file,
        3,
        30,
        "max_connections_per_source: expected an integer of at least 1",
    );
}

#[test]
fn warm_with_listen_mode() {
    let conf = Conf::new();
    let file = conf.service(
        "web.toml",
        "mode = \"listen\"\nexec = [\"/usr/bin/httpd\"]\nwarm = 2\n",
    );
    let out = conf.check(&[&file]);
    out.error_at(&file, 3, 8, "warm: expected 0 or 1 with mode = \"listen\"");
}

#[test]
fn warm_one_with_listen_mode_keeps_the_next_container_prepared() {
    let conf = Conf::new();
    let file = conf.service(
        "web.toml",
        "mode = \"listen\"\nexec = [\"/usr/bin/httpd\"]\nwarm = 1\n",
    );
    conf.check(&[&file]).ok();
}

#[test]
fn warm_too_large() {
    let (_c, file, out) = check_service("warm = 5000\n");
    out.error_at(&file, 3, 8, "warm: expected an integer from 0 to 1024");
}

#[test]
fn bad_network() {
    let (_c, file, out) = check_service("[sandbox]\nnetwork = \"bridge\"\n");
    out.error_at(
        &file,
        4,
        11,
        "network: expected \"none\" or \"host\", found \"bridge\"",
    );
}

#[test]
fn missing_bind_source() {
    let conf = Conf::new();
    let missing = conf.root().join("does-not-exist");
    let file = conf.service(
        "app.toml",
        &format!(
            "{BASE}[sandbox]\nread_write = [\"/usr\", \"{}:/data\"]\n",
            missing.display()
        ),
    );
    let out = conf.check(&[&file]);
    out.error_at(
        &file,
        4,
        23,
        &format!(
            "read_write: bind source {} does not exist",
            missing.display()
        ),
    );
}

#[test]
fn bind_source_through_a_symlink_is_rejected() {
    let conf = Conf::new();
    let real = conf.root().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("data"), "x").unwrap();
    let link = conf.root().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let file = conf.service(
        "app.toml",
        &format!(
            "{BASE}[sandbox]\nread_only = [\"{}:/data\"]\n",
            link.join("data").display()
        ),
    );
    let out = conf.check(&[&file]);
    out.error_at(
        &file,
        4,
        14,
        &format!(
            "read_only: bind source {} passes through the symlink {}, expected a path without symlinks such as {}",
            link.join("data").display(),
            link.display(),
            std::fs::canonicalize(real.join("data")).unwrap().display()
        ),
    );
}

#[test]
fn bind_over_proc_is_rejected() {
    let (_c, file, out) = check_service("[sandbox]\nread_only = [\"/usr:/proc/sys\"]\n");
    out.error_at(&file, 4, 14, "read_only: destination /proc/sys is reserved");
}

#[test]
fn bind_over_root_is_rejected() {
    let (_c, file, out) = check_service("[sandbox]\nread_only = [\"/usr:/\"]\n");
    out.error_at(&file, 4, 14, "read_only: destination / is reserved");
}

#[test]
fn bind_with_dotdot_is_rejected() {
    let (_c, file, out) = check_service("[sandbox]\nread_write = [\"/usr/../etc:/data\"]\n");
    out.error_at(
        &file,
        4,
        15,
        "read_write: expected \"SRC[:DST]\" without \"..\"",
    );
}

#[test]
fn bind_with_relative_path_is_rejected() {
    let (_c, file, out) = check_service("[sandbox]\nread_only = [\"/usr:data\"]\n");
    out.error_at(
        &file,
        4,
        14,
        "read_only: expected \"SRC[:DST[:noidmap]]\" with absolute paths",
    );
}

#[test]
fn bad_propagation() {
    let (_c, file, out) = check_service("[sandbox]\npropagation = \"rslave\"\n");
    out.error_at(
        &file,
        4,
        15,
        "propagation: expected \"private\", \"slave\" or \"shared\"",
    );
}

#[test]
fn bad_size() {
    let (_c, file, out) = check_service("[sandbox]\ntmp_size = \"64 MB\"\n");
    out.error_at(
        &file,
        4,
        12,
        "tmp_size: expected a size such as \"64K\", \"256M\" or \"2G\"",
    );
}

#[test]
fn zero_size() {
    let (_c, file, out) = check_service("[resources]\nmemory_max = \"0M\"\n");
    out.error_at(
        &file,
        4,
        14,
        "memory_max: expected a size greater than zero",
    );
}

#[test]
fn absolute_etc_entry() {
    let (_c, file, out) = check_service("[sandbox]\netc = [\"passwd\", \"/etc/group\"]\n");
    out.error_at(&file, 4, 18, "etc: expected a name relative to /etc");
}

#[test]
fn missing_etc_entry() {
    let (_c, file, out) = check_service("[sandbox]\netc = [\"passwd\", \"berth-no-such-file\"]\n");
    out.error_at(
        &file,
        4,
        18,
        "etc: /etc/berth-no-such-file does not exist on this host",
    );
}

#[test]
fn unknown_capability() {
    let (_c, file, out) =
        check_service("[sandbox]\ncapabilities = [\"net_bind_service\", \"cap_fly\"]\n");
    out.error_at(&file, 4, 37, "capabilities: unknown capability \"cap_fly\"");
    out.error_at(&file, 4, 37, "\"CAP_NET_BIND_SERVICE\"");
}

#[test]
fn bad_seccomp() {
    let (_c, file, out) = check_service("[sandbox]\nseccomp = \"strict\"\n");
    out.error_at(
        &file,
        4,
        11,
        "seccomp: expected \"default\", \"compat\" or \"off\", found \"strict\"",
    );
}

#[test]
fn syslog_must_be_a_boolean() {
    let (_c, file, out) = check_service("[sandbox]\nsyslog = \"yes\"\n");
    out.error_at(
        &file,
        4,
        10,
        "syslog: expected true or false, found \"yes\"",
    );
}

#[test]
fn sandbox_must_be_a_table() {
    let (_c, file, out) = check_service("sandbox = \"none\"\n");
    out.error_at(&file, 3, 11, "sandbox: expected a table [sandbox]");
}

#[test]
fn cpu_quota_without_percent() {
    let (_c, file, out) = check_service("[resources]\ncpu_quota = \"50\"\n");
    out.error_at(&file, 4, 13, "cpu_quota: expected a percentage of one CPU");
}

#[test]
fn cpu_weight_out_of_range() {
    let (_c, file, out) = check_service("[resources]\ncpu_weight = 0\n");
    out.error_at(
        &file,
        4,
        14,
        "cpu_weight: expected an integer from 1 to 10000, found integer 0",
    );
}

#[test]
fn io_weight_of_wrong_type() {
    let (_c, file, out) = check_service("[resources]\nio_weight = \"100\"\n");
    out.error_at(
        &file,
        4,
        13,
        "io_weight: expected an integer from 1 to 10000, found \"100\"",
    );
}

#[test]
fn tasks_max_zero() {
    let (_c, file, out) = check_service("[resources]\ntasks_max = 0\n");
    out.error_at(&file, 4, 13, "tasks_max: expected an integer of at least 1");
}

#[test]
fn toml_syntax_error() {
    let conf = Conf::new();
    let file = conf.service("app.toml", "mode = inetd\nexec = [\"/bin/true\"]\n");
    let out = conf.check(&[&file]);
    out.error_at(&file, 1, 8, "invalid TOML");
    assert_eq!(out.lines(), 1, "{}", out.stderr);
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let (_c, file, out) = check_service("mode = \"listen\"\n");
    out.error_at(&file, 3, 1, "invalid TOML: duplicate key `mode`");
}

// --- file-level errors -----------------------------------------------------

#[test]
fn missing_exec_and_mode() {
    let conf = Conf::new();
    let file = conf.service("app.toml", "user = \"root\"\n");
    let out = conf.check(&[&file]);
    out.file_error(&file, "missing key `exec`");
    out.file_error(&file, "missing key `mode`");
}

#[test]
fn bad_service_name() {
    let conf = Conf::new();
    let file = conf.service("Web_Server.toml", BASE);
    let out = conf.check(&[]);
    out.file_error(&file, "service name \"Web_Server\" is not valid");
}

#[test]
fn service_file_must_end_in_toml() {
    let conf = Conf::new();
    let file = conf.service("app.conf", BASE);
    let out = conf.check(&[&file]);
    out.file_error(&file, "expected a service file named NAME.toml");
}

#[test]
fn nonexistent_path() {
    let conf = Conf::new();
    let file = conf.root().join("services/nope.toml");
    let out = conf.check(&[&file]);
    out.file_error(&file, "no such file or directory");
}

#[test]
fn exec_in_berth_toml_is_rejected() {
    let conf = Conf::new();
    let defaults = conf.defaults("mode = \"inetd\"\nexec = [\"/bin/true\"]\n");
    let out = conf.check(&[]);
    out.error_at(&defaults, 2, 1, "exec: not allowed in berth.toml");
    // Checking berth.toml by name says the same.
    let out = conf.check(&[&defaults]);
    out.error_at(&defaults, 2, 1, "exec: not allowed in berth.toml");
}

#[test]
fn error_in_berth_toml_has_its_position() {
    let conf = Conf::new();
    let defaults = conf.defaults("mode = \"inetd\"\n\n[sandbox]\ntmp_size = \"lots\"\n");
    conf.service("app.toml", "exec = [\"/bin/true\"]\n");
    let out = conf.check(&[]);
    out.error_at(&defaults, 4, 12, "tmp_size: expected a size");
    assert_eq!(out.lines(), 1, "{}", out.stderr);
}

// --- valid configurations and directories ------------------------------------

#[test]
fn full_valid_config() {
    let conf = Conf::new();
    let data = conf.mkdir("srv/ssh-data");
    let certs = conf.mkdir("certs");
    let file = conf.service(
        "ssh.toml",
        &format!(
            r#"# every key of the SPEC example
mode = "inetd"
exec = ["/usr/sbin/dropbear", "-i", "-R", "-E"]
user = "root"
group = ""
environment = {{ LANG = "C.UTF-8" }}
working_directory = "/"
hostname = "ssh"

idle_timeout = "5min"
max_lifetime = "1h"
max_connections = 64
max_connections_per_source = 8
warm = 2

[sandbox]
network = "none"
read_only = ["/usr", "{certs}:/etc/ssl/certs"]
read_write = ["{data}:/data"]
propagation = "private"
tmp_size = "64M"
etc = ["passwd", "group"]
capabilities = ["net_bind_service"]
seccomp = "default"
syslog = true

[resources]
memory_max = "256M"
memory_high = "200M"
cpu_weight = 100
cpu_quota = "50%"
tasks_max = 64
io_weight = 100
"#,
            certs = certs.display(),
            data = data.display()
        ),
    );
    conf.check(&[]).ok();
    conf.check(&[&file]).ok();

    let services = berth::config::load_dir(conf.root()).expect("valid");
    assert_eq!(services.len(), 1);
    let s = &services[0];
    assert_eq!(s.name, "ssh");
    assert_eq!(s.max_connections_per_source, Some(8));
    assert_eq!(s.idle_timeout, Some(std::time::Duration::from_secs(300)));
    assert_eq!(s.sandbox.read_write[0].source, data);
    assert_eq!(s.sandbox.read_write[0].dest, PathBuf::from("/data"));
    assert_eq!(
        s.sandbox.capabilities,
        vec!["CAP_NET_BIND_SERVICE".to_string()]
    );
    assert!(s.sandbox.etc_explicit);
    assert_eq!(s.resources.cpu_quota, Some(50));
    assert_eq!(s.resources.memory_max, Some(256 << 20));
}

#[test]
fn minimal_service_gets_the_documented_defaults() {
    let conf = Conf::new();
    conf.service("my_app.toml", BASE);
    conf.check(&[]).ok();
    let s = &berth::config::load_dir(conf.root()).expect("valid")[0];
    assert_eq!(s.user, berth::config::UserRef::Name("nobody".into()));
    assert_eq!(s.group, None);
    assert_eq!(s.hostname, "my-app");
    assert_eq!(s.max_connections, 64);
    assert_eq!(s.warm, 0);
    assert_eq!(s.sandbox.tmp_size, 64 << 20);
    assert!(!s.sandbox.etc_explicit);
    assert!(s.sandbox.syslog);
}

#[test]
fn defaults_merge_with_service_overrides() {
    let conf = Conf::new();
    conf.defaults(
        "mode = \"inetd\"\nuser = \"root\"\nmax_connections = 10\n\
         [sandbox]\ntmp_size = \"16M\"\nsyslog = false\n\
         [resources]\nmemory_max = \"1G\"\ntasks_max = 32\n",
    );
    conf.service(
        "a.toml",
        "exec = [\"/bin/a\"]\nmax_connections = 5\n[sandbox]\ntmp_size = \"8M\"\n[resources]\ntasks_max = 4\n",
    );
    conf.service("b.toml", "mode = \"listen\"\nexec = [\"/bin/b\"]\n");
    conf.check(&[]).ok();

    let services = berth::config::load_dir(conf.root()).expect("valid");
    let names: Vec<_> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let (a, b) = (&services[0], &services[1]);
    assert_eq!(a.mode, berth::config::Mode::Inetd);
    assert_eq!(a.user, berth::config::UserRef::Name("root".into()));
    assert_eq!(a.max_connections, 5);
    assert_eq!(a.sandbox.tmp_size, 8 << 20);
    assert!(!a.sandbox.syslog, "[sandbox] merges key by key");
    assert_eq!(a.resources.tasks_max, Some(4));
    assert_eq!(
        a.resources.memory_max,
        Some(1 << 30),
        "[resources] merges key by key"
    );
    assert_eq!(b.mode, berth::config::Mode::Listen);
    assert_eq!(b.max_connections, 10);
    assert_eq!(b.sandbox.tmp_size, 16 << 20);
}

#[test]
fn single_service_file_uses_the_neighbouring_berth_toml() {
    let conf = Conf::new();
    conf.defaults("mode = \"inetd\"\n");
    let file = conf.service("app.toml", "exec = [\"/bin/app\"]\n");
    conf.check(&[&file]).ok();
    // Without the defaults, mode is missing.
    fs::remove_file(conf.root().join("berth.toml")).unwrap();
    conf.check(&[&file]).file_error(&file, "missing key `mode`");
}

#[test]
fn directory_with_several_services_reports_all_errors() {
    let conf = Conf::new();
    let a = conf.service("a.toml", &format!("{BASE}warm = -1\n"));
    conf.service("b.toml", BASE);
    let c = conf.service(
        "c.toml",
        &format!("{BASE}idle_timeout = \"soon\"\n[sandbox]\nseccomp = \"on\"\n"),
    );
    let bad = conf.service("Bad.toml", BASE);
    conf.service("notes.txt", "not a service");
    let out = conf.check(&[]);
    out.error_at(&a, 3, 8, "warm:");
    out.error_at(&c, 3, 16, "idle_timeout:");
    out.error_at(&c, 5, 11, "seccomp:");
    out.file_error(&bad, "service name \"Bad\"");
    assert_eq!(out.lines(), 4, "{}", out.stderr);

    let errors = berth::config::load_dir(conf.root()).expect_err("invalid");
    assert_eq!(errors.len(), 4);
    let (ok, errors) = berth::config::check(&[], conf.root());
    assert_eq!((ok, errors.len()), (1, 4));
}

#[test]
fn plain_directory_of_service_files() {
    let conf = Conf::new();
    conf.service("a.toml", BASE);
    let b = conf.service("b.toml", "mode = \"inetd\"\n");
    let out = conf.check(&[&conf.root().join("services")]);
    out.file_error(&b, "missing key `exec`");
    assert_eq!(out.lines(), 1, "{}", out.stderr);
}

#[test]
fn several_paths_are_all_checked() {
    let conf = Conf::new();
    let a = conf.service("a.toml", BASE);
    let defaults = conf.defaults("[sandbox]\nnetwork = \"host\"\n");
    let missing = conf.root().join("missing.toml");
    let out = conf.check(&[&a, &defaults, &missing]);
    out.file_error(&missing, "no such file or directory");
    assert_eq!(out.lines(), 1, "{}", out.stderr);
    conf.check(&[&a, &defaults]).ok();
}

#[test]
fn missing_config_dir() {
    let conf = Conf::new();
    let dir = conf.root().join("nowhere");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config-dir")
        .arg(&dir)
        .arg("check")
        .output()
        .expect("run berth");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}: no such file or directory", dir.display())),
        "{stderr}"
    );
}

#[test]
fn private_users_keys() {
    let (_c, _file, out) = check_service(
        "[sandbox]\nprivate_users = true\nread_write = [\"/tmp:/t:noidmap\", \"/tmp:/u\"]\n",
    );
    out.ok();
    let (_c, file, out) = check_service("[sandbox]\nread_only = [\"/usr:/u:idmapp\"]\n");
    out.error_at(&file, 4, 14, "expected \"SRC[:DST[:noidmap]]\"");
    let (_c, file, out) = check_service("[sandbox]\nprivate_users = 1\n");
    out.error_at(&file, 4, 17, "true or false");
    // The range is one for the supervisor: berth.toml only, whole blocks.
    let (_c, file, out) = check_service("private_users_range = \"1879048192-1879179263\"\n");
    out.error_at(&file, 3, 1, "expected it in berth.toml");
    let c = Conf::new();
    let d = c.defaults("private_users_range = \"1879048192-1879179263\"\n");
    c.check(&[&d]).ok();
    for bad in [
        "0-65535",
        "65536-65536",
        "65537-131072",
        "65536-131070",
        "x-y",
    ] {
        let c = Conf::new();
        let d = c.defaults(&format!("private_users_range = \"{bad}\"\n"));
        c.check(&[&d]).error_at(&d, 1, 23, "multiple of 65536");
    }
}
