//! The broker's side of consumer groups: it hosts the group coordinator
//! (`strata-groups`), giving it the clock, topics' partitions and the bucket, and
//! forwards group requests to it.

use std::sync::Arc;

use strata_groups::Host;
pub use strata_groups::{
    ASSIGNORS, GroupDescription, Heartbeat, HeartbeatAnswer, MemberDescription, OFFSETS_TOPIC,
    PartitionLag, ResetTo, partition_for,
};
use strata_partition::Partition;
use strata_partition::metrics::Metrics;

use crate::broker::Broker;
use crate::error::{BrokerError, Result};

impl Host for Broker {
    fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(metadata) = self.metadata.get() {
            return metadata
                .partition_count(topic)
                .ok_or_else(|| crate::error::BrokerError::UnknownTopic(topic.to_string()));
        }
        self.topic(topic).map(|t| t.partitions().len() as u32)
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        Broker::partition(self, topic, partition)
    }

    fn bucket(&self) -> &strata_tier::store::Bucket {
        &self.shared.bucket
    }

    fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    fn label(&self) -> String {
        self.config().data_dir.to_string_lossy().into_owned()
    }
}

impl Broker {
    /// Makes the coordinator hold the groups of the offsets partitions this broker
    /// leads (loading them from disk): at start-up and after roles change.
    pub(crate) fn sync_group_coordinator(self: &Arc<Self>) -> impl Future<Output = ()> + use<> {
        let b = self.clone();
        async move {
            // A load that failed is logged and tried again at the next reconcile.
            let _ = tokio::task::spawn_blocking(move || b.groups.sync_leadership(&*b)).await;
        }
    }

    pub async fn group_heartbeat(&self, hb: Heartbeat) -> Result<HeartbeatAnswer> {
        if self.classic.has_members(&hb.group) {
            return Err(BrokerError::InvalidRequest(format!(
                "group {:?} has members of Kafka's classic protocol; a group speaks one protocol at a time: use another group id",
                hb.group
            )));
        }
        self.groups.group_heartbeat(self, hb).await
    }

    /// Refused unless this broker coordinates `group` now (the leader of its offsets
    /// partition, loaded): classic group requests check here first.
    pub fn check_coordinator(&self, group: &str) -> Result<()> {
        self.groups.check_coordinator(group)
    }

    /// Kafka's classic groups (JoinGroup/SyncGroup): see `strata_groups::classic`.
    pub fn classic_groups(&self) -> &strata_groups::classic::ClassicGroups {
        &self.classic
    }

    /// Whether `group` has members of the consumer protocol (KIP-848: gRPC members and
    /// Kafka's `group.protocol=consumer`).
    pub fn has_consumer_members(&self, group: &str) -> bool {
        self.groups
            .describe_group(self, group)
            .is_ok_and(|d| !d.members.is_empty())
    }

    /// Drops members whose session timed out (housekeeping).
    pub fn expire_members(&self) {
        self.groups.expire_members(self);
        self.classic.expire();
    }

    /// Commits offsets for a group (see `Coordinator::commit_offsets`).
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<(String, u32, i64, String)>,
    ) -> Result<()> {
        self.groups
            .commit_offsets(self, group_id, member_id, member_epoch, offsets)
            .await
    }

    /// Committed offsets of a group: all of them, or those asked for (-1 where none).
    pub async fn committed_offsets(
        &self,
        group_id: &str,
        wanted: Vec<(String, u32)>,
    ) -> Result<Vec<(String, u32, i64, String)>> {
        self.groups.committed_offsets(self, group_id, wanted).await
    }

    pub fn list_groups(&self) -> Vec<(String, &'static str, usize)> {
        self.groups.list_groups(self)
    }

    pub fn describe_group(&self, group_id: &str) -> Result<GroupDescription> {
        self.groups.describe_group(self, group_id)
    }

    /// Sets a group's committed offsets for a topic; refused while it has live members.
    pub async fn reset_group_offsets(
        &self,
        group_id: &str,
        topic: &str,
        to: ResetTo,
        partitions: Vec<u32>,
    ) -> Result<Vec<(String, u32, i64, String)>> {
        self.groups
            .reset_group_offsets(self, group_id, topic, to, partitions)
            .await
    }

    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        self.groups.delete_group(self, group_id).await
    }

    /// Forgets every group's offsets for a deleted topic.
    pub(crate) fn forget_topic_offsets(&self, topic: &str) {
        self.groups.forget_topic_offsets(self, topic)
    }

    /// Copies the committed offsets to the bucket if they changed since the last copy;
    /// returns whether it wrote.
    /// A cluster keeps them replicated instead: its members share one bucket, and a
    /// broker rebuilt from scratch copies them from the other replicas.
    pub async fn snapshot_group_offsets(&self) -> Result<bool> {
        if self.config().clustered() {
            return Ok(false);
        }
        self.groups.snapshot_group_offsets(self).await
    }

    /// Fills a new offsets topic from the bucket's copy, if there is one.
    pub(crate) async fn restore_group_offsets(&self) -> Result<()> {
        self.groups.restore_group_offsets(self).await
    }
}
