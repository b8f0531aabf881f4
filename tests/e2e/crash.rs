//! Crashes and damaged files: kill -9 during produce, torn and garbage tails, flipped
//! bytes in sealed segments.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_client::{Client, Producer, ProducerConfig};

use crate::helpers::*;
use crate::history::History;

fn seq_value(n: u64) -> Vec<u8> {
    format!("seq-{n:010}-{}", "x".repeat(80)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_produce_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(&data, &dir.path().join("server.log"));
    let client = Client::connect(&server.addr).await.unwrap();
    let configs = BTreeMap::from([("segment.bytes".to_string(), "65536".to_string())]);
    client.create_topic("crash", 1, 1, configs).await.unwrap();

    let acked_records = Arc::new(AtomicU64::new(0));
    let counter = acked_records.clone();
    let producer = tokio::spawn(async move {
        let config = ProducerConfig {
            batch_size: 8 * 1024,
            track_acks: true,
            ..ProducerConfig::default()
        };
        let mut p = Producer::new(client, config).await.unwrap();
        let mut n = 0u64;
        let result: Result<(), strata_client::ClientError> = async {
            loop {
                p.send("crash", Some(0), None, Some(&seq_value(n)), &[])
                    .await?;
                n += 1;
                if n.is_multiple_of(500) {
                    p.poll_linger().await?;
                    counter.store(p.stats().records_acked, Ordering::Relaxed);
                }
            }
        }
        .await;
        (result, p.acked())
    });
    wait_until(Duration::from_secs(60), "20k acknowledged records", || {
        let n = acked_records.load(Ordering::Relaxed);
        async move { n >= 20_000 }
    })
    .await;
    server.kill();
    let (result, acked) = producer.await.unwrap();
    assert!(result.is_err(), "producing to a killed broker fails");
    let last_acked = acked
        .iter()
        .map(|a| a.base_offset + a.record_count as i64 - 1)
        .max()
        .unwrap();
    assert!(last_acked >= 19_999);

    let server = ServerProcess::start(&data, &dir.path().join("server2.log"));
    let client = Client::connect(&server.addr).await.unwrap();
    let records = read_all(&client, "crash", 0, 0).await;
    assert!(
        records.len() as i64 > last_acked,
        "acknowledged offsets up to {last_acked} are served"
    );
    // The producer sent seq_value(n) as its n-th record, in order, to one partition:
    // what the broker acknowledged at offset o is seq_value(o).
    let mut history = History::new();
    for a in &acked {
        for o in a.base_offset..a.base_offset + a.record_count as i64 {
            history.ack(o, seq_value(o as u64));
        }
    }
    history.read(0, records.iter().map(|(o, _, v)| (*o, v.clone())));
    history.assert_clean("after kill -9 and a restart");
    for (i, (offset, _, value)) in records.iter().enumerate() {
        assert_eq!(
            (*offset, value),
            (i as i64, &seq_value(i as u64)),
            "unacknowledged records that survived are the ones sent, in order"
        );
    }
    // Offsets continue after the last stored record: no gap, no reuse.
    let mut p = Producer::new(
        client.clone(),
        ProducerConfig {
            track_acks: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    p.send("crash", Some(0), None, Some(b"after restart"), &[])
        .await
        .unwrap();
    p.flush().await.unwrap();
    assert_eq!(p.acked()[0].base_offset, records.len() as i64);
}

async fn produce_n(client: &Client, topic: &str, n: u64, batch_size: usize) {
    produce_to(client, topic, 0, n, batch_size).await
}

async fn produce_to(client: &Client, topic: &str, partition: u32, n: u64, batch_size: usize) {
    let mut p = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_size,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 0..n {
        p.send(topic, Some(partition), None, Some(&seq_value(i)), &[])
            .await
            .unwrap();
    }
    p.close().await.unwrap();
}

/// The segment files of a topic's partition 0, oldest first.
fn segment_files(data: &std::path::Path, topic: &str) -> Vec<std::path::PathBuf> {
    let mut logs: Vec<_> = std::fs::read_dir(data.join("topics").join(topic).join("0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

fn active_segment(data: &std::path::Path, topic: &str) -> std::path::PathBuf {
    segment_files(data, topic).pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_a_torn_batch_at_the_tail_is_cut_and_reported() {
    for damage in ["garbage", "half-batch"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut server = ServerProcess::start(&data, &dir.path().join("a.log"));
        let client = Client::connect(&server.addr).await.unwrap();
        client
            .create_topic("torn", 1, 1, Default::default())
            .await
            .unwrap();
        produce_n(&client, "torn", 1000, 4096).await;
        let before = read_all(&client, "torn", 0, 0).await;
        server.kill();

        let seg = active_segment(&data, "torn");
        let len = std::fs::metadata(&seg).unwrap().len();
        let expect_end = match damage {
            "garbage" => {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
                f.write_all(&[0x5a; 333]).unwrap();
                1000
            }
            _ => {
                // Cut the last batch in half.
                let last_batch = client_free_last_batch_len(&seg);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&seg)
                    .unwrap()
                    .set_len(len - last_batch / 2)
                    .unwrap();
                before.len() as i64 - last_batch_records(&seg, len)
            }
        };
        let server = ServerProcess::start(&data, &dir.path().join("b.log"));
        let log = server.log_text();
        assert!(
            log.contains("truncating the bad tail"),
            "{damage}: recovery is logged: {log}"
        );
        assert!(
            log.contains("torn-0"),
            "{damage}: the log names topic-partition: {log}"
        );
        let client = Client::connect(&server.addr).await.unwrap();
        let after = read_all(&client, "torn", 0, 0).await;
        assert_eq!(
            after.len() as i64,
            expect_end,
            "{damage}: only the bad tail is dropped"
        );
        assert_eq!(
            &after[..],
            &before[..after.len()],
            "{damage}: everything before it is served"
        );
    }
}

/// Length of the last batch in a segment file, found by walking the batch headers.
fn client_free_last_batch_len(seg: &std::path::Path) -> u64 {
    let data = std::fs::read(seg).unwrap();
    let mut pos = 0;
    let mut last = 0;
    while pos < data.len() {
        let len = strata_record::batch_total_len(&data[pos..])
            .unwrap()
            .unwrap();
        last = len;
        pos += len;
    }
    last as u64
}

fn last_batch_records(seg: &std::path::Path, full_len: u64) -> i64 {
    let data = std::fs::read(seg).unwrap();
    let _ = full_len;
    let mut pos = 0;
    let mut count = 0;
    while pos + strata_record::HEADER_LEN <= data.len() {
        let h = strata_record::BatchHeader::decode(&data[pos..]).unwrap();
        count = h.record_count as i64;
        pos += h.total_len();
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_sealed_segment_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = TestBroker::start(&data).await;
    let client = broker.client().await;
    let configs = BTreeMap::from([("segment.bytes".to_string(), "16384".to_string())]);
    client.create_topic("flip", 1, 1, configs).await.unwrap();
    produce_n(&client, "flip", 2000, 2048).await;
    broker.stop().await;

    let logs = segment_files(&data, "flip");
    assert!(logs.len() > 3, "small segments rolled");
    let second = &logs[1];
    let second_base = segment_base(second);
    let mut bytes = std::fs::read(second).unwrap();
    // Flip a byte in the first batch's records (past the 61-byte header).
    bytes[100] ^= 0x40;
    std::fs::write(second, &bytes).unwrap();

    let broker = TestBroker::start(&data).await;
    let client = broker.client().await;
    let err = client
        .fetch("flip", 0, second_base, 1 << 20, 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::DataLoss), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("flip-0")
            && msg.contains(&format!("offset {second_base}"))
            && msg.contains("CRC"),
        "{msg}"
    );
    // The segment before it and the one after it still serve.
    let first = read_all_until(&client, "flip", 0, second_base).await;
    assert_eq!(first.len() as i64, second_base);
    let third_base = segment_base(&logs[2]);
    let rest = read_all(&client, "flip", 0, third_base).await;
    assert_eq!(rest.first().unwrap().0, third_base);
    assert_eq!(rest.last().unwrap().0, 1999);
    broker.stop().await;
}

async fn read_all_until(client: &Client, topic: &str, partition: u32, end: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < end {
        let r = client
            .fetch(topic, partition, at, 4096, 1, Duration::ZERO)
            .await
            .unwrap();
        for b in strata_record::BatchIter::new(&r.batches) {
            for rec in b.unwrap().records() {
                let rec = rec.unwrap();
                if rec.offset >= at && rec.offset < end {
                    out.push(rec.offset);
                }
            }
        }
        at = r.next_offset;
    }
    out
}

/// The base offset in a segment file's name.
fn segment_base(path: &std::path::Path) -> i64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Fails the test if `f` has not finished in 30 s: a guard that turns a hang into a
/// failure (the defect this file tests for), not a timing assertion.
async fn within_30s<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer: the broker hangs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_batch_length_in_a_sealed_segment_is_data_loss_and_the_broker_keeps_serving() {
    for keep_indexes in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = ServerProcess::start(&data, &dir.path().join("a.log"));
        let client = Client::connect(&server.addr).await.unwrap();
        // Segments smaller than the 4 KiB index interval hold no index entry, so both
        // the start-up walk over a sealed segment and a fetch's skip to its offset step
        // over the damaged batch.
        let configs = BTreeMap::from([
            ("segment.bytes".to_string(), "4000".to_string()),
            ("remote.storage.enable".to_string(), "false".to_string()),
        ]);
        client.create_topic("neg", 2, 1, configs).await.unwrap();
        produce_to(&client, "neg", 0, 2000, 1024).await;
        produce_to(&client, "neg", 1, 500, 1024).await;
        drop(server);

        let logs = segment_files(&data, "neg");
        assert!(logs.len() > 3, "small segments rolled");
        let sealed = &logs[1];
        let mut bytes = std::fs::read(sealed).unwrap();
        let first = strata_record::batch_total_len(&bytes).unwrap().unwrap();
        let h = strata_record::BatchHeader::decode(&bytes).unwrap();
        let bad = h.next_offset();
        bytes[first + 8..first + 12].copy_from_slice(&(-12i32).to_be_bytes());
        std::fs::write(sealed, &bytes).unwrap();
        if !keep_indexes {
            for ext in ["index", "timeindex"] {
                std::fs::remove_file(sealed.with_extension(ext)).unwrap();
            }
        }

        // Start-up finishes (ServerProcess::start fails after 60 s without it).
        let server = ServerProcess::start(&data, &dir.path().join("b.log"));
        let client = Client::connect(&server.addr).await.unwrap();
        let names = within_30s("topic list", topic_names(&client)).await;
        assert!(names.contains(&"neg".to_string()), "{names:?}");
        // The damaged batch and the rest of its segment (nothing can find where the
        // batches after it start) are data loss, named.
        let third = segment_base(&logs[2]);
        for offset in [bad, third - 1] {
            let err = within_30s(
                "a fetch of the damaged segment",
                client.fetch("neg", 0, offset, 1 << 20, 1, Duration::ZERO),
            )
            .await
            .unwrap_err();
            assert_eq!(err.code(), Some(tonic::Code::DataLoss), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("neg-0")
                    && msg.contains(&format!("offset {offset}"))
                    && msg.contains("batch_length -12"),
                "the error names topic, partition and offset: {msg}"
            );
        }
        // The broker still answers, the partition's other segments serve, and so does
        // the other partition, in full.
        let rest = within_30s(
            "a fetch past the damage",
            read_all(&client, "neg", 0, third),
        )
        .await;
        assert_eq!((rest[0].0, rest.last().unwrap().0), (third, 1999));
        let other = within_30s("the other partition", read_all(&client, "neg", 1, 0)).await;
        let mut history = History::new();
        for o in 0..500 {
            history.ack(o, seq_value(o as u64));
        }
        history.read(0, other.into_iter().map(|(o, _, v)| (o, v)));
        history.assert_clean("the undamaged partition");
        let again = within_30s(
            "a second fetch of the damaged batch",
            client.fetch("neg", 0, bad, 1 << 20, 1, Duration::ZERO),
        )
        .await
        .unwrap_err();
        assert_eq!(again.code(), Some(tonic::Code::DataLoss), "{again}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_scans_no_segment_and_a_crash_rescans_only_active_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let configs = BTreeMap::from([
        ("segment.bytes".to_string(), "65536".to_string()),
        ("remote.storage.enable".to_string(), "false".to_string()),
    ]);
    let broker = TestBroker::start(&data).await;
    let client = broker.client().await;
    client.create_topic("rs", 1, 1, configs).await.unwrap();
    produce_n(&client, "rs", 3000, 4096).await;
    broker.stop().await;
    assert!(
        data.join(".clean-shutdown").exists(),
        "a clean stop is recorded"
    );

    let broker = TestBroker::start(&data).await;
    assert!(
        !data.join(".clean-shutdown").exists(),
        "removed before any write"
    );
    assert_eq!(
        broker.broker.metrics().log_recovery_scanned_bytes.get(),
        0,
        "a clean start scans nothing"
    );
    let client = broker.client().await;
    let got = read_all(&client, "rs", 0, 0).await;
    assert_eq!(got.len(), 3000);
    produce_n(&client, "rs", 10, 4096).await;
    broker.stop().await;

    // kill -9: no marker, so the active segments are scanned (and only they).
    let mut server = ServerProcess::start(&data, &dir.path().join("a.log"));
    let client = Client::connect(&server.addr).await.unwrap();
    produce_n(&client, "rs", 10, 4096).await;
    server.kill();
    assert!(!data.join(".clean-shutdown").exists());
    let server = ServerProcess::start(&data, &dir.path().join("b.log"));
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("opened the partition logs"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("clean_shutdown=false"), "{line}");
    let scanned: u64 = line
        .split("scanned_bytes=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let active: u64 = ["rs", "__consumer_offsets"]
        .iter()
        .map(|t| std::fs::metadata(active_segment(&data, t)).unwrap().len())
        .sum();
    assert_eq!(
        scanned, active,
        "only the active segments are scanned: {line}"
    );
    let client = Client::connect(&server.addr).await.unwrap();
    assert_eq!(read_all(&client, "rs", 0, 0).await.len(), 3020);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_a_topic_is_rebuilt_from_the_bucket_never_restarts_it_at_offset_0() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let store = format!("file://{}", objects.display());
    let args = ["--object-store", store.as_str()];
    let configs = BTreeMap::from([("segment.bytes".to_string(), "65536".to_string())]);
    let mut a =
        ServerProcess::start_with(&dir.path().join("a"), &dir.path().join("a.log"), &args, &[]);
    let client = Client::connect(&a.addr).await.unwrap();
    client.create_topic("rebuilt", 1, 1, configs).await.unwrap();
    produce_n(&client, "rebuilt", 3000, 4096).await;
    wait_until(Duration::from_secs(60), "offload", || {
        let c = client.clone();
        async move {
            let d = c.describe_topic("rebuilt").await.unwrap();
            // Every sealed segment uploaded.
            let p = &d.partitions[0];
            p.remote_segments >= 3 && p.segments == p.remote_segments + 1
        }
    })
    .await;
    let remote_end = {
        let d = client.describe_topic("rebuilt").await.unwrap();
        d.partitions[0].high_watermark - d.partitions[0].upload_lag
    };
    assert!(remote_end > 0);
    a.kill();

    // A broker with an empty disk rebuilds the topic from the bucket and is killed right
    // after the topic's directory appears, before it is opened.
    let b = dir.path().join("b");
    let log = ServerProcess::run_until_crash(
        &b,
        &dir.path().join("b1.log"),
        &args,
        &[("FAILPOINTS", "topic-create-after-rename=return(rebuilt)")],
    );
    assert!(log.contains("failpoint topic-create-after-rename"), "{log}");
    let server = ServerProcess::start_with(&b, &dir.path().join("b2.log"), &args, &[]);
    let client = Client::connect(&server.addr).await.unwrap();
    let p = client.describe_topic("rebuilt").await.unwrap().partitions[0].clone();
    assert_eq!(p.log_start_offset, 0);
    assert_eq!(p.local_log_start_offset, remote_end, "{p:?}");
    assert_eq!(p.high_watermark, remote_end);
    // New records continue the cold tier's offsets: none is given twice.
    let mut prod = Producer::new(
        client.clone(),
        ProducerConfig {
            track_acks: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    prod.send(
        "rebuilt",
        Some(0),
        None,
        Some(&seq_value(remote_end as u64)),
        &[],
    )
    .await
    .unwrap();
    prod.flush().await.unwrap();
    assert_eq!(prod.acked()[0].base_offset, remote_end);
    let all = read_all(&client, "rebuilt", 0, 0).await;
    assert_eq!(all.len() as i64, remote_end + 1);
    let mut history = History::new();
    for o in 0..=remote_end {
        history.ack(o, seq_value(o as u64));
    }
    history.read(0, all.into_iter().map(|(o, _, v)| (o, v)));
    history.assert_clean("a topic rebuilt from the bucket across a crash");
}
