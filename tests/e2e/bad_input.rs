//! Every bad input gets a clear error and changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_client::{Client, ClientError, Producer, ProducerConfig, pb};
use tonic::Code;

use crate::helpers::*;

fn code(e: &ClientError) -> Code {
    e.code()
        .unwrap_or_else(|| panic!("expected a broker error, got {e}"))
}

async fn snapshot(client: &Client) -> Vec<(String, Vec<(i64, i64)>, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for t in client.list_topics().await.unwrap() {
        let d = client.describe_topic(&t.name).await.unwrap();
        out.push((
            d.name.clone(),
            d.partitions
                .iter()
                .map(|p| (p.log_start_offset, p.high_watermark))
                .collect(),
            d.configs
                .iter()
                .map(|c| (c.name.clone(), c.value.clone()))
                .collect(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let configs = BTreeMap::from([("max.message.bytes".to_string(), "1000".to_string())]);
    client.create_topic("good", 2, 1, configs).await.unwrap();
    let mut p = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    p.send("good", Some(0), None, Some(b"one"), &[])
        .await
        .unwrap();
    p.close().await.unwrap();
    let before = snapshot(&client).await;

    // Unknown topic, for every kind of request.
    let e = client.describe_topic("missing").await.unwrap_err();
    assert_eq!(code(&e), Code::NotFound);
    assert!(e.to_string().contains("unknown topic \"missing\""), "{e}");
    let e = client
        .fetch("missing", 0, 0, 100, 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::NotFound);
    let e = client.delete_topic("missing").await.unwrap_err();
    assert_eq!(code(&e), Code::NotFound);

    // Topic names: Kafka's rules.
    for name in [
        "",
        "has space",
        "slash/y",
        "..",
        "ünïcode",
        &"x".repeat(250),
    ] {
        let e = client
            .create_topic(name, 1, 1, Default::default())
            .await
            .unwrap_err();
        assert_eq!(code(&e), Code::InvalidArgument, "{name:?}: {e}");
        assert!(e.to_string().contains("invalid topic name"), "{e}");
    }
    client
        .create_topic(&"y".repeat(249), 1, 1, Default::default())
        .await
        .unwrap();
    client.delete_topic(&"y".repeat(249)).await.unwrap();

    // Existing topic, even with other settings.
    let e = client
        .create_topic("good", 5, 1, Default::default())
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::AlreadyExists);

    // Partition counts and replication factors.
    for n in [0, -1, -100, 10_001] {
        let e = client
            .create_topic("parts", n, 1, Default::default())
            .await
            .unwrap_err();
        assert_eq!(code(&e), Code::InvalidArgument, "{n}");
        assert!(
            e.to_string()
                .contains(&format!("invalid partition count {n}")),
            "{e}"
        );
    }
    let e = client
        .create_topic("parts", 1, 3, Default::default())
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition);
    assert!(e.to_string().contains("replication factor 3"), "{e}");

    // Partition out of range.
    let e = client
        .fetch("good", 2, 0, 100, 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::NotFound);
    assert!(e.to_string().contains("valid partitions are 0..=1"), "{e}");

    // Offset out of range, with the valid range in the message.
    let e = client
        .fetch("good", 0, 5, 100, 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::OutOfRange);
    assert!(e.to_string().contains("valid offsets are 0..=1"), "{e}");
    let e = client.subscribe("good", 0, -1, 100).await.unwrap_err();
    assert_eq!(code(&e), Code::OutOfRange);

    // A batch over max.message.bytes.
    let mut p = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    p.send("good", Some(0), None, Some(&[7u8; 2000]), &[])
        .await
        .unwrap();
    let e = p.flush().await.unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument);
    assert!(e.to_string().contains("max.message.bytes=1000"), "{e}");

    // A corrupt batch (CRC) sent as raw bytes.
    let mut b = strata_record::BatchBuilder::new(1, 64);
    b.append(1, None, Some(b"v"), &[]);
    let mut raw = b.finish_vec();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let mut raw_client = strata_proto_client(&broker.addr).await;
    let e = raw_client
        .produce(pb::ProduceRequest {
            topic: "good".into(),
            partition: 0,
            batches: raw.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("CRC mismatch"), "{}", e.message());

    // Timestamps far from the broker clock (KIP-937) and a header key that is not
    // UTF-8: refused at produce, nothing appended.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let batch = |ts: i64, header_key: &str| {
        let mut b = strata_record::BatchBuilder::new(ts, 64);
        b.append(ts, None, Some(b"v"), &[(header_key, Some(&b"x"[..]))]);
        b.finish_vec()
    };
    let produce_raw = |bytes: Vec<u8>, topic: &'static str| {
        let mut c = raw_client.clone();
        async move {
            c.produce(pb::ProduceRequest {
                topic: topic.into(),
                partition: 0,
                batches: bytes.into(),
                ..Default::default()
            })
            .await
        }
    };
    let two_hours = 2 * 3600 * 1000;
    let e = produce_raw(batch(now + two_hours, "h"), "good")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("after the broker clock")
            && e.message()
                .contains("message.timestamp.after.max.ms=3600000"),
        "{}",
        e.message()
    );
    // A topic that bounds the past too (the default does not).
    let configs = BTreeMap::from([(
        "message.timestamp.before.max.ms".to_string(),
        "60000".to_string(),
    )]);
    client.create_topic("recent", 1, 1, configs).await.unwrap();
    let e = produce_raw(batch(now - two_hours, "h"), "recent")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("message.timestamp.before.max.ms=60000"),
        "{}",
        e.message()
    );
    produce_raw(batch(now - two_hours, "h"), "good")
        .await
        .expect("an old timestamp is fine by default");
    // The header key's bytes made invalid UTF-8, the CRC recomputed to match.
    let mut bad_key = batch(now, "k");
    let at = bad_key.iter().rposition(|&b| b == b'k').unwrap();
    bad_key[at] = 0xff;
    strata_record::seal_crc(&mut bad_key);
    let e = produce_raw(bad_key, "good").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("header key is not valid UTF-8"),
        "{}",
        e.message()
    );
    client.delete_topic("recent").await.unwrap();
    // The one accepted produce above moved the watermark; nothing else did.
    let mut before = before;
    before[1].1[0].1 += 1;

    // Unknown and malformed configs, on create and alter.
    let bad = [
        ("retention.hours", "1"),
        ("retention.ms", "soon"),
        ("segment.bytes", "1"),
        ("cleanup.policy", "compress"),
        ("min.cleanable.dirty.ratio", "1.5"),
    ];
    for (k, v) in bad {
        let configs = BTreeMap::from([(k.to_string(), v.to_string())]);
        let e = client
            .create_topic("cfg", 1, 1, configs.clone())
            .await
            .unwrap_err();
        assert_eq!(code(&e), Code::InvalidArgument, "{k}={v}");
        assert!(e.to_string().contains(k), "{e}");
        let e = client
            .alter_configs("good", configs, vec![])
            .await
            .unwrap_err();
        assert_eq!(code(&e), Code::InvalidArgument, "{k}={v}");
    }

    assert_eq!(snapshot(&client).await, before, "nothing changed");
    broker.stop().await;
}

async fn strata_proto_client(
    addr: &str,
) -> pb::strata_client::StrataClient<tonic::transport::Channel> {
    pb::strata_client::StrataClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_broker_that_is_not_listening_is_reported_without_hanging() {
    // Bind and drop to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let e = tokio::time::timeout(Duration::from_secs(20), Client::connect(&addr))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
    assert!(
        e.to_string().contains(&addr) && e.to_string().contains("strata server"),
        "{e}"
    );
}

#[test]
fn cli_failures_exit_non_zero_with_a_one_line_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases: Vec<Vec<String>> = vec![
        vec![
            "topic".into(),
            "list".into(),
            "--broker".into(),
            format!("127.0.0.1:{port}"),
        ],
        vec![
            "consume".into(),
            "t".into(),
            "--offset".into(),
            "soon".into(),
        ],
        vec![
            "topic".into(),
            "create".into(),
            "t".into(),
            "--config".into(),
            "novalue".into(),
        ],
        vec!["produce".into(), "t".into(), "--acks".into(), "2".into()],
    ];
    for args in cases {
        let out = strata()
            .args(&args)
            .env("STRATA_BROKER", format!("127.0.0.1:{port}"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}
