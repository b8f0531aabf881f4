//! What a principal may do: Kafka's access control lists. An [`AclBinding`] allows or
//! denies one principal (or every principal, `User:*`) one [`Operation`] on the
//! resources one pattern names (a literal name, `*` for all, or a prefix), from one
//! client address (or `*`).
//!
//! [`Acls::authorize`] decides as Kafka's `StandardAuthorizer` does:
//!
//! 1. a matching `Deny` wins over everything;
//! 2. else a matching `Allow` allows: `All` allows every operation, and `Read`,
//!    `Write`, `Delete` and `Alter` each imply `Describe`, `AlterConfigs` implies
//!    `DescribeConfigs`;
//! 3. else, when no binding at all names the resource, the answer is
//!    [`Decision::NoAclFound`] and the broker's `allow_everyone_if_no_acl_found`
//!    decides; otherwise it is denied.
//!
//! Super users are not this module's business: the broker lets them through before it
//! asks.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{AuthError, Principal};

/// The one cluster resource's name, as Kafka names it.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The principal and host (and literal resource name) that match every one.
pub const WILDCARD: &str = "*";

macro_rules! kafka_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:literal, $text:literal;)* } any = $any:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant,)* }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant,)*];

            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code,)* }
            }

            /// From Kafka's wire code: `Ok(None)` for its ANY, an error for a code
            /// Strata does not know.
            pub fn from_code(code: i8) -> Result<Option<Self>, AuthError> {
                match code {
                    $any => Ok(None),
                    $($code => Ok(Some($name::$variant)),)*
                    _ => Err(AuthError::Invalid(format!(
                        concat!("unknown ", stringify!($name), " code {}; use one of {}"),
                        code,
                        Self::names()
                    ))),
                }
            }

            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            fn names() -> String {
                Self::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
            }
        }

        impl FromStr for $name {
            type Err = AuthError;
            fn from_str(s: &str) -> Result<Self, AuthError> {
                let want: String = s.chars().filter(|c| *c != '_' && *c != '-').collect();
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.name().eq_ignore_ascii_case(&want))
                    .ok_or_else(|| AuthError::Invalid(format!(
                        concat!("unknown ", stringify!($name), " {:?}; use one of {}"),
                        s,
                        Self::names()
                    )))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

kafka_enum! {
    /// What an ACL names (Kafka's `ResourceType`; Strata has no transactions or
    /// delegation tokens, so no bindings for them).
    ResourceType {
        Topic = 2, "Topic";
        Group = 3, "Group";
        Cluster = 4, "Cluster";
    } any = 1
}

kafka_enum! {
    /// How an ACL's resource name matches (Kafka's `PatternType`).
    PatternType {
        Literal = 3, "Literal";
        Prefixed = 4, "Prefixed";
    } any = 1
}

kafka_enum! {
    /// What a principal does to a resource (Kafka's `AclOperation`).
    Operation {
        All = 2, "All";
        Read = 3, "Read";
        Write = 4, "Write";
        Create = 5, "Create";
        Delete = 6, "Delete";
        Alter = 7, "Alter";
        Describe = 8, "Describe";
        ClusterAction = 9, "ClusterAction";
        DescribeConfigs = 10, "DescribeConfigs";
        AlterConfigs = 11, "AlterConfigs";
        IdempotentWrite = 12, "IdempotentWrite";
    } any = 1
}

kafka_enum! {
    /// Whether a binding allows or denies (Kafka's `AclPermissionType`).
    Permission {
        Deny = 2, "Deny";
        Allow = 3, "Allow";
    } any = 1
}

/// Kafka's `PatternType.MATCH` in a filter: every pattern that would match the name.
pub const PATTERN_MATCH: i8 = 2;

/// One rule: `permission` for `principal` to do `operation` from `host` on the
/// resources `(resource_type, name, pattern)` names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    /// `User:NAME`, or `User:*` for every principal.
    pub principal: String,
    /// A client IP address, or `*` for any.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclBinding {
    /// Checks what a client may not store: a principal, host, name or cluster
    /// resource Kafka would refuse.
    pub fn validate(&self) -> Result<(), AuthError> {
        if self.principal != "User:*" {
            Principal::parse_typed(&self.principal)?;
        }
        if self.host != WILDCARD && self.host.parse::<IpAddr>().is_err() {
            return Err(AuthError::Invalid(format!(
                "host {:?} is not an IP address; use a client's IP address or * for any",
                self.host
            )));
        }
        if self.name.is_empty() {
            return Err(AuthError::Invalid(
                "the resource name is empty; name the resource, or * for all of its type".into(),
            ));
        }
        if self.resource_type == ResourceType::Cluster && self.name != CLUSTER_NAME {
            return Err(AuthError::Invalid(format!(
                "the cluster resource is named {CLUSTER_NAME:?}, not {:?}",
                self.name
            )));
        }
        if self.pattern == PatternType::Prefixed && self.name == WILDCARD {
            return Err(AuthError::Invalid(
                "a prefixed pattern of * matches only names starting with *; for every name use a literal *".into(),
            ));
        }
        let fits = match self.resource_type {
            ResourceType::Topic => !matches!(
                self.operation,
                Operation::ClusterAction | Operation::IdempotentWrite
            ),
            ResourceType::Group => matches!(
                self.operation,
                Operation::All | Operation::Read | Operation::Delete | Operation::Describe
            ),
            ResourceType::Cluster => !matches!(
                self.operation,
                Operation::Read | Operation::Write | Operation::Delete
            ),
        };
        if !fits {
            return Err(AuthError::Invalid(format!(
                "{} does not apply to a {}; see docs/security.md for what each resource takes",
                self.operation, self.resource_type
            )));
        }
        Ok(())
    }

    /// Whether this binding's pattern names `(resource_type, name)`.
    fn names(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern {
                PatternType::Literal => self.name == name || self.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(self.name.as_str()),
            }
    }

    /// Whether the binding is for `principal` calling from `host` (compared as
    /// addresses: an IPv4 client seen as `::ffff:a.b.c.d` is `a.b.c.d`).
    fn applies_to(&self, principal: &Principal, host: Option<IpAddr>) -> bool {
        let named = self.principal == "User:*"
            || self
                .principal
                .strip_prefix("User:")
                .is_some_and(|n| n == principal.name());
        named
            && (self.host == WILDCARD
                || host.is_some_and(|h| {
                    self.host
                        .parse::<IpAddr>()
                        .is_ok_and(|b| b.to_canonical() == h.to_canonical())
                }))
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} on {} {} {:?} from {}",
            self.permission,
            self.principal,
            self.operation,
            self.pattern,
            self.resource_type,
            self.name,
            self.host
        )
    }
}

/// Which bindings a describe or delete names (Kafka's `AclBindingFilter`): `None`
/// matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub name: Option<String>,
    /// `None` is ANY; [`FilterPattern::Match`] is every pattern matching `name`.
    pub pattern: Option<FilterPattern>,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

/// A filter's pattern type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterPattern {
    Exactly(PatternType),
    /// Literal bindings of the name or `*`, and prefixed bindings that are a prefix of
    /// it.
    Match,
}

impl FilterPattern {
    /// From Kafka's wire code (`Ok(None)` for ANY).
    pub fn from_code(code: i8) -> Result<Option<Self>, AuthError> {
        if code == PATTERN_MATCH {
            return Ok(Some(FilterPattern::Match));
        }
        Ok(PatternType::from_code(code)?.map(FilterPattern::Exactly))
    }
}

impl AclFilter {
    pub fn matches(&self, b: &AclBinding) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        self.resource_type.is_none_or(|t| t == b.resource_type)
            && eq(&self.principal, &b.principal)
            && eq(&self.host, &b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
            && match (self.pattern, &self.name) {
                (Some(FilterPattern::Match), Some(name)) => b.names(b.resource_type, name),
                (Some(FilterPattern::Match), None) => true,
                (Some(FilterPattern::Exactly(p)), name) => p == b.pattern && eq(name, &b.name),
                (None, name) => eq(name, &b.name),
            }
    }
}

/// What [`Acls::authorize`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied,
    /// No binding names the resource at all.
    NoAclFound,
}

/// Every binding of a cluster (or a single broker).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Acls(BTreeSet<AclBinding>);

impl Acls {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.0.iter()
    }

    pub fn contains(&self, b: &AclBinding) -> bool {
        self.0.contains(b)
    }

    /// Adds a binding (a no-op if it is there already).
    pub fn insert(&mut self, b: AclBinding) {
        self.0.insert(b);
    }

    pub fn remove(&mut self, b: &AclBinding) -> bool {
        self.0.remove(b)
    }

    /// The bindings `filter` names.
    pub fn matching(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.0
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect()
    }

    /// May `principal`, connected from `host`, do `op` on `(resource_type, name)`?
    pub fn authorize(
        &self,
        principal: &Principal,
        host: Option<IpAddr>,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Decision {
        if self.0.is_empty() {
            return Decision::NoAclFound;
        }
        let mut named = false;
        let mut allowed = false;
        for b in self.0.iter().filter(|b| b.names(resource_type, name)) {
            named = true;
            if !b.applies_to(principal, host) {
                continue;
            }
            match b.permission {
                Permission::Deny if b.operation == op || b.operation == Operation::All => {
                    return Decision::Denied;
                }
                Permission::Allow if implies(b.operation, op) => allowed = true,
                _ => {}
            }
        }
        match (allowed, named) {
            (true, _) => Decision::Allowed,
            (false, true) => Decision::Denied,
            (false, false) => Decision::NoAclFound,
        }
    }

    /// Whether `principal` is allowed `op` on some resource of `resource_type` (Kafka's
    /// `authorizeByResourceType`, which lets an idempotent producer start with Write on
    /// any topic): some allow binding applies and no deny binding covers every name.
    pub fn allows_any(
        &self,
        principal: &Principal,
        host: Option<IpAddr>,
        op: Operation,
        resource_type: ResourceType,
    ) -> bool {
        !self.denies_all(principal, host, op, resource_type)
            && self
                .mine(principal, host, resource_type)
                .any(|b| b.permission == Permission::Allow && implies(b.operation, op))
    }

    /// Whether a deny binding refuses `principal` `op` on every resource of
    /// `resource_type` (a literal `*`).
    pub fn denies_all(
        &self,
        principal: &Principal,
        host: Option<IpAddr>,
        op: Operation,
        resource_type: ResourceType,
    ) -> bool {
        self.mine(principal, host, resource_type).any(|b| {
            b.permission == Permission::Deny
                && (b.operation == op || b.operation == Operation::All)
                && b.pattern == PatternType::Literal
                && b.name == WILDCARD
        })
    }

    /// The bindings of `resource_type` that apply to `principal` from `host`.
    fn mine(
        &self,
        principal: &Principal,
        host: Option<IpAddr>,
        resource_type: ResourceType,
    ) -> impl Iterator<Item = &AclBinding> {
        self.0
            .iter()
            .filter(move |b| b.resource_type == resource_type && b.applies_to(principal, host))
    }
}

/// Whether allowing `granted` allows `wanted`.
fn implies(granted: Operation, wanted: Operation) -> bool {
    use Operation::*;
    granted == wanted
        || granted == All
        || (wanted == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (wanted == DescribeConfigs && granted == AlterConfigs)
}
