//! Records and the record batch codec.
//!
//! This crate owns the binary batch format that Strata stores, replicates and serves
//! (specified in `docs/batch-format.md`). It is pure: bytes in, typed views or an error
//! out; no files, no sockets, no allocation per record when reading.
//!
//! Layout: a 61-byte header in Kafka's v2 layout (big-endian), then the records in
//! Kafka's v2 record encoding. The CRC is CRC-32C (Castagnoli, Kafka's batch checksum)
//! over every byte after the CRC field, so the broker rewrites `base_offset`,
//! `batch_length` and `leader_epoch` without recomputing it, and a batch a Kafka client
//! sends is stored and served byte for byte. Logs written before CRC-32C carry IEEE
//! CRC-32 batches; [`Batch::parse_legacy`] reads those (see `docs/batch-format.md`).
//!
//! ```text
//! 0  base_offset       i64     outside the CRC
//! 8  batch_length      i32     bytes after this field; outside the CRC
//! 12 leader_epoch      i32     outside the CRC
//! 16 magic             i8      = 2
//! 17 crc               u32     CRC-32C of bytes [21, end)
//! 21 attributes        i16     bits 0-2 compression, bit 3 timestamp type
//! 23 last_offset_delta i32
//! 27 base_timestamp    i64
//! 35 max_timestamp     i64
//! 43 producer_id       i64
//! 51 producer_epoch    i16
//! 53 base_sequence     i32
//! 57 record_count      i32
//! 61 records...
//! ```
//!
//! Invariants checked by [`Batch::parse`]: the length fits the buffer, the magic is known,
//! the CRC matches. [`Batch::validate`] also walks every record and checks that the count
//! and offset deltas agree with the header (done once, when a batch is produced).

mod builder;
pub mod compression;
mod varint;

pub use builder::{BatchBuilder, RetainedBatch};
pub use compression::Compression;

use std::fmt;

/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 61;
/// The only batch format version this crate reads and writes.
pub const MAGIC: i8 = 2;
/// Bytes at the start of a batch needed to know its total length.
pub const LENGTH_PREFIX: usize = 12;
/// The smallest valid `batch_length`: a header with no records.
pub const MIN_BATCH_LENGTH: usize = HEADER_LEN - LENGTH_PREFIX;

const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_DELTA: usize = 23;
const OFF_BASE_TS: usize = 27;
const OFF_MAX_TS: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQ: usize = 53;
const OFF_COUNT: usize = 57;
const CRC_START: usize = OFF_ATTRIBUTES;

/// Attribute bits for the compression codec (Kafka's numbering).
pub const COMPRESSION_MASK: i16 = 0x07;

/// Everything that can be wrong with batch bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("batch truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    /// The stored `batch_length` field (bytes after it), which is below a header's worth.
    #[error(
        "batch_length {0} is invalid: a batch holds at least {MIN_BATCH_LENGTH} bytes after its length field"
    )]
    BadLength(i64),
    #[error("unknown batch format version (magic {0}); this broker reads magic {MAGIC}")]
    BadMagic(i8),
    #[error(
        "CRC mismatch in batch at offset {base_offset}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    Crc {
        base_offset: i64,
        stored: u32,
        computed: u32,
    },
    #[error(
        "compression codec {0} is unknown: use none (0), gzip (1), snappy (2), lz4 (3) or zstd (4)"
    )]
    UnsupportedCompression(i16),
    #[error("batch at offset {base_offset} does not decompress as {codec}: {reason}")]
    Decompress {
        base_offset: i64,
        codec: &'static str,
        reason: String,
    },
    #[error("batch at offset {base_offset} is malformed: {reason}")]
    Malformed {
        base_offset: i64,
        reason: &'static str,
    },
    #[error("batch at offset {base_offset} holds {actual} records but its header says {header}")]
    CountMismatch {
        base_offset: i64,
        header: i32,
        actual: i32,
    },
}

/// Reads the total length of the batch starting at `buf[0]`, if enough bytes are there.
pub fn batch_total_len(buf: &[u8]) -> Option<Result<usize, RecordError>> {
    if buf.len() < LENGTH_PREFIX {
        return None;
    }
    let len = i32::from_be_bytes(buf[OFF_LENGTH..OFF_LENGTH + 4].try_into().unwrap()) as i64;
    let total = len + LENGTH_PREFIX as i64;
    if total < HEADER_LEN as i64 {
        return Some(Err(RecordError::BadLength(len)));
    }
    Some(Ok(total as usize))
}

/// Rewrites the base offset of the batch at the start of `buf` (outside the CRC).
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the leader epoch of the batch at the start of `buf` (outside the CRC).
pub fn set_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[OFF_EPOCH..OFF_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Kafka's sequence arithmetic for idempotent producers: `seq` moved on by `by`,
/// wrapping from `i32::MAX` to 0.
pub fn increment_sequence(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

/// The decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

impl BatchHeader {
    /// Decodes the header fields without checking the CRC. `buf` must hold the header.
    ///
    /// The fields every reader steps or counts by are bounds-checked here, so no caller
    /// can loop or overflow on a bad header: `batch_length` covers at least the header,
    /// `last_offset_delta` is not negative and the batch's offsets fit in an `i64`. [`BatchHeader::total_len`] and [`BatchHeader::next_offset`] are then
    /// exact.
    pub fn decode(buf: &[u8]) -> Result<Self, RecordError> {
        if buf.len() < HEADER_LEN {
            return Err(RecordError::Truncated {
                need: HEADER_LEN,
                have: buf.len(),
            });
        }
        let h = Self::decode_unchecked(buf);
        let total = h.batch_length as i64 + LENGTH_PREFIX as i64;
        if total < HEADER_LEN as i64 {
            return Err(RecordError::BadLength(h.batch_length as i64));
        }
        let malformed = |reason| RecordError::Malformed {
            base_offset: h.base_offset,
            reason,
        };
        if h.last_offset_delta < 0 {
            return Err(malformed("last_offset_delta is negative"));
        }
        if h.base_offset
            .checked_add(h.last_offset_delta as i64 + 1)
            .is_none()
        {
            return Err(malformed("the batch's offsets run past the largest offset"));
        }
        Ok(h)
    }

    fn decode_unchecked(buf: &[u8]) -> Self {
        Self {
            base_offset: be_i64(buf, OFF_BASE_OFFSET),
            batch_length: be_i32(buf, OFF_LENGTH),
            leader_epoch: be_i32(buf, OFF_EPOCH),
            magic: buf[OFF_MAGIC] as i8,
            crc: u32::from_be_bytes(buf[OFF_CRC..OFF_CRC + 4].try_into().unwrap()),
            attributes: be_i16(buf, OFF_ATTRIBUTES),
            last_offset_delta: be_i32(buf, OFF_LAST_DELTA),
            base_timestamp: be_i64(buf, OFF_BASE_TS),
            max_timestamp: be_i64(buf, OFF_MAX_TS),
            producer_id: be_i64(buf, OFF_PRODUCER_ID),
            producer_epoch: be_i16(buf, OFF_PRODUCER_EPOCH),
            base_sequence: be_i32(buf, OFF_BASE_SEQ),
            record_count: be_i32(buf, OFF_COUNT),
        }
    }

    /// Total bytes of the batch, header included.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LENGTH_PREFIX
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Offset one past the last record.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }
}

/// A checked view over the bytes of one batch.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

/// The checksum of a whole batch (`batch` starts at its base offset): CRC-32C of every
/// byte after the CRC field.
pub fn batch_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Writes the CRC field of the whole batch `batch` (after its other fields are final).
pub fn seal_crc(batch: &mut [u8]) {
    let crc = batch_crc(batch);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("header", &self.header)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl<'a> Batch<'a> {
    /// Parses the batch at the start of `buf`: checks length, magic and CRC.
    /// Returns the batch; its length is `batch.len()`.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RecordError> {
        let total = match batch_total_len(buf) {
            None => {
                return Err(RecordError::Truncated {
                    need: LENGTH_PREFIX,
                    have: buf.len(),
                });
            }
            Some(r) => r?,
        };
        if buf.len() < total {
            return Err(RecordError::Truncated {
                need: total,
                have: buf.len(),
            });
        }
        let header = BatchHeader::decode(buf)?;
        if header.magic != MAGIC {
            return Err(RecordError::BadMagic(header.magic));
        }
        let bytes = &buf[..total];
        let computed = batch_crc(bytes);
        if computed != header.crc {
            return Err(RecordError::Crc {
                base_offset: header.base_offset,
                stored: header.crc,
                computed,
            });
        }
        Ok(Self { header, bytes })
    }

    /// [`Batch::parse`] for a batch written before the checksum became CRC-32C: an IEEE
    /// CRC-32 is accepted too. Returns whether the batch carries the legacy checksum;
    /// whoever serves it rewrites the CRC with [`seal_crc`] first, so only logs ever see
    /// the old checksum.
    pub fn parse_legacy(buf: &'a [u8]) -> Result<(Self, bool), RecordError> {
        match Self::parse(buf) {
            Err(RecordError::Crc {
                base_offset,
                stored,
                computed,
            }) => {
                let bytes = &buf[..BatchHeader::decode(buf)?.total_len()];
                if crc32fast::hash(&bytes[CRC_START..]) != stored {
                    return Err(RecordError::Crc {
                        base_offset,
                        stored,
                        computed,
                    });
                }
                let header = BatchHeader::decode(buf)?;
                Ok((Self { header, bytes }, true))
            }
            other => other.map(|b| (b, false)),
        }
    }

    /// Parses and then walks every record, checking count, offset deltas, that header
    /// keys are UTF-8 and that the records fill the batch exactly. Used when a batch
    /// enters the log.
    pub fn validate(buf: &'a [u8]) -> Result<Self, RecordError> {
        Self::validate_with_min_timestamp(buf).map(|(b, _)| b)
    }

    /// As [`Batch::validate`], also returning the smallest record timestamp (the header
    /// carries only the largest), for checks of timestamps against the broker clock.
    pub fn validate_with_min_timestamp(buf: &'a [u8]) -> Result<(Self, i64), RecordError> {
        let batch = Self::parse(buf)?;
        let h = batch.header;
        let malformed = |reason| RecordError::Malformed {
            base_offset: h.base_offset,
            reason,
        };
        if h.record_count <= 0 {
            return Err(malformed("a batch must hold at least one record"));
        }
        if h.last_offset_delta != h.record_count - 1 {
            return Err(malformed("last_offset_delta must equal record_count - 1"));
        }
        let mut actual = 0i32;
        let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
        let records = batch.decoded()?;
        for rec in records.iter() {
            let rec = rec?;
            if rec.offset_delta != actual {
                return Err(malformed("record offset deltas must be 0, 1, 2, ..."));
            }
            if rec.header_count() > 0 && rec.headers().any(|(k, _)| std::str::from_utf8(k).is_err())
            {
                // The Parquet schema (and Kafka) make header keys strings.
                return Err(malformed("a header key is not valid UTF-8"));
            }
            min_ts = min_ts.min(rec.timestamp);
            max_ts = max_ts.max(rec.timestamp);
            actual += 1;
        }
        if actual > 0 && max_ts != h.max_timestamp {
            // Retention and the time index trust max_timestamp: it must be the truth.
            return Err(malformed(
                "max_timestamp is not the largest record timestamp",
            ));
        }
        if actual != h.record_count {
            return Err(RecordError::CountMismatch {
                base_offset: h.base_offset,
                header: h.record_count,
                actual,
            });
        }
        Ok((batch, min_ts))
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Iterates the records of an uncompressed batch without copying keys or values.
    /// A compressed batch yields one error: read those through [`Batch::decoded`].
    pub fn records(&self) -> RecordIter<'a> {
        let mut iter = RecordIter {
            base_offset: self.header.base_offset,
            base_timestamp: self.header.base_timestamp,
            buf: &self.bytes[HEADER_LEN..],
            remaining: self.header.record_count.max(0),
            failed: None,
        };
        if self.header.compression() != 0 {
            iter.failed = Some(RecordError::Malformed {
                base_offset: self.header.base_offset,
                reason: "compressed batch read without decompressing it",
            });
        }
        iter
    }

    /// The records of the batch whatever its codec: borrowed when it is uncompressed,
    /// decompressed (bounded by [`compression::MAX_DECOMPRESSED`]) when it is not.
    pub fn decoded(&self) -> Result<Records<'a>, RecordError> {
        let h = &self.header;
        let body = &self.bytes[HEADER_LEN..];
        let body = match Compression::from_id(h.compression())? {
            Compression::None => std::borrow::Cow::Borrowed(body),
            codec => std::borrow::Cow::Owned(compression::decompress(codec, body, h.base_offset)?),
        };
        Ok(Records {
            base_offset: h.base_offset,
            base_timestamp: h.base_timestamp,
            count: h.record_count.max(0),
            body,
        })
    }
}

/// The records of one batch, decompressed if it was compressed ([`Batch::decoded`]).
pub struct Records<'a> {
    base_offset: i64,
    base_timestamp: i64,
    count: i32,
    body: std::borrow::Cow<'a, [u8]>,
}

impl Records<'_> {
    /// Iterates the records without copying keys or values.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            base_offset: self.base_offset,
            base_timestamp: self.base_timestamp,
            buf: &self.body,
            remaining: self.count,
            failed: None,
        }
    }
}

/// Iterates the batches in a buffer of concatenated batches, checking each CRC.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            failed: false,
        }
    }

    /// Byte position of the next batch in the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<Batch<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        match Batch::parse(&self.buf[self.pos..]) {
            Ok(b) => {
                self.pos += b.len();
                Some(Ok(b))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// One record inside a batch, borrowing the batch bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: i64,
    pub offset_delta: i32,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    header_count: u32,
    headers: &'a [u8],
}

impl<'a> RecordRef<'a> {
    pub fn header_count(&self) -> usize {
        self.header_count as usize
    }

    /// Iterates the record's headers as (key, value); keys are UTF-8 by contract but
    /// returned as bytes so a bad producer cannot make reading fail.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            buf: self.headers,
            remaining: self.header_count,
        }
    }
}

/// Iterator over a record's headers.
pub struct HeaderIter<'a> {
    buf: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // Headers were validated when the record was decoded.
        let mut pos = 0;
        let k = varint::read_bytes(self.buf, &mut pos).ok()?.unwrap_or(&[]);
        let v = varint::read_bytes(self.buf, &mut pos).ok()?;
        self.buf = &self.buf[pos..];
        Some((k, v))
    }
}

/// Iterates the records of one batch.
pub struct RecordIter<'a> {
    base_offset: i64,
    base_timestamp: i64,
    buf: &'a [u8],
    remaining: i32,
    /// An error to yield first (and only).
    failed: Option<RecordError>,
}

impl<'a> RecordIter<'a> {
    fn decode_one(&mut self) -> Result<RecordRef<'a>, RecordError> {
        let base_offset = self.base_offset;
        let malformed = |reason| RecordError::Malformed {
            base_offset,
            reason,
        };
        let mut pos = 0;
        let len = varint::read_varint(self.buf, &mut pos).map_err(malformed)?;
        if len < 0 || pos + len as usize > self.buf.len() {
            return Err(malformed("record length runs past the end of the batch"));
        }
        let body = &self.buf[pos..pos + len as usize];
        self.buf = &self.buf[pos + len as usize..];
        let mut p = 1; // attributes byte, unused
        if body.is_empty() {
            return Err(malformed("empty record"));
        }
        let ts_delta = varint::read_varlong(body, &mut p).map_err(malformed)?;
        let timestamp = self
            .base_timestamp
            .checked_add(ts_delta)
            .ok_or_else(|| malformed("a record timestamp runs past the largest timestamp"))?;
        let offset_delta = varint::read_varint(body, &mut p).map_err(malformed)?;
        let key = varint::read_bytes(body, &mut p).map_err(malformed)?;
        let value = varint::read_bytes(body, &mut p).map_err(malformed)?;
        let header_count = varint::read_varint(body, &mut p).map_err(malformed)?;
        if header_count < 0 {
            return Err(malformed("negative header count"));
        }
        let headers_start = p;
        for _ in 0..header_count {
            let k = varint::read_bytes(body, &mut p).map_err(malformed)?;
            if k.is_none() {
                return Err(malformed("null header key"));
            }
            varint::read_bytes(body, &mut p).map_err(malformed)?;
        }
        if p != body.len() {
            return Err(malformed("record length does not match its fields"));
        }
        Ok(RecordRef {
            offset: self.base_offset + offset_delta as i64,
            offset_delta,
            timestamp,
            key,
            value,
            header_count: header_count as u32,
            headers: &body[headers_start..],
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordRef<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            self.remaining = 0;
            self.buf = &[];
            return Some(Err(e));
        }
        if self.remaining <= 0 {
            if !self.buf.is_empty() {
                self.buf = &[];
                return Some(Err(RecordError::Malformed {
                    base_offset: self.base_offset,
                    reason: "bytes left after the last record",
                }));
            }
            return None;
        }
        self.remaining -= 1;
        match self.decode_one() {
            Ok(r) => Some(Ok(r)),
            Err(e) => {
                self.remaining = 0;
                self.buf = &[];
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
