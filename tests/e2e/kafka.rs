//! Real Kafka clients against the Kafka listener: Debian's kcat (librdkafka 2.0.2, the
//! oldest client we promise) lists, produces with every codec and acks setting, and
//! consumes; what it writes reads back through gRPC with the same key, value, headers,
//! timestamp and offset, and the other way round; a consumer from offset 0 crosses from
//! the Parquet cold tier into the local tail without knowing.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use strata_client::{Client, Producer, ProducerConfig};

use crate::helpers::*;
use crate::s3::S3Server;

fn kcat() -> String {
    tool("kcat.sh", "kcat")
}

fn python() -> String {
    tool("kafka-python-env.sh", "the Python Kafka clients and DuckDB")
}

/// Runs `tests/e2e/clients/<script>` against `bootstrap` (off the async workers); the
/// JSON it prints. The script asserts as it goes; a failure shows its stderr.
async fn run_client(script: &str, bootstrap: &str) -> serde_json::Value {
    let path = format!(
        "{}/../../tests/e2e/clients/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut cmd = if script.ends_with(".js") {
        let mut c = Command::new("node");
        c.env("NODE_PATH", tool("kafkajs-env.sh", "KafkaJS"));
        c
    } else {
        Command::new(python())
    };
    cmd.arg(path).arg(bootstrap);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{script} printed no JSON summary ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_produces_and_consumes_in_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let v = run_client("kafkajs_client.js", &broker.kafka_addr).await;
    assert_eq!(v["read"], 40);
    assert_eq!(
        grpc_committed(&client, "kjsg").await,
        BTreeMap::from([(0, 20), (1, 20)])
    );
    // Partition 0 through gRPC: the even records, as KafkaJS sent them.
    let records = grpc_records(&client, "kjs").await;
    assert_eq!(records.len(), 20);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.key, format!("k{}", 2 * i));
        assert_eq!(r.value, format!("kafkajs-{}", 2 * i));
        assert_eq!(r.headers, vec![("h".to_string(), "js".to_string())]);
    }
    broker.stop().await;
}

/// A group's committed offsets through gRPC, by partition.
async fn grpc_committed(client: &Client, group: &str) -> BTreeMap<u32, i64> {
    // A group that has committed nothing yet has none.
    client
        .committed_offsets(group, Vec::new())
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.partition, e.offset))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_admin_every_codec_and_both_group_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let v = run_client("confluent_client.py", &broker.kafka_addr).await;
    // 5 codecs x acks 0/1/all x 20 records, every one read back by the group.
    assert_eq!(v["sent"], 300);
    let committed: BTreeMap<u32, i64> = v["committed"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, o)| (p.parse().unwrap(), o.as_i64().unwrap()))
        .collect();
    assert_eq!(committed.values().sum::<i64>(), 300);
    // The same offsets through gRPC: one set per group, whatever the protocol.
    assert_eq!(grpc_committed(&client, "cg").await, committed);
    let t = client.describe_topic("ck").await.unwrap();
    let hw: i64 = t.partitions.iter().map(|p| p.high_watermark).sum();
    assert_eq!(hw, 300);
    assert!(
        t.configs
            .iter()
            .any(|c| c.name == "retention.ms" && c.value == "172800000"),
        "the config altered through Kafka: {:?}",
        t.configs
    );
    assert!(
        client.describe_topic("ck-tmp").await.is_err(),
        "deleted through Kafka"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_and_aiokafka_produce_consume_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let v = run_client("kafka_python_client.py", &broker.kafka_addr).await;
    assert_eq!(v["aiokafka_read"], 100);
    assert_eq!(
        grpc_committed(&client, "kpg").await,
        BTreeMap::from([(0, 25), (1, 25)])
    );
    assert_eq!(
        grpc_committed(&client, "aio").await,
        BTreeMap::from([(0, 50), (1, 50)])
    );
    broker.stop().await;
}

/// Runs kcat with `args` against `broker`, `input` on its stdin; its stdout.
fn run_kcat(broker: &str, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(kcat())
        .args(["-b", broker, "-X", "socket.timeout.ms=20000"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A record as both protocols must show it.
#[derive(Debug, Clone, PartialEq)]
struct Rec {
    offset: i64,
    key: String,
    value: String,
    headers: Vec<(String, String)>,
    timestamp: i64,
}

/// Every record of partition 0 through gRPC, decoded with the record crate.
async fn grpc_records(client: &Client, topic: &str) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let f = client
            .fetch(topic, 0, next, 1 << 20, 1, Duration::ZERO)
            .await
            .unwrap();
        let batches = strata_record::compression::decompressed_batches(&f.batches).unwrap();
        for b in strata_record::BatchIter::new(&batches) {
            for r in b.unwrap().records() {
                let r = r.unwrap();
                if r.offset < next {
                    continue;
                }
                let s =
                    |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
                out.push(Rec {
                    offset: r.offset,
                    key: s(r.key),
                    value: s(r.value),
                    headers: r.headers().map(|(k, v)| (s(Some(k)), s(v))).collect(),
                    timestamp: r.timestamp,
                });
            }
        }
        next = out.last().map_or(next, |r| r.offset + 1);
        if next >= f.high_watermark {
            return out;
        }
    }
}

/// Every record of partition 0 through kcat, from `from` to the end.
fn kcat_records(broker: &str, topic: &str, from: i64) -> Vec<Rec> {
    // Fields split on a byte no record here contains.
    let out = run_kcat(
        broker,
        &[
            "-C",
            "-t",
            topic,
            "-p",
            "0",
            "-o",
            &from.to_string(),
            "-e",
            "-q",
            "-f",
            "%o\x1f%k\x1f%s\x1f%h\x1f%T\n",
        ],
        "",
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\x1f').collect();
            assert_eq!(f.len(), 5, "{l:?}");
            let headers = if f[3].is_empty() {
                Vec::new()
            } else {
                f[3].split(',')
                    .map(|h| {
                        let (k, v) = h.split_once('=').unwrap();
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            };
            Rec {
                offset: f[0].parse().unwrap(),
                key: f[1].to_string(),
                value: f[2].to_string(),
                headers,
                timestamp: f[4].parse().unwrap(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_and_consumes_and_grpc_sees_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let k = broker.kafka_addr.as_str();

    // -L: this broker, as advertised; a topic auto-created on first produce.
    let mut expected = Vec::new();
    let settings = [
        ("none", "1", "false"),
        ("gzip", "all", "false"),
        ("snappy", "all", "true"),
        ("lz4", "all", "true"),
        ("zstd", "1", "false"),
    ];
    for (codec, acks, idempotence) in settings {
        let lines: String = (0..3)
            .map(|i| format!("key-{codec}-{i}:value-{codec}-{i}\n"))
            .collect();
        run_kcat(
            k,
            &[
                "-P",
                "-t",
                "kc",
                "-p",
                "0",
                "-K:",
                "-z",
                codec,
                "-H",
                &format!("codec={codec}"),
                "-X",
                &format!("acks={acks}"),
                "-X",
                &format!("enable.idempotence={idempotence}"),
                "-X",
                "linger.ms=50",
            ],
            &lines,
        );
        for i in 0..3 {
            expected.push((
                format!("key-{codec}-{i}"),
                format!("value-{codec}-{i}"),
                vec![("codec".to_string(), codec.to_string())],
            ));
        }
    }
    // acks=0: no answer; the records become visible once appended.
    run_kcat(
        k,
        &["-P", "-t", "kc", "-p", "0", "-K:", "-X", "acks=0"],
        "key-acks0:value-acks0\n",
    );
    expected.push(("key-acks0".into(), "value-acks0".into(), vec![]));
    wait_until(Duration::from_secs(20), "the acks=0 record", || {
        let c = client.clone();
        async move {
            c.describe_topic("kc")
                .await
                .is_ok_and(|t| t.partitions[0].high_watermark == 16)
        }
    })
    .await;

    let meta: serde_json::Value =
        serde_json::from_str(&run_kcat(k, &["-L", "-J", "-t", "kc"], "")).unwrap();
    assert_eq!(meta["brokers"][0]["name"], format!("{k}"), "{meta}");
    assert_eq!(meta["topics"][0]["topic"], "kc");
    assert_eq!(meta["topics"][0]["partitions"][0]["leader"], 1);

    // gRPC reads what kcat wrote, and kcat reads it the same way.
    let via_grpc = grpc_records(&client, "kc").await;
    let got: Vec<_> = via_grpc
        .iter()
        .map(|r| (r.key.clone(), r.value.clone(), r.headers.clone()))
        .collect();
    assert_eq!(got, expected);
    assert!(
        via_grpc
            .iter()
            .enumerate()
            .all(|(i, r)| r.offset == i as i64)
    );
    assert_eq!(kcat_records(k, "kc", 0), via_grpc);

    // The other way round: a record produced through gRPC reads the same through kcat.
    let mut p = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    p.send(
        "kc",
        Some(0),
        Some(b"from-grpc"),
        Some(b"hello kafka"),
        &[("h1", Some(b"x")), ("h2", Some(b"y"))],
    )
    .await
    .unwrap();
    p.close().await.unwrap();
    let via_grpc = grpc_records(&client, "kc").await;
    let last = via_grpc.last().unwrap();
    assert_eq!((last.offset, last.key.as_str()), (16, "from-grpc"));
    assert_eq!(kcat_records(k, "kc", 16), vec![last.clone()]);

    // -G: a balanced consumer in a classic group reads everything and commits.
    let out = run_kcat(
        k,
        &[
            "-G",
            "kg",
            "-X",
            "auto.offset.reset=earliest",
            "-e",
            "-q",
            "-f",
            "%k\n",
            "kc",
        ],
        "",
    );
    assert_eq!(out.lines().count(), 17, "{out}");
    wait_until(Duration::from_secs(20), "kcat's commit", || {
        let c = client.clone();
        async move { grpc_committed(&c, "kg").await == BTreeMap::from([(0, 17)]) }
    })
    .await;

    // -Q: the offset of a timestamp.
    let ts = via_grpc[5].timestamp;
    let q = run_kcat(k, &["-Q", "-t", &format!("kc:0:{ts}")], "");
    let at = via_grpc.iter().find(|r| r.timestamp >= ts).unwrap().offset;
    assert!(q.contains(&format!("offset {at}")), "{q}");
    broker.stop().await;
}

/// A value that compresses about as badly as real payloads do.
fn value(i: usize) -> String {
    format!(
        "v-{i:06}-{:016x}",
        (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_consumes_from_offset_zero_across_the_cold_tier() {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3")).await;
    let options = s3.options();
    let broker = TestBroker::start_with(&dir.path().join("data"), move |c| {
        c.object_store = "s3://strata/kafka".to_string();
        c.object_store_options = options;
        c.housekeeping_interval_ms = 50;
    })
    .await;
    let client = broker.client().await;
    let configs = BTreeMap::from([
        ("segment.bytes".to_string(), (64 << 10).to_string()),
        ("local.retention.bytes".to_string(), "1024".to_string()),
    ]);
    client.create_topic("coldk", 1, 1, configs).await.unwrap();
    // Through Kafka, compressed: the offload decodes every codec.
    let lines: String = (0..N)
        .map(|i| format!("k{}:{}\n", i % 10, value(i)))
        .collect();
    run_kcat(
        &broker.kafka_addr,
        &[
            "-P", "-t", "coldk", "-p", "0", "-K:", "-z", "zstd", "-X", "acks=all", "-H", "src=kcat",
        ],
        &lines,
    );
    wait_until(
        Duration::from_secs(60),
        "offload and local retention",
        || {
            let c = client.clone();
            async move {
                let p = c
                    .describe_topic("coldk")
                    .await
                    .unwrap()
                    .partitions
                    .remove(0);
                p.remote_segments >= 2 && p.local_log_start_offset > 0
            }
        },
    )
    .await;
    let records = kcat_records(&broker.kafka_addr, "coldk", 0);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as i64, "dense, in order, from offset 0");
        assert_eq!(
            (r.key.clone(), r.value.clone()),
            (format!("k{}", i % 10), value(i)),
            "record {i}"
        );
    }
    assert_eq!(records.len(), N, "every record once");

    // DuckDB reads the same records straight from the bucket's Parquet.
    let script = r#"
import json, sys, duckdb
rows = duckdb.sql(f'''
  SELECT "offset", epoch_ms("timestamp") AS ts, decode(key) AS k, decode(value) AS v,
         [h.key || '=' || decode(h.value) FOR h IN headers] AS hs
  FROM read_parquet('{sys.argv[1]}/**/*.parquet', hive_partitioning = true)
  ORDER BY "offset"''').fetchall()
print(json.dumps([[o, ts, k, v, hs] for (o, ts, k, v, hs) in rows]))
"#;
    let topic_dir = dir.path().join("s3/strata/kafka/topics/coldk");
    let rows: Vec<(i64, i64, String, String, Vec<String>)> =
        python_json(&python(), script, &topic_dir, "duckdb");
    assert!(rows.len() > 1000, "only {} rows offloaded", rows.len());
    for (o, ts, k, v, hs) in rows {
        let r = &records[o as usize];
        let headers: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            (o, ts, k, v, hs),
            (
                r.offset,
                r.timestamp,
                r.key.clone(),
                r.value.clone(),
                headers
            ),
            "DuckDB and kcat disagree at offset {o}"
        );
    }
    broker.stop().await;
}

/// `confluent_cluster.py` with `args`, its JSON lines coming through the receiver as it
/// prints them (stderr goes to `log`, shown if it fails).
fn cluster_client(
    bootstrap: &str,
    args: &[&str],
    log: &std::path::Path,
) -> (
    std::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let script = format!(
        "{}/../../tests/e2e/clients/confluent_cluster.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = Command::new(python())
        .arg(script)
        .arg(bootstrap)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str(&line) {
                Ok(v) => {
                    let _ = tx.send(v);
                }
                Err(_) => eprintln!("confluent_cluster.py: {line}"),
            }
        }
    });
    (child, rx)
}

/// Waits for the client to exit, failing with its stderr unless it succeeded.
async fn client_succeeded(mut child: std::process::Child, log: &std::path::Path) {
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        status.success(),
        "confluent_cluster.py failed:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The Kafka listeners of brokers `ids`, as `bootstrap.servers`.
fn bootstrap(c: &crate::cluster::Cluster, ids: &[u64]) -> String {
    ids.iter()
        .map(|&id| c.kafka_addr(id))
        .collect::<Vec<_>>()
        .join(",")
}

/// A record line of `confluent_cluster.py` (partition, offset, value); None for others.
fn record_line(v: &serde_json::Value) -> Option<(usize, i64, Vec<u8>)> {
    let p = v["p"].as_u64()? as usize;
    Some((p, v["o"].as_i64()?, v["v"].as_str()?.as_bytes().to_vec()))
}

/// Reads `n` records of `topic` (two partitions) as a member of `group`; what it read,
/// by partition in delivery order, and the offsets it committed.
async fn consume_in_group(
    boot: &str,
    topic: &str,
    group: &str,
    n: usize,
    log: &std::path::Path,
) -> ([Vec<(i64, Vec<u8>)>; 2], serde_json::Value) {
    let (consumer, mut rx) = cluster_client(boot, &["consume", topic, group, &n.to_string()], log);
    let mut reads: [Vec<(i64, Vec<u8>)>; 2] = Default::default();
    let mut committed = serde_json::Value::Null;
    while let Some(v) = rx.recv().await {
        match record_line(&v) {
            Some((p, o, value)) => reads[p].push((o, value)),
            None => committed = v["committed"].clone(),
        }
    }
    client_succeeded(consumer, log).await;
    (reads, committed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_produces_and_consumes_through_a_cluster_across_a_leader_kill() {
    use crate::cluster::Cluster;
    use crate::history::History;
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::active_with_kafka(dir.path(), 3).await;
    let all = bootstrap(&c, &[1, 2, 3]);
    let log = dir.path().join("client.log");

    // Created through Kafka's admin API; every broker, its partitions' leaders and
    // in-sync replicas as the cluster has them.
    let (admin, mut rx) = cluster_client(&all, &["admin", "kc"], &log);
    client_succeeded(admin, &log).await;
    let leaders = rx.recv().await.expect("the admin summary");
    let first = c.led("kc", None, 3).await;
    assert_eq!(leaders["leaders"]["0"], first.leader);

    // Idempotent acks=all produce; the leader of partition 0 is killed (-9) a third of
    // the way through. librdkafka finds the new leader through Metadata and retries.
    const N: usize = 3000;
    let mut history = [History::new(), History::new()];
    let (producer, mut rx) = cluster_client(&all, &["produce", "kc", &N.to_string()], &log);
    let mut acked = 0;
    let killed = first.leader as u64;
    while let Some(v) = rx.recv().await {
        let Some((p, o, value)) = record_line(&v) else {
            continue;
        };
        history[p].ack(o, value);
        acked += 1;
        if acked == N / 3 {
            c.kill(killed);
        }
    }
    client_succeeded(producer, &log).await;
    assert_eq!(acked, N, "every record acknowledged once");
    let second = c.led("kc", Some(killed), 2).await;
    assert!(second.leader_epoch > first.leader_epoch);

    // Everything acknowledged reads back through a group on the surviving brokers, at
    // the offsets acknowledged, once each, in order; the group's commit is the end.
    let survivors = c.running();
    let (mut reads, committed) =
        consume_in_group(&bootstrap(&c, &survivors), "kc", "kcg", N, &log).await;
    for (p, h) in history.iter_mut().enumerate() {
        h.read(0, std::mem::take(&mut reads[p]));
        h.assert_clean(&format!("kc-{p} after its leader was killed"));
        let end = h.last_acked().unwrap() + 1;
        assert_eq!(committed[p.to_string()], end, "kc-{p}'s committed offset");
    }
    // The same offsets through gRPC, from a broker that may not coordinate the group.
    let client = Client::connect(&c.addr(survivors[0])).await.unwrap();
    let grpc = grpc_committed(&client, "kcg").await;
    for p in 0..2u32 {
        assert_eq!(
            grpc.get(&p).copied(),
            history[p as usize].last_acked().map(|o| o + 1)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_committed_offsets_survive_a_coordinator_kill() {
    use crate::cluster::{Cluster, coordinator};
    use crate::history::History;
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::active_with_kafka(dir.path(), 3).await;
    let boot = |c: &Cluster| bootstrap(c, &c.running());
    let log = dir.path().join("client.log");
    let (admin, _) = cluster_client(&boot(&c), &["admin", "kg"], &log);
    client_succeeded(admin, &log).await;
    const N: usize = 2000;
    let mut history = [History::new(), History::new()];
    let (producer, mut rx) = cluster_client(&boot(&c), &["produce", "kg", &N.to_string()], &log);
    while let Some(v) = rx.recv().await {
        if let Some((p, o, value)) = record_line(&v) {
            history[p].ack(o, value);
        }
    }
    client_succeeded(producer, &log).await;

    // A member of the group reads half and commits; the group's coordinator is killed
    // (-9); the next member, through the survivors, finds the new coordinator and
    // resumes exactly at the commit: nothing read twice, nothing skipped.
    let group = "kgg";
    let mut from = [0i64; 2];
    let mut killed = 0;
    for pass in 0..2 {
        let (mut reads, committed) = consume_in_group(&boot(&c), "kg", group, N / 2, &log).await;
        for (p, h) in history.iter_mut().enumerate() {
            let read = std::mem::take(&mut reads[p]);
            let next = read.last().map_or(from[p], |(o, _)| o + 1);
            h.read(from[p], read);
            // A partition the member was given but read nothing of commits nothing.
            if committed[p.to_string()].as_i64().is_some_and(|o| o >= 0) {
                assert_eq!(
                    committed[p.to_string()],
                    next,
                    "pass {pass}: kg-{p}'s commit"
                );
            }
            from[p] = next;
        }
        if pass == 0 {
            killed = coordinator(&c, group, None, 0).await;
            c.kill(killed);
            coordinator(&c, group, Some(killed), 0).await;
        }
    }
    for (p, h) in history.iter().enumerate() {
        h.assert_clean(&format!(
            "kg-{p} read in two passes across a coordinator kill"
        ));
        assert_eq!(
            from[p],
            h.last_acked().unwrap() + 1,
            "kg-{p} read to its end"
        );
    }

    // New partitions get as many replicas as the topic's others, on live brokers:
    // refused with one of three down, made once it is back, each new partition led
    // with three in sync.
    c.settled("the killed broker is fenced", |d| {
        d.brokers
            .iter()
            .any(|b| b.id == killed && b.state == "fenced")
    })
    .await;
    let grow = |c: &Cluster| cluster_client(&boot(c), &["grow", "kg", "3"], &log);
    let (child, mut rx) = grow(&c);
    client_succeeded(child, &log).await;
    assert_eq!(
        rx.recv().await.expect("the grow summary")["error"],
        "INVALID_REPLICATION_FACTOR"
    );
    c.restart(killed);
    c.settled("the restarted broker is active", |d| {
        d.brokers.iter().all(|b| b.state == "active")
    })
    .await;
    let (child, mut rx) = grow(&c);
    client_succeeded(child, &log).await;
    assert_eq!(rx.recv().await.expect("the grow summary")["partitions"], 3);
    let client = Client::connect(&c.addr(killed)).await.unwrap();
    let d = client.describe_topic("kg").await.unwrap();
    assert_eq!(
        d.partitions.len(),
        3,
        "the restarted broker has the new count too"
    );
}

/// `strata bench --kafka` (the Kafka half of `benches/kafka.sh`) writes every record it
/// reports and reads every one back; each record checked on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_bench_over_kafka_produces_and_reads_back_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let run = |args: &[&str]| {
        let out = strata()
            .args(["bench"])
            .args(args)
            .args(["--kafka", &broker.kafka_addr, "--topic", "kb"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let produced = run(&["produce", "--records", "30000", "--record-size", "200"]);
    assert!(produced.starts_with("30000 records sent"), "{produced}");
    let client = broker.client().await;
    let d = client.describe_topic("kb").await.unwrap();
    assert_eq!(d.partitions.len(), 3);
    let hws: i64 = d.partitions.iter().map(|p| p.high_watermark).sum();
    assert_eq!(hws, 30000);
    let read = run(&["consume", "--fetch-size", "65536"]);
    assert!(read.starts_with("30000 records read"), "{read}");
    assert!(read.contains("(over Kafka)"), "{read}");
    let mut total = 0;
    for p in 0..3 {
        let recs = read_all(&client, "kb", p, 0).await;
        assert!(recs.iter().all(|r| r.2.len() == 200));
        total += recs.len();
    }
    assert_eq!(total, 30000);
}

/// One request over a fresh connection to a Kafka listener, and its answer.
async fn kafka_call<Req, Resp>(
    addr: &str,
    key: kafka_protocol::messages::ApiKey,
    version: i16,
    req: &Req,
) -> Resp
where
    Req: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion,
    Resp: kafka_protocol::protocol::Decodable + kafka_protocol::protocol::HeaderVersion,
{
    use bytes::BufMut;
    use kafka_protocol::messages::{RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut body = bytes::BytesMut::new();
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = 1;
    header
        .encode(&mut body, Req::header_version(version))
        .unwrap();
    req.encode(&mut body, version).unwrap();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut frame = bytes::BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    conn.write_all(&frame).await.unwrap();
    let len = conn.read_i32().await.unwrap();
    let mut buf = vec![0u8; len as usize];
    conn.read_exact(&mut buf).await.unwrap();
    let mut buf = bytes::Bytes::from(buf);
    ResponseHeader::decode(&mut buf, Resp::header_version(version)).unwrap();
    Resp::decode(&mut buf, version).unwrap()
}

/// An idempotent producer's state survives a broker restart on the Kafka path too: the
/// batch it sends again after the restart (its answer lost) is answered with the first
/// write's offset and not written twice, and its sequence goes on where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_kafka_producer_is_deduplicated_across_a_broker_restart() {
    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .create_topic("idem", 1, 1, Default::default())
        .await
        .unwrap();
    let init: InitProducerIdResponse = kafka_call(
        &broker.kafka_addr,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default(),
    )
    .await;
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    // Timestamps of now: a producer is forgotten once its newest batch's timestamp is
    // older than producer.id.expiration.ms (a day), as in Kafka.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let produce = |addr: String, seq: i32, values: &'static [&'static [u8]]| async move {
        let mut b = strata_record::BatchBuilder::new(now, 256);
        b.set_producer(pid, epoch, seq);
        for v in values {
            b.append(now, None, Some(v), &[]);
        }
        let mut p = produce_request::PartitionProduceData::default();
        p.index = 0;
        p.records = Some(b.finish());
        let mut t = produce_request::TopicProduceData::default();
        t.name = TopicName(StrBytes::from_static_str("idem"));
        t.partition_data = vec![p];
        let mut r = ProduceRequest::default();
        r.acks = -1;
        r.timeout_ms = 5000;
        r.topic_data = vec![t];
        let resp: ProduceResponse = kafka_call(&addr, ApiKey::Produce, 9, &r).await;
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    assert_eq!(
        produce(broker.kafka_addr.clone(), 0, &[b"a", b"b"]).await,
        (0, 0)
    );
    broker.stop().await;

    let broker = TestBroker::start(dir.path()).await;
    let addr = broker.kafka_addr.clone();
    assert_eq!(
        produce(addr.clone(), 0, &[b"a", b"b"]).await,
        (0, 0),
        "the batch sent again is answered with its first offset"
    );
    assert_eq!(
        produce(addr.clone(), 5, &[b"x"]).await.0,
        ResponseError::OutOfOrderSequenceNumber.code()
    );
    assert_eq!(produce(addr.clone(), 2, &[b"c"]).await, (0, 2));
    let client = broker.client().await;
    let values: Vec<Vec<u8>> = read_all(&client, "idem", 0, 0)
        .await
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    broker.stop().await;
}
