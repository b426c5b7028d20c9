//! A service's own directories and secrets: `/run/NAME` writable by the
//! service user (`$RUNTIME_DIRECTORY`), `/var/lib/NAME` kept across
//! containers on the host's `/var/lib/berth/NAME` (`$STATE_DIRECTORY`), and
//! credentials copied into a read-only tmpfs (`$CREDENTIALS_DIRECTORY`).
//!
//! Each test runs `/bin/sh -c` scripts in inetd containers as `nobody`;
//! what a container prints is the answer to its connection.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Berth;

const T: Duration = Duration::from_secs(15);
const NOBODY: u32 = 65534;

/// An inetd service running `script` as `nobody` with extra lines.
fn sh_service(script: &str, top: &str, sandbox: &str) -> String {
    format!(
        "mode = \"inetd\"\nuser = \"nobody\"\nexec = [\"/bin/sh\", \"-c\", {script:?}]\n{top}\n\
         [sandbox]\n{sandbox}\n"
    )
}

fn start(name: &str, toml: &str, env: &[(&str, Option<&str>)]) -> (Berth, String) {
    Berth::start_tcp_env(name, toml, env)
}

fn request(addr: &str) -> String {
    common::tcp_request(addr, "")
}

/// The log line of a container that failed to start, which must name `what`.
fn failed_start(b: &Berth, what: &str) -> String {
    let line = b.log.wait_for("container failed to start", T);
    assert!(
        line.contains(what),
        "the failure does not name {what:?}: {line}"
    );
    line
}

/// A service name no other test (or run) uses, for paths on the host.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id())
}

/// `/var/lib/berth/NAME`, removed now and when dropped.
struct HostState(PathBuf);

impl HostState {
    fn new(name: &str) -> HostState {
        let p = Path::new("/var/lib/berth").join(name);
        let s = HostState(p);
        s.remove();
        s
    }

    fn remove(&self) {
        match std::fs::symlink_metadata(&self.0) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&self.0).expect("remove state dir"),
            Ok(_) => std::fs::remove_file(&self.0).expect("remove state link"),
            Err(_) => {}
        }
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        self.remove();
    }
}

// ---------------------------------------------------------------------------
// Runtime directory
// ---------------------------------------------------------------------------

#[test]
fn runtime_directory_is_writable_by_the_service_user() {
    if !common::require_root() {
        return;
    }
    let script = "echo \"$RUNTIME_DIRECTORY\"; id -u; \
                  echo hi > \"$RUNTIME_DIRECTORY/pid\" && cat \"$RUNTIME_DIRECTORY/pid\"; \
                  stat -c '%a %u %g' \"$RUNTIME_DIRECTORY\"; \
                  touch /run/elsewhere 2>/dev/null && echo RUN-WRITABLE; true";
    // Default: the service name.
    let (_b, addr) = start("rundef", &sh_service(script, "", ""), &[]);
    assert_eq!(
        request(&addr),
        format!("/run/rundef\n{NOBODY}\nhi\n755 {NOBODY} {NOBODY}\n")
    );
    // Named, and fresh in every container.
    let script = format!("ls -A \"$RUNTIME_DIRECTORY\"; {script}");
    let (_b, addr) = start(
        "runnamed",
        &sh_service(&script, "", "runtime_directory = \"sshd\""),
        &[],
    );
    for _ in 0..2 {
        assert_eq!(
            request(&addr),
            format!("/run/sshd\n{NOBODY}\nhi\n755 {NOBODY} {NOBODY}\n")
        );
    }
}

// ---------------------------------------------------------------------------
// State directory
// ---------------------------------------------------------------------------

#[test]
fn state_directory_is_kept_across_containers_and_on_the_host() {
    if !common::require_root() {
        return;
    }
    let name = unique("dstate");
    let host = HostState::new(&name);
    let script = "echo \"$STATE_DIRECTORY\"; \
                  cat \"$STATE_DIRECTORY/v\" 2>/dev/null || \
                  { echo \"value-$$\" > \"$STATE_DIRECTORY/v\" && echo wrote; }";
    let (b, addr) = start(
        &name,
        &sh_service(script, "", "state_directory = true"),
        &[],
    );
    let first = request(&addr);
    assert_eq!(first, format!("/var/lib/{name}\nwrote\n"));
    let value = std::fs::read_to_string(host.0.join("v")).expect("the value on the host");
    assert!(value.starts_with("value-"), "{value:?}");
    let second = request(&addr);
    assert_eq!(second, format!("/var/lib/{name}\n{value}"));

    let meta = std::fs::symlink_metadata(&host.0).expect("state dir");
    assert!(meta.is_dir());
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    let file = std::fs::metadata(host.0.join("v")).expect("value file");
    assert_eq!(file.uid(), NOBODY);
    drop(b);
}

#[test]
fn state_directory_not_set_is_not_there() {
    if !common::require_root() {
        return;
    }
    let script = "echo \"[${STATE_DIRECTORY-unset}]\"; [ -e /var ] && echo VAR; true";
    let (_b, addr) = start("nostate", &sh_service(script, "", ""), &[]);
    assert_eq!(request(&addr), "[unset]\n");
}

/// A symlink planted at /var/lib/berth/NAME (by whatever could write
/// there) must not turn the chown and the bind onto its target.
#[test]
fn state_directory_symlink_on_the_host_is_not_followed() {
    if !common::require_root() {
        return;
    }
    let name = unique("dstatelink");
    let host = HostState::new(&name);
    let target = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(target.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(target.path().join("host-secret"), "secret").expect("write");
    std::fs::create_dir_all("/var/lib/berth").expect("mkdir /var/lib/berth");
    std::os::unix::fs::symlink(target.path(), &host.0).expect("plant the link");

    let script = "ls \"$STATE_DIRECTORY\"; echo victim-ran";
    let (b, addr) = start(
        &name,
        &sh_service(script, "", "state_directory = true"),
        &[],
    );
    let answer = request(&addr);
    assert!(
        !answer.contains("host-secret"),
        "the link was followed into the container: {answer:?}"
    );
    assert_eq!(answer, "", "the container started");
    let line = failed_start(&b, &host.0.display().to_string());
    assert!(line.contains("symbolic link"), "{line}");
    let meta = std::fs::metadata(target.path()).expect("target");
    assert_eq!(
        (meta.uid(), meta.permissions().mode() & 0o7777),
        (0, 0o755),
        "the link's target was chowned or chmodded"
    );
    assert!(
        std::fs::symlink_metadata(&host.0)
            .expect("the link")
            .file_type()
            .is_symlink()
    );
}

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

/// Host files only root can read, as secrets are kept.
fn secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write secret");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

#[test]
fn credentials_are_a_read_only_copy_for_the_service_user_only() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = secret(dir.path(), "db", "hunter2");
    // A bare name: from berth's own $CREDENTIALS_DIRECTORY.
    let inherited = tempfile::tempdir().expect("tempdir");
    secret(inherited.path(), "tls-key", "KEY");
    let script = "d=\"$CREDENTIALS_DIRECTORY\"; echo \"$d\"; \
         cat \"$d/db-password\"; echo; cat \"$d/tls-key\"; echo; \
         stat -c '%n %a %u %g' \"$d\" \"$d/db-password\" \"$d/tls-key\"; \
         echo x > \"$d/db-password\" 2>/dev/null && echo WRITTEN; \
         touch \"$d/new\" 2>/dev/null && echo CREATED; \
         chmod 600 \"$d/db-password\" 2>&1 | grep -c 'Read-only file system'; \
         grep \" $d \" /proc/self/mountinfo | cut -d' ' -f6; \
         grep \" $d \" /proc/self/mountinfo | sed 's/.* - //' | cut -d' ' -f1; \
         setpriv --reuid=4242 --regid=4242 --clear-groups cat \"$d/db-password\" \
           >/dev/null 2>&1 && echo OTHER-READ || echo other-denied";
    let toml = sh_service(
        script,
        "",
        &format!(
            "credentials = [\"db-password:{}\", \"tls-key\"]\n\
             capabilities = [\"CAP_SETUID\", \"CAP_SETGID\"]",
            db.display()
        ),
    );
    let inherited_dir = inherited.path().to_str().expect("utf-8");
    let (_b, addr) = start(
        "creds",
        &toml,
        &[("CREDENTIALS_DIRECTORY", Some(inherited_dir))],
    );
    let answer = request(&addr);
    let mut lines: Vec<&str> = answer.lines().collect();
    // Never on a disk: the file system never swaps either.
    let fstype = if lines.len() > 8 { lines.remove(8) } else { "" };
    assert!(["tmpfs", "ramfs"].contains(&fstype), "{answer}");
    let d = "/run/credentials/creds";
    assert_eq!(
        lines,
        [
            d,
            "hunter2",
            "KEY",
            &format!("{d} 500 {NOBODY} {NOBODY}"),
            &format!("{d}/db-password 400 {NOBODY} {NOBODY}"),
            &format!("{d}/tls-key 400 {NOBODY} {NOBODY}"),
            "1",
            "ro,nosuid,nodev,noexec,relatime",
            "other-denied",
        ],
        "{answer}"
    );
    // The host's files are untouched.
    assert_eq!(std::fs::read_to_string(&db).expect("db"), "hunter2");
    assert_eq!(std::fs::metadata(&db).expect("db").uid(), 0);
}

#[test]
fn credentials_unset_leave_no_directory() {
    if !common::require_root() {
        return;
    }
    let script = "echo \"[${CREDENTIALS_DIRECTORY-unset}]\"; ls -A /run";
    let (_b, addr) = start("nocreds", &sh_service(script, "", ""), &[]);
    assert_eq!(request(&addr), "[unset]\nnocreds\n");
}

#[test]
fn a_credential_missing_at_start_fails_the_start_clearly() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = secret(dir.path(), "db", "hunter2");
    let toml = sh_service(
        "echo started",
        "",
        &format!("credentials = [\"db:{}\"]", db.display()),
    );
    let (b, addr) = start("credgone", &toml, &[]);
    assert_eq!(request(&addr), "started\n");
    // Gone after `berth check` passed: the next start fails, naming it.
    std::fs::remove_file(&db).expect("rm");
    assert_eq!(
        request(&addr),
        "",
        "a container started without its credential"
    );
    failed_start(
        &b,
        &format!("credential db: {} does not exist", db.display()),
    );
}

#[test]
fn a_bare_credential_needs_berths_credentials_directory() {
    if !common::require_root() {
        return;
    }
    let toml = sh_service("echo started", "", "credentials = [\"tls-key\"]");
    // berth started without systemd credentials.
    let (b, addr) = start("credbare", &toml, &[("CREDENTIALS_DIRECTORY", None)]);
    assert_eq!(request(&addr), "");
    failed_start(
        &b,
        "credential tls-key: berth has no $CREDENTIALS_DIRECTORY",
    );
    drop(b);
    // With one that lacks the name.
    let empty = tempfile::tempdir().expect("tempdir");
    let (b, addr) = start(
        "credbare",
        &toml,
        &[("CREDENTIALS_DIRECTORY", empty.path().to_str())],
    );
    assert_eq!(request(&addr), "");
    failed_start(
        &b,
        &format!(
            "credential tls-key: {}/tls-key does not exist in berth's $CREDENTIALS_DIRECTORY",
            empty.path().display()
        ),
    );
}
