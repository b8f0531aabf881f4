//! Building batches: the producer side of the codec.

use crate::varint::{len_bytes, len_varlong, put_bytes, put_varlong};
use crate::{CRC_START, HEADER_LEN, MAGIC, OFF_CRC};
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
        }
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
        h[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        h[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        h[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        h[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32fast::hash(&self.buf[self.start + CRC_START..]);
        self.buf[self.start + OFF_CRC..self.start + OFF_CRC + 4]
            .copy_from_slice(&crc.to_be_bytes());
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
}
