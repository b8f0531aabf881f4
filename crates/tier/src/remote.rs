//! Writing a sealed segment as one Parquet object, and reading offsets back from it.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::arrow::async_writer::AsyncFileWriter;

use crate::cache::RowGroupCache;
use crate::codec::{RowsBuilder, SCHEMA, rows_to_batches, writer_properties};
use crate::manifest::RemoteSegment;
use crate::store::Bucket;
use crate::{Result, TierError};

/// Rows per row group: about 1 MiB of 100-byte records, so a fetch reads one or two.
pub const DEFAULT_ROWS_PER_GROUP: usize = 8192;
/// Footer bytes fetched with the first read, so the footer costs one GET.
const FOOTER_HINT: usize = 64 * 1024;
/// Bytes of segment file read at a time while uploading.
const READ_CHUNK: usize = 4 << 20;

/// Counts and checksums what the Parquet writer emits on its way to the store.
struct Checksummed<W> {
    inner: W,
    sums: Arc<Mutex<(crc32fast::Hasher, u64)>>,
}

impl<W: AsyncFileWriter> AsyncFileWriter for Checksummed<W> {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        {
            let mut s = self.sums.lock().expect("not poisoned");
            s.0.update(&bs);
            s.1 += bs.len() as u64;
        }
        self.inner.write(bs)
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        self.inner.complete()
    }
}

/// Writes a sealed segment file as one Parquet object under the partition's directory,
/// streaming: the file is read a few MiB at a time and row groups go up as multipart
/// parts, so memory stays bounded whatever the segment size. Every batch's CRC is
/// checked on the way. Writing the same segment again writes the same key: uploads are
/// idempotent. Returns the manifest entry.
pub async fn upload_segment_file(
    bucket: &Bucket,
    topic: &str,
    partition: u32,
    file: &std::path::Path,
    rows_per_group: usize,
) -> Result<RemoteSegment> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| TierError::Format(format!("cannot open {}: {e}", file.display())))?;
    // The key names the offsets, which are known only after reading: write to a
    // temporary key, then copy into place (a server-side copy) and delete it.
    let dir = bucket.partition_dir(topic, partition);
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("segment")
        .to_string();
    let tmp = dir.clone().join(format!(".upload-{stem}.parquet"));
    let sums = Arc::new(Mutex::new((crc32fast::Hasher::new(), 0u64)));
    let sink = Checksummed {
        inner: BufWriter::with_capacity(bucket.store.clone(), tmp.clone(), 8 << 20),
        sums: sums.clone(),
    };
    let mut writer = AsyncArrowWriter::try_new(
        sink,
        SCHEMA.clone(),
        Some(writer_properties(rows_per_group)),
    )?;
    let mut rows = RowsBuilder::new();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut eof = false;
    while !eof {
        let mut chunk = vec![0u8; READ_CHUNK];
        let n = f
            .read(&mut chunk)
            .await
            .map_err(|e| TierError::Format(format!("reading {}: {e}", file.display())))?;
        eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
        // Hand over the complete batches; keep a partial one for the next read.
        let mut whole = 0;
        while let Some(Ok(len)) = strata_record::batch_total_len(&buf[whole..]) {
            if whole + len > buf.len() {
                break;
            }
            whole += len;
        }
        if eof && whole != buf.len() {
            return Err(TierError::Format(format!(
                "{} ends in a partial batch",
                file.display()
            )));
        }
        rows.append_batches(&buf[..whole], 0)?;
        buf.drain(..whole);
        if rows.rows() >= rows_per_group || (eof && rows.rows() > 0) {
            writer.write(&rows.finish()).await?;
        }
    }
    let Some((base, last, min_ts, max_ts, records)) = rows.stats else {
        writer.close().await?;
        let _ = bucket.store.delete(&tmp).await;
        return Err(TierError::Format(format!(
            "{} holds no records",
            file.display()
        )));
    };
    if last - base + 1 != records as i64 {
        return Err(TierError::Format(format!(
            "segment {base}..={last} holds {records} records: offsets are not dense"
        )));
    }
    let meta = writer.close().await?;
    let mut row_groups = Vec::with_capacity(meta.num_row_groups());
    let mut first = base;
    for rg in meta.row_groups() {
        row_groups.push(first);
        first += rg.num_rows();
    }
    let key = dir.join(format!("{base:020}-{last:020}.parquet"));
    bucket.store.copy(&tmp, &key).await?;
    bucket.store.delete(&tmp).await?;
    let (crc, size) = {
        let s = sums.lock().expect("not poisoned");
        (s.0.clone().finalize(), s.1)
    };
    Ok(RemoteSegment {
        base_offset: base,
        last_offset: last,
        records,
        min_timestamp: min_ts,
        max_timestamp: max_ts,
        size_bytes: size,
        key: key.to_string(),
        row_groups,
        crc32: crc,
    })
}

/// Reads records from `from` on out of a remote segment, as stored batches, up to about
/// `max_bytes` (at least the rest of one row group). Only the row groups needed are
/// fetched, with range reads, and through `cache` when given; after a read the next row
/// group is fetched into the cache in the background (read-ahead for replay).
pub async fn read_from(
    bucket: &Bucket,
    cache: Option<&Arc<dyn RowGroupCache>>,
    seg: &RemoteSegment,
    from: i64,
    max_bytes: usize,
) -> Result<Vec<u8>> {
    let from = from.max(seg.base_offset);
    if from > seg.last_offset {
        return Ok(Vec::new());
    }
    let groups = seg.row_groups.len();
    let first = seg
        .row_groups
        .partition_point(|&o| o <= from)
        .saturating_sub(1);
    let mut out = Vec::new();
    let mut next = groups;
    for rg in first..groups {
        let bytes = row_group(bucket, cache, seg, rg).await?;
        append_from(&mut out, &bytes, from);
        if out.len() >= max_bytes {
            next = rg + 1;
            break;
        }
    }
    if let Some(cache) = cache
        && next < groups
    {
        let key = cache_key(seg, next);
        if !cache.contains(&key) {
            let (bucket, cache, seg) = (bucket.clone(), cache.clone(), seg.clone());
            tokio::spawn(async move {
                if let Ok(bytes) = fetch_row_group(&bucket, &seg, next).await {
                    cache.insert(key, bytes);
                }
            });
        }
    }
    Ok(out)
}

fn cache_key(seg: &RemoteSegment, rg: usize) -> String {
    format!("{}#{rg}", seg.key)
}

/// Appends the batches of `bytes` that hold offsets at or after `from`.
fn append_from(out: &mut Vec<u8>, bytes: &[u8], from: i64) {
    let mut pos = 0;
    while pos < bytes.len() {
        let Ok(h) = strata_record::BatchHeader::decode(&bytes[pos..]) else {
            break;
        };
        if h.last_offset() >= from {
            out.extend_from_slice(&bytes[pos..]);
            return;
        }
        pos += h.total_len();
    }
}

async fn row_group(
    bucket: &Bucket,
    cache: Option<&Arc<dyn RowGroupCache>>,
    seg: &RemoteSegment,
    rg: usize,
) -> Result<Bytes> {
    let key = cache_key(seg, rg);
    if let Some(c) = cache
        && let Some(b) = c.get(&key).await
    {
        return Ok(b);
    }
    let bytes = fetch_row_group(bucket, seg, rg).await?;
    if let Some(c) = cache {
        c.insert(key, bytes.clone());
    }
    Ok(bytes)
}

/// Fetches one row group from the object store and re-encodes its rows as batches.
async fn fetch_row_group(bucket: &Bucket, seg: &RemoteSegment, rg: usize) -> Result<Bytes> {
    let corrupt = |e: parquet::errors::ParquetError| {
        TierError::Format(format!(
            "remote segment {} (offsets {}..={}) cannot be read: {e}",
            seg.key, seg.base_offset, seg.last_offset
        ))
    };
    #[allow(deprecated)] // works today; an own AsyncFileReader is the planned replacement
    let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
        bucket.store.clone(),
        Path::from(seg.key.as_str()),
    )
    .with_file_size(seg.size_bytes)
    .with_footer_size_hint(FOOTER_HINT);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(corrupt)?;
    let stream = builder.with_row_groups(vec![rg]).build().map_err(corrupt)?;
    let batches: Vec<_> = stream.try_collect().await.map_err(corrupt)?;
    let mut out = Vec::new();
    for rb in &batches {
        out.extend_from_slice(&rows_to_batches(rb, i64::MIN, i64::MAX, 256 * 1024)?);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
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
    async fn a_segment_uploads_and_reads_back_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("00000000000000001000.log");
        std::fs::write(&file, segment(1000, 5000)).unwrap();
        let objects = dir.path().join("objects");
        let bucket = crate::store::open(&format!("file://{}", objects.display())).unwrap();
        let seg = upload_segment_file(&bucket, "t", 2, &file, 1000)
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
            "topics/t/partition=2/00000000000000001000-00000000000000005999.parquet"
        );
        assert!(objects.join(&seg.key).exists());
        let leftovers = std::fs::read_dir(objects.join("topics/t/partition=2"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 1, "only the segment object, no temporary");
        let bytes = read_from(&bucket, None, &seg, 3500, 1).await.unwrap();
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
        let all = read_from(&bucket, None, &seg, 0, usize::MAX).await.unwrap();
        let n: usize = BatchIter::new(&all)
            .map(|b| b.unwrap().header().record_count as usize)
            .sum();
        assert_eq!(n, 5000);
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;
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
        let seg = upload_segment_file(&bucket, "t", 0, &file, DEFAULT_ROWS_PER_GROUP)
            .await
            .unwrap();
        assert!(seg.row_groups.len() >= 10, "{:?}", seg.row_groups);
        let (gets_before, bytes_before) = bucket.counters.get();
        let out = read_from(&bucket, None, &seg, 55_555, 1).await.unwrap();
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
    use crate::cache::FoyerCache;
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
        let seg = upload_segment_file(&bucket, "t", 0, &file, DEFAULT_ROWS_PER_GROUP)
            .await
            .unwrap();
        let foyer = FoyerCache::open(&dir.path().join("cache"), 4 << 20, 16 << 20)
            .await
            .unwrap();
        let cache: Arc<dyn RowGroupCache> = foyer.clone();
        let first = read_from(&bucket, Some(&cache), &seg, 10_000, 1)
            .await
            .unwrap();
        // Read-ahead fetches the next row group in the background: wait for it.
        let next = cache_key(&seg, 2);
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
        let again = read_from(&bucket, Some(&cache), &seg, 10_000, 1)
            .await
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(bucket.counters.get().0, gets, "the second read made no GET");
        let c = cache.counters();
        assert_eq!(c.memory_hits.load(Relaxed) + c.disk_hits.load(Relaxed), 1);
        // The sequential next read is served by read-ahead, also without a GET.
        let ahead = read_from(&bucket, Some(&cache), &seg, 16_384, 1)
            .await
            .unwrap();
        assert!(!ahead.is_empty());
        assert_eq!(bucket.counters.get().0, gets);
        let offsets = crate::offsets_of(&again);
        assert!(offsets[0] <= 10_000 && offsets.contains(&10_000));
        foyer.close().await;
    }
}
