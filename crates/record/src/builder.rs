//! Building batches: the producer side of the codec.

use crate::varint::{len_bytes, len_varlong, put_bytes, put_varlong};
use crate::{HEADER_LEN, MAGIC};
use bytes::Bytes;

/// Appends records into one batch buffer; [`BatchBuilder::finish`] fills the header and CRC.
///
/// One buffer per batch, grown geometrically: no allocation per record.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    /// Where this batch starts in `buf` (bytes before it belong to earlier batches).
    start: usize,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    /// (producer id, producer epoch, base sequence); (-1, -1, -1) when not idempotent.
    producer: (i64, i16, i32),
}

impl BatchBuilder {
    /// Starts a batch whose timestamps are relative to `base_timestamp` (ms); the first
    /// record's timestamp is the natural choice.
    pub fn new(base_timestamp: i64, capacity: usize) -> Self {
        Self::append_to(Vec::with_capacity(capacity.max(HEADER_LEN)), base_timestamp)
    }

    /// Starts a batch at the end of `buf`, so batches can be built one after another
    /// into one buffer without copying; [`BatchBuilder::finish_vec`] returns `buf` with
    /// the batch appended.
    pub fn append_to(mut buf: Vec<u8>, base_timestamp: i64) -> Self {
        let start = buf.len();
        buf.resize(start + HEADER_LEN, 0);
        Self {
            buf,
            start,
            count: 0,
            base_timestamp,
            max_timestamp: i64::MIN,
            producer: (-1, -1, -1),
        }
    }

    /// Makes the batch an idempotent producer's: its id, epoch and the sequence number
    /// of its first record (the header carries them, inside the CRC).
    pub fn set_producer(&mut self, producer_id: i64, epoch: i16, base_sequence: i32) {
        self.producer = (producer_id, epoch, base_sequence);
    }

    pub fn record_count(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the finished batch will take.
    pub fn size(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes `append` would add for this record.
    pub fn record_size(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> usize {
        let body = self.body_len(timestamp, key, value, headers);
        len_varlong(body as i64) + body
    }

    fn body_len(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> usize {
        let mut n = 1
            + len_varlong(timestamp - self.base_timestamp)
            + len_varlong(self.count as i64)
            + len_bytes(key)
            + len_bytes(value)
            + len_varlong(headers.len() as i64);
        for (k, v) in headers {
            n += len_bytes(Some(k.as_bytes())) + len_bytes(*v);
        }
        n
    }

    /// Appends one record in Kafka's v2 record encoding.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        let body = self.body_len(timestamp, key, value, headers);
        self.put(body, timestamp, key, value, headers);
    }

    /// Appends one record if the batch stays within `max_size` bytes, or if it is the
    /// first; returns whether it did.
    pub fn append_within(
        &mut self,
        max_size: usize,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> bool {
        let body = self.body_len(timestamp, key, value, headers);
        if self.count > 0 && self.size() + len_varlong(body as i64) + body > max_size {
            return false;
        }
        self.put(body, timestamp, key, value, headers);
        true
    }

    fn put(
        &mut self,
        body: usize,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        let buf = &mut self.buf;
        put_varlong(buf, body as i64);
        buf.push(0); // record attributes: unused
        put_varlong(buf, timestamp - self.base_timestamp);
        put_varlong(buf, self.count as i64);
        put_bytes(buf, key);
        put_bytes(buf, value);
        put_varlong(buf, headers.len() as i64);
        for (k, v) in headers {
            put_bytes(buf, Some(k.as_bytes()));
            put_bytes(buf, *v);
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Fills the header (base offset 0, leader epoch -1: the broker sets both) and the
    /// CRC, and returns the batch bytes.
    pub fn finish(self) -> Bytes {
        Bytes::from(self.finish_vec())
    }

    /// As [`BatchBuilder::finish`], returning the buffer itself.
    pub fn finish_vec(mut self) -> Vec<u8> {
        let total = self.size();
        let h = &mut self.buf[self.start..self.start + HEADER_LEN];
        h[0..8].copy_from_slice(&0i64.to_be_bytes());
        h[8..12].copy_from_slice(&((total - 12) as i32).to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        h[16] = MAGIC as u8;
        h[21..23].copy_from_slice(&0i16.to_be_bytes());
        h[23..27].copy_from_slice(&(self.count - 1).max(0).to_be_bytes());
        h[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        let max_ts = if self.count == 0 {
            self.base_timestamp
        } else {
            self.max_timestamp
        };
        h[35..43].copy_from_slice(&max_ts.to_be_bytes());
        h[43..51].copy_from_slice(&self.producer.0.to_be_bytes());
        h[51..53].copy_from_slice(&self.producer.1.to_be_bytes());
        h[53..57].copy_from_slice(&self.producer.2.to_be_bytes());
        h[57..61].copy_from_slice(&self.count.to_be_bytes());
        crate::seal_crc(&mut self.buf[self.start..]);
        self.buf
    }
}

/// Rebuilds one batch out of records kept from other batches (log compaction), each at
/// its original offset.
///
/// The batch covers a contiguous offset range `[base_offset, next_offset)` given at
/// [`RetainedBatch::finish`], whatever records it still holds: offsets between its records
/// are records compaction removed. Covering the range keeps batches dense across a
/// segment (each batch starts where the previous one ended), so readers step from batch
/// to batch by `next_offset` exactly as before; only record offsets inside a batch have
/// gaps. A batch whose records were all removed stays as a header with no records.
#[derive(Debug)]
pub struct RetainedBatch {
    buf: Vec<u8>,
    start: usize,
    base_offset: i64,
    base_timestamp: Option<i64>,
    count: i32,
    max_timestamp: i64,
}

impl RetainedBatch {
    /// Starts a batch at offset `base_offset`, at the end of `buf`.
    pub fn append_to(mut buf: Vec<u8>, base_offset: i64) -> Self {
        let start = buf.len();
        buf.resize(start + HEADER_LEN, 0);
        Self {
            buf,
            start,
            base_offset,
            base_timestamp: None,
            count: 0,
            max_timestamp: i64::MIN,
        }
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn record_count(&self) -> usize {
        self.count as usize
    }

    /// Bytes the finished batch will take.
    pub fn size(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Copies `rec` in, keeping its offset, timestamp, key, value and headers byte for
    /// byte. Records must come in offset order, at or after the batch's base offset.
    pub fn push(&mut self, rec: &crate::RecordRef<'_>) {
        debug_assert!(rec.offset >= self.base_offset);
        let base_ts = *self.base_timestamp.get_or_insert(rec.timestamp);
        let ts_delta = rec.timestamp - base_ts;
        let offset_delta = rec.offset - self.base_offset;
        let body = 1
            + len_varlong(ts_delta)
            + len_varlong(offset_delta)
            + len_bytes(rec.key)
            + len_bytes(rec.value)
            + len_varlong(rec.header_count as i64)
            + rec.headers.len();
        let buf = &mut self.buf;
        put_varlong(buf, body as i64);
        buf.push(0);
        put_varlong(buf, ts_delta);
        put_varlong(buf, offset_delta);
        put_bytes(buf, rec.key);
        put_bytes(buf, rec.value);
        put_varlong(buf, rec.header_count as i64);
        buf.extend_from_slice(rec.headers);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(rec.timestamp);
    }

    /// Fills the header: the batch covers `[base_offset, next_offset)` and carries
    /// `leader_epoch`; its max timestamp is the largest of its records' and
    /// `max_timestamp` (the removed records' batches, so time retention and the time
    /// index see the range as they did before). Returns the buffer with the batch.
    pub fn finish(
        mut self,
        next_offset: i64,
        leader_epoch: i32,
        attributes: i16,
        max_timestamp: i64,
    ) -> Vec<u8> {
        assert!(
            next_offset > self.base_offset,
            "a batch covers at least one offset"
        );
        let total = self.size();
        let max_ts = self.max_timestamp.max(max_timestamp);
        let base_ts = self.base_timestamp.unwrap_or(max_ts);
        let h = &mut self.buf[self.start..self.start + HEADER_LEN];
        h[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        h[8..12].copy_from_slice(&((total - 12) as i32).to_be_bytes());
        h[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
        h[16] = MAGIC as u8;
        // The records are written uncompressed; other bits (the timestamp type) stay.
        let attributes = attributes & !crate::COMPRESSION_MASK;
        h[21..23].copy_from_slice(&attributes.to_be_bytes());
        let last_delta = i32::try_from(next_offset - 1 - self.base_offset)
            .expect("a batch covers at most i32::MAX offsets");
        h[23..27].copy_from_slice(&last_delta.to_be_bytes());
        h[27..35].copy_from_slice(&base_ts.to_be_bytes());
        h[35..43].copy_from_slice(&max_ts.to_be_bytes());
        h[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        h[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        h[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        h[57..61].copy_from_slice(&self.count.to_be_bytes());
        crate::seal_crc(&mut self.buf[self.start..]);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, BatchIter};

    #[test]
    fn batches_built_one_after_another_in_one_buffer_are_each_valid() {
        let mut buf = Vec::new();
        let mut sizes = Vec::new();
        for b in 0..3i64 {
            let mut builder = BatchBuilder::append_to(buf, 100 * b);
            let mut n = 0;
            // At most 200 bytes per batch: the rest of the records do not fit.
            while builder.append_within(200, 100 * b + n, None, Some(&[b as u8; 30]), &[]) {
                n += 1;
            }
            assert!(
                n > 1 && builder.size() <= 200,
                "{n} records, {} bytes",
                builder.size()
            );
            sizes.push((n, builder.size()));
            buf = builder.finish_vec();
        }
        let batches: Vec<_> = BatchIter::new(&buf).map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 3);
        for (b, (batch, (n, size))) in batches.iter().zip(&sizes).enumerate() {
            Batch::validate(batch.bytes()).unwrap();
            assert_eq!(batch.len(), *size);
            assert_eq!(batch.header().record_count as i64, *n);
            let first = batch.records().next().unwrap().unwrap();
            assert_eq!(first.timestamp, 100 * b as i64);
            assert_eq!(first.value.unwrap(), &[b as u8; 30]);
        }
        // The first record always goes in, whatever its size.
        let mut big = BatchBuilder::new(0, 16);
        assert!(big.append_within(10, 0, None, Some(&[0; 50]), &[]));
        assert!(!big.append_within(10, 0, None, Some(&[0; 1]), &[]));
    }

    #[test]
    fn a_retained_batch_keeps_record_offsets_and_covers_its_whole_range() {
        let mut b = BatchBuilder::new(1_000, 256);
        for i in 0..5i64 {
            let key = [b'k', i as u8];
            let value = [b'v', i as u8];
            b.append(
                1_000 + i * 10,
                Some(&key),
                Some(&value),
                &[("h", Some(b"x"))],
            );
        }
        let mut src = b.finish_vec();
        crate::set_base_offset(&mut src, 100);
        let src = Batch::parse(&src).unwrap();
        let mut kept = RetainedBatch::append_to(Vec::new(), 100);
        for r in src
            .records()
            .map(|r| r.unwrap())
            .filter(|r| r.offset % 2 == 1)
        {
            kept.push(&r);
        }
        let out = kept.finish(105, 7, 0, 0);
        let batch = Batch::parse(&out).unwrap();
        let h = batch.header();
        assert_eq!(
            (h.base_offset, h.next_offset(), h.leader_epoch),
            (100, 105, 7)
        );
        assert_eq!(h.record_count, 2);
        assert_eq!(h.max_timestamp, 1_030);
        let recs: Vec<_> = batch.records().map(|r| r.unwrap()).collect();
        let got: Vec<_> = recs
            .iter()
            .map(|r| {
                (
                    r.offset,
                    r.timestamp,
                    r.key.unwrap().to_vec(),
                    r.value.unwrap().to_vec(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (101, 1_010, b"k\x01".to_vec(), b"v\x01".to_vec()),
                (103, 1_030, b"k\x03".to_vec(), b"v\x03".to_vec()),
            ]
        );
        assert_eq!(
            recs[0].headers().collect::<Vec<_>>(),
            vec![(&b"h"[..], Some(&b"x"[..]))]
        );
        // A batch whose records were all removed still covers its offsets.
        let empty = RetainedBatch::append_to(Vec::new(), 200).finish(210, 1, 0, 5_000);
        let e = Batch::parse(&empty).unwrap();
        assert_eq!(
            (e.header().record_count, e.header().next_offset()),
            (0, 210)
        );
        assert_eq!(e.records().count(), 0);
    }
}
