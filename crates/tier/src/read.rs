//! Cold reads: records from remote segments, through the row-group cache, with
//! read-ahead for sequential replay.
//!
//! An object is fetched in *spans*, runs of whole row groups read with one ranged GET.
//! An object no larger than `whole_object_bytes` is one span, fetched whole with its
//! footer, so it costs one GET in all. A larger object's footer is fetched once and kept;
//! a read that misses fetches just the row group it needs, and read-ahead then fetches
//! the following row groups in spans of up to `span_bytes`.
//!
//! Row groups are decoded from spans into stored batches on a blocking thread and kept in
//! the [`RowGroupCache`]. After each read, the next `decode_ahead` row groups (crossing
//! into the next segment) are decoded in the background, and the span holding the row
//! group after those is fetched ahead, so a sequential reader finds its data ready.
//!
//! Invariants:
//! - Concurrent readers of one span, or of one row group, share one GET or one decode.
//! - Memory is bounded: at most `read_ahead_bytes / span_bytes` fetched spans (at least
//!   one) are held, least recently used out first, besides those still being fetched
//!   (a few per reader: the read-ahead of one read); parsed footers are kept for at
//!   most `FOOTERS_KEPT` objects and `footer_bytes` of memory.
//! - No byte from the bucket reaches the parquet decoder before it is checked against a
//!   CRC-32 the manifest recorded at upload: an object fetched whole against the
//!   object's, a footer fetched alone against the footer's, and a span against its row
//!   groups'. Entries written before footer and row-group CRCs were recorded have their
//!   footers and spans decoded unchecked (contained, on blocking threads).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parking_lot::Mutex;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use tokio::sync::OnceCell;

use crate::cache::RowGroupCache;
use crate::codec::{Span, decode_row_group, footer_reader};
use crate::manifest::{FooterSum, RemoteSegment};
use crate::store::Bucket;
use crate::{Result, TierError};

/// How cold reads fetch and read ahead.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Most bytes of Parquet one read-ahead GET fetches.
    pub span_bytes: u64,
    /// Objects up to this size are fetched whole, footer included, with one GET.
    pub whole_object_bytes: u64,
    /// Memory for fetched spans in all; 0 turns read-ahead off.
    pub read_ahead_bytes: u64,
    /// Row groups decoded ahead of a sequential reader.
    pub decode_ahead: usize,
    /// Memory for parsed footers kept, in all (at most `FOOTERS_KEPT` of them).
    pub footer_bytes: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            span_bytes: 32 << 20,
            whole_object_bytes: 16 << 20,
            read_ahead_bytes: 128 << 20,
            decode_ahead: 4,
            footer_bytes: 64 << 20,
        }
    }
}

/// Footer bytes fetched first for an object too large to fetch whole.
const FOOTER_HINT: u64 = 64 * 1024;
/// Parsed footers kept, at most.
const FOOTERS_KEPT: usize = 256;

/// A parsed footer and the byte range of each row group.
struct Footer {
    meta: ArrowReaderMetadata,
    groups: Vec<Range<u64>>,
    /// Memory it takes.
    bytes: usize,
}

/// Removes `key` from `map` when dropped, if it still maps to `cell`: the entry of
/// one decode or fetch, gone when it ends or its caller is cancelled, never a later
/// caller's entry.
struct Forget<'a, T> {
    map: &'a Mutex<HashMap<String, Arc<OnceCell<T>>>>,
    key: &'a str,
    cell: Arc<OnceCell<T>>,
}

impl<T> Drop for Forget<'_, T> {
    fn drop(&mut self) {
        let mut map = self.map.lock();
        if map
            .get(self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
        {
            map.remove(self.key);
        }
    }
}

/// Parsed footers, least recently parsed first, and the memory they take.
#[derive(Default)]
struct Footers {
    kept: VecDeque<(String, Arc<Footer>)>,
    bytes: usize,
}

/// A span being fetched or fetched: row groups `groups` of object `key`, bytes `range`
/// of it. Slots of one object never overlap.
struct SpanSlot {
    key: String,
    groups: Range<usize>,
    range: Range<u64>,
    cell: Arc<OnceCell<Span>>,
}

/// Reads remote segments; one per broker, shared by every partition.
pub struct ColdReader {
    bucket: Bucket,
    cache: Option<Arc<dyn RowGroupCache>>,
    options: ReadOptions,
    /// Least recently used first.
    spans: Mutex<VecDeque<SpanSlot>>,
    /// Row groups being decoded, by cache key.
    decoding: Mutex<HashMap<String, Arc<OnceCell<Bytes>>>>,
    /// Least recently parsed first.
    footers: Mutex<Footers>,
    /// Footers being fetched, by object key.
    fetching_footers: Mutex<HashMap<String, Arc<OnceCell<Arc<Footer>>>>>,
    /// Decodes running at once: one per core.
    decoders: tokio::sync::Semaphore,
}

impl std::fmt::Debug for ColdReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdReader")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A row group's cache key. The object key names the topic incarnation (its topic id)
/// and the offsets; the object's CRC is added so that bytes of one object can never be
/// served for another, even one written under the same key (the disk cache outlives
/// restarts and deletions).
pub(crate) fn cache_key(seg: &RemoteSegment, rg: usize) -> String {
    format!("{}#{:08x}#{rg}", seg.key, seg.crc32)
}

/// Parses a footer on a blocking thread, its panics contained: it is CPU work, and the
/// parquet crate's Thrift decoder can spend seconds on a damaged footer (see
/// [`crate::codec`]), which must not hold an async worker.
async fn parse_footer(
    parse: impl FnOnce() -> Result<Option<ParquetMetaData>> + Send + 'static,
) -> Result<Option<ParquetMetaData>> {
    tokio::task::spawn_blocking(move || crate::codec::contain("the footer", parse))
        .await
        .map_err(|e| TierError::Format(format!("parsing a footer: {e}")))?
}

/// Byte offset in `bytes` of the first batch holding an offset at or after `from`.
fn batch_start(bytes: &[u8], from: i64) -> usize {
    let mut pos = 0;
    while pos < bytes.len() {
        match strata_record::BatchHeader::decode(&bytes[pos..]) {
            Ok(h) if h.last_offset() < from => pos += h.total_len(),
            _ => break,
        }
    }
    pos
}

/// End of the whole batches from `start` that fit in `budget` bytes; at least one.
fn batch_cut(bytes: &[u8], start: usize, budget: usize) -> usize {
    let mut end = start;
    while end < bytes.len() {
        let Ok(h) = strata_record::BatchHeader::decode(&bytes[end..]) else {
            return bytes.len();
        };
        if end > start && end - start + h.total_len() > budget {
            break;
        }
        end += h.total_len();
    }
    end.min(bytes.len())
}

impl ColdReader {
    pub fn new(
        bucket: Bucket,
        cache: Option<Arc<dyn RowGroupCache>>,
        options: ReadOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            bucket,
            cache,
            options,
            spans: Mutex::new(VecDeque::new()),
            decoding: Mutex::new(HashMap::new()),
            footers: Mutex::new(Footers::default()),
            fetching_footers: Mutex::new(HashMap::new()),
            decoders: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        })
    }

    pub fn cache(&self) -> Option<&Arc<dyn RowGroupCache>> {
        self.cache.as_ref()
    }

    /// Stored batches from `from` on out of `seg`, about `max_bytes` of them (at least
    /// one batch), within one segment. `next` is the segment after `seg`, where
    /// read-ahead continues.
    pub async fn read(
        self: &Arc<Self>,
        seg: &RemoteSegment,
        next: Option<&RemoteSegment>,
        from: i64,
        max_bytes: usize,
    ) -> Result<Bytes> {
        let from = from.max(seg.base_offset);
        if from > seg.last_offset {
            return Ok(Bytes::new());
        }
        let first = seg
            .row_groups
            .partition_point(|&o| o <= from)
            .saturating_sub(1);
        let mut parts: Vec<Bytes> = Vec::new();
        let mut total = 0;
        let mut rg = first;
        while rg < seg.row_groups.len() {
            let bytes = self.row_group(seg, rg, false).await?;
            let start = if rg == first {
                batch_start(&bytes, from)
            } else {
                0
            };
            let end = batch_cut(&bytes, start, max_bytes.saturating_sub(total).max(1));
            total += end - start;
            parts.push(bytes.slice(start..end));
            if total >= max_bytes || end < bytes.len() {
                break;
            }
            rg += 1;
        }
        if self.options.read_ahead_bytes > 0 {
            self.read_ahead(seg, next, rg);
        }
        Ok(match parts.len() {
            1 => parts.pop().expect("one part"),
            _ => Bytes::from(parts.concat()),
        })
    }

    /// Row group `rg` of `seg` as stored batches: from the cache, or decoded (once, for
    /// all concurrent readers) from a span (see [`ColdReader::span`] for `ahead`).
    async fn row_group(
        self: &Arc<Self>,
        seg: &RemoteSegment,
        rg: usize,
        ahead: bool,
    ) -> Result<Bytes> {
        let key = cache_key(seg, rg);
        if let Some(c) = &self.cache
            && let Some(b) = c.get(&key).await
        {
            return Ok(b);
        }
        let (cell, _) = self.decoding_cell(&key);
        self.decode(cell, key, seg, rg, ahead).await
    }

    /// The cell that row group `key` is decoded into, and whether it is new.
    fn decoding_cell(&self, key: &str) -> (Arc<OnceCell<Bytes>>, bool) {
        let mut decoding = self.decoding.lock();
        match decoding.get(key) {
            Some(cell) => (cell.clone(), false),
            None => {
                let cell = Arc::new(OnceCell::new());
                decoding.insert(key.to_string(), cell.clone());
                (cell, true)
            }
        }
    }

    /// Decodes row group `rg` of `seg` into `cell` (unless another reader does) and
    /// the cache.
    async fn decode(
        self: &Arc<Self>,
        cell: Arc<OnceCell<Bytes>>,
        key: String,
        seg: &RemoteSegment,
        rg: usize,
        ahead: bool,
    ) -> Result<Bytes> {
        let _forget = Forget {
            map: &self.decoding,
            key: &key,
            cell: cell.clone(),
        };
        cell.get_or_try_init(|| async {
            let span = self.span(seg, rg, ahead).await?;
            let footer = self.footer(seg, Some(&span)).await?;
            let meta = footer.meta.clone();
            let _permit = self.decoders.acquire().await.expect("never closed");
            let bytes = tokio::task::spawn_blocking(move || decode_row_group(&span, &meta, rg))
                .await
                .map_err(|e| TierError::Format(format!("decoding: {e}")))?
                .map_err(|e| corrupt(seg, e))?;
            if let Some(c) = &self.cache {
                c.insert(key.clone(), bytes.clone());
            }
            Ok::<_, TierError>(bytes)
        })
        .await
        .cloned()
    }

    /// A span holding row group `rg` of `seg`, fetched (see [`ColdReader::slot`]).
    async fn span(self: &Arc<Self>, seg: &RemoteSegment, rg: usize, ahead: bool) -> Result<Span> {
        let footer = if self.fetched_whole(seg) {
            None
        } else {
            Some(self.footer(seg, None).await?)
        };
        let (cell, range, _) = self.slot(seg, footer.as_deref(), rg, ahead);
        cell.get_or_try_init(|| self.fetch(seg, range, footer.as_deref()))
            .await
            .cloned()
    }

    fn fetched_whole(&self, seg: &RemoteSegment) -> bool {
        seg.size_bytes <= self.options.whole_object_bytes
    }

    /// The slot for the span holding row group `rg` of `seg`, its byte range, and
    /// whether it is new. A held slot is reused; a new one is the whole object when it
    /// is small (`footer` None), else row group `rg` alone (`ahead` false: a reader
    /// waits for it) or the row groups from `rg` on, up to `span_bytes` and up to the
    /// next held slot of the object (`ahead` true: read-ahead), so no byte is fetched
    /// twice while its span is held.
    fn slot(
        &self,
        seg: &RemoteSegment,
        footer: Option<&Footer>,
        rg: usize,
        ahead: bool,
    ) -> (Arc<OnceCell<Span>>, Range<u64>, bool) {
        let mut spans = self.spans.lock();
        let holds = |s: &SpanSlot, g: usize| s.key == seg.key && s.groups.contains(&g);
        if let Some(i) = spans.iter().position(|s| holds(s, rg)) {
            let slot = spans.remove(i).expect("found");
            let found = (slot.cell.clone(), slot.range.clone(), false);
            spans.push_back(slot);
            return found;
        }
        let (groups, range) = match footer {
            None => (0..seg.row_groups.len(), 0..seg.size_bytes),
            Some(f) => {
                let mut end = rg + 1;
                while ahead
                    && end < f.groups.len()
                    && f.groups[end].end - f.groups[rg].start <= self.options.span_bytes
                    && !spans.iter().any(|s| holds(s, end))
                {
                    end += 1;
                }
                (rg..end, f.groups[rg].start..f.groups[end - 1].end)
            }
        };
        // Out go the least recently used spans not being fetched (fetched, or whose
        // fetch failed: nobody holds their cell). One still being fetched stays: its
        // bytes are coming whatever happens to the slot, and dropping it would have
        // the next reader of those row groups fetch them again.
        let keep = (self.options.read_ahead_bytes / self.options.span_bytes.max(1)).max(1);
        while spans.len() >= keep as usize {
            let idle = |s: &SpanSlot| s.cell.initialized() || Arc::strong_count(&s.cell) == 1;
            match spans.iter().position(idle) {
                Some(i) => drop(spans.remove(i)),
                None => break,
            }
        }
        let cell = Arc::new(OnceCell::new());
        spans.push_back(SpanSlot {
            key: seg.key.clone(),
            groups,
            range: range.clone(),
            cell: cell.clone(),
        });
        (cell, range, true)
    }

    /// Fetches bytes `range` of `seg` and checks them before anyone decodes them: the
    /// whole object (`footer` None) against its CRC-32, a span against its row groups'.
    async fn fetch(
        &self,
        seg: &RemoteSegment,
        range: Range<u64>,
        footer: Option<&Footer>,
    ) -> Result<Span> {
        let path = Path::from(seg.key.as_str());
        let bytes = self.bucket.store.get_range(&path, range.clone()).await?;
        let span = Span {
            start: range.start,
            bytes,
            object_len: seg.size_bytes,
        };
        let checked = match (footer, &seg.row_group_crc32) {
            (None, _) => crate::codec::check_crc("the object", &span.bytes, seg.crc32),
            (Some(f), Some(crcs)) => crate::codec::check_row_groups(&span, &f.groups, crcs),
            (Some(_), None) => Ok(()),
        };
        checked.map_err(|e| corrupt(seg, e))?;
        Ok(span)
    }

    /// The parsed footer of `seg`: kept, or parsed from `span` if it holds the whole
    /// object (checked when it was fetched), or fetched and checked. Concurrent callers
    /// share one footer GET.
    async fn footer(&self, seg: &RemoteSegment, span: Option<&Span>) -> Result<Arc<Footer>> {
        if let Some(f) = self.kept_footer(seg) {
            return Ok(f);
        }
        if let Some(s) = span.filter(|s| s.start == 0 && s.bytes.len() as u64 == seg.size_bytes) {
            let bytes = s.bytes.clone();
            let parsed = parse_footer(move || Ok(Some(footer_reader().parse_and_finish(&bytes)?)))
                .await
                .and_then(|m| {
                    m.ok_or_else(|| TierError::Format("the footer is incomplete".into()))
                });
            return self.keep_footer(seg, parsed);
        }
        let cell = self
            .fetching_footers
            .lock()
            .entry(seg.key.clone())
            .or_default()
            .clone();
        let _forget = Forget {
            map: &self.fetching_footers,
            key: &seg.key,
            cell: cell.clone(),
        };
        cell.get_or_try_init(|| async {
            // Kept by a fetch that ended between the check above and this cell.
            if let Some(f) = self.kept_footer(seg) {
                return Ok(f);
            }
            if let Some(sum) = seg.footer {
                let meta = self.fetch_checked_footer(seg, sum).await?;
                return self.keep_footer(seg, meta);
            }
            // An entry from before footers were recorded: the last FOOTER_HINT bytes,
            // more if the footer says it is longer, parsed unchecked.
            let path = Path::from(seg.key.as_str());
            let size = seg.size_bytes;
            let mut want = FOOTER_HINT.min(size);
            let meta = loop {
                let tail = self
                    .bucket
                    .store
                    .get_range(&path, size - want..size)
                    .await?;
                let had = want;
                let needed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                let needed_in = needed.clone();
                let parsed = parse_footer(move || {
                    let mut r = footer_reader();
                    match r.try_parse_sized(&tail, size) {
                        Ok(()) => Ok(Some(r.finish()?)),
                        Err(ParquetError::NeedMoreData(n)) if (n as u64) > had => {
                            needed_in.store(n as u64, std::sync::atomic::Ordering::Relaxed);
                            Ok(None)
                        }
                        Err(e) => Err(e.into()),
                    }
                })
                .await;
                match parsed {
                    Ok(Some(meta)) => break Ok(meta),
                    Ok(None) => want = needed.load(std::sync::atomic::Ordering::Relaxed),
                    Err(e) => break Err(e),
                }
            };
            self.keep_footer(seg, meta)
        })
        .await
        .cloned()
    }

    /// Fetches the footer the manifest describes (its exact bytes, one GET) and parses it
    /// once they match its CRC-32. The GET's errors are returned; what the footer holds
    /// is for [`ColdReader::keep_footer`] to judge.
    async fn fetch_checked_footer(
        &self,
        seg: &RemoteSegment,
        sum: FooterSum,
    ) -> Result<Result<ParquetMetaData>> {
        let size = seg.size_bytes;
        if !(8..=size).contains(&sum.len) {
            return Ok(Err(TierError::Format(format!(
                "the manifest gives its footer {} bytes of {size}",
                sum.len
            ))));
        }
        let path = Path::from(seg.key.as_str());
        let tail = self
            .bucket
            .store
            .get_range(&path, size - sum.len..size)
            .await?;
        Ok(
            parse_footer(move || crate::codec::parse_checked_footer(&tail, size, &sum).map(Some))
                .await
                .and_then(|m| {
                    m.ok_or_else(|| TierError::Format("the footer is incomplete".into()))
                }),
        )
    }

    /// Checks a parsed footer against the manifest and keeps it.
    fn keep_footer(
        &self,
        seg: &RemoteSegment,
        meta: Result<ParquetMetaData>,
    ) -> Result<Arc<Footer>> {
        let meta = meta.map_err(|e| corrupt(seg, e))?;
        let meta =
            crate::codec::footer_metadata(meta, seg.size_bytes).map_err(|e| corrupt(seg, e))?;
        let groups = crate::codec::row_group_ranges(meta.metadata());
        let crcs = seg.row_group_crc32.as_ref().map_or(groups.len(), Vec::len);
        if groups.len() != seg.row_groups.len() || groups.len() != crcs {
            return Err(corrupt(
                seg,
                TierError::Format(format!(
                    "it holds {} row groups, the manifest lists {} (and {} CRCs)",
                    groups.len(),
                    seg.row_groups.len(),
                    crcs
                )),
            ));
        }
        let bytes = meta.metadata().memory_size() + groups.len() * 16 + seg.key.len();
        let footer = Arc::new(Footer {
            meta,
            groups,
            bytes,
        });
        let mut footers = self.footers.lock();
        // Readers that each parsed a whole object's footer keep the first one.
        if let Some((_, kept)) = footers.kept.iter().find(|(k, _)| *k == seg.key) {
            return Ok(kept.clone());
        }
        while !footers.kept.is_empty()
            && (footers.kept.len() >= FOOTERS_KEPT
                || footers.bytes + bytes > self.options.footer_bytes)
        {
            let (_, old) = footers.kept.pop_front().expect("non-empty");
            footers.bytes -= old.bytes;
        }
        footers.bytes += bytes;
        footers.kept.push_back((seg.key.clone(), footer.clone()));
        Ok(footer)
    }

    fn kept_footer(&self, seg: &RemoteSegment) -> Option<Arc<Footer>> {
        self.footers
            .lock()
            .kept
            .iter()
            .find(|(k, _)| *k == seg.key)
            .map(|(_, f)| f.clone())
    }

    /// After a read that ended in row group `rg` of `seg`: decodes the next row groups
    /// into the cache and fetches the span after them, in the background.
    ///
    /// The spans holding those row groups are chosen here, before anything runs, in the
    /// reader's order; the tasks then find them held. So which spans a sequential
    /// replay fetches does not depend on how the tasks happen to be scheduled.
    fn read_ahead(self: &Arc<Self>, seg: &RemoteSegment, next: Option<&RemoteSegment>, rg: usize) {
        let mut ahead: Vec<(RemoteSegment, usize)> = Vec::new();
        let mut at = (seg, rg + 1);
        while ahead.len() <= self.options.decode_ahead {
            if at.1 >= at.0.row_groups.len() {
                match next {
                    Some(n) if at.0.key != n.key => at = (n, 0),
                    _ => break,
                }
                continue;
            }
            ahead.push((at.0.clone(), at.1));
            at.1 += 1;
        }
        // The last position is where the span fetched ahead starts.
        let span_at = if ahead.len() > self.options.decode_ahead {
            ahead.pop()
        } else {
            None
        };
        let cached = |(s, rg): &(RemoteSegment, usize)| {
            self.cache
                .as_ref()
                .is_some_and(|c| c.contains(&cache_key(s, *rg)))
        };
        ahead.retain(|p| !cached(p));
        let mut awaiting_footer: Option<String> = None;
        for (s, rg) in ahead.iter().chain(span_at.iter().filter(|p| !cached(p))) {
            if self.decoding.lock().contains_key(&cache_key(s, *rg)) {
                continue; // its decode has, or is getting, its span
            }
            let this = self.clone();
            let s = s.clone();
            let rg = *rg;
            let footer = match self.fetched_whole(&s) {
                true => None,
                false => match self.kept_footer(&s) {
                    Some(f) => Some(f),
                    None if awaiting_footer.as_ref() == Some(&s.key) => continue,
                    // The footer is not here yet: one task fetches it, then the span
                    // from here on.
                    None => {
                        awaiting_footer = Some(s.key.clone());
                        tokio::spawn(async move {
                            if let Err(e) = this.span(&s, rg, true).await {
                                tracing::debug!(key = %s.key, error = %e, "read-ahead fetch failed");
                            }
                        });
                        continue;
                    }
                },
            };
            let (cell, range, fresh) = self.slot(&s, footer.as_deref(), rg, true);
            if fresh {
                tokio::spawn(async move {
                    let fetch = || this.fetch(&s, range, footer.as_deref());
                    if let Err(e) = cell.get_or_try_init(fetch).await {
                        tracing::debug!(key = %s.key, error = %e, "read-ahead fetch failed");
                    }
                });
            }
        }
        // Each row group not yet decoded or being decoded gets a task; decoders are
        // bounded, and taken in order, so the nearest row group is ready first.
        for (s, rg) in ahead {
            let key = cache_key(&s, rg);
            let (cell, fresh) = self.decoding_cell(&key);
            if fresh {
                let this = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.decode(cell, key, &s, rg, true).await {
                        tracing::debug!(key = %s.key, rg, error = %e, "read-ahead decode failed");
                    }
                });
            }
        }
    }
}

/// `e` about `seg`, named with its key and offsets: bad data in the bucket.
fn corrupt(seg: &RemoteSegment, e: TierError) -> TierError {
    TierError::Corrupt {
        key: seg.key.clone(),
        base_offset: seg.base_offset,
        last_offset: seg.last_offset,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::upload_segment_file;
    use strata_record::BatchBuilder;

    /// Uploads `n` segments of `per` records with values that do not compress, in row
    /// groups of `rows` records; returns them in order.
    async fn segments(bucket: &Bucket, n: i64, per: i64, rows: usize) -> Vec<RemoteSegment> {
        let dir = tempfile::tempdir().unwrap();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut out = Vec::new();
        for s in 0..n {
            let base = s * per;
            let mut data = Vec::new();
            let mut b = BatchBuilder::new(0, 1 << 20);
            for i in 0..per {
                let v: Vec<u8> = (0..64)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                b.append(base + i, None, Some(&v), &[]);
            }
            let mut bytes = b.finish_vec();
            strata_record::set_base_offset(&mut bytes, base);
            data.extend_from_slice(&bytes);
            let file = dir.path().join(format!("{base:020}.log"));
            std::fs::write(&file, &data).unwrap();
            out.push(
                upload_segment_file(bucket, "t", "id", 0, &file, base..=base + per - 1, rows)
                    .await
                    .unwrap(),
            );
        }
        out
    }

    /// Reads every record from offset 0 to the end as a consumer would, passing the next
    /// segment along; returns the offsets read.
    async fn replay(reader: &Arc<ColdReader>, segs: &[RemoteSegment]) -> Vec<i64> {
        let mut offsets = Vec::new();
        let mut at = 0;
        for (i, seg) in segs.iter().enumerate() {
            while at <= seg.last_offset {
                let bytes = reader
                    .read(seg, segs.get(i + 1), at, 64 * 1024)
                    .await
                    .unwrap();
                for o in crate::offsets_of(&bytes) {
                    if o >= at {
                        offsets.push(o);
                    }
                }
                at = *offsets.last().unwrap() + 1;
            }
        }
        offsets
    }

    #[tokio::test]
    async fn a_sequential_replay_fetches_each_small_object_with_one_get() {
        let bucket = crate::store::open("memory://").unwrap();
        let segs = segments(&bucket, 4, 5_000, 1_000).await;
        let reader = ColdReader::new(bucket.clone(), None, ReadOptions::default());
        let (gets, _) = bucket.counters.get();
        let offsets = replay(&reader, &segs).await;
        assert_eq!(offsets, (0..20_000).collect::<Vec<_>>());
        // Read-ahead may still be fetching the last object's successor: there is none,
        // so every GET is done once the replay is.
        assert_eq!(bucket.counters.get().0 - gets, 4, "one GET per object");
    }

    #[tokio::test]
    async fn a_large_object_is_read_in_spans_after_one_footer_read() {
        let bucket = crate::store::open("memory://").unwrap();
        let segs = segments(&bucket, 1, 40_000, 1_000).await;
        let size = segs[0].size_bytes;
        // Objects above a tenth of this one are "large"; spans of a quarter of it.
        let options = ReadOptions {
            whole_object_bytes: size / 10,
            span_bytes: size / 4,
            read_ahead_bytes: size,
            decode_ahead: 4,
            ..Default::default()
        };
        let reader = ColdReader::new(bucket.clone(), None, options);
        let (gets, bytes) = bucket.counters.get();
        let offsets = replay(&reader, &segs).await;
        assert_eq!(offsets, (0..40_000).collect::<Vec<_>>());
        let (gets, bytes) = (
            bucket.counters.get().0 - gets,
            bucket.counters.get().1 - bytes,
        );
        // The footer, the first row group, then the other 39 in spans of up to a
        // quarter of the object: four, or five where row group sizes fall badly.
        assert!((6..=7).contains(&gets), "{gets} GETs");
        // No byte twice, but for the footer's tail read with the last row group.
        assert!(bytes <= size + FOOTER_HINT, "read {bytes} of {size} bytes");
    }

    #[tokio::test]
    async fn parsed_footers_are_kept_within_their_memory_budget() {
        let bucket = crate::store::open("memory://").unwrap();
        let segs = segments(&bucket, 2, 5_000, 1_000).await;
        // Footers fetched on their own; no read-ahead; one span held at a time.
        let reader = |footer_bytes| {
            ColdReader::new(
                bucket.clone(),
                None,
                ReadOptions {
                    whole_object_bytes: 0,
                    read_ahead_bytes: 0,
                    footer_bytes,
                    ..Default::default()
                },
            )
        };
        // Reads the first object, the second, and the first again: GETs for each.
        async fn gets_of(reader: Arc<ColdReader>, segs: &[RemoteSegment]) -> (Vec<u64>, usize) {
            let mut gets = Vec::new();
            for seg in [&segs[0], &segs[1], &segs[0]] {
                let before = reader.bucket.counters.get().0;
                reader
                    .read(seg, None, seg.base_offset + 10, 1)
                    .await
                    .unwrap();
                gets.push(reader.bucket.counters.get().0 - before);
            }
            (gets, reader.footers.lock().bytes)
        }
        let (gets, both) = gets_of(reader(usize::MAX), &segs).await;
        assert_eq!(gets, [2, 2, 1], "footer and row group; the footer kept");
        // Room for one of the two footers: the first is parsed again.
        let budget = both * 3 / 4;
        let (gets, kept) = gets_of(reader(budget), &segs).await;
        assert_eq!(gets, [2, 2, 2], "the first footer was let go");
        assert!(kept <= budget && kept > 0, "{kept} of {budget}");
    }

    /// One read of a record at each of `offsets`, all started at once; their answers.
    async fn read_at_once(
        reader: &Arc<ColdReader>,
        seg: &RemoteSegment,
        offsets: &[i64],
    ) -> Vec<Bytes> {
        let reads: Vec<_> = offsets
            .iter()
            .map(|&at| {
                let (reader, seg) = (reader.clone(), seg.clone());
                tokio::spawn(async move { reader.read(&seg, None, at, 1).await.unwrap() })
            })
            .collect();
        let mut answers = Vec::new();
        for r in reads {
            answers.push(r.await.unwrap());
        }
        answers
    }

    #[tokio::test]
    async fn concurrent_readers_of_one_row_group_share_one_get() {
        let bucket = crate::store::open("memory://").unwrap();
        let segs = segments(&bucket, 1, 5_000, 1_000).await;
        let reader = ColdReader::new(
            bucket.clone(),
            None,
            ReadOptions {
                read_ahead_bytes: 0,
                ..Default::default()
            },
        );
        let (gets, _) = bucket.counters.get();
        let answers = read_at_once(&reader, &segs[0], &[2_500; 8]).await;
        assert!(answers.windows(2).all(|w| w[0] == w[1]));
        assert!(crate::offsets_of(&answers[0]).contains(&2_500));
        assert_eq!(bucket.counters.get().0 - gets, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_readers_of_a_large_object_share_its_footer_and_row_groups() {
        let bucket = crate::store::open("memory://").unwrap();
        let segs = segments(&bucket, 1, 5_000, 1_000).await;
        let reader = ColdReader::new(
            bucket.clone(),
            None,
            ReadOptions {
                whole_object_bytes: 0,
                read_ahead_bytes: 0,
                ..Default::default()
            },
        );
        let (gets, _) = bucket.counters.get();
        // A reader in each of the five row groups, all at once. (A second reader of a
        // row group could come after its decode and find its span let go: with
        // read-ahead off, one fetched span is held.)
        let offsets: Vec<i64> = (0..5).map(|i| i * 1_000 + 500).collect();
        let answers = read_at_once(&reader, &segs[0], &offsets).await;
        for (at, bytes) in offsets.iter().zip(&answers) {
            assert!(crate::offsets_of(bytes).contains(at));
        }
        assert_eq!(
            bucket.counters.get().0 - gets,
            6,
            "one footer GET, one GET per row group"
        );
        assert!(reader.fetching_footers.lock().is_empty());
        assert!(reader.decoding.lock().is_empty());
        assert_eq!(reader.footers.lock().kept.len(), 1);
    }

    #[tokio::test]
    async fn a_damaged_object_is_named_with_its_offsets() {
        let bucket = crate::store::open("memory://").unwrap();
        let segs = segments(&bucket, 1, 2_000, 1_000).await;
        let path = Path::from(segs[0].key.as_str());
        let mut bytes = bucket
            .store
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        bucket.store.put(&path, bytes.into()).await.unwrap();
        let reader = ColdReader::new(bucket.clone(), None, ReadOptions::default());
        let e = reader
            .read(&segs[0], None, 0, 1)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&segs[0].key) && e.contains("0..=1999") && e.contains("CRC"),
            "{e}"
        );
    }

    /// Writes `patch` over the stored bytes of `seg` from `at` on; the size stays.
    async fn overwrite(bucket: &Bucket, seg: &RemoteSegment, at: u64, patch: &[u8]) {
        let path = Path::from(seg.key.as_str());
        let bytes = bucket.store.get(&path).await.unwrap().bytes().await;
        let mut bytes = bytes.unwrap().to_vec();
        bytes[at as usize..at as usize + patch.len()].copy_from_slice(patch);
        bucket.store.put(&path, bytes.into()).await.unwrap();
    }

    /// The start of a Thrift struct whose first field (id 15, unknown to Parquet) is a
    /// `list<bool>` of 2^31 - 1 elements: the parquet decoder skips such a list element
    /// by element, reading nothing, for seconds of CPU.
    const SLOW_THRIFT: [u8; 7] = [0xf9, 0xf1, 0xff, 0xff, 0xff, 0xff, 0x07];

    /// A reader that fetches footers and row groups on their own, as for large objects.
    fn span_reader(bucket: &Bucket) -> Arc<ColdReader> {
        let options = ReadOptions {
            whole_object_bytes: 0,
            read_ahead_bytes: 0,
            ..Default::default()
        };
        ColdReader::new(bucket.clone(), None, options)
    }

    /// What `read` failed with, if it was a check that refused bytes before decoding.
    fn refused(e: TierError) -> String {
        match e {
            TierError::Corrupt { source, .. } => match *source {
                TierError::Checksum { what, .. } => what,
                other => panic!("decoded, then failed: {other}"),
            },
            other => panic!("not a corrupt object: {other}"),
        }
    }

    #[tokio::test]
    async fn an_upload_records_the_crc_of_its_footer_and_of_each_row_group() {
        let bucket = crate::store::open("memory://").unwrap();
        let seg = segments(&bucket, 1, 5_000, 1_000).await.remove(0);
        let path = Path::from(seg.key.as_str());
        let bytes = bucket
            .store
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(seg.footer, crate::manifest::FooterSum::of(&bytes));
        let meta = footer_reader().parse_and_finish(&bytes).unwrap();
        let groups = crate::codec::row_group_ranges(&meta);
        assert_eq!(groups.len(), 5);
        assert_eq!(groups[0].start, 4, "the first row group follows the magic");
        let crcs: Vec<u32> = groups
            .iter()
            .map(|g| crc32fast::hash(&bytes[g.start as usize..g.end as usize]))
            .collect();
        assert_eq!(seg.row_group_crc32, Some(crcs));
        let footer = seg.footer.unwrap();
        assert_eq!(
            footer.len,
            u32::from_le_bytes(bytes[bytes.len() - 8..][..4].try_into().unwrap()) as u64 + 8
        );
    }

    #[tokio::test]
    async fn a_damaged_footer_is_refused_before_the_decoder_sees_it() {
        let bucket = crate::store::open("memory://").unwrap();
        let seg = segments(&bucket, 1, 5_000, 1_000).await.remove(0);
        let footer_at = seg.size_bytes - seg.footer.unwrap().len;
        overwrite(&bucket, &seg, footer_at, &SLOW_THRIFT).await;
        let reader = span_reader(&bucket);
        let e = reader.read(&seg, None, 2_500, 1).await.unwrap_err();
        assert!(e.to_string().contains(&seg.key), "{e}");
        assert_eq!(refused(e), "the footer");
    }

    #[tokio::test]
    async fn a_damaged_row_group_is_refused_before_the_decoder_sees_it() {
        let bucket = crate::store::open("memory://").unwrap();
        let seg = segments(&bucket, 1, 5_000, 1_000).await.remove(0);
        let reader = span_reader(&bucket);
        // The footer is read (and kept) first; then row group 1's first page header
        // is damaged.
        let first = reader.read(&seg, None, 0, 1).await.unwrap();
        let groups = reader.kept_footer(&seg).unwrap().groups.clone();
        overwrite(&bucket, &seg, groups[1].start, &SLOW_THRIFT).await;
        let e = reader.read(&seg, None, 1_500, 1).await.unwrap_err();
        assert_eq!(refused(e), "row group 1");
        assert!(
            crate::offsets_of(&first).contains(&0),
            "row group 0 was served"
        );
        let third = reader.read(&seg, None, 2_500, 1).await.unwrap();
        assert!(
            crate::offsets_of(&third).contains(&2_500),
            "so is row group 2"
        );
    }

    #[tokio::test]
    async fn an_entry_from_before_footer_and_row_group_crcs_is_read_as_before() {
        let bucket = crate::store::open("memory://").unwrap();
        let seg = segments(&bucket, 1, 5_000, 1_000).await.remove(0);
        let mut json = serde_json::to_value(&seg).unwrap();
        let entry = json.as_object_mut().unwrap();
        assert!(entry.remove("footer").is_some());
        assert!(entry.remove("row_group_crc32").is_some());
        let old: RemoteSegment = serde_json::from_value(json).unwrap();
        assert_eq!((old.footer, old.row_group_crc32.as_ref()), (None, None));
        assert!(
            !serde_json::to_string(&old).unwrap().contains("footer"),
            "and is written back as it was"
        );
        for reader in [
            span_reader(&bucket),
            ColdReader::new(bucket.clone(), None, ReadOptions::default()),
        ] {
            let got = reader.read(&old, None, 3_333, 1).await.unwrap();
            assert!(crate::offsets_of(&got).contains(&3_333));
        }
    }
}
