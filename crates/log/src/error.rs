use std::path::PathBuf;

use strata_record::RecordError;

/// Everything the storage engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "offset {requested} is out of range for {log}: valid offsets are {start}..={end} (earliest {start}, latest {end})"
    )]
    OffsetOutOfRange {
        log: String,
        requested: i64,
        start: i64,
        end: i64,
    },
    #[error("corrupt data in {log} at offset {offset} ({segment}, byte {position}): {reason}")]
    Corrupt {
        log: String,
        offset: i64,
        segment: PathBuf,
        position: u64,
        reason: String,
    },
    /// An fsync failed: what was written may not be on disk, and a retry can "succeed"
    /// over pages the kernel dropped. The log that saw it goes out of service.
    #[error("{context}: fsync failed: {source}")]
    SyncFailed {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{log} is out of service: {reason}")]
    OutOfService { log: String, reason: String },
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] RecordError),
    #[error("{log}: batch with base offset {got} does not follow the log end offset {expected}")]
    NonSequential {
        log: String,
        expected: i64,
        got: i64,
    },
}

impl LogError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sync(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::SyncFailed {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
