//! The cold tier against a real S3-compatible server: offload, reads across tiers,
//! a broker rebuilt from the bucket alone, an S3 outage, and no orphaned objects.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_client::{Client, Producer, ProducerConfig, pb};

use crate::helpers::*;
use crate::s3::S3Server;

const URL: &str = "s3://strata/cluster-a";

async fn broker_on(data: &std::path::Path, s3: &S3Server) -> TestBroker {
    let options = s3.options();
    TestBroker::start_with(data, move |c| {
        c.object_store = URL.to_string();
        c.object_store_options = options;
        c.housekeeping_interval_ms = 50;
    })
    .await
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i:08}").into_bytes()
}

async fn produce(client: &Client, topic: &str, from: u64, to: u64) {
    let mut p = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_size: 64 * 1024,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in from..to {
        p.send(
            topic,
            Some(0),
            Some(format!("k{}", i % 100).as_bytes()),
            Some(&value(i)),
            &[],
        )
        .await
        .unwrap();
    }
    p.close().await.unwrap();
}

async fn partition(client: &Client, topic: &str) -> pb::PartitionDescription {
    client
        .describe_topic(topic)
        .await
        .unwrap()
        .partitions
        .remove(0)
}

fn check_all(records: &[ReadRecord], from: i64, to: i64) {
    assert_eq!(records.len() as i64, to - from, "every record once");
    for (i, (offset, key, v)) in records.iter().enumerate() {
        let o = from + i as i64;
        assert_eq!(*offset, o, "dense, in order");
        assert_eq!(v, &value(o as u64), "value at {o}");
        assert_eq!(
            key.as_deref(),
            Some(format!("k{}", o % 100).as_bytes()),
            "key at {o}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_moves_to_parquet_on_s3_and_replays_across_tiers() {
    const N: u64 = 500_000;
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3")).await;
    let broker = broker_on(&dir.path().join("data"), &s3).await;
    let client = broker.client().await;
    let configs = BTreeMap::from([
        ("segment.bytes".to_string(), (1 << 20).to_string()),
        ("local.retention.bytes".to_string(), (2 << 20).to_string()),
    ]);
    client.create_topic("cold", 1, 1, configs).await.unwrap();
    produce(&client, "cold", 0, N).await;

    // Offload catches up: every sealed segment is in the bucket, the disk holds the tail.
    wait_until(
        Duration::from_secs(120),
        "offload and local retention",
        || {
            let c = client.clone();
            async move {
                let p = partition(&c, "cold").await;
                p.remote_segments > 5 && p.local_log_start_offset > 0 && p.size_bytes <= 4 << 20
            }
        },
    )
    .await;
    let p = partition(&client, "cold").await;
    assert_eq!(p.log_start_offset, 0);
    assert!(
        p.local_log_start_offset > (N as i64) / 2,
        "the local log holds only the tail: {p:?}"
    );
    assert!(p.tier_error.is_empty(), "{}", p.tier_error);
    let keys = s3.keys();
    assert!(keys.iter().any(|k| k.starts_with("cluster-a/topics/cold/partition=0/") && k.ends_with(".parquet")), "{keys:?}");
    assert!(keys.contains(&"cluster-a/topics/cold/partition=0/manifest.json".to_string()));
    assert!(keys.contains(&"cluster-a/topics/cold/topic.json".to_string()));

    // A consumer from offset 0 crosses from Parquet into the local tail seamlessly.
    let all = read_all(&client, "cold", 0, 0).await;
    check_all(&all, 0, N as i64);
    // Offsets by timestamp resolve in the cold tier too.
    let ts = client
        .list_offsets("cold", 0, pb::OffsetSpec::Timestamp, 0)
        .await
        .unwrap();
    assert_eq!(ts.offset, 0);
    let remote_end = partition(&client, "cold").await.local_log_start_offset;
    broker.stop().await;

    // The bucket alone: a new broker with an empty disk lists the topic and replays it.
    let fresh = broker_on(&dir.path().join("fresh"), &s3).await;
    let client = fresh.client().await;
    let topics: Vec<String> = client
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(topics.contains(&"cold".to_string()), "{topics:?}");
    let p = partition(&client, "cold").await;
    assert_eq!(p.log_start_offset, 0);
    assert!(p.high_watermark >= remote_end);
    let replay = read_all(&client, "cold", 0, 0).await;
    check_all(&replay, 0, p.high_watermark);

    // Deleting the topic leaves nothing behind in the bucket.
    client.delete_topic("cold").await.unwrap();
    let left: Vec<String> = s3
        .keys()
        .into_iter()
        .filter(|k| k.contains("topics/cold"))
        .collect();
    assert!(left.is_empty(), "orphans: {left:?}");
    fresh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_stops_offload_not_produce_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::start(&dir.path().join("s3")).await;
    let broker = broker_on(&dir.path().join("data"), &s3).await;
    let client = broker.client().await;
    let configs = BTreeMap::from([
        ("segment.bytes".to_string(), (64 << 10).to_string()),
        ("local.retention.bytes".to_string(), "1024".to_string()),
    ]);
    client.create_topic("outage", 1, 1, configs).await.unwrap();
    produce(&client, "outage", 0, 20_000).await;
    wait_until(Duration::from_secs(60), "first offload", || {
        let c = client.clone();
        async move { partition(&c, "outage").await.upload_lag < 5_000 }
    })
    .await;

    s3.stop().await;
    // Produce keeps succeeding while the bucket is away.
    produce(&client, "outage", 20_000, 60_000).await;
    wait_until(
        Duration::from_secs(60),
        "the failure to show in describe",
        || {
            let c = client.clone();
            async move { !partition(&c, "outage").await.tier_error.is_empty() }
        },
    )
    .await;
    let stalled = partition(&client, "outage").await;
    assert!(stalled.upload_lag > 30_000, "{stalled:?}");
    assert!(broker.broker.metrics().upload_failures.get() > 0);
    // No local segment that is not uploaded was deleted.
    let local = read_all(&client, "outage", 0, stalled.local_log_start_offset).await;
    assert_eq!(local.last().unwrap().0, 59_999);
    assert!(stalled.local_log_start_offset <= 60_000 - stalled.upload_lag);

    s3.restart().await;
    wait_until(Duration::from_secs(120), "offload to catch up", || {
        let c = client.clone();
        async move {
            let p = partition(&c, "outage").await;
            p.tier_error.is_empty() && p.upload_lag < 5_000 && p.local_log_start_offset > 50_000
        }
    })
    .await;
    let all = read_all(&client, "outage", 0, 0).await;
    check_all(&all, 0, 60_000);
    broker.stop().await;
}
