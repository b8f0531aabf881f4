//! The crash matrix: the real binary killed (SIGKILL from a failpoint) at each step that
//! writes durable state, then restarted. After each: no acknowledged record lost, no
//! offset served with other bytes (the history checker), and no object orphaned in the
//! bucket (its listing proves it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_client::{Client, Producer, ProducerConfig};

use crate::helpers::*;
use crate::history::History;

const TOPIC: &str = "crashy";

fn value(n: u64) -> Vec<u8> {
    format!("crashy-{n:010}-{}", "y".repeat(60)).into_bytes()
}

/// The store of a test and the server arguments that point at it.
struct Store {
    url: String,
    root: std::path::PathBuf,
}

impl Store {
    fn new(dir: &std::path::Path) -> Self {
        let root = dir.join("objects");
        Self {
            url: format!("file://{}", root.display()),
            root,
        }
    }

    fn args(&self) -> [&str; 2] {
        ["--object-store", self.url.as_str()]
    }

    /// Every `.parquet` key under the topic incarnation's partition 0, and the keys its
    /// manifest lists.
    fn objects_and_manifest(&self, topic_id: &str) -> (Vec<String>, Vec<String>) {
        let dir = self
            .root
            .join(format!("topics/{TOPIC}/topic_id={topic_id}/partition=0"));
        let mut objects: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".parquet"))
                    .collect()
            })
            .unwrap_or_default();
        objects.sort();
        let manifest: serde_json::Value = std::fs::read(dir.join("_manifest.json"))
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(serde_json::json!({"segments": []}));
        let mut listed: Vec<String> = manifest["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let key = s["key"].as_str().unwrap();
                key.rsplit('/').next().unwrap().to_string()
            })
            .collect();
        listed.sort();
        (objects, listed)
    }

    /// Keys of the topic incarnation, whatever they are.
    fn keys_of(&self, topic_id: &str) -> Vec<String> {
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p.display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(
            &self
                .root
                .join(format!("topics/{TOPIC}/topic_id={topic_id}")),
            &mut out,
        );
        out
    }
}

/// Produces numbered records until the server goes away or `limit` are acknowledged;
/// returns what was acknowledged, as (offset, value).
async fn produce_until_crash(client: Client, limit: u64) -> Vec<(i64, Vec<u8>)> {
    produce_keyed_until_crash(client, limit, None).await
}

/// The key of record `n` on a compacted topic with `keys` keys.
fn key(n: u64, keys: u64) -> Vec<u8> {
    format!("key-{}", n % keys).into_bytes()
}

/// As [`produce_until_crash`], with record `n` under [`key`]`(n, keys)` when `keys` is
/// given.
async fn produce_keyed_until_crash(
    client: Client,
    limit: u64,
    keys: Option<u64>,
) -> Vec<(i64, Vec<u8>)> {
    let config = ProducerConfig {
        batch_size: 8 * 1024,
        track_acks: true,
        ..ProducerConfig::default()
    };
    let mut p = Producer::new(client, config).await.unwrap();
    let mut n = 0u64;
    let sent = Arc::new(AtomicU64::new(0));
    let result: Result<(), strata_client::ClientError> = async {
        while n < limit {
            let k = keys.map(|keys| key(n, keys));
            p.send(TOPIC, Some(0), k.as_deref(), Some(&value(n)), &[])
                .await?;
            n += 1;
            sent.store(n, Ordering::Relaxed);
            if n.is_multiple_of(500) {
                p.poll_linger().await?;
            }
        }
        p.flush().await?;
        Ok(())
    }
    .await;
    let _ = result;
    // One producer, in order, to one partition: the n-th record sent went to offset n.
    let mut acked = Vec::new();
    for a in p.acked() {
        for o in a.base_offset..a.base_offset + a.record_count as i64 {
            acked.push((o, value(o as u64)));
        }
    }
    acked
}

/// A temp dir, the data dir and store in it, and a server with `site` armed for the
/// test's topic.
fn start_armed(site: &str) -> (tempfile::TempDir, std::path::PathBuf, Store, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Store::new(dir.path());
    let fp = format!("{site}=return({TOPIC})");
    let server = ServerProcess::start_with(
        &data,
        &dir.path().join("a.log"),
        &store.args(),
        &[("FAILPOINTS", fp.as_str())],
    );
    (dir, data, store, server)
}

/// Kills the broker at `site` while it takes and tiers data, restarts it, and checks.
async fn crash_while_moving_data(site: &str) {
    let (dir, data, store, mut server) = start_armed(site);
    let client = Client::connect(&server.addr).await.unwrap();
    // Small segments; local retention keeps only what is not uploaded; total retention
    // about ten segments, so remote retention deletes too.
    let configs = BTreeMap::from([
        ("segment.bytes".to_string(), "65536".to_string()),
        ("local.retention.bytes".to_string(), "1".to_string()),
        ("retention.bytes".to_string(), "700000".to_string()),
    ]);
    client.create_topic(TOPIC, 1, 1, configs).await.unwrap();
    let topic_id = client.describe_topic(TOPIC).await.unwrap().topic_id;
    let acked = produce_until_crash(client, 200_000).await;
    server.wait_for_crash().await;
    assert!(
        server.log_text().contains(&format!("failpoint {site}")),
        "{site}: the failpoint fired"
    );

    let server = ServerProcess::start_with(&data, &dir.path().join("b.log"), &store.args(), &[]);
    let client = Client::connect(&server.addr).await.unwrap();
    // Settled: every sealed segment offloaded and gone from the disk.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let d = client.describe_topic(TOPIC).await.unwrap();
        let p = &d.partitions[0];
        // All sealed segments are offloaded and left the disk, or everything is
        // offloaded (the active segment is empty: the crash came right after a roll,
        // and local retention keeps the last sealed segment).
        if p.tier_error.is_empty() && (p.segments == 1 || p.upload_lag == 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{site}: offload did not settle: {p:?}\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (start, records) = read_retained(&client, TOPIC, 0).await;
    let mut history = History::new();
    for (o, v) in &acked {
        history.ack(*o, v.clone());
    }
    history.read(start, records.into_iter().map(|(o, _, v)| (o, v)));
    history.assert_clean(site);
    // Remote retention may still be between a manifest save and its delete: what is
    // checked is that the bucket comes to hold exactly what the manifest lists.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (objects, listed) = store.objects_and_manifest(&topic_id);
        if objects == listed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{site}: objects no manifest lists (orphans): {:?}",
            objects
                .iter()
                .filter(|o| !listed.contains(o))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The partition goes on taking records where it left off.
    let end = client.describe_topic(TOPIC).await.unwrap().partitions[0].high_watermark;
    let more = produce_until_crash(client.clone(), 10).await;
    assert_eq!(more.first().map(|a| a.0), Some(end), "{site}");
}

/// Kills the broker at `site` while it compacts a topic, restarts it, and checks that
/// every key's latest record is there at its offset and nothing else changed.
async fn crash_while_compacting(site: &str) {
    const KEYS: u64 = 50;
    let (dir, data, store, mut server) = start_armed(site);
    let client = Client::connect(&server.addr).await.unwrap();
    let configs = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), "65536".to_string()),
        ("min.cleanable.dirty.ratio".to_string(), "0.1".to_string()),
    ]);
    client.create_topic(TOPIC, 1, 1, configs).await.unwrap();
    let acked = produce_keyed_until_crash(client, 400_000, Some(KEYS)).await;
    server.wait_for_crash().await;
    assert!(
        server.log_text().contains(&format!("failpoint {site}")),
        "{site}: the failpoint fired"
    );

    let server = ServerProcess::start_with(&data, &dir.path().join("b.log"), &store.args(), &[]);
    let client = Client::connect(&server.addr).await.unwrap();
    // Both sites crash after the swap was committed: start-up finishes it.
    assert!(
        server
            .log_text()
            .contains("finishing a compaction swap a crash cut short"),
        "{site}: start-up finished the swap: {}",
        server.log_text()
    );
    let hw = client.describe_topic(TOPIC).await.unwrap().partitions[0].high_watermark;
    let last_acked = acked.last().map_or(-1, |a| a.0);
    assert!(
        last_acked < hw,
        "{site}: acknowledged up to {last_acked}, log ends at {hw}"
    );
    let records = read_all(&client, TOPIC, 0, 0).await;
    // Records sent but not yet acknowledged at the crash may have reached the log; one
    // producer sent record n to offset n, so every offset below the log end is known,
    // and a later record of a key legitimately removes the earlier ones.
    let mut history = History::new();
    for o in 0..hw {
        history.ack_keyed(o, key(o as u64, KEYS), value(o as u64));
    }
    for (o, v) in &acked {
        assert_eq!(v, &value(*o as u64));
    }
    assert!(
        records.len() < acked.len(),
        "{site}: compacted before the crash"
    );
    for (o, k, _) in &records {
        assert_eq!(
            k.as_deref(),
            Some(&key(*o as u64, KEYS)[..]),
            "{site}: key at {o}"
        );
    }
    history.read(0, records.into_iter().map(|(o, _, v)| (o, v)));
    history.assert_clean(site);
    let end = client.describe_topic(TOPIC).await.unwrap().partitions[0].high_watermark;
    let more = produce_keyed_until_crash(client.clone(), 10, Some(KEYS)).await;
    assert_eq!(more.first().map(|a| a.0), Some(end), "{site}");
}

/// Kills the broker at `site` while a topic is deleted, restarts it, and checks that
/// the topic stays deleted and its objects all go.
async fn crash_while_deleting(site: &str) {
    let (dir, data, store, mut server) = start_armed(site);
    let client = Client::connect(&server.addr).await.unwrap();
    let configs = BTreeMap::from([("segment.bytes".to_string(), "65536".to_string())]);
    client.create_topic(TOPIC, 1, 1, configs).await.unwrap();
    let topic_id = client.describe_topic(TOPIC).await.unwrap().topic_id;
    produce_until_crash(client.clone(), 5000).await;
    wait_until(Duration::from_secs(60), "offload", || {
        let c = client.clone();
        async move { c.describe_topic(TOPIC).await.unwrap().partitions[0].remote_segments >= 2 }
    })
    .await;
    // The delete is answered or the connection drops, depending on the step.
    let _ = client.delete_topic(TOPIC).await;
    server.wait_for_crash().await;

    let server = ServerProcess::start_with(&data, &dir.path().join("b.log"), &store.args(), &[]);
    let client = Client::connect(&server.addr).await.unwrap();
    assert!(
        !topic_names(&client).await.contains(&TOPIC.to_string()),
        "{site}: the deleted topic does not come back"
    );
    wait_until(Duration::from_secs(60), "the deletion to finish", || {
        let c = client.clone();
        async move { c.list_topics_full().await.unwrap().deleting.is_empty() }
    })
    .await;
    let left = store.keys_of(&topic_id);
    assert!(left.is_empty(), "{site}: orphans {left:?}");
    client
        .create_topic(TOPIC, 1, 1, Default::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_an_upload_before_its_manifest_entry() {
    crash_while_moving_data("tier-upload-before-manifest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_remote_retention_saved_the_manifest_before_the_delete() {
    crash_while_moving_data("tier-retention-before-object-delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_as_local_retention_deletes_an_uploaded_segment() {
    crash_while_moving_data("log-retention-before-delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_segment_is_sealed_before_the_next_is_created() {
    crash_while_moving_data("log-roll-after-seal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_delete_is_recorded_before_the_topic_leaves_the_disk() {
    crash_while_deleting("topic-delete-after-tombstone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_deleted_topic_is_marked_in_the_bucket() {
    crash_while_deleting("topic-delete-after-marker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_compaction_swap_is_committed() {
    crash_while_compacting("log-compact-after-commit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_halfway_through_a_compaction_swap() {
    crash_while_compacting("log-compact-mid-swap").await;
}

/// Kills the broker after the new partitions' logs exist and before the count naming
/// them is stored: the topic comes back with its old count and every acknowledged
/// record, and adding the partitions again works (over the leftover directories).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_new_partitions_exist_before_their_count_is_stored() {
    let site = "partitions-create-before-count";
    let (dir, data, store, mut server) = start_armed(site);
    let client = Client::connect(&server.addr).await.unwrap();
    client
        .create_topic(TOPIC, 1, 1, Default::default())
        .await
        .unwrap();
    let acked = produce_until_crash(client.clone(), 2000).await;
    assert_eq!(acked.len(), 2000, "no crash before the add");
    // The add is never answered: the broker dies within it.
    assert!(client.create_partitions(TOPIC, 3).await.is_err());
    server.wait_for_crash().await;
    assert!(server.log_text().contains(&format!("failpoint {site}")));

    let restart =
        |n: &str| ServerProcess::start_with(&data, &dir.path().join(n), &store.args(), &[]);
    let server = restart("b.log");
    let client = Client::connect(&server.addr).await.unwrap();
    let d = client.describe_topic(TOPIC).await.unwrap();
    assert_eq!(d.partitions.len(), 1, "the count was never stored");
    let mut history = History::new();
    for (o, v) in &acked {
        history.ack(*o, v.clone());
    }
    history.read(
        0,
        read_all(&client, TOPIC, 0, 0)
            .await
            .into_iter()
            .map(|(o, _, v)| (o, v)),
    );
    history.assert_clean("a crash while adding partitions");

    let d = client.create_partitions(TOPIC, 3).await.unwrap();
    assert_eq!(d.partitions.len(), 3);
    let mut p = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    p.send(TOPIC, Some(2), None, Some(b"on a new partition"), &[])
        .await
        .unwrap();
    p.close().await.unwrap();
    drop(server);
    let server = restart("c.log");
    let client = Client::connect(&server.addr).await.unwrap();
    let d = client.describe_topic(TOPIC).await.unwrap();
    let hws: Vec<i64> = d.partitions.iter().map(|p| p.high_watermark).collect();
    assert_eq!(hws, vec![2000, 0, 1]);
    assert_eq!(
        read_all(&client, TOPIC, 2, 0).await[0].2,
        b"on a new partition".to_vec()
    );
}
