//! A single broker's users: their SCRAM credentials in `<data-dir>/security/users.json`.
//! (A cluster keeps them in the controller's state instead, as the same [`Users`].)
//!
//! Invariant: the file on disk is always a whole version. A change is written to a
//! temporary file, fsynced, renamed over the old one, and the directory fsynced, before
//! it is acknowledged; a crash at any point leaves the old version or the new one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::{AuthError, Mechanism, ScramCredential};

/// Every user's credentials, by name then mechanism.
pub type Users = BTreeMap<String, BTreeMap<Mechanism, ScramCredential>>;

#[derive(Default, Serialize, Deserialize)]
struct Stored {
    users: Users,
}

/// The users of a single broker.
pub struct UserFile {
    path: PathBuf,
    users: RwLock<Arc<Users>>,
    /// Serialises writers, so each change is written on top of the last.
    write: Mutex<()>,
}

impl UserFile {
    /// Opens (or starts) the user file under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, AuthError> {
        let path = data_dir.join("security").join("users.json");
        let users = match std::fs::read(&path) {
            Ok(bytes) => {
                let s: Stored = serde_json::from_slice(&bytes).map_err(|e| {
                    AuthError::Io(format!(
                        "{} is damaged ({e}); restore it from a backup or remove it and add the users again",
                        path.display()
                    ))
                })?;
                s.users
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Users::new(),
            Err(e) => {
                return Err(AuthError::Io(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(Self {
            path,
            users: RwLock::new(Arc::new(users)),
            write: Mutex::new(()),
        })
    }

    /// Every user, as of now.
    pub fn users(&self) -> Arc<Users> {
        self.users.read().clone()
    }

    pub fn get(&self, user: &str, mechanism: Mechanism) -> Option<ScramCredential> {
        self.users.read().get(user)?.get(&mechanism).cloned()
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
        self.change(|users| {
            users
                .entry(user.to_string())
                .or_default()
                .insert(mechanism, credential);
            true
        })
        .map(|_| ())
    }

    /// Removes a user's credential for one mechanism; false if it had none. Blocking.
    pub fn delete(&self, user: &str, mechanism: Mechanism) -> Result<bool, AuthError> {
        self.change(|users| {
            let Some(creds) = users.get_mut(user) else {
                return false;
            };
            let removed = creds.remove(&mechanism).is_some();
            if creds.is_empty() {
                users.remove(user);
            }
            removed
        })
    }

    fn change(&self, f: impl FnOnce(&mut Users) -> bool) -> Result<bool, AuthError> {
        let _w = self.write.lock();
        let mut users = (**self.users.read()).clone();
        if !f(&mut users) {
            return Ok(false);
        }
        self.persist(&users)?;
        *self.users.write() = Arc::new(users);
        Ok(true)
    }

    fn persist(&self, users: &Users) -> Result<(), AuthError> {
        let io = |e: std::io::Error| {
            AuthError::Io(format!(
                "cannot write {}: {e}; check the data directory's disk and permissions, then retry",
                self.path.display()
            ))
        };
        let dir = self.path.parent().expect("the file is under a directory");
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&Stored {
            users: users.clone(),
        })
        .expect("users serialise");
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Readable by the broker's user only.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            // A leftover temporary file keeps its mode through open: set it.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}
