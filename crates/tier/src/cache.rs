//! The cache of cold row groups, behind a small trait so the engine can change.
//!
//! A cached value is one row group of a remote segment, already re-encoded as stored
//! batches, keyed by `<object key>#<row group>`. Objects never change under a key, so
//! entries never go stale. A failed cache read is a miss: the reader falls back to the
//! store. The foyer implementation keeps hot entries in memory and spills to a disk
//! file in the data directory; a foyer upgrade is a disk-format change, so the disk
//! tier is rebuilt (not recovered) when its format does not match.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use async_trait::async_trait;
use bytes::Bytes;
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    PsyncIoEngineConfig, RecoverMode, Source,
};

/// Hits per tier and misses.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub memory_hits: AtomicU64,
    pub disk_hits: AtomicU64,
    pub misses: AtomicU64,
}

#[async_trait]
pub trait RowGroupCache: Send + Sync + std::fmt::Debug {
    async fn get(&self, key: &str) -> Option<Bytes>;
    /// Whether `key` is cached, without counting a hit or miss.
    fn contains(&self, key: &str) -> bool;
    fn insert(&self, key: String, value: Bytes);
    fn counters(&self) -> &CacheCounters;
}

/// foyer's hybrid memory + disk cache.
#[derive(Debug)]
pub struct FoyerCache {
    inner: HybridCache<String, Bytes>,
    counters: CacheCounters,
}

impl FoyerCache {
    /// A cache with `memory_bytes` in memory and `disk_bytes` in `dir`.
    pub async fn open(
        dir: &Path,
        memory_bytes: usize,
        disk_bytes: usize,
    ) -> crate::Result<Arc<Self>> {
        std::fs::create_dir_all(dir).map_err(|e| {
            crate::TierError::Format(format!(
                "cannot create cache directory {}: {e}",
                dir.display()
            ))
        })?;
        let bad =
            |e: foyer::Error| crate::TierError::Format(format!("cache in {}: {e}", dir.display()));
        let device = FsDeviceBuilder::new(dir)
            .with_capacity(disk_bytes)
            .build()
            .map_err(bad)?;
        let inner = HybridCacheBuilder::new()
            .with_name("strata-cold-row-groups")
            .memory(memory_bytes)
            .with_weighter(|k: &String, v: &Bytes| k.len() + v.len())
            .storage()
            .with_io_engine_config(PsyncIoEngineConfig::new())
            .with_engine_config(BlockEngineConfig::new(device))
            .with_recover_mode(RecoverMode::Quiet)
            .build()
            .await
            .map_err(bad)?;
        Ok(Arc::new(Self {
            inner,
            counters: CacheCounters::default(),
        }))
    }

    /// Waits until pending disk writes are done (tests and shutdown).
    pub async fn flush(&self) {
        self.inner.storage().wait().await;
    }

    pub async fn close(&self) {
        let _ = self.inner.close().await;
    }
}

#[async_trait]
impl RowGroupCache for FoyerCache {
    async fn get(&self, key: &str) -> Option<Bytes> {
        match self.inner.get(&key.to_string()).await {
            Ok(Some(e)) => {
                match e.source() {
                    Source::Disk => self.counters.disk_hits.fetch_add(1, Relaxed),
                    _ => self.counters.memory_hits.fetch_add(1, Relaxed),
                };
                Some(e.value().clone())
            }
            Ok(None) => {
                self.counters.misses.fetch_add(1, Relaxed);
                None
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "cold cache read failed; reading the object store");
                self.counters.misses.fetch_add(1, Relaxed);
                None
            }
        }
    }

    fn contains(&self, key: &str) -> bool {
        self.inner.contains(key)
    }

    fn insert(&self, key: String, value: Bytes) {
        self.inner.insert(key, value);
    }

    fn counters(&self) -> &CacheCounters {
        &self.counters
    }
}
