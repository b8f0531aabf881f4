//! Idempotent producers (Kafka's rules, KIP-98): per partition, each producer id's
//! epoch and the sequence numbers and offsets of its last [`MAX_CACHED_BATCHES`] batches,
//! so a batch sent again after a lost answer is answered with the offsets it already
//! has instead of being written twice, and a batch that skips ahead is refused.
//!
//! Invariants:
//! - The state is a function of the log: every batch that carries a producer id,
//!   appended by a leader or copied by a follower, is recorded under the log's write
//!   lock in log order; a truncation or a restart of the log rebuilds it from the log.
//! - A snapshot (`producers.snapshot` in the log directory: the state as of an offset)
//!   bounds what a restart replays: the log from the snapshot's offset. A snapshot past
//!   the log's end (the tail it saw was lost in a crash) is ignored and the whole local
//!   log replayed. Batches only in the cold tier are not replayed: a producer known only
//!   there is unknown, and its next batch is taken with any sequence (as Kafka does
//!   once retention removed a producer's batches).
//! - A producer silent for `producer.id.expiration.ms` (by its batches' max timestamps
//!   against the broker clock) is forgotten.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_log::{Log, LogError};
use strata_record::BatchHeader;
use strata_record::increment_sequence as increment;

/// Batches remembered per producer: a producer has at most this many in flight.
pub const MAX_CACHED_BATCHES: usize = 5;

/// File name of the snapshot in a log directory.
pub const SNAPSHOT_FILE: &str = "producers.snapshot";

/// Default `producer.id.expiration.ms` (Kafka's: one day).
pub const DEFAULT_EXPIRATION_MS: i64 = 86_400_000;

/// One batch of a producer: its sequence range and where it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSeq {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    epoch: i16,
    /// Oldest first.
    batches: VecDeque<BatchSeq>,
    /// The largest record timestamp of its last batch.
    last_timestamp: i64,
}

/// What a produced batch is, for its producer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not idempotent, or next in sequence: append it.
    Append,
    /// Written before, at these offsets: answer with them, write nothing.
    Duplicate(BatchSeq),
}

/// Why a batch is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqError {
    /// The producer has a newer epoch here: this one was fenced.
    StaleEpoch {
        producer_id: i64,
        sent: i16,
        current: i16,
    },
    /// The batch does not continue the producer's sequence.
    OutOfOrder {
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        expected: i32,
    },
}

impl SeqError {
    /// The broker's error for it, on `topic`-`partition`.
    pub fn into_error(self, topic: &str, partition: u32) -> crate::error::Error {
        use crate::error::Error;
        let topic = topic.to_string();
        match self {
            SeqError::StaleEpoch {
                producer_id,
                sent,
                current,
            } => Error::InvalidProducerEpoch {
                topic,
                partition,
                producer_id,
                sent,
                current,
            },
            SeqError::OutOfOrder {
                producer_id,
                epoch,
                first_seq,
                expected,
            } => Error::OutOfOrderSequence {
                topic,
                partition,
                producer_id,
                epoch,
                first_seq,
                expected,
            },
        }
    }
}

/// The sequence of a batch's last record.
fn last_seq(h: &BatchHeader) -> i32 {
    increment(h.base_sequence, h.last_offset_delta)
}

/// Every producer's state in one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Producers {
    map: HashMap<i64, Entry>,
    /// Changed since the last snapshot.
    dirty: bool,
}

/// The batch that ends just below a snapshot's offset, as it was when the snapshot was
/// taken: a log whose batch there is the same (offset, leader epoch and CRC) has the same
/// batches below (logs that agree on a batch's epoch agree on everything before it), so
/// the snapshot holds for it; a log truncated and written again there differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBatch {
    pub base_offset: i64,
    pub leader_epoch: i32,
    pub crc: u32,
}

impl LastBatch {
    pub fn of(h: &BatchHeader) -> Self {
        Self {
            base_offset: h.base_offset,
            leader_epoch: h.leader_epoch,
            crc: h.crc,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    /// The state covers every batch below this offset.
    offset: i64,
    last_batch: Option<LastBatch>,
    producers: Vec<(i64, Entry)>,
}

impl Producers {
    /// How `h` (a batch being produced) stands against its producer's state.
    pub fn check(&self, h: &BatchHeader) -> Result<Check, SeqError> {
        if h.producer_id < 0 {
            return Ok(Check::Append);
        }
        let Some(e) = self.map.get(&h.producer_id) else {
            // Unknown here (new, expired, or known only to the cold tier): any sequence.
            return Ok(Check::Append);
        };
        if h.producer_epoch < e.epoch {
            return Err(SeqError::StaleEpoch {
                producer_id: h.producer_id,
                sent: h.producer_epoch,
                current: e.epoch,
            });
        }
        if h.producer_epoch > e.epoch {
            // A new epoch starts its sequence over.
            if h.base_sequence != 0 {
                return Err(SeqError::OutOfOrder {
                    producer_id: h.producer_id,
                    epoch: h.producer_epoch,
                    first_seq: h.base_sequence,
                    expected: 0,
                });
            }
            return Ok(Check::Append);
        }
        let last = last_seq(h);
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(Check::Duplicate(*b));
        }
        let expected = e.batches.back().map_or(0, |b| increment(b.last_seq, 1));
        if e.batches.is_empty() || h.base_sequence == expected {
            return Ok(Check::Append);
        }
        Err(SeqError::OutOfOrder {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            first_seq: h.base_sequence,
            expected,
        })
    }

    /// Records batch `h`, written at `first_offset` (leader or follower alike).
    pub fn record(&mut self, h: &BatchHeader, first_offset: i64) {
        if h.producer_id < 0 {
            return;
        }
        let b = BatchSeq {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            first_offset,
            last_offset: first_offset + h.last_offset_delta as i64,
        };
        let e = self.map.entry(h.producer_id).or_insert_with(|| Entry {
            epoch: h.producer_epoch,
            batches: VecDeque::with_capacity(MAX_CACHED_BATCHES),
            last_timestamp: h.max_timestamp,
        });
        if h.producer_epoch != e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        if e.batches.len() == MAX_CACHED_BATCHES {
            e.batches.pop_front();
        }
        e.batches.push_back(b);
        e.last_timestamp = h.max_timestamp;
        self.dirty = true;
    }

    /// Records every batch in `batches` (whole batches as stored, offsets set).
    pub fn record_all(&mut self, batches: &[u8]) {
        let mut pos = 0;
        while pos < batches.len() {
            let Ok(h) = BatchHeader::decode(&batches[pos..]) else {
                return;
            };
            self.record(&h, h.base_offset);
            pos += h.total_len();
        }
    }

    /// Forgets producers whose last batch is older than `max_age_ms` at `now_ms`.
    pub fn expire(&mut self, now_ms: i64, max_age_ms: i64) {
        let before = self.map.len();
        self.map
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp) <= max_age_ms);
        self.dirty |= self.map.len() != before;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether anything changed since the last [`Producers::take_snapshot`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The snapshot's bytes for the state as of `offset` (the log's end, where the
    /// batch `last_batch` ends), marking the state clean.
    pub fn take_snapshot(&mut self, offset: i64, last_batch: Option<LastBatch>) -> Vec<u8> {
        self.dirty = false;
        let mut producers: Vec<(i64, Entry)> =
            self.map.iter().map(|(k, v)| (*k, v.clone())).collect();
        producers.sort_by_key(|(k, _)| *k);
        serde_json::to_vec(&Snapshot {
            version: 1,
            offset,
            last_batch,
            producers,
        })
        .expect("producer state serializes")
    }

    /// Reads the snapshot in `dir`: the state, the offset it covers and the batch that
    /// ends there. None when there is none or it cannot be read (the caller replays the
    /// whole log).
    pub fn load_snapshot(dir: &Path) -> Option<(Self, i64, Option<LastBatch>)> {
        let bytes = std::fs::read(dir.join(SNAPSHOT_FILE)).ok()?;
        let s: Snapshot = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "unreadable producer state snapshot; replaying the log instead");
                return None;
            }
        };
        if s.version != 1 {
            return None;
        }
        Some((
            Self {
                map: s.producers.into_iter().collect(),
                dirty: false,
            },
            s.offset,
            s.last_batch,
        ))
    }
}

/// The producer state of `log` as it is now: its snapshot when that holds for this log
/// (see [`LastBatch`]), with the batches after it replayed; else the whole local log
/// replayed. Reads the log (blocking I/O). Stored bytes that fail their checks end the
/// replay there (logged): the log serves what it can and reports the rest when read,
/// and producers only seen past that point are unknown (taken with any sequence).
pub fn state_of(log: &Log) -> Producers {
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let mut p = Producers::default();
    let mut from = start;
    if let Some((snap, offset, last)) = Producers::load_snapshot(log.dir())
        && (start..=end).contains(&offset)
        && last_batch_below(log, offset).ok() == Some(last)
    {
        p = snap;
        from = offset;
    }
    if let Err(e) = replay(log, from, &mut p) {
        tracing::warn!(log = log.name(), error = %e, "producer state replay stopped at unreadable data; producers seen only past it are unknown");
    }
    p.dirty = from != end;
    p
}

/// The batch of `log` that ends just below `offset`, if the log holds one there.
pub fn last_batch_below(log: &Log, offset: i64) -> Result<Option<LastBatch>, LogError> {
    if offset <= log.log_start_offset() || offset > log.log_end_offset() {
        return Ok(None);
    }
    let buf = log.read_below(offset - 1, 1, offset)?;
    if buf.is_empty() {
        return Ok(None);
    }
    let h = BatchHeader::decode(&buf).map_err(LogError::InvalidBatch)?;
    Ok((h.base_offset + h.last_offset_delta as i64 == offset - 1).then(|| LastBatch::of(&h)))
}

/// Records every batch of `log` from `from` (a batch boundary) to its end into `p`.
fn replay(log: &Log, from: i64, p: &mut Producers) -> Result<(), LogError> {
    let end = log.log_end_offset();
    let mut at = from;
    while at < end {
        let before = at;
        let buf = log.read_below(at, 1 << 20, end)?;
        let mut pos = 0;
        while pos + strata_record::HEADER_LEN <= buf.len() {
            let h = BatchHeader::decode(&buf[pos..]).map_err(LogError::InvalidBatch)?;
            if h.base_offset >= at {
                p.record(&h, h.base_offset);
            }
            at = at.max(h.base_offset + h.last_offset_delta as i64 + 1);
            pos += h.total_len();
        }
        if at == before {
            break;
        }
    }
    Ok(())
}

/// Writes a snapshot into `dir` durably. Blocking I/O.
pub fn write_snapshot(dir: &Path, bytes: &[u8]) -> Result<(), LogError> {
    strata_log::write_atomic(&dir.join(SNAPSHOT_FILE), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 1_000,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: records,
        }
    }

    #[test]
    fn duplicates_are_answered_with_their_offsets_and_gaps_refused() {
        let mut p = Producers::default();
        let (a, b, c) = (header(7, 0, 0, 3), header(7, 0, 3, 2), header(7, 0, 5, 1));
        assert_eq!(p.check(&a), Ok(Check::Append));
        p.record(&a, 100);
        assert_eq!(p.check(&b), Ok(Check::Append));
        p.record(&b, 103);
        // The first batch again: already at 100..=102.
        let Ok(Check::Duplicate(d)) = p.check(&a) else {
            panic!("a duplicate")
        };
        assert_eq!((d.first_offset, d.last_offset), (100, 102));
        // Skipping a sequence is refused, naming what was expected.
        assert_eq!(
            p.check(&header(7, 0, 6, 1)),
            Err(SeqError::OutOfOrder {
                producer_id: 7,
                epoch: 0,
                first_seq: 6,
                expected: 5
            })
        );
        assert_eq!(p.check(&c), Ok(Check::Append));
        // A newer epoch starts over at 0; the older one is fenced from then on.
        assert!(p.check(&header(7, 1, 4, 1)).is_err());
        p.record(&header(7, 1, 0, 1), 106);
        assert!(matches!(
            p.check(&header(7, 0, 5, 1)),
            Err(SeqError::StaleEpoch { .. })
        ));
        // Another producer, unknown here, is taken with any sequence.
        assert_eq!(p.check(&header(8, 0, 42, 1)), Ok(Check::Append));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_sequences_wrap() {
        let mut p = Producers::default();
        let mut seq = i32::MAX - 2;
        for i in 0..7 {
            let h = header(1, 0, seq, 2);
            assert_eq!(p.check(&h), Ok(Check::Append), "batch {i}");
            p.record(&h, i * 2);
            seq = increment(seq, 2);
        }
        assert_eq!(p.map[&1].batches.len(), MAX_CACHED_BATCHES);
        // The newest five are duplicates; the two before them are out of order.
        assert!(matches!(
            p.check(&header(1, 0, increment(i32::MAX - 2, 4), 2)),
            Ok(Check::Duplicate(_))
        ));
        assert!(p.check(&header(1, 0, i32::MAX - 2, 2)).is_err());
    }

    #[test]
    fn snapshots_round_trip_and_silent_producers_expire() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Producers::default();
        p.record(&header(1, 0, 0, 1), 0);
        let mut old = header(2, 0, 0, 1);
        old.max_timestamp = 0;
        p.record(&old, 1);
        let last = LastBatch {
            base_offset: 1,
            leader_epoch: 0,
            crc: 9,
        };
        std::fs::write(
            dir.path().join(SNAPSHOT_FILE),
            p.take_snapshot(2, Some(last)),
        )
        .unwrap();
        assert!(!p.is_dirty());
        let (loaded, offset, l) = Producers::load_snapshot(dir.path()).unwrap();
        assert_eq!(
            (loaded.map.clone(), offset, l),
            (p.map.clone(), 2, Some(last))
        );
        p.expire(1_000 + 500, 1_000);
        assert_eq!(p.len(), 1);
        assert!(p.map.contains_key(&1));
    }
}
