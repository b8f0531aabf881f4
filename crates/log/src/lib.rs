//! The storage engine: one [`Log`] per partition, a directory of segments.
//!
//! ```text
//! <dir>/00000000000000000000.log        batches, offsets dense from the base offset
//! <dir>/00000000000000000000.index      sparse offset index (sealed segments)
//! <dir>/00000000000000000000.timeindex  sparse time index (sealed segments)
//! <dir>/00000000000000052311.log        the active segment: the only one written
//! <dir>/leader-epoch-checkpoint         epoch -> start offset
//! ```
//!
//! Invariants:
//! - Offsets are dense: each segment starts where the previous one ended, and the log
//!   end offset is the active segment's end.
//! - Only the active (last) segment is written; it always exists.
//! - Every batch read from disk has its CRC checked before it is returned. A bad batch in
//!   a sealed segment is an error naming the log, offset and file; it is never skipped.
//! - On open, the active segment is scanned and a torn or corrupt tail is truncated and
//!   reported ([`RecoveryReport`]). Sealed segments with missing indexes are rescanned.
//! - Retention deletes whole sealed segments, oldest first, and asks a
//!   [`DeletionGuard`] first (the cold tier vetoes segments not yet uploaded).
//! - Creating, renaming and deleting a file is followed by an fsync of its directory.
//! - A failed fsync is final (what PostgreSQL and Kafka learned from fsyncgate: the
//!   kernel may have dropped the dirty pages and a retry can "succeed" over a gap): the
//!   log goes out of service and every later call fails with
//!   [`LogError::OutOfService`]. Nothing is acknowledged past it; a restart recovers.
//!
//! The engine is synchronous and holds no locks: the broker wraps each log in its own
//! lock, appends under a write lock and reads under a read lock.

mod clock;
mod compact;
mod epoch;
mod error;
mod segment;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use clock::{Clock, ManualClock, SystemClock};
pub use compact::{CleanReport, Cleaned, Cleaning, CompactConfig};
pub use epoch::EpochCache;
pub use error::{LogError, Result};
use segment::Segment;
pub use segment::write_atomic;
use strata_record::{Batch, BatchHeader, BatchIter};

/// Per-log settings (the Kafka topic configs that concern the storage engine).
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll the active segment when an append would take it past this size.
    pub segment_bytes: u64,
    /// Roll the active segment when it is older than this.
    pub segment_ms: i64,
    /// Delete sealed segments whose newest record is older than this; -1 keeps forever.
    pub retention_ms: i64,
    /// Delete the oldest sealed segments while the log is larger than this; -1: no limit.
    pub retention_bytes: i64,
    /// fsync after this many records; `u64::MAX` leaves flushing to the OS.
    pub flush_messages: u64,
    /// fsync when the oldest unflushed append is this old; -1 (or `i64::MAX`) never.
    pub flush_ms: i64,
    /// Bytes of log between offset index entries.
    pub index_interval_bytes: u64,
    /// `cleanup.policy=compact` (with or without `delete`): keep the latest record per
    /// key ([`Log::cleanable`]). Retention above applies as well when it is set.
    pub compact: Option<CompactConfig>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            flush_messages: u64::MAX,
            flush_ms: i64::MAX,
            index_interval_bytes: 4096,
            compact: None,
        }
    }
}

/// What recovery found and did when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut from the end of the active segment.
    pub truncated_bytes: u64,
    /// Offsets the cut bytes claimed to hold, when their header was readable.
    pub dropped_offsets: Option<(i64, i64)>,
    /// Why the tail was cut.
    pub reason: Option<String>,
    /// Log end offset after recovery.
    pub log_end_offset: i64,
    /// Sealed segments with a bad tail (reported, not modified): (file, offset, reason).
    pub corrupt_sealed: Vec<(PathBuf, i64, String)>,
    /// Bytes of segments scanned batch by batch because their indexes could not be
    /// trusted (the active segment after an unclean shutdown, missing index files).
    pub scanned_bytes: u64,
}

/// How to open a log.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Where a log with no segments yet starts.
    pub start_offset: i64,
    /// The broker shut down cleanly ([`Log::close`] ran and nothing was written since),
    /// so the active segment's index files are trusted instead of scanning it.
    pub clean_shutdown: bool,
}

/// Decides whether a sealed segment may be deleted by retention.
pub trait DeletionGuard {
    /// `true` if the segment `[base_offset, next_offset)` may go.
    fn may_delete(&self, base_offset: i64, next_offset: i64) -> bool;
}

/// Lets any segment go.
pub struct AllowAll;
impl DeletionGuard for AllowAll {
    fn may_delete(&self, _: i64, _: i64) -> bool {
        true
    }
}

/// Offsets given to an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: u32,
    pub max_timestamp: i64,
    /// `Some(flush.ms)` when this append is the first since the last fsync and
    /// `flush.ms` is set: the caller arranges for [`Log::flush`] that long from now, so
    /// `flush.ms` holds at its value rather than at a periodic tick's.
    pub flush_after_ms: Option<i64>,
}

/// Summary of one segment, for describe and the tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    pub max_timestamp: i64,
    pub path: PathBuf,
}

/// One partition's log.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    name: String,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    epochs: EpochCache,
    clock: Arc<dyn Clock>,
    unflushed: u64,
    first_unflushed_ms: Option<i64>,
    /// Set by the first failed fsync; the log refuses everything after it.
    out_of_service: Option<String>,
    /// What compaction did (`cleaner-offset-checkpoint`).
    cleaner: compact::CleanerState,
    /// Batches based below this offset may carry the legacy IEEE checksum
    /// (`batch-crc32c-from`).
    legacy_crc_below: i64,
}

/// The file that says from which offset a log's batches carry CRC-32C: every batch
/// below it was written before the checksum changed and may carry an IEEE CRC-32.
const CRC32C_FROM: &str = "batch-crc32c-from";

/// Reads `batch-crc32c-from`, `None` when the log has none yet.
fn read_crc32c_from(dir: &Path) -> Result<Option<i64>> {
    let path = dir.join(CRC32C_FROM);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<i64>().map(Some).map_err(|_| {
            LogError::io(
                format!("reading {}", path.display()),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{:?} is not an offset", text.trim()),
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(format!("reading {}", path.display()), e)),
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`. `name` (e.g. `orders-3`) labels errors and
    /// reports.
    pub fn open(
        dir: impl AsRef<Path>,
        name: impl Into<String>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, RecoveryReport)> {
        Self::open_from(dir, name, config, clock, 0)
    }

    /// As [`Log::open`]; a log with no segments yet starts at `start_offset` (a broker
    /// rebuilding a partition whose history lives in the cold tier).
    pub fn open_from(
        dir: impl AsRef<Path>,
        name: impl Into<String>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        start_offset: i64,
    ) -> Result<(Self, RecoveryReport)> {
        let options = OpenOptions {
            start_offset,
            clean_shutdown: false,
        };
        Self::open_with(dir, name, config, clock, options)
    }

    /// As [`Log::open`], with [`OpenOptions`].
    pub fn open_with(
        dir: impl AsRef<Path>,
        name: impl Into<String>,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        options: OpenOptions,
    ) -> Result<(Self, RecoveryReport)> {
        let start_offset = options.start_offset;
        let dir = dir.as_ref().to_path_buf();
        let name = name.into();
        if !dir.exists() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| LogError::io(format!("creating {}", dir.display()), e))?;
            if let Some(parent) = dir.parent() {
                segment::sync_dir(parent)?;
            }
        }
        compact::recover(&dir, &name)?;
        let mut bases = Vec::new();
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
            let fname = entry.file_name();
            let fname = fname.to_string_lossy();
            if let Some(stem) = fname.strip_suffix(".log")
                && let Ok(base) = stem.parse::<i64>()
            {
                bases.push(base);
            }
            if fname.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        let recorded_crc32c_from = read_crc32c_from(&dir)?;
        // Without the file, a log with segments predates CRC-32C: any of its batches may
        // carry the old checksum.
        let legacy_crc_below =
            recorded_crc32c_from.unwrap_or(if bases.is_empty() { i64::MIN } else { i64::MAX });
        let now = clock.now_ms();
        let mut report = RecoveryReport::default();
        let mut segments = BTreeMap::new();
        let n = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let active = i + 1 == n;
            // After a clean shutdown the active segment was fsynced and its indexes
            // written (`Log::close`): it loads like a sealed one, without a scan.
            let trust_indexes = !active || options.clean_shutdown;
            let (mut seg, scan) = Segment::open(
                &dir,
                base,
                config.index_interval_bytes,
                now,
                trust_indexes,
                legacy_crc_below,
            )?;
            if scan.is_some() {
                report.scanned_bytes += seg.size;
            }
            let rebuilt = scan.is_some();
            if let Some(end) = scan
                && let Some(reason) = end.error
            {
                if active {
                    tracing::warn!(
                        log = %name,
                        segment = %seg.path().display(),
                        valid_end_offset = seg.next_offset,
                        truncated_bytes = end.bad_len,
                        dropped_offsets = ?end.bad_offsets,
                        %reason,
                        "recovery: truncating the bad tail of the active segment"
                    );
                    seg.truncate_bytes(end.valid_len)?;
                    report.truncated_bytes = end.bad_len;
                    report.dropped_offsets = end.bad_offsets;
                    report.reason = Some(reason);
                } else {
                    tracing::error!(
                        log = %name,
                        segment = %seg.path().display(),
                        offset = seg.next_offset,
                        %reason,
                        "recovery: sealed segment has a corrupt tail; reads there will fail"
                    );
                    seg.set_bad_tail(end.valid_len, reason.clone());
                    report
                        .corrupt_sealed
                        .push((seg.path(), seg.next_offset, reason));
                }
            } else if rebuilt && !active && !seg.is_empty() {
                // Indexes were missing or invalid and the scan rebuilt them: persist them.
                // Valid ones are never rewritten (a start costs no index writes).
                seg.write_indexes()?;
            }
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            let seg = Segment::create(&dir, start_offset, config.index_interval_bytes, now)?;
            segments.insert(start_offset, seg);
        }
        let epochs = EpochCache::open(&dir)?;
        let dir_for_checkpoint = dir.clone();
        let legacy_crc_below = match recorded_crc32c_from {
            Some(o) => o,
            // A new log, or one from before CRC-32C: everything it holds now may carry
            // the old checksum; everything appended from here on carries the new one.
            None => {
                let end = segments
                    .last_key_value()
                    .map_or(start_offset, |(_, s)| s.next_offset);
                write_atomic(&dir.join(CRC32C_FROM), format!("{end}\n").as_bytes())?;
                end
            }
        };
        let mut log = Self {
            dir,
            name,
            config,
            segments,
            epochs,
            clock,
            unflushed: 0,
            first_unflushed_ms: None,
            out_of_service: None,
            cleaner: compact::read_state(&dir_for_checkpoint),
            legacy_crc_below,
        };
        let end = log.log_end_offset();
        log.epochs.truncate_from(end)?;
        // A crash between a truncation and its checkpoint write: offsets from the log
        // end on are new, never compacted.
        log.lower_cleaner_checkpoint(end)?;
        report.log_end_offset = end;
        Ok((log, report))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// The first offset still held.
    pub fn log_start_offset(&self) -> i64 {
        *self
            .segments
            .keys()
            .next()
            .expect("a log always has a segment")
    }

    /// The offset the next record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The largest record timestamp held (`i64::MIN` for an empty log).
    pub fn max_timestamp(&self) -> i64 {
        self.segments
            .values()
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(i64::MIN)
    }

    pub fn epochs(&self) -> &EpochCache {
        &self.epochs
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments.values().map(info).collect()
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    /// Why the log is out of service, if it is (a failed fsync).
    pub fn out_of_service(&self) -> Option<&str> {
        self.out_of_service.as_deref()
    }

    fn in_service(&self) -> Result<()> {
        match &self.out_of_service {
            None => Ok(()),
            Some(reason) => Err(LogError::OutOfService {
                log: self.name.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// fsyncs the active segment; a failure takes the log out of service for good.
    fn sync_active(&mut self) -> Result<()> {
        let r = self.active().sync();
        self.guarded(|_| r)
    }

    /// Runs `f`; if an fsync failed in it (of a segment, an index, a checkpoint or a
    /// directory), the log goes out of service for good before the error returns.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let r = f(self);
        if let Err(e @ LogError::SyncFailed { .. }) = &r
            && self.out_of_service.is_none()
        {
            tracing::error!(log = %self.name, error = %e, "fsync failed: the log is out of service until the broker restarts");
            self.out_of_service = Some(format!(
                "fsync failed ({e}). The kernel may have dropped the unsynced pages, so nothing more is written to or read from this log: check the disk, then restart the broker (recovery rechecks what reached it)"
            ));
            return self
                .in_service()
                .map(|()| unreachable!("just taken out of service"));
        }
        r
    }

    fn label(&self, mut e: LogError) -> LogError {
        if let LogError::Corrupt { log, .. } = &mut e {
            *log = self.name.clone();
        }
        e
    }

    /// Appends batches (concatenated, already validated with [`Batch::validate`]) as
    /// leader: rewrites each base offset from the log end and stamps `leader_epoch`.
    pub fn append(&mut self, batches: &mut [u8], leader_epoch: i32) -> Result<AppendInfo> {
        self.guarded(|log| log.append_inner(batches, leader_epoch))
    }

    fn append_inner(&mut self, batches: &mut [u8], leader_epoch: i32) -> Result<AppendInfo> {
        self.in_service()?;
        let mut next = self.log_end_offset();
        let base = next;
        let mut count = 0u32;
        let mut max_ts = i64::MIN;
        let mut pos = 0;
        while pos < batches.len() {
            let buf = &mut batches[pos..];
            let h = BatchHeader::decode(buf)?;
            strata_record::set_base_offset(buf, next);
            strata_record::set_leader_epoch(buf, leader_epoch);
            next += h.last_offset_delta as i64 + 1;
            count += h.record_count as u32;
            max_ts = max_ts.max(h.max_timestamp);
            pos += h.total_len();
        }
        self.epochs.assign(leader_epoch, base)?;
        let flush_after_ms = self.write(batches, count)?;
        Ok(AppendInfo {
            base_offset: base,
            last_offset: next - 1,
            record_count: count,
            max_timestamp: max_ts,
            flush_after_ms,
        })
    }

    /// Appends batches that already carry offsets and epochs (a follower copying its
    /// leader). The first must start at the log end offset and offsets must be dense.
    pub fn append_replicated(&mut self, batches: &[u8]) -> Result<AppendInfo> {
        self.guarded(|log| log.append_replicated_inner(batches))
    }

    fn append_replicated_inner(&mut self, batches: &[u8]) -> Result<AppendInfo> {
        self.in_service()?;
        let mut next = self.log_end_offset();
        let base = next;
        let mut count = 0u32;
        let mut max_ts = i64::MIN;
        for b in BatchIter::new(batches) {
            let b = b?;
            let h = b.header();
            if h.base_offset != next {
                return Err(LogError::NonSequential {
                    log: self.name.clone(),
                    expected: next,
                    got: h.base_offset,
                });
            }
            self.epochs.assign(h.leader_epoch, h.base_offset)?;
            next = h.next_offset();
            count += h.record_count as u32;
            max_ts = max_ts.max(h.max_timestamp);
        }
        let flush_after_ms = self.write(batches, count)?;
        Ok(AppendInfo {
            base_offset: base,
            last_offset: next - 1,
            record_count: count,
            max_timestamp: max_ts,
            flush_after_ms,
        })
    }

    /// Appends to the active segment (rolling first if due); returns `Some(flush.ms)`
    /// when the log just went from flushed to unflushed and `flush.ms` is set.
    fn write(&mut self, batches: &[u8], records: u32) -> Result<Option<i64>> {
        if batches.is_empty() {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        let active = self.active();
        let too_big = active.size + batches.len() as u64 > self.config.segment_bytes;
        let too_old = now - active.created_ms >= self.config.segment_ms;
        if !active.is_empty() && (too_big || too_old) {
            self.roll(now)?;
        }
        self.active_mut().append(batches)?;
        self.unflushed += records as u64;
        let was_clean = self.first_unflushed_ms.is_none();
        self.first_unflushed_ms.get_or_insert(now);
        if self.unflushed >= self.config.flush_messages {
            self.flush()?;
            return Ok(None);
        }
        let flush_ms = self.config.flush_ms;
        Ok((was_clean && (0..i64::MAX).contains(&flush_ms)).then_some(flush_ms))
    }

    /// Records appended since the last fsync.
    pub fn unflushed_records(&self) -> u64 {
        self.unflushed
    }

    /// Seals the active segment and starts a new one at the log end offset.
    pub fn roll(&mut self, now: i64) -> Result<()> {
        self.guarded(|log| log.roll_inner(now))
    }

    fn roll_inner(&mut self, now: i64) -> Result<()> {
        self.in_service()?;
        let end = self.log_end_offset();
        if self.active().is_empty() {
            return Ok(());
        }
        self.sync_active()?;
        self.active().write_indexes()?;
        strata_failpoint::crash_at("log-roll-after-seal", || self.name.clone());
        tracing::debug!(log = %self.name, base_offset = end, "rolled segment");
        let seg = Segment::create(&self.dir, end, self.config.index_interval_bytes, now)?;
        self.segments.insert(end, seg);
        Ok(())
    }

    /// Ends a clean shutdown: fsyncs the active segment and writes its indexes, so the
    /// next open (with [`OpenOptions::clean_shutdown`]) need not scan it. The log then
    /// refuses every call, as after a failed fsync: nothing can make those files stale.
    pub fn close(&mut self) -> Result<()> {
        self.flush()?;
        if !self.active().is_empty() {
            self.active().write_indexes()?;
        }
        // Nothing may change the log after its state is recorded for the next start.
        self.out_of_service = Some("the log was closed for shutdown".into());
        Ok(())
    }

    /// fsyncs the active segment.
    pub fn flush(&mut self) -> Result<()> {
        self.in_service()?;
        self.sync_active()?;
        self.unflushed = 0;
        self.first_unflushed_ms = None;
        Ok(())
    }

    /// fsyncs if the oldest unflushed append is older than `flush.ms`, and rolls the
    /// active segment if it is older than `segment.ms`. Called periodically.
    pub fn tick(&mut self) -> Result<()> {
        self.in_service()?;
        let now = self.clock.now_ms();
        if let Some(first) = self.first_unflushed_ms
            && self.config.flush_ms >= 0
            && now - first >= self.config.flush_ms
        {
            self.flush()?;
        }
        if now - self.active().created_ms >= self.config.segment_ms {
            self.roll(now)?;
        }
        Ok(())
    }

    fn check_range(&self, offset: i64) -> Result<()> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                log: self.name.clone(),
                requested: offset,
                start,
                end,
            });
        }
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes`
    /// but always at least one batch when one exists (so a consumer never stalls on a
    /// large batch). Every batch is CRC-checked. Empty at the log end.
    /// The first batch may start before `offset`; callers skip records below it.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Vec<u8>> {
        self.in_service()?;
        self.check_range(offset)?;
        let mut out: Vec<u8> = Vec::new();
        let mut at = offset;
        for seg in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .map(|(_, s)| s)
            .chain(self.segments.range(offset + 1..).map(|(_, s)| s))
        {
            let budget = max_bytes.saturating_sub(out.len());
            if !out.is_empty() && budget < strata_record::HEADER_LEN {
                break;
            }
            let (buf, pos) = match seg.read(at, budget) {
                Ok(r) => r,
                // Serve what was read; the next read starts at the bad batch and fails.
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(self.label(e)),
            };
            if buf.is_empty() {
                continue;
            }
            let reached_end = pos + buf.len() as u64 == seg.size;
            if out.is_empty() {
                out = buf;
            } else if out.len() + buf.len() <= max_bytes {
                out.extend_from_slice(&buf);
            } else {
                break;
            }
            // Stop short of the next segment unless this one was read to its end.
            if !reached_end || out.len() >= max_bytes {
                break;
            }
            at = seg.next_offset;
        }
        Ok(out)
    }

    /// [`Log::read`], leaving out batches from `end` on: what a reader may see when only
    /// offsets below `end` (the high watermark) are committed. `end` is a batch
    /// boundary, so no batch is cut.
    pub fn read_below(&self, offset: i64, max_bytes: usize, end: i64) -> Result<Vec<u8>> {
        let mut out = self.read(offset, max_bytes)?;
        let mut pos = 0;
        while pos + strata_record::HEADER_LEN <= out.len() {
            let h = strata_record::BatchHeader::decode(&out[pos..])?;
            if h.base_offset >= end {
                break;
            }
            pos += h.total_len();
        }
        out.truncate(pos);
        Ok(out)
    }

    /// The first offset whose record timestamp is >= `ts`, with that timestamp;
    /// `None` if every record is older.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        self.in_service()?;
        for seg in self.segments.values() {
            if seg.max_timestamp < ts {
                continue;
            }
            let mut at = seg.time_lookup(ts).max(seg.base_offset);
            while at < seg.next_offset {
                let (buf, _) = seg.read(at, 1 << 20).map_err(|e| self.label(e))?;
                if buf.is_empty() {
                    break;
                }
                for b in BatchIter::new(&buf) {
                    let b = b?;
                    if b.header().max_timestamp < ts {
                        at = b.header().next_offset();
                        continue;
                    }
                    let records = b.decoded()?;
                    for r in records.iter() {
                        let r = r?;
                        if r.offset >= at && r.timestamp >= ts {
                            return Ok(Some((r.offset, r.timestamp)));
                        }
                    }
                    at = b.header().next_offset();
                }
            }
        }
        Ok(None)
    }

    /// Removes everything at and after `offset` (rounded down to a batch boundary);
    /// used when a follower's log diverges from its leader's.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        self.guarded(|log| log.truncate_to_inner(offset))
    }

    fn truncate_to_inner(&mut self, offset: i64) -> Result<()> {
        self.in_service()?;
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let start = self.log_start_offset();
        let offset = offset.max(start);
        let doomed: Vec<i64> = self.segments.range(offset + 1..).map(|(&b, _)| b).collect();
        for b in doomed {
            if let Some(seg) = self.segments.remove(&b) {
                seg.delete_files()?;
            }
        }
        let now = self.clock.now_ms();
        match self.segments.range_mut(..=offset).next_back() {
            Some((_, seg)) => seg.truncate_to_offset(offset).map_err(|e| self.label(e))?,
            None => {
                let seg =
                    Segment::create(&self.dir, offset, self.config.index_interval_bytes, now)?;
                self.segments.insert(offset, seg);
            }
        }
        // A truncated sealed segment becomes the active one: drop its stale index files.
        let end = self.log_end_offset();
        self.epochs.truncate_from(end)?;
        self.lower_cleaner_checkpoint(end)?;
        tracing::info!(log = %self.name, offset = end, "truncated log");
        Ok(())
    }

    /// Empties the log and starts it again at `offset` (Kafka's truncateFullyAndStartAt):
    /// for a log found behind what the cold tier already holds, so that its offsets
    /// continue the cold tier's instead of repeating them.
    pub fn reset_to(&mut self, offset: i64) -> Result<()> {
        self.guarded(|log| log.reset_to_inner(offset))
    }

    fn reset_to_inner(&mut self, offset: i64) -> Result<()> {
        self.in_service()?;
        let now = self.clock.now_ms();
        // The old segments go first: a crash in between leaves fewer of them (or none,
        // and an empty log), always ending below `offset`, so the next start resets
        // again. Creating the new one first would leave it above a hole for good.
        for (_, seg) in std::mem::take(&mut self.segments) {
            seg.delete_files()?;
        }
        let fresh = Segment::create(&self.dir, offset, self.config.index_interval_bytes, now)?;
        self.segments.insert(offset, fresh);
        // The log holds no batch now, so no epoch: a follower reports none.
        self.epochs.truncate_from(i64::MIN)?;
        self.lower_cleaner_checkpoint(offset)?;
        self.unflushed = 0;
        self.first_unflushed_ms = None;
        tracing::warn!(log = %self.name, offset, "log emptied and restarted at an offset");
        Ok(())
    }

    /// Records an error met outside the log's own calls (a compaction pass run without
    /// the lock): a failed fsync takes the log out of service as it would inside.
    pub fn note_error(&mut self, e: LogError) -> LogError {
        match self.guarded(|_| Err::<(), _>(e)) {
            Err(e) => e,
            Ok(()) => unreachable!("an error stays an error"),
        }
    }

    /// Offsets written from `end` on are new: none of them may count as compacted.
    fn lower_cleaner_checkpoint(&mut self, end: i64) -> Result<()> {
        if self.cleaner.lower_to(end) {
            compact::write_state(&self.dir, &self.cleaner)?;
        }
        Ok(())
    }

    /// Applies `retention.ms` and `retention.bytes` to sealed segments, oldest first,
    /// stopping at the first one the guard keeps. Returns the deleted segments.
    pub fn enforce_retention(&mut self, guard: &dyn DeletionGuard) -> Result<Vec<SegmentInfo>> {
        self.guarded(|log| log.enforce_retention_inner(guard))
    }

    fn enforce_retention_inner(&mut self, guard: &dyn DeletionGuard) -> Result<Vec<SegmentInfo>> {
        self.in_service()?;
        let now = self.clock.now_ms();
        let mut size = self.size_bytes() as i64;
        let mut deleted = Vec::new();
        while self.segments.len() > 1 {
            let seg = self.segments.values().next().expect("non-empty");
            let expired = self.config.retention_ms >= 0
                && seg.max_timestamp != i64::MIN
                && now.saturating_sub(seg.max_timestamp) > self.config.retention_ms;
            let oversize = self.config.retention_bytes >= 0
                && size - seg.size as i64 >= self.config.retention_bytes;
            if !(expired || oversize) || !guard.may_delete(seg.base_offset, seg.next_offset) {
                break;
            }
            strata_failpoint::crash_at("log-retention-before-delete", || self.name.clone());
            let seg = self.segments.pop_first().expect("non-empty").1;
            size -= seg.size as i64;
            seg.delete_files()?;
            tracing::info!(
                log = %self.name,
                base_offset = seg.base_offset,
                next_offset = seg.next_offset,
                bytes = seg.size,
                reason = if expired { "retention.ms" } else { "retention.bytes" },
                "deleted segment"
            );
            deleted.push(info(&seg));
        }
        Ok(deleted)
    }

    /// Validates the batches a producer sent, before they reach [`Log::append`]:
    /// CRC, sizes, record count and offset deltas. Returns (batches, records).
    pub fn validate(batches: &[u8]) -> Result<(usize, u32)> {
        let mut pos = 0;
        let mut n = 0;
        let mut records = 0u32;
        while pos < batches.len() {
            let b = Batch::validate(&batches[pos..])?;
            pos += b.len();
            n += 1;
            records += b.header().record_count as u32;
        }
        Ok((n, records))
    }
}

fn info(s: &Segment) -> SegmentInfo {
    SegmentInfo {
        base_offset: s.base_offset,
        next_offset: s.next_offset,
        size: s.size,
        max_timestamp: s.max_timestamp,
        path: s.path(),
    }
}

#[cfg(test)]
mod tests;
