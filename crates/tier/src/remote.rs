//! Writing a sealed segment as one Parquet object, and reading offsets back from it.

use arrow_array::{Array, Int64Array, TimestampMillisecondArray};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;

use crate::codec::{RowsBuilder, SCHEMA, rows_to_batches, writer_properties};
use crate::manifest::RemoteSegment;
use crate::store::Bucket;
use crate::{Result, TierError};

/// Rows per row group: about 1 MiB of 100-byte records, so a fetch reads one or two.
pub const DEFAULT_ROWS_PER_GROUP: usize = 8192;
/// Footer bytes fetched with the first read, so the footer costs one GET.
const FOOTER_HINT: usize = 64 * 1024;

/// Writes `batches` (a sealed segment's stored batches) as one Parquet object under the
/// partition's directory and returns its manifest entry. Writing the same segment again
/// writes the same key: uploads are idempotent.
pub async fn upload_segment(
    bucket: &Bucket,
    topic: &str,
    partition: u32,
    batches: &[u8],
    rows_per_group: usize,
) -> Result<RemoteSegment> {
    let mut rows = RowsBuilder::new();
    rows.append_batches(batches, 0)?;
    let records = rows.rows();
    if records == 0 {
        return Err(TierError::Format("an empty segment is not uploaded".into()));
    }
    let batch = rows.finish();
    let offsets = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("offset column");
    let timestamps = batch
        .column(1)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .expect("timestamp column");
    let base = offsets.value(0);
    let last = offsets.value(records - 1);
    if last - base + 1 != records as i64 {
        return Err(TierError::Format(format!(
            "segment {base}..={last} holds {records} records: offsets are not dense"
        )));
    }
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    for i in 0..timestamps.len() {
        min_ts = min_ts.min(timestamps.value(i));
        max_ts = max_ts.max(timestamps.value(i));
    }
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(
        &mut buf,
        SCHEMA.clone(),
        Some(writer_properties(rows_per_group)),
    )?;
    writer.write(&batch)?;
    let meta = writer.close()?;
    let mut row_groups = Vec::with_capacity(meta.num_row_groups());
    let mut first = base;
    for rg in meta.row_groups() {
        row_groups.push(first);
        first += rg.num_rows();
    }
    let key = bucket
        .partition_dir(topic, partition)
        .clone()
        .join(format!("{base:020}-{last:020}.parquet"));
    let seg = RemoteSegment {
        base_offset: base,
        last_offset: last,
        records: records as u64,
        min_timestamp: min_ts,
        max_timestamp: max_ts,
        size_bytes: buf.len() as u64,
        key: key.to_string(),
        row_groups,
        crc32: crc32fast::hash(&buf),
    };
    bucket.store.put(&key, PutPayload::from(buf)).await?;
    Ok(seg)
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
        let bucket = crate::store::open(&format!("file://{}", dir.path().display())).unwrap();
        let seg = upload_segment(&bucket, "t", 2, &segment(1000, 5000), 1000)
            .await
            .unwrap();
        assert_eq!(
            (seg.base_offset, seg.last_offset, seg.records),
            (1000, 5999, 5000)
        );
        assert_eq!(seg.row_groups, vec![1000, 2000, 3000, 4000, 5000]);
        assert_eq!(
            seg.key,
            "topics/t/partition=2/00000000000000001000-00000000000000005999.parquet"
        );
        assert!(dir.path().join(&seg.key).exists());
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
