//! Kafka's zig-zag varints (protobuf `sint32`/`sint64` encoding).

pub(crate) fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Bytes taken by the zig-zag varint encoding of `v`.
pub(crate) fn len_varlong(v: i64) -> usize {
    let u = zigzag64(v) | 1;
    (70 - u.leading_zeros() as usize) / 7
}

pub(crate) fn put_varlong(buf: &mut Vec<u8>, v: i64) {
    let mut u = zigzag64(v);
    while u >= 0x80 {
        buf.push((u as u8) | 0x80);
        u >>= 7;
    }
    buf.push(u as u8);
}

pub(crate) fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, &'static str> {
    let mut result: u64 = 0;
    let mut shift = 0;
    loop {
        let Some(&b) = buf.get(*pos) else {
            return Err("varint runs past the end of the record");
        };
        *pos += 1;
        result |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err("varint longer than 10 bytes");
        }
    }
    Ok(((result >> 1) as i64) ^ -((result & 1) as i64))
}

pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i32, &'static str> {
    let v = read_varlong(buf, pos)?;
    i32::try_from(v).map_err(|_| "varint out of 32-bit range")
}

/// Reads a length-prefixed byte string; length -1 is null.
pub(crate) fn read_bytes<'a>(
    buf: &'a [u8],
    pos: &mut usize,
) -> Result<Option<&'a [u8]>, &'static str> {
    let len = read_varint(buf, pos)?;
    if len < 0 {
        if len == -1 {
            return Ok(None);
        }
        return Err("negative length");
    }
    let end = *pos + len as usize;
    if end > buf.len() {
        return Err("field runs past the end of the record");
    }
    let s = &buf[*pos..end];
    *pos = end;
    Ok(Some(s))
}

pub(crate) fn len_bytes(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => len_varlong(b.len() as i64) + b.len(),
    }
}

pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varlong(buf, -1),
        Some(b) => {
            put_varlong(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varlong_roundtrips_and_len_is_exact(v in any::<i64>()) {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            prop_assert_eq!(buf.len(), len_varlong(v));
            let mut pos = 0;
            prop_assert_eq!(read_varlong(&buf, &mut pos).unwrap(), v);
            prop_assert_eq!(pos, buf.len());
        }
    }

    #[test]
    fn known_encodings_match_kafka() {
        // Kafka's ByteUtils: 0 -> 00, -1 -> 01, 1 -> 02, 63 -> 7e, -64 -> 7f, 64 -> 80 01.
        for (v, want) in [
            (0i64, vec![0x00u8]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (63, vec![0x7e]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
        ] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf, want, "encoding of {v}");
        }
    }
}
