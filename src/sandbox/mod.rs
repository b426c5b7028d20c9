//! The sandbox: one container = one process tree in fresh namespaces on a
//! tmpfs root.
//!
//! The supervisor never forks to build a sandbox. A single-threaded
//! `berth sandbox-zygote`, exec'd once, forks each container's PID 1 with
//! `CLONE_PARENT | CLONE_NEWPID` (so PID 1 is the supervisor's child) and the
//! spec from the request. With `private_users` it forks an outer stage
//! instead, and `berth inetd`, which builds one container, execs
//! `berth sandbox-stage`: that stage gets `Setup(spec)`, unshares the pid
//! namespace, forks PID 1 and reports `Forked{pid}`. PID 1 talks to the
//! supervisor over a typed channel ([`proto`]):
//!
//! ```text
//! supervisor             zygote                      PID 1                                app
//!   Init(spec) + chan ─▶ clone(NEWPID) ────────────▶ unshare(ns), mounts, hostname, lo up
//!              ◀──────── Forked{pid}
//!              ◀───────────────────────────────────── Prepared
//!   (scope created for the pids)
//!   Start + fds ─────────────────────────────────────────▶ unshare(cgroup); fork ─────▶ creds, caps,
//!              ◀──────────────────────────────────────────────────────────────────── seccomp, exec
//!   EOF = exec done, or Failed(error)
//! ```
//!
//! PID 1 stays as the reaper of the pid namespace: it forwards termination
//! signals and exits with the application's status, which the supervisor
//! reaps (an outer stage relays it as its own exit status).
//! Once the application runs, PID 1 keeps no capability, `no_new_privs` and
//! a seccomp allow-list, and the application is in a Landlock domain PID 1
//! is outside of (see `init`).
//!
//! One module per process role: [`zygote`], [`stage`] (outer, and PID 1's
//! first steps), `init` (PID 1), `exec` (the application up to execve); `userns` makes the
//! user namespace of `private_users` (in the stage, before the others).

pub mod proto;
pub mod spawn;
pub mod stage;
pub mod zygote;

mod creds;
mod exec;
mod init;
mod mounts;
mod net;
mod seccomp;
mod userns;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::config::Propagation;
pub use seccomp::SeccompError;

/// Whether berth has seccomp syscall tables for the architecture it was
/// built for (x86_64, aarch64). Building a container's filter fails the
/// same way; calling this at start makes it an error there instead.
pub fn check_seccomp_architecture() -> Result<(), SeccompError> {
    seccomp::Arch::native().map(|_| ())
}

/// Everything the stage needs to build one container. Plain data: the
/// supervisor resolved users, paths and defaults before sending it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub service: String,
    /// argv; `exec[0]` is resolved inside the container.
    pub exec: Vec<String>,
    /// Environment of the application except `LISTEN_*`, which the stage
    /// adds because only it knows the pid the application sees.
    pub env: Vec<(String, String)>,
    /// `LISTEN_FDNAMES` entries, one per listening socket (listen mode).
    pub listen_fdnames: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub working_directory: PathBuf,
    /// New network namespace with only `lo`.
    pub private_network: bool,
    /// Empty directory on the host the tmpfs root is mounted on (inside the
    /// stage's private mount namespace only).
    pub staging_dir: PathBuf,
    pub binds: Vec<BindSpec>,
    pub propagation: Propagation,
    pub tmp_size: u64,
    pub etc: Vec<EtcEntry>,
    /// Capability names (`CAP_*`) the application keeps.
    pub capabilities: Vec<String>,
    pub seccomp: SeccompProfile,
    /// Host socket bound at `/dev/log` (journald's syslog socket).
    pub dev_log: Option<PathBuf>,
    /// Connect the application's stderr (and stdout, in listen mode) to
    /// journald from inside the container's scope.
    pub journal: Option<JournalSpec>,
    /// Kill the container if the supervisor dies (foreground `berth run`
    /// without scopes, where nothing else would clean it up).
    pub die_with_supervisor: bool,
    /// Built ahead of need (`warm`): the stage runs as `SCHED_BATCH` until
    /// the supervisor hands it a connection.
    pub low_priority: bool,
    /// Name of `/run/NAME`, made writable by the application's user.
    pub runtime_directory: String,
    /// `STATE_BASE/SERVICE` on the host (created for the application's
    /// user) bound read-write at `/var/lib/SERVICE`.
    pub state_directory: bool,
    /// Files copied into a read-only tmpfs at `CREDENTIALS_BASE/SERVICE`.
    /// The stage reads them on the host before the pivot: the bytes never
    /// travel through the spec (nor touch a disk).
    pub credentials: Vec<CredentialSpec>,
    /// `private_users`: the first host id of the container's block; ids
    /// 0-65535 inside are `base`..`base+65535` outside.
    pub private_users: Option<u32>,
}

impl Spec {
    /// The host uid and gid of in-container `(uid, gid)`: the same without
    /// private users, shifted into the block with them.
    pub fn host_ids(&self, (uid, gid): (u32, u32)) -> (u32, u32) {
        match self.private_users {
            Some(base) => (base.saturating_add(uid), base.saturating_add(gid)),
            None => (uid, gid),
        }
    }
}

/// One credential: a host file copied into the container at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialSpec {
    /// The file name in the credentials directory.
    pub name: String,
    /// The host file read by the stage.
    pub source: PathBuf,
    /// Found in berth's own `$CREDENTIALS_DIRECTORY` (for error messages).
    pub inherited: bool,
}

/// Which seccomp filters the application runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    /// No filter.
    Off,
    /// The deny-list alone.
    Compat,
    /// The allow-list of system-service calls, the deny-list on top.
    Default,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindSpec {
    pub source: PathBuf,
    pub dest: PathBuf,
    pub read_only: bool,
    /// With private users: idmapped through the container's user namespace.
    pub idmap: bool,
}

/// How the container's output is attributed in the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalSpec {
    /// `SYSLOG_IDENTIFIER=`: the service name.
    pub identifier: String,
    /// The container's scope.
    pub unit: String,
    /// stdout goes to the journal too (listen mode; in inetd mode stdout is
    /// the connection).
    pub stdout: bool,
}

/// An entry of the host's `/etc` bound read-only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtcEntry {
    pub name: String,
    /// Explicitly configured: missing on the host is an error, not a skip.
    pub required: bool,
}

/// Where state directories live on the host (`STATE_BASE/SERVICE`).
pub const STATE_BASE: &str = "/var/lib/berth";
/// Where credentials appear inside containers (`CREDENTIALS_BASE/SERVICE`).
pub const CREDENTIALS_BASE: &str = "/run/credentials";

/// Where the stage mounts the container root before pivoting into it.
pub const DEFAULT_STAGING_DIR: &str = "/run/berth/root";

/// `PATH` given to applications unless the service sets its own.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
