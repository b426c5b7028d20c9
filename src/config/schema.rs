//! The validated configuration of a service, as the rest of berth uses it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How connections reach the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One container per connection; the connection is fd 0 and 1.
    Inetd,
    /// One container per service; listening sockets passed as LISTEN_FDS.
    Listen,
}

/// A user as written in the configuration: a name or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Name(String),
    Id(u32),
}

/// A group as written in the configuration: a name or a numeric id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRef {
    Name(String),
    Id(u32),
}

/// A bind mount `SRC[:DST[:noidmap]]`; `dest` defaults to `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub dest: PathBuf,
    /// With `private_users`: bound idmapped (files keep their owners
    /// inside); `:noidmap` turns it off for this bind.
    pub idmap: bool,
}

/// `private_users_range = "FIRST-LAST"` (berth.toml): the host uids and
/// gids berth hands out in blocks of [`USERNS_BLOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

/// The width of one container's block of host ids: uid/gid 0-65535 inside.
pub const USERNS_BLOCK: u32 = 65536;

/// Above nspawn's 524288-1879048191 and systemd's DynamicUser= range
/// (61184-65519): 0x70000000-0x7fffffff, 4096 blocks.
pub const DEFAULT_USERNS_RANGE: UidRange = UidRange {
    first: 0x7000_0000,
    last: 0x7fff_ffff,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Private network namespace holding only `lo`, up.
    None,
    /// The host's network namespace.
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    Private,
    Slave,
    Shared,
}

/// `[sandbox] seccomp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seccomp {
    /// An allow-list of what system services need, the deny-list on top.
    Default,
    /// The deny-list only.
    Compat,
    /// No filter.
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub network: Network,
    /// Extra read-only binds; `/usr` and the merged-/usr links are always there.
    pub read_only: Vec<Bind>,
    pub read_write: Vec<Bind>,
    pub propagation: Propagation,
    /// Size of the private /tmp in bytes.
    pub tmp_size: u64,
    /// Host /etc entries (relative to /etc) bound read-only.
    pub etc: Vec<String>,
    /// Whether `etc` was written explicitly (missing entries are then errors;
    /// missing entries of the default list are skipped).
    pub etc_explicit: bool,
    /// Capabilities kept, normalised to upper case `CAP_*` names.
    pub capabilities: Vec<String>,
    pub seccomp: Seccomp,
    pub syslog: bool,
    /// Name of the container's writable `/run/NAME` (default: the service
    /// name), one path component.
    pub runtime_directory: String,
    /// `/var/lib/berth/SERVICE` on the host bound at `/var/lib/SERVICE`.
    pub state_directory: bool,
    /// Copied at start into `/run/credentials/SERVICE`.
    pub credentials: Vec<CredentialFile>,
    /// Own user namespace: ids 0-65535 inside map to a block of
    /// `private_users_range` on the host.
    pub private_users: bool,
}

/// One entry of `[sandbox] credentials`: `NAME[:PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFile {
    /// The file name inside the credentials directory.
    pub name: String,
    /// Host file to copy; `None`: `NAME` in berth's own
    /// `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=` on berth.service).
    pub source: Option<PathBuf>,
}

/// `[resources]`: properties of the container's transient scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub cpu_weight: Option<u64>,
    /// Percent of one CPU, e.g. 50 for "50%", 200 for "200%".
    pub cpu_quota: Option<u32>,
    pub tasks_max: Option<u64>,
    pub io_weight: Option<u64>,
}

/// `[slice]`: properties of `berth-NAME.slice`, all of a service's
/// containers together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceLimits {
    pub memory_max: Option<u64>,
    pub tasks_max: Option<u64>,
    /// Percent of one CPU, e.g. 200 for "200%".
    pub cpu_quota: Option<u32>,
    pub cpu_weight: Option<u64>,
}

impl SliceLimits {
    pub fn is_empty(&self) -> bool {
        *self == SliceLimits::default()
    }
}

/// `rate_limit_per_source = "N/INTERVAL"`: at most `count` new connections
/// per source in any `per`, refilled evenly (a token bucket of `count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

/// One fully validated service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The file stem.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    pub mode: Mode,
    /// `exec[0]` is an absolute path, resolved inside the container.
    pub exec: Vec<String>,
    pub user: UserRef,
    pub group: Option<GroupRef>,
    pub environment: BTreeMap<String, String>,
    pub working_directory: PathBuf,
    pub hostname: String,
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    pub max_connections: u32,
    pub max_connections_per_source: Option<u32>,
    /// inetd: new connections per source and interval (token bucket).
    pub rate_limit_per_source: Option<RateLimit>,
    /// IPv6 peers count per /N for the per-source limits (1 to 128).
    pub source_prefix_v6: u8,
    pub warm: u32,
    /// Stopping a container: SIGTERM to the application, SIGKILL to all of
    /// it this much later.
    pub stop_timeout: Duration,
    /// listen: frozen (cgroup freezer) after this long idle, thawed by the
    /// next connection; always shorter than `idle_timeout`.
    pub freeze_after: Option<Duration>,
    /// `listen`: the addresses of the socket unit the generator writes
    /// (empty: a hand-written socket unit, or none, hands berth the sockets).
    pub listen: Vec<crate::activation::ListenAddr>,
    /// `ip_allow`/`ip_deny`: IPAddressAllow=/IPAddressDeny= of that unit
    /// (only set where `listen` is).
    pub ip_allow: Vec<IpRule>,
    pub ip_deny: Vec<IpRule>,
    pub sandbox: Sandbox,
    pub resources: Resources,
    pub slice: SliceLimits,
    /// berth.toml's `private_users_range` (the same for every service).
    pub private_users_range: UidRange,
}

/// One entry of `ip_allow`/`ip_deny`, as systemd's IPAddressAllow= takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRule {
    Any,
    Localhost,
    LinkLocal,
    Multicast,
    /// An address and its prefix length (32 or 128 for a single address).
    Prefix(IpAddr, u8),
}

impl std::fmt::Display for IpRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpRule::Any => f.write_str("any"),
            IpRule::Localhost => f.write_str("localhost"),
            IpRule::LinkLocal => f.write_str("link-local"),
            IpRule::Multicast => f.write_str("multicast"),
            IpRule::Prefix(addr, len) if *len == if addr.is_ipv4() { 32 } else { 128 } => {
                write!(f, "{addr}")
            }
            IpRule::Prefix(addr, len) => write!(f, "{addr}/{len}"),
        }
    }
}

impl std::str::FromStr for IpRule {
    type Err = ();
    /// What IPAddressAllow= accepts: a keyword, `ADDR` or `ADDR/LEN`, v4 or v6.
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "any" => return Ok(IpRule::Any),
            "localhost" => return Ok(IpRule::Localhost),
            "link-local" => return Ok(IpRule::LinkLocal),
            "multicast" => return Ok(IpRule::Multicast),
            _ => {}
        }
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| ())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(len) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
                len.parse::<u8>().ok().filter(|&l| l <= max).ok_or(())?
            }
            Some(_) => return Err(()),
        };
        Ok(IpRule::Prefix(addr, len))
    }
}
