//! The cold tier against a real S3-compatible server: offload, reads across tiers,
//! a broker rebuilt from the bucket alone, an S3 outage, and no orphaned objects.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_client::{Client, Producer, ProducerConfig, pb};

use crate::helpers::*;
use crate::s3::S3Server;

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
    assert!(keys.iter().any(|k| k.starts_with("cluster-a/topics/cold/partition=0/") && k.ends_with(".parquet")), "{keys:?}");
    assert!(keys.contains(&"cluster-a/topics/cold/partition=0/_manifest.json".to_string()));
    assert!(keys.contains(&"cluster-a/topics/cold/_topic.json".to_string()));

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
    let manifest_path = dir
        .path()
        .join("s3/strata/cluster-a/topics/arrow/partition=0/_manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let segs = manifest["segments"].as_array().unwrap();
    let expect_rows = segs.last().unwrap()["last_offset"].as_i64().unwrap() + 1;

    let tools = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/tools/pyarrow-env.sh"
    );
    let out = std::process::Command::new("bash")
        .arg(tools)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "installing pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python = String::from_utf8(out.stdout).unwrap().trim().to_string();
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
}))
"#;
    let topic_dir = dir.path().join("s3/strata/cluster-a/topics/arrow");
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&topic_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
    let manifest = |root: &std::path::Path| -> Vec<(i64, i64, String)> {
        let path = root.join("cluster-a/topics/rot/partition=0/_manifest.json");
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
