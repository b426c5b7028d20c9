//! The keys one file sets, merged over berth.toml's and completed with the
//! documented defaults into a [`Service`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{ConfigError, Location};
use super::schema::{
    Bind, CredentialFile, DEFAULT_USERNS_RANGE, GroupRef, IpRule, Mode, Network, Propagation,
    RateLimit, Resources, Sandbox, Seccomp, Service, SliceLimits, UidRange, UserRef,
};
use crate::activation::ListenAddr;

pub(super) const DEFAULT_ETC: &[&str] = &["passwd", "group", "nsswitch.conf", "hosts", "localtime"];
const DEFAULT_TMP_SIZE: u64 = 64 << 20;
const DEFAULT_MAX_CONNECTIONS: u32 = 64;
const DEFAULT_SOURCE_PREFIX_V6: u8 = 64;
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const MISSING_MODE: &str =
    "mode = \"inetd\" or mode = \"listen\" (in the service file or berth.toml)";

/// A value and where it was written, for errors about how two keys combine.
#[derive(Debug, Clone)]
pub(super) struct Located<T> {
    pub(super) value: T,
    pub(super) at: Location,
}

/// The keys one file sets, each validated on its own (`None`: not set, or
/// set to something invalid that was reported). A service is its file's
/// settings merged over berth.toml's.
#[derive(Debug, Clone, Default)]
pub(super) struct FileSettings {
    /// Keys present, valid or not (to tell "missing" from "invalid").
    pub(super) seen: BTreeSet<&'static str>,
    pub(super) mode: Option<Located<Mode>>,
    pub(super) exec: Option<Vec<String>>,
    pub(super) user: Option<UserRef>,
    /// `Some(None)`: `group = ""`, the user's primary group.
    pub(super) group: Option<Option<GroupRef>>,
    pub(super) environment: Option<BTreeMap<String, String>>,
    pub(super) working_directory: Option<PathBuf>,
    pub(super) hostname: Option<String>,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) max_lifetime: Option<Duration>,
    pub(super) max_connections: Option<u32>,
    pub(super) max_connections_per_source: Option<u32>,
    pub(super) rate_limit_per_source: Option<Located<RateLimit>>,
    pub(super) source_prefix_v6: Option<u8>,
    pub(super) warm: Option<Located<u32>>,
    pub(super) stop_timeout: Option<Duration>,
    pub(super) freeze_after: Option<Located<Duration>>,
    pub(super) listen: Option<Vec<ListenAddr>>,
    pub(super) ip_allow: Option<Located<Vec<IpRule>>>,
    pub(super) ip_deny: Option<Located<Vec<IpRule>>>,
    pub(super) network: Option<Network>,
    pub(super) read_only: Option<Vec<Bind>>,
    pub(super) read_write: Option<Vec<Bind>>,
    pub(super) propagation: Option<Propagation>,
    pub(super) tmp_size: Option<u64>,
    pub(super) etc: Option<Vec<String>>,
    pub(super) capabilities: Option<Vec<String>>,
    pub(super) seccomp: Option<Seccomp>,
    pub(super) syslog: Option<bool>,
    pub(super) runtime_directory: Option<String>,
    pub(super) state_directory: Option<bool>,
    pub(super) credentials: Option<Vec<CredentialFile>>,
    pub(super) private_users: Option<bool>,
    pub(super) private_users_range: Option<UidRange>,
    pub(super) memory_max: Option<u64>,
    pub(super) memory_high: Option<u64>,
    pub(super) cpu_weight: Option<u64>,
    pub(super) cpu_quota: Option<u32>,
    pub(super) tasks_max: Option<u64>,
    pub(super) io_weight: Option<u64>,
    pub(super) slice_memory_max: Option<u64>,
    pub(super) slice_tasks_max: Option<u64>,
    pub(super) slice_cpu_quota: Option<u32>,
    pub(super) slice_cpu_weight: Option<u64>,
}

impl FileSettings {
    /// `freeze_after` as the service uses it: listen mode only, shorter
    /// than `idle_timeout` (a freeze after the stop would never happen). A
    /// value from berth.toml applies to the listen services and is ignored
    /// by the inetd ones; one in the service file itself must fit.
    fn check_freeze_after(&self, file: &Path, errors: &mut Vec<ConfigError>) -> Option<Duration> {
        let freeze = self.freeze_after.as_ref()?;
        let mode = self.mode.as_ref()?;
        if mode.value != Mode::Listen {
            if freeze.at.file == file {
                errors.push(ConfigError::Invalid {
                    at: freeze.at.clone(),
                    key: "freeze_after".to_string(),
                    message: "only applies to mode = \"listen\" (an inetd container serves one connection and ends with it; there is nothing idle to freeze)".to_string(),
                });
            }
            return None;
        }
        if let Some(idle) = self.idle_timeout
            && freeze.value >= idle
        {
            errors.push(ConfigError::Invalid {
                at: freeze.at.clone(),
                key: "freeze_after".to_string(),
                message: format!(
                    "expected less than idle_timeout ({}), found {} (the container is stopped at idle_timeout, so it would never be frozen)",
                    humantime_ish(idle),
                    humantime_ish(freeze.value)
                ),
            });
            return None;
        }
        Some(freeze.value)
    }

    /// `self` (the service file) over `defaults` (berth.toml), key by key.
    pub(super) fn over(self, defaults: &FileSettings) -> FileSettings {
        macro_rules! pick {
            ($($field:ident),*) => {
                FileSettings {
                    seen: self.seen.union(&defaults.seen).copied().collect(),
                    $($field: self.$field.or_else(|| defaults.$field.clone()),)*
                }
            };
        }
        pick!(
            mode,
            exec,
            user,
            group,
            environment,
            working_directory,
            hostname,
            idle_timeout,
            max_lifetime,
            max_connections,
            max_connections_per_source,
            rate_limit_per_source,
            source_prefix_v6,
            warm,
            stop_timeout,
            freeze_after,
            listen,
            ip_allow,
            ip_deny,
            network,
            read_only,
            read_write,
            propagation,
            tmp_size,
            etc,
            capabilities,
            seccomp,
            syslog,
            runtime_directory,
            state_directory,
            credentials,
            private_users,
            private_users_range,
            memory_max,
            memory_high,
            cpu_weight,
            cpu_quota,
            tasks_max,
            io_weight,
            slice_memory_max,
            slice_tasks_max,
            slice_cpu_quota,
            slice_cpu_weight
        )
    }

    /// Builds the service of `file` from the merged keys, checking what needs
    /// several of them; errors are added to `errors`. `defaults_incomplete`:
    /// berth.toml had errors, so a key missing here may be one that was
    /// invalid there and must not be reported again as missing.
    pub(super) fn into_service(
        self,
        name: Option<&str>,
        file: &Path,
        defaults_incomplete: bool,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Service> {
        let file_at = Location::file(file);
        if self.mode.is_none() && !self.seen.contains("mode") && !defaults_incomplete {
            errors.push(ConfigError::Missing {
                at: file_at.clone(),
                key: "mode",
                expected: MISSING_MODE,
            });
        }
        if self.exec.is_none() && !self.seen.contains("exec") {
            errors.push(ConfigError::Missing {
                at: file_at,
                key: "exec",
                expected: "the command to run, such as exec = [\"/usr/bin/app\", \"--flag\"]",
            });
        }
        if let (Some(mode), Some(warm)) = (&self.mode, &self.warm)
            && mode.value == Mode::Listen
            && warm.value > 1
        {
            // Point at whichever of the two the service file itself sets.
            let at = if warm.at.file == file || mode.at.file != file {
                warm.at.clone()
            } else {
                mode.at.clone()
            };
            errors.push(ConfigError::Invalid {
                at,
                key: "warm".to_string(),
                message: format!(
                    "expected 0 or 1 with mode = \"listen\" (one container serves all connections; 1 keeps the next one prepared), found {}",
                    warm.value
                ),
            });
        }
        if let (Some(mode), Some(limit)) = (&self.mode, &self.rate_limit_per_source)
            && mode.value == Mode::Listen
        {
            // The application accepts in listen mode: berth never sees
            // single connections to refuse. Point at the service file's
            // own key if it has one.
            let at = if limit.at.file == file || mode.at.file != file {
                limit.at.clone()
            } else {
                mode.at.clone()
            };
            errors.push(ConfigError::Invalid {
                    at,
                    key: "rate_limit_per_source".to_string(),
                    message: "only applies to mode = \"inetd\" (in listen mode the application accepts connections, berth cannot refuse single ones)".to_string(),
                });
        }
        let freeze_after = self.check_freeze_after(file, errors);
        if self.listen.is_none() && !self.seen.contains("listen") {
            // Only the generated socket unit carries the lists: without
            // `listen` they would silently not apply. Lists from berth.toml
            // apply to the services that have `listen`.
            for (key, list) in [("ip_allow", &self.ip_allow), ("ip_deny", &self.ip_deny)] {
                if let Some(list) = list.as_ref().filter(|l| l.at.file == file) {
                    errors.push(ConfigError::Invalid {
                        at: list.at.clone(),
                        key: key.to_string(),
                        message: "needs `listen` in the same file (the lists become IPAddressAllow=/IPAddressDeny= of the socket unit berth's generator writes for `listen`; a hand-written socket unit sets them itself)".to_string(),
                    });
                }
            }
        }
        let name = name?;
        let (Some(mode), Some(exec)) = (self.mode, self.exec) else {
            return None;
        };
        let etc_explicit = self.etc.is_some();
        Some(Service {
            name: name.to_string(),
            file: file.to_path_buf(),
            mode: mode.value,
            exec,
            user: self
                .user
                .unwrap_or_else(|| UserRef::Name("nobody".to_string())),
            group: self.group.flatten(),
            environment: self.environment.unwrap_or_default(),
            working_directory: self.working_directory.unwrap_or_else(|| PathBuf::from("/")),
            hostname: self.hostname.unwrap_or_else(|| name.replace('_', "-")),
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
            max_connections: self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            max_connections_per_source: self.max_connections_per_source,
            rate_limit_per_source: self.rate_limit_per_source.map(|r| r.value),
            source_prefix_v6: self.source_prefix_v6.unwrap_or(DEFAULT_SOURCE_PREFIX_V6),
            warm: self.warm.map_or(0, |warm| warm.value),
            stop_timeout: self.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
            freeze_after,
            listen: self.listen.unwrap_or_default(),
            ip_allow: self.ip_allow.map(|l| l.value).unwrap_or_default(),
            ip_deny: self.ip_deny.map(|l| l.value).unwrap_or_default(),
            sandbox: Sandbox {
                network: self.network.unwrap_or(Network::None),
                read_only: self.read_only.unwrap_or_default(),
                read_write: self.read_write.unwrap_or_default(),
                propagation: self.propagation.unwrap_or(Propagation::Private),
                tmp_size: self.tmp_size.unwrap_or(DEFAULT_TMP_SIZE),
                etc: self
                    .etc
                    .unwrap_or_else(|| DEFAULT_ETC.iter().map(|s| s.to_string()).collect()),
                etc_explicit,
                capabilities: self.capabilities.unwrap_or_default(),
                seccomp: self.seccomp.unwrap_or(Seccomp::Default),
                syslog: self.syslog.unwrap_or(true),
                runtime_directory: self.runtime_directory.unwrap_or_else(|| name.to_string()),
                state_directory: self.state_directory.unwrap_or(false),
                credentials: self.credentials.unwrap_or_default(),
                private_users: self.private_users.unwrap_or(false),
            },
            resources: Resources {
                memory_max: self.memory_max,
                memory_high: self.memory_high,
                cpu_weight: self.cpu_weight,
                cpu_quota: self.cpu_quota,
                tasks_max: self.tasks_max,
                io_weight: self.io_weight,
            },
            slice: SliceLimits {
                memory_max: self.slice_memory_max,
                tasks_max: self.slice_tasks_max,
                cpu_quota: self.slice_cpu_quota,
                cpu_weight: self.slice_cpu_weight,
            },
            private_users_range: self.private_users_range.unwrap_or(DEFAULT_USERNS_RANGE),
        })
    }
}

/// A duration for messages: "30s", "1.5s", "250ms".
fn humantime_ish(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}
