use super::*;
use std::io::Write;
use strata_record::BatchBuilder;

fn batch(ts: i64, values: &[&str]) -> Vec<u8> {
    let mut b = BatchBuilder::new(ts, 256);
    for (i, v) in values.iter().enumerate() {
        b.append(ts + i as i64, Some(b"k"), Some(v.as_bytes()), &[]);
    }
    b.finish_vec()
}

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig, clock: Arc<dyn Clock>) -> (Log, RecoveryReport) {
    Log::open(dir, "t-0", config, clock).unwrap()
}

fn values(log: &Log, from: i64) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let buf = log.read(at, 700).unwrap();
        if buf.is_empty() {
            return out;
        }
        for b in BatchIter::new(&buf) {
            for r in b.unwrap().records() {
                let r = r.unwrap();
                if r.offset >= at {
                    out.push((
                        r.offset,
                        String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                    ));
                }
            }
        }
        at = out.last().unwrap().0 + 1;
    }
}

/// Appends `n` batches of 3 records each; values are "v<offset>".
fn fill(log: &mut Log, n: usize, ts: i64) {
    for _ in 0..n {
        let o = log.log_end_offset();
        let vals: Vec<String> = (o..o + 3).map(|i| format!("v{i}")).collect();
        let refs: Vec<&str> = vals.iter().map(|s| s.as_str()).collect();
        let mut b = batch(ts, &refs);
        Log::validate(&b).unwrap();
        let info = log.append(&mut b, 1).unwrap();
        assert_eq!(info.base_offset, o);
        assert_eq!(info.last_offset, o + 2);
    }
}

fn expected(range: std::ops::Range<i64>) -> Vec<(i64, String)> {
    range.map(|i| (i, format!("v{i}"))).collect()
}

#[test]
fn appends_roll_and_read_back_dense_offsets_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    fill(&mut log, 100, 1000);
    assert!(
        log.segment_count() > 5,
        "small segments roll: {}",
        log.segment_count()
    );
    assert_eq!(log.log_end_offset(), 300);
    assert_eq!(values(&log, 0), expected(0..300));
    assert_eq!(values(&log, 151), expected(151..300));
    // Reopen: sealed segments load their index files, the active one is scanned.
    let segs = log.segment_count();
    drop(log);
    let (log, report) = open(dir.path(), small(), Arc::new(SystemClock));
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.segment_count(), segs);
    assert_eq!(log.log_end_offset(), 300);
    assert_eq!(values(&log, 77), expected(77..300));
}

/// What a reader bounded by a high watermark below the log end sees: whole batches up
/// to it, never one that starts at or past it, within one segment and across them.
#[test]
fn a_read_below_an_end_stops_at_the_batch_that_starts_there() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    fill(&mut log, 100, 1000); // batches of 3 records
    let read_to = |from: i64, end: i64| {
        let buf = log.read_below(from, 1 << 20, end).unwrap();
        let offsets: Vec<i64> = BatchIter::new(&buf)
            .flat_map(|b| {
                b.unwrap()
                    .records()
                    .map(|r| r.unwrap().offset)
                    .collect::<Vec<_>>()
            })
            .collect();
        offsets
    };
    assert_eq!(
        read_to(0, 300),
        (0..300).collect::<Vec<_>>(),
        "end = LEO: everything"
    );
    assert_eq!(read_to(0, 150), (0..150).collect::<Vec<_>>());
    assert_eq!(
        read_to(151, 153),
        vec![150, 151, 152],
        "the batch holding 151 only"
    );
    assert!(read_to(150, 150).is_empty(), "nothing starts below the end");
    assert!(read_to(0, 0).is_empty());
}

#[test]
fn missing_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    fill(&mut log, 60, 1000);
    drop(log);
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension()
            .is_some_and(|x| x == "index" || x == "timeindex")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let (log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    assert_eq!(values(&log, 0), expected(0..180));
    assert!(dir.path().join("00000000000000000000.index").exists());
}

#[test]
fn read_outside_the_log_says_the_valid_range() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    fill(&mut log, 2, 1000);
    let err = log.read(7, 100).unwrap_err();
    assert!(matches!(
        err,
        LogError::OffsetOutOfRange {
            requested: 7,
            start: 0,
            end: 6,
            ..
        }
    ));
    assert!(err.to_string().contains("0..=6"), "{err}");
    assert!(log.read(6, 100).unwrap().is_empty());
}

fn active_path(log: &Log) -> PathBuf {
    log.segments().last().unwrap().path.clone()
}

#[test]
fn garbage_after_the_active_segment_is_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    fill(&mut log, 10, 1000);
    let path = active_path(&log);
    let end = log.log_end_offset();
    drop(log);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&[0xAB; 100]).unwrap();
    drop(f);
    let (log, report) = open(dir.path(), small(), Arc::new(SystemClock));
    assert_eq!(report.truncated_bytes, 100);
    assert!(report.reason.is_some());
    assert_eq!(report.log_end_offset, end);
    assert_eq!(values(&log, 0), expected(0..end));
}

#[test]
fn half_written_batch_is_truncated_and_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    fill(&mut log, 10, 1000);
    let path = active_path(&log);
    let end = log.log_end_offset();
    let last_batch = log.read(end - 1, 10).unwrap();
    drop(log);
    let len = std::fs::metadata(&path).unwrap().len();
    let cut = last_batch.len() as u64 / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - cut)
        .unwrap();
    let (mut log, report) = open(dir.path(), small(), Arc::new(SystemClock));
    assert_eq!(report.dropped_offsets, Some((end - 3, end - 1)));
    assert_eq!(report.truncated_bytes, last_batch.len() as u64 - cut);
    assert_eq!(log.log_end_offset(), end - 3);
    fill(&mut log, 1, 1000);
    assert_eq!(values(&log, 0), expected(0..end));
}

#[test]
fn flipped_byte_in_a_sealed_segment_is_an_error_naming_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    fill(&mut log, 40, 1000);
    let sealed = log.segments()[1].clone();
    drop(log);
    let mut data = std::fs::read(&sealed.path).unwrap();
    let at = data.len() - 5; // inside the last batch's records
    data[at] ^= 0x01;
    std::fs::write(&sealed.path, &data).unwrap();
    let (log, report) = open(dir.path(), small(), Arc::new(SystemClock));
    assert_eq!(
        report.truncated_bytes, 0,
        "sealed segments are never truncated"
    );
    let last = sealed.next_offset - 1;
    let err = log.read(last, 1000).unwrap_err();
    match &err {
        LogError::Corrupt { log, offset, .. } => {
            assert_eq!(log, "t-0");
            assert_eq!(*offset, sealed.next_offset - 3);
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert!(err.to_string().contains("CRC"), "{err}");
    // Everything before the bad batch still reads, and stops short of it.
    let good = values_until_error(&log, sealed.base_offset);
    assert_eq!(good, expected(sealed.base_offset..sealed.next_offset - 3));
}

/// Runs `f` on its own thread and fails the test if it has not returned in 30 s: a
/// guard that turns a hang into a failure, not a timing assertion.
fn within_30s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} did not return: it hangs"))
}

#[test]
fn a_negative_batch_length_in_a_sealed_segment_is_an_error_not_a_hang() {
    // No index entries inside a segment: both the start-up walk over a sealed segment's
    // headers and a read's skip to its offset step over the damaged batch.
    let config = || LogConfig {
        index_interval_bytes: 1 << 20,
        ..small()
    };
    for keep_indexes in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), config(), Arc::new(SystemClock));
        fill(&mut log, 40, 1000);
        let segs = log.segments();
        let (sealed, next) = (segs[1].clone(), segs[2].clone());
        drop(log);
        let mut data = std::fs::read(&sealed.path).unwrap();
        let first = strata_record::batch_total_len(&data).unwrap().unwrap();
        // The second batch's batch_length, as in a bad sector or a stray write.
        data[first + 8..first + 12].copy_from_slice(&(-12i32).to_be_bytes());
        std::fs::write(&sealed.path, &data).unwrap();
        if !keep_indexes {
            for ext in ["index", "timeindex"] {
                std::fs::remove_file(sealed.path.with_extension(ext)).unwrap();
            }
        }
        let path = dir.path().to_path_buf();
        let (log, report) = within_30s("opening the log", move || {
            Log::open(&path, "t-0", config(), Arc::new(SystemClock)).unwrap()
        });
        assert_eq!(report.truncated_bytes, 0, "a sealed segment is never cut");
        assert_eq!(report.corrupt_sealed.len(), 1, "recovery reports it");
        assert_eq!(report.corrupt_sealed[0].1, sealed.base_offset + 3);
        let log = Arc::new(log);
        let bad = sealed.base_offset + 3;
        // Every offset from the damaged batch to the segment's end fails: nothing can
        // find where the batches after it start.
        for offset in [bad, bad + 2, bad + 3, sealed.next_offset - 1] {
            let l = log.clone();
            let err =
                within_30s("reading the damaged batch", move || l.read(offset, 1000)).unwrap_err();
            match &err {
                LogError::Corrupt { log, offset: o, .. } => {
                    assert_eq!(log, "t-0");
                    assert_eq!(*o, offset, "the error names the offset asked for");
                }
                other => panic!("indexes kept {keep_indexes}: expected corruption, got {other}"),
            }
            assert!(
                err.to_string().contains("batch_length -12 is invalid"),
                "indexes kept {keep_indexes}, offset {offset}: {err}"
            );
        }
        // The good batch before it, and every later segment, still serve.
        assert_eq!(
            values_until_error(&log, sealed.base_offset),
            expected(sealed.base_offset..bad)
        );
        assert_eq!(
            values(&log, next.base_offset),
            expected(next.base_offset..120)
        );
    }
}

fn values_until_error(log: &Log, from: i64) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut at = from;
    while let Ok(buf) = log.read(at, 100_000) {
        if buf.is_empty() {
            break;
        }
        for b in BatchIter::new(&buf) {
            for r in b.unwrap().records() {
                let r = r.unwrap();
                out.push((
                    r.offset,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
        }
        at = out.last().unwrap().0 + 1;
    }
    out
}

struct Keep(i64);
impl DeletionGuard for Keep {
    fn may_delete(&self, _base: i64, next: i64) -> bool {
        next <= self.0
    }
}

#[test]
fn retention_by_size_and_time_never_touches_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let cfg = LogConfig {
        retention_ms: 10_000,
        retention_bytes: 3000,
        ..small()
    };
    let (mut log, _) = open(dir.path(), cfg, clock.clone());
    fill(&mut log, 60, 1_000_000);
    let before = log.size_bytes();
    assert!(before > 3000);
    // Size: a guard that keeps everything past offset 30 stops deletion there.
    let deleted = log.enforce_retention(&Keep(30)).unwrap();
    assert!(deleted.iter().all(|s| s.next_offset <= 30));
    assert_eq!(
        log.log_start_offset(),
        deleted.last().map(|s| s.next_offset).unwrap_or(0)
    );
    log.enforce_retention(&AllowAll).unwrap();
    assert!(
        log.size_bytes() < 3000 + 1024,
        "size retention ran: {}",
        log.size_bytes()
    );
    let start = log.log_start_offset();
    assert!(start > 0);
    assert_eq!(values(&log, start), expected(start..180));
    assert!(matches!(
        log.read(0, 10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Time: every record is now too old, but the active segment stays.
    clock.advance(20_000);
    log.enforce_retention(&AllowAll).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_end_offset(), 180);
    assert_eq!(values(&log, log.log_start_offset()).last().unwrap().0, 179);
}

#[test]
fn segment_ms_rolls_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let cfg = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let (mut log, _) = open(dir.path(), cfg, clock.clone());
    fill(&mut log, 2, 0);
    assert_eq!(log.segment_count(), 1);
    clock.advance(1000);
    fill(&mut log, 1, 0);
    assert_eq!(log.segment_count(), 2);
    clock.advance(1000);
    log.tick().unwrap();
    assert_eq!(log.segment_count(), 3);
}

#[test]
fn truncate_and_replicated_append_keep_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    fill(&mut log, 30, 1000); // epoch 1, offsets 0..90
    let mut b = batch(2000, &["x", "y"]);
    log.append(&mut b, 3).unwrap(); // epoch 3 from 90
    assert_eq!(log.epochs().entries(), &[(1, 0), (3, 90)]);
    assert_eq!(log.epochs().end_offset_for(2, 92), Some((1, 90)));
    log.truncate_to(50).unwrap();
    assert!(log.log_end_offset() <= 50 && log.log_end_offset() > 45);
    assert_eq!(log.epochs().entries(), &[(1, 0)]);
    // A follower appends the leader's batches, which carry offsets.
    let end = log.log_end_offset();
    let mut leader = batch(3000, &["a", "b", "c"]);
    strata_record::set_base_offset(&mut leader, end);
    strata_record::set_leader_epoch(&mut leader, 4);
    log.append_replicated(&leader).unwrap();
    assert_eq!(log.log_end_offset(), end + 3);
    assert_eq!(log.epochs().latest_epoch(), Some(4));
    let err = log.append_replicated(&leader).unwrap_err();
    assert!(matches!(err, LogError::NonSequential { .. }));
    drop(log);
    let (log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    assert_eq!(log.log_end_offset(), end + 3);
    assert_eq!(log.epochs().entries(), &[(1, 0), (4, end)]);
}

#[test]
fn finds_offsets_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    for i in 0..50 {
        let mut b = batch(10_000 + i * 100, &["a", "b"]); // ts base, base+1
        log.append(&mut b, 0).unwrap();
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 10_000)));
    assert_eq!(log.offset_for_timestamp(10_001).unwrap(), Some((1, 10_001)));
    assert_eq!(log.offset_for_timestamp(10_002).unwrap(), Some((2, 10_100)));
    assert_eq!(
        log.offset_for_timestamp(14_850).unwrap(),
        Some((98, 14_900))
    );
    assert_eq!(log.offset_for_timestamp(20_000).unwrap(), None);
}

#[test]
fn read_respects_max_bytes_but_returns_one_oversized_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig::default(), Arc::new(SystemClock));
    let big = "x".repeat(5000);
    let mut b = batch(1, &[&big]);
    log.append(&mut b, 0).unwrap();
    fill(&mut log, 5, 1);
    let buf = log.read(0, 100).unwrap();
    assert_eq!(BatchIter::new(&buf).count(), 1);
    let buf = log.read(1, 1_000_000).unwrap();
    assert_eq!(BatchIter::new(&buf).count(), 5);
}

#[test]
fn a_failed_fsync_takes_the_log_out_of_service_and_acknowledges_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush_messages: 1,
        ..small()
    };
    let (mut log, _) = open(dir.path(), config.clone(), Arc::new(SystemClock));
    fill(&mut log, 5, 1000);
    let scope = dir.path().to_string_lossy().to_string();
    strata_failpoint::configure("log-fsync", &format!("return({scope})")).unwrap();
    let mut b = batch(1000, &["lost"]);
    let err = log.append(&mut b, 1).unwrap_err();
    strata_failpoint::clear("log-fsync");
    assert!(matches!(err, LogError::OutOfService { .. }), "{err}");
    assert!(err.to_string().contains("t-0 is out of service"), "{err}");
    assert!(log.out_of_service().is_some());
    // fsync works again, but the log does not pretend nothing happened: no append is
    // acknowledged over what the failed fsync may have dropped, and nothing is served.
    let mut b = batch(1000, &["after"]);
    assert!(matches!(
        log.append(&mut b, 1),
        Err(LogError::OutOfService { .. })
    ));
    assert!(matches!(
        log.read(0, 1000),
        Err(LogError::OutOfService { .. })
    ));
    assert!(matches!(log.flush(), Err(LogError::OutOfService { .. })));
    drop(log);
    // A restart recovers: what reached the disk is served, and appends go on from it.
    let (mut log, _) = open(dir.path(), config, Arc::new(SystemClock));
    assert!(log.out_of_service().is_none());
    assert_eq!(values(&log, 0)[..15], expected(0..15)[..]);
    let end = log.log_end_offset();
    fill(&mut log, 1, 1000);
    assert_eq!(log.log_end_offset(), end + 3);
}

#[test]
fn a_failed_fsync_in_a_truncation_or_of_a_directory_takes_the_log_out_of_service() {
    // A truncation's fsync: the cut must be durable before anything is appended after it.
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    fill(&mut log, 20, 1000);
    let scope = dir.path().to_string_lossy().to_string();
    strata_failpoint::configure("log-fsync", &format!("return({scope})")).unwrap();
    let err = log.truncate_to(10).unwrap_err();
    strata_failpoint::clear("log-fsync");
    assert!(matches!(err, LogError::OutOfService { .. }), "{err}");
    assert!(err.to_string().contains("fsync failed"), "{err}");
    let mut b = batch(1000, &["after"]);
    assert!(matches!(
        log.append(&mut b, 1),
        Err(LogError::OutOfService { .. })
    ));

    // A directory's fsync, when a roll creates the next segment: the new file's name
    // might not survive a crash, so nothing is appended to it.
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    fill(&mut log, 2, 1000);
    let scope = dir.path().to_string_lossy().to_string();
    strata_failpoint::configure("log-dir-fsync", &format!("return({scope})")).unwrap();
    let segments = log.segment_count();
    let mut err = None;
    for _ in 0..50 {
        let mut b = batch(1000, &["x", "y", "z"]);
        if let Err(e) = log.append(&mut b, 1) {
            err = Some(e);
            break;
        }
    }
    strata_failpoint::clear("log-dir-fsync");
    let err = err.expect("a roll came and its directory fsync failed");
    assert!(matches!(err, LogError::OutOfService { .. }), "{err}");
    assert_eq!(log.segment_count(), segments, "no roll before the failure");
    assert!(log.out_of_service().is_some());
    let end = log.log_end_offset();
    drop(log);
    // A restart recovers everything that was acknowledged.
    let (log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    assert_eq!(log.log_end_offset(), end);
}

/// Inode of every index file in `dir`: a rewrite (temp file, rename) changes it.
fn index_inodes(dir: &Path) -> Vec<(PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "index" || e == "timeindex")
        })
        .map(|p| {
            let ino = std::fs::metadata(&p).unwrap().ino();
            (p, ino)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_start_rewrites_no_valid_index_and_after_a_clean_shutdown_scans_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), small(), Arc::new(SystemClock));
    fill(&mut log, 40, 1000);
    let active_size = log.segments().last().unwrap().size;
    log.close().unwrap();
    drop(log);
    let before = index_inodes(dir.path());
    assert!(before.len() > 4);
    let clean = OpenOptions {
        clean_shutdown: true,
        ..Default::default()
    };
    let (log, report) =
        Log::open_with(dir.path(), "t-0", small(), Arc::new(SystemClock), clean).unwrap();
    assert_eq!(report.scanned_bytes, 0, "a clean start scans no segment");
    assert_eq!(values(&log, 0), expected(0..120));
    assert_eq!(
        index_inodes(dir.path()),
        before,
        "no index file was rewritten"
    );
    drop(log);
    // After an unclean stop only the active segment is scanned; valid sealed indexes
    // are still not rewritten.
    let (mut log, report) = open(dir.path(), small(), Arc::new(SystemClock));
    assert_eq!(report.scanned_bytes, active_size);
    assert_eq!(index_inodes(dir.path()), before);
    fill(&mut log, 2, 1000);
    assert_eq!(values(&log, 0), expected(0..126));
}

/// Rewrites every batch of a segment file with the IEEE CRC-32 that logs carried before
/// the checksum became CRC-32C: a data directory from the previous format.
fn to_ieee_crc(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mut pos = 0;
    while pos < bytes.len() {
        let len = BatchHeader::decode(&bytes[pos..]).unwrap().total_len();
        let crc = crc32fast::hash(&bytes[pos + 21..pos + len]);
        bytes[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos += len;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_log_written_with_the_ieee_checksum_stays_readable_and_is_served_with_crc32c() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_000));
    let (mut log, _) = open(dir.path(), small(), clock.clone());
    fill(&mut log, 12, 1_000);
    log.close().unwrap();
    drop(log);
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    assert!(
        files.len() > 1,
        "the legacy log spans sealed and active segments"
    );
    for f in &files {
        to_ieee_crc(f);
    }
    std::fs::remove_file(dir.path().join(CRC32C_FROM)).unwrap();

    // Opened by this version (no clean-shutdown trust: the active segment is scanned).
    let (mut log, report) = open(dir.path(), small(), clock.clone());
    assert_eq!(report.truncated_bytes, 0, "{report:?}");
    assert_eq!(log.log_end_offset(), 36);
    let marker = std::fs::read_to_string(dir.path().join(CRC32C_FROM)).unwrap();
    assert_eq!(marker.trim(), "36");
    fill(&mut log, 2, 1_000);
    let expect: Vec<(i64, String)> = (0..42).map(|o| (o, format!("v{o}"))).collect();
    assert_eq!(values(&log, 0), expect);
    // What leaves the log carries CRC-32C, old batches included.
    let mut at = 0;
    while at < log.log_end_offset() {
        let buf = log.read(at, 1 << 20).unwrap();
        let b = Batch::parse(&buf).expect("served with CRC-32C");
        at = b.header().next_offset();
    }
    log.close().unwrap();
    drop(log);

    // Reopened after a crash: still readable, and the marker keeps its offset.
    std::fs::remove_file(dir.path().join(".clean-shutdown")).ok();
    let (log, report) = open(dir.path(), small(), clock.clone());
    assert_eq!(report.truncated_bytes, 0, "{report:?}");
    assert_eq!(values(&log, 0), expect);
    drop(log);

    // An IEEE checksum on a batch appended after the switch is corruption.
    let (log, _) = open(dir.path(), small(), clock.clone());
    let active = log.segments().last().cloned().unwrap();
    drop(log);
    to_ieee_crc(&active.path);
    let (log, report) = open(dir.path(), small(), clock);
    assert!(
        report.reason.as_deref().is_some_and(|r| r.contains("CRC")),
        "{report:?}"
    );
    assert_eq!(log.log_end_offset(), 36.max(active.base_offset));
}
