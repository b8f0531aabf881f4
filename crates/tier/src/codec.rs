//! Segment batches <-> Parquet rows.
//!
//! One row per record: `offset` int64, `timestamp` timestamp(ms, UTC), `key` binary
//! (nullable), `value` binary (nullable), `headers` list<struct<key utf8, value binary>>.
//! Zstd, page statistics and the page index on; dictionary encoding off for the columns
//! that are unique per row (offset, timestamp, value); offset and timestamp are
//! delta-encoded (consecutive offsets cost almost nothing). `value` carries no min/max
//! statistics: payloads are opaque, no query prunes on their byte order, and comparing
//! every value was 4% of encoding. Rows come back as record batches
//! in the log's own format with the same offsets, timestamps, keys, values and headers
//! (batch boundaries, producer ids and leader epochs are not kept).
//!
//! Bytes read back are checked against the CRC-32s the uploader recorded in the manifest
//! (of the object, of its footer, of each row group) before the parquet decoder sees
//! them: its Thrift decoder walks a list's claimed length without comparing it to the
//! bytes left, so one damaged length costs it seconds of CPU (a `list<bool>` of
//! 2^31 - 1 elements in a footer, or one of doubles at the end of a page header).

use std::ops::Range;
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{
    BinaryBuilder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{
    Array, BinaryArray, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::{Buf, Bytes};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{ChunkReader, Length};
use parquet::schema::types::ColumnPath;
use strata_record::{BatchBuilder, BatchIter, RecordError};

use crate::TierError;
use crate::manifest::FooterSum;

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

/// The Parquet/Arrow schema of a cold segment (see `docs/parquet-schema.md`).
pub static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new(
            "headers",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(header_fields()),
                true,
            ))),
            false,
        ),
    ]))
});

/// Writer settings: zstd, page statistics and index, row groups of `rows_per_group`.
pub fn writer_properties(rows_per_group: usize) -> WriterProperties {
    let [offset, timestamp, value] = ["offset", "timestamp", "value"].map(ColumnPath::from);
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(rows_per_group))
        .set_column_dictionary_enabled(offset.clone(), false)
        .set_column_dictionary_enabled(timestamp.clone(), false)
        .set_column_dictionary_enabled(value.clone(), false)
        .set_column_encoding(offset, Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(timestamp, Encoding::DELTA_BINARY_PACKED)
        .set_column_statistics_enabled(value, EnabledStatistics::None)
        .build()
}

/// Accumulates records into Arrow columns.
pub struct RowsBuilder {
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    key: BinaryBuilder,
    value: BinaryBuilder,
    headers: ListBuilder<StructBuilder>,
    rows: usize,
    bytes: usize,
    /// Over everything appended: (first offset, last offset, min ts, max ts, records).
    pub stats: Option<(i64, i64, i64, i64, u64)>,
}

impl Default for RowsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RowsBuilder {
    pub fn new() -> Self {
        let fields = header_fields();
        let header = StructBuilder::new(
            fields.clone(),
            vec![
                Box::new(StringBuilder::new()),
                Box::new(BinaryBuilder::new()),
            ],
        );
        Self {
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            headers: ListBuilder::new(header).with_field(Arc::new(Field::new(
                "item",
                DataType::Struct(fields),
                true,
            ))),
            rows: 0,
            bytes: 0,
            stats: None,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Key and value bytes of the rows built so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends every record of `batches` (concatenated stored batches) at or after `from`.
    pub fn append_batches(&mut self, batches: &[u8], from: i64) -> Result<(), RecordError> {
        let batches = strata_record::compression::decompressed_batches(batches)?;
        for b in BatchIter::new(&batches) {
            for r in b?.records() {
                let r = r?;
                if r.offset < from {
                    continue;
                }
                self.offset.append_value(r.offset);
                self.timestamp.append_value(r.timestamp);
                self.key.append_option(r.key);
                self.value.append_option(r.value);
                let hs = self.headers.values();
                for (k, v) in r.headers() {
                    hs.field_builder::<StringBuilder>(0)
                        .expect("key column")
                        .append_value(String::from_utf8_lossy(k));
                    hs.field_builder::<BinaryBuilder>(1)
                        .expect("value column")
                        .append_option(v);
                    hs.append(true);
                }
                self.headers.append(true);
                self.rows += 1;
                self.bytes += r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len);
                let st =
                    self.stats
                        .get_or_insert((r.offset, r.offset, r.timestamp, r.timestamp, 0));
                st.1 = r.offset;
                st.2 = st.2.min(r.timestamp);
                st.3 = st.3.max(r.timestamp);
                st.4 += 1;
            }
        }
        Ok(())
    }

    /// Takes the rows built so far as one Arrow batch.
    pub fn finish(&mut self) -> RecordBatch {
        let rows = std::mem::take(&mut self.rows);
        self.bytes = 0;
        let key = self.key.finish();
        let value = self.value.finish();
        // Size the next group's columns like this one's, so they do not grow by copying.
        self.key = BinaryBuilder::with_capacity(rows, key.value_data().len());
        self.value = BinaryBuilder::with_capacity(rows, value.value_data().len());
        let batch = RecordBatch::try_new(
            SCHEMA.clone(),
            vec![
                Arc::new(self.offset.finish()),
                Arc::new(self.timestamp.finish()),
                Arc::new(key),
                Arc::new(value),
                Arc::new(self.headers.finish()),
            ],
        )
        .expect("columns match the schema");
        self.offset = Int64Builder::with_capacity(rows);
        self.timestamp = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC");
        batch
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, TierError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            TierError::Format(format!("column {name:?} is missing or has the wrong type"))
        })
}

/// Re-encodes Arrow rows as stored batches (one batch per `max_batch_bytes`) at the end
/// of `out`, keeping only offsets in `[from, to)`. Columns are downcast once and walked
/// by index: nothing is allocated per row.
pub fn rows_to_batches(
    batch: &RecordBatch,
    from: i64,
    to: i64,
    max_batch_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<(), TierError> {
    let offsets: &Int64Array = column(batch, "offset")?;
    let timestamps: &TimestampMillisecondArray = column(batch, "timestamp")?;
    let keys: &BinaryArray = column(batch, "key")?;
    let values: &BinaryArray = column(batch, "value")?;
    let headers: &ListArray = column(batch, "headers")?;
    let header_rows = headers
        .values()
        .as_any()
        .downcast_ref::<StructArray>()
        .ok_or_else(|| TierError::Format("headers are not a list of structs".into()))?;
    let (hk, hv) = match header_rows.columns() {
        [k, v] => (
            k.as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| TierError::Format("header keys are not utf8".into()))?,
            v.as_any()
                .downcast_ref::<BinaryArray>()
                .ok_or_else(|| TierError::Format("header values are not binary".into()))?,
        ),
        _ => return Err(TierError::Format("headers need a key and a value".into())),
    };
    let list_offsets = headers.value_offsets();
    // Batches are built one after another at the end of `out`: (builder, where the
    // batch starts, base offset, next offset).
    let mut builder: Option<(BatchBuilder, usize, i64, i64)> = None;
    let mut hs: Vec<(&str, Option<&[u8]>)> = Vec::new();
    let finish = |b: Option<(BatchBuilder, usize, i64, i64)>, out: &mut Vec<u8>| {
        if let Some((b, start, base, _)) = b {
            *out = b.finish_vec();
            strata_record::set_base_offset(&mut out[start..], base);
        }
    };
    for i in 0..batch.num_rows() {
        let offset = offsets.value(i);
        if offset < from || offset >= to {
            continue;
        }
        let ts = timestamps.value(i);
        let key = (!keys.is_null(i)).then(|| keys.value(i));
        let value = (!values.is_null(i)).then(|| values.value(i));
        hs.clear();
        if !headers.is_null(i) {
            for j in list_offsets[i] as usize..list_offsets[i + 1] as usize {
                hs.push((hk.value(j), (!hv.is_null(j)).then(|| hv.value(j))));
            }
        }
        if let Some((b, _, _, next)) = &mut builder
            && *next == offset
            && b.append_within(max_batch_bytes, ts, key, value, &hs)
        {
            *next = offset + 1;
            continue;
        }
        finish(builder.take(), out);
        let start = out.len();
        let mut b = BatchBuilder::append_to(std::mem::take(out), ts);
        b.append(ts, key, value, &hs);
        builder = Some((b, start, offset, offset + 1));
    }
    finish(builder.take(), out);
    Ok(())
}

/// Bytes `[start, start + bytes.len())` of a Parquet object of `object_len` bytes, held
/// in memory: enough to decode the row groups that lie inside it.
#[derive(Debug, Clone)]
pub struct Span {
    pub start: u64,
    pub bytes: Bytes,
    pub object_len: u64,
}

impl Length for Span {
    fn len(&self) -> u64 {
        self.object_len
    }
}

impl ChunkReader for Span {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let rest = (self.start + self.bytes.len() as u64).saturating_sub(start);
        Ok(self.get_bytes(start, rest as usize)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let end = self.start + self.bytes.len() as u64;
        match start.checked_sub(self.start) {
            Some(off) if start + length as u64 <= end => {
                Ok(self.bytes.slice(off as usize..off as usize + length))
            }
            _ => Err(ParquetError::General(format!(
                "bytes {start}..{} lie outside the fetched range {}..{end}",
                start + length as u64,
                self.start
            ))),
        }
    }
}

/// Batch size of re-encoded row groups: the size of a fetch answer.
pub const DECODED_BATCH_BYTES: usize = 256 * 1024;
/// Rows decoded from Parquet at a time: small enough that the decoder's buffers are
/// reused from one slice of rows to the next instead of growing (measured best of
/// 512..16384 in `cargo bench --bench tier`).
const DECODE_BATCH_ROWS: usize = 2048;

/// Checks what a footer says about where its data lies before anything relies on it:
/// every column chunk's offset and size are not negative and lie inside the object,
/// and row counts are not negative. (The parquet crate asserts some of this and
/// panics; an object in the bucket can hold anything.)
pub fn check_footer(meta: &ParquetMetaData, object_len: u64) -> Result<(), TierError> {
    for (i, g) in meta.row_groups().iter().enumerate() {
        if g.num_rows() < 0 {
            return Err(TierError::Format(format!(
                "row group {i} claims {} rows",
                g.num_rows()
            )));
        }
        for c in g.columns() {
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let len = c.compressed_size();
            let inside = start >= 0
                && len >= 0
                && (start as u64)
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= object_len);
            if !inside {
                return Err(TierError::Format(format!(
                    "row group {i}, column {}: bytes {start}..+{len} lie outside the {object_len}-byte object",
                    c.column_path()
                )));
            }
        }
    }
    Ok(())
}

/// Decodes row group `rg` of the object described by `meta`, whose bytes `span` holds,
/// into stored batches of up to [`DECODED_BATCH_BYTES`]. `meta` must have passed
/// [`check_footer`]. Should the parquet decoder still panic on damaged bytes, that is
/// an error here, not a panic.
pub fn decode_row_group(
    span: &Span,
    meta: &ArrowReaderMetadata,
    rg: usize,
) -> Result<Bytes, TierError> {
    contain(&format!("row group {rg}"), || {
        decode_row_group_inner(span, meta, rg)
    })
}

/// Runs parquet/arrow code over bytes from the bucket, turning a panic of theirs into
/// an error: they assert on some damage instead of returning an error (fuzzing found
/// such panics in arrow-buffer while decoding definition levels).
pub fn contain<T>(what: &str, f: impl FnOnce() -> Result<T, TierError>) -> Result<T, TierError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(TierError::Format(format!(
            "{what} could not be decoded (the parquet decoder failed: {why})"
        )))
    })
}

/// The byte range of each row group, from its first column chunk's first page to the
/// end of its last, as `meta` gives them.
pub fn row_group_ranges(meta: &ParquetMetaData) -> Vec<Range<u64>> {
    meta.row_groups()
        .iter()
        .map(|g| {
            let (mut lo, mut hi) = (u64::MAX, 0);
            for c in g.columns() {
                let (start, len) = c.byte_range();
                lo = lo.min(start);
                hi = hi.max(start.saturating_add(len));
            }
            lo.min(hi)..hi
        })
        .collect()
}

/// Checks `bytes`, called `what` in the error, against the CRC-32 recorded for them.
pub fn check_crc(what: &str, bytes: &[u8], expected: u32) -> Result<(), TierError> {
    let found = crc32fast::hash(bytes);
    if found == expected {
        Ok(())
    } else {
        Err(TierError::Checksum {
            what: what.to_string(),
            found,
            expected,
        })
    }
}

/// The footer reader of the cold tier: the page index is never read.
pub fn footer_reader() -> ParquetMetaDataReader {
    ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Skip)
}

/// Parses the footer of an object of `object_len` bytes from `tail`, its last bytes, once
/// they are the footer `sum` describes: bytes that differ from what the uploader wrote
/// never reach the decoder.
pub fn parse_checked_footer(
    tail: &Bytes,
    object_len: u64,
    sum: &FooterSum,
) -> Result<ParquetMetaData, TierError> {
    if tail.len() as u64 != sum.len {
        return Err(TierError::Format(format!(
            "its footer is {} bytes, the manifest says {}",
            tail.len(),
            sum.len
        )));
    }
    check_crc("the footer", tail, sum.crc32)?;
    contain("the footer", || {
        let mut reader = footer_reader();
        reader.try_parse_sized(tail, object_len)?;
        Ok(reader.finish()?)
    })
}

/// Checks every row group of `groups` (byte ranges, from [`row_group_ranges`]) that lies
/// inside `span` against its CRC-32 in `crcs`, before any of them is decoded.
pub fn check_row_groups(span: &Span, groups: &[Range<u64>], crcs: &[u32]) -> Result<(), TierError> {
    let end = span.start + span.bytes.len() as u64;
    for (i, (g, &crc)) in groups.iter().zip(crcs).enumerate() {
        if g.start >= span.start && g.end <= end {
            let at = (g.start - span.start) as usize..(g.end - span.start) as usize;
            check_crc(&format!("row group {i}"), &span.bytes[at], crc)?;
        }
    }
    Ok(())
}

/// Reads a footer the way the cold reader does, from the object's last bytes (or all
/// of it): parsed, checked with [`check_footer`], and ready for [`decode_row_group`].
pub fn footer_metadata(
    meta: ParquetMetaData,
    object_len: u64,
) -> Result<ArrowReaderMetadata, TierError> {
    check_footer(&meta, object_len)?;
    contain("the footer", || {
        Ok(ArrowReaderMetadata::try_new(
            std::sync::Arc::new(meta),
            Default::default(),
        )?)
    })
}

fn decode_row_group_inner(
    span: &Span,
    meta: &ArrowReaderMetadata,
    rg: usize,
) -> Result<Bytes, TierError> {
    let group = meta.metadata().row_group(rg);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(span.clone(), meta.clone())
        .with_row_groups(vec![rg])
        .with_batch_size(DECODE_BATCH_ROWS)
        .build()?;
    // Re-encoded batches take about what the columns take uncompressed, plus each
    // record's length, offset and timestamp deltas (which the delta-encoded columns
    // hardly hold): sized once, so a multi-MiB buffer is never copied to grow.
    // The sizes come from the object's footer: capped, so a damaged one cannot ask for
    // a huge allocation (a real row group is at most a few MiB).
    let estimate = (group.total_byte_size().max(0) as usize)
        .saturating_add((group.num_rows().max(0) as usize).saturating_mul(16))
        .saturating_add(4096)
        .min(64 << 20);
    let mut out = Vec::with_capacity(estimate);
    for rows in reader {
        let rows = rows.map_err(|e| TierError::Format(format!("row group {rg}: {e}")))?;
        rows_to_batches(&rows, i64::MIN, i64::MAX, DECODED_BATCH_BYTES, &mut out)?;
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: i64, base: i64) -> Vec<u8> {
        let mut b = BatchBuilder::new(1000, 4096);
        for i in 0..n {
            let k = format!("k{i}");
            let v = format!("v{i}");
            let h: Vec<(&str, Option<&[u8]>)> = if i % 3 == 0 {
                vec![("h", Some(b"x".as_slice())), ("n", None)]
            } else {
                vec![]
            };
            let key = if i % 5 == 0 { None } else { Some(k.as_bytes()) };
            b.append(1000 + i, key, Some(v.as_bytes()), &h);
        }
        let mut bytes = b.finish_vec();
        strata_record::set_base_offset(&mut bytes, base);
        bytes
    }

    #[test]
    fn rows_round_trip_to_identical_records() {
        let original = sample(50, 100);
        let mut rows = RowsBuilder::new();
        rows.append_batches(&original, 0).unwrap();
        let batch = rows.finish();
        assert_eq!(batch.num_rows(), 50);
        let mut back = Vec::new();
        rows_to_batches(&batch, 0, i64::MAX, 300, &mut back).unwrap();
        let a: Vec<_> = BatchIter::new(&original)
            .flat_map(|b| b.unwrap().records().map(|r| r.unwrap()).collect::<Vec<_>>())
            .collect();
        let b: Vec<_> = BatchIter::new(&back)
            .flat_map(|b| b.unwrap().records().map(|r| r.unwrap()).collect::<Vec<_>>())
            .collect();
        assert!(
            BatchIter::new(&back).count() > 1,
            "split by max_batch_bytes"
        );
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (x.offset, x.timestamp, x.key, x.value),
                (y.offset, y.timestamp, y.key, y.value)
            );
            assert_eq!(
                x.headers().collect::<Vec<_>>(),
                y.headers().collect::<Vec<_>>()
            );
        }
        let mut some = Vec::new();
        rows_to_batches(&batch, 120, 130, 1 << 20, &mut some).unwrap();
        let offs = crate::offsets_of(&some);
        assert_eq!(offs, (120..130).collect::<Vec<_>>());
    }
}
