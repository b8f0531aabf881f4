//! Broker counters and histograms, rendered in the Prometheus text format on `/metrics`.
//!
//! Updated once per request or batch, never per record. All names start with `strata_`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Latency bucket bounds in seconds.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| s <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

macro_rules! metrics {
    ($( $kind:ident $field:ident $name:literal $help:literal ;)*) => {
        /// Every broker metric.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( pub $field: $kind, )*
        }

        impl Metrics {
            /// Renders all metrics in the Prometheus text exposition format.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $( metrics!(@render self, out, $kind, $field, $name, $help); )*
                out
            }
        }
    };
    (@render $self:ident, $out:ident, Counter, $field:ident, $name:literal, $help:literal) => {
        let _ = writeln!($out, "# HELP {} {}\n# TYPE {} counter\n{} {}", $name, $help, $name, $name, $self.$field.get());
    };
    (@render $self:ident, $out:ident, Histogram, $field:ident, $name:literal, $help:literal) => {
        $self.$field.render(&mut $out, $name, $help);
    };
}

metrics! {
    Counter produce_requests "strata_produce_requests_total" "Produce requests handled.";
    Counter produce_errors "strata_produce_errors_total" "Produce requests refused or failed.";
    Counter produce_duplicates "strata_produce_duplicates_total" "Idempotent batches sent again after a lost answer, answered with their offsets and not written twice.";
    Counter produce_records "strata_produce_records_total" "Records appended.";
    Counter produce_bytes "strata_produce_bytes_total" "Batch bytes appended.";
    Histogram produce_latency "strata_produce_latency_seconds" "Time to validate and append one produce request.";
    Histogram produce_throttle "strata_produce_throttle_seconds" "Time produce requests waited for offload to catch up (upload backlog over upload_backlog_limit_bytes).";
    Counter fetch_requests "strata_fetch_requests_total" "Fetch requests and subscribe reads.";
    Counter fetch_errors "strata_fetch_errors_total" "Fetch requests refused or failed.";
    Counter fetch_bytes "strata_fetch_bytes_total" "Batch bytes served.";
    Histogram fetch_latency "strata_fetch_latency_seconds" "Time to serve one fetch, long-poll wait included.";
    Counter log_recovery_scanned_bytes "strata_log_recovery_scanned_bytes_total" "Bytes of segments scanned at start-up because their indexes could not be trusted (0 after a clean shutdown).";
    Counter log_recovery_truncations "strata_log_recovery_truncations_total" "Active segments whose bad tail was cut at start-up.";
    Counter log_timed_flushes "strata_log_timed_flushes_total" "fsyncs made because a partition's oldest unflushed append reached flush.ms.";
    Counter log_corruptions "strata_log_corruptions_total" "Corrupt batches detected on read.";
    Counter retention_deleted_segments "strata_retention_deleted_segments_total" "Segments deleted by retention.";
    Counter uploads "strata_tier_uploads_total" "Segments offloaded to the object store.";
    Counter upload_failures "strata_tier_upload_failures_total" "Failed offload attempts (retried with backoff).";
    Counter upload_bytes "strata_tier_upload_bytes_total" "Parquet bytes offloaded.";
    Counter upload_log_bytes "strata_tier_upload_log_bytes_total" "Bytes of local log offloaded (before encoding as Parquet).";
    Histogram upload_latency "strata_tier_upload_seconds" "Time to offload one segment.";
    Counter remote_reads "strata_tier_remote_reads_total" "Fetches served from the cold tier.";
    Counter remote_read_bytes "strata_tier_remote_read_bytes_total" "Batch bytes served from the cold tier.";
    Counter topic_deletions "strata_topic_deletions_total" "Topics deleted (their objects are removed in the background).";
    Counter remote_deleted_segments "strata_tier_remote_deleted_segments_total" "Remote segments deleted by retention.";
    Counter manifest_fenced "strata_tier_manifest_fenced_total" "Manifest writes refused because a later leader wrote the manifest (this broker was deposed).";
    Counter group_offset_snapshots "strata_group_offset_snapshots_total" "Copies of the committed group offsets written to the bucket.";
    Counter compactions "strata_log_compactions_total" "Compaction passes swapped in (cleanup.policy=compact).";
    Counter compaction_removed_records "strata_log_compaction_removed_records_total" "Records compaction removed (older values of a key, expired tombstones).";
    Counter compaction_reclaimed_bytes "strata_log_compaction_reclaimed_bytes_total" "Bytes of local log compaction gave back.";
    Counter compaction_errors "strata_log_compaction_errors_total" "Compaction passes that failed (retried at the next interval).";
    Counter replication_bytes "strata_replication_fetched_bytes_total" "Batch bytes this broker copied from leaders as a follower.";
    Counter replication_fetch_errors "strata_replication_fetch_errors_total" "Follower fetches that failed (retried).";
    Counter replication_truncations "strata_replication_truncations_total" "Follower logs truncated because they diverged from the leader's.";
    Counter isr_shrinks "strata_isr_shrinks_total" "In-sync-set shrinks this broker proposed as a leader.";
    Counter isr_expands "strata_isr_expands_total" "In-sync-set expansions this broker proposed as a leader.";
    Histogram acks_all_wait "strata_produce_acks_all_wait_seconds" "Time acks=all produces waited for the in-sync replicas.";
    Counter kafka_connections "strata_kafka_connections_total" "Connections accepted by the Kafka listener.";
    Counter kafka_requests "strata_kafka_requests_total" "Kafka protocol requests answered (produce and fetch are also counted above).";
    Counter kafka_bad_requests "strata_kafka_bad_requests_total" "Kafka connections closed for a frame that could not be answered (too large, unknown API or version, malformed).";
    Counter kafka_authentications "strata_kafka_authentications_total" "Kafka connections that authenticated with SASL.";
    Counter kafka_authentication_failures "strata_kafka_authentication_failures_total" "Kafka SASL authentications refused (wrong password, unknown user, malformed exchange).";
    Counter connections_refused "strata_connections_refused_total" "Connections closed at accept because their client address held max_connections_per_ip already (gRPC and Kafka listeners).";
    Counter quota_produce_throttled "strata_quota_produce_throttled_total" "Produce requests answered with a throttle time: their principal was over its producer_byte_rate.";
    Counter quota_fetch_throttled "strata_quota_fetch_throttled_total" "Fetch requests answered with a throttle time: their principal was over its consumer_byte_rate.";
    Counter authorization_denials "strata_authorization_denials_total" "Requests (gRPC or Kafka) refused by the ACLs: a principal without the right to a topic, group or the cluster.";
    Histogram kafka_request_latency "strata_kafka_request_latency_seconds" "Time from reading a Kafka request to its answer being ready.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.produce_records.add(5);
        m.produce_latency.observe(Duration::from_micros(300));
        m.produce_latency.observe(Duration::from_secs(20));
        let text = m.render();
        assert!(text.contains("strata_produce_records_total 5"), "{text}");
        assert!(text.contains("strata_produce_latency_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("strata_produce_latency_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("strata_produce_latency_seconds_count 2"));
    }
}
