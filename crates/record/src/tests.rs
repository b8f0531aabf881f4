use super::*;
use proptest::prelude::*;

type OwnedRecord = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn build(records: &[OwnedRecord]) -> Vec<u8> {
    let base_ts = records.first().map(|r| r.0).unwrap_or(0);
    let mut b = BatchBuilder::new(base_ts, 128);
    for (ts, k, v, hs) in records {
        let hs: Vec<(&str, Option<&[u8]>)> =
            hs.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
        let expected = b.size() + b.record_size(*ts, k.as_deref(), v.as_deref(), &hs);
        b.append(*ts, k.as_deref(), v.as_deref(), &hs);
        assert_eq!(
            b.size(),
            expected,
            "record_size must predict the encoded size"
        );
    }
    b.finish_vec()
}

fn record_strategy() -> impl Strategy<Value = OwnedRecord> {
    (
        0i64..4_000_000_000_000,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        proptest::collection::vec(
            (
                "[a-z]{0,8}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
            ),
            0..3,
        ),
    )
}

proptest! {
    #[test]
    fn batches_roundtrip(records in proptest::collection::vec(record_strategy(), 1..30),
                         base in 0i64..1_000_000_000, epoch in 0i32..100) {
        let mut bytes = build(&records);
        set_base_offset(&mut bytes, base);
        set_leader_epoch(&mut bytes, epoch);
        let batch = Batch::validate(&bytes).unwrap();
        prop_assert_eq!(batch.len(), bytes.len());
        prop_assert_eq!(batch.header().base_offset, base);
        prop_assert_eq!(batch.header().leader_epoch, epoch);
        prop_assert_eq!(batch.header().record_count as usize, records.len());
        prop_assert_eq!(batch.header().last_offset(), base + records.len() as i64 - 1);
        let max_ts = records.iter().map(|r| r.0).max().unwrap();
        prop_assert_eq!(batch.header().max_timestamp, max_ts);
        for (i, (rec, want)) in batch.records().zip(&records).enumerate() {
            let rec = rec.unwrap();
            prop_assert_eq!(rec.offset, base + i as i64);
            prop_assert_eq!(rec.timestamp, want.0);
            prop_assert_eq!(rec.key, want.1.as_deref());
            prop_assert_eq!(rec.value, want.2.as_deref());
            let hs: Vec<_> = rec.headers().collect();
            prop_assert_eq!(hs.len(), want.3.len());
            for ((k, v), (wk, wv)) in hs.iter().zip(&want.3) {
                prop_assert_eq!(*k, wk.as_bytes());
                prop_assert_eq!(*v, wv.as_deref());
            }
        }
    }

    #[test]
    fn any_flipped_byte_after_the_crc_is_detected(
        records in proptest::collection::vec(record_strategy(), 1..5),
        pos in any::<proptest::sample::Index>(), bit in 0u8..8) {
        let mut bytes = build(&records);
        let i = CRC_START + pos.index(bytes.len() - CRC_START);
        bytes[i] ^= 1 << bit;
        prop_assert!(Batch::parse(&bytes).is_err());
    }

    #[test]
    fn decoder_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Batch::validate(&bytes);
        for b in BatchIter::new(&bytes).flatten() {
            for r in b.records() { let _ = r; }
        }
    }
}

#[test]
fn truncated_batch_is_reported_with_sizes() {
    let bytes = build(&[(1, None, Some(b"hello".to_vec()), vec![])]);
    let err = Batch::parse(&bytes[..bytes.len() - 3]).unwrap_err();
    assert_eq!(
        err,
        RecordError::Truncated {
            need: bytes.len(),
            have: bytes.len() - 3
        }
    );
}

#[test]
fn header_rewrite_keeps_crc_valid() {
    let mut bytes = build(&[(5, Some(b"k".to_vec()), Some(b"v".to_vec()), vec![])]);
    let crc_before = BatchHeader::decode(&bytes).unwrap().crc;
    set_base_offset(&mut bytes, 42);
    set_leader_epoch(&mut bytes, 7);
    let b = Batch::parse(&bytes).unwrap();
    assert_eq!(b.header().crc, crc_before);
    assert_eq!(b.records().next().unwrap().unwrap().offset, 42);
}

#[test]
fn count_mismatch_is_refused() {
    let mut bytes = build(&[
        (1, None, Some(b"a".to_vec()), vec![]),
        (2, None, Some(b"b".to_vec()), vec![]),
    ]);
    // Claim 3 records and fix up the CRC so only the count is wrong.
    bytes[57..61].copy_from_slice(&3i32.to_be_bytes());
    bytes[23..27].copy_from_slice(&2i32.to_be_bytes());
    crate::seal_crc(&mut bytes);
    assert!(matches!(
        Batch::validate(&bytes),
        Err(RecordError::Malformed { .. } | RecordError::CountMismatch { .. })
    ));
}

#[test]
fn iterates_concatenated_batches_and_stops_at_corruption() {
    let a = build(&[(1, None, Some(b"a".to_vec()), vec![])]);
    let b = build(&[(2, None, Some(b"b".to_vec()), vec![])]);
    let mut all = [a.clone(), b.clone()].concat();
    assert_eq!(BatchIter::new(&all).filter(|b| b.is_ok()).count(), 2);
    let last = all.len() - 1;
    all[last] ^= 0xff;
    let results: Vec<_> = BatchIter::new(&all).collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(RecordError::Crc { .. })));
}

#[test]
fn a_lying_max_timestamp_is_refused() {
    let mut bytes = build(&[
        (5, None, Some(b"a".to_vec()), vec![]),
        (9, None, Some(b"b".to_vec()), vec![]),
    ]);
    bytes[35..43].copy_from_slice(&i64::MAX.to_be_bytes());
    crate::seal_crc(&mut bytes);
    let e = Batch::validate(&bytes).unwrap_err();
    assert!(e.to_string().contains("max_timestamp"), "{e}");
}

#[test]
fn a_header_whose_length_or_offsets_cannot_be_is_refused_before_use() {
    let good = build(&[(1, None, Some(b"v".to_vec()), vec![])]);
    for len in [
        i32::MIN,
        -12,
        -1,
        0,
        (HEADER_LEN - LENGTH_PREFIX) as i32 - 1,
    ] {
        let mut b = good.clone();
        b[8..12].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            BatchHeader::decode(&b),
            Err(RecordError::BadLength(len as i64)),
            "batch_length {len}"
        );
        assert!(Batch::parse(&b).is_err());
        assert!(BatchIter::new(&b).next().unwrap().is_err());
    }
    let mut b = good.clone();
    b[23..27].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(matches!(
        BatchHeader::decode(&b),
        Err(RecordError::Malformed { .. })
    ));
    let mut b = good.clone();
    set_base_offset(&mut b, i64::MAX);
    let e = BatchHeader::decode(&b).unwrap_err();
    assert!(e.to_string().contains("largest offset"), "{e}");
    // The smallest valid length still decodes: a header and nothing else.
    let mut b = good;
    b[8..12].copy_from_slice(&((HEADER_LEN - LENGTH_PREFIX) as i32).to_be_bytes());
    assert_eq!(BatchHeader::decode(&b).unwrap().total_len(), HEADER_LEN);
}

#[test]
fn a_record_timestamp_past_the_largest_is_refused_not_an_overflow() {
    let mut b = build(&[
        (1, None, Some(b"a".to_vec()), vec![]),
        (5, None, Some(b"b".to_vec()), vec![]),
    ]);
    // base_timestamp near i64::MAX: base + the second record's delta overflows.
    b[27..35].copy_from_slice(&(i64::MAX - 1).to_be_bytes());
    crate::seal_crc(&mut b);
    let e = Batch::validate(&b).unwrap_err();
    assert!(e.to_string().contains("largest timestamp"), "{e}");
}

#[test]
fn the_checksum_is_crc32c_and_the_legacy_ieee_one_is_read_only_by_parse_legacy() {
    let mut bytes = build(&[(1, None, Some(b"a".to_vec()), vec![])]);
    let crc = u32::from_be_bytes(bytes[17..21].try_into().unwrap());
    assert_eq!(crc, crc32c::crc32c(&bytes[21..]));
    assert!(!Batch::parse_legacy(&bytes).unwrap().1);
    let ieee = crc32fast::hash(&bytes[21..]);
    bytes[17..21].copy_from_slice(&ieee.to_be_bytes());
    assert!(matches!(Batch::parse(&bytes), Err(RecordError::Crc { .. })));
    assert!(Batch::parse_legacy(&bytes).unwrap().1);
    bytes[30] ^= 1;
    assert!(matches!(
        Batch::parse_legacy(&bytes),
        Err(RecordError::Crc { .. })
    ));
}
