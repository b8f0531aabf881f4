//! Batch compression: Kafka's codecs over the records section of a batch.
//!
//! A compressed batch keeps its 61-byte header in the clear and compresses the
//! concatenated records as one block, as Kafka does: gzip (1), snappy (2, xerial framing
//! as Java clients write it, raw snappy as librdkafka writes it), lz4 (3, the LZ4 frame
//! format) and zstd (4). The broker stores compressed batches as they arrive; whoever
//! needs the records ([`crate::Batch::decoded`]) decompresses one batch at a time.
//!
//! Invariant: decompression never allocates more than [`MAX_DECOMPRESSED`] bytes for a
//! batch, whatever sizes the compressed stream claims, so a small batch that inflates
//! without end (a "zip bomb") is an error, not an out-of-memory.

use std::io::Read;

use crate::RecordError;

/// The most bytes one batch may decompress to.
pub const MAX_DECOMPRESSED: usize = 256 << 20;

/// A compression codec, as numbered in the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// Every codec, in attribute order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec of attribute bits 0-2.
    pub fn from_id(id: i16) -> Result<Self, RecordError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(RecordError::UnsupportedCompression(other)),
        })
    }

    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Kafka's name (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!("unknown compression {s:?}: use none, gzip, snappy, lz4 or zstd")
            })
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Compresses a records section.
pub fn compress(codec: Compression, records: &[u8]) -> Vec<u8> {
    match codec {
        Compression::None => records.to_vec(),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut enc, records).expect("writing to memory");
            enc.finish().expect("writing to memory")
        }
        Compression::Snappy => snap::raw::Encoder::new()
            .compress_vec(records)
            .expect("snappy takes any input under 4 GiB"),
        Compression::Lz4 => {
            let mut enc = lz4::EncoderBuilder::new()
                .level(1)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())
                .expect("an lz4 encoder over memory");
            std::io::Write::write_all(&mut enc, records).expect("writing to memory");
            let (out, r) = enc.finish();
            r.expect("writing to memory");
            out
        }
        Compression::Zstd => zstd::bulk::compress(records, 3).expect("zstd over memory"),
    }
}

/// Compresses a finished, uncompressed batch (one batch, from its base offset): the same
/// header with the codec in its attributes, the records as one compressed block, the
/// length and CRC made to match. `None` leaves the batch as it is.
pub fn compress_batch(codec: Compression, batch: &[u8]) -> Vec<u8> {
    if codec == Compression::None {
        return batch.to_vec();
    }
    let body = compress(codec, &batch[crate::HEADER_LEN..]);
    let mut out = Vec::with_capacity(crate::HEADER_LEN + body.len());
    out.extend_from_slice(&batch[..crate::HEADER_LEN]);
    out.extend_from_slice(&body);
    let len = i32::try_from(out.len() - 12).expect("a batch under 2 GiB");
    out[8..12].copy_from_slice(&len.to_be_bytes());
    let attributes = i16::from_be_bytes([out[21], out[22]]) & !crate::COMPRESSION_MASK | codec.id();
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    crate::seal_crc(&mut out);
    out
}

/// Concatenated batches with each compressed one replaced by its uncompressed form
/// (codec bits cleared, length and CRC made to match); borrowed when none is compressed.
/// For readers that iterate records borrowing one buffer. Each batch is CRC-checked.
pub fn decompressed_batches(buf: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, RecordError> {
    let mut any = false;
    for b in crate::BatchIter::new(buf) {
        if b?.header().compression() != 0 {
            any = true;
        }
    }
    if !any {
        return Ok(std::borrow::Cow::Borrowed(buf));
    }
    let mut out = Vec::with_capacity(buf.len() * 2);
    for b in crate::BatchIter::new(buf) {
        let b = b?;
        let h = b.header();
        let codec = Compression::from_id(h.compression())?;
        if codec == Compression::None {
            out.extend_from_slice(b.bytes());
            continue;
        }
        let body = decompress(codec, &b.bytes()[crate::HEADER_LEN..], h.base_offset)?;
        let start = out.len();
        out.extend_from_slice(&b.bytes()[..crate::HEADER_LEN]);
        out.extend_from_slice(&body);
        let len = i32::try_from(out.len() - start - 12).map_err(|_| RecordError::Decompress {
            base_offset: h.base_offset,
            codec: codec.name(),
            reason: "the records decompress to more than a batch can hold".into(),
        })?;
        out[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
        let attributes = h.attributes & !crate::COMPRESSION_MASK;
        out[start + 21..start + 23].copy_from_slice(&attributes.to_be_bytes());
        crate::seal_crc(&mut out[start..]);
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Decompresses a records section, refusing output past [`MAX_DECOMPRESSED`].
pub fn decompress(
    codec: Compression,
    data: &[u8],
    base_offset: i64,
) -> Result<Vec<u8>, RecordError> {
    let bad = |reason: String| RecordError::Decompress {
        base_offset,
        codec: codec.name(),
        reason,
    };
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(data)).map_err(bad),
        Compression::Lz4 => {
            let dec = lz4::Decoder::new(data).map_err(|e| bad(e.to_string()))?;
            read_bounded(dec).map_err(bad)
        }
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::new(data).map_err(|e| bad(e.to_string()))?;
            read_bounded(dec).map_err(bad)
        }
        Compression::Snappy => snappy(data).map_err(bad),
    }
}

fn read_bounded(r: impl Read) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.take(MAX_DECOMPRESSED as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() > MAX_DECOMPRESSED {
        return Err(too_large());
    }
    Ok(out)
}

fn too_large() -> String {
    format!("the records decompress to more than {MAX_DECOMPRESSED} bytes")
}

/// The header snappy-java writes before its blocks.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

fn snappy(data: &[u8]) -> Result<Vec<u8>, String> {
    let raw = |block: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let n = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
        if out.len() + n > MAX_DECOMPRESSED {
            return Err(too_large());
        }
        let at = out.len();
        out.resize(at + n, 0);
        let written = snap::raw::Decoder::new()
            .decompress(block, &mut out[at..])
            .map_err(|e| e.to_string())?;
        out.truncate(at + written);
        Ok(())
    };
    let mut out = Vec::new();
    if !data.starts_with(XERIAL_MAGIC) {
        raw(data, &mut out)?;
        return Ok(out);
    }
    if data.len() < XERIAL_HEADER_LEN {
        return Err("xerial snappy header is truncated".into());
    }
    let mut rest = &data[XERIAL_HEADER_LEN..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err("xerial snappy block length is truncated".into());
        }
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        if rest.len() - 4 < len {
            return Err(format!(
                "xerial snappy block of {len} bytes runs past the batch"
            ));
        }
        raw(&rest[4..4 + len], &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in Compression::ALL {
            let c = compress(codec, &data);
            assert_eq!(decompress(codec, &c, 0).unwrap(), data, "{codec}");
            assert_eq!(codec.name().parse::<Compression>().unwrap(), codec);
        }
    }

    #[test]
    fn a_compressed_batch_validates_and_reads_the_same_records() {
        let mut b = crate::BatchBuilder::new(1_000, 4096);
        for i in 0..50 {
            let v = format!("value {i}");
            b.append(
                1_000 + i,
                Some(b"key"),
                Some(v.as_bytes()),
                &[("h", Some(b"x".as_slice()))],
            );
        }
        let plain = b.finish_vec();
        let want: Vec<_> = crate::Batch::parse(&plain)
            .unwrap()
            .records()
            .map(|r| {
                let r = r.unwrap();
                (
                    r.offset,
                    r.timestamp,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                )
            })
            .collect();
        for codec in Compression::ALL {
            let c = compress_batch(codec, &plain);
            let batch = crate::Batch::validate(&c).unwrap();
            assert_eq!(batch.header().compression(), codec.id());
            let records = batch.decoded().unwrap();
            let got: Vec<_> = records
                .iter()
                .map(|r| {
                    let r = r.unwrap();
                    (
                        r.offset,
                        r.timestamp,
                        r.key.map(<[u8]>::to_vec),
                        r.value.map(<[u8]>::to_vec),
                    )
                })
                .collect();
            assert_eq!(got, want, "{codec}");
            if codec != Compression::None {
                assert!(batch.records().next().unwrap().is_err());
            }
            let mut two = c.clone();
            two.extend_from_slice(&plain);
            let flat = decompressed_batches(&two).unwrap();
            let flat_records: Vec<_> = crate::BatchIter::new(&flat)
                .flat_map(|b| {
                    b.unwrap()
                        .records()
                        .map(|r| r.unwrap().value.unwrap().to_vec())
                        .collect::<Vec<_>>()
                })
                .collect();
            assert_eq!(flat_records.len(), 100, "{codec}");
        }
    }

    #[test]
    fn xerial_framed_snappy_is_read() {
        let a = b"hello ".repeat(100);
        let b = b"world ".repeat(100);
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for part in [&a, &b] {
            let c = snap::raw::Encoder::new().compress_vec(part).unwrap();
            framed.extend_from_slice(&(c.len() as u32).to_be_bytes());
            framed.extend_from_slice(&c);
        }
        let mut want = a.clone();
        want.extend_from_slice(&b);
        assert_eq!(decompress(Compression::Snappy, &framed, 0).unwrap(), want);
        framed.truncate(framed.len() - 1);
        assert!(decompress(Compression::Snappy, &framed, 0).is_err());
    }

    #[test]
    fn a_bomb_is_refused_not_inflated() {
        let zeros = vec![0u8; MAX_DECOMPRESSED + 1];
        for codec in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Lz4,
            Compression::Snappy,
        ] {
            let c = compress(codec, &zeros);
            let e = decompress(codec, &c, 7).unwrap_err().to_string();
            assert!(e.contains("more than"), "{codec}: {e}");
        }
        // A raw snappy stream that claims a huge length is refused before allocating.
        let mut claim = Vec::new();
        let mut n = u32::MAX as u64;
        while n >= 0x80 {
            claim.push((n as u8) | 0x80);
            n >>= 7;
        }
        claim.push(n as u8);
        assert!(decompress(Compression::Snappy, &claim, 0).is_err());
    }

    #[test]
    fn garbage_is_an_error_for_every_codec() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(
                decompress(codec, b"not compressed at all", 0).is_err(),
                "{codec}"
            );
        }
    }
}
