//! The one place an object store is built from a URL.
//!
//! - `file:///path` — a directory on local disk (the default: `<data-dir>/objects`);
//! - `s3://bucket/prefix` — S3 or an S3-compatible server, configured from the standard
//!   AWS variables (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP=true` for MinIO over http);
//! - `memory://` — in-process, for unit tests.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;

use crate::counting::{CountingStore, StoreCounters};
use crate::{Result, TierError};

/// The directory name of a topic incarnation starts with this, then the topic id: a
/// hive-style `key=value` part, so query engines see `topic_id` as a column.
pub const TOPIC_ID_DIR_PREFIX: &str = "topic_id=";

/// A store and the key prefix everything of this cluster lives under.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// The store, wrapped so every request is counted in `counters`.
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub url: String,
    pub counters: Arc<StoreCounters>,
    /// Faults to inject into requests (disarmed unless a test arms them).
    pub faults: Arc<crate::faults::Faults>,
    /// Manifest writes are conditional (see `manifest`): set for a store that brokers
    /// of a cluster share, once it was seen to honour conditional writes.
    pub fenced_writes: bool,
}

impl Bucket {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> Self {
        let counters = Arc::new(StoreCounters::default());
        let faults = Arc::new(crate::faults::Faults::default());
        let store = Arc::new(crate::faults::FaultyStore::new(store, faults.clone()));
        Self {
            store: Arc::new(CountingStore::new(store, counters.clone())),
            prefix: Path::from(prefix),
            url: url.to_string(),
            counters,
            faults,
            fenced_writes: false,
        }
    }

    /// Checks that the store honours conditional writes, as fencing a deposed leader's
    /// manifest writes needs: a create where the object exists and an update from a
    /// version that is not the stored one must both be refused, and an update from the
    /// stored version accepted, on a key named by `probe` (unique to this broker's run:
    /// brokers sharing the store probe it side by side). Leaves nothing behind. Returns
    /// what it found wrong.
    pub async fn check_conditional_writes(&self, probe: &str) -> std::result::Result<(), String> {
        use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
        let key = self
            .prefix
            .clone()
            .join(format!(".strata-conditional-probe-{probe}"));
        let put = |mode: PutMode| {
            let key = key.clone();
            async move {
                let opts = PutOptions {
                    mode,
                    ..Default::default()
                };
                self.store
                    .put_opts(&key, PutPayload::from_static(b"probe"), opts)
                    .await
            }
        };
        let _ = self.store.delete(&key).await;
        let outcome = async {
            let first = put(PutMode::Create)
                .await
                .map_err(|e| format!("a create-if-absent write failed: {e}"))?;
            match put(PutMode::Create).await {
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {}
                Ok(_) => return Err("it overwrote an object on a create-if-absent write (If-None-Match: * ignored)".to_string()),
                Err(e) => return Err(format!("a second create-if-absent write failed oddly: {e}")),
            }
            let stale = UpdateVersion {
                e_tag: Some("\"strata-not-the-stored-version\"".into()),
                version: None,
            };
            match put(PutMode::Update(stale)).await {
                Err(object_store::Error::Precondition { .. }) => {}
                Ok(_) => return Err("it accepted an update from a version that is not the stored one (If-Match ignored)".to_string()),
                Err(e) => return Err(format!("a conditional update failed oddly: {e}")),
            }
            put(PutMode::Update(first.into()))
                .await
                .map_err(|e| format!("an update from the stored version failed: {e}"))?;
            Ok(())
        }
        .await;
        let _ = self.store.delete(&key).await;
        outcome
    }

    /// On a `file://` store, removes what uploads a crash cut short left behind: the
    /// `<key>#<n>` staging files of incomplete multipart uploads, which object_store
    /// never lists and so nothing else would ever delete. Call it only while no upload
    /// is under way (at start-up; a `file://` store belongs to one broker). A file it
    /// cannot read or remove is logged and left. Returns how many files it removed;
    /// other stores have none. Blocking file I/O.
    pub fn remove_abandoned_uploads(&self) -> usize {
        fn walk(dir: &std::path::Path, removed: &mut usize) -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let path = entry.path();
                // Symbolic links are not followed: file_type() does not resolve them.
                let outcome = if entry.file_type()?.is_dir() {
                    walk(&path, removed)
                } else if entry
                    .file_name()
                    .to_str()
                    // As object_store names them: `<name>#<digits>`, split at the first #.
                    .and_then(|n| n.split_once('#'))
                    .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                {
                    std::fs::remove_file(&path).map(|()| {
                        tracing::info!(file = %path.display(), "removed an abandoned upload");
                        *removed += 1;
                    })
                } else {
                    Ok(())
                };
                if let Err(e) = outcome {
                    tracing::warn!(path = %path.display(), error = %e, "could not clean up abandoned uploads");
                }
            }
            Ok(())
        }
        let Some(root) = self.url.strip_prefix("file://") else {
            return 0;
        };
        let topics = std::path::Path::new(root).join("topics");
        let mut removed = 0;
        if topics.exists()
            && let Err(e) = walk(&topics, &mut removed)
        {
            tracing::warn!(path = %topics.display(), error = %e, "could not clean up abandoned uploads");
        }
        removed
    }

    /// Every key under `prefix`.
    pub async fn list_keys(&self, prefix: &Path) -> object_store::Result<Vec<Path>> {
        use futures::TryStreamExt;
        self.store
            .list(Some(prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
    }

    /// Deletes `key`; one already gone counts as deleted (deletes are retried).
    pub async fn delete_if_present(&self, key: &Path) -> object_store::Result<()> {
        use object_store::ObjectStoreExt;
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `<prefix>/topics/<topic>`: every incarnation of the topic name.
    pub fn topic_name_dir(&self, topic: &str) -> Path {
        self.prefix.clone().join("topics").join(topic)
    }

    /// `<prefix>/topics/<topic>/topic_id=<id>`: one incarnation of a topic. A topic
    /// deleted and created again under the same name gets a new id, so nothing one
    /// incarnation wrote (objects, manifests, and the cache entries keyed by them) can
    /// be taken for another's.
    pub fn topic_dir(&self, topic: &str, topic_id: &str) -> Path {
        self.topic_name_dir(topic)
            .join(format!("{TOPIC_ID_DIR_PREFIX}{topic_id}"))
    }

    /// `<prefix>/topics/<topic>/topic_id=<id>/partition=<n>`
    pub fn partition_dir(&self, topic: &str, topic_id: &str, partition: u32) -> Path {
        self.topic_dir(topic, topic_id)
            .join(format!("partition={partition}"))
    }
}

/// A local-filesystem store whose deletes are durable when they return: the directory
/// that held each removed file is fsynced (object_store fsyncs writes, not deletes). A
/// delete lost to a power cut would bring an object back that the manifest no longer
/// lists, or half of a deleted topic.
#[derive(Debug)]
struct DurableDeletes {
    inner: Arc<object_store::local::LocalFileSystem>,
    root: std::path::PathBuf,
}

impl std::fmt::Display for DurableDeletes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DurableDeletes({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for DurableDeletes {
    async fn put_opts(
        &self,
        location: &Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        use futures::StreamExt;
        let inner = self.inner.clone();
        let root = self.root.clone();
        inner
            .delete_stream(locations)
            .then(move |r| {
                let (inner, root) = (inner.clone(), root.clone());
                async move {
                    let location = r?;
                    let file = inner.path_to_filesystem(&location)?;
                    let dir = file.parent().unwrap_or(&root).to_path_buf();
                    tokio::task::spawn_blocking(move || {
                        std::fs::File::open(&dir).and_then(|d| d.sync_all())
                    })
                    .await
                    .map_err(|e| object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    })?
                    .map_err(|e| object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    })?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Builds the store for `url`.
pub fn open(url: &str) -> Result<Bucket> {
    open_with(url, &Default::default())
}

/// Builds the store for `url`; `options` are object_store's configuration keys (for S3:
/// `aws_endpoint`, `aws_region`, `aws_access_key_id`, `aws_secret_access_key`,
/// `aws_allow_http`, ...), applied over the AWS environment variables.
pub fn open_with(
    url: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<Bucket> {
    let bad = |reason: &str| TierError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(bad(
                "file URLs need an absolute path, e.g. file:///var/lib/strata/objects",
            ));
        }
        std::fs::create_dir_all(path).map_err(|e| bad(&format!("cannot create {path}: {e}")))?;
        // As durable as the log: a write (object or manifest) is fsynced with every
        // directory it created before it is acknowledged, and so is a delete.
        let store = object_store::local::LocalFileSystem::new_with_prefix(path)?.with_fsync(true);
        let store = DurableDeletes {
            inner: Arc::new(store),
            root: std::path::PathBuf::from(path),
        };
        return Ok(Bucket::new(Arc::new(store), "", url));
    }
    if url == "memory://" || url == "memory:///" {
        return Ok(Bucket::new(
            Arc::new(object_store::memory::InMemory::new()),
            "",
            url,
        ));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("name the bucket: s3://BUCKET/PREFIX"));
        }
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (k, v) in options {
            let key = k
                .parse::<object_store::aws::AmazonS3ConfigKey>()
                .map_err(|_| {
                    bad(&format!(
                        "unknown S3 option {k:?}; use object_store's aws_* keys"
                    ))
                })?;
            builder = builder.with_config(key, v);
        }
        let store = builder.build().map_err(|e| bad(&e.to_string()))?;
        return Ok(Bucket::new(
            Arc::new(store),
            prefix.trim_end_matches('/'),
            url,
        ));
    }
    Err(bad("use file:///PATH, s3://BUCKET/PREFIX or memory://"))
}

#[cfg(test)]
mod tests {

    #[tokio::test]
    async fn a_store_that_ignores_conditional_writes_is_found_out() {
        let bucket = open("memory://").unwrap();
        bucket.check_conditional_writes("t").await.unwrap();
        bucket.faults.ignore_conditional_writes(true);
        let why = bucket.check_conditional_writes("t").await.unwrap_err();
        assert!(why.contains("If-None-Match"), "{why}");
        // The probe leaves nothing behind.
        bucket.faults.ignore_conditional_writes(false);
        assert!(bucket.list_keys(&bucket.prefix).await.unwrap().is_empty());
    }

    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(open("memory://").is_ok());
        let e = open("ftp://x").unwrap_err().to_string();
        assert!(e.contains("s3://BUCKET/PREFIX"), "{e}");
        let e = open("file://relative").unwrap_err().to_string();
        assert!(e.contains("absolute path"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let b = open(&format!("file://{}", dir.path().join("objects").display())).unwrap();
        assert_eq!(
            b.partition_dir("t", "AAAAAAAAAAAAAAAAAAAAAQ", 3).as_ref(),
            "topics/t/topic_id=AAAAAAAAAAAAAAAAAAAAAQ/partition=3"
        );
    }

    #[tokio::test]
    async fn uploads_a_crash_cut_short_are_removed_and_nothing_else() {
        use object_store::{ObjectStoreExt, PutPayload};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let b = open(&format!("file://{}", root.display())).unwrap();
        let part = b.partition_dir("t", "id", 0);
        let done = part.clone().join("a.parquet");
        b.store
            .put(&done, PutPayload::from_static(b"whole"))
            .await
            .unwrap();
        // An upload with a part written, then the process gone: nothing runs its drop.
        let mut cut = b
            .store
            .put_multipart(&part.clone().join("b.parquet"))
            .await
            .unwrap();
        cut.put_part(PutPayload::from_static(b"half"))
            .await
            .unwrap();
        std::mem::forget(cut);
        let odd = root.join("topics/t/topic_id=id/partition=0/c#x.parquet");
        std::fs::write(&odd, b"a name with a #").unwrap();
        let staging = root.join("topics/t/topic_id=id/partition=0/b.parquet#1");
        assert!(staging.exists());

        assert_eq!(b.remove_abandoned_uploads(), 1);
        assert!(!staging.exists());
        assert!(odd.exists());
        assert_eq!(
            &b.store.get(&done).await.unwrap().bytes().await.unwrap()[..],
            b"whole"
        );
        assert_eq!(open("memory://").unwrap().remove_abandoned_uploads(), 0);
    }
}
