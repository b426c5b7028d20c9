//! Users and groups resolved to numeric ids when a container starts (they
//! are checked at load time too, but may change in between).

use super::schema::{GroupRef, UserRef};

/// Numeric credentials a container runs with, resolved from the host's
/// user database when the container starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

/// Resolving a service's user and group when a container starts.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "user \"{0}\" does not exist on this host (deleted since the configuration was loaded?)"
    )]
    UnknownUser(String),
    #[error(
        "group \"{0}\" does not exist on this host (deleted since the configuration was loaded?)"
    )]
    UnknownGroup(String),
    #[error("cannot look up {what}: {error}")]
    Lookup {
        what: String,
        #[source]
        error: nix::Error,
    },
}

/// Resolves a service's user and group to numeric ids, at container start.
///
/// A user name must exist; a numeric uid without a passwd entry is allowed
/// and then its gid defaults to the same number. The default group is the
/// user's primary group. A group name must exist; a numeric gid is used as is.
pub fn resolve_credentials(
    user: &UserRef,
    group: Option<&GroupRef>,
) -> Result<Credentials, CredentialsError> {
    let (uid, primary_gid) = match user {
        UserRef::Name(name) => match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
            Ok(None) => return Err(CredentialsError::UnknownUser(name.clone())),
            Err(error) => {
                return Err(CredentialsError::Lookup {
                    what: format!("user \"{name}\""),
                    error,
                });
            }
        },
        UserRef::Id(id) => match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*id)) {
            Ok(Some(u)) => (*id, u.gid.as_raw()),
            Ok(None) => (*id, *id),
            Err(error) => {
                return Err(CredentialsError::Lookup {
                    what: format!("uid {id}"),
                    error,
                });
            }
        },
    };
    let gid = match group {
        None => primary_gid,
        Some(GroupRef::Id(id)) => *id,
        Some(GroupRef::Name(name)) => match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => g.gid.as_raw(),
            Ok(None) => return Err(CredentialsError::UnknownGroup(name.clone())),
            Err(error) => {
                return Err(CredentialsError::Lookup {
                    what: format!("group \"{name}\""),
                    error,
                });
            }
        },
    };
    Ok(Credentials { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials() {
        let root = resolve_credentials(&UserRef::Name("root".into()), None).unwrap();
        assert_eq!(root, Credentials { uid: 0, gid: 0 });
        let by_id = resolve_credentials(&UserRef::Id(0), Some(&GroupRef::Id(5))).unwrap();
        assert_eq!(by_id, Credentials { uid: 0, gid: 5 });
        // A uid without a passwd entry: gid defaults to the same number.
        let anon = resolve_credentials(&UserRef::Id(3_999_999), None).unwrap();
        assert_eq!(
            anon,
            Credentials {
                uid: 3_999_999,
                gid: 3_999_999
            }
        );
        let root_group = resolve_credentials(
            &UserRef::Id(3_999_999),
            Some(&GroupRef::Name("root".into())),
        )
        .unwrap();
        assert_eq!(root_group.gid, 0);
        assert!(matches!(
            resolve_credentials(&UserRef::Name("berth-no-such-user".into()), None),
            Err(CredentialsError::UnknownUser(_))
        ));
        assert!(matches!(
            resolve_credentials(
                &UserRef::Id(0),
                Some(&GroupRef::Name("berth-no-such-group".into()))
            ),
            Err(CredentialsError::UnknownGroup(_))
        ));
    }
}
