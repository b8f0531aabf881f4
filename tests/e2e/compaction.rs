//! Compacted topics (`cleanup.policy=compact`), the compacted offsets topic, and group
//! offsets kept through a broker rebuilt from the bucket alone.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_client::{Client, Producer, ProducerConfig, pb};

use crate::helpers::*;
use crate::history::History;

const WAIT: Duration = Duration::from_secs(60);

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Sends `n` records from offset `from` on: key `key-<i % keys>`, value `value-<i>`;
/// one producer in order to one partition, so record `i` lands at offset `i`.
async fn produce_keyed(client: &Client, topic: &str, from: u64, n: u64, keys: u64) -> History {
    let config = ProducerConfig {
        batch_size: 2048,
        track_acks: true,
        ..ProducerConfig::default()
    };
    let mut p = Producer::new(client.clone(), config).await.unwrap();
    let mut history = History::new();
    for i in from..from + n {
        let key = format!("key-{}", i % keys);
        let value = format!("value-{i}");
        p.send(
            topic,
            Some(0),
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[],
        )
        .await
        .unwrap();
    }
    p.flush().await.unwrap();
    let mut at = from as i64;
    for a in p.acked() {
        assert_eq!(a.base_offset, at, "one producer, in order");
        at += a.record_count as i64;
    }
    assert_eq!(at, (from + n) as i64);
    for i in 0..from + n {
        let key = format!("key-{}", i % keys);
        history.ack_keyed(
            i as i64,
            key.into_bytes(),
            format!("value-{i}").into_bytes(),
        );
    }
    history
}

/// `n` unkeyed records into each of `partitions` partitions (offsets to commit).
async fn fill(client: &Client, topic: &str, partitions: u32, n: u64) {
    let mut p = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    for partition in 0..partitions {
        for i in 0..n {
            p.send(
                topic,
                Some(partition),
                None,
                Some(format!("r{i}").as_bytes()),
                &[],
            )
            .await
            .unwrap();
        }
    }
    p.close().await.unwrap();
}

/// Reads the whole partition into `history` and checks it; returns the records read.
async fn read_and_check(client: &Client, topic: &str, history: &mut History, what: &str) -> usize {
    let records = read_all(client, topic, 0, 0).await;
    let n = records.len();
    history.read(0, records.into_iter().map(|(o, _, v)| (o, v)));
    history.assert_clean(what);
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_the_latest_record_of_every_key_at_its_offset_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tweak = |c: &mut strata_broker::BrokerConfig| c.housekeeping_interval_ms = 50;
    let server = TestBroker::start_with(dir.path(), tweak).await;
    let client = server.client().await;

    // What a compacted topic refuses, and changes nothing doing so.
    let both = configs(&[
        ("cleanup.policy", "compact"),
        ("remote.storage.enable", "true"),
    ]);
    let e = client.create_topic("kv", 1, 1, both).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("compacted topics stay on local disk"),
        "{e}"
    );
    assert!(!topic_names(&client).await.contains(&"kv".to_string()));
    let kv = configs(&[
        ("cleanup.policy", "compact"),
        ("segment.bytes", "4096"),
        ("min.cleanable.dirty.ratio", "0.2"),
    ]);
    client.create_topic("kv", 1, 1, kv).await.unwrap();
    let d = client.describe_topic("kv").await.unwrap();
    assert_eq!(d.partitions[0].remote_segments, 0);
    let mut p = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    p.send("kv", Some(0), None, Some(b"no key"), &[])
        .await
        .unwrap();
    let e = p.flush().await.unwrap_err();
    assert!(e.to_string().contains("every record needs a key"), "{e}");
    assert_eq!(
        client.describe_topic("kv").await.unwrap().partitions[0].high_watermark,
        0
    );

    // A compacted topic does not start offloading when it stops compacting.
    let e = client
        .alter_configs("kv", configs(&[("cleanup.policy", "delete")]), Vec::new())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("remote.storage.enable=false too"),
        "{e}"
    );

    // 4000 records over 40 keys: once compacted, about one per key below the active
    // segment.
    let mut history = produce_keyed(&client, "kv", 0, 4000, 40).await;
    let metrics = server.broker.metrics().clone();
    wait_until(WAIT, "a compaction pass", || {
        let m = metrics.clone();
        async move { m.compactions.get() >= 1 && m.compaction_removed_records.get() >= 2000 }
    })
    .await;
    // Reads run while compaction may go on: every pass must still be clean.
    let n = read_and_check(&client, "kv", &mut history, "after compaction").await;
    assert!(
        n < 2000,
        "compaction removed most records: {n} of 4000 left"
    );
    let d = client.describe_topic("kv").await.unwrap();
    assert_eq!(d.partitions[0].log_start_offset, 0, "offsets never move");
    assert_eq!(d.partitions[0].high_watermark, 4000);

    server.stop().await;
    let server = TestBroker::start_with(dir.path(), tweak).await;
    let client = server.client().await;
    read_and_check(&client, "kv", &mut history, "after a restart").await;
    // Appends go on at the same offset, and the new records are compacted in turn.
    let mut history = produce_keyed(&client, "kv", 4000, 2000, 40).await;
    let metrics = server.broker.metrics().clone();
    wait_until(WAIT, "a pass over the new records", || {
        let m = metrics.clone();
        async move { m.compactions.get() >= 1 }
    })
    .await;
    read_and_check(&client, "kv", &mut history, "after more records").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offsets_topic_is_compacted_and_keeps_every_group_s_latest_commit() {
    let dir = tempfile::tempdir().unwrap();
    let tweak = |c: &mut strata_broker::BrokerConfig| {
        c.housekeeping_interval_ms = 50;
        c.offsets_topic_segment_bytes = 4096;
        // A broker-wide retention must not reach the offsets topic.
        c.topic_defaults
            .insert("retention.bytes".into(), "1024".into());
        c.topic_defaults.insert("retention.ms".into(), "1".into());
    };
    let server = TestBroker::start_with(dir.path(), tweak).await;
    let client = server.client().await;
    client
        .create_topic("src", 2, 1, Default::default())
        .await
        .unwrap();
    fill(&client, "src", 2, 310).await;
    let entry = |p: u32, o: i64| pb::OffsetEntry {
        topic: "src".into(),
        partition: p,
        offset: o,
        metadata: String::new(),
    };
    for round in 0..300i64 {
        for g in 0..3 {
            let offsets = vec![entry(0, round + g), entry(1, round / 2 + g)];
            client
                .commit_offsets(&format!("g{g}"), "", 0, offsets)
                .await
                .unwrap();
        }
    }
    let metrics = server.broker.metrics().clone();
    wait_until(WAIT, "the offsets topic compacted", || {
        let m = metrics.clone();
        async move { m.compaction_removed_records.get() >= 1000 }
    })
    .await;
    let d = client.describe_topic("__consumer_offsets").await.unwrap();
    let policy = d
        .configs
        .iter()
        .find(|c| c.name == "cleanup.policy")
        .map(|c| c.value.clone());
    assert_eq!(policy.as_deref(), Some("compact"));
    assert!(
        d.partitions[0].size_bytes < 900 * 200,
        "{} bytes for 1800 commits",
        d.partitions[0].size_bytes
    );
    let check = |client: Client| async move {
        for g in 0..3i64 {
            let got = client
                .committed_offsets(&format!("g{g}"), Vec::new())
                .await
                .unwrap();
            let got: BTreeMap<u32, i64> = got.iter().map(|e| (e.partition, e.offset)).collect();
            assert_eq!(got, BTreeMap::from([(0, 299 + g), (1, 149 + g)]), "g{g}");
        }
    };
    check(client.clone()).await;
    let e = client
        .alter_configs(
            "__consumer_offsets",
            configs(&[("cleanup.policy", "delete")]),
            Vec::new(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is internal"), "{e}");
    server.stop().await;

    // Replayed from the compacted log at start-up.
    let server = TestBroker::start_with(dir.path(), tweak).await;
    check(server.client().await).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_survive_a_broker_rebuilt_from_the_bucket_alone() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let url = format!("file://{}", bucket.display());
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        "offsets_snapshot_interval_ms = 100\nhousekeeping_interval_ms = 100\n",
    )
    .unwrap();
    let args = [
        "--object-store",
        url.as_str(),
        "--config",
        config.to_str().unwrap(),
    ];
    let data = dir.path().join("data");
    let mut server = ServerProcess::start_with(&data, &dir.path().join("a.log"), &args, &[]);
    let client = Client::connect(&server.addr).await.unwrap();
    client
        .create_topic("kept", 2, 1, Default::default())
        .await
        .unwrap();
    fill(&client, "kept", 2, 20).await;
    let entry = |p: u32, o: i64| pb::OffsetEntry {
        topic: "kept".into(),
        partition: p,
        offset: o,
        metadata: format!("m{o}"),
    };
    client
        .commit_offsets("rebuilt", "", 0, vec![entry(0, 7), entry(1, 11)])
        .await
        .unwrap();
    let snapshot = bucket.join("groups").join("offsets.json");
    wait_until(WAIT, "the offsets copied to the bucket", || {
        let s = snapshot.clone();
        async move {
            std::fs::read_to_string(&s).is_ok_and(|t| t.contains("rebuilt") && t.contains("m11"))
        }
    })
    .await;
    // No clean shutdown: the periodic copy is what the bucket has.
    server.kill();
    std::fs::remove_dir_all(&data).unwrap();

    let server = ServerProcess::start_with(&data, &dir.path().join("b.log"), &args, &[]);
    let client = Client::connect(&server.addr).await.unwrap();
    assert!(topic_names(&client).await.contains(&"kept".to_string()));
    let got = client
        .committed_offsets("rebuilt", Vec::new())
        .await
        .unwrap();
    let got: BTreeMap<u32, (i64, String)> = got
        .into_iter()
        .map(|e| (e.partition, (e.offset, e.metadata)))
        .collect();
    assert_eq!(
        got,
        BTreeMap::from([(0, (7, "m7".to_string())), (1, (11, "m11".to_string()))])
    );
    drop(server);
}
