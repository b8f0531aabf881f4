//! The controller's durable storage: the Raft log and vote ([`LogStore`]) and the state
//! machine with its snapshots ([`StateMachine`]), in `<data-dir>/raft/`.
//!
//! Files:
//! ```text
//! log            the entries: [len u32][crc32 u32][JSON entry], appended and fdatasynced
//!                before an append is acknowledged; a torn or corrupt tail (an append a
//!                crash cut short, so never acknowledged) is cut off at open
//! vote.json      the vote, written to a temporary file, fsynced and renamed over the old
//!                one (and the directory fsynced) before a vote is acknowledged, so a
//!                restarted voter can never vote twice in one term
//! purged.json    the last purged log id; written before the log is rewritten without the
//!                purged entries
//! committed.json the last committed log id, a hint (not fsynced) that lets a restarted
//!                node re-apply its log at once
//! snapshot.json  the last snapshot: its meta and the state machine as of it
//! ```
//! Truncation and purge rewrite `log` (to a temporary file, fsynced, renamed): both are
//! rare. All file I/O runs on blocking threads.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::state::{ClusterState, CommandResult, NodeId};
use crate::{Node, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> std::io::Error {
    let what = what.into();
    move |e| std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the
/// directory (when `durable`).
fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    // Snapshots hold users' SCRAM keys: readable by the broker's user only.
    use std::os::unix::fs::PermissionsExt;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(format!("creating {}", tmp.display())))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(format!("restricting {}", tmp.display())))?;
    f.write_all(bytes)
        .map_err(io_err(format!("writing {}", tmp.display())))?;
    if durable {
        f.sync_all()
            .map_err(io_err(format!("fsync of {}", tmp.display())))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(format!("renaming to {}", path.display())))?;
    if durable {
        let dir = path.parent().unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(format!("fsync of {}", dir.display())))?;
    }
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not valid: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
    }
}

fn encode_record(out: &mut Vec<u8>, entry: &Entry<TypeConfig>) {
    let body = serde_json::to_vec(entry).expect("entries serialize");
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// Reads the log file's records up to the first torn or corrupt one; returns them, the
/// length of the good prefix, and whether a bad record there is followed by more bytes
/// (damage in the middle, not a torn tail).
fn decode_records(buf: &[u8]) -> (Vec<Entry<TypeConfig>>, usize, bool) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let end = pos + 8 + len;
        let Some(body) = buf.get(pos + 8..end) else {
            // Runs past the end of the file: a torn last append.
            return (out, pos, false);
        };
        let good = crc32fast::hash(body) == crc;
        match serde_json::from_slice(body) {
            Ok(entry) if good => out.push(entry),
            _ => return (out, pos, end < buf.len()),
        }
        pos = end;
    }
    (out, pos, false)
}

/// Whether `dir` holds controller state: a vote, log entries or a snapshot.
pub fn has_state(dir: &Path) -> bool {
    let nonempty = |name: &str| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() > 0);
    nonempty("vote.json") || nonempty("log") || nonempty("snapshot.json")
}

struct LogInner {
    dir: PathBuf,
    file: Arc<File>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

/// The Raft log and vote, durable before acknowledged.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, cutting off a torn tail.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let path = dir.join("log");
        let created = !path.exists();
        // The log holds users' SCRAM keys: readable by the broker's user only.
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        if created {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(format!("fsync of {}", dir.display())))?;
        }
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(io_err(format!("reading {}", path.display())))?;
        let (records, good, damaged) = decode_records(&buf);
        if damaged {
            // Not an append a crash cut short: acknowledged entries follow it. Cutting
            // here would drop them silently and let this node vote on a shorter log.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the controller log {} is corrupt at byte {good}, with records after it; not starting on it. If the other voters are healthy, move {} away and bring this broker back under a new --node-id",
                    path.display(),
                    dir.display()
                ),
            ));
        }
        if good < buf.len() {
            tracing::warn!(file = %path.display(), cut_bytes = buf.len() - good,
                "the controller log ends in a torn or corrupt record (an append a crash cut short); cutting it off");
            file.set_len(good as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_err(format!("truncating {}", path.display())))?;
        }
        let last_purged: Option<LogId<NodeId>> =
            read_json::<Option<LogId<NodeId>>>(&dir.join("purged.json"))?.flatten();
        let entries = records
            .into_iter()
            .filter(|e| last_purged.is_none_or(|p| e.log_id.index > p.index))
            .map(|e| (e.log_id.index, e))
            .collect();
        let vote = read_json(&dir.join("vote.json"))?;
        // A hint written without fsync: unreadable after a crash means "not known".
        let committed = read_json::<Option<LogId<NodeId>>>(&dir.join("committed.json"))
            .ok()
            .flatten()
            .flatten();
        Ok(Self {
            inner: Arc::new(Mutex::new(LogInner {
                dir: dir.to_path_buf(),
                file: Arc::new(file),
                entries,
                last_purged,
                vote,
                committed,
            })),
        })
    }

    /// Rewrites the log file with the entries in memory (after a truncation or purge).
    async fn rewrite(&self) -> std::io::Result<()> {
        let (dir, bytes) = {
            let inner = self.inner.lock();
            let mut bytes = Vec::new();
            for e in inner.entries.values() {
                encode_record(&mut bytes, e);
            }
            (inner.dir.clone(), bytes)
        };
        let file = blocking(move || {
            let path = dir.join("log");
            write_atomic(&path, &bytes, true)?;
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(format!("opening {}", path.display())))
        })
        .await?;
        self.inner.lock().file = Arc::new(file);
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let inner = self.inner.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.inner.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let dir = self.inner.lock().dir.clone();
        let bytes = serde_json::to_vec(vote).expect("votes serialize");
        blocking(move || write_atomic(&dir.join("vote.json"), &bytes, true))
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.inner.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let dir = {
            let mut inner = self.inner.lock();
            inner.committed = committed;
            inner.dir.clone()
        };
        let bytes = serde_json::to_vec(&committed).expect("log ids serialize");
        // A hint: losing it only delays re-applying the log after a restart.
        blocking(move || write_atomic(&dir.join("committed.json"), &bytes, false))
            .await
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let mut bytes = Vec::new();
        for e in &entries {
            encode_record(&mut bytes, e);
        }
        let file = self.inner.lock().file.clone();
        let written = blocking(move || {
            let before = file.metadata()?.len();
            let r = (&*file).write_all(&bytes).and_then(|()| file.sync_data());
            if r.is_err() {
                // Leave no partial record for a later append to follow.
                let _ = file.set_len(before);
            }
            r
        })
        .await;
        match written {
            Ok(()) => {
                let mut inner = self.inner.lock();
                for e in entries {
                    inner.entries.insert(e.log_id.index, e);
                }
                drop(inner);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                // The partial record was cut back above (or, if that failed too, the
                // next open cuts it); nothing after it is acknowledged.
                tracing::error!(error = %e, "appending to the controller log failed");
                let storage = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(e));
                Err(storage.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.inner.lock().entries.split_off(&log_id.index);
        self.rewrite()
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let dir = self.inner.lock().dir.clone();
        let bytes = serde_json::to_vec(&Some(log_id)).expect("log ids serialize");
        blocking(move || write_atomic(&dir.join("purged.json"), &bytes, true))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        {
            let mut inner = self.inner.lock();
            inner.last_purged = Some(log_id);
            inner.entries = inner.entries.split_off(&(log_id.index + 1));
        }
        self.rewrite()
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

/// The state machine's content as of its last applied entry: what snapshots hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, Node>,
    pub cluster: ClusterState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Node>,
    data: Vec<u8>,
}

/// The applied cluster state, shared with readers (the broker), who are told of every
/// change through [`Shared::changes`].
pub struct Shared {
    dir: PathBuf,
    applied: parking_lot::RwLock<Applied>,
    changes: watch::Sender<Option<LogId<NodeId>>>,
    snapshot: Mutex<Option<StoredSnapshot>>,
    snapshots_built: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// The cluster state as last applied.
    pub fn state(&self) -> ClusterState {
        self.applied.read().cluster.clone()
    }

    /// `f` of the cluster state as last applied, without copying it.
    pub fn with_state<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(&self.applied.read().cluster)
    }

    pub fn applied(&self) -> Applied {
        self.applied.read().clone()
    }

    /// Changes whenever an entry is applied or a snapshot installed.
    pub fn changes(&self) -> watch::Receiver<Option<LogId<NodeId>>> {
        self.changes.subscribe()
    }

    /// Stores `snap` unless the current one is as new: a snapshot built while a newer
    /// one was installed (openraft runs them side by side) must not replace it. The
    /// lock is held across the write, so writes never interleave.
    fn persist_snapshot(&self, snap: StoredSnapshot) -> std::io::Result<()> {
        let mut current = self.snapshot.lock();
        if let Some(c) = current.as_ref()
            && c.meta.last_log_id >= snap.meta.last_log_id
        {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&snap).expect("snapshots serialize");
        write_atomic(&self.dir.join("snapshot.json"), &bytes, true)?;
        *current = Some(snap);
        Ok(())
    }
}

/// The state machine: applies committed commands to the [`ClusterState`].
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    /// Opens the state machine in `dir` as of its last snapshot (the log replays the rest).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let snapshot: Option<StoredSnapshot> = read_json(&dir.join("snapshot.json"))?;
        let applied = match &snapshot {
            Some(s) => serde_json::from_slice(&s.data).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the controller snapshot in {} is not valid: {e}",
                        dir.display()
                    ),
                )
            })?,
            None => Applied::default(),
        };
        let last = applied.last_applied;
        Ok(Self {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                applied: parking_lot::RwLock::new(applied),
                changes: watch::channel(last).0,
                snapshot: Mutex::new(snapshot),
                snapshots_built: Default::default(),
            }),
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let applied = self.shared.applied();
        let data = serde_json::to_vec(&applied).expect("state serializes");
        let n = self
            .shared
            .snapshots_built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match applied.last_applied {
            Some(l) => format!("{}-{}-{n}", l.leader_id.term, l.index),
            None => format!("0-0-{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let shared = self.shared.clone();
        blocking(move || shared.persist_snapshot(stored))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>)> {
        let a = self.shared.applied.read();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut answers = Vec::new();
        let last = {
            let mut a = self.shared.applied.write();
            for entry in entries {
                a.last_applied = Some(entry.log_id);
                let answer = match entry.payload {
                    EntryPayload::Blank => CommandResult::default(),
                    EntryPayload::Normal(cmd) => {
                        let answer = a.cluster.apply(&cmd);
                        if let Some(why) = &answer.error {
                            tracing::info!(index = entry.log_id.index, command = ?cmd, why, "controller command refused");
                        }
                        answer
                    }
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(entry.log_id), m);
                        CommandResult::default()
                    }
                };
                answers.push(answer);
            }
            a.last_applied
        };
        self.shared.changes.send_replace(last);
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<std::io::Cursor<Vec<u8>>>> {
        Ok(Box::new(std::io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let applied: Applied = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let shared = self.shared.clone();
        blocking(move || shared.persist_snapshot(stored))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let last = applied.last_applied;
        *self.shared.applied.write() = applied;
        self.shared.changes.send_replace(last);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.shared.snapshot.lock().as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(std::io::Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, RaftLogReader};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachine)> {
            let dir = tempfile::tempdir().expect("temp dir");
            let log = LogStore::open(dir.path()).expect("log opens");
            let sm = StateMachine::open(dir.path()).expect("state machine opens");
            Ok((dir, log, sm))
        }
    }

    /// openraft's own conformance suite for log stores and state machines.
    #[test]
    fn the_store_passes_openraft_s_storage_suite() {
        Suite::test_all(Builder).expect("openraft storage suite");
    }

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(crate::Command::FenceBroker {
                id: index,
                at_ms: 0,
            }),
        }
    }

    /// What an acknowledged append and vote survive: a restart, and a torn record
    /// after them (an append a crash cut short, never acknowledged), which is cut off.
    #[tokio::test]
    async fn appended_entries_and_the_vote_survive_a_restart_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = LogStore::open(dir.path()).unwrap();
            for i in 1..=3 {
                log.blocking_append([entry(1, i)]).await.unwrap();
            }
            log.save_vote(&Vote::new(2, 7)).await.unwrap();
        }
        // Half a record at the end.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("log"))
            .unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']).unwrap();
        drop(f);
        let mut log = LogStore::open(dir.path()).unwrap();
        let entries = log.try_get_log_entries(0..).await.unwrap();
        assert_eq!(
            entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 7)));
        // Appends after the cut continue the good prefix.
        log.blocking_append([entry(2, 4)]).await.unwrap();
        drop(log);
        let mut log = LogStore::open(dir.path()).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(4));
    }

    /// Damage with acknowledged records after it is not a torn tail: the store refuses
    /// to open rather than drop them and vote on a shorter log.
    #[tokio::test]
    async fn a_corrupt_record_in_the_middle_of_the_log_is_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = LogStore::open(dir.path()).unwrap();
            for i in 1..=3 {
                log.blocking_append([entry(1, i)]).await.unwrap();
            }
        }
        let path = dir.path().join("log");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 0x40; // inside the first record's body
        std::fs::write(&path, &bytes).unwrap();
        let err = LogStore::open(dir.path()).err().expect("refused");
        assert!(err.to_string().contains("corrupt at byte 0"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the file is left as it was"
        );
    }
}
