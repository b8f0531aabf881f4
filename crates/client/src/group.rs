//! A consumer group member.
//!
//! [`GroupConsumer::poll`] drives everything from the caller's task: it heartbeats on
//! the broker's interval, applies the assignment it gets back, auto-commits, and hands
//! out batches from the partitions it owns. Each owned partition is read by a
//! subscription task that pushes batches into one bounded channel; batches are tagged
//! with the generation of the task that read them, so nothing read before a revocation
//! or pause is ever delivered after it.
//!
//! Rebalancing follows the broker's answers: partitions missing from an answer are
//! revoked at once (reading stops, positions are committed when auto-commit is on, the
//! listener hears of it) and the next heartbeat goes out immediately to report them
//! given up; new partitions start at their committed offset, or at `auto_offset_reset`
//! when none is committed.
//!
//! Positions: after `poll` returns batches, the position of each partition is the offset
//! after them. Calling `poll` again means the caller has processed what it got; with
//! manual commits call [`GroupConsumer::commit`] before that to get exactly-once
//! processing across rebalances.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::consumer::{self, Batches};
use crate::error::{ClientError, Result};
use crate::{Client, StartOffset, pb};

pub type TopicPartition = (String, u32);

/// A member id of its own: the group's name and 64 random bits.
fn new_member_id(group: &str) -> String {
    use std::hash::BuildHasher;
    let random =
        std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    format!("{group}-{random:016x}")
}

/// Wait before trying a failed heartbeat, commit or read again.
const RETRY_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: String,
    pub topics: Vec<String>,
    /// The broker drops the member if it misses heartbeats for this long.
    pub session_timeout: Duration,
    /// "range" or "roundrobin"; the group keeps the one its first member chose.
    pub assignor: String,
    /// Where to start a partition with no committed offset: Earliest or Latest.
    pub auto_offset_reset: StartOffset,
    /// Commit positions this often (and on revocation and close); `None`: manual.
    pub auto_commit_interval: Option<Duration>,
    /// Bytes per fetch answer.
    pub max_bytes: u32,
}

impl GroupConfig {
    pub fn new(group: &str, topics: &[&str]) -> Self {
        Self {
            group: group.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            session_timeout: Duration::from_secs(10),
            assignor: "range".into(),
            auto_offset_reset: StartOffset::Latest,
            auto_commit_interval: Some(Duration::from_secs(5)),
            max_bytes: 1 << 20,
        }
    }
}

/// Hears about partitions as they are taken away and handed over.
pub trait RebalanceListener: Send {
    /// Called after reading of these partitions stopped (and auto-commit ran), before
    /// the broker is told they are given up.
    fn on_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// Called when these partitions are handed to this member, before any is read.
    fn on_assigned(&mut self, _partitions: &[TopicPartition]) {}
}

struct Owned {
    task: Option<JoinHandle<()>>,
    generation: u64,
    position: i64,
    committed: i64,
    paused: bool,
}

type Delivery = (TopicPartition, u64, Result<Batches>);

pub struct GroupConsumer {
    client: Client,
    config: GroupConfig,
    member_id: String,
    member_epoch: i32,
    owned: BTreeMap<TopicPartition, Owned>,
    tx: mpsc::Sender<Delivery>,
    rx: mpsc::Receiver<Delivery>,
    next_heartbeat: Instant,
    heartbeat_interval: Duration,
    next_commit: Option<Instant>,
    generation: u64,
    listener: Option<Box<dyn RebalanceListener>>,
    pending_error: Option<ClientError>,
}

fn grouped(tps: impl IntoIterator<Item = TopicPartition>) -> Vec<pb::TopicPartitions> {
    let mut map: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (t, p) in tps {
        map.entry(t).or_default().push(p);
    }
    map.into_iter()
        .map(|(topic, partitions)| pb::TopicPartitions { topic, partitions })
        .collect()
}

impl GroupConsumer {
    /// Joins the group (the first heartbeat happens here, so bad input fails now).
    pub async fn join(client: Client, config: GroupConfig) -> Result<Self> {
        Self::join_with(client, config, None).await
    }

    pub async fn join_with(
        client: Client,
        config: GroupConfig,
        listener: Option<Box<dyn RebalanceListener>>,
    ) -> Result<Self> {
        if config.topics.is_empty() {
            return Err(ClientError::Invalid(
                "subscribe to at least one topic".into(),
            ));
        }
        let (tx, rx) = mpsc::channel(16);
        let mut c = Self {
            client,
            next_commit: config.auto_commit_interval.map(|i| Instant::now() + i),
            config,
            member_id: String::new(),
            member_epoch: 0,
            owned: BTreeMap::new(),
            tx,
            rx,
            next_heartbeat: Instant::now(),
            heartbeat_interval: Duration::from_secs(1),
            generation: 0,
            listener,
            pending_error: None,
        };
        c.heartbeat().await?;
        Ok(c)
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Partitions this member owns now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.keys().cloned().collect()
    }

    /// The next offset to be delivered for an owned partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.owned
            .get(&(topic.to_string(), partition))
            .map(|o| o.position)
    }

    async fn heartbeat(&mut self) -> Result<()> {
        if self.member_id.is_empty() {
            // Chosen here (KIP-1082), so a join retried after its answer was lost (the
            // coordinator moving) is the same member, not a second one.
            self.member_id = new_member_id(&self.config.group);
        }
        let req = pb::GroupHeartbeatRequest {
            group: self.config.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.member_epoch,
            topics: self.config.topics.clone(),
            owned: grouped(self.owned.keys().cloned()),
            assignor: self.config.assignor.clone(),
            session_timeout_ms: self.config.session_timeout.as_millis() as u32,
        };
        let resp = match self.client.group_heartbeat(req).await {
            Ok(r) => r,
            Err(e) if e.code() == Some(tonic::Code::Aborted) && !self.member_id.is_empty() => {
                // Our session expired: whatever we owned is someone else's now.
                tracing::warn!(group = %self.config.group, member = %self.member_id, error = %e, "rejoining the group");
                let all: Vec<TopicPartition> = self.owned.keys().cloned().collect();
                self.stop(&all, false).await?;
                self.member_id.clear();
                self.member_epoch = 0;
                self.next_heartbeat = Instant::now();
                return Ok(());
            }
            Err(e) if e.is_retriable() => {
                // The coordinator is moving (or unreachable): keep reading what we own
                // and try again shortly; the client follows the new coordinator.
                tracing::warn!(group = %self.config.group, error = %e, "heartbeat failed; retrying");
                self.next_heartbeat = Instant::now() + RETRY_BACKOFF;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.member_id = resp.member_id;
        self.member_epoch = resp.member_epoch;
        self.heartbeat_interval = Duration::from_millis(resp.heartbeat_interval_ms.max(50) as u64);
        let target: BTreeSet<TopicPartition> = resp
            .assignment
            .iter()
            .flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic.clone(), *p)))
            .collect();
        let revoked: Vec<TopicPartition> = self
            .owned
            .keys()
            .filter(|tp| !target.contains(*tp))
            .cloned()
            .collect();
        let added: Vec<TopicPartition> = target
            .iter()
            .filter(|tp| !self.owned.contains_key(*tp))
            .cloned()
            .collect();
        if !revoked.is_empty() {
            self.stop(&revoked, self.config.auto_commit_interval.is_some())
                .await?;
        }
        if !added.is_empty() {
            match self.start(&added).await {
                Ok(()) => {}
                // Not started: the next heartbeat's answer hands them over again.
                Err(e) if e.is_retriable() => {
                    tracing::warn!(group = %self.config.group, error = %e, "could not start assigned partitions; retrying");
                    self.next_heartbeat = Instant::now() + RETRY_BACKOFF;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        // Report given-up partitions at once so their next owner can start.
        self.next_heartbeat = if revoked.is_empty() {
            Instant::now() + self.heartbeat_interval
        } else {
            Instant::now()
        };
        Ok(())
    }

    /// Stops reading `tps`, commits their positions if asked, and forgets them.
    async fn stop(&mut self, tps: &[TopicPartition], commit: bool) -> Result<()> {
        for tp in tps {
            if let Some(o) = self.owned.get_mut(tp)
                && let Some(t) = o.task.take()
            {
                t.abort();
            }
        }
        if commit {
            let entries = self.commit_entries(|tp| tps.contains(tp));
            if !entries.is_empty()
                && let Err(e) = self
                    .client
                    .commit_offsets(
                        &self.config.group,
                        &self.member_id,
                        self.member_epoch,
                        entries,
                    )
                    .await
            {
                tracing::warn!(group = %self.config.group, error = %e, "commit on revocation failed");
            }
        }
        for tp in tps {
            self.owned.remove(tp);
        }
        if let Some(l) = self.listener.as_mut() {
            l.on_revoked(tps);
        }
        Ok(())
    }

    async fn start(&mut self, tps: &[TopicPartition]) -> Result<()> {
        let committed = self
            .client
            .committed_offsets(&self.config.group, grouped(tps.iter().cloned()))
            .await?;
        let committed: BTreeMap<TopicPartition, i64> = committed
            .into_iter()
            .map(|e| ((e.topic, e.partition), e.offset))
            .collect();
        if let Some(l) = self.listener.as_mut() {
            l.on_assigned(tps);
        }
        for tp in tps {
            let c = committed.get(tp).copied().unwrap_or(-1);
            let position = if c >= 0 {
                c
            } else {
                self.client
                    .resolve_offset(&tp.0, tp.1, self.config.auto_offset_reset)
                    .await?
            };
            self.owned.insert(
                tp.clone(),
                Owned {
                    task: None,
                    generation: 0,
                    position,
                    committed: c,
                    paused: false,
                },
            );
            self.spawn_reader(tp);
        }
        Ok(())
    }

    fn spawn_reader(&mut self, tp: &TopicPartition) {
        self.generation += 1;
        let generation = self.generation;
        let Some(o) = self.owned.get_mut(tp) else {
            return;
        };
        o.generation = generation;
        let (client, tx, tp2, from, max_bytes) = (
            self.client.clone(),
            self.tx.clone(),
            tp.clone(),
            o.position,
            self.config.max_bytes,
        );
        o.task = Some(tokio::spawn(async move {
            // A leader moving or unreachable is ridden out: read again from where the
            // last batch ended (the client follows the new leader).
            let mut from = from;
            loop {
                let stream = consumer::subscribe(
                    &client,
                    &tp2.0,
                    tp2.1,
                    StartOffset::Offset(from),
                    max_bytes,
                )
                .await;
                let mut stream = match stream {
                    Ok(s) => Box::pin(s),
                    Err(e) if e.is_retriable() => {
                        tracing::debug!(topic = %tp2.0, partition = tp2.1, error = %e, "subscribe failed; retrying");
                        tokio::time::sleep(RETRY_BACKOFF).await;
                        continue;
                    }
                    Err(e) => {
                        let _ = tx.send((tp2, generation, Err(e))).await;
                        return;
                    }
                };
                loop {
                    match stream.next().await {
                        Some(Ok(b)) => {
                            from = b.next_offset;
                            if tx.send((tp2.clone(), generation, Ok(b))).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) if e.is_retriable() => {
                            tracing::debug!(topic = %tp2.0, partition = tp2.1, error = %e, "reading failed; retrying");
                            tokio::time::sleep(RETRY_BACKOFF).await;
                            break;
                        }
                        Some(Err(e)) => {
                            let _ = tx.send((tp2, generation, Err(e))).await;
                            return;
                        }
                        // The broker ended the stream (shutting down): read elsewhere.
                        None => {
                            tokio::time::sleep(RETRY_BACKOFF).await;
                            break;
                        }
                    }
                }
            }
        }));
    }

    fn commit_entries(&self, filter: impl Fn(&TopicPartition) -> bool) -> Vec<pb::OffsetEntry> {
        self.owned
            .iter()
            .filter(|(tp, o)| filter(tp) && o.position != o.committed)
            .map(|((t, p), o)| pb::OffsetEntry {
                topic: t.clone(),
                partition: *p,
                offset: o.position,
                metadata: String::new(),
            })
            .collect()
    }

    /// Commits the position of every owned partition that moved since its last commit.
    pub async fn commit(&mut self) -> Result<()> {
        let entries = self.commit_entries(|_| true);
        self.commit_exact(entries).await
    }

    /// Commits exact offsets (the next offset to read) for owned partitions.
    pub async fn commit_offsets(&mut self, offsets: &[(String, u32, i64)]) -> Result<()> {
        let entries = offsets
            .iter()
            .map(|(t, p, o)| pb::OffsetEntry {
                topic: t.clone(),
                partition: *p,
                offset: *o,
                metadata: String::new(),
            })
            .collect();
        self.commit_exact(entries).await
    }

    async fn commit_exact(&mut self, entries: Vec<pb::OffsetEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let done: Vec<(TopicPartition, i64)> = entries
            .iter()
            .map(|e| ((e.topic.clone(), e.partition), e.offset))
            .collect();
        self.client
            .commit_offsets(
                &self.config.group,
                &self.member_id,
                self.member_epoch,
                entries,
            )
            .await?;
        for (tp, o) in done {
            if let Some(owned) = self.owned.get_mut(&tp) {
                owned.committed = o;
            }
        }
        Ok(())
    }

    /// Moves an owned partition's position: the next batch delivered starts there, and
    /// the next commit commits it.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: i64) {
        let tp = (topic.to_string(), partition);
        let Some(o) = self.owned.get_mut(&tp) else {
            return;
        };
        o.position = offset;
        if let Some(t) = o.task.take() {
            t.abort();
        }
        o.generation = 0;
        if !o.paused {
            self.spawn_reader(&tp);
        }
    }

    /// Stops delivering a partition until [`GroupConsumer::resume`]; it stays assigned.
    pub fn pause(&mut self, topic: &str, partition: u32) {
        if let Some(o) = self.owned.get_mut(&(topic.to_string(), partition)) {
            o.paused = true;
            if let Some(t) = o.task.take() {
                t.abort();
            }
            o.generation = 0;
        }
    }

    pub fn resume(&mut self, topic: &str, partition: u32) {
        let tp = (topic.to_string(), partition);
        if self.owned.get(&tp).is_some_and(|o| o.paused) {
            self.owned.get_mut(&tp).expect("checked").paused = false;
            self.spawn_reader(&tp);
        }
    }

    /// Takes one delivery from a reader task. Errors never discard batches already
    /// collected: they are kept for the next `poll` that has nothing else to return.
    async fn accept(&mut self, d: Delivery, out: &mut Vec<(TopicPartition, Batches)>) {
        let (tp, generation, b) = d;
        let Some(o) = self.owned.get_mut(&tp) else {
            return;
        };
        if o.generation != generation || o.paused {
            return; // read before a revocation or pause: never delivered
        }
        match b {
            Ok(b) => {
                o.position = b.next_offset;
                out.push((tp, b));
            }
            Err(e) if e.code() == Some(tonic::Code::OutOfRange) => {
                // The position fell out of the retained range: apply auto_offset_reset.
                let reset = self.config.auto_offset_reset;
                match self.client.resolve_offset(&tp.0, tp.1, reset).await {
                    Ok(at) => {
                        tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, reset_to = at, "position out of range; resetting");
                        self.seek(&tp.0, tp.1, at);
                    }
                    Err(e) => {
                        self.pending_error.get_or_insert(e);
                    }
                }
            }
            Err(e) => {
                o.task = None;
                self.pending_error.get_or_insert(e);
            }
        }
    }

    /// Waits up to `timeout` for batches from owned partitions, heartbeating and
    /// auto-committing meanwhile. Returns (partition, batches) pairs; may be empty.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<(TopicPartition, Batches)>> {
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= self.next_heartbeat {
                self.heartbeat().await?;
            }
            if let Some(at) = self.next_commit
                && Instant::now() >= at
            {
                match self.commit().await {
                    Ok(()) => {
                        self.next_commit =
                            self.config.auto_commit_interval.map(|i| Instant::now() + i);
                    }
                    // Positions stay uncommitted until the coordinator is back.
                    Err(e) if e.is_retriable() => {
                        tracing::warn!(group = %self.config.group, error = %e, "auto-commit failed; retrying");
                        self.next_commit = Some(Instant::now() + RETRY_BACKOFF);
                    }
                    Err(e) => return Err(e),
                }
            }
            let mut out = Vec::new();
            while let Ok(d) = self.rx.try_recv() {
                self.accept(d, &mut out).await;
            }
            if !out.is_empty() {
                return Ok(out);
            }
            if let Some(e) = self.pending_error.take() {
                return Err(e);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(out);
            }
            let mut wake = deadline.min(self.next_heartbeat);
            if let Some(c) = self.next_commit {
                wake = wake.min(c);
            }
            tokio::select! {
                d = self.rx.recv() => {
                    if let Some(d) = d {
                        self.accept(d, &mut out).await;
                        if !out.is_empty() {
                            return Ok(out);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Commits (with auto-commit), leaves the group and stops reading.
    pub async fn close(mut self) -> Result<()> {
        let all: Vec<TopicPartition> = self.owned.keys().cloned().collect();
        let commit = self.config.auto_commit_interval.is_some();
        self.stop(&all, commit).await?;
        let req = pb::GroupHeartbeatRequest {
            group: self.config.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: -1,
            ..Default::default()
        };
        self.client.group_heartbeat(req).await?;
        Ok(())
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        for o in self.owned.values_mut() {
            if let Some(t) = o.task.take() {
                t.abort();
            }
        }
    }
}
