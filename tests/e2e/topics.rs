//! Topic lifecycle: persistence, configs, retention, delete, offsets by timestamp and the
//! plain record form.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_client::{Producer, ProducerConfig, pb};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_configs_and_data_survive_a_restart_and_delete_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let configs = BTreeMap::from([("retention.ms".to_string(), "3600000".to_string())]);
    client.create_topic("keep", 4, 1, configs).await.unwrap();
    client
        .create_topic("drop", 1, 1, Default::default())
        .await
        .unwrap();
    let mut p = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    for i in 0..100u32 {
        p.send(
            "keep",
            Some(i % 4),
            None,
            Some(format!("v{i}").as_bytes()),
            &[],
        )
        .await
        .unwrap();
    }
    p.close().await.unwrap();
    broker.stop().await;

    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let d = client.describe_topic("keep").await.unwrap();
    assert_eq!(d.partitions.len(), 4);
    assert!(d.partitions.iter().all(|p| p.high_watermark == 25));
    let retention = d.configs.iter().find(|c| c.name == "retention.ms").unwrap();
    assert_eq!(
        (retention.value.as_str(), retention.is_default),
        ("3600000", false)
    );
    let recs = read_all(&client, "keep", 1, 0).await;
    let values: Vec<String> = recs
        .iter()
        .map(|r| String::from_utf8(r.2.clone()).unwrap())
        .collect();
    assert_eq!(
        values,
        (0..25)
            .map(|j| format!("v{}", j * 4 + 1))
            .collect::<Vec<_>>()
    );

    client.delete_topic("drop").await.unwrap();
    let names = topic_names(&client).await;
    assert_eq!(
        names,
        vec!["__consumer_offsets".to_string(), "keep".to_string()]
    );
    wait_until(
        Duration::from_secs(10),
        "the deleted topic's files to go",
        || {
            // Left: keep and the internal offsets topic.
            let gone = std::fs::read_dir(dir.path().join("topics"))
                .unwrap()
                .count()
                == 2;
            async move { gone }
        },
    )
    .await;
    // The name is free again, and starts from offset 0.
    client
        .create_topic("drop", 1, 1, Default::default())
        .await
        .unwrap();
    assert_eq!(
        client.describe_topic("drop").await.unwrap().partitions[0].high_watermark,
        0
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_retention_deletes_old_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(dir.path(), |c| c.housekeeping_interval_ms = 20).await;
    let client = broker.client().await;
    let configs = BTreeMap::from([("segment.bytes".to_string(), "4096".to_string())]);
    client.create_topic("ret", 1, 1, configs).await.unwrap();
    let mut p = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_size: 1024,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 0..2000u32 {
        p.send(
            "ret",
            Some(0),
            None,
            Some(format!("record-{i:06}").as_bytes()),
            &[],
        )
        .await
        .unwrap();
    }
    p.close().await.unwrap();
    let d = client.describe_topic("ret").await.unwrap();
    assert!(d.partitions[0].segments > 5);
    assert_eq!(d.partitions[0].log_start_offset, 0);

    let set = BTreeMap::from([("retention.bytes".to_string(), "8192".to_string())]);
    client.alter_configs("ret", set, vec![]).await.unwrap();
    wait_until(Duration::from_secs(90), "size retention", || {
        let c = client.clone();
        async move {
            let p = &c.describe_topic("ret").await.unwrap().partitions[0];
            p.size_bytes <= 8192 + 4096 && p.log_start_offset > 0
        }
    })
    .await;
    // Remote retention may still be trimming the cold tier's head while this reads.
    let (start, recs) = read_retained(&client, "ret", 0).await;
    assert!(start > 0);
    assert_eq!(recs.first().unwrap().0, start);
    assert_eq!(recs.last().unwrap().0, 1999, "the newest records stay");
    assert_eq!(recs.len() as i64, 2000 - start);

    // retention.ms = 0: everything is expired in both tiers, yet the active segment stays.
    let set = BTreeMap::from([("retention.ms".to_string(), "0".to_string())]);
    client.alter_configs("ret", set, vec![]).await.unwrap();
    wait_until(Duration::from_secs(90), "time retention", || {
        let c = client.clone();
        async move {
            let p = &c.describe_topic("ret").await.unwrap().partitions[0];
            p.segments == 1 && p.remote_segments == 0
        }
    })
    .await;
    let d = client.describe_topic("ret").await.unwrap();
    assert_eq!(d.partitions[0].high_watermark, 2000);
    assert!(
        !read_all(&client, "ret", 0, d.partitions[0].log_start_offset)
            .await
            .is_empty()
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_records_and_offsets_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .create_topic("plain", 1, 1, Default::default())
        .await
        .unwrap();
    let mut raw = pb::strata_client::StrataClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    let records: Vec<pb::Record> = (0..10)
        .map(|i| pb::Record {
            key: Some(format!("k{i}").into_bytes().into()),
            value: Some(format!("v{i}").into_bytes().into()),
            timestamp_ms: 1_000_000 + i * 1000,
            headers: vec![pb::Header {
                key: "h".into(),
                value: format!("{i}").into_bytes().into(),
            }],
            offset: 0,
        })
        .collect();
    let r = raw
        .produce(pb::ProduceRequest {
            topic: "plain".into(),
            records: records.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.base_offset, r.last_offset, r.record_count), (0, 9, 10));
    let f = raw
        .fetch(pb::FetchRequest {
            topic: "plain".into(),
            offset: 3,
            format: pb::Format::Records as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(f.records.len(), 7);
    for (got, want) in f.records.iter().zip(&records[3..]) {
        assert_eq!(
            (&got.key, &got.value, got.timestamp_ms, &got.headers),
            (&want.key, &want.value, want.timestamp_ms, &want.headers)
        );
    }
    assert_eq!(f.records[0].offset, 3);
    assert_eq!(f.next_offset, 10);

    let at = |ts| {
        let c = client.clone();
        async move {
            c.list_offsets("plain", 0, pb::OffsetSpec::Timestamp, ts)
                .await
                .unwrap()
                .offset
        }
    };
    assert_eq!(at(0).await, 0);
    assert_eq!(at(1_004_000).await, 4);
    assert_eq!(at(1_004_001).await, 5);
    assert_eq!(at(2_000_000).await, -1);
    let latest = client
        .list_offsets("plain", 0, pb::OffsetSpec::Latest, 0)
        .await
        .unwrap();
    assert_eq!(
        (
            latest.offset,
            latest.high_watermark,
            latest.log_start_offset
        ),
        (10, 10, 0)
    );

    // The CLI's --timestamp starts at the same place.
    let out = strata()
        .args([
            "consume",
            "plain",
            "--timestamp",
            "1004000",
            "--max-records",
            "2",
            "--broker",
            &broker.addr,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v4\nv5\n");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_ms_holds_at_its_value_not_at_the_housekeeping_tick() {
    let dir = tempfile::tempdir().unwrap();
    // Housekeeping (which also flushes) once an hour: only flush.ms's own timer can
    // fsync within this test.
    let broker = TestBroker::start_with(dir.path(), |c| {
        c.housekeeping_interval_ms = 3_600_000;
    })
    .await;
    let client = broker.client().await;
    let configs = BTreeMap::from([
        ("flush.ms".to_string(), "200".to_string()),
        ("remote.storage.enable".to_string(), "false".to_string()),
    ]);
    client.create_topic("timed", 2, 1, configs).await.unwrap();
    let flushes = || broker.broker.metrics().log_timed_flushes.get();
    for round in 1..=3u64 {
        let mut p = Producer::new(client.clone(), ProducerConfig::default())
            .await
            .unwrap();
        for partition in 0..2 {
            p.send("timed", Some(partition), None, Some(b"durable soon"), &[])
                .await
                .unwrap();
        }
        p.close().await.unwrap();
        // Both partitions went unflushed: each is fsynced by its own timer.
        wait_until(Duration::from_secs(30), "the flush.ms fsyncs", || {
            let n = flushes();
            async move { n >= round * 2 }
        })
        .await;
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_added_empty_and_the_old_ones_keep_their_data_through_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .create_topic("grow", 2, 1, Default::default())
        .await
        .unwrap();
    let mut p = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    for i in 0..20u32 {
        let v = format!("old-{i}");
        p.send("grow", Some(i % 2), None, Some(v.as_bytes()), &[])
            .await
            .unwrap();
    }
    p.flush().await.unwrap();
    // Refused, changing nothing: not larger, past the limit, the offsets topic, an
    // unknown topic.
    let before = client.describe_topic("grow").await.unwrap();
    for (topic, count, says) in [
        ("grow", 2, "must be larger"),
        ("grow", 1, "must be larger"),
        ("grow", 10_001, "at most 10000"),
        ("__consumer_offsets", 100, "is internal"),
        ("nope", 3, "unknown topic"),
    ] {
        let e = client.create_partitions(topic, count).await.unwrap_err();
        assert!(e.to_string().contains(says), "{topic} {count}: {e}");
    }
    assert_eq!(client.describe_topic("grow").await.unwrap(), before);

    // Through the CLI, as an operator would.
    let out = strata()
        .args(["topic", "alter", "grow", "--partitions", "5"])
        .args(["--broker", &broker.addr])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("has 5 partitions now"),
        "{out:?}"
    );
    let d = client.describe_topic("grow").await.unwrap();
    let hws: Vec<i64> = d.partitions.iter().map(|p| p.high_watermark).collect();
    assert_eq!(hws, vec![10, 10, 0, 0, 0]);
    for i in 0..6u32 {
        let v = format!("new-{i}");
        p.send("grow", Some(2 + i % 3), None, Some(v.as_bytes()), &[])
            .await
            .unwrap();
    }
    p.close().await.unwrap();
    broker.stop().await;

    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let d = client.describe_topic("grow").await.unwrap();
    let hws: Vec<i64> = d.partitions.iter().map(|p| p.high_watermark).collect();
    assert_eq!(hws, vec![10, 10, 2, 2, 2]);
    let values = |recs: Vec<ReadRecord>| -> Vec<String> {
        recs.into_iter()
            .map(|r| String::from_utf8(r.2).unwrap())
            .collect()
    };
    assert_eq!(
        values(read_all(&client, "grow", 1, 0).await),
        (0..10)
            .map(|j| format!("old-{}", j * 2 + 1))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        values(read_all(&client, "grow", 3, 0).await),
        vec!["new-1".to_string(), "new-4".to_string()]
    );
    broker.stop().await;
}
