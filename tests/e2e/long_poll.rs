//! A consumer waiting at the end of a partition gets new records as they arrive.

use std::time::{Duration, Instant};

use futures::StreamExt;
use strata_client::{Producer, ProducerConfig, StartOffset, consumer};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_and_subscribe_wake_up_on_produce() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("strata_broker=trace")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .create_topic("tail", 1, 1, Default::default())
        .await
        .unwrap();
    let partition = broker.broker.partition("tail", 0).unwrap();

    // With nothing to read, the fetch waits for max_wait and returns empty.
    let t = Instant::now();
    let r = client
        .fetch("tail", 0, 0, 1 << 20, 1, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(r.batches.is_empty());
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "the fetch waited"
    );

    // A fetch parked at the end wakes up as soon as a record arrives.
    let c = client.clone();
    let fetch = tokio::spawn(async move {
        c.fetch("tail", 0, 0, 1 << 20, 1, Duration::from_secs(60))
            .await
    });
    let sub_stream = consumer::subscribe(&client, "tail", 0, StartOffset::Latest, 1 << 20)
        .await
        .unwrap();
    let mut sub_stream = Box::pin(sub_stream);
    // Both the fetch and the subscription are waiting on the partition.
    wait_until(Duration::from_secs(10), "two waiters", || {
        let n = partition.waiters();
        async move { n >= 2 }
    })
    .await;
    let produced_at = Instant::now();
    let mut p = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    eprintln!("producer");
    p.send("tail", Some(0), Some(b"k"), Some(b"hello"), &[])
        .await
        .unwrap();
    eprintln!("sent");
    p.flush().await.unwrap();
    eprintln!("flushed");

    eprintln!(
        "hw {} waiters {}",
        partition.high_watermark(),
        partition.waiters()
    );
    let r = fetch.await.unwrap().unwrap();
    assert!(
        produced_at.elapsed() < Duration::from_secs(60),
        "answered before max_wait"
    );
    let b = strata_client::consumer::Batches {
        partition: 0,
        from: 0,
        next_offset: r.next_offset,
        high_watermark: r.high_watermark,
        data: r.batches,
    };
    let values: Vec<Vec<u8>> = b
        .records()
        .map(|r| r.unwrap().value.unwrap().to_vec())
        .collect();
    assert_eq!(values, vec![b"hello".to_vec()]);

    let got = tokio::time::timeout(Duration::from_secs(30), sub_stream.next())
        .await
        .expect("subscription delivers")
        .unwrap()
        .unwrap();
    let recs: Vec<(i64, Vec<u8>)> = got
        .records()
        .map(|r| r.unwrap())
        .map(|r| (r.offset, r.value.unwrap().to_vec()))
        .collect();
    assert_eq!(recs, vec![(0, b"hello".to_vec())]);

    // The subscription keeps following: a second record arrives on the same stream.
    p.send("tail", Some(0), None, Some(b"again"), &[])
        .await
        .unwrap();
    p.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), sub_stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let recs: Vec<i64> = got.records().map(|r| r.unwrap().offset).collect();
    assert_eq!(recs, vec![1]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_consume_follows_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .create_topic("follow", 1, 1, Default::default())
        .await
        .unwrap();
    let partition = broker.broker.partition("follow", 0).unwrap();
    let addr = broker.addr.clone();
    let consume = tokio::task::spawn_blocking(move || {
        strata()
            .args(["consume", "follow", "--max-records", "2", "--broker", &addr])
            .output()
            .unwrap()
    });
    wait_until(
        Duration::from_secs(30),
        "the CLI consumer to subscribe",
        || {
            let n = partition.waiters();
            async move { n >= 1 }
        },
    )
    .await;
    let mut p = Producer::new(client, ProducerConfig::default())
        .await
        .unwrap();
    p.send("follow", None, None, Some(b"first"), &[])
        .await
        .unwrap();
    p.send("follow", None, None, Some(b"second"), &[])
        .await
        .unwrap();
    p.flush().await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), consume)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first\nsecond\n");
    broker.stop().await;
}
