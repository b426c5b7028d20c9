//! Configuration: `berth.toml` (global defaults) and `services/NAME.toml`.
//!
//! A file is parsed by toml into a document that keeps the span of every key
//! and value, then each key is validated on its own, so that one run reports
//! every problem, each rendered `FILE:LINE:COLUMN: what is wrong, what was
//! expected`. Host facts (users, groups, bind sources, /etc entries) are
//! checked at load time; users and groups are resolved again at each
//! container start by [`resolve_credentials`].
//!
//! - `schema`: the validated types ([`Service`], [`Sandbox`], ...)
//! - `load`: files and directories, berth.toml defaults, `berth check`
//! - `validate`, `values`: key by key, value by value, into `settings`
//! - `settings`: one file's keys, merged over berth.toml's into a [`Service`]
//! - `error`: [`ConfigError`] and its [`Location`]
//! - `units`, `credentials`: durations and sizes; users and groups at start

// Errors are built on the cold path only and carry a location each.
#![allow(clippy::result_large_err)]

mod credentials;
mod error;
mod load;
mod schema;
mod settings;
mod units;
mod validate;
mod values;

pub use credentials::{Credentials, CredentialsError, resolve_credentials};
pub use error::{ConfigError, Location};
pub use load::{
    Defaults, check, check_services, defaults_path_for, load_defaults, load_dir, load_service,
    load_service_all,
};
pub use schema::{
    Bind, CredentialFile, DEFAULT_USERNS_RANGE, GroupRef, IpRule, Mode, Network, Propagation,
    RateLimit, Resources, Sandbox, Seccomp, Service, SliceLimits, USERNS_BLOCK, UidRange, UserRef,
};
pub use units::{parse_duration, parse_size};
pub use validate::without_host_checks;
