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
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// Starts a batch whose timestamps are relative to `base_timestamp` (ms); the first
    /// record's timestamp is the natural choice.
    pub fn new(base_timestamp: i64, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
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
        self.buf.len()
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
        let total = self.buf.len();
        let h = &mut self.buf[..HEADER_LEN];
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
        let crc = crc32fast::hash(&self.buf[CRC_START..]);
        self.buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        self.buf
    }
}
