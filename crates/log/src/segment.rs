//! One segment: `<base_offset:020>.log` plus its sparse offset and time indexes.
//!
//! The `.log` file is a plain concatenation of batches whose offsets are dense from the
//! base offset. Indexes are kept in memory while the segment is active and written to
//! `.index` / `.timeindex` when it is sealed (atomically: temp file then rename). A sealed
//! segment whose index files are missing or inconsistent gets them rebuilt by a scan.
//!
//! Index formats (big-endian): `.index` is a sequence of (relative offset u32, position
//! u32) entries, one per `index.interval.bytes` of log; `.timeindex` is a sequence of
//! (max timestamp so far i64, relative offset u32), timestamps non-decreasing.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_record::{Batch, BatchHeader, LENGTH_PREFIX, batch_total_len};

use crate::error::{LogError, Result};

const SCAN_CHUNK: usize = 1 << 20;

/// Parses the batch at the start of `buf`, accepting the legacy IEEE checksum for a
/// batch based below `legacy_crc_below`; says whether it carried that checksum.
fn parse(
    buf: &[u8],
    legacy_crc_below: i64,
) -> std::result::Result<(Batch<'_>, bool), strata_record::RecordError> {
    match claimed_offsets(buf) {
        Some((base, _)) if base < legacy_crc_below => Batch::parse_legacy(buf),
        _ => Batch::parse(buf).map(|b| (b, false)),
    }
}

pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// Where a scan of a segment stopped, and why.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// Byte position after the last good batch.
    pub valid_len: u64,
    /// Bytes past `valid_len` in the file.
    pub bad_len: u64,
    /// The reason the bytes past `valid_len` are bad, if any.
    pub error: Option<String>,
    /// Offsets the bad tail claimed, when its header was readable.
    pub bad_offsets: Option<(i64, i64)>,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    /// Offset after the last batch in this segment.
    pub next_offset: i64,
    pub size: u64,
    /// Largest record timestamp in the segment; `i64::MIN` while empty.
    pub max_timestamp: i64,
    /// When the segment was created (or opened, after a restart): drives `segment.ms`.
    pub created_ms: i64,
    file: Arc<File>,
    dir: PathBuf,
    index: Vec<(u32, u32)>,
    time_index: Vec<(i64, u32)>,
    bytes_since_index: u64,
    index_interval: u64,
    /// Where a sealed segment's good batches end and why the rest is unreadable, when
    /// recovery found damage there: reads past `next_offset` report it as corruption
    /// instead of passing on to the next segment.
    bad_tail: Option<(u64, String)>,
    /// Batches based below this offset may carry the IEEE CRC-32 of logs written before
    /// the checksum became CRC-32C (`docs/batch-format.md`); reads rewrite it.
    legacy_crc_below: i64,
}

impl Segment {
    pub fn create(dir: &Path, base_offset: i64, index_interval: u64, now_ms: i64) -> Result<Self> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .and_then(|f| f.set_len(0).map(|_| f))
            .map_err(|e| LogError::io(format!("creating {}", path.display()), e))?;
        // The new file's name must survive a crash as surely as what is written to it.
        sync_dir(dir)?;
        Ok(Self::new(dir, base_offset, file, index_interval, now_ms))
    }

    fn new(dir: &Path, base_offset: i64, file: File, index_interval: u64, now_ms: i64) -> Self {
        Self {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: i64::MIN,
            created_ms: now_ms,
            file: Arc::new(file),
            dir: dir.to_path_buf(),
            index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: 0,
            index_interval,
            bad_tail: None,
            legacy_crc_below: i64::MIN,
        }
    }

    /// The open segment file, for readers that work without the log's lock (the
    /// cleaner reads sealed segments, which no append changes).
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Whether recovery found this sealed segment damaged.
    pub fn has_bad_tail(&self) -> bool {
        self.bad_tail.is_some()
    }

    /// Records that the segment's files were renamed into `dir` (the file stays open).
    pub fn moved_to(&mut self, dir: &Path) {
        self.dir = dir.to_path_buf();
    }

    /// Marks the bytes past `valid_len` unreadable (a sealed segment recovery found
    /// damaged): reads there fail with `reason` and the position.
    pub fn set_bad_tail(&mut self, valid_len: u64, reason: String) {
        self.bad_tail = Some((valid_len, reason));
    }

    /// Opens an existing segment file. A sealed segment with valid index files is
    /// loaded from them; otherwise the file is scanned (CRC-checked) to rebuild the
    /// indexes, and the returned [`ScanEnd`] says whether a bad tail was found. The
    /// caller decides what to do with a bad tail (truncate the active segment, report a
    /// sealed one).
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        now_ms: i64,
        sealed: bool,
        legacy_crc_below: i64,
    ) -> Result<(Self, Option<ScanEnd>)> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| LogError::io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| LogError::io(format!("reading size of {}", path.display()), e))?
            .len();
        let mut seg = Self::new(dir, base_offset, file, index_interval, now_ms);
        seg.legacy_crc_below = legacy_crc_below;
        if sealed && seg.load_indexes(len) {
            return Ok((seg, None));
        }
        let end = seg.scan(len)?;
        Ok((seg, Some(end)))
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(file_name(self.base_offset, "log"))
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Records a batch appended at byte `pos` in the in-memory indexes.
    fn track(&mut self, pos: u64, h: &BatchHeader) {
        let rel = (h.base_offset - self.base_offset) as u32;
        if pos == 0 || self.bytes_since_index >= self.index_interval {
            if pos != 0 {
                self.index.push((rel, pos as u32));
            }
            if h.max_timestamp > self.max_timestamp {
                self.time_index.push((h.max_timestamp, rel));
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_len() as u64;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        self.next_offset = h.next_offset();
    }

    /// Appends already-offset, validated batches (concatenated in `buf`).
    pub fn append(&mut self, buf: &[u8]) -> Result<()> {
        if let Err(e) = (&*self.file).write_all(buf) {
            // Cut whatever part of the write landed, so the file ends at a batch boundary
            // again and the next append goes where the indexes expect it.
            if let Err(cut) = self.file.set_len(self.size) {
                tracing::error!(segment = %self.path().display(), error = %cut, "could not cut a partial write");
            }
            return Err(LogError::io(
                format!("appending to {}", self.path().display()),
                e,
            ));
        }
        let mut pos = 0usize;
        while pos < buf.len() {
            let h = BatchHeader::decode(&buf[pos..]).expect("validated batch");
            self.track(self.size + pos as u64, &h);
            pos += h.total_len();
        }
        self.size += buf.len() as u64;
        Ok(())
    }

    /// Scans the file from the start, checking every batch, rebuilding the indexes.
    fn scan(&mut self, len: u64) -> Result<ScanEnd> {
        let mut pos = 0u64;
        let mut buf = Vec::new();
        let mut need = SCAN_CHUNK;
        let bad = |pos: u64, reason: String, offsets: Option<(i64, i64)>| ScanEnd {
            valid_len: pos,
            bad_len: len - pos,
            error: Some(reason),
            bad_offsets: offsets,
        };
        while pos < len {
            let want = need.max(SCAN_CHUNK).min((len - pos) as usize);
            buf.resize(want, 0);
            self.file
                .read_exact_at(&mut buf, pos)
                .map_err(|e| LogError::io(format!("reading {}", self.path().display()), e))?;
            let at_eof = pos + want as u64 == len;
            let mut off = 0usize;
            need = SCAN_CHUNK;
            while off < buf.len() {
                let rest = &buf[off..];
                let here = pos + off as u64;
                let total = match batch_total_len(rest) {
                    None if at_eof => {
                        self.size = here;
                        return Ok(bad(here, "torn batch header".into(), None));
                    }
                    None => {
                        need = LENGTH_PREFIX;
                        break;
                    }
                    Some(Err(e)) => {
                        self.size = here;
                        return Ok(bad(here, e.to_string(), None));
                    }
                    Some(Ok(t)) => t,
                };
                if total > rest.len() {
                    if at_eof {
                        self.size = here;
                        let offsets = claimed_offsets(rest);
                        let reason = format!(
                            "torn batch: header says {total} bytes, {} present",
                            rest.len()
                        );
                        return Ok(bad(here, reason, offsets));
                    }
                    need = total;
                    break;
                }
                let batch = match parse(rest, self.legacy_crc_below) {
                    Ok((b, _)) => b,
                    Err(e) => {
                        self.size = here;
                        let offsets = claimed_offsets(rest);
                        return Ok(bad(here, e.to_string(), offsets));
                    }
                };
                let h = *batch.header();
                if h.base_offset != self.next_offset || h.last_offset_delta < 0 {
                    self.size = here;
                    let reason = format!(
                        "batch claims offset {} where {} was expected",
                        h.base_offset, self.next_offset
                    );
                    return Ok(bad(here, reason, None));
                }
                self.track(here, &h);
                off += total;
                self.size = pos + off as u64;
            }
            pos += off as u64;
        }
        self.size = len;
        Ok(ScanEnd {
            valid_len: len,
            bad_len: 0,
            error: None,
            bad_offsets: None,
        })
    }

    /// Cuts the file to `len` bytes (a batch boundary) and rebuilds the indexes.
    pub fn truncate_bytes(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| LogError::io(format!("truncating {}", self.path().display()), e))?;
        // Durable before anything is appended after the cut: otherwise a crash could
        // bring the cut bytes back under offsets that new batches then reuse.
        self.sync()?;
        self.index.clear();
        self.time_index.clear();
        self.bytes_since_index = 0;
        self.max_timestamp = i64::MIN;
        self.next_offset = self.base_offset;
        self.size = 0;
        self.bad_tail = None;
        let end = self.scan(len)?;
        if let Some(err) = end.error {
            return Err(self.corrupt(self.next_offset, end.valid_len, err));
        }
        Ok(())
    }

    /// Truncates so that the segment ends before the batch holding `offset`.
    pub fn truncate_to_offset(&mut self, offset: i64) -> Result<()> {
        if offset >= self.next_offset {
            return Ok(());
        }
        let mut pos = self.index_lookup(offset);
        loop {
            let mut hdr = [0u8; strata_record::HEADER_LEN];
            self.read_exact(&mut hdr, pos)?;
            let h = BatchHeader::decode(&hdr)?;
            if h.last_offset() >= offset {
                return self.truncate_bytes(pos);
            }
            pos += h.total_len() as u64;
        }
    }

    pub fn corrupt(&self, offset: i64, position: u64, reason: String) -> LogError {
        LogError::Corrupt {
            log: String::new(),
            offset,
            segment: self.path(),
            position,
            reason,
        }
    }

    /// Replaces `buf`'s contents with `len` bytes read at `pos`, without zeroing the
    /// buffer first (reads are the hot path of fetch; zeroing cost as much as the copy).
    fn read_into(&self, buf: &mut Vec<u8>, len: usize, pos: u64) -> Result<()> {
        use std::os::fd::AsRawFd;
        buf.clear();
        buf.reserve_exact(len);
        let fd = self.file.as_raw_fd();
        let mut done = 0usize;
        while done < len {
            let spare = buf.spare_capacity_mut();
            // SAFETY: the pointer and length describe the vector's spare capacity, which
            // pread only writes to; no reference to uninitialised bytes is created.
            let n = unsafe {
                libc::pread(
                    fd,
                    spare.as_mut_ptr().add(done).cast(),
                    len - done,
                    (pos + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(LogError::io(
                    format!("reading {}", self.path().display()),
                    e,
                ));
            }
            if n == 0 {
                let e = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment shorter than expected",
                );
                return Err(LogError::io(
                    format!("reading {}", self.path().display()),
                    e,
                ));
            }
            done += n as usize;
        }
        // SAFETY: pread initialised the first `len` bytes of the spare capacity.
        unsafe { buf.set_len(len) };
        Ok(())
    }

    fn read_exact(&self, buf: &mut [u8], pos: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, pos)
            .map_err(|e| LogError::io(format!("reading {}", self.path().display()), e))
    }

    /// Byte position of an indexed batch at or before `offset`.
    pub fn index_lookup(&self, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).max(0) as u32;
        let i = self.index.partition_point(|&(r, _)| r <= rel);
        if i == 0 {
            0
        } else {
            self.index[i - 1].1 as u64
        }
    }

    /// An offset at or before the first record with timestamp >= `ts`.
    pub fn time_lookup(&self, ts: i64) -> i64 {
        let i = self.time_index.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            self.base_offset
        } else {
            // Entry i-1 and everything before it is < ts; start from its batch.
            self.base_offset + self.time_index[i - 1].1 as i64
        }
    }

    /// Reads whole batches starting with the one holding `offset`, up to `max_bytes`
    /// (at least one batch), each CRC-checked. Returns the bytes and their start
    /// position. Empty when `offset` is at or past the end of the segment.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<(Vec<u8>, u64)> {
        if offset >= self.next_offset {
            if let Some((at, reason)) = &self.bad_tail {
                return Err(self.corrupt(offset, *at, reason.clone()));
            }
            return Ok((Vec::new(), self.size));
        }
        let mut pos = self.index_lookup(offset);
        // Skip to the batch holding `offset`, reading headers only. Every step is checked
        // (the header decoder refuses a length under a header): a damaged length ends
        // the walk with an error, never loops or runs past the file.
        let mut hdr = [0u8; strata_record::HEADER_LEN];
        loop {
            if pos >= self.size {
                return Ok((Vec::new(), self.size));
            }
            if self.size - pos < strata_record::HEADER_LEN as u64 {
                let reason = "a batch header runs past the end of the segment".to_string();
                return Err(self.corrupt(offset, pos, reason));
            }
            self.read_exact(&mut hdr, pos)?;
            let h =
                BatchHeader::decode(&hdr).map_err(|e| self.corrupt(offset, pos, e.to_string()))?;
            if h.last_offset() >= offset {
                break;
            }
            if pos + h.total_len() as u64 > self.size {
                let reason = "batch runs past the end of the segment".to_string();
                return Err(self.corrupt(offset, pos, reason));
            }
            pos += h.total_len() as u64;
        }
        let want = (max_bytes.max(strata_record::HEADER_LEN) as u64).min(self.size - pos) as usize;
        let mut buf = Vec::new();
        self.read_into(&mut buf, want, pos)?;
        // Keep whole batches; make sure the first batch is complete even if large.
        let mut end = 0usize;
        let mut expect = Expect::Holding(offset);
        loop {
            let rest = &buf[end..];
            let total = match batch_total_len(rest) {
                None => break,
                Some(Err(e)) => {
                    if end == 0 {
                        return Err(self.corrupt(offset, pos, e.to_string()));
                    }
                    break;
                }
                Some(Ok(t)) => t,
            };
            if total > rest.len() {
                if end == 0 {
                    if pos + total as u64 > self.size {
                        let reason = "batch runs past the end of the segment".to_string();
                        return Err(self.corrupt(offset, pos, reason));
                    }
                    self.read_into(&mut buf, total, pos)?;
                    end = total;
                    self.check(&mut buf, 0, expect, pos)?;
                }
                break;
            }
            match self.check(&mut buf, end, expect, pos) {
                Ok(next) => expect = Expect::StartingAt(next),
                // Serve the good prefix; the next read reports the bad batch.
                Err(_) if end > 0 => break,
                Err(e) => return Err(e),
            }
            end += total;
        }
        buf.truncate(end);
        Ok((buf, pos))
    }

    /// CRC-checks the batch at `buf[at..]` and that it carries the offset the reader
    /// expects (the base offset is outside the CRC, so it is checked separately). A
    /// legacy IEEE checksum is rewritten to CRC-32C in `buf`: what leaves the log always
    /// carries the current checksum.
    fn check(&self, buf: &mut [u8], at: usize, expect: Expect, pos: u64) -> Result<i64> {
        let rest = &mut buf[at..];
        let claimed = claimed_offsets(rest)
            .map(|o| o.0)
            .unwrap_or(expect.offset());
        let (batch, legacy) = parse(rest, self.legacy_crc_below)
            .map_err(|e| self.corrupt(claimed, pos + at as u64, e.to_string()))?;
        let h = *batch.header();
        if legacy {
            strata_record::seal_crc(&mut rest[..h.total_len()]);
        }
        let ok = match expect {
            Expect::Holding(o) => h.base_offset <= o && o <= h.last_offset(),
            Expect::StartingAt(o) => h.base_offset == o,
        };
        if !ok {
            let reason = format!(
                "batch claims offsets {}..={} where offset {} was expected",
                h.base_offset,
                h.last_offset(),
                expect.offset()
            );
            return Err(self.corrupt(expect.offset(), pos + at as u64, reason));
        }
        Ok(h.next_offset())
    }

    pub fn sync(&self) -> Result<()> {
        let path = self.path();
        if strata_failpoint::hit("log-fsync", || path.to_string_lossy().into_owned()) {
            let e = std::io::Error::other("failpoint log-fsync");
            return Err(LogError::sync(format!("syncing {}", path.display()), e));
        }
        self.file
            .sync_data()
            .map_err(|e| LogError::sync(format!("syncing {}", path.display()), e))
    }

    /// Writes the index files (on seal). Temp file then rename, so a crash leaves
    /// either the old state or the complete new files.
    pub fn write_indexes(&self) -> Result<()> {
        let mut idx = Vec::with_capacity(self.index.len() * 8);
        for (r, p) in &self.index {
            idx.extend_from_slice(&r.to_be_bytes());
            idx.extend_from_slice(&p.to_be_bytes());
        }
        let mut tix = Vec::with_capacity((self.time_index.len() + 1) * 12);
        let mut entries = self.time_index.clone();
        // The last entry always carries the segment's max timestamp (used by retention).
        if self.max_timestamp != i64::MIN && entries.last().map(|e| e.0) != Some(self.max_timestamp)
        {
            entries.push((
                self.max_timestamp,
                (self.next_offset - 1 - self.base_offset) as u32,
            ));
        }
        for (t, r) in &entries {
            tix.extend_from_slice(&t.to_be_bytes());
            tix.extend_from_slice(&r.to_be_bytes());
        }
        write_atomic(&self.dir.join(file_name(self.base_offset, "index")), &idx)?;
        write_atomic(
            &self.dir.join(file_name(self.base_offset, "timeindex")),
            &tix,
        )?;
        Ok(())
    }

    /// Loads the index files of a sealed segment; false if they are missing or do not
    /// describe this file (then the caller rebuilds them by a scan).
    fn load_indexes(&mut self, len: u64) -> bool {
        let (Ok(idx), Ok(tix)) = (
            std::fs::read(self.dir.join(file_name(self.base_offset, "index"))),
            std::fs::read(self.dir.join(file_name(self.base_offset, "timeindex"))),
        ) else {
            return false;
        };
        if idx.len() % 8 != 0 || tix.len() % 12 != 0 || len == 0 {
            return false;
        }
        let index: Vec<(u32, u32)> = idx
            .chunks_exact(8)
            .map(|c| {
                (
                    u32::from_be_bytes(c[..4].try_into().unwrap()),
                    u32::from_be_bytes(c[4..].try_into().unwrap()),
                )
            })
            .collect();
        let time_index: Vec<(i64, u32)> = tix
            .chunks_exact(12)
            .map(|c| {
                (
                    i64::from_be_bytes(c[..8].try_into().unwrap()),
                    u32::from_be_bytes(c[8..].try_into().unwrap()),
                )
            })
            .collect();
        let sorted = index.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && index.last().is_none_or(|e| (e.1 as u64) < len)
            && time_index.windows(2).all(|w| w[0].0 <= w[1].0);
        if !sorted {
            return false;
        }
        self.size = len;
        self.index = index;
        self.max_timestamp = time_index.last().map(|e| e.0).unwrap_or(i64::MIN);
        self.time_index = time_index;
        // Walk headers from the last index entry to find the end offset.
        let mut pos = self.index.last().map(|e| e.1 as u64).unwrap_or(0);
        let mut hdr = [0u8; strata_record::HEADER_LEN];
        let mut next = None;
        while pos < len {
            if self.read_exact(&mut hdr, pos).is_err() {
                return false;
            }
            let Ok(h) = BatchHeader::decode(&hdr) else {
                return false;
            };
            next = Some(h.next_offset());
            pos += h.total_len() as u64;
        }
        if pos != len {
            return false;
        }
        match next {
            Some(n) => {
                self.next_offset = n;
                true
            }
            None => false,
        }
    }

    /// Deletes the segment's files. Readers holding the file keep reading it.
    pub fn delete_files(&self) -> Result<()> {
        for ext in ["log", "index", "timeindex"] {
            let p = self.dir.join(file_name(self.base_offset, ext));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(format!("deleting {}", p.display()), e)),
            }
        }
        // Durably gone: a segment that came back after a crash would put offsets that
        // retention removed back in front of the log start.
        sync_dir(&self.dir)
    }
}

/// Calls `f` with each batch of the first `size` bytes of a segment file, in order,
/// each CRC-checked; reads in chunks, so memory stays at a chunk or one batch. Stops at
/// the first error, `f`'s or the file's (a batch that does not parse or runs past `size`).
pub(crate) fn for_each_batch(
    file: &File,
    size: u64,
    path: &Path,
    legacy_crc_below: i64,
    mut f: impl FnMut(Batch<'_>) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let mut buf = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let want = (SCAN_CHUNK as u64).min(size - pos) as usize;
        buf.resize(want, 0);
        file.read_exact_at(&mut buf, pos)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut off = 0usize;
        loop {
            let rest = &buf[off..];
            let total = match batch_total_len(rest) {
                None => break,
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(t)) => t,
            };
            if total > rest.len() {
                if off == 0 {
                    // One batch larger than a chunk: read it whole.
                    if pos + total as u64 > size {
                        return Err("batch runs past the end of the segment".into());
                    }
                    buf.resize(total, 0);
                    file.read_exact_at(&mut buf, pos)
                        .map_err(|e| format!("reading {}: {e}", path.display()))?;
                    continue;
                }
                break;
            }
            let (batch, _) = parse(rest, legacy_crc_below).map_err(|e| e.to_string())?;
            f(batch)?;
            off += total;
        }
        if off == 0 {
            return Err("a batch header runs past the end of the segment".into());
        }
        pos += off as u64;
    }
    Ok(())
}

/// What a reader expects of the next batch.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The first batch of a read must hold this offset.
    Holding(i64),
    /// Later batches must start exactly here.
    StartingAt(i64),
}

impl Expect {
    fn offset(self) -> i64 {
        match self {
            Expect::Holding(o) | Expect::StartingAt(o) => o,
        }
    }
}

/// The offsets a possibly partial batch header claims: base offset and last offset,
/// as far as the bytes present tell.
fn claimed_offsets(buf: &[u8]) -> Option<(i64, i64)> {
    if buf.len() < 27 {
        return None;
    }
    let base = i64::from_be_bytes(buf[0..8].try_into().unwrap());
    let delta = i32::from_be_bytes(buf[23..27].try_into().unwrap());
    Some((base, base + delta as i64))
}

/// Writes `data` to `path` durably: a temp file, fsynced, renamed into place, and the
/// directory fsynced so the rename itself survives a crash.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let ctx = |e| LogError::io(format!("writing {}", path.display()), e);
    let mut f = File::create(&tmp).map_err(ctx)?;
    f.write_all(data).map_err(ctx)?;
    f.sync_data()
        .map_err(|e| LogError::sync(format!("writing {}", path.display()), e))?;
    std::fs::rename(&tmp, path).map_err(ctx)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// fsyncs a directory, making the creation, renaming and removal of its entries durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let context = || format!("syncing directory {}", dir.display());
    if strata_failpoint::hit("log-dir-fsync", || dir.to_string_lossy().into_owned()) {
        return Err(LogError::sync(
            context(),
            std::io::Error::other("failpoint log-dir-fsync"),
        ));
    }
    let d = File::open(dir).map_err(|e| LogError::io(context(), e))?;
    d.sync_all().map_err(|e| LogError::sync(context(), e))
}
