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

/// Reads records from `from` on out of a remote segment, re-encoded as stored batches,
/// up to about `max_bytes` (at least one row group's worth). Fetches only the row groups
/// needed, with range reads.
pub async fn read_from(
    bucket: &Bucket,
    seg: &RemoteSegment,
    from: i64,
    max_bytes: usize,
) -> Result<Vec<u8>> {
    let from = from.max(seg.base_offset);
    if from > seg.last_offset {
        return Ok(Vec::new());
    }
    let first = seg
        .row_groups
        .partition_point(|&o| o <= from)
        .saturating_sub(1);
    let corrupt = |e: parquet::errors::ParquetError| {
        TierError::Format(format!(
            "remote segment {} (offsets {}..={}) cannot be read: {e}",
            seg.key, seg.base_offset, seg.last_offset
        ))
    };
    #[allow(deprecated)] // the reader works; replacing it is tracked in docs/manifest.md
    let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
        bucket.store.clone(),
        Path::from(seg.key.as_str()),
    )
    .with_file_size(seg.size_bytes)
    .with_footer_size_hint(FOOTER_HINT);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(corrupt)?;
    let groups = builder.metadata().num_row_groups();
    let mut out = Vec::new();
    let mut builder = Some(builder);
    for rg in first..groups {
        let b = match builder.take() {
            Some(b) => b,
            None => {
                #[allow(deprecated)]
                let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
                    bucket.store.clone(),
                    Path::from(seg.key.as_str()),
                )
                .with_file_size(seg.size_bytes)
                .with_footer_size_hint(FOOTER_HINT);
                ParquetRecordBatchStreamBuilder::new(reader)
                    .await
                    .map_err(corrupt)?
            }
        };
        let stream = b.with_row_groups(vec![rg]).build().map_err(corrupt)?;
        let batches: Vec<_> = stream.try_collect().await.map_err(corrupt)?;
        for rb in &batches {
            out.extend_from_slice(&rows_to_batches(rb, from, i64::MAX, 256 * 1024)?);
        }
        if out.len() >= max_bytes {
            break;
        }
    }
    Ok(out)
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
        let bytes = read_from(&bucket, &seg, 3500, 1).await.unwrap();
        let recs: Vec<(i64, Vec<u8>)> = BatchIter::new(&bytes)
            .flat_map(|b| {
                b.unwrap()
                    .records()
                    .map(|r| r.unwrap())
                    .map(|r| (r.offset, r.value.unwrap().to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(recs.first().unwrap(), &(3500, b"value-3500".to_vec()));
        assert_eq!(recs.last().unwrap().0, 3999, "one row group");
        assert!(recs.windows(2).all(|w| w[1].0 == w[0].0 + 1));
        let all = read_from(&bucket, &seg, 0, usize::MAX).await.unwrap();
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
        let out = read_from(&bucket, &seg, 55_555, 1).await.unwrap();
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
