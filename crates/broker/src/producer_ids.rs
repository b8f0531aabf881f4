//! Producer ids for idempotent producers (Kafka's InitProducerId without transactions).
//!
//! An id is this broker's node id in the high 32 bits and a counter in the low 32: ids
//! are unique across the cluster without asking the controller, since node ids are (a
//! broker whose data directory was wiped cannot come back under its old id). The counter
//! is reserved in blocks: the end of the reserved block is written to
//! `producer_ids.json` in the data directory (durably) before any id of it is handed
//! out, so after a crash the counter goes on from there and no id is given twice.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::broker::write_json_atomic;
use crate::error::{BrokerError, Result};

/// Ids reserved per write of the file.
const BLOCK: u64 = 1000;
const FILE: &str = "producer_ids.json";

#[derive(Serialize, Deserialize)]
struct Reserved {
    /// Counters below this may have been handed out.
    reserved_until: u64,
}

pub struct ProducerIds {
    path: PathBuf,
    node: u32,
    /// (next counter, end of the reserved block).
    state: Mutex<(u64, u64)>,
}

impl ProducerIds {
    /// Reads where the counter stands in `data_dir` (0 for a new directory).
    pub fn open(data_dir: &Path, node: u32) -> Result<Self> {
        let path = data_dir.join(FILE);
        let start = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<Reserved>(&bytes)
                    .map_err(|e| {
                        BrokerError::InvalidConfig(format!(
                            "{} is not valid ({e}): it records which producer ids were handed out; restore it, or remove it only if no producer of this broker will ever send again",
                            path.display()
                        ))
                    })?
                    .reserved_until
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(BrokerError::io(format!("reading {}", path.display()), e)),
        };
        Ok(Self {
            path,
            node,
            state: Mutex::new((start, start)),
        })
    }

    /// The next id. Blocking I/O once per [`BLOCK`] ids (the reservation's fsync).
    pub fn next(&self) -> Result<i64> {
        let mut st = self.state.lock();
        if st.0 == st.1 {
            let end = st.1 + BLOCK;
            if end > u32::MAX as u64 {
                return Err(BrokerError::InvalidRequest(format!(
                    "broker {} has handed out every producer id it has; restart it under a new node id",
                    self.node
                )));
            }
            write_json_atomic(
                &self.path,
                &Reserved {
                    reserved_until: end,
                },
            )?;
            st.1 = end;
        }
        let id = ((self.node as i64) << 32) | st.0 as i64;
        st.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_given_twice_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::open(dir.path(), 3).unwrap();
        let first: Vec<i64> = (0..5).map(|_| a.next().unwrap()).collect();
        assert_eq!(first[0], 3 << 32);
        assert_eq!(first[4], (3 << 32) + 4);
        drop(a);
        // A restart (or a crash) skips the rest of the reserved block.
        let b = ProducerIds::open(dir.path(), 3).unwrap();
        assert_eq!(b.next().unwrap(), (3 << 32) + BLOCK as i64);
        std::fs::write(dir.path().join(FILE), "garbage").unwrap();
        let e = ProducerIds::open(dir.path(), 3).err().unwrap();
        assert!(e.to_string().contains("producer ids"), "{e}");
    }
}
