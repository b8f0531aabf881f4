//! Leader epoch -> start offset map (Kafka KIP-101): the first offset written under each
//! leader epoch, persisted in `leader-epoch-checkpoint` so a follower can find where its
//! log diverges from a new leader's.

use std::path::{Path, PathBuf};

use crate::error::{LogError, Result};
use crate::segment::write_atomic;

const FILE: &str = "leader-epoch-checkpoint";

#[derive(Debug)]
pub struct EpochCache {
    path: PathBuf,
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let mut entries = Vec::new();
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                for line in s.lines().filter(|l| !l.trim().is_empty()) {
                    let mut it = line.split_whitespace();
                    let parsed = (|| Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?)))();
                    match parsed {
                        Some(e) => entries.push(e),
                        None => {
                            return Err(LogError::io(
                                format!("reading {}", path.display()),
                                std::io::Error::new(
                                    std::io::ErrorKind::InvalidData,
                                    format!("bad line {line:?}"),
                                ),
                            ));
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io(format!("reading {}", path.display()), e)),
        }
        Ok(Self { path, entries })
    }

    fn persist(&self) -> Result<()> {
        let mut s = String::new();
        for (e, o) in &self.entries {
            s.push_str(&format!("{e} {o}\n"));
        }
        write_atomic(&self.path, s.as_bytes())
    }

    /// Records that `epoch` starts at `offset`, if it is newer than the latest known.
    pub(crate) fn assign(&mut self, epoch: i32, offset: i64) -> Result<()> {
        if epoch < 0 || self.entries.last().is_some_and(|&(e, _)| e >= epoch) {
            return Ok(());
        }
        self.entries.push((epoch, offset));
        self.persist()
    }

    /// Drops epochs starting at or after `offset` (after a truncation).
    pub(crate) fn truncate_from(&mut self, offset: i64) -> Result<()> {
        let before = self.entries.len();
        self.entries.retain(|&(_, o)| o < offset);
        if self.entries.len() != before {
            self.persist()
        } else {
            Ok(())
        }
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.0)
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// The end offset of `epoch` as a leader would answer OffsetForLeaderEpoch: the
    /// start offset of the next larger epoch, or `log_end` if `epoch` is the latest.
    /// Returns the largest epoch <= the requested one with its end offset.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> Option<(i32, i64)> {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        if i == 0 {
            return None;
        }
        let found = self.entries[i - 1].0;
        let end = self.entries.get(i).map(|e| e.1).unwrap_or(log_end);
        Some((found, end))
    }
}
