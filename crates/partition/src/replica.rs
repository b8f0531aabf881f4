//! A partition's part in replication (Kafka's ISR model).
//!
//! - **Roles** come from the controller: [`Partition::become_leader`] and
//!   [`Partition::become_follower`] take the log's write lock while they switch, so no
//!   append of the old role lands after the switch. A single broker's partitions are
//!   leaders with an empty set of followers for good.
//! - **Leader**: followers fetch with their log end offset ([`Partition::serve_follower`]);
//!   the HW is the lowest LEO over the leader and its in-sync followers, and while an
//!   in-sync-set change is on its way to the controller, over the union of the old and
//!   the new set (KIP-497's "maximal ISR"), so a record is never counted committed
//!   before every member that may be elected has it. [`Partition::isr_change`] says
//!   which followers to drop (silent or behind for `replica.lag.time.max.ms`) or add
//!   (caught up to the HW and to this epoch's start).
//! - **Follower**: appends what the leader sent as it is (offsets and epochs kept), its
//!   HW is the leader's as far as its own log reaches; a fetch whose last epoch the
//!   leader's log does not continue is answered with the diverging epoch and its end
//!   (KIP-101, KIP-279, KIP-320's form), and the follower truncates to that end, never
//!   to its HW alone.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::partition::{Partition, Role};

/// A broker's id in the cluster.
pub type NodeId = u64;

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, Default)]
struct Follower {
    /// Its log end offset as its last fetch said.
    leo: i64,
    /// When it last was caught up with the leader's log end (Kafka's lastCaughtUpTime).
    caught_up_ms: i64,
    last_fetch_ms: i64,
    /// The leader's log end at its last fetch.
    leader_leo_at_last_fetch: i64,
}

/// Leader epoch, role and (on a leader) the in-sync set and followers' progress.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplicaState {
    pub(crate) leader_epoch: i32,
    pub(crate) role: Role,
    /// Leader: the replicas, this broker among them.
    replicas: Vec<NodeId>,
    /// Leader: the in-sync followers (this broker left out) as the controller has them.
    isr: Vec<NodeId>,
    /// Leader: every member proposed to the controller since the partition epoch last
    /// changed. A proposal whose answer was lost may still have been committed, so
    /// they count for the HW until the controller's next change comes back.
    proposed: Option<Vec<NodeId>>,
    /// Leader: when the last in-sync-set change was proposed (clock ms).
    proposed_ms: i64,
    /// Leader: the controller's partition epoch the in-sync set belongs to.
    partition_epoch: i32,
    followers: HashMap<NodeId, Follower>,
    /// Leader: when this leadership began (clock ms).
    since_ms: i64,
    /// Follower: the leader, if the partition has one.
    pub(crate) leader: Option<NodeId>,
}

impl ReplicaState {
    /// A single broker's partition: it leads, with no followers.
    pub(crate) fn single() -> Self {
        Self {
            role: Role::Leader,
            ..Default::default()
        }
    }

    /// A cluster member's partition before the controller has said anything of it.
    pub(crate) fn unassigned() -> Self {
        Self {
            leader_epoch: -1,
            role: Role::NotReplica,
            ..Default::default()
        }
    }

    /// The lowest LEO over the in-sync followers (and proposed members), or `None` while
    /// one of them has not fetched since this broker became leader.
    fn followers_low(&self) -> Option<i64> {
        let mut low = i64::MAX;
        for id in self.isr.iter().chain(self.proposed.iter().flatten()) {
            low = low.min(self.followers.get(id)?.leo);
        }
        Some(low)
    }
}

/// A follower's fetch, as the leader gets it.
#[derive(Debug, Clone)]
pub struct FollowerFetch {
    pub replica: NodeId,
    pub leader_epoch: i32,
    /// The follower's log end offset.
    pub fetch_offset: i64,
    /// The epoch of the follower's last batch; -1 for an empty log.
    pub last_fetched_epoch: i32,
    pub max_bytes: usize,
    /// The HW the follower knows: a higher one is news worth an answer by itself.
    pub known_high_watermark: i64,
    pub max_wait: Duration,
}

/// The leader's answer to a follower's fetch.
#[derive(Debug, Clone, Default)]
pub struct FollowerAnswer {
    /// Batches from the fetch offset, as stored (offsets and epochs kept).
    pub batches: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub local_log_start_offset: i64,
    /// Set when the follower's log diverges: (epoch, end offset) to truncate by.
    pub diverging: Option<(i32, i64)>,
}

/// OffsetForLeaderEpoch, folded into the fetch: whether `log` (the leader's, ending at
/// `leo`) continues the follower's last epoch where the follower's log ends; if not,
/// the epoch and end offset the follower truncates by.
fn diverging(log: &strata_log::Log, f: &FollowerFetch, leo: i64) -> Option<(i32, i64)> {
    if f.last_fetched_epoch < 0 {
        // An empty follower log (or one just reset): only a log end past the
        // leader's diverges.
        return (f.fetch_offset > leo).then_some((-1, leo));
    }
    match log.epochs().end_offset_for(f.last_fetched_epoch, leo) {
        Some((e, end)) if e == f.last_fetched_epoch && end >= f.fetch_offset => None,
        Some((e, end)) => Some((e, end)),
        None => {
            // No epoch this old here: the follower's log diverges only past where this
            // log's first epoch starts (Kafka answers the requested epoch with it).
            let first = log.epochs().entries().first().map_or(leo, |&(_, o)| o);
            (first < f.fetch_offset).then_some((f.last_fetched_epoch, first))
        }
    }
}

/// An in-sync-set change a leader wants the controller to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The new in-sync set, this broker included.
    pub isr: Vec<NodeId>,
}

impl Partition {
    /// The role and leader epoch.
    pub fn role(&self) -> (Role, i32) {
        let r = self.replica.lock();
        (r.role, r.leader_epoch)
    }

    pub fn is_leader(&self) -> bool {
        self.replica.lock().role == Role::Leader
    }

    /// The in-sync set of a leader (this broker first), as the controller has it.
    pub fn isr(&self, me: NodeId) -> Vec<NodeId> {
        let r = self.replica.lock();
        std::iter::once(me).chain(r.isr.iter().copied()).collect()
    }

    /// Makes this replica the leader in `leader_epoch` with `isr` (this broker may be in
    /// it; it is left out) at `partition_epoch`. The same epoch again only updates the
    /// in-sync set.
    pub fn become_leader(
        &self,
        me: NodeId,
        leader_epoch: i32,
        partition_epoch: i32,
        replicas: &[NodeId],
        isr: &[NodeId],
    ) {
        let log = self.log.write();
        let mut r = self.replica.lock();
        let new_term = r.role != Role::Leader || r.leader_epoch != leader_epoch;
        if new_term {
            r.followers.clear();
            r.since_ms = self.shared.clock.now_ms();
            tracing::info!(topic = %self.topic, partition = self.id, leader_epoch,
                log_end_offset = log.log_end_offset(), "became leader");
        }
        r.role = Role::Leader;
        r.leader = Some(me);
        r.leader_epoch = leader_epoch;
        r.replicas = replicas.to_vec();
        r.isr = isr.iter().copied().filter(|&id| id != me).collect();
        if partition_epoch != r.partition_epoch || new_term {
            r.proposed = None;
        }
        r.partition_epoch = partition_epoch;
        // A smaller in-sync set may let the HW move.
        self.recompute_high_watermark(&r, log.log_end_offset());
        drop(r);
        drop(log);
        self.wake();
    }

    /// Makes this replica a follower of `leader` (None: the partition has no leader
    /// now) in `leader_epoch`, or, with `assigned` false, no replica at all.
    pub fn become_follower(&self, leader_epoch: i32, leader: Option<NodeId>, assigned: bool) {
        let _log = self.log.write();
        let mut r = self.replica.lock();
        let role = if assigned {
            Role::Follower
        } else {
            Role::NotReplica
        };
        if r.role != role || r.leader_epoch != leader_epoch || r.leader != leader {
            tracing::info!(topic = %self.topic, partition = self.id, leader_epoch, ?leader, ?role, "became follower");
        }
        *r = ReplicaState {
            leader_epoch,
            role,
            ..Default::default()
        };
        r.leader = leader;
        drop(r);
        drop(_log);
        self.wake();
    }

    /// Wakes everything waiting on this partition (long polls, acks=all produces,
    /// follower fetches) to look at it again.
    pub(crate) fn wake(&self) {
        self.high_watermark.send_modify(|_| {});
        self.log_end.send_modify(|_| {});
    }

    /// Refuses a request this replica must not serve: it is not the leader, or the
    /// request names another leader epoch (when it names one).
    pub fn check_leader(&self, epoch: Option<i32>) -> Result<()> {
        let r = self.replica.lock();
        self.check_leader_locked(&r, epoch)
    }

    pub(crate) fn check_leader_locked(&self, r: &ReplicaState, epoch: Option<i32>) -> Result<()> {
        if r.role != Role::Leader {
            return Err(Error::NotLeader {
                topic: self.topic.clone(),
                partition: self.id,
                leader: r.leader,
            });
        }
        match epoch {
            Some(sent) if sent < r.leader_epoch => Err(Error::FencedLeaderEpoch {
                topic: self.topic.clone(),
                partition: self.id,
                sent,
                current: r.leader_epoch,
            }),
            Some(sent) if sent > r.leader_epoch => Err(Error::UnknownLeaderEpoch {
                topic: self.topic.clone(),
                partition: self.id,
                sent,
                current: r.leader_epoch,
            }),
            _ => Ok(()),
        }
    }

    /// For an `acks=all` produce: refuses it, before anything is written, when the
    /// in-sync set is smaller than `min.insync.replicas`.
    pub(crate) fn check_min_isr(&self, r: &ReplicaState) -> Result<()> {
        let min = self.config.read().min_insync_replicas();
        let isr = 1 + r.isr.len();
        if isr < min {
            return Err(Error::NotEnoughReplicas {
                topic: self.topic.clone(),
                partition: self.id,
                isr,
                min,
            });
        }
        Ok(())
    }

    /// The HW from the leader's LEO and its in-sync followers' (called with the log's
    /// lock held, so HWs publish in order).
    pub(crate) fn recompute_high_watermark(&self, r: &ReplicaState, leo: i64) {
        if r.role != Role::Leader {
            return;
        }
        if let Some(low) = r.followers_low() {
            self.publish_high_watermark(leo.min(low));
        }
    }

    /// Waits until the HW passes `last_offset` (an `acks=all` produce is then
    /// answered), failing if this replica stops leading in `epoch` or `deadline` passes.
    pub async fn wait_committed(
        &self,
        last_offset: i64,
        epoch: i32,
        deadline: tokio::time::Instant,
    ) -> Result<()> {
        let mut rx = self.high_watermark.subscribe();
        loop {
            rx.borrow_and_update();
            {
                // Role, epoch and HW read together: a role change takes this lock, so
                // the HW seen is this leadership's (a follower's HW, after a truncation
                // and a copy of the new leader's log, says nothing of this batch).
                let r = self.replica.lock();
                if r.role != Role::Leader || r.leader_epoch != epoch {
                    return Err(Error::NotLeader {
                        topic: self.topic.clone(),
                        partition: self.id,
                        leader: r.leader,
                    });
                }
                if self.high_watermark() > last_offset {
                    // The in-sync set may have shrunk under min.insync.replicas since
                    // the append (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND).
                    let min = self.config.read().min_insync_replicas();
                    let isr = 1 + r.isr.len();
                    if isr < min {
                        return Err(Error::NotEnoughReplicasAfterAppend {
                            topic: self.topic.clone(),
                            partition: self.id,
                            isr,
                            min,
                        });
                    }
                    return Ok(());
                }
            }
            if self.is_deleted() {
                return Err(Error::UnknownTopic(self.topic.clone()));
            }
            if self.is_closed() {
                return Err(Error::ShuttingDown);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(Error::Timeout(format!(
                    "{}-{}: not every in-sync replica had offset {last_offset} in time; it may still be committed (retry, or use acks=1)",
                    self.topic, self.id
                )));
            }
        }
    }

    /// Serves a follower's fetch on the leader: checks the epoch, finds divergence,
    /// records the follower's progress (which may move the HW), and answers with the
    /// batches from its offset, waiting up to `max_wait` for some, or for a HW it has
    /// not seen.
    pub async fn serve_follower(&self, f: &FollowerFetch) -> Result<FollowerAnswer> {
        let deadline = tokio::time::Instant::now() + f.max_wait;
        let mut end = self.log_end.subscribe();
        let mut hw = self.high_watermark.subscribe();
        let mut first = true;
        loop {
            end.borrow_and_update();
            hw.borrow_and_update();
            if self.is_deleted() {
                return Err(Error::UnknownTopic(self.topic.clone()));
            }
            {
                let log = self.log.read();
                let leo = log.log_end_offset();
                let local_start = log.log_start_offset();
                // Decided under the replica lock, answered without it: building the
                // answer takes the manifest's lock, which `state()` takes before this one.
                let early = {
                    let mut r = self.replica.lock();
                    self.check_leader_locked(&r, Some(f.leader_epoch))?;
                    if !r.replicas.contains(&f.replica) {
                        return Err(Error::InvalidRequest(format!(
                            "broker {} is not a replica of {}-{}",
                            f.replica, self.topic, self.id
                        )));
                    }
                    let diverging = diverging(&log, f, leo);
                    if diverging.is_some() || f.fetch_offset < local_start {
                        // Diverging: the follower truncates. Below this log's start
                        // (offloaded and deleted here): it starts its log there.
                        Some(diverging)
                    } else {
                        if first {
                            first = false;
                            let now = self.shared.clock.now_ms();
                            // A follower first heard from in this leadership was last
                            // caught up when it began (Kafka resets lastCaughtUpTime so),
                            // not never: behind on its first fetch, it is not out of sync.
                            let since = r.since_ms;
                            let fl = r.followers.entry(f.replica).or_insert_with(|| Follower {
                                caught_up_ms: since,
                                last_fetch_ms: since,
                                ..Default::default()
                            });
                            if f.fetch_offset >= leo {
                                fl.caught_up_ms = now;
                            } else if f.fetch_offset >= fl.leader_leo_at_last_fetch {
                                fl.caught_up_ms = fl.caught_up_ms.max(fl.last_fetch_ms);
                            }
                            fl.leo = f.fetch_offset;
                            fl.last_fetch_ms = now;
                            fl.leader_leo_at_last_fetch = leo;
                            self.recompute_high_watermark(&r, leo);
                        }
                        None
                    }
                };
                let answer = |batches: Bytes, diverging| FollowerAnswer {
                    batches,
                    high_watermark: self.high_watermark(),
                    log_start_offset: self.log_start_offset_both(local_start),
                    local_log_start_offset: local_start,
                    diverging,
                };
                if let Some(diverging) = early {
                    return Ok(answer(Bytes::new(), diverging));
                }
                if f.fetch_offset < leo {
                    let buf = log
                        .read(f.fetch_offset, f.max_bytes)
                        .map_err(|e| self.err(e))?;
                    return Ok(answer(Bytes::from(buf), None));
                }
                if self.high_watermark() > f.known_high_watermark
                    || tokio::time::Instant::now() >= deadline
                {
                    return Ok(answer(Bytes::new(), None));
                }
            }
            let woke = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    _ = end.changed() => {}
                    _ = hw.changed() => {}
                }
            })
            .await;
            if woke.is_err() {
                // One more look, which answers (empty) at the deadline.
                continue;
            }
        }
    }

    /// The first offset in either tier, given the local log's start (takes the
    /// manifest's lock: never call it holding the replica lock).
    fn log_start_offset_both(&self, local_start: i64) -> i64 {
        crate::partition::start_over_tiers(&self.tier.remote.read(), local_start)
    }

    /// On a leader: whether the in-sync set (this broker among it) is smaller than the
    /// replicas. False elsewhere, and on a single broker.
    pub fn is_under_replicated(&self) -> bool {
        let r = self.replica.lock();
        r.role == Role::Leader && r.replicas.len() > r.isr.len() + 1
    }

    /// On a leader: each follower's lag, in records behind this log's end as of its
    /// last fetch (empty elsewhere).
    pub fn follower_lags(&self) -> Vec<(NodeId, i64)> {
        let leo = self.log_end_offset();
        let r = self.replica.lock();
        if r.role != Role::Leader {
            return Vec::new();
        }
        let mut out: Vec<(NodeId, i64)> = r
            .replicas
            .iter()
            .filter_map(|id| Some((*id, (leo - r.followers.get(id)?.leo).max(0))))
            .collect();
        out.sort_unstable();
        out
    }

    /// On a leader: the in-sync set it should ask the controller for, if it differs
    /// from the current one and no change is on its way: followers silent or behind
    /// for `lag_ms` leave, `eligible` followers (not fenced: KIP-841) caught up to the
    /// HW and to this epoch's first offset join. A proposal that came to nothing
    /// (refused, or its answer lost) leaves its members counted in the HW until the
    /// partition epoch moves; then the current set is proposed again, so it does.
    pub fn isr_change(
        &self,
        me: NodeId,
        lag_ms: i64,
        eligible: &dyn Fn(NodeId) -> bool,
    ) -> Option<IsrChange> {
        let log = self.log.read();
        let mut r = self.replica.lock();
        let now = self.shared.clock.now_ms();
        // One change at a time: another only once the last has had a second to come
        // back (or failed without a word).
        if r.role != Role::Leader || (r.proposed.is_some() && now - r.proposed_ms < 1000) {
            return None;
        }
        let hw = self.high_watermark();
        let epoch_start = log
            .epochs()
            .entries()
            .iter()
            .find(|(e, _)| *e == r.leader_epoch)
            .map(|(_, start)| *start)
            .unwrap_or(log.log_end_offset());
        let keep: Vec<NodeId> = r
            .isr
            .iter()
            .copied()
            .filter(|id| {
                // Not fetched since this broker leads: it gets `lag_ms` from when the
                // leadership began (the followers map was cleared then).
                let fl = r.followers.get(id).copied().unwrap_or(Follower {
                    caught_up_ms: r.since_ms,
                    ..Default::default()
                });
                now - fl.caught_up_ms <= lag_ms
            })
            .collect();
        let join: Vec<NodeId> = r
            .replicas
            .iter()
            .copied()
            .filter(|id| *id != me && !r.isr.contains(id) && eligible(*id))
            .filter(|id| {
                r.followers
                    .get(id)
                    .is_some_and(|fl| fl.leo >= hw && fl.leo >= epoch_start)
            })
            .collect();
        let unsettled = r
            .proposed
            .as_ref()
            .is_some_and(|p| p.iter().any(|id| !r.isr.contains(id)));
        if keep.len() == r.isr.len() && join.is_empty() && !unsettled {
            return None;
        }
        let mut isr: Vec<NodeId> = std::iter::once(me).chain(keep).chain(join).collect();
        isr.sort_by_key(|id| r.replicas.iter().position(|x| x == id));
        // Until the controller's change comes back, the HW counts old and new members
        // alike, and members of earlier proposals too.
        let mut members = r.proposed.take().unwrap_or_default();
        members.extend(isr.iter().copied().filter(|&id| id != me));
        members.sort_unstable();
        members.dedup();
        r.proposed = Some(members);
        r.proposed_ms = now;
        Some(IsrChange {
            leader_epoch: r.leader_epoch,
            partition_epoch: r.partition_epoch,
            isr,
        })
    }

    /// On a follower in `leader_epoch`: appends batches its leader sent (offsets and
    /// epochs as they are) and moves the HW to the leader's, as far as this log reaches.
    pub fn append_from_leader(
        self: &std::sync::Arc<Self>,
        leader_epoch: i32,
        batches: &[u8],
        leader_high_watermark: i64,
    ) -> Result<()> {
        let mut log = self.log.write();
        self.check_follower(leader_epoch)?;
        if !batches.is_empty() {
            let info = log.append_replicated(batches).map_err(|e| self.err(e))?;
            self.producers.lock().record_all(batches);
            self.shared
                .metrics
                .replication_bytes
                .add(batches.len() as u64);
            if let Some(ms) = info.flush_after_ms {
                self.shared.flusher.schedule(self, ms);
            }
        }
        let leo = log.log_end_offset();
        self.log_end.send_replace(leo);
        self.publish_high_watermark(leader_high_watermark.min(leo));
        Ok(())
    }

    /// Refuses a fetcher's change unless this replica still follows in `leader_epoch`
    /// (a fetcher of an earlier epoch, or of a partition that now leads, must not touch
    /// the log). Called with the log's write lock held: role changes take it too.
    fn check_follower(&self, leader_epoch: i32) -> Result<()> {
        let r = self.replica.lock();
        if r.role != Role::Follower || r.leader_epoch != leader_epoch {
            return Err(Error::FencedLeaderEpoch {
                topic: self.topic.clone(),
                partition: self.id,
                sent: leader_epoch,
                current: r.leader_epoch,
            });
        }
        Ok(())
    }

    /// On a follower in `leader_epoch`: truncates for a leader that answered `(epoch,
    /// end)` as the diverging epoch, to the lower of its end and this log's end of that
    /// epoch (when the leader knows no epoch, to its end as far as this HW allows).
    /// Returns the new log end.
    pub fn truncate_diverged(&self, leader_epoch: i32, epoch: i32, end: i64) -> Result<i64> {
        let mut log = self.log.write();
        self.check_follower(leader_epoch)?;
        let leo = log.log_end_offset();
        let to = if epoch < 0 {
            end.min(self.high_watermark()).min(leo)
        } else {
            match log.epochs().end_offset_for(epoch, leo) {
                Some((e, mine)) if e == epoch => end.min(mine),
                Some((_, mine)) => end.min(mine),
                None => end.min(self.high_watermark()),
            }
        };
        log.truncate_to(to).map_err(|e| self.err(e))?;
        self.reload_producers(&log);
        let leo = log.log_end_offset();
        self.log_end.send_replace(leo);
        // Never past the end: truncation below the HW only follows an unclean change.
        self.high_watermark.send_if_modified(|hw| {
            let over = *hw > leo;
            if over {
                *hw = leo;
            }
            over
        });
        tracing::info!(topic = %self.topic, partition = self.id, epoch, leader_end = end, truncated_to = leo, "truncated a diverging log");
        Ok(leo)
    }

    /// On a follower: the local log ends below the leader's local start (the leader
    /// offloaded and deleted that part): start this log there, as KIP-405's followers
    /// do; the cold tier holds what is below.
    pub fn start_at_leader(&self, leader_epoch: i32, offset: i64) -> Result<()> {
        let mut log = self.log.write();
        self.check_follower(leader_epoch)?;
        if log.log_end_offset() >= offset {
            return Ok(());
        }
        log.reset_to(offset).map_err(|e| self.err(e))?;
        self.reload_producers(&log);
        self.log_end.send_replace(offset);
        self.high_watermark.send_replace(offset);
        Ok(())
    }

    /// On a follower: (log end offset, epoch of the last batch or -1, HW) to fetch with.
    pub fn fetch_position(&self) -> (i64, i32, i64) {
        let log = self.log.read();
        (
            log.log_end_offset(),
            log.epochs().latest_epoch().unwrap_or(-1),
            self.high_watermark(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use futures::FutureExt;

    use super::*;
    use crate::partition::{PlainRecord, Shared};
    use crate::topic_config::EffectiveConfig;

    fn shared() -> Arc<Shared> {
        shared_with(Arc::new(strata_log::SystemClock))
    }

    fn shared_with(clock: Arc<dyn strata_log::Clock>) -> Arc<Shared> {
        shared_on(clock, strata_tier::store::open("memory://").unwrap())
    }

    fn shared_on(
        clock: Arc<dyn strata_log::Clock>,
        bucket: strata_tier::store::Bucket,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            clock,
            metrics: Default::default(),
            cold: strata_tier::read::ColdReader::new(bucket.clone(), None, Default::default()),
            bucket,
            upload_slots: Arc::new(tokio::sync::Semaphore::new(1)),
            upload_backlog_limit_bytes: 0,
            flusher: Default::default(),
            clustered: true,
        })
    }

    fn replica(dir: &std::path::Path, configs: &[(&str, &str)]) -> Arc<Partition> {
        replica_on(&shared(), dir, configs)
    }

    fn replica_on(
        shared: &Arc<Shared>,
        dir: &std::path::Path,
        configs: &[(&str, &str)],
    ) -> Arc<Partition> {
        let configs: BTreeMap<String, String> = configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = EffectiveConfig::new(&BTreeMap::new(), &configs);
        Partition::open(
            shared,
            "t",
            "t-id",
            0,
            dir.to_path_buf(),
            Arc::new(parking_lot::RwLock::new(config)),
            Default::default(),
        )
        .unwrap()
    }

    fn records(tag: &str, n: usize) -> Vec<PlainRecord> {
        (0..n)
            .map(|i| PlainRecord {
                value: Some(Bytes::from(format!("{tag}-{i}"))),
                ..Default::default()
            })
            .collect()
    }

    /// `leader`'s answer to a fetch by `follower` (broker `id`) in `epoch`.
    async fn fetch(
        leader: &Partition,
        follower: &Partition,
        id: NodeId,
        epoch: i32,
    ) -> FollowerAnswer {
        let (offset, last_epoch, hw) = follower.fetch_position();
        leader
            .serve_follower(&FollowerFetch {
                replica: id,
                leader_epoch: epoch,
                fetch_offset: offset,
                last_fetched_epoch: last_epoch,
                max_bytes: 1 << 20,
                known_high_watermark: hw,
                max_wait: Duration::ZERO,
            })
            .await
            .unwrap()
    }

    /// One follower fetch from `leader` into `follower` (broker `id`) in `epoch`.
    async fn sync(leader: &Partition, follower: &Arc<Partition>, id: NodeId, epoch: i32) {
        let a = fetch(leader, follower, id, epoch).await;
        match a.diverging {
            Some((e, end)) => {
                follower.truncate_diverged(epoch, e, end).unwrap();
            }
            None => follower
                .append_from_leader(epoch, &a.batches, a.high_watermark)
                .unwrap(),
        }
    }

    fn all(p: &Partition) -> Vec<u8> {
        let log = p.log_read();
        log.read(log.log_start_offset(), 1 << 20).unwrap()
    }

    #[tokio::test]
    async fn a_diverged_follower_truncates_to_the_new_leader_s_epoch_end_and_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let a = replica(&dir.path().join("a"), &[]);
        let b = replica(&dir.path().join("b"), &[]);
        a.become_leader(1, 0, 0, &[1, 2], &[1, 2]);
        b.become_follower(0, Some(1), true);
        for i in 0..3 {
            a.append(Bytes::new(), &records(&format!("e0-{i}"), 5), None, false)
                .unwrap();
        }
        // Nothing is committed before the follower has it.
        assert_eq!(a.high_watermark(), 0);
        sync(&a, &b, 2, 0).await;
        assert_eq!(b.log_end_offset(), 15);
        assert_eq!(a.high_watermark(), 0, "its fetch said it had nothing yet");
        sync(&a, &b, 2, 0).await;
        assert_eq!(a.high_watermark(), 15, "the follower's next fetch moved it");
        assert_eq!(b.high_watermark(), 15, "and the answer told the follower");
        // Two more batches reach only the leader, which then fails: 2 leads in epoch 1.
        for i in 0..2 {
            a.append(Bytes::new(), &records(&format!("lost-{i}"), 5), None, false)
                .unwrap();
        }
        b.become_leader(2, 1, 1, &[1, 2], &[2]);
        b.append(Bytes::new(), &records("e1", 3), None, false)
            .unwrap();
        assert_eq!(b.high_watermark(), 18, "alone in sync: committed at once");
        // The old leader comes back as a follower: its last epoch (0) ends at 15 on the
        // new leader, so it truncates its two lone batches there, not to its HW.
        a.become_follower(1, Some(2), true);
        assert_eq!(a.log_end_offset(), 25);
        sync(&b, &a, 1, 1).await;
        assert_eq!(a.log_end_offset(), 15);
        sync(&b, &a, 1, 1).await;
        assert_eq!(a.log_end_offset(), 18);
        assert_eq!(all(&a), all(&b), "byte for byte the leader's log");
        // A fetch naming an old epoch is fenced; a non-leader refuses produce.
        let stale = b
            .serve_follower(&FollowerFetch {
                replica: 1,
                leader_epoch: 0,
                fetch_offset: 18,
                last_fetched_epoch: 1,
                max_bytes: 1,
                known_high_watermark: 0,
                max_wait: Duration::ZERO,
            })
            .await;
        assert!(matches!(stale, Err(Error::FencedLeaderEpoch { .. })));
        let refused = a.append(Bytes::new(), &records("x", 1), None, false);
        assert!(matches!(
            refused,
            Err(Error::NotLeader {
                leader: Some(2),
                ..
            })
        ));
    }

    #[tokio::test]
    async fn acks_all_waits_for_every_in_sync_follower_and_is_refused_below_min_insync() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = [("min.insync.replicas", "2")];
        let a = replica(&dir.path().join("a"), &cfg);
        let b = replica(&dir.path().join("b"), &cfg);
        let c = replica(&dir.path().join("c"), &cfg);
        a.become_leader(1, 0, 0, &[1, 2, 3], &[1]);
        let refused = a.append(Bytes::new(), &records("r", 1), None, true);
        assert!(matches!(
            refused,
            Err(Error::NotEnoughReplicas { isr: 1, min: 2, .. })
        ));
        assert_eq!(a.log_end_offset(), 0, "nothing written");
        a.become_leader(1, 0, 1, &[1, 2, 3], &[1, 2, 3]);
        b.become_follower(0, Some(1), true);
        c.become_follower(0, Some(1), true);
        let p = a
            .append(Bytes::new(), &records("r", 4), None, true)
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut acked = Box::pin(a.wait_committed(p.last_offset, p.leader_epoch, deadline));
        assert!((&mut acked).now_or_never().is_none());
        sync(&a, &b, 2, 0).await;
        sync(&a, &b, 2, 0).await;
        assert!(
            (&mut acked).now_or_never().is_none(),
            "one of two followers is not enough"
        );
        sync(&a, &c, 3, 0).await;
        sync(&a, &c, 3, 0).await;
        assert!(matches!((&mut acked).now_or_never(), Some(Ok(()))));
        // A follower silent past the lag leaves the in-sync set; the change is proposed
        // once, and counts the old members until the controller answers.
        sync(&a, &b, 2, 0).await;
        let all = |_| true;
        assert_eq!(a.isr_change(1, 60_000, &all), None, "everyone caught up");
        let change = a.isr_change(1, -1, &all).unwrap();
        assert_eq!(change.isr, vec![1], "everyone lags past a negative lag");
        assert_eq!(a.isr_change(1, -1, &all), None, "one change at a time");
    }

    #[tokio::test]
    async fn a_follower_behind_on_its_first_fetch_from_a_new_leader_stays_in_sync() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(strata_log::ManualClock::new(1_000_000));
        let shared = shared_with(clock.clone());
        let a = replica_on(&shared, &dir.path().join("a"), &[]);
        let b = replica_on(&shared, &dir.path().join("b"), &[]);
        // A new leader whose log is ahead of its follower's.
        a.become_leader(1, 1, 0, &[1, 2], &[1, 2]);
        b.become_follower(1, Some(1), true);
        a.append(Bytes::new(), &records("x", 5), None, false)
            .unwrap();
        clock.advance(10);
        // Only the fetch: the follower is behind when the leader hears from it.
        fetch(&a, &b, 2, 1).await;
        assert_eq!(
            a.isr_change(1, 30_000, &|_| true),
            None,
            "behind on its first fetch, well within the lag: still in sync"
        );
        clock.advance(30_001);
        assert_eq!(
            a.isr_change(1, 30_000, &|_| true).map(|c| c.isr),
            Some(vec![1]),
            "not caught up for longer than the lag since the leadership began: out"
        );
    }

    #[tokio::test]
    async fn a_fenced_follower_is_not_proposed_and_a_refused_proposal_is_settled() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(strata_log::ManualClock::new(1_000_000));
        let shared = shared_with(clock.clone());
        let a = replica_on(&shared, &dir.path().join("a"), &[]);
        let b = replica_on(&shared, &dir.path().join("b"), &[]);
        let c = replica_on(&shared, &dir.path().join("c"), &[]);
        a.become_leader(1, 0, 0, &[1, 2, 3], &[1, 2, 3]);
        b.become_follower(0, Some(1), true);
        c.become_follower(0, Some(1), true);
        a.append(Bytes::new(), &records("x", 5), None, false)
            .unwrap();
        for _ in 0..2 {
            sync(&a, &b, 2, 0).await;
            sync(&a, &c, 3, 0).await;
        }
        assert_eq!(a.high_watermark(), 5);
        // Broker 3 is fenced while caught up: the controller drops it from the set.
        a.become_leader(1, 0, 1, &[1, 2, 3], &[1, 2]);
        let not_3 = |id| id != 3;
        assert_eq!(
            a.isr_change(1, 60_000, &not_3),
            None,
            "a fenced broker is not proposed, however caught up"
        );
        // Proposed anyway (it was fenced just after): the HW waits for it...
        let change = a.isr_change(1, 60_000, &|_| true).unwrap();
        assert_eq!(change.isr, vec![1, 2, 3]);
        a.append(Bytes::new(), &records("y", 5), None, false)
            .unwrap();
        sync(&a, &b, 2, 0).await;
        sync(&a, &b, 2, 0).await;
        assert_eq!(a.high_watermark(), 5, "a proposed member holds back the HW");
        // ...until, the proposal refused, the current set is proposed again and the
        // controller's answer moves the partition epoch.
        assert_eq!(a.isr_change(1, 60_000, &not_3), None, "paced");
        clock.advance(1_000);
        let settle = a.isr_change(1, 60_000, &not_3).unwrap();
        assert_eq!(settle.isr, vec![1, 2]);
        a.become_leader(1, 0, 2, &[1, 2, 3], &[1, 2]);
        sync(&a, &b, 2, 0).await;
        assert_eq!(a.high_watermark(), 10);
    }

    /// Appends 1 KB records until `p` has `sealed` sealed segments.
    fn seal(p: &Arc<Partition>, tag: &str, sealed: usize) {
        let mut i = 0;
        while p.log_read().segments().len() <= sealed {
            let r = PlainRecord {
                value: Some(Bytes::from(format!("{tag}-{i}-{}", "x".repeat(1000)))),
                ..Default::default()
            };
            p.append(Bytes::new(), &[r], None, false).unwrap();
            i += 1;
        }
    }

    /// A batch of idempotent producer `pid` (epoch 0) with `n` records from `seq`.
    fn idempotent(pid: i64, seq: i32, tag: &str, n: usize) -> Bytes {
        let now = strata_log::Clock::now_ms(&strata_log::SystemClock);
        let mut b = strata_record::BatchBuilder::new(now, 1024);
        b.set_producer(pid, 0, seq);
        for i in 0..n {
            b.append(now, None, Some(format!("{tag}-{i}").as_bytes()), &[]);
        }
        b.finish()
    }

    #[tokio::test]
    async fn an_idempotent_batch_sent_again_is_written_once_through_failover_truncation_and_restart()
     {
        use crate::error::ErrorKind;
        let dir = tempfile::tempdir().unwrap();
        let shared = shared();
        let a = replica_on(&shared, &dir.path().join("a"), &[]);
        let b = replica_on(&shared, &dir.path().join("b"), &[]);
        a.become_leader(1, 0, 0, &[1, 2], &[1, 2]);
        b.become_follower(0, Some(1), true);
        let first = a
            .append(idempotent(7, 0, "x", 3), &[], None, false)
            .unwrap();
        // Sent again (its answer lost): the same offsets, nothing written.
        let again = a
            .append(idempotent(7, 0, "x", 3), &[], None, false)
            .unwrap();
        assert_eq!((again.base_offset, again.last_offset), (0, 2));
        assert_eq!(first.base_offset, 0);
        assert_eq!(a.log_end_offset(), 3);
        assert_eq!(shared.metrics.produce_duplicates.get(), 1);
        // A gap in the sequence is refused, and nothing is written.
        let e = a
            .append(idempotent(7, 5, "gap", 1), &[], None, false)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfOrderSequence, "{e}");
        a.append(idempotent(7, 3, "y", 2), &[], None, false)
            .unwrap();
        assert_eq!(a.log_end_offset(), 5);
        sync(&a, &b, 2, 0).await;
        // A batch only the old leader will have.
        a.append(idempotent(7, 5, "lost", 2), &[], None, false)
            .unwrap();
        // The follower takes over, knowing the producer from the batches it copied.
        b.become_leader(2, 1, 1, &[1, 2], &[2]);
        let dup = b
            .append(idempotent(7, 3, "y", 2), &[], None, false)
            .unwrap();
        assert_eq!((dup.base_offset, dup.last_offset), (3, 4));
        assert_eq!(b.log_end_offset(), 5);
        // The old leader, deposed with a batch only it has, truncates it away: the
        // producer's next batch is taken by the new leader, then copied back.
        a.become_follower(1, Some(2), true);
        b.append(idempotent(7, 5, "z", 1), &[], None, false)
            .unwrap();
        sync(&b, &a, 1, 1).await;
        sync(&b, &a, 1, 1).await;
        let check = |batch: Bytes| {
            let h = strata_record::BatchHeader::decode(&batch).unwrap();
            a.producers.lock().check(&h)
        };
        let dup = check(idempotent(7, 5, "z", 1));
        assert!(matches!(dup, Ok(crate::producers::Check::Duplicate(s)) if s.first_offset == 5));
        assert!(
            check(idempotent(7, 5, "lost", 2)).is_err(),
            "truncated away"
        );
        // Restarted (with a snapshot, and without one), it still knows the producer.
        b.housekeeping();
        assert!(
            dir.path()
                .join("b")
                .join(crate::producers::SNAPSHOT_FILE)
                .exists()
        );
        b.append(idempotent(7, 6, "w", 1), &[], None, false)
            .unwrap();
        b.close().unwrap();
        drop(b);
        for snapshot in [true, false] {
            if !snapshot {
                std::fs::remove_file(dir.path().join("b").join(crate::producers::SNAPSHOT_FILE))
                    .unwrap();
            }
            let b = replica_on(&shared, &dir.path().join("b"), &[]);
            b.become_leader(2, 2, 2, &[1, 2], &[2]);
            for (seq, tag, at) in [(5, "z", 5), (6, "w", 6)] {
                let dup = b
                    .append(idempotent(7, seq, tag, 1), &[], None, false)
                    .unwrap();
                assert_eq!(dup.base_offset, at, "snapshot: {snapshot}");
            }
            assert_eq!(b.log_end_offset(), 7);
            b.close().unwrap();
        }
    }

    /// Replicas of brokers 1 (`a`) and 2 (`b`) on one store whose writes are fenced,
    /// with 4 KiB segments: broker 1 leads in epoch 0, alone in sync, and has offloaded
    /// two segments.
    async fn offloaded_by_1() -> (
        tempfile::TempDir,
        Arc<Shared>,
        strata_tier::store::Bucket,
        Arc<Partition>,
        Arc<Partition>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut bucket = strata_tier::store::open("memory://").unwrap();
        bucket.fenced_writes = true;
        let shared = shared_on(Arc::new(strata_log::SystemClock), bucket.clone());
        let configs = [("segment.bytes", "4096")];
        let a = replica_on(&shared, &dir.path().join("a"), &configs);
        let b = replica_on(&shared, &dir.path().join("b"), &configs);
        a.become_leader(1, 0, 0, &[1, 2], &[1]);
        seal(&a, "a", 2);
        a.tier_round((-1, -1)).await;
        (dir, shared, bucket, a, b)
    }

    #[tokio::test]
    async fn a_new_leader_answers_for_the_cold_tier_only_once_it_has_loaded_the_manifest() {
        use crate::error::ErrorKind;
        use crate::partition::OffsetQuery;
        let (_dir, _, _, a, b) = offloaded_by_1().await;
        let cold_end = a.tier.remote.read().next_offset().unwrap();
        // Broker 2's log restarted where the cold tier ends (it caught up from a leader
        // whose local log starts there), and it never read the manifest.
        b.raise_start(cold_end).unwrap();
        b.become_leader(2, 1, 0, &[1, 2], &[2]);
        let e = b.list_offsets(OffsetQuery::Earliest).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        let e = b.fetch(0, 1 << 20, 1, Duration::ZERO).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        // Offsets in its local log are served meanwhile.
        b.append(Bytes::new(), &records("b", 1), None, false)
            .unwrap();
        b.fetch(cold_end, 1 << 20, 1, Duration::ZERO).await.unwrap();
        b.tier_round((-1, -1)).await;
        assert_eq!(b.list_offsets(OffsetQuery::Earliest).await.unwrap().0, 0);
        let f = b.fetch(0, 1 << 20, 1, Duration::ZERO).await.unwrap();
        assert!(!f.batches.is_empty());
    }

    #[tokio::test]
    async fn a_deposed_leader_can_neither_write_the_manifest_nor_touch_its_successor_s_objects() {
        use object_store::ObjectStoreExt;
        // Broker 1 leads in epoch 0 (alone in sync) and offloads two segments.
        let (_dir, shared, bucket, a, b) = offloaded_by_1().await;
        let first = a.tier.remote.read().clone();
        assert_eq!(first.segments.len(), 2);
        assert_eq!(first.leader_epoch, Some(0));
        // Broker 2 takes over in epoch 1 without broker 1 hearing of it: it claims the
        // manifest, then offloads segments of its own.
        b.become_leader(2, 1, 0, &[1, 2], &[2]);
        b.tier_round((-1, -1)).await;
        seal(&b, "b", 2);
        b.tier_round((-1, -1)).await;
        let theirs = b.tier.remote.read().clone();
        assert_eq!(theirs.leader_epoch, Some(1));
        assert_eq!(theirs.segments.len(), 4, "{theirs:?}");
        // The deposed leader goes on: it uploads the same offsets from a log that
        // diverged, and would expire everything. Its manifest writes are refused, and
        // it stops there.
        seal(&a, "zombie", 4);
        a.tier_round((0, 0)).await;
        assert!(shared.metrics.manifest_fenced.get() >= 1);
        let stored = strata_tier::manifest::Manifest::load(&bucket, "t", "t-id", 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, theirs, "the successor's manifest stands");
        for seg in &stored.segments {
            let body = bucket
                .store
                .get(&object_store::path::Path::from(seg.key.as_str()))
                .await
                .unwrap_or_else(|e| panic!("{} is gone: {e}", seg.key))
                .bytes()
                .await
                .unwrap();
            assert_eq!(
                crc32fast::hash(&body),
                seg.crc32,
                "{} was overwritten",
                seg.key
            );
        }
    }
}
