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

/// A store and the key prefix everything of this cluster lives under.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// The store, wrapped so every request is counted in `counters`.
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub url: String,
    pub counters: Arc<StoreCounters>,
}

impl Bucket {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> Self {
        let counters = Arc::new(StoreCounters::default());
        Self {
            store: Arc::new(CountingStore::new(store, counters.clone())),
            prefix: Path::from(prefix),
            url: url.to_string(),
            counters,
        }
    }

    /// `<prefix>/topics/<topic>/partition=<n>`
    pub fn partition_dir(&self, topic: &str, partition: u32) -> Path {
        let mut p = self.prefix.clone();
        for part in ["topics", topic, &format!("partition={partition}")] {
            p = p.clone().join(part);
        }
        p
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
        let store = object_store::local::LocalFileSystem::new_with_prefix(path)?;
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
        assert_eq!(b.partition_dir("t", 3).as_ref(), "topics/t/partition=3");
    }
}
