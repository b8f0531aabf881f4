//! A single broker's users: their SCRAM credentials in `<data-dir>/security/users.json`
//! (see [`crate::file`] for how it is kept). A cluster keeps them in the controller's
//! state instead, as the same [`Users`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::file::SecurityFile;
use crate::{AuthError, Mechanism, ScramCredential};

/// Every user's credentials, by name then mechanism.
pub type Users = BTreeMap<String, BTreeMap<Mechanism, ScramCredential>>;

#[derive(Default, Clone, Serialize, Deserialize)]
struct Stored {
    users: Users,
}

/// The users of a single broker.
pub struct UserFile(SecurityFile<Stored>);

impl UserFile {
    /// Opens (or starts) the user file under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, AuthError> {
        SecurityFile::open(data_dir, "users.json").map(Self)
    }

    /// Every user, as of now.
    pub fn users(&self) -> Users {
        self.0.get().users.clone()
    }

    pub fn get(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
        self.0.get().users.get(user)?.get(&mechanism).cloned()
    }

    /// Sets (or replaces) a user's credential for one mechanism, durably. Blocking:
    /// call it off the async workers.
    pub fn upsert(
        &self,
        user: &str,
        mechanism: Mechanism,
        credential: ScramCredential,
    ) -> Result<(), AuthError> {
        crate::check_name(user)?;
        self.0.change(|s| {
            s.users
                .entry(user.to_string())
                .or_default()
                .insert(mechanism, credential);
            (true, ())
        })
    }

    /// Removes a user's credential for one mechanism; false if it had none. Blocking.
    pub fn delete(&self, user: &str, mechanism: Mechanism) -> Result<bool, AuthError> {
        self.0.change(|s| {
            let users = &mut s.users;
            let Some(creds) = users.get_mut(user) else {
                return (false, false);
            };
            let removed = creds.remove(&mechanism).is_some();
            if creds.is_empty() {
                users.remove(user);
            }
            (removed, removed)
        })
    }
}

/// The ACLs of a single broker, in `<data-dir>/security/acls.json`.
pub struct AclFile(SecurityFile<crate::Acls>);

impl AclFile {
    pub fn open(data_dir: &Path) -> Result<Self, AuthError> {
        SecurityFile::open(data_dir, "acls.json").map(Self)
    }

    /// Every binding, as of now.
    pub fn acls(&self) -> Arc<crate::Acls> {
        self.0.get()
    }

    /// Adds bindings (checked first), durably. Blocking.
    pub fn create(&self, bindings: Vec<crate::AclBinding>) -> Result<(), AuthError> {
        for b in &bindings {
            b.validate()?;
        }
        self.0.change(|acls| {
            let before = acls.len();
            for b in bindings {
                acls.insert(b);
            }
            (acls.len() != before, ())
        })
    }

    /// Removes the bindings each filter names; returns them, filter by filter. Blocking.
    pub fn delete(
        &self,
        filters: &[crate::AclFilter],
    ) -> Result<Vec<Vec<crate::AclBinding>>, AuthError> {
        self.0.change(|acls| {
            let found: Vec<_> = filters.iter().map(|f| acls.matching(f)).collect();
            let mut changed = false;
            for b in found.iter().flatten() {
                changed |= acls.remove(b);
            }
            (changed, found)
        })
    }
}
