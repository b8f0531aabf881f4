//! Who a client is. Strata authenticates a connection in one of three ways and names
//! the result as a [`Principal`], Kafka's `User:NAME`:
//!
//! - [`scram`]: SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677, Kafka's
//!   KIP-84) on the Kafka listener, and SASL/PLAIN checked against the same stored
//!   credentials. A broker keeps only the salted keys ([`ScramCredential`]), never a
//!   password; the users live in the controller (a cluster) or in
//!   `<data-dir>/security/users.json` ([`UserFile`], a single broker).
//! - [`tokens`]: bearer tokens on gRPC, from a static file that holds their SHA-256
//!   hashes only.
//! - [`cert`]: a TLS client certificate's subject common name.
//!
//! And what it may do: [`acl`], Kafka's access control lists, the same on both
//! listeners.
//!
//! Invariants: every comparison of a secret is constant-time; no secret (password,
//! token, salted password) is kept after it is checked, written to a log, or shown by
//! `Debug`; a failed authentication says what failed but never which part (an unknown
//! user and a wrong password read the same).
//!
//! The cryptography is aws-lc-rs's (PBKDF2, HMAC, SHA-2, random numbers), the library
//! rustls here already builds; nothing here implements a primitive.

pub mod acl;
pub mod cert;
pub mod file;
pub mod plain;
pub mod scram;
pub mod tokens;
pub mod users;

#[cfg(test)]
mod tests;

use std::fmt;

pub use acl::{
    AclBinding, AclFilter, Acls, Decision, Operation, PatternType, Permission, ResourceType,
};
pub use scram::{Mechanism, ScramClient, ScramCredential, ScramServer};
pub use tokens::TokenFile;
pub use users::{AclFile, UserFile};

/// A SASL mechanism a Kafka listener may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(Mechanism),
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }
}

impl std::str::FromStr for SaslMechanism {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            other => Mechanism::from_name(other)
                .map(SaslMechanism::Scram)
                .ok_or_else(|| {
                    format!(
                        "unknown SASL mechanism {s:?}; use SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN"
                    )
                }),
        }
    }
}

/// An authenticated identity, Kafka's `KafkaPrincipal` of type `User`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    name: String,
}

impl Principal {
    /// The principal of a connection that did not authenticate (Kafka's
    /// `User:ANONYMOUS`).
    pub fn anonymous() -> Self {
        Self {
            name: "ANONYMOUS".into(),
        }
    }

    pub fn user(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// Parses `User:NAME` (or a bare `NAME`).
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let name = match s.split_once(':') {
            Some(("User", name)) => name,
            Some((kind, _)) => {
                return Err(AuthError::Invalid(format!(
                    "principal {s:?} is of type {kind:?}; only User principals exist (write User:NAME)"
                )));
            }
            None => s,
        };
        check_name(name)?;
        Ok(Self::user(name))
    }

    /// Parses `User:NAME` only (how ACLs and Kafka name principals).
    pub fn parse_typed(s: &str) -> Result<Self, AuthError> {
        if !s.starts_with("User:") {
            return Err(AuthError::Invalid(format!(
                "principal {s:?} must be written User:NAME (or User:* for everyone)"
            )));
        }
        Self::parse(s)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_anonymous(&self) -> bool {
        self.name == "ANONYMOUS"
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "User:{}", self.name)
    }
}

/// The longest user name accepted.
pub const MAX_NAME_LEN: usize = 255;

/// A user name must be non-empty, short, and printable without spaces (token files
/// separate names from hashes with one).
pub fn check_name(name: &str) -> Result<(), AuthError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(AuthError::Invalid(format!(
            "user name {name:?} must be 1 to {MAX_NAME_LEN} bytes"
        )));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(AuthError::Invalid(format!(
            "user name {name:?} holds a space or control character; use printable characters without spaces"
        )));
    }
    Ok(())
}

/// What went wrong authenticating or managing credentials.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The credentials did not match (or the user does not exist: the two read the
    /// same, so a stranger cannot learn which users exist).
    #[error("authentication failed: invalid credentials")]
    Failed,
    /// A malformed message or request.
    #[error("{0}")]
    Invalid(String),
    /// The credential store could not be read or written.
    #[error("{0}")]
    Io(String),
}
