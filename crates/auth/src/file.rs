//! A single broker's security state on disk: one JSON file under
//! `<data-dir>/security/` per kind ([`crate::UserFile`]'s users, [`crate::AclFile`]'s
//! ACLs). A cluster keeps the same values in the controller's state instead.
//!
//! Invariant: the file on disk is always a whole version, readable by the broker's user
//! only (0600). A change is written to a temporary file, fsynced, renamed over the old
//! one, and the directory fsynced (and the data directory, when `security/` is new),
//! before it is acknowledged; a crash at any point leaves the old version or the new
//! one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::AuthError;

/// One JSON file's value, read once at start and then changed only through
/// [`SecurityFile::change`].
pub struct SecurityFile<T> {
    path: PathBuf,
    value: RwLock<Arc<T>>,
    /// Serialises writers, so each change is written on top of the last.
    write: Mutex<()>,
}

impl<T: Serialize + DeserializeOwned + Clone + Default> SecurityFile<T> {
    /// Opens (or starts) `<data_dir>/security/<name>`.
    pub fn open(data_dir: &Path, name: &str) -> Result<Self, AuthError> {
        let path = data_dir.join("security").join(name);
        let value = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                AuthError::Io(format!(
                    "{} is damaged ({e}); restore it from a backup, or remove it and set up what it held again",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => T::default(),
            Err(e) => {
                return Err(AuthError::Io(format!(
                    "cannot read {}: {e}; check the data directory's permissions",
                    path.display()
                )));
            }
        };
        Ok(Self {
            path,
            value: RwLock::new(Arc::new(value)),
            write: Mutex::new(()),
        })
    }

    /// The value, as of now.
    pub fn get(&self) -> Arc<T> {
        self.value.read().clone()
    }

    /// Applies `f` to a copy and, if it says it changed something, makes the copy
    /// durable and current. Blocking: call it off the async workers.
    pub fn change<R>(&self, f: impl FnOnce(&mut T) -> (bool, R)) -> Result<R, AuthError> {
        let _w = self.write.lock();
        let mut value = (**self.value.read()).clone();
        let (changed, r) = f(&mut value);
        if changed {
            self.persist(&value)?;
        }
        Ok(r)
    }

    fn persist(&self, value: &T) -> Result<(), AuthError> {
        let io = |e: std::io::Error| {
            AuthError::Io(format!(
                "cannot write {}: {e}; check the data directory's disk and permissions, then retry",
                self.path.display()
            ))
        };
        let dir = self.path.parent().expect("the file is under a directory");
        std::fs::create_dir_all(dir).map_err(io)?;
        // The directory's own entry must survive a crash too (also when an earlier
        // call made it and failed before syncing).
        sync_dir(dir.parent().expect("security/ is under the data directory")).map_err(io)?;
        let tmp = self.path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(value).expect("security state serialises");
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            // A leftover temporary file keeps its mode through open: set it.
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        // The file now holds the new version whatever the directory fsync says: memory
        // follows it, so reads agree with what a restart would find. The change is
        // acknowledged only if the fsync succeeds.
        *self.value.write() = Arc::new(value.clone());
        sync_dir(dir).map_err(io)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
