//! Log compaction (Kafka's `cleanup.policy=compact`): keep the latest record of each key.
//!
//! A pass works in three steps, so appends and reads wait only for the last one:
//! 1. [`Log::cleanable`] (under the broker's read lock): when the dirty part of the sealed
//!    segments (past the cleaner checkpoint) is at least `min.cleanable.dirty.ratio` of
//!    them, takes a [`Cleaning`]: the sealed segments' open files and sizes. The active
//!    segment is never cleaned.
//! 2. [`Cleaning::run`] (no lock): maps each key of the dirty part to its latest offset,
//!    within a memory budget, then rewrites the sealed segments up to the end of what the
//!    map covers, grouped up to `segment.bytes`, into `<dir>/cleaned/`, fsynced.
//! 3. [`Log::swap_cleaned`] (under the write lock): checks the segments are still the ones
//!    cleaned, then swaps the new ones in and advances the checkpoint.
//!
//! What a pass keeps, for each record below the cleaned end:
//! - a record whose key appears later in the dirty part is removed;
//! - a tombstone (null value) that is the latest for its key is removed once the pass
//!   that first kept it is `delete.retention.ms` old (Kafka's delete horizon; the
//!   passes are dated in `cleaner-offset-checkpoint`), so consumers that read the key's
//!   earlier value have that long to see the delete, whatever the tombstone's own
//!   timestamp;
//! - a record without a key is removed (producers may not send one to a compacted topic).
//!
//! Offsets never change. Each rewritten batch covers a contiguous offset range of the
//! batches it replaces (at most `i32::MAX` offsets, as a segment does) ([`strata_record::RetainedBatch`]), so a segment stays dense in
//! batches and readers step by `next_offset` as before; a read of a removed offset
//! returns the batch that covered it and the reader skips to the next record. Batches are
//! never merged across leader epochs (the epoch of a batch stays the epoch it was written
//! in).
//!
//! The swap is crash-safe. The new segments are complete and fsynced in `cleaned/`
//! together with a `plan` file (the range they replace and their base offsets) before
//! anything changes; renaming `cleaned/` to `swap/` commits the swap. Finishing it
//! removes the old segments in the range that are not in the plan and moves each new
//! file over its old namesake; at open, a `swap/` left by a crash is finished the same
//! way (a file still in `swap/` is newer than its namesake in the log directory, so the
//! moves are safe to redo), and a `cleaned/` left by a crash is removed: the swap never
//! began.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_record::RetainedBatch;

use crate::error::{LogError, Result};
use crate::segment::{self, Segment, file_name, sync_dir, write_atomic};
use crate::{Log, info};

/// The settings of `cleanup.policy=compact` (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactConfig {
    /// `delete.retention.ms`: how long a tombstone outlives the values it deletes.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: clean when the dirty part is at least this share of
    /// the sealed segments' bytes.
    pub min_cleanable_dirty_ratio: f64,
    /// Memory the key map of one pass may use; a dirty part with more distinct keys is
    /// cleaned over several passes.
    pub key_map_bytes: usize,
}

impl Default for CompactConfig {
    fn default() -> Self {
        Self {
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            key_map_bytes: 64 << 20,
        }
    }
}

/// What a compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// The first offset past what is now clean (the new checkpoint).
    pub cleaned_to: i64,
}

const CLEANED_DIR: &str = "cleaned";
const SWAP_DIR: &str = "swap";
const PLAN: &str = "plan";
const CHECKPOINT: &str = "cleaner-offset-checkpoint";
/// Rewritten batches stay under this size (a batch is never split below one record).
const MAX_OUT_BATCH: usize = 1 << 20;
/// The most offsets one rewritten batch or segment covers: a batch's `last_offset_delta`
/// and its records' offset deltas are i32, a segment's index holds u32 relative offsets.
const MAX_SPAN: i64 = i32::MAX as i64;
/// Map overhead per key beyond its bytes: the table slot (box pointer and length,
/// offset) at hashbrown's load factor, and the allocation of the boxed key.
const KEY_OVERHEAD: usize = 96;

/// An old segment a new one replaces: (base offset, next offset, size), as read.
type Replaced = (i64, i64, u64);
/// Each key of the dirty part and its latest offset.
type KeyMap = HashMap<Box<[u8]>, i64>;

/// A sealed segment as the cleaner reads it, without the log's lock.
#[derive(Debug)]
struct Input {
    base_offset: i64,
    next_offset: i64,
    size: u64,
    file: Arc<File>,
    path: PathBuf,
}

/// A compaction pass taken by [`Log::cleanable`], run by [`Cleaning::run`].
#[derive(Debug)]
pub struct Cleaning {
    name: String,
    dir: PathBuf,
    inputs: Vec<Input>,
    first_dirty: i64,
    config: CompactConfig,
    segment_bytes: u64,
    index_interval: u64,
    now_ms: i64,
    legacy_crc_below: i64,
    /// Earlier passes (see [`CleanerState`]), to date tombstones.
    passes: Vec<(i64, i64)>,
}

/// The new segments of a pass, ready for [`Log::swap_cleaned`].
#[derive(Debug)]
pub struct Cleaned {
    /// Each new segment and the old ones (base, next offset, size) it replaces.
    groups: Vec<(Segment, Vec<Replaced>)>,
    start: i64,
    end: i64,
    report: CleanReport,
    /// When the pass began (it dates the tombstones it kept).
    now_ms: i64,
}

impl Log {
    /// The offset below which the log was compacted (the cleaner checkpoint), never
    /// past the active segment.
    pub fn cleaner_checkpoint(&self) -> i64 {
        self.cleaner
            .checkpoint
            .max(self.log_start_offset())
            .min(self.active().base_offset)
    }

    /// Bytes of sealed segments past the cleaner checkpoint, and of all sealed segments.
    pub fn dirty_bytes(&self) -> (u64, u64) {
        let first_dirty = self.cleaner_checkpoint();
        let sealed = self.segments.len() - 1;
        let mut dirty = 0;
        let mut total = 0;
        for s in self.segments.values().take(sealed) {
            total += s.size;
            if s.next_offset > first_dirty {
                dirty += s.size;
            }
        }
        (dirty, total)
    }

    /// Takes a compaction pass if the log has `cleanup.policy=compact` and enough dirty
    /// bytes; `None` otherwise. Cheap: call it under a read lock, then
    /// [`Cleaning::run`] without one.
    pub fn cleanable(&self) -> Option<Cleaning> {
        let config = self.config.compact?;
        if self.out_of_service.is_some() {
            return None;
        }
        let (dirty, total) = self.dirty_bytes();
        if dirty == 0 || (dirty as f64) < config.min_cleanable_dirty_ratio * total as f64 {
            return None;
        }
        let sealed = self.segments.len() - 1;
        let mut inputs = Vec::with_capacity(sealed);
        for s in self.segments.values().take(sealed) {
            if s.has_bad_tail() {
                // Never rewrite around damage: the records past it could not be kept.
                tracing::warn!(log = %self.name, segment = %s.path().display(), "not compacting: a sealed segment is damaged");
                return None;
            }
            inputs.push(Input {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                size: s.size,
                file: s.file(),
                path: s.path(),
            });
        }
        Some(Cleaning {
            name: self.name.clone(),
            dir: self.dir.clone(),
            inputs,
            first_dirty: self.cleaner_checkpoint(),
            config,
            segment_bytes: self.config.segment_bytes,
            index_interval: self.config.index_interval_bytes,
            legacy_crc_below: self.legacy_crc_below,
            now_ms: self.clock.now_ms(),
            passes: self.cleaner.passes.clone(),
        })
    }

    /// Swaps in what [`Cleaning::run`] wrote, if the segments it read are still the
    /// log's; returns `None` (and drops the new files) when the log changed under it
    /// (retention, a truncation), in which case the next pass starts over.
    pub fn swap_cleaned(&mut self, cleaned: Cleaned) -> Result<Option<CleanReport>> {
        self.guarded(|log| log.swap_cleaned_inner(cleaned))
    }

    fn swap_cleaned_inner(&mut self, cleaned: Cleaned) -> Result<Option<CleanReport>> {
        self.in_service()?;
        let unchanged = cleaned.end <= self.active().base_offset
            && cleaned.groups.iter().all(|(_, olds)| {
                olds.iter().all(|&(base, next, size)| {
                    self.segments
                        .get(&base)
                        .is_some_and(|s| s.next_offset == next && s.size == size)
                })
            });
        let cleaned_dir = self.dir.join(CLEANED_DIR);
        if cleaned.groups.is_empty() {
            return Ok(None);
        }
        if !unchanged {
            drop(cleaned);
            remove_dir(&cleaned_dir)?;
            tracing::info!(log = %self.name, "compaction pass dropped: the log changed while it ran");
            return Ok(None);
        }
        let swap_dir = self.dir.join(SWAP_DIR);
        std::fs::rename(&cleaned_dir, &swap_dir)
            .map_err(|e| LogError::io(format!("committing {}", swap_dir.display()), e))?;
        sync_dir(&self.dir)?;
        strata_failpoint::crash_at("log-compact-after-commit", || self.name.clone());
        if let Err(e) = finish_swap(&self.dir, &self.name) {
            // Committed but not finished: the files no longer match the segments held in
            // memory. Serve nothing more; the next start finishes the swap.
            tracing::error!(log = %self.name, error = %e, "a committed compaction swap could not be finished: the log is out of service until the broker restarts");
            self.out_of_service = Some(format!(
                "a committed compaction swap could not be finished ({e}); restart the broker, which finishes it"
            ));
            return Err(e);
        }
        let Cleaned {
            groups,
            start,
            end,
            mut report,
            now_ms,
        } = cleaned;
        let olds: Vec<i64> = self.segments.range(start..end).map(|(&b, _)| b).collect();
        for b in olds {
            self.segments.remove(&b);
        }
        for (mut seg, _) in groups {
            seg.moved_to(&self.dir);
            self.segments.insert(seg.base_offset, seg);
        }
        self.cleaner.checkpoint = end;
        self.cleaner.passes.push((end, now_ms));
        if let Some(compact) = self.config.compact {
            // Older passes than the newest one past delete.retention.ms tell nothing
            // more: everything below that one's end is already removable.
            let horizon = now_ms.saturating_sub(compact.delete_retention_ms);
            let old = self
                .cleaner
                .passes
                .iter()
                .filter(|p| p.1 <= horizon)
                .count();
            self.cleaner.passes.drain(..old.saturating_sub(1));
        }
        write_state(&self.dir, &self.cleaner)?;
        report.segments_after = self.segments.range(start..end).count();
        report.bytes_after = self.segments.range(start..end).map(|(_, s)| s.size).sum();
        tracing::info!(
            log = %self.name,
            cleaned_to = end,
            segments_before = report.segments_before,
            segments_after = report.segments_after,
            bytes_before = report.bytes_before,
            bytes_after = report.bytes_after,
            records_removed = report.records_removed,
            tombstones_removed = report.tombstones_removed,
            "compacted log"
        );
        Ok(Some(report))
    }

    /// The new segments of the last pass, for describe.
    pub fn compacted_segments(&self) -> Vec<crate::SegmentInfo> {
        let end = self.cleaner_checkpoint();
        self.segments.range(..end).map(|(_, s)| info(s)).collect()
    }
}

impl Cleaning {
    /// Builds the key map and writes the compacted segments into `<dir>/cleaned/`.
    /// Reads only sealed segments, which no append touches; the log may go on meanwhile.
    /// `abort` is asked between segments (a shutdown): then the pass is dropped and
    /// `None` returned.
    pub fn run(self, abort: &dyn Fn() -> bool) -> Result<Option<Cleaned>> {
        let cleaned_dir = self.dir.join(CLEANED_DIR);
        let result = self.run_inner(abort);
        if !matches!(result, Ok(Some(_))) {
            let _ = remove_dir(&cleaned_dir);
        }
        result
    }

    fn run_inner(&self, abort: &dyn Fn() -> bool) -> Result<Option<Cleaned>> {
        let cleaned_dir = self.dir.join(CLEANED_DIR);
        remove_dir(&cleaned_dir)?;
        let Some((map, end)) = self.key_map(abort)? else {
            return Ok(None);
        };
        let mut report = CleanReport {
            cleaned_to: end,
            ..Default::default()
        };
        let inputs: Vec<&Input> = self
            .inputs
            .iter()
            .filter(|s| s.next_offset <= end)
            .collect();
        let Some(start) = inputs.first().map(|s| s.base_offset) else {
            return Ok(None);
        };
        // Not create_dir_all: a log whose directory went away (its topic deleted) must
        // not get it back.
        std::fs::create_dir(&cleaned_dir)
            .map_err(|e| LogError::io(format!("creating {}", cleaned_dir.display()), e))?;
        let horizon = self.now_ms.saturating_sub(self.config.delete_retention_ms);
        // A tombstone goes once the pass that first kept it is delete.retention.ms old
        // (Kafka's delete horizon): never in the pass that first sees it, whatever
        // timestamp its producer gave it.
        let tombstone_expired = |offset: i64| {
            let first = self.passes.partition_point(|p| p.0 <= offset);
            self.passes.get(first).is_some_and(|p| p.1 <= horizon)
        };
        let mut out = Vec::new();
        // The new segment being written, its writer, and the old segments it replaces.
        let mut current: Option<(Segment, Writer, Vec<Replaced>)> = None;
        for s in inputs {
            if abort() {
                return Ok(None);
            }
            // Consecutive segments go into one new segment while it would stay within
            // segment.bytes even if all of the next one were kept.
            // Nor may one cover more offsets than its index can address (u32 relative
            // offsets; Kafka caps a segment at i32::MAX offsets too).
            if let Some((seg, writer, _)) = &current
                && (seg.size + writer.pending() as u64 + s.size > self.segment_bytes
                    || s.next_offset - seg.base_offset > MAX_SPAN)
            {
                let (seg, writer, olds) = current.take().expect("checked");
                out.push(self.seal(seg, writer, olds)?);
            }
            let (seg, writer, olds) = match &mut current {
                Some(c) => c,
                None => {
                    let seg = Segment::create(
                        &cleaned_dir,
                        s.base_offset,
                        self.index_interval,
                        self.now_ms,
                    )?;
                    current.insert((seg, Writer::new(s.base_offset), Vec::new()))
                }
            };
            olds.push((s.base_offset, s.next_offset, s.size));
            report.segments_before += 1;
            report.bytes_before += s.size;
            segment::for_each_batch(&s.file, s.size, &s.path, self.legacy_crc_below, |batch| {
                let h = batch.header();
                if h.base_offset != writer.covered {
                    return Err(format!(
                        "batch claims offset {} where {} was expected",
                        h.base_offset, writer.covered
                    ));
                }
                writer.start_batch(seg, h)?;
                let records = batch.decoded().map_err(|e| e.to_string())?;
                for r in records.iter() {
                    let r = r.map_err(|e| e.to_string())?;
                    let latest = r
                        .key
                        .is_some_and(|k| map.get(k).is_none_or(|&o| r.offset >= o));
                    let expired_tombstone = r.value.is_none() && tombstone_expired(r.offset);
                    if latest && !expired_tombstone {
                        writer.push(seg, &r)?;
                    } else {
                        report.records_removed += 1;
                        if r.value.is_none() {
                            report.tombstones_removed += 1;
                        }
                    }
                }
                writer.covered = h.next_offset();
                Ok(())
            })
            .map_err(|reason| LogError::Corrupt {
                log: self.name.clone(),
                offset: writer.covered,
                segment: s.path.clone(),
                position: 0,
                reason,
            })?;
        }
        if let Some((seg, writer, olds)) = current {
            out.push(self.seal(seg, writer, olds)?);
        }
        let mut plan = format!("{start} {end}\n");
        for (seg, _) in &out {
            plan.push_str(&format!("{}\n", seg.base_offset));
        }
        write_atomic(&cleaned_dir.join(PLAN), plan.as_bytes())?;
        sync_dir(&self.dir)?;
        Ok(Some(Cleaned {
            groups: out,
            start,
            end,
            report,
            now_ms: self.now_ms,
        }))
    }

    /// Ends a new segment: its last batch written, fsynced, its index files written.
    fn seal(
        &self,
        mut seg: Segment,
        mut writer: Writer,
        olds: Vec<Replaced>,
    ) -> Result<(Segment, Vec<Replaced>)> {
        writer.close(&mut seg).map_err(|reason| LogError::Corrupt {
            log: self.name.clone(),
            offset: writer.covered,
            segment: seg.path(),
            position: seg.size,
            reason,
        })?;
        seg.sync()?;
        seg.write_indexes()?;
        Ok((seg, olds))
    }

    /// Maps each key of the dirty part to its latest offset. Returns the map and the
    /// end of what it covers: the end of the last segment whose keys all fit in the
    /// budget. The budget is checked between segments, so the first dirty segment is
    /// always mapped whole (as Kafka's cleaner needs its buffer to hold one segment):
    /// memory is the budget plus at most one segment's keys.
    fn key_map(&self, abort: &dyn Fn() -> bool) -> Result<Option<(KeyMap, i64)>> {
        let mut map: KeyMap = HashMap::new();
        let mut used = 0usize;
        let mut end = self.first_dirty;
        for s in self
            .inputs
            .iter()
            .filter(|s| s.next_offset > self.first_dirty)
        {
            if end > self.first_dirty && used > self.config.key_map_bytes {
                break;
            }
            if abort() {
                return Ok(None);
            }
            segment::for_each_batch(&s.file, s.size, &s.path, self.legacy_crc_below, |batch| {
                let records = batch.decoded().map_err(|e| e.to_string())?;
                for r in records.iter() {
                    let r = r.map_err(|e| e.to_string())?;
                    if let Some(k) = r.key {
                        match map.get_mut(k) {
                            Some(o) => *o = r.offset,
                            None => {
                                used += k.len() + KEY_OVERHEAD;
                                map.insert(k.into(), r.offset);
                            }
                        }
                    }
                }
                Ok(())
            })
            .map_err(|reason| LogError::Corrupt {
                log: self.name.clone(),
                offset: s.base_offset,
                segment: s.path.clone(),
                position: 0,
                reason,
            })?;
            end = s.next_offset;
        }
        Ok(Some((map, end)))
    }
}

/// Writes the kept records of consecutive batches as batches that cover the same
/// offsets, closing one at an epoch change or when it is full.
struct Writer {
    /// The batch being built: the records, (leader epoch, attributes), max timestamp.
    out: Option<(RetainedBatch, (i32, i16), i64)>,
    /// Offset after the last input batch seen.
    covered: i64,
}

impl Writer {
    fn new(base: i64) -> Self {
        Self {
            out: None,
            covered: base,
        }
    }

    /// Bytes of the batch being built, not yet in the segment.
    fn pending(&self) -> usize {
        self.out.as_ref().map_or(0, |(b, _, _)| b.size())
    }

    /// Starts on the input batch `h`: a new output batch when the open one has another
    /// leader epoch or attributes (timestamp type), or would cover too many offsets.
    fn start_batch(
        &mut self,
        seg: &mut Segment,
        h: &strata_record::BatchHeader,
    ) -> Result<(), String> {
        // Records are written uncompressed; the timestamp type stays as it was.
        let kind = (
            h.leader_epoch,
            h.attributes & !strata_record::COMPRESSION_MASK,
        );
        if self
            .out
            .as_ref()
            .is_some_and(|(b, k, _)| *k != kind || h.next_offset() - b.base_offset() > MAX_SPAN)
        {
            self.close(seg)?;
        }
        let base = h.base_offset;
        let (_, _, ts) = self
            .out
            .get_or_insert_with(|| (RetainedBatch::append_to(Vec::new(), base), kind, i64::MIN));
        *ts = (*ts).max(h.max_timestamp);
        Ok(())
    }

    fn push(&mut self, seg: &mut Segment, r: &strata_record::RecordRef<'_>) -> Result<(), String> {
        let full = self
            .out
            .as_ref()
            .is_some_and(|(b, _, _)| b.record_count() > 0 && b.size() >= MAX_OUT_BATCH);
        if full {
            let (b, kind, ts) = self.out.take().expect("open batch");
            let buf = b.finish(r.offset, kind.0, kind.1, ts);
            seg.append(&buf).map_err(|e| e.to_string())?;
            self.out = Some((
                RetainedBatch::append_to(Vec::new(), r.offset),
                kind,
                i64::MIN,
            ));
        }
        self.out.as_mut().expect("open batch").0.push(r);
        Ok(())
    }

    /// Ends the open batch at the offsets covered so far.
    fn close(&mut self, seg: &mut Segment) -> Result<(), String> {
        if let Some((b, kind, ts)) = self.out.take()
            && self.covered > b.base_offset()
        {
            let buf = b.finish(self.covered, kind.0, kind.1, ts);
            seg.append(&buf).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// What the cleaner has done to a log (`cleaner-offset-checkpoint`): the first line is
/// the offset below which the log is compacted; each further line, `end at_ms`, a pass
/// that compacted everything below `end` at `at_ms` (ends and times ascending), which
/// dates the tombstones it kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CleanerState {
    pub checkpoint: i64,
    pub passes: Vec<(i64, i64)>,
}

impl CleanerState {
    /// Offsets from `end` on are new: none of them counts as compacted.
    pub(crate) fn lower_to(&mut self, end: i64) -> bool {
        let changed = self.checkpoint > end || self.passes.last().is_some_and(|p| p.0 > end);
        self.checkpoint = self.checkpoint.min(end);
        for p in &mut self.passes {
            p.0 = p.0.min(end);
        }
        changed
    }
}

/// Reads the cleaner state of the log in `dir` (nothing compacted when there is none or
/// it is unreadable: the next pass then redoes work, never skips any).
pub(crate) fn read_state(dir: &Path) -> CleanerState {
    let text = std::fs::read_to_string(dir.join(CHECKPOINT)).unwrap_or_default();
    let mut lines = text.lines();
    let Some(checkpoint) = lines.next().and_then(|l| l.trim().parse().ok()) else {
        return CleanerState {
            checkpoint: i64::MIN,
            passes: Vec::new(),
        };
    };
    let passes = lines
        .filter_map(|l| {
            let (end, at) = l.split_once(' ')?;
            Some((end.parse().ok()?, at.parse().ok()?))
        })
        .collect();
    CleanerState { checkpoint, passes }
}

pub(crate) fn write_state(dir: &Path, state: &CleanerState) -> Result<()> {
    let mut text = format!("{}\n", state.checkpoint);
    for (end, at) in &state.passes {
        text.push_str(&format!("{end} {at}\n"));
    }
    write_atomic(&dir.join(CHECKPOINT), text.as_bytes())
}

/// At open: removes a pass that never committed and finishes one that did.
pub(crate) fn recover(dir: &Path, name: &str) -> Result<()> {
    let cleaned = dir.join(CLEANED_DIR);
    if cleaned.exists() {
        tracing::info!(log = %name, "removing a compaction pass a crash cut short before its swap");
        remove_dir(&cleaned)?;
    }
    if dir.join(SWAP_DIR).exists() {
        tracing::info!(log = %name, "finishing a compaction swap a crash cut short");
        finish_swap(dir, name)?;
    }
    Ok(())
}

/// Finishes the committed swap in `<dir>/swap/`: old segments in the plan's range that
/// are not in the plan go, each new file replaces its namesake, then `swap/` goes.
fn finish_swap(dir: &Path, name: &str) -> Result<()> {
    let swap = dir.join(SWAP_DIR);
    let plan_path = swap.join(PLAN);
    let plan = match std::fs::read_to_string(&plan_path) {
        Ok(plan) => plan,
        // The plan goes last (below): a swap/ without one was finished, and only its
        // removal was cut short.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            remove_dir(&swap)?;
            return sync_dir(dir);
        }
        Err(e) => return Err(LogError::io(format!("reading {}", plan_path.display()), e)),
    };
    let bad_plan = || LogError::Corrupt {
        log: name.to_string(),
        offset: 0,
        segment: plan_path.clone(),
        position: 0,
        reason: "compaction plan is unreadable".into(),
    };
    let mut lines = plan.lines();
    let (start, end) = lines
        .next()
        .and_then(|l| l.split_once(' '))
        .and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?)))
        .ok_or_else(bad_plan)?;
    let keep: Vec<i64> = lines
        .map(|l| l.parse::<i64>().map_err(|_| bad_plan()))
        .collect::<Result<_>>()?;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(format!("listing {}", dir.display()), e))?;
        let fname = entry.file_name();
        let fname = fname.to_string_lossy();
        let Some((stem, ext)) = fname.split_once('.') else {
            continue;
        };
        if !matches!(ext, "log" | "index" | "timeindex") {
            continue;
        }
        let Ok(base) = stem.parse::<i64>() else {
            continue;
        };
        if (start..end).contains(&base) && !keep.contains(&base) {
            std::fs::remove_file(entry.path())
                .map_err(|e| LogError::io(format!("deleting {}", entry.path().display()), e))?;
        }
    }
    sync_dir(dir)?;
    for &base in &keep {
        // The log file last: while it is in swap/, the index files beside it are new too.
        for ext in ["index", "timeindex", "log"] {
            let from = swap.join(file_name(base, ext));
            if from.exists() {
                let to = dir.join(file_name(base, ext));
                std::fs::rename(&from, &to).map_err(|e| {
                    LogError::io(format!("moving {} into place", from.display()), e)
                })?;
            }
        }
        strata_failpoint::crash_at("log-compact-mid-swap", || name.to_string());
    }
    sync_dir(dir)?;
    // The plan first, then the (now empty) directory: a crash between leaves a swap/
    // without a plan, which means finished.
    std::fs::remove_file(&plan_path)
        .map_err(|e| LogError::io(format!("removing {}", plan_path.display()), e))?;
    remove_dir(&swap)?;
    sync_dir(dir)
}

fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io(format!("removing {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, LogConfig, ManualClock, OpenOptions};
    use std::collections::BTreeMap;
    use strata_record::{BatchBuilder, BatchIter};

    const NOW: i64 = 1_000_000_000;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 2048,
            index_interval_bytes: 256,
            retention_ms: -1,
            compact: Some(CompactConfig {
                delete_retention_ms: 60_000,
                min_cleanable_dirty_ratio: 0.5,
                key_map_bytes: 1 << 20,
            }),
            ..LogConfig::default()
        }
    }

    fn open(dir: &Path, name: &str, clock: &Arc<ManualClock>) -> Log {
        let clock: Arc<dyn Clock> = clock.clone();
        Log::open_with(dir, name, config(), clock, OpenOptions::default())
            .unwrap()
            .0
    }

    /// Appends one batch of (key, value) records at `ts`; `None` values are tombstones.
    fn put(log: &mut Log, ts: i64, records: &[(&str, Option<String>)]) {
        let mut b = BatchBuilder::new(ts, 256);
        for (k, v) in records {
            b.append(ts, Some(k.as_bytes()), v.as_deref().map(str::as_bytes), &[]);
        }
        let mut buf = b.finish_vec();
        Log::validate(&buf).unwrap();
        log.append(&mut buf, 3).unwrap();
    }

    /// Every record from `from` on, as a consumer sees them: (offset, key, value).
    fn read_all(log: &Log, from: i64) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        let mut at = from;
        while at < log.log_end_offset() {
            let buf = log.read(at, 512).unwrap();
            for b in BatchIter::new(&buf) {
                let b = b.unwrap();
                for r in b.records() {
                    let r = r.unwrap();
                    if r.offset >= at {
                        let s = |v: &[u8]| String::from_utf8(v.to_vec()).unwrap();
                        out.push((r.offset, s(r.key.unwrap()), r.value.map(s)));
                    }
                }
                at = b.header().next_offset();
            }
        }
        out
    }

    /// What compaction must leave of `history` below `end`: the latest record per key,
    /// tombstones older than the horizon removed; everything from `end` on untouched.
    fn expected(
        history: &[(i64, String, Option<String>)],
        end: i64,
        horizon_ts: Option<(i64, &BTreeMap<i64, i64>)>,
    ) -> Vec<(i64, String, Option<String>)> {
        let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
        for (o, k, _) in history.iter().filter(|r| r.0 < end) {
            latest.insert(k, *o);
        }
        history
            .iter()
            .filter(|(o, k, v)| {
                if *o >= end {
                    return true;
                }
                // The active segment is never read by a pass: a key written again
                // there still keeps its newest record below `end`.
                let newest_below = latest[k.as_str()] == *o;
                let expired = v.is_none()
                    && horizon_ts.is_some_and(|(h, ts)| ts.get(o).is_some_and(|t| *t <= h));
                newest_below && !expired
            })
            .cloned()
            .collect()
    }

    /// Writes `rounds` batches of keyed records over 12 keys (values name their offset).
    fn fill(log: &mut Log, rounds: usize, ts: i64) -> Vec<(i64, String, Option<String>)> {
        let mut history = Vec::new();
        for round in 0..rounds {
            let o = log.log_end_offset();
            let recs: Vec<(String, Option<String>)> = (0..3)
                .map(|i| {
                    let k = format!("key-{:02}", (round * 7 + i * 5) % 12);
                    (
                        k,
                        Some(format!("value-{}-{}", o + i as i64, "x".repeat(20))),
                    )
                })
                .collect();
            let refs: Vec<(&str, Option<String>)> =
                recs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            put(log, ts, &refs);
            for (i, (k, v)) in recs.into_iter().enumerate() {
                history.push((o + i as i64, k, v));
            }
        }
        history
    }

    fn compact(log: &mut Log) -> Option<CleanReport> {
        let pass = log.cleanable()?;
        let cleaned = pass.run(&|| false).unwrap()?;
        log.swap_cleaned(cleaned).unwrap()
    }

    #[test]
    fn compaction_keeps_the_latest_record_per_key_at_its_offset_and_never_the_active_segment() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(NOW));
        let mut log = open(dir.path(), "compact-a-0", &clock);
        let history = fill(&mut log, 120, NOW);
        let end_before = log.log_end_offset();
        let active_base = log.segments().last().unwrap().base_offset;
        let (segs, bytes) = (log.segment_count(), log.size_bytes());
        assert!(segs > 5, "{segs} segments");

        let report = compact(&mut log).expect("a log of duplicates is dirty enough");
        assert_eq!(
            report.cleaned_to, active_base,
            "everything sealed is cleaned"
        );
        assert_eq!(log.log_end_offset(), end_before, "offsets never change");
        assert_eq!(log.log_start_offset(), 0);
        assert!(log.segment_count() < segs && log.size_bytes() < bytes / 2);
        let want = expected(&history, active_base, None);
        assert_eq!(read_all(&log, 0), want);
        // A read at any offset, removed or not, starts at the first record kept there.
        for o in (0..end_before).step_by(7) {
            let got = read_all(&log, o);
            let want: Vec<_> = want.iter().filter(|r| r.0 >= o).cloned().collect();
            assert_eq!(got.first(), want.first(), "read at {o}");
        }
        // Nothing new is dirty: no second pass.
        assert!(log.cleanable().is_none());

        // A restart reads the same, and appends go on at the same offset.
        drop(log);
        let mut log = open(dir.path(), "compact-a-0", &clock);
        assert_eq!(read_all(&log, 0), want);
        let more = fill(&mut log, 60, NOW + 1);
        assert_eq!(more[0].0, end_before);
        let mut all = history.clone();
        all.extend(more);
        let report = compact(&mut log).expect("dirty again");
        assert_eq!(read_all(&log, 0), expected(&all, report.cleaned_to, None));
        assert!(!dir.path().join("compact-a-0").exists());
        assert!(!dir.path().join(CLEANED_DIR).exists() && !dir.path().join(SWAP_DIR).exists());
    }

    #[test]
    fn a_tombstone_outlives_the_value_it_deletes_by_delete_retention_ms() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(NOW));
        let mut log = open(dir.path(), "compact-b-0", &clock);
        put(
            &mut log,
            NOW,
            &[("kept", Some("1".into())), ("gone", Some("2".into()))],
        );
        put(&mut log, NOW, &[("gone", None)]);
        // A tombstone its producer dated long ago is kept by the pass that first sees
        // it all the same: the horizon runs from that pass.
        let long_ago = NOW - 10 * 86_400_000;
        put(&mut log, long_ago, &[("old", Some("3".into()))]);
        put(&mut log, long_ago, &[("old", None)]);
        fill(&mut log, 120, NOW);
        let report = compact(&mut log).unwrap();
        let kept = read_all(&log, 0);
        let of = |k: &str| -> Vec<_> { kept.iter().filter(|r| r.1 == k).cloned().collect() };
        assert_eq!(of("kept"), vec![(0, "kept".into(), Some("1".into()))]);
        assert_eq!(
            of("gone"),
            vec![(2, "gone".into(), None)],
            "the value is gone, its tombstone stays within delete.retention.ms"
        );
        assert_eq!(of("old"), vec![(4, "old".into(), None)]);
        assert_eq!(report.tombstones_removed, 0);

        // Past delete.retention.ms the tombstone, still the latest for its key, goes too.
        clock.advance(60_001);
        fill(&mut log, 120, NOW + 60_001);
        let report = compact(&mut log).unwrap();
        assert_eq!(report.tombstones_removed, 2, "{report:?}");
        let kept = read_all(&log, 0);
        assert!(!kept.iter().any(|r| r.1 == "gone" || r.1 == "old"));
        assert_eq!(kept[0], (0, "kept".into(), Some("1".into())));
    }

    #[test]
    fn a_log_with_little_dirty_data_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(NOW));
        let mut log = open(dir.path(), "compact-c-0", &clock);
        fill(&mut log, 120, NOW);
        compact(&mut log).unwrap();
        // A little more, one new sealed segment: under min.cleanable.dirty.ratio.
        let (dirty, total) = log.dirty_bytes();
        assert_eq!(dirty, 0, "{total}");
        let end = log.log_end_offset();
        while log.segments().last().unwrap().base_offset == log.cleaner_checkpoint() {
            fill(&mut log, 1, NOW);
        }
        let (dirty, total) = log.dirty_bytes();
        if (dirty as f64) < 0.5 * total as f64 {
            assert!(log.cleanable().is_none(), "{dirty} of {total} dirty");
        }
        assert!(log.log_end_offset() > end);
    }

    /// A crash at each step of the swap: the log directory as it is at that moment
    /// (everything before it was fsynced) is copied, opened, and must read as either
    /// the log before the pass or after it, never a mix.
    #[test]
    fn a_crash_at_any_step_of_the_swap_leaves_the_log_before_or_after_the_pass() {
        for (site, name) in [
            ("log-compact-after-commit", "compact-crash-commit-0"),
            ("log-compact-mid-swap", "compact-crash-mid-0"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let part = dir.path().join("p");
            let copy = dir.path().join("copy");
            let clock = Arc::new(ManualClock::new(NOW));
            let mut log = open(&part, name, &clock);
            let history = fill(&mut log, 120, NOW);
            let before = read_all(&log, 0);
            assert_eq!(before, history);
            let (from, to) = (part.clone(), copy.clone());
            let copied = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = copied.clone();
            strata_failpoint::on_hit(site, name, move || {
                if !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    copy_dir(&from, &to);
                }
            })
            .unwrap();
            let report = compact(&mut log).unwrap();
            strata_failpoint::clear(site);
            assert!(
                copied.load(std::sync::atomic::Ordering::SeqCst),
                "{site} was reached"
            );
            let after = read_all(&log, 0);
            assert_eq!(after, expected(&history, report.cleaned_to, None));
            drop(log);
            let recovered = open(&copy, name, &clock);
            assert_eq!(
                read_all(&recovered, 0),
                after,
                "{site}: the committed pass is finished"
            );
            assert!(!copy.join(SWAP_DIR).exists());
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).unwrap();
            }
        }
    }
}
