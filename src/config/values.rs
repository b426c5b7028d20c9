//! One validator per kind of value: each checks a single key's value and
//! returns it in the form of the schema, or the error to report there.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::de::{DeInteger, DeValue};

use super::error::ConfigError;
use super::schema::{
    Bind, CredentialFile, GroupRef, IpRule, RateLimit, USERNS_BLOCK, UidRange, UserRef,
};
use super::units::{parse_duration, parse_size};
use super::validate::{FileValidator, TomlValue, host_checks};
use crate::activation::ListenAddr;

const RESERVED_ENV: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "BERTH_SERVICE",
    "NOTIFY_SOCKET",
    "RUNTIME_DIRECTORY",
    "STATE_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
];
const EXPECT_DURATION: &str = "a duration such as \"250ms\", \"30s\", \"5min\" or \"1h\"";
const EXPECT_SIZE: &str =
    "a size such as \"64K\", \"256M\" or \"2G\" (or an integer number of bytes)";

type Checked<T> = Result<T, ConfigError>;

impl FileValidator<'_> {
    /// Every value of `results`, or the first error (the others are recorded),
    /// so that each bad entry of an array is reported.
    fn all_ok<T>(&mut self, results: Vec<Checked<T>>) -> Checked<Vec<T>> {
        let mut values = Vec::with_capacity(results.len());
        let mut first_error = None;
        for result in results {
            match result {
                Ok(value) => values.push(value),
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(e) => self.push(e),
            }
        }
        match first_error {
            None => Ok(values),
            Some(e) => Err(e),
        }
    }

    fn string<'v>(&self, key: &str, value: &'v TomlValue, expected: &str) -> Checked<&'v str> {
        match value.get_ref() {
            DeValue::String(s) if s.contains('\0') => Err(self.invalid(
                key,
                value.span(),
                format!("expected {expected} without NUL characters"),
            )),
            DeValue::String(s) => Ok(s),
            _ => Err(self.wrong_type(key, value, expected)),
        }
    }

    fn array<'v>(
        &self,
        key: &str,
        value: &'v TomlValue<'v>,
        expected: &str,
    ) -> Checked<&'v [TomlValue<'v>]> {
        match value.get_ref() {
            DeValue::Array(items) => Ok(items),
            _ => Err(self.wrong_type(key, value, expected)),
        }
    }

    pub(super) fn one_of<T: Copy>(
        &self,
        key: &str,
        value: &TomlValue,
        choices: &[(&str, T)],
    ) -> Checked<T> {
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        let expected = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        let s = self.string(key, value, &expected)?;
        choices
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| self.bad_value(key, value, &expected))
    }

    pub(super) fn integer(&self, key: &str, value: &TomlValue, min: i64, max: i64) -> Checked<i64> {
        let expected = if max == i64::MAX || max == u32::MAX as i64 {
            format!("an integer of at least {min}")
        } else {
            format!("an integer from {min} to {max}")
        };
        match value.get_ref() {
            DeValue::Integer(i) => match integer_value(i) {
                Some(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(self.bad_value(key, value, &expected)),
            },
            _ => Err(self.wrong_type(key, value, &expected)),
        }
    }

    pub(super) fn duration(&self, key: &str, value: &TomlValue) -> Checked<Duration> {
        let s = self.string(key, value, EXPECT_DURATION)?;
        match parse_duration(s) {
            Some(d) if d.is_zero() => {
                Err(self.bad_value(key, value, "a duration greater than zero"))
            }
            Some(d) => Ok(d),
            None => Err(self.bad_value(key, value, EXPECT_DURATION)),
        }
    }

    /// `"N/INTERVAL"`: at least one connection per interval of at least 1ms.
    pub(super) fn rate_limit(&self, key: &str, value: &TomlValue) -> Checked<RateLimit> {
        const EXPECTED: &str =
            "a rate such as \"20/10s\" or \"100/1min\" (connections, then a duration)";
        let s = self.string(key, value, EXPECTED)?;
        let Some((count, per)) = s.split_once('/') else {
            return Err(self.bad_value(key, value, EXPECTED));
        };
        let count = count.trim();
        let count = match count.parse::<u32>() {
            Ok(n) if count.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(self.bad_value(key, value, EXPECTED)),
        };
        if count == 0 {
            return Err(self.bad_value(
                key,
                value,
                "a rate of at least one connection per interval, such as \"20/10s\"",
            ));
        }
        match parse_duration(per) {
            Some(d) if d.is_zero() => Err(self.bad_value(
                key,
                value,
                "a rate over an interval greater than zero, such as \"20/10s\"",
            )),
            Some(per) => Ok(RateLimit { count, per }),
            None => Err(self.bad_value(key, value, EXPECTED)),
        }
    }

    pub(super) fn size(&self, key: &str, value: &TomlValue) -> Checked<u64> {
        let bytes = match value.get_ref() {
            DeValue::Integer(i) => match integer_value(i) {
                Some(n) if n > 0 => return Ok(n as u64),
                Some(_) => return Err(self.bad_value(key, value, "a size greater than zero")),
                None => return Err(self.bad_value(key, value, EXPECT_SIZE)),
            },
            DeValue::String(_) => parse_size(self.string(key, value, EXPECT_SIZE)?),
            _ => return Err(self.wrong_type(key, value, EXPECT_SIZE)),
        };
        match bytes {
            Some(0) => Err(self.bad_value(key, value, "a size greater than zero")),
            Some(b) => Ok(b),
            None => Err(self.bad_value(key, value, EXPECT_SIZE)),
        }
    }

    pub(super) fn percent(&self, key: &str, value: &TomlValue) -> Checked<u32> {
        const EXPECTED: &str = "a percentage of one CPU such as \"50%\" or \"200%\"";
        let s = self.string(key, value, EXPECTED)?;
        let number = s
            .strip_suffix('%')
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok());
        match number {
            Some(0) => Err(self.bad_value(key, value, "a percentage of at least \"1%\"")),
            Some(n) => Ok(n),
            None => Err(self.bad_value(key, value, EXPECTED)),
        }
    }

    pub(super) fn absolute_path(&self, key: &str, value: &TomlValue) -> Checked<PathBuf> {
        const EXPECTED: &str = "an absolute path";
        let s = self.string(key, value, EXPECTED)?;
        if !s.starts_with('/') {
            return Err(self.bad_value(key, value, EXPECTED));
        }
        if s.split('/').any(|c| c == "..") {
            return Err(self.bad_value(key, value, "an absolute path without \"..\""));
        }
        Ok(normalize(s))
    }

    pub(super) fn exec(&self, value: &TomlValue) -> Checked<Vec<String>> {
        const EXPECTED: &str =
            "a non-empty array of strings such as [\"/usr/bin/app\", \"--flag\"]";
        let items = self.array("exec", value, EXPECTED)?;
        if items.is_empty() {
            return Err(self.bad_value("exec", value, EXPECTED));
        }
        let mut argv = Vec::with_capacity(items.len());
        for (i, arg) in items.iter().enumerate() {
            argv.push(
                self.string(&format!("exec[{i}]"), arg, "a string")?
                    .to_string(),
            );
        }
        if !argv[0].starts_with('/') {
            return Err(self.bad_value(
                "exec[0]",
                &items[0],
                "an absolute path to the program (it is resolved inside the container)",
            ));
        }
        Ok(argv)
    }

    pub(super) fn user(&self, value: &TomlValue) -> Checked<UserRef> {
        const EXPECTED: &str = "a user name or a numeric uid";
        match value.get_ref() {
            DeValue::Integer(i) => match numeric_id(i) {
                Some(id) => Ok(UserRef::Id(id)),
                None => Err(self.bad_value("user", value, "a uid from 0 to 4294967294")),
            },
            DeValue::String(_) => {
                let name = self.string("user", value, EXPECTED)?;
                if name.is_empty() {
                    return Err(self.bad_value("user", value, EXPECTED));
                }
                if let Some(id) = name.parse::<u32>().ok().filter(|&id| id != u32::MAX) {
                    return Ok(UserRef::Id(id));
                }
                if !host_checks() {
                    return Ok(UserRef::Name(name.to_string()));
                }
                match nix::unistd::User::from_name(name) {
                    Ok(Some(_)) => Ok(UserRef::Name(name.to_string())),
                    Ok(None) => Err(ConfigError::UnknownUser {
                        at: self.at(value.span()),
                        name: name.to_string(),
                    }),
                    Err(e) => Err(self.invalid(
                        "user",
                        value.span(),
                        format!("cannot look up user {name:?}: {e}"),
                    )),
                }
            }
            _ => Err(self.wrong_type("user", value, EXPECTED)),
        }
    }

    /// `Ok(None)`: `""`, the user's primary group.
    pub(super) fn group(&self, value: &TomlValue) -> Checked<Option<GroupRef>> {
        const EXPECTED: &str = "a group name, a numeric gid or \"\" for the user's primary group";
        match value.get_ref() {
            DeValue::Integer(i) => match numeric_id(i) {
                Some(id) => Ok(Some(GroupRef::Id(id))),
                None => Err(self.bad_value("group", value, "a gid from 0 to 4294967294")),
            },
            DeValue::String(_) => {
                let name = self.string("group", value, EXPECTED)?;
                if name.is_empty() {
                    return Ok(None);
                }
                if let Some(id) = name.parse::<u32>().ok().filter(|&id| id != u32::MAX) {
                    return Ok(Some(GroupRef::Id(id)));
                }
                if !host_checks() {
                    return Ok(Some(GroupRef::Name(name.to_string())));
                }
                match nix::unistd::Group::from_name(name) {
                    Ok(Some(_)) => Ok(Some(GroupRef::Name(name.to_string()))),
                    Ok(None) => Err(ConfigError::UnknownGroup {
                        at: self.at(value.span()),
                        name: name.to_string(),
                    }),
                    Err(e) => Err(self.invalid(
                        "group",
                        value.span(),
                        format!("cannot look up group {name:?}: {e}"),
                    )),
                }
            }
            _ => Err(self.wrong_type("group", value, EXPECTED)),
        }
    }

    pub(super) fn environment(&mut self, value: &TomlValue) -> Checked<BTreeMap<String, String>> {
        const EXPECTED: &str = "a table of strings such as { LANG = \"C.UTF-8\" }";
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.wrong_type("environment", value, EXPECTED));
        };
        let results = table
            .iter()
            .map(|(key, value)| {
                let name: &str = key.get_ref();
                if !is_env_name(name) {
                    return Err(self.invalid(
                        "environment",
                        key.span(),
                        format!(
                            "expected a variable name matching [A-Za-z_][A-Za-z0-9_]*, found {name:?}"
                        ),
                    ));
                }
                if RESERVED_ENV.contains(&name) {
                    return Err(self.invalid(
                        "environment",
                        key.span(),
                        format!(
                            "{name} is set by berth and cannot be configured, expected another variable name"
                        ),
                    ));
                }
                let text = self.string(&format!("environment.{name}"), value, "a string")?;
                Ok((name.to_string(), text.to_string()))
            })
            .collect();
        Ok(self.all_ok(results)?.into_iter().collect())
    }

    pub(super) fn hostname(&self, value: &TomlValue) -> Checked<String> {
        const EXPECTED: &str = "a host name of 1 to 64 letters, digits, \"-\" and \".\"";
        let s = self.string("hostname", value, EXPECTED)?;
        let valid = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !s.starts_with(['-', '.'])
            && !s.contains("..");
        if valid {
            Ok(s.to_string())
        } else {
            Err(self.bad_value("hostname", value, EXPECTED))
        }
    }

    pub(super) fn binds(&mut self, key: &str, value: &TomlValue) -> Checked<Vec<Bind>> {
        const EXPECTED: &str =
            "an array of \"SRC[:DST[:noidmap]]\" absolute paths such as [\"/srv/data:/data\"]";
        let items = self.array(key, value, EXPECTED)?;
        let results = items.iter().map(|entry| self.bind(key, entry)).collect();
        self.all_ok(results)
    }

    fn bind(&self, key: &str, value: &TomlValue) -> Checked<Bind> {
        const EXPECTED: &str = "\"SRC[:DST[:noidmap]]\" with absolute paths";
        let s = self.string(key, value, EXPECTED)?;
        let mut parts = s.splitn(3, ':');
        let src = parts.next().unwrap_or(s);
        let dst = parts.next().unwrap_or(src);
        let idmap = match parts.next() {
            None => true,
            Some("noidmap") => false,
            Some(_) => return Err(self.bad_value(key, value, EXPECTED)),
        };
        if !src.starts_with('/') || !dst.starts_with('/') {
            return Err(self.bad_value(key, value, EXPECTED));
        }
        if s.split([':', '/']).any(|c| c == "..") {
            return Err(self.bad_value(key, value, "\"SRC[:DST]\" without \"..\" in the paths"));
        }
        let source = normalize(src);
        let dest = normalize(dst);
        if dest == Path::new("/") || dest.starts_with("/proc") || dest.starts_with("/dev") {
            return Err(self.invalid(
                key,
                value.span(),
                format!(
                    "destination {} is reserved (berth mounts /, /proc and /dev itself), expected another path",
                    dest.display()
                ),
            ));
        }
        if dest.starts_with("/sys") {
            return Err(self.invalid(
                key,
                value.span(),
                format!(
                    "destination {} is reserved (/sys stays unmounted in containers), expected another path",
                    dest.display()
                ),
            ));
        }
        if !host_checks() {
            return Ok(Bind {
                source,
                dest,
                idmap,
            });
        }
        match std::fs::metadata(&source) {
            Ok(_) => match symlink_on_path(&source) {
                // Refused at start (a symlink could be swapped for another
                // path between check and mount): say so now.
                Some(link) => Err(self.invalid(
                    key,
                    value.span(),
                    format!(
                        "bind source {} passes through the symlink {}, expected a path without symlinks{}",
                        source.display(),
                        link.display(),
                        std::fs::canonicalize(&source)
                            .map(|p| format!(" such as {}", p.display()))
                            .unwrap_or_default()
                    ),
                )),
                None => Ok(Bind {
                    source,
                    dest,
                    idmap,
                }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ConfigError::MissingBindSource {
                    at: self.at(value.span()),
                    key: key.to_string(),
                    path: source,
                })
            }
            Err(e) => Err(self.invalid(
                key,
                value.span(),
                format!("cannot access bind source {}: {e}", source.display()),
            )),
        }
    }

    /// `"FIRST-LAST"`: whole blocks of 65536 host ids, above 0 and below
    /// 2^32 - 1 (the kernel's "no id").
    pub(super) fn uid_range(&self, key: &str, value: &TomlValue) -> Checked<UidRange> {
        const EXPECTED: &str = "\"FIRST-LAST\" host ids, FIRST a multiple of 65536 above 0 and LAST+1 a \
             multiple of 65536 above FIRST, such as \"1879048192-2147483647\"";
        let s = self.string(key, value, EXPECTED)?;
        let parsed = s.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?))
        });
        match parsed {
            Some((first, last))
                if first > 0
                    && first % USERNS_BLOCK == 0
                    && last > first
                    && last < u32::MAX
                    && (u64::from(last) + 1) % u64::from(USERNS_BLOCK) == 0 =>
            {
                Ok(UidRange { first, last })
            }
            _ => Err(self.bad_value(key, value, EXPECTED)),
        }
    }

    pub(super) fn listen(&mut self, value: &TomlValue) -> Checked<Vec<ListenAddr>> {
        const EXPECTED: &str = "a non-empty array of addresses such as [\"0.0.0.0:2222\", \"[::]:2222\", \"/run/app.sock\"]";
        let items = self.array("listen", value, EXPECTED)?;
        if items.is_empty() {
            return Err(self.bad_value("listen", value, EXPECTED));
        }
        let results = items.iter().map(|entry| self.listen_addr(entry)).collect();
        let addrs = self.all_ok(results)?;
        // systemd would fail to bind the second one, at boot.
        for (i, entry) in items.iter().enumerate() {
            if addrs[..i].contains(&addrs[i]) {
                return Err(self.invalid(
                    "listen",
                    entry.span(),
                    format!("{} is listed twice, expected each address once", addrs[i]),
                ));
            }
        }
        Ok(addrs)
    }

    fn listen_addr(&self, value: &TomlValue) -> Checked<ListenAddr> {
        const EXPECTED: &str = "an address IPV4:PORT, [IPV6]:PORT or an absolute socket path";
        let s = self.string("listen", value, EXPECTED)?;
        let addr: ListenAddr = s
            .parse()
            .map_err(|_| self.bad_value("listen", value, EXPECTED))?;
        if let ListenAddr::Unix(path) = &addr {
            // The path goes into a unit file line and into sun_path.
            if s.chars().any(|c| c.is_whitespace() || c.is_control())
                || s.split('/').any(|c| c == "..")
            {
                return Err(self.bad_value(
                    "listen",
                    value,
                    "an absolute socket path without spaces, control characters or \"..\"",
                ));
            }
            if path.as_os_str().len() > 107 {
                return Err(self.bad_value(
                    "listen",
                    value,
                    "a socket path of at most 107 bytes (the kernel's limit)",
                ));
            }
        }
        Ok(addr)
    }

    pub(super) fn ip_rules(&mut self, key: &str, value: &TomlValue) -> Checked<Vec<IpRule>> {
        const EXPECTED: &str = "an array such as [\"any\"] or [\"10.0.0.0/8\", \"::1\"]";
        let items = self.array(key, value, EXPECTED)?;
        let results = items.iter().map(|entry| self.ip_rule(key, entry)).collect();
        self.all_ok(results)
    }

    fn ip_rule(&self, key: &str, value: &TomlValue) -> Checked<IpRule> {
        const EXPECTED: &str = "\"any\", \"localhost\", \"link-local\", \"multicast\", an IPv4 or IPv6 address or a prefix ADDRESS/LENGTH";
        let s = self.string(key, value, EXPECTED)?;
        s.parse().map_err(|()| self.bad_value(key, value, EXPECTED))
    }

    pub(super) fn etc(&mut self, value: &TomlValue) -> Checked<Vec<String>> {
        const EXPECTED: &str =
            "an array of names relative to /etc such as [\"passwd\", \"ssl/certs\"]";
        let items = self.array("etc", value, EXPECTED)?;
        let results = items.iter().map(|entry| self.etc_entry(entry)).collect();
        self.all_ok(results)
    }

    fn etc_entry(&self, value: &TomlValue) -> Checked<String> {
        let name = self.string("etc", value, "a name relative to /etc")?;
        if name.is_empty()
            || name.starts_with('/')
            || name.split('/').any(|c| c == ".." || c == ".")
        {
            return Err(self.bad_value(
                "etc",
                value,
                "a name relative to /etc such as \"passwd\" or \"ssl/certs\"",
            ));
        }
        if !host_checks() {
            return Ok(name.trim_end_matches('/').to_string());
        }
        match std::fs::metadata(Path::new("/etc").join(name)) {
            Ok(_) => Ok(name.trim_end_matches('/').to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ConfigError::MissingEtcEntry {
                    at: self.at(value.span()),
                    entry: name.to_string(),
                })
            }
            Err(e) => Err(self.invalid(
                "etc",
                value.span(),
                format!("cannot access /etc/{name}: {e}"),
            )),
        }
    }

    pub(super) fn runtime_directory(&self, value: &TomlValue) -> Checked<String> {
        const EXPECTED: &str = "a directory name (one path component) such as \"sshd\"";
        let name = self.string("runtime_directory", value, EXPECTED)?;
        if !is_file_name(name) {
            return Err(self.bad_value("runtime_directory", value, EXPECTED));
        }
        if name == "credentials" {
            return Err(self.invalid(
                "runtime_directory",
                value.span(),
                "\"credentials\" is reserved (/run/credentials holds the service's credentials), expected another name".to_string(),
            ));
        }
        Ok(name.to_string())
    }

    pub(super) fn credentials(&mut self, value: &TomlValue) -> Checked<Vec<CredentialFile>> {
        const EXPECTED: &str = "an array of \"NAME[:PATH]\" such as [\"db-password:/etc/berth/secrets/db\", \"tls-key\"]";
        let items = self.array("credentials", value, EXPECTED)?;
        let results = items.iter().map(|entry| self.credential(entry)).collect();
        let list = self.all_ok(results)?;
        for (i, c) in list.iter().enumerate() {
            if list[..i].iter().any(|d| d.name == c.name) {
                return Err(self.invalid(
                    "credentials",
                    items[i].span(),
                    format!(
                        "credential {:?} is listed twice, expected each name once",
                        c.name
                    ),
                ));
            }
        }
        Ok(list)
    }

    /// `NAME[:PATH]`; a PATH must exist now (a bare NAME comes from the
    /// supervisor's `$CREDENTIALS_DIRECTORY`, known only when it runs).
    fn credential(&self, value: &TomlValue) -> Checked<CredentialFile> {
        let s = self.string("credentials", value, "\"NAME[:PATH]\"")?;
        let (name, path) = match s.split_once(':') {
            Some((name, path)) => (name, Some(path)),
            None => (s, None),
        };
        if !is_file_name(name) {
            return Err(self.bad_value(
                "credentials",
                value,
                "\"NAME[:PATH]\" with NAME a file name (not empty, no \"/\", not \".\" or \"..\")",
            ));
        }
        let Some(path) = path else {
            return Ok(CredentialFile {
                name: name.to_string(),
                source: None,
            });
        };
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(self.bad_value(
                "credentials",
                value,
                "\"NAME:PATH\" with PATH absolute and without \"..\"",
            ));
        }
        let source = normalize(path);
        match std::fs::metadata(&source) {
            Ok(m) if m.is_file() => Ok(CredentialFile {
                name: name.to_string(),
                source: Some(source),
            }),
            Ok(_) => Err(self.invalid(
                "credentials",
                value.span(),
                format!(
                    "credential {name}: {} is not a regular file, expected a file to copy",
                    source.display()
                ),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ConfigError::MissingCredential {
                    at: self.at(value.span()),
                    name: name.to_string(),
                    path: source,
                })
            }
            Err(e) => Err(self.invalid(
                "credentials",
                value.span(),
                format!("credential {name}: cannot access {}: {e}", source.display()),
            )),
        }
    }

    pub(super) fn capabilities(&mut self, value: &TomlValue) -> Checked<Vec<String>> {
        const EXPECTED: &str = "an array of capability names such as [\"CAP_NET_BIND_SERVICE\"]";
        let items = self.array("capabilities", value, EXPECTED)?;
        let results = items.iter().map(|entry| self.capability(entry)).collect();
        let mut kept: Vec<String> = Vec::new();
        for capability in self.all_ok(results)? {
            if !kept.contains(&capability) {
                kept.push(capability);
            }
        }
        Ok(kept)
    }

    fn capability(&self, value: &TomlValue) -> Checked<String> {
        let name = self.string(
            "capabilities",
            value,
            "a capability name such as \"CAP_NET_BIND_SERVICE\"",
        )?;
        normalize_capability(name).ok_or_else(|| {
            self.invalid(
                "capabilities",
                value.span(),
                format!(
                    "unknown capability {name:?}, expected a name such as \"CAP_NET_BIND_SERVICE\" or \"net_bind_service\""
                ),
            )
        })
    }
}

/// The value of a TOML integer; `None` if it does not fit an i64.
fn integer_value(integer: &DeInteger) -> Option<i64> {
    i64::from_str_radix(integer.as_str(), integer.radix()).ok()
}

/// A uid or gid: 0 to 2^32-2 (2^32-1 means "no id" to the kernel).
fn numeric_id(integer: &DeInteger) -> Option<u32> {
    integer_value(integer)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&id| id != u32::MAX)
}

/// `"net_bind_service"`, `"CAP_NET_BIND_SERVICE"`, `"cap_net_bind_service"`
/// → `"CAP_NET_BIND_SERVICE"`, if the `caps` crate knows it.
fn normalize_capability(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    caps::Capability::from_str(&full)
        .ok()
        .map(|c| c.to_string())
}

/// One path component: not empty, no `/`, not `.` or `..`.
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains(['/', '\0'])
        && name != "."
        && name != ".."
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An absolute path without empty or `.` components or a trailing slash.
fn normalize(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        if let Component::Normal(c) = c {
            out.push(c);
        }
    }
    out
}

/// The first component of absolute path `path` that is a symlink.
fn symlink_on_path(path: &Path) -> Option<PathBuf> {
    let mut at = PathBuf::from("/");
    for c in path.components().skip(1) {
        at.push(c);
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_are_normalised() {
        let want = Some("CAP_NET_BIND_SERVICE".to_string());
        assert_eq!(normalize_capability("CAP_NET_BIND_SERVICE"), want);
        assert_eq!(normalize_capability("net_bind_service"), want);
        assert_eq!(normalize_capability("Cap_Net_Bind_Service"), want);
        assert_eq!(normalize_capability("fly"), None);
        assert_eq!(normalize_capability(""), None);
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalize("/srv//data/./x/"), Path::new("/srv/data/x"));
        assert_eq!(normalize("/"), Path::new("/"));
    }

    #[test]
    fn file_names_are_one_component() {
        for good in ["sshd", "db-password", "a.b", "...", "x:y"] {
            assert!(is_file_name(good), "{good:?}");
        }
        for bad in ["", ".", "..", "a/b", "/", "a\0b"] {
            assert!(!is_file_name(bad), "{bad:?}");
        }
        assert!(!is_file_name(&"x".repeat(256)));
    }

    #[test]
    fn environment_names() {
        assert!(is_env_name("LANG"));
        assert!(is_env_name("_x1"));
        for bad in ["", "1X", "A-B", "A B", "É"] {
            assert!(!is_env_name(bad), "{bad:?}");
        }
    }
}
