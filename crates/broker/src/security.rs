//! Who may do what, and where the users and ACLs live: in the controller's state for a
//! cluster member (a change is a controller command, applied on every broker), in the
//! broker's own files for a single broker ([`Security`]). [`Store`] is the one
//! interface both listeners use, so gRPC and Kafka decide every request the same way.
//!
//! A request is allowed when its principal is a super user, when an ACL allows it (see
//! [`strata_auth::acl`] for Kafka's rules), or when no ACL names its resource and
//! `allow_everyone_if_no_acl_found` holds (by default only with no authentication on:
//! the single-broker quick start).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use strata_auth::{
    AclBinding, AclFile, AclFilter, Acls, Decision, Mechanism, Operation, Principal, ResourceType,
    ScramCredential, UserFile, acl::CLUSTER_NAME, users::Users,
};
use strata_controller::Command;

use crate::error::{BrokerError, Result};
use crate::replication::Member;

/// A broker's security settings, parsed once, and a single broker's users and ACLs.
pub struct Security {
    supers: Vec<Principal>,
    allow_if_none: bool,
    clustered: bool,
    users: Arc<UserFile>,
    acls: Arc<AclFile>,
}

impl Security {
    pub(crate) fn open(data_dir: &Path, config: &crate::BrokerConfig) -> Result<Self> {
        let stored = |e: strata_auth::AuthError| BrokerError::InvalidConfig(e.to_string());
        Ok(Self {
            supers: config.super_users()?,
            allow_if_none: config.allow_everyone_if_no_acl_found(),
            clustered: config.clustered(),
            users: Arc::new(UserFile::open(data_dir).map_err(stored)?),
            acls: Arc::new(AclFile::open(data_dir).map_err(stored)?),
        })
    }

    pub fn is_super_user(&self, p: &Principal) -> bool {
        self.supers.contains(p)
    }
}

/// Who is asking: the principal a listener authenticated, and the address it called
/// from (ACLs may name a host).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub host: Option<IpAddr>,
}

impl Caller {
    pub fn new(principal: Principal, host: Option<IpAddr>) -> Self {
        Self { principal, host }
    }
}

/// The users and ACLs of this broker's cluster (or of the single broker).
pub struct Store<'a> {
    security: &'a Security,
    member: Option<&'a Arc<Member>>,
    metrics: &'a strata_partition::metrics::Metrics,
}

impl<'a> Store<'a> {
    /// The cluster's store when `member` is set, else the single broker's files.
    pub fn new(broker: &'a crate::Broker, member: Option<&'a Arc<Member>>) -> Self {
        Self {
            security: broker.security(),
            member,
            metrics: broker.metrics(),
        }
    }

    fn with_acls<R>(&self, f: impl FnOnce(&Acls) -> R) -> R {
        match self.member {
            Some(m) => m.controller().with_state(|s| f(&s.acls)),
            None => f(&self.security.acls.acls()),
        }
    }

    /// Whether `caller` may do `op` on `(resource_type, name)`.
    pub fn allowed(
        &self,
        caller: &Caller,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if self.security.is_super_user(&caller.principal) {
            return true;
        }
        match self
            .with_acls(|a| a.authorize(&caller.principal, caller.host, op, resource_type, name))
        {
            Decision::Allowed => true,
            Decision::Denied => false,
            Decision::NoAclFound => self.security.allow_if_none,
        }
    }

    /// [`Store::allowed`], as an error naming what was refused.
    pub fn authorize(
        &self,
        caller: &Caller,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Result<()> {
        if self.allowed(caller, op, resource_type, name) {
            return Ok(());
        }
        self.metrics.authorization_denials.add(1);
        let why = denial(&caller.principal, op, resource_type, name);
        Err(match resource_type {
            ResourceType::Topic => BrokerError::TopicNotAuthorized(why),
            ResourceType::Group => BrokerError::GroupNotAuthorized(why),
            ResourceType::Cluster => BrokerError::NotAuthorized(why),
        })
    }

    /// Whether `caller` may do `op` on some resource of `resource_type` (an
    /// idempotent producer may start with Write on any topic, as in Kafka).
    pub fn allowed_any(&self, caller: &Caller, op: Operation, resource_type: ResourceType) -> bool {
        if self.security.is_super_user(&caller.principal) {
            return true;
        }
        self.with_acls(|a| {
            a.allows_any(&caller.principal, caller.host, op, resource_type)
                || (self.security.allow_if_none
                    && !a.denies_all(&caller.principal, caller.host, op, resource_type))
        })
    }

    /// Whether `caller` may manage users and ACLs: `op` (Alter to change, Describe to
    /// read) on the cluster. A cluster's users and ACLs are shared by every broker, so
    /// a cluster that names no super users lets nobody change them (one broker without
    /// authentication must not let anyone write what the others trust).
    ///
    /// Once super users are named, only they and principals an ACL explicitly allows
    /// manage them: `allow_everyone_if_no_acl_found` never opens user and ACL
    /// management (else anyone could grant themselves everything). With none named
    /// (allowed only without authentication) a single broker lets anyone (the quick
    /// start).
    pub fn check_admin(&self, caller: &Caller, op: Operation) -> Result<()> {
        let supers = &self.security.supers;
        if supers.is_empty() && self.security.clustered {
            return Err(BrokerError::NotAuthorized(
                "a cluster's users and ACLs are managed by super users only, and this broker names none: set super_users (--super-user)".into(),
            ));
        }
        // No super users: the quick start (or everything left open on purpose).
        if (supers.is_empty() && self.security.allow_if_none) || supers.contains(&caller.principal)
        {
            return Ok(());
        }
        let decision = self.with_acls(|a| {
            a.authorize(
                &caller.principal,
                caller.host,
                op,
                ResourceType::Cluster,
                CLUSTER_NAME,
            )
        });
        if decision == Decision::Allowed {
            return Ok(());
        }
        self.metrics.authorization_denials.add(1);
        Err(BrokerError::NotAuthorized(denial(
            &caller.principal,
            op,
            ResourceType::Cluster,
            CLUSTER_NAME,
        )))
    }

    /// The credential `user` holds for `mechanism`.
    pub fn user(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
        match self.member {
            Some(m) => m
                .controller()
                .with_state(|s| s.users.get(user)?.get(&mechanism).cloned()),
            None => self.security.users.get(user, mechanism),
        }
    }

    /// Every user's mechanisms and iteration counts (never their keys).
    pub fn users(&self) -> BTreeMap<String, Vec<(Mechanism, u32)>> {
        let summary = |users: &Users| {
            users
                .iter()
                .map(|(name, creds)| {
                    let mechs = creds.iter().map(|(m, c)| (*m, c.iterations)).collect();
                    (name.clone(), mechs)
                })
                .collect()
        };
        match self.member {
            Some(m) => m.controller().with_state(|s| summary(&s.users)),
            None => summary(&self.security.users.users()),
        }
    }

    /// Sets `user`'s credential for `mechanism`, durably (committed to the
    /// controller's log, or fsynced to the user file) before it returns.
    pub async fn upsert_user(
        &self,
        user: &str,
        mechanism: Mechanism,
        credential: ScramCredential,
    ) -> Result<()> {
        strata_auth::check_name(user).map_err(invalid)?;
        strata_auth::scram::check_iterations(credential.iterations).map_err(invalid)?;
        let Some(m) = self.member else {
            let (f, user) = (self.security.users.clone(), user.to_string());
            return blocking(move || f.upsert(&user, mechanism, credential)).await;
        };
        // Applied once this broker's state holds another credential than before (ours,
        // or one made at the same time after it: either way ours went in).
        let before = self.user(user, mechanism);
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

    /// Removes `user`'s credential for `mechanism`; false if it had none (then
    /// nothing changed).
    pub async fn delete_user(&self, user: &str, mechanism: Mechanism) -> Result<bool> {
        let Some(m) = self.member else {
            let (f, u) = (self.security.users.clone(), user.to_string());
            return blocking(move || f.delete(&u, mechanism)).await;
        };
        if self.user(user, mechanism).is_none() {
            return Ok(false);
        }
        match m
            .submit(Command::DeleteScramCredential {
                user: user.to_string(),
                mechanism,
            })
            .await
        {
            Ok(()) => {}
            // Refused: removed by someone else since we looked.
            Err(BrokerError::Controller {
                retriable: false, ..
            }) => return Ok(false),
            Err(e) => return Err(e),
        }
        m.wait_for(|s| {
            s.users
                .get(user)
                .is_none_or(|c| !c.contains_key(&mechanism))
                .then_some(())
        })
        .await?;
        Ok(true)
    }

    /// The bindings `filter` names.
    pub fn acls(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.with_acls(|a| a.matching(filter))
    }

    /// Adds bindings, durably, once each is checked (a bad one refuses them all).
    pub async fn create_acls(&self, bindings: Vec<AclBinding>) -> Result<()> {
        for b in &bindings {
            b.validate().map_err(invalid)?;
        }
        let Some(m) = self.member else {
            let f = self.security.acls.clone();
            return blocking(move || f.create(bindings)).await;
        };
        let wanted = bindings.clone();
        m.submit(Command::CreateAcls { acls: bindings }).await?;
        m.wait_for(|s| wanted.iter().all(|b| s.acls.contains(b)).then_some(()))
            .await
    }

    /// Removes the bindings each filter names, durably; returns them filter by filter.
    pub async fn delete_acls(&self, filters: Vec<AclFilter>) -> Result<Vec<Vec<AclBinding>>> {
        let Some(m) = self.member else {
            let f = self.security.acls.clone();
            return blocking(move || f.delete(&filters)).await;
        };
        let found: Vec<Vec<AclBinding>> = filters.iter().map(|f| self.acls(f)).collect();
        let gone: Vec<AclBinding> = found.iter().flatten().cloned().collect();
        if gone.is_empty() {
            return Ok(found);
        }
        m.submit(Command::DeleteAcls { acls: gone.clone() }).await?;
        m.wait_for(|s| gone.iter().all(|b| !s.acls.contains(b)).then_some(()))
            .await?;
        Ok(found)
    }
}

/// What a refused caller is told: who, what, and how to get it.
pub fn denial(
    principal: &Principal,
    op: Operation,
    resource_type: ResourceType,
    name: &str,
) -> String {
    let flag = match resource_type {
        ResourceType::Cluster => "--cluster".to_string(),
        t => format!("--{} {name}", t.name().to_ascii_lowercase()),
    };
    format!(
        "{principal} is not allowed {op} on {resource_type} {name:?}: an ACL must allow it (a super user runs `strata acl add --allow {principal} --operation {op} {flag}`)",
    )
}

fn invalid(e: strata_auth::AuthError) -> BrokerError {
    BrokerError::InvalidRequest(e.to_string())
}

/// A write and fsync of a security file, off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, strata_auth::AuthError> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BrokerError::io("writing a security file", std::io::Error::other(e)))?
        .map_err(|e| match e {
            strata_auth::AuthError::Io(why) => BrokerError::Io {
                context: why,
                source: std::io::Error::other("the change was not saved"),
            },
            e => invalid(e),
        })
}
