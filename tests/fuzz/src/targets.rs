//! What each fuzz target does with its input, and valid inputs to start from.
//!
//! A target must never panic, hang or allocate without bound, whatever the bytes: every
//! bad input is an error. Shared by the `cargo fuzz` binaries (`tests/fuzz`) and the
//! fuzz smoke test of the e2e suite, which runs these bodies over the seeds and a few
//! thousand mutations of them.

use std::sync::Arc;

use bytes::Bytes;
use strata_record::{Batch, BatchBuilder, BatchHeader, BatchIter};

/// The batch codec on wire or disk bytes: header decode, full validation, iteration.
pub fn batch(data: &[u8]) {
    let _ = BatchHeader::decode(data);
    if let Ok((b, _min_ts)) = Batch::validate_with_min_timestamp(data) {
        for r in b.records() {
            let r = r.expect("a validated batch decodes");
            for _ in r.headers() {}
        }
    }
    for b in BatchIter::new(data) {
        let Ok(b) = b else { break };
        for r in b.records() {
            let Ok(r) = r else { break };
            for _ in r.headers() {}
        }
    }
}

/// A partition directory: the first byte picks which files are present, the next eight
/// give the lengths of the two index files, the rest is the segment's bytes and then
/// the index files'. Opening (recovery) and reading every offset must end in an answer.
pub fn segment(data: &[u8]) {
    if data.len() < 9 {
        return;
    }
    let flags = data[0];
    let idx_len = u32::from_le_bytes(data[1..5].try_into().unwrap()) as usize;
    let tix_len = u32::from_le_bytes(data[5..9].try_into().unwrap()) as usize;
    let rest = &data[9..];
    let idx_len = idx_len.min(rest.len());
    let tix_len = tix_len.min(rest.len() - idx_len);
    let log_len = rest.len() - idx_len - tix_len;
    let (log, idx) = rest.split_at(log_len);
    let (idx, tix) = idx.split_at(idx_len);
    let dir = tempfile::tempdir().expect("temp dir");
    let name = |base: i64, ext: &str| dir.path().join(format!("{base:020}.{ext}"));
    std::fs::write(name(0, "log"), log).unwrap();
    if flags & 1 != 0 {
        std::fs::write(name(0, "index"), idx).unwrap();
        std::fs::write(name(0, "timeindex"), tix).unwrap();
    }
    // Bit 1: the segment is sealed (an empty active segment follows it).
    if flags & 2 != 0 {
        std::fs::write(name(1 << 40, "log"), b"").unwrap();
    }
    let options = strata_log::OpenOptions {
        start_offset: 0,
        clean_shutdown: flags & 4 != 0,
    };
    let clock = Arc::new(strata_log::SystemClock);
    let config = strata_log::LogConfig {
        index_interval_bytes: 256,
        ..Default::default()
    };
    let Ok((log, _)) = strata_log::Log::open_with(dir.path(), "fuzz-0", config, clock, options)
    else {
        return;
    };
    // Every offset from the start, at most 4096 steps: each read answers (data or an
    // error) and a read that serves batches moves past them.
    let (mut at, end) = (log.log_start_offset(), log.log_end_offset());
    for _ in 0..4096 {
        if at >= end {
            break;
        }
        match log.read(at, 4096) {
            Ok(buf) if !buf.is_empty() => {
                let next = BatchIter::new(&buf)
                    .map_while(Result::ok)
                    .map(|b| b.header().next_offset())
                    .last();
                at = next.filter(|&n| n > at).unwrap_or(at + 1);
            }
            _ => at += 1,
        }
    }
    for ts in [i64::MIN, 0, 1000, i64::MAX] {
        let _ = log.offset_for_timestamp(ts);
    }
}

/// A Parquet object read as the cold tier reads one: the footer, then every row group
/// decoded back into stored batches.
pub fn parquet(data: &[u8]) {
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
    let bytes = Bytes::copy_from_slice(data);
    let parsed = strata_tier::codec::contain("the footer", || {
        Ok(ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Skip)
            .parse_and_finish(&bytes)?)
    });
    let Ok(meta) = parsed else { return };
    let Ok(meta) = strata_tier::codec::footer_metadata(meta, bytes.len() as u64) else {
        return;
    };
    let span = strata_tier::codec::Span {
        start: 0,
        object_len: bytes.len() as u64,
        bytes,
    };
    for rg in 0..meta.metadata().num_row_groups().min(64) {
        if let Ok(out) = strata_tier::codec::decode_row_group(&span, &meta, rg) {
            for b in BatchIter::new(&out) {
                b.expect("decoded batches are valid");
            }
        }
    }
}

/// Batches of `n` records from offset `base`, with keys, values and headers.
fn batches(n: i64, base: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(1000, 1024);
    for i in 0..n {
        let v = format!("value-{i}");
        let h: Vec<(&str, Option<&[u8]>)> = if i % 3 == 0 {
            vec![("h", Some(b"x".as_slice())), ("n", None)]
        } else {
            vec![]
        };
        let key = format!("k{i}");
        let key = (i % 5 != 0).then_some(key.as_bytes());
        b.append(1000 + i, key, Some(v.as_bytes()), &h);
    }
    let mut bytes = b.finish_vec();
    strata_record::set_base_offset(&mut bytes, base);
    bytes
}

/// Valid inputs for `target`, to start fuzzing from.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "batch" => vec![batches(1, 0), batches(7, 0), batches(30, 1000)],
        "segment" => {
            // Three batches back to back, as a segment file holds them.
            let mut log = batches(5, 0);
            log.extend(batches(5, 5));
            log.extend(batches(20, 10));
            let mut out = Vec::new();
            for flags in [0u8, 2, 3, 7] {
                let mut s = vec![flags];
                s.extend(0u32.to_le_bytes());
                s.extend(0u32.to_le_bytes());
                s.extend(&log);
                out.push(s);
            }
            out
        }
        "parquet" => {
            let mut out = Vec::new();
            for rows_per_group in [7, 1000] {
                let mut rows = strata_tier::codec::RowsBuilder::new();
                rows.append_batches(&batches(40, 0), 0).unwrap();
                let batch = rows.finish();
                let props = strata_tier::codec::writer_properties(rows_per_group);
                let mut w =
                    parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))
                        .unwrap();
                w.write(&batch).unwrap();
                out.push(w.into_inner().unwrap());
            }
            out
        }
        other => panic!("no fuzz target {other}"),
    }
}
