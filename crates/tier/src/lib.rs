//! The cold tier: sealed segments rewritten as Parquet on object storage.
//!
//! This crate owns:
//! - [`codec`]: segment batches <-> Parquet rows (schema in `docs/parquet-schema.md`);
//! - [`store`]: building the `ObjectStore` from a URL (`file://`, `s3://`, `memory://`);
//! - [`faults`]: a wrapper that makes chosen requests fail or stall, for fault tests;
//! - [`manifest`]: the per-partition manifest that lists every remote segment, so the
//!   bucket alone is enough to find and serve a partition's history;
//! - [`remote`]: writing a segment as one Parquet object;
//! - [`read`]: reading records back from remote segments, with a row-group cache
//!   ([`cache`]) and read-ahead.
//!
//! Object keys are hive-style so query engines infer the topic id and partition columns:
//! `<prefix>/topics/<topic>/topic_id=<id>/partition=<n>/<base:020>-<last:020>.parquet`,
//! with the manifest at `.../partition=<n>/_manifest.json` and the topic's metadata at
//! `<prefix>/topics/<topic>/topic_id=<id>/_topic.json` (a leading `_` keeps engines that
//! read the directory from taking them for data). The topic id is fixed when a topic is
//! created, so a topic deleted and created again under the same name never shares a key
//! (or a cache entry, which is keyed by object key) with its predecessor.
//!
//! Storage is reached only through `Arc<dyn ObjectStore>`.

pub mod cache;
pub mod codec;
pub mod counting;
pub mod faults;
pub mod manifest;
pub mod read;
pub mod remote;
pub mod store;

/// Everything the cold tier can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("invalid record data: {0}")]
    Record(#[from] strata_record::RecordError),
    #[error("{0}")]
    Format(String),
    /// Bytes read back differ from what the uploader wrote: they are refused before
    /// anything decodes them.
    #[error("{what}'s CRC-32 is {found:08x}, the manifest says {expected:08x}")]
    Checksum {
        what: String,
        found: u32,
        expected: u32,
    },
    /// A remote segment that cannot be read, and why.
    #[error(
        "remote segment {key} (offsets {base_offset}..={last_offset}) cannot be read: {source}"
    )]
    Corrupt {
        key: String,
        base_offset: i64,
        last_offset: i64,
        source: Box<TierError>,
    },
    #[error("invalid object store URL {url:?}: {reason}")]
    Url { url: String, reason: String },
}

pub type Result<T, E = TierError> = std::result::Result<T, E>;

/// Offsets of every record in concatenated stored batches (tests).
#[cfg(test)]
pub(crate) fn offsets_of(bytes: &[u8]) -> Vec<i64> {
    strata_record::BatchIter::new(bytes)
        .flat_map(|b| {
            b.unwrap()
                .records()
                .map(|r| r.unwrap().offset)
                .collect::<Vec<_>>()
        })
        .collect()
}
