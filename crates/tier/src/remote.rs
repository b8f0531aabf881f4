//! Writing a sealed segment as one Parquet object (reading it back is [`crate::read`]).
//!
//! Besides the object's size and CRC-32, the upload records the CRC-32 of its footer and
//! of each row group in the manifest entry, computed from the bytes as they are written,
//! so a reader checks whatever range it fetches before decoding it. To know where each
//! row group's bytes end, the writer is handed at most one row group's rows at a time
//! and flushed after each; the ranges are then compared with what the footer says.

use arrow_array::RecordBatch;
use bytes::Bytes;
use object_store::buffered::BufWriter;
use parquet::arrow::ArrowWriter;

use crate::codec::{RowsBuilder, SCHEMA, row_group_ranges, writer_properties};
use crate::manifest::{FooterSum, RemoteSegment};
use crate::store::Bucket;
use crate::{Result, TierError};

/// Most rows per row group: about 4 MiB of 100-byte records. Fewer rows per group cost
/// more per row to write and to read (each column chunk has its own codec state).
pub const DEFAULT_ROWS_PER_GROUP: usize = 32768;
/// Most record bytes per row group, so larger records make smaller groups: a group is
/// the unit of decoding and caching (and the cache keeps entries up to 16 MiB on disk).
const ROW_GROUP_BYTES: usize = 4 << 20;
/// Bytes of segment file read at a time while uploading.
const READ_CHUNK: usize = 4 << 20;
/// Largest batch an upload accepts (the broker's own limit is far below).
const MAX_BATCH_BYTES: usize = 256 << 20;
/// Multipart part size of uploads (S3 needs at least 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// Parts of one upload in flight at once.
const UPLOAD_CONCURRENCY: usize = 4;

/// Collects what the Parquet writer emits into parts of [`PART_BYTES`] and hands each to
/// the uploading task, counting and checksumming on the way.
struct PartSink {
    part: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    crc: crc32fast::Hasher,
    size: u64,
    /// CRC-32 of the bytes written since the last cut.
    piece: crc32fast::Hasher,
    /// Each cut: where it fell, and the CRC-32 of the bytes since the cut before.
    cuts: Vec<(u64, u32)>,
    /// Once set, a copy of every byte written since (the page index and the footer).
    tail: Option<Vec<u8>>,
}

impl PartSink {
    fn new(tx: tokio::sync::mpsc::Sender<Bytes>) -> Self {
        Self {
            part: Vec::with_capacity(PART_BYTES),
            tx,
            crc: crc32fast::Hasher::new(),
            size: 0,
            piece: crc32fast::Hasher::new(),
            cuts: Vec::new(),
            tail: None,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let part = std::mem::replace(&mut self.part, Vec::with_capacity(PART_BYTES));
        self.tx
            .blocking_send(Bytes::from(part))
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }

    /// Ends a piece after the bytes written so far.
    fn cut(&mut self) {
        let piece = std::mem::take(&mut self.piece).finalize();
        self.cuts.push((self.size, piece));
    }
}

impl std::io::Write for PartSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.crc.update(data);
        self.piece.update(data);
        if let Some(tail) = &mut self.tail {
            tail.extend_from_slice(data);
        }
        self.size += data.len() as u64;
        // Parts are filled to exactly PART_BYTES, so the buffer never regrows.
        let mut rest = data;
        while !rest.is_empty() {
            let take = rest.len().min(PART_BYTES - self.part.len());
            self.part.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.part.len() == PART_BYTES {
                self.send()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What encoding a segment file produced, besides the bytes.
struct Encoded {
    /// (first offset, last offset, min timestamp, max timestamp, records)
    stats: (i64, i64, i64, i64, u64),
    row_groups: Vec<i64>,
    crc32: u32,
    size: u64,
    footer: FooterSum,
    row_group_crc32: Vec<u32>,
}

/// Hands whatever the writer holds to the sink and cuts a piece there.
fn cut(writer: &mut ArrowWriter<PartSink>) -> Result<()> {
    writer
        .sync()
        .map_err(|e| TierError::Format(format!("writing the object: {e}")))?;
    writer.inner_mut().cut();
    Ok(())
}

/// Writes `rows` as row groups of at most `rows_per_group` rows, each one flushed and
/// cut, so that each row group is one piece of the sink.
fn write_row_groups(
    writer: &mut ArrowWriter<PartSink>,
    rows: &RecordBatch,
    rows_per_group: usize,
) -> Result<()> {
    let mut at = 0;
    while at < rows.num_rows() {
        let n = rows_per_group.min(rows.num_rows() - at);
        writer.write(&rows.slice(at, n))?;
        writer.flush()?;
        cut(writer)?;
        at += n;
    }
    Ok(())
}

/// Reads a sealed segment file and writes it as Parquet into `sink`, checking every
/// batch's CRC. Runs on a blocking thread: it is CPU work, kept off the request path.
fn encode_segment(
    file: &std::path::Path,
    rows_per_group: usize,
    sink: PartSink,
) -> Result<Encoded> {
    use std::io::Read;
    let io = |e: std::io::Error| TierError::Format(format!("reading {}: {e}", file.display()));
    let mut f = std::fs::File::open(file).map_err(io)?;
    let rows_per_group = rows_per_group.max(1);
    let mut writer = ArrowWriter::try_new(
        sink,
        SCHEMA.clone(),
        Some(writer_properties(rows_per_group)),
    )?;
    // The leading magic is the first piece; each row group is one after it.
    cut(&mut writer)?;
    let mut rows = RowsBuilder::new();
    // One buffer for the whole file: complete batches are handed over, a partial one
    // moves to the front for the next read.
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut start, mut end) = (0, 0);
    loop {
        if end == buf.len() {
            if start > 0 {
                buf.copy_within(start..end, 0);
                (start, end) = (0, end - start);
            } else if buf.len() < MAX_BATCH_BYTES {
                buf.resize(buf.len() * 2, 0);
            } else {
                return Err(TierError::Format(format!(
                    "{} holds a batch larger than {MAX_BATCH_BYTES} bytes",
                    file.display()
                )));
            }
        }
        let n = f.read(&mut buf[end..]).map_err(io)?;
        end += n;
        // Batch by batch, so a row group ends at the first batch boundary past its
        // row or byte limit.
        while let Some(len) = strata_record::batch_total_len(&buf[start..end]) {
            let len = len?;
            if start + len > end {
                break;
            }
            let batch = &buf[start..start + len];
            let count = strata_record::BatchHeader::decode(batch)?
                .record_count
                .max(0) as usize;
            if rows.rows() > 0
                && (rows.rows() + count > rows_per_group || rows.bytes() + len > ROW_GROUP_BYTES)
            {
                write_row_groups(&mut writer, &rows.finish(), rows_per_group)?;
            }
            rows.append_batches(batch, 0)?;
            start += len;
        }
        if n == 0 && rows.rows() > 0 {
            write_row_groups(&mut writer, &rows.finish(), rows_per_group)?;
        }
        if n == 0 {
            if start != end {
                return Err(TierError::Format(format!(
                    "{} ends in a partial batch",
                    file.display()
                )));
            }
            break;
        }
    }
    let Some(stats) = rows.stats else {
        return Err(TierError::Format(format!(
            "{} holds no records",
            file.display()
        )));
    };
    let (base, last, _, _, records) = stats;
    if last - base + 1 != records as i64 {
        return Err(TierError::Format(format!(
            "segment {base}..={last} holds {records} records: offsets are not dense"
        )));
    }
    // What is written from here on is the page index and the footer.
    writer.inner_mut().tail = Some(Vec::new());
    let meta = writer.finish()?;
    let mut row_groups = Vec::with_capacity(meta.num_row_groups());
    let mut first = base;
    for rg in meta.row_groups() {
        row_groups.push(first);
        first += rg.num_rows();
    }
    let sink = writer.inner_mut();
    // The pieces cut between the magic and the footer must be the row groups as the
    // footer places them, or their CRCs would check other bytes than a reader decodes.
    let pieces: Vec<_> = sink.cuts.windows(2).map(|w| w[0].0..w[1].0).collect();
    let groups = row_group_ranges(&meta);
    if pieces != groups {
        let i = groups
            .iter()
            .zip(&pieces)
            .take_while(|(g, p)| g == p)
            .count();
        return Err(TierError::Format(format!(
            "the Parquet writer's footer places row group {i} of {} at {:?}, but it wrote \
             {} row groups and the bytes of that one at {:?}",
            groups.len(),
            groups.get(i),
            pieces.len(),
            pieces.get(i)
        )));
    }
    let row_group_crc32 = sink.cuts.iter().skip(1).map(|&(_, crc)| crc).collect();
    let footer = FooterSum::of(sink.tail.as_deref().unwrap_or_default())
        .ok_or_else(|| TierError::Format("the Parquet writer wrote no footer".into()))?;
    sink.tail = None;
    if !sink.part.is_empty() {
        sink.send().map_err(io)?;
    }
    Ok(Encoded {
        stats,
        row_groups,
        crc32: sink.crc.clone().finalize(),
        size: sink.size,
        footer,
        row_group_crc32,
    })
}

/// Writes a sealed segment file as one Parquet object under the partition's directory.
/// A blocking thread reads the file and encodes it; row groups go up as multipart parts
/// while later ones are encoded, so memory stays bounded (a few parts) whatever the
/// segment size. Every batch's CRC is checked on the way, and the file must hold exactly
/// `offsets` (what the log says the segment holds), which name the object: the object
/// appears only when its multipart upload completes, and writing the same segment again
/// writes the same key, so uploads are idempotent. Returns the manifest entry.
pub async fn upload_segment_file(
    bucket: &Bucket,
    topic: &str,
    topic_id: &str,
    partition: u32,
    file: &std::path::Path,
    offsets: std::ops::RangeInclusive<i64>,
    rows_per_group: usize,
) -> Result<RemoteSegment> {
    upload_segment_file_in(
        bucket,
        (topic, topic_id, partition),
        file,
        offsets,
        rows_per_group,
        None,
    )
    .await
}

/// [`upload_segment_file`] by a cluster's leader in `leader_epoch`: the key ends in
/// `-e<epoch>` (`<base>-<last>-e<epoch>.parquet`), so a deposed leader uploading the
/// same offsets (from a log that may have diverged) never overwrites the object its
/// successor's manifest lists.
pub async fn upload_segment_file_in(
    bucket: &Bucket,
    (topic, topic_id, partition): (&str, &str, u32),
    file: &std::path::Path,
    offsets: std::ops::RangeInclusive<i64>,
    rows_per_group: usize,
    leader_epoch: Option<i32>,
) -> Result<RemoteSegment> {
    let name = match leader_epoch {
        Some(e) => format!("{:020}-{:020}-e{e}.parquet", offsets.start(), offsets.end()),
        None => format!("{:020}-{:020}.parquet", offsets.start(), offsets.end()),
    };
    let key = bucket.partition_dir(topic, topic_id, partition).join(name);
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let sink = PartSink::new(tx);
    let path = file.to_path_buf();
    let encode = tokio::task::spawn_blocking(move || encode_segment(&path, rows_per_group, sink));
    let mut out = BufWriter::with_capacity(bucket.store.clone(), key.clone(), PART_BYTES)
        .with_max_concurrency(UPLOAD_CONCURRENCY);
    let mut put_error = None;
    while let Some(part) = rx.recv().await {
        if let Err(e) = out.put(part).await {
            put_error = Some(e);
            break;
        }
    }
    drop(rx); // stops the encoder if the upload failed
    let encoded = encode
        .await
        .map_err(|e| TierError::Format(format!("encoding {}: {e}", file.display())));
    let encoded = encoded.and_then(|r| r).and_then(|e| {
        let (base, last, ..) = e.stats;
        if (base, last) == (*offsets.start(), *offsets.end()) {
            Ok(e)
        } else {
            Err(TierError::Format(format!(
                "{} holds offsets {base}..={last}, not {}..={} as the log says",
                file.display(),
                offsets.start(),
                offsets.end()
            )))
        }
    });
    let encoded = match (put_error, encoded) {
        (None, Ok(encoded)) => encoded,
        (Some(e), _) => {
            let _ = out.abort().await;
            return Err(e.into());
        }
        (None, Err(e)) => {
            let _ = out.abort().await;
            return Err(e);
        }
    };
    {
        use tokio::io::AsyncWriteExt;
        // A failed shutdown cannot be aborted (BufWriter panics on abort after
        // shutdown): an incomplete multipart upload is left for the bucket's
        // AbortIncompleteMultipartUpload rule, as after a crash. Nothing is listed.
        if let Err(e) = out.shutdown().await {
            return Err(TierError::Format(format!("uploading {key}: {e}")));
        }
    }
    let (base, last, min_timestamp, max_timestamp, records) = encoded.stats;
    Ok(RemoteSegment {
        base_offset: base,
        last_offset: last,
        records,
        min_timestamp,
        max_timestamp,
        size_bytes: encoded.size,
        key: key.to_string(),
        row_groups: encoded.row_groups,
        crc32: encoded.crc32,
        footer: Some(encoded.footer),
        row_group_crc32: Some(encoded.row_group_crc32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::{ColdReader, ReadOptions};
    use strata_record::{BatchBuilder, BatchIter};

    fn segment(base: i64, n: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut next = base;
        while next < base + n {
            let mut b = BatchBuilder::new(10_000 + next, 1 << 16);
            for i in next..(next + 100).min(base + n) {
                b.append(
                    10_000 + i,
                    Some(format!("k{i}").as_bytes()),
                    Some(format!("value-{i}").as_bytes()),
                    &[],
                );
            }
            let count = b.record_count() as i64;
            let mut bytes = b.finish_vec();
            strata_record::set_base_offset(&mut bytes, next);
            out.extend_from_slice(&bytes);
            next += count;
        }
        out
    }

    #[tokio::test]
    async fn a_segment_holding_other_offsets_than_the_log_says_is_not_uploaded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("00000000000000001000.log");
        std::fs::write(&file, segment(1000, 5000)).unwrap();
        let objects = dir.path().join("objects");
        let bucket = crate::store::open(&format!("file://{}", objects.display())).unwrap();
        let err = upload_segment_file(&bucket, "t", "id", 0, &file, 1000..=6999, 1000)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("holds offsets 1000..=5999, not 1000..=6999"),
            "{err}"
        );
        let left: Vec<_> = walk(&objects);
        assert!(
            left.is_empty(),
            "an aborted upload leaves nothing: {left:?}"
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flat_map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() { walk(&p) } else { vec![p] }
            })
            .collect()
    }

    #[tokio::test]
    async fn a_segment_uploads_and_reads_back_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("00000000000000001000.log");
        std::fs::write(&file, segment(1000, 5000)).unwrap();
        let objects = dir.path().join("objects");
        let bucket = crate::store::open(&format!("file://{}", objects.display())).unwrap();
        let seg = upload_segment_file(&bucket, "t", "id", 2, &file, 1000..=5999, 1000)
            .await
            .unwrap();
        assert_eq!(
            seg.crc32,
            crc32fast::hash(&std::fs::read(objects.join(&seg.key)).unwrap())
        );
        assert_eq!(
            (seg.base_offset, seg.last_offset, seg.records),
            (1000, 5999, 5000)
        );
        assert_eq!(seg.row_groups, vec![1000, 2000, 3000, 4000, 5000]);
        assert_eq!(
            seg.key,
            "topics/t/topic_id=id/partition=2/00000000000000001000-00000000000000005999.parquet"
        );
        assert!(objects.join(&seg.key).exists());
        let leftovers = std::fs::read_dir(objects.join("topics/t/topic_id=id/partition=2"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 1, "only the segment object, no temporary");
        let reader = ColdReader::new(bucket.clone(), None, ReadOptions::default());
        let bytes = reader.read(&seg, None, 3500, 1).await.unwrap();
        let recs: Vec<(i64, Vec<u8>)> = BatchIter::new(&bytes)
            .flat_map(|b| {
                b.unwrap()
                    .records()
                    .map(|r| r.unwrap())
                    .map(|r| (r.offset, r.value.unwrap().to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        // Whole batches come back; like a consumer, skip records before the offset asked.
        assert!(recs.first().unwrap().0 <= 3500);
        let recs: Vec<_> = recs.into_iter().filter(|r| r.0 >= 3500).collect();
        assert_eq!(recs.first().unwrap(), &(3500, b"value-3500".to_vec()));
        assert_eq!(recs.last().unwrap().0, 3999, "one row group");
        assert!(recs.windows(2).all(|w| w[1].0 == w[0].0 + 1));
        let all = reader.read(&seg, None, 0, usize::MAX).await.unwrap();
        let n: usize = BatchIter::new(&all)
            .map(|b| b.unwrap().header().record_count as usize)
            .sum();
        assert_eq!(n, 5000);
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;
    use crate::read::{ColdReader, ReadOptions};
    use strata_record::BatchBuilder;

    #[tokio::test]
    async fn a_read_from_the_middle_fetches_a_small_fraction_of_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("00000000000000000000.log");
        let mut data = Vec::new();
        // Values that do not compress, so the object is as large as the data.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut v = vec![0u8; 90];
        for chunk in 0..200i64 {
            let mut b = BatchBuilder::new(1, 1 << 16);
            for i in 0..500i64 {
                for byte in v.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *byte = x as u8;
                }
                b.append(1 + i, None, Some(&v), &[]);
            }
            let mut bytes = b.finish_vec();
            strata_record::set_base_offset(&mut bytes, chunk * 500);
            data.extend_from_slice(&bytes);
        }
        std::fs::write(&file, &data).unwrap();
        let bucket = crate::store::open("memory://").unwrap();
        let seg = upload_segment_file(&bucket, "t", "id", 0, &file, 0..=99_999, 8192)
            .await
            .unwrap();
        assert!(seg.row_groups.len() >= 10, "{:?}", seg.row_groups);
        // A large object (objects up to 16 MiB are fetched whole) and no read-ahead:
        // what one read from the middle costs.
        let reader = ColdReader::new(
            bucket.clone(),
            None,
            ReadOptions {
                whole_object_bytes: seg.size_bytes / 10,
                read_ahead_bytes: 0,
                ..Default::default()
            },
        );
        let (gets_before, bytes_before) = bucket.counters.get();
        let out = reader.read(&seg, None, 55_555, 1).await.unwrap();
        let (gets, bytes) = bucket.counters.get();
        let (gets, bytes) = (gets - gets_before, bytes - bytes_before);
        let first = strata_record::BatchIter::new(&out).next().unwrap().unwrap();
        assert!(first.records().any(|r| r.unwrap().offset == 55_555));
        assert!(
            bytes * 5 < seg.size_bytes,
            "read {bytes} of {} bytes",
            seg.size_bytes
        );
        assert!(gets <= 4, "{gets} GETs");
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use crate::cache::{FoyerCache, RowGroupCache};
    use crate::read::{ColdReader, ReadOptions};
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    #[tokio::test]
    async fn a_second_read_is_served_by_the_cache_without_a_get() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("00000000000000000000.log");
        let mut b = strata_record::BatchBuilder::new(1, 1 << 20);
        for i in 0..30_000i64 {
            b.append(1 + i, None, Some(format!("value-{i}").as_bytes()), &[]);
        }
        std::fs::write(&file, b.finish_vec()).unwrap();
        let bucket = crate::store::open("memory://").unwrap();
        let seg = upload_segment_file(&bucket, "t", "id", 0, &file, 0..=29_999, 8192)
            .await
            .unwrap();
        let foyer = FoyerCache::open(&dir.path().join("cache"), 4 << 20, 16 << 20)
            .await
            .unwrap();
        let cache: Arc<dyn RowGroupCache> = foyer.clone();
        let reader = ColdReader::new(bucket.clone(), Some(cache.clone()), ReadOptions::default());
        let first = reader.read(&seg, None, 10_000, 1).await.unwrap();
        // Read-ahead decodes the next row group in the background: wait for it.
        let next = crate::read::cache_key(&seg, 2);
        let start = std::time::Instant::now();
        while !cache.contains(&next) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "read-ahead"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let (gets, _) = bucket.counters.get();
        assert!(gets > 0);
        let again = reader.read(&seg, None, 10_000, 1).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(bucket.counters.get().0, gets, "the second read made no GET");
        let c = cache.counters();
        assert_eq!(c.memory_hits.load(Relaxed) + c.disk_hits.load(Relaxed), 1);
        // The sequential next read is served by read-ahead, also without a GET.
        let ahead = reader.read(&seg, None, 16_384, 1).await.unwrap();
        assert!(!ahead.is_empty());
        assert_eq!(bucket.counters.get().0, gets);
        let offsets = crate::offsets_of(&again);
        assert!(offsets[0] <= 10_000 && offsets.contains(&10_000));
        foyer.close().await;
    }
}
