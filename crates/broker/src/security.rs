//! Where the SASL/SCRAM users live: in the controller's state for a cluster member (a
//! change is a controller command, applied on every broker), in the broker's own user
//! file for a single broker. [`UserStore`] is the one interface both listeners use.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_auth::users::Users;
use strata_auth::{Mechanism, ScramCredential, UserFile};
use strata_controller::Command;

use crate::error::{BrokerError, Result};
use crate::replication::Member;

/// The users of this broker's cluster (or of the single broker).
pub enum UserStore<'a> {
    Local(&'a Arc<UserFile>),
    Cluster(&'a Arc<Member>),
}

impl UserStore<'_> {
    /// The credential `user` holds for `mechanism`.
    pub fn get(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
        match self {
            UserStore::Local(f) => f.get(user, mechanism),
            UserStore::Cluster(m) => m
                .controller()
                .with_state(|s| s.users.get(user)?.get(&mechanism).cloned()),
        }
    }

    /// Every user's mechanisms and iteration counts (never their keys).
    pub fn list(&self) -> BTreeMap<String, Vec<(Mechanism, u32)>> {
        let summary = |users: &Users| {
            users
                .iter()
                .map(|(name, creds)| {
                    let mechs = creds.iter().map(|(m, c)| (*m, c.iterations)).collect();
                    (name.clone(), mechs)
                })
                .collect()
        };
        match self {
            UserStore::Local(f) => summary(&f.users()),
            UserStore::Cluster(m) => m.controller().with_state(|s| summary(&s.users)),
        }
    }

    /// Sets `user`'s credential for `mechanism`, durably (committed to the
    /// controller's log, or fsynced to the user file) before it returns.
    pub async fn upsert(
        &self,
        user: &str,
        mechanism: Mechanism,
        credential: ScramCredential,
    ) -> Result<()> {
        strata_auth::check_name(user).map_err(invalid)?;
        strata_auth::scram::check_iterations(credential.iterations).map_err(invalid)?;
        match self {
            UserStore::Local(f) => {
                let (f, user) = (Arc::clone(f), user.to_string());
                blocking(move || f.upsert(&user, mechanism, credential)).await
            }
            UserStore::Cluster(m) => {
                // Applied once this broker's state holds another credential than before
                // (ours, or one made at the same time after it: either way ours went in).
                let before = self.get(user, mechanism);
                m.submit(Command::UpsertScramCredential {
                    user: user.to_string(),
                    mechanism,
                    credential,
                })
                .await?;
                m.wait_for(|s| {
                    let now = s.users.get(user).and_then(|c| c.get(&mechanism));
                    (now.is_some() && now != before.as_ref()).then_some(())
                })
                .await
            }
        }
    }

    /// Removes `user`'s credential for `mechanism`; an error if it had none.
    pub async fn delete(&self, user: &str, mechanism: Mechanism) -> Result<()> {
        let missing = || {
            BrokerError::InvalidRequest(format!(
                "user {user:?} has no {} credential; list users with `strata user list`",
                mechanism.name()
            ))
        };
        match self {
            UserStore::Local(f) => {
                let (f, u) = (Arc::clone(f), user.to_string());
                match blocking(move || f.delete(&u, mechanism)).await? {
                    true => Ok(()),
                    false => Err(missing()),
                }
            }
            UserStore::Cluster(m) => {
                if self.get(user, mechanism).is_none() {
                    return Err(missing());
                }
                m.submit(Command::DeleteScramCredential {
                    user: user.to_string(),
                    mechanism,
                })
                .await?;
                m.wait_for(|s| {
                    s.users
                        .get(user)
                        .is_none_or(|c| !c.contains_key(&mechanism))
                        .then_some(())
                })
                .await
            }
        }
    }
}

fn invalid(e: strata_auth::AuthError) -> BrokerError {
    BrokerError::InvalidRequest(e.to_string())
}

/// A write and fsync of the user file, off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, strata_auth::AuthError> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BrokerError::InvalidRequest(format!("the user file write failed: {e}")))?
        .map_err(|e| BrokerError::InvalidConfig(e.to_string()))
}

/// Whether `principal` may manage users: a super user may; while `super_users` is
/// empty (allowed only with no authentication on) anyone may on a single broker (the
/// quick start), nobody in a cluster.
pub fn check_admin(config: &crate::BrokerConfig, principal: &strata_auth::Principal) -> Result<()> {
    let supers = config.super_users()?;
    // A cluster's users are shared by every broker: one broker without authentication
    // must not let anyone write the credentials the others trust.
    if supers.is_empty() && config.clustered() {
        return Err(BrokerError::NotAuthorized(
            "a cluster's users are managed by super users only, and this broker names none: set super_users (--super-user)".into(),
        ));
    }
    if supers.is_empty() || supers.contains(principal) {
        return Ok(());
    }
    Err(BrokerError::NotAuthorized(format!(
        "{principal} may not manage users: that takes a super user (super_users in the broker's config)"
    )))
}
