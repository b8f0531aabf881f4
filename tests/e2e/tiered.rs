//! The cold tier against a real S3-compatible server: offload, reads across tiers,
//! a broker rebuilt from the bucket alone, an S3 outage, S3 answering `503 SlowDown`,
//! and no orphaned objects.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strata_broker::broker::OffsetQuery;
use strata_client::{Client, Producer, ProducerConfig, pb};

use crate::helpers::*;
use crate::history::History;
use crate::s3::{S3Op, S3Server};

const URL: &str = "s3://strata/cluster-a";

async fn broker_on(data: &std::path::Path, s3: &S3Server) -> TestBroker {
    broker_with(data, s3, |_| {}).await
}

async fn broker_with(
    data: &std::path::Path,
    s3: &S3Server,
    tweak: impl FnOnce(&mut strata_broker::BrokerConfig),
) -> TestBroker {
    let options = s3.options();
    TestBroker::start_with(data, move |c| {
        c.object_store = URL.to_string();
        c.object_store_options = options;
        c.housekeeping_interval_ms = 50;
        tweak(c);
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
    let id = client.describe_topic("cold").await.unwrap().topic_id;
    assert_eq!(id.len(), 22, "a Kafka-style topic id: {id}");
    let dir_of = format!("cluster-a/topics/cold/topic_id={id}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("{dir_of}/partition=0/")) && k.ends_with(".parquet")),
        "{keys:?}"
    );
    assert!(keys.contains(&format!("{dir_of}/partition=0/_manifest.json")));
    assert!(keys.contains(&format!("{dir_of}/_topic.json")));

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
    // Kafka's earliest-local and latest-tiered offsets (ListOffsets v8, v9); once
    // produce has stopped, the tiers stay put while retention has nothing to remove.
    let b = &broker.broker;
    let query = |q| async move { b.list_offsets("cold", 0, q).await.unwrap().0 };
    let local_start = query(OffsetQuery::EarliestLocal).await;
    assert_eq!(local_start, remote_end);
    let tiered = query(OffsetQuery::LatestTiered).await;
    assert!(
        tiered >= local_start - 1 && tiered < N as i64,
        "latest tiered {tiered}, local from {local_start}"
    );
    // The largest timestamp is the tail's (produced last): its first record.
    let (max_at, max_ts, ..) = b
        .list_offsets("cold", 0, OffsetQuery::MaxTimestamp)
        .await
        .unwrap();
    let (at_ts, ..) = b
        .list_offsets("cold", 0, OffsetQuery::Timestamp(max_ts))
        .await
        .unwrap();
    assert_eq!(max_at, at_ts);
    let (after, ..) = b
        .list_offsets("cold", 0, OffsetQuery::Timestamp(max_ts + 1))
        .await
        .unwrap();
    assert_eq!(after, -1, "no record is later than the largest timestamp");
    let text = broker.broker.metrics_text();
    for name in [
        "strata_tier_uploads_total",
        "strata_tier_remote_reads_total",
        "strata_s3_get_requests_total",
        "strata_s3_put_requests_total",
    ] {
        let v: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap();
        assert!(v > 0.0, "{name} = {v}");
    }
    broker.stop().await;

    // The bucket alone: a new broker with an empty disk lists the topic and replays it.
    let fresh = broker_on(&dir.path().join("fresh"), &s3).await;
    let client = fresh.client().await;
    let topics = topic_names(&client).await;
    assert!(topics.contains(&"cold".to_string()), "{topics:?}");
    let p = partition(&client, "cold").await;
    assert_eq!(p.log_start_offset, 0);
    assert!(p.high_watermark >= remote_end);
    let replay = read_all(&client, "cold", 0, 0).await;
    check_all(&replay, 0, p.high_watermark);

    // Deleting the topic leaves nothing behind in the bucket, once its removal (in the
    // background) is done.
    client.delete_topic("cold").await.unwrap();
    wait_until(Duration::from_secs(60), "the deletion to finish", || {
        let c = client.clone();
        async move { c.list_topics_full().await.unwrap().deleting.is_empty() }
    })
    .await;
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
    // A backlog limit of two segments: produce waits for offload while the bucket
    // works, and must not wait on it once the bucket is gone.
    let broker = broker_with(&dir.path().join("data"), &s3, |c| {
        c.upload_backlog_limit_bytes = 128 << 10;
    })
    .await;
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
    // Wait, too, for local retention to have deleted what was uploaded before the
    // outage, so the local tail read below cannot move under the read.
    wait_until(
        Duration::from_secs(60),
        "the failure to show in describe",
        || {
            let c = client.clone();
            async move {
                let p = partition(&c, "outage").await;
                !p.tier_error.is_empty() && p.local_log_start_offset == 60_000 - p.upload_lag
            }
        },
    )
    .await;
    let stalled = partition(&client, "outage").await;
    assert!(stalled.upload_lag > 30_000, "{stalled:?}");
    assert!(broker.broker.metrics().upload_failures.get() > 0);
    // No local segment that is not uploaded was deleted: the local log starts where
    // the uploaded part ends (checked above) and holds every record from there.
    let local = read_all(&client, "outage", 0, stalled.local_log_start_offset).await;
    check_all(&local, stalled.local_log_start_offset, 60_000);

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
    let mut history = History::new();
    for o in 0..60_000 {
        history.ack(o, value(o as u64));
    }
    history.read(0, all.iter().map(|(o, _, v)| (*o, v.clone())));
    history.assert_clean("across an S3 outage");
    check_all(&all, 0, 60_000);
    broker.stop().await;
}

/// Parquet checked by a reader we did not write: pyarrow, installed by the project's
/// own script on first use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_reads_the_offloaded_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3")).await;
    let broker = broker_on(&dir.path().join("data"), &s3).await;
    let client = broker.client().await;
    let configs = BTreeMap::from([("segment.bytes".to_string(), (256 << 10).to_string())]);
    client.create_topic("arrow", 1, 1, configs).await.unwrap();
    produce(&client, "arrow", 0, 30_000).await;
    // Every sealed segment uploaded (the local log keeps them all), so the bucket no
    // longer changes under the reader.
    wait_until(Duration::from_secs(60), "offload", || {
        let c = client.clone();
        async move {
            let p = partition(&c, "arrow").await;
            p.remote_segments >= 2 && p.remote_segments + 1 == p.segments
        }
    })
    .await;
    let id = client.describe_topic("arrow").await.unwrap().topic_id;
    let manifest_path = dir.path().join(format!(
        "s3/strata/cluster-a/topics/arrow/topic_id={id}/partition=0/_manifest.json"
    ));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let segs = manifest["segments"].as_array().unwrap();
    let expect_rows = segs.last().unwrap()["last_offset"].as_i64().unwrap() + 1;

    let python = tool("pyarrow-env.sh", "pyarrow");
    let script = r#"
import json, sys
import pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table().sort_by("offset")
offs = t.column("offset").to_pylist()
print(json.dumps({
    "rows": t.num_rows,
    "dense": offs == list(range(len(offs))),
    "types": {f.name: str(f.type) for f in t.schema},
    "value_7": t.column("value")[7].as_py().decode(),
    "key_7": t.column("key")[7].as_py().decode(),
    "last_value": t.column("value")[-1].as_py().decode(),
    "partition": t.column("partition")[0].as_py(),
    "topic_id": t.column("topic_id")[0].as_py(),
}))
"#;
    let topic_dir = dir.path().join("s3/strata/cluster-a/topics/arrow");
    let v: serde_json::Value = python_json(&python, script, &topic_dir, "pyarrow");
    assert_eq!(v["rows"].as_i64().unwrap(), expect_rows);
    assert_eq!(v["dense"], true);
    assert_eq!(v["types"]["offset"], "int64");
    assert_eq!(v["types"]["timestamp"], "timestamp[ms, tz=UTC]");
    assert_eq!(v["types"]["key"], "binary");
    assert_eq!(v["types"]["value"], "binary");
    assert_eq!(
        v["types"]["headers"],
        "list<item: struct<key: string not null, value: binary>>"
    );
    assert_eq!(v["value_7"], "value-00000007");
    assert_eq!(v["key_7"], "k7");
    assert_eq!(
        v["last_value"].as_str().unwrap().as_bytes(),
        value(expect_rows as u64 - 1)
    );
    assert_eq!(v["partition"], 0);
    assert_eq!(v["topic_id"], id.as_str(), "the topic id is a hive column");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_is_named_and_remote_retention_leaves_no_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3")).await;
    let broker = broker_on(&dir.path().join("data"), &s3).await;
    let client = broker.client().await;
    let configs = BTreeMap::from([
        ("segment.bytes".to_string(), (64 << 10).to_string()),
        ("local.retention.bytes".to_string(), "1024".to_string()),
    ]);
    client.create_topic("rot", 1, 1, configs).await.unwrap();
    produce(&client, "rot", 0, 20_000).await;
    // Offload done: every sealed segment uploaded and deleted locally, so that nothing
    // moves the remote tier below but the retention this test sets.
    wait_until(
        Duration::from_secs(60),
        "offload and local deletion",
        || {
            let c = client.clone();
            async move {
                let p = partition(&c, "rot").await;
                p.remote_segments >= 4 && p.segments == 1 && p.local_log_start_offset > 10_000
            }
        },
    )
    .await;
    let root = dir.path().join("s3/strata");
    let id = client.describe_topic("rot").await.unwrap().topic_id;
    let manifest = |root: &std::path::Path| -> Vec<(i64, i64, String)> {
        let path = root.join(format!(
            "cluster-a/topics/rot/topic_id={id}/partition=0/_manifest.json"
        ));
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        m["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["base_offset"].as_i64().unwrap(),
                    s["last_offset"].as_i64().unwrap(),
                    s["key"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let segs = manifest(&root);
    // Garble the footer of the second object.
    let (base, last, key) = segs[1].clone();
    let file = root.join(format!(
        "cluster-a/{}",
        key.trim_start_matches("cluster-a/")
    ));
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 40..].fill(0x5a);
    std::fs::write(&file, &bytes).unwrap();
    let e = client
        .fetch("rot", 0, base + 3, 1 << 20, 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::DataLoss), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&key) && msg.contains(&format!("{base}..={last}")),
        "{msg}"
    );
    // The segments around it still serve.
    let first = client
        .fetch("rot", 0, 0, 1 << 20, 1, Duration::ZERO)
        .await
        .unwrap();
    assert!(!first.batches.is_empty());
    let third = client
        .fetch("rot", 0, segs[2].0, 1 << 20, 1, Duration::ZERO)
        .await
        .unwrap();
    assert!(!third.batches.is_empty());

    // Remote retention by size: old objects go, and the bucket holds exactly what the
    // manifest lists.
    // retention.bytes spans both tiers: keep the local tail and about half the remote.
    let now = partition(&client, "rot").await;
    let keep = now.size_bytes + now.remote_bytes / 2;
    let set = BTreeMap::from([("retention.bytes".to_string(), keep.to_string())]);
    client.alter_configs("rot", set, vec![]).await.unwrap();
    wait_until(Duration::from_secs(60), "remote retention", || {
        let c = client.clone();
        let before = segs.len() as u32;
        async move { partition(&c, "rot").await.remote_segments < before - 1 }
    })
    .await;
    // Retention may still be mid-way (manifest first, object second, one segment at a
    // time): once it settles, the bucket holds exactly the objects the manifest lists,
    // and the partition starts where the manifest does.
    let settled = |root: &std::path::Path| {
        let mut listed: Vec<String> = manifest(root).into_iter().map(|s| s.2).collect();
        listed.sort();
        let in_bucket: Vec<String> = s3
            .keys()
            .into_iter()
            .filter(|k| k.ends_with(".parquet"))
            .collect();
        listed == in_bucket
    };
    wait_until(Duration::from_secs(30), "no orphaned objects", || {
        let ok = settled(&root);
        let first_remote = manifest(&root).first().map(|s| s.0);
        let c = client.clone();
        async move {
            let p = partition(&c, "rot").await;
            ok && p.log_start_offset == first_remote.unwrap_or(p.local_log_start_offset)
        }
    })
    .await;
    assert!(partition(&client, "rot").await.log_start_offset > 0);
    let e = client
        .fetch("rot", 0, 0, 1 << 20, 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::OutOfRange), "{e}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_object_store_stops_the_broker_at_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3")).await;
    let cases = [
        ("s3://strata/x", "aws_secret_access_key", "wrong-secret"),
        ("s3://no-such-bucket/x", "aws_region", "us-east-1"),
    ];
    for (i, (url, key, value)) in cases.into_iter().enumerate() {
        let mut options = s3.options();
        options.insert(key.to_string(), value.to_string());
        let config = strata_broker::BrokerConfig {
            data_dir: dir.path().join(format!("data{i}")),
            object_store: url.to_string(),
            object_store_options: options,
            ..Default::default()
        };
        let e =
            match strata_broker::Broker::open(config, std::sync::Arc::new(strata_log::SystemClock))
                .await
            {
                Ok(_) => panic!("{url} with {key}={value} should be refused"),
                Err(e) => e.to_string(),
            };
        assert!(
            e.contains(url) && e.contains("check the bucket exists"),
            "{e}"
        );
    }
}

/// An endpoint that takes connections and never answers (a firewall dropping packets,
/// a hung server): start-up gives up with a clear error instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresponsive_object_store_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // Bound and listening, so connections complete, but nothing ever reads them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let options = S3Server::options_for(&endpoint);
    let config = strata_broker::BrokerConfig {
        data_dir: dir.path().join("data"),
        object_store: "s3://strata/x".into(),
        object_store_options: options,
        ..Default::default()
    };
    let open = strata_broker::Broker::open(config, std::sync::Arc::new(strata_log::SystemClock));
    // A guard against the hang this test is about, far above the broker's own limit.
    let e = match tokio::time::timeout(Duration::from_secs(120), open).await {
        Err(_) => panic!("start-up hung on an unresponsive object store"),
        Ok(Ok(_)) => panic!("an unresponsive object store should be refused"),
        Ok(Err(e)) => e.to_string(),
    };
    assert!(
        e.contains("s3://strata/x") && e.contains("did not answer") && e.contains("AWS_ENDPOINT"),
        "{e}"
    );
    drop(silent);
}

/// Every record of `topic` partition 0 read from its earliest offset: (offset, value).
async fn values_from_earliest(client: &Client, topic: &str) -> Vec<(i64, Vec<u8>)> {
    let (_, recs) = read_retained(client, topic, 0).await;
    recs.into_iter().map(|(o, _, v)| (o, v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_under_a_deleted_name_never_serves_the_old_records() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3")).await;
    let data = dir.path().join("data");
    let broker = broker_on(&data, &s3).await;
    let client = broker.client().await;
    let configs = BTreeMap::from([
        ("segment.bytes".to_string(), (64 << 10).to_string()),
        ("local.retention.bytes".to_string(), "1024".to_string()),
    ]);
    // Two incarnations with the same name, sizes and offsets, told apart by value.
    let tagged = |tag: &str, i: u64| format!("{tag}-{i:08}").into_bytes();
    let mut ids = Vec::new();
    for tag in ["old", "new"] {
        client
            .create_topic("again", 1, 1, configs.clone())
            .await
            .unwrap();
        let mut p = Producer::new(
            client.clone(),
            ProducerConfig {
                batch_size: 64 * 1024,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for i in 0..20_000 {
            p.send("again", Some(0), None, Some(&tagged(tag, i)), &[])
                .await
                .unwrap();
        }
        p.close().await.unwrap();
        wait_until(Duration::from_secs(60), "offload", || {
            let c = client.clone();
            async move {
                let p = partition(&c, "again").await;
                p.remote_segments >= 3 && p.segments == 1
            }
        })
        .await;
        // Read it all, so the cache holds this incarnation's row groups and footers.
        let got = values_from_earliest(&client, "again").await;
        assert_eq!(got.len(), 20_000);
        ids.push(client.describe_topic("again").await.unwrap().topic_id);
        if tag == "old" {
            client.delete_topic("again").await.unwrap();
        }
    }
    assert_ne!(ids[0], ids[1], "each incarnation has its own id");
    let check = |got: Vec<(i64, Vec<u8>)>, when: &str| {
        let mut history = History::new();
        for o in 0..20_000 {
            history.ack(o, tagged("new", o as u64));
        }
        history.read(0, got);
        history.assert_clean(when);
    };
    check(
        values_from_earliest(&client, "again").await,
        "after re-create",
    );
    // And across a restart, with the disk cache kept.
    broker.stop().await;
    let broker = broker_on(&data, &s3).await;
    let client = broker.client().await;
    assert_eq!(
        client.describe_topic("again").await.unwrap().topic_id,
        ids[1]
    );
    check(
        values_from_earliest(&client, "again").await,
        "after a restart",
    );
    wait_until(Duration::from_secs(60), "the old objects to go", || {
        let c = client.clone();
        async move { c.list_topics_full().await.unwrap().deleting.is_empty() }
    })
    .await;
    let old: Vec<String> = s3
        .keys()
        .into_iter()
        .filter(|k| k.contains(&ids[0]))
        .collect();
    assert!(old.is_empty(), "the old incarnation's objects: {old:?}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_during_an_s3_outage_stays_deleted_and_its_objects_go_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::start(&dir.path().join("s3")).await;
    let data = dir.path().join("data");
    let broker = broker_on(&data, &s3).await;
    let client = broker.client().await;
    let configs = BTreeMap::from([("segment.bytes".to_string(), (64 << 10).to_string())]);
    // "gone" is created again after its delete, "solo" is not.
    let mut old_ids = Vec::new();
    for name in ["gone", "solo"] {
        client
            .create_topic(name, 1, 1, configs.clone())
            .await
            .unwrap();
        produce(&client, name, 0, 20_000).await;
        wait_until(Duration::from_secs(60), "offload", || {
            let c = client.clone();
            async move { partition(&c, name).await.remote_segments >= 2 }
        })
        .await;
        let id = client.describe_topic(name).await.unwrap().topic_id;
        assert!(s3.keys().iter().any(|k| k.contains(&id)));
        old_ids.push(id);
    }
    let old_id = old_ids[0].clone();

    s3.stop().await;
    for name in ["gone", "solo"] {
        tokio::time::timeout(Duration::from_secs(30), client.delete_topic(name))
            .await
            .expect("a delete answers while the object store is away")
            .unwrap();
    }
    let all = client.list_topics_full().await.unwrap();
    assert!(
        all.topics
            .iter()
            .all(|t| t.name != "gone" && t.name != "solo")
    );
    let mut deleting: Vec<_> = all
        .deleting
        .iter()
        .map(|d| (d.name.clone(), d.topic_id.clone()))
        .collect();
    deleting.sort();
    assert_eq!(
        deleting,
        vec![
            ("gone".to_string(), old_ids[0].clone()),
            ("solo".to_string(), old_ids[1].clone())
        ]
    );
    assert!(
        broker
            .broker
            .metrics_text()
            .contains("strata_topic_deletions_pending 2")
    );
    // The name is free at once: a new topic of that name, written while the old one's
    // objects still wait for removal.
    client.create_topic("gone", 1, 1, configs).await.unwrap();
    produce(&client, "gone", 0, 100).await;
    let d = client.describe_topic("gone").await.unwrap();
    assert_ne!(d.topic_id, old_id);
    assert_eq!(d.deleting.len(), 1, "describe shows the removal under way");
    let new_id = d.topic_id;
    broker.stop().await;

    s3.restart().await;
    let broker = broker_on(&data, &s3).await;
    let client = broker.client().await;
    let d = client.describe_topic("gone").await.unwrap();
    assert_eq!(
        d.topic_id, new_id,
        "the deleted incarnation does not come back"
    );
    let names = topic_names(&client).await;
    assert!(
        !names.contains(&"solo".to_string()),
        "a deleted topic stays deleted: {names:?}"
    );
    check_all(&read_all(&client, "gone", 0, 0).await, 0, 100);
    wait_until(Duration::from_secs(60), "the deletion to finish", || {
        let c = client.clone();
        async move { c.list_topics_full().await.unwrap().deleting.is_empty() }
    })
    .await;
    let keys = s3.keys();
    assert!(
        !keys.iter().any(|k| old_ids.iter().any(|id| k.contains(id))),
        "the deleted incarnations' objects are gone: {keys:?}"
    );
    broker.stop().await;

    // A broker with a new, empty disk rebuilds from the bucket only what is live.
    let fresh = broker_on(&dir.path().join("fresh"), &s3).await;
    let client = fresh.client().await;
    assert_eq!(
        client.describe_topic("gone").await.unwrap().topic_id,
        new_id
    );
    assert!(!topic_names(&client).await.contains(&"solo".to_string()));
    fresh.stop().await;
}

/// An object store client for `s3`'s bucket that retries a failed request `retries`
/// times (object_store's default backoff).
fn s3_client(s3: &S3Server, retries: usize) -> object_store::aws::AmazonS3 {
    let mut b = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(crate::s3::BUCKET)
        .with_retry(object_store::RetryConfig {
            max_retries: retries,
            ..Default::default()
        });
    for (k, v) in s3.options() {
        b = b.with_config(k.parse().unwrap(), v);
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_server_answers_503_slow_down_when_told_and_object_store_retries_it() {
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3")).await;
    let key = Path::from("x/one");

    // Without retries the client sees S3's answer itself.
    let once = s3_client(&s3, 0);
    s3.slow_down_next(1, &[S3Op::Put]);
    let e = once
        .put(&key, PutPayload::from_static(b"a"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("503") && e.contains("<Code>SlowDown</Code>"),
        "{e}"
    );
    once.put(&key, PutPayload::from_static(b"a"))
        .await
        .expect("only the next request was refused");
    assert_eq!(s3.slowed_down(), BTreeMap::from([(S3Op::Put, 1)]));

    // With object_store's retries, half of every kind refused is absorbed.
    let retrying = s3_client(&s3, 10);
    s3.slow_down(50, &S3Op::ALL);
    retrying
        .put(&key, PutPayload::from_static(b"b"))
        .await
        .unwrap();
    let got = retrying.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"b");
    let listed: Vec<_> = retrying.list(None).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    retrying.delete(&key).await.unwrap();
    assert!(s3.keys().is_empty(), "{:?}", s3.keys());
    assert_eq!(
        s3.slowed_down(),
        BTreeMap::from([
            (S3Op::List, 1),
            (S3Op::Get, 1),
            (S3Op::Put, 2),
            // object_store deletes even one object with DeleteObjects.
            (S3Op::DeleteMany, 1)
        ]),
        "each kind's first request was refused, and its retry served"
    );
}

/// About 1 KiB, unique to `i` and incompressible (xorshift64 seeded by `i`), so 12 MiB
/// segments make Parquet objects above the 8 MiB multipart part: they go up in parts.
fn bulky(i: u64) -> Vec<u8> {
    let mut v = format!("value-{i:08}-").into_bytes();
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while v.len() < 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// One consumer pass over partition 0 of `topic` from `from` to the high watermark, as
/// a consumer makes it: a fetch answered UNAVAILABLE (the cold tier's store failing) is
/// tried again from where the pass stands. Returns (offset, value) in delivery order,
/// and how many fetches were tried again.
async fn consume_retrying(client: &Client, topic: &str, from: i64) -> (Vec<(i64, Vec<u8>)>, u32) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = Vec::new();
    let mut at = from;
    let mut retried = 0;
    loop {
        let r = match client.fetch(topic, 0, at, 1 << 20, 1, Duration::ZERO).await {
            Ok(r) => r,
            Err(e) if e.code() == Some(tonic::Code::Unavailable) => {
                assert!(Instant::now() < deadline, "fetch at {at} kept failing: {e}");
                retried += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => panic!("fetch at {at}: {e:?}"),
        };
        if r.batches.is_empty() {
            assert!(
                at >= r.high_watermark,
                "empty fetch at {at} below the high watermark {}",
                r.high_watermark
            );
            return (out, retried);
        }
        out.extend(
            records_from(&r.batches, at)
                .into_iter()
                .map(|(o, _, v)| (o, v)),
        );
        at = r.next_offset;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_answering_503_slow_down_loses_and_duplicates_nothing() {
    // About 50 MiB: four sealed 12 MiB segments, each uploaded in two parts.
    const N: u64 = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3")).await;
    // Two of every three requests of each kind, from the broker's first on: its
    // start-up probe lists, puts, gets and deletes.
    s3.slow_down(66, &S3Op::ALL);
    let broker = broker_on(&dir.path().join("data"), &s3).await;
    let client = broker.client().await;
    let configs = BTreeMap::from([
        ("segment.bytes".to_string(), (12 << 20).to_string()),
        ("local.retention.bytes".to_string(), "1024".to_string()),
    ]);
    client.create_topic("slow", 1, 1, configs).await.unwrap();
    let mut p = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_size: 64 * 1024,
            track_acks: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 0..N {
        p.send("slow", Some(0), None, Some(&bulky(i)), &[])
            .await
            .unwrap();
    }
    p.flush().await.unwrap();
    // One producer, in order, to one partition: the i-th record sent went to offset i.
    let mut history = History::new();
    let mut at = 0;
    for a in p.acked() {
        assert_eq!(a.base_offset, at, "one producer, in order");
        for o in at..at + a.record_count as i64 {
            history.ack(o, bulky(o as u64));
        }
        at += a.record_count as i64;
    }
    assert_eq!(at, N as i64);
    p.close().await.unwrap();

    // Offload goes on through the 503s, and a consumer reads across both tiers.
    wait_until(
        Duration::from_secs(120),
        "offload while S3 answers 503",
        || {
            let c = client.clone();
            async move {
                let p = partition(&c, "slow").await;
                p.remote_segments >= 2 && p.local_log_start_offset > 0
            }
        },
    )
    .await;
    let gets = || s3.slowed_down().get(&S3Op::Get).copied().unwrap_or(0);
    let gets_before = gets();
    let (pass, retried) = consume_retrying(&client, "slow", 0).await;
    assert!(
        gets() > gets_before,
        "the cold tier's reads were answered 503 too: {:?}",
        s3.slowed_down()
    );
    history.read(0, pass);

    // S3 serves again: offload catches up, local retention leaves the disk the tail.
    s3.serve_all();
    wait_until(
        Duration::from_secs(120),
        "offload to catch up once S3 serves again",
        || {
            let c = client.clone();
            async move {
                let p = partition(&c, "slow").await;
                p.tier_error.is_empty()
                    && p.segments == 1
                    && p.local_log_start_offset == p.high_watermark - p.upload_lag
            }
        },
    )
    .await;
    let p = partition(&client, "slow").await;
    assert_eq!(p.log_start_offset, 0);
    assert!(p.remote_segments >= 4, "{p:?}");
    assert!(p.local_log_start_offset > (N as i64) * 3 / 4, "{p:?}");
    let all = read_all(&client, "slow", 0, 0).await;
    history.read(0, all.into_iter().map(|(o, _, v)| (o, v)));
    history.assert_clean("with S3 answering 503 SlowDown");

    let slowed = s3.slowed_down();
    for op in [
        S3Op::List,
        S3Op::Get,
        S3Op::Put,
        S3Op::DeleteMany,
        S3Op::CreateMultipart,
        S3Op::UploadPart,
        S3Op::CompleteMultipart,
    ] {
        assert!(
            slowed.contains_key(&op),
            "no {op:?} was answered 503: {slowed:?}"
        );
    }
    eprintln!(
        "503 SlowDown answered: {slowed:?}; fetches tried again: {retried}; failed uploads: {}",
        broker.broker.metrics().upload_failures.get()
    );
    broker.stop().await;
}
