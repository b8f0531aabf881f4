//! The Kafka listener over a real socket, byte by byte: what a well-formed request gets,
//! and what each kind of bad frame gets (a closed connection, never a panic, a hang or
//! a broker that stops answering others).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use strata_broker::{Broker, BrokerConfig};
use strata_kafka::{Context, KafkaConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Kafka {
    addr: String,
    broker: Arc<Broker>,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

const MAX_REQUEST: usize = 16 << 20;

async fn start() -> Kafka {
    start_with(|_| {}).await
}

async fn start_with(tune: impl FnOnce(&mut BrokerConfig)) -> Kafka {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        metrics_listen: String::new(),
        cold_cache_memory_bytes: 1 << 20,
        cold_cache_disk_bytes: 0,
        ..BrokerConfig::default()
    };
    tune(&mut config);
    let broker = Broker::open(config, Arc::new(strata_log::SystemClock))
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let ctx = Context::new(
        broker.clone(),
        KafkaConfig {
            advertise: addr.clone(),
            max_request_bytes: MAX_REQUEST,
            auto_create_topics: true,
            sasl_mechanisms: broker.config().sasl_mechanisms().unwrap(),
        },
        Default::default(),
    )
    .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(strata_kafka::serve(listener, None, ctx, rx));
    Kafka {
        addr,
        broker,
        _stop: stop,
        _dir: dir,
    }
}

/// Sends one request and reads its response.
async fn call<Req, Resp>(conn: &mut TcpStream, key: ApiKey, version: i16, req: &Req) -> Resp
where
    Req: Encodable + HeaderVersion,
    Resp: Decodable + HeaderVersion,
{
    let mut body = BytesMut::new();
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = 7;
    header.client_id = Some(StrBytes::from_static_str("wire-test"));
    header
        .encode(&mut body, Req::header_version(version))
        .unwrap();
    req.encode(&mut body, version).unwrap();
    send_frame(conn, &body).await;
    let mut frame = read_frame(conn).await.expect("a response");
    let h = ResponseHeader::decode(&mut frame, Resp::header_version(version)).unwrap();
    assert_eq!(h.correlation_id, 7);
    Resp::decode(&mut frame, version).unwrap()
}

async fn send_frame(conn: &mut TcpStream, body: &[u8]) {
    let mut f = BytesMut::new();
    f.put_i32(body.len() as i32);
    f.extend_from_slice(body);
    conn.write_all(&f).await.unwrap();
}

async fn read_frame(conn: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
    conn.read_exact(&mut buf).await.ok()?;
    Some(buf.into())
}

/// The broker closes `conn` (EOF or reset) instead of answering, within 10 s.
async fn assert_closed(conn: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what}: the connection stayed open with no answer"));
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("{what}: got {n} bytes instead of a closed connection"),
    }
}

async fn api_versions(conn: &mut TcpStream) -> ApiVersionsResponse {
    call(conn, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await
}

fn batch(values: &[&[u8]]) -> Bytes {
    let mut b = strata_record::BatchBuilder::new(1_700_000_000_000, 256);
    for (i, v) in values.iter().enumerate() {
        b.append(
            1_700_000_000_000 + i as i64,
            Some(b"key"),
            Some(v),
            &[("h", Some(b"v"))],
        );
    }
    b.finish()
}

fn produce_request(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    let mut p = produce_request::PartitionProduceData::default();
    p.index = partition;
    p.records = Some(records);
    let mut t = produce_request::TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.timeout_ms = 5000;
    r.topic_data = vec![t];
    r
}

fn fetch_request(topic: &str, offset: i64, max_bytes: i32, epoch: i32) -> FetchRequest {
    let mut p = fetch_request::FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.partition_max_bytes = max_bytes;
    p.current_leader_epoch = epoch;
    let mut t = fetch_request::FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut r = FetchRequest::default();
    r.replica_id = BrokerId(-1);
    r.max_wait_ms = 0;
    r.min_bytes = 1;
    r.max_bytes = max_bytes;
    r.session_epoch = -1;
    r.topics = vec![t];
    r
}

fn partition_of(resp: &FetchResponse) -> &fetch_response::PartitionData {
    assert_eq!(resp.error_code, 0);
    &resp.responses[0].partitions[0]
}

#[tokio::test]
async fn api_versions_lists_the_table_and_a_newer_version_is_answered_in_v0() {
    let k = start().await;
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    let r = api_versions(&mut conn).await;
    assert_eq!(r.error_code, 0);
    for (key, min, max) in strata_kafka::apis::SUPPORTED {
        let a = r
            .api_keys
            .iter()
            .find(|a| a.api_key == *key as i16)
            .unwrap_or_else(|| panic!("{key:?} missing"));
        assert_eq!((a.min_version, a.max_version), (*min, *max), "{key:?}");
    }

    // KIP-511: a version past ours gets v0 UNSUPPORTED_VERSION with the table.
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::ApiVersions as i16);
    body.put_i16(99);
    body.put_i32(42);
    body.put_i16(-1); // null client id
    body.put_u8(0); // whatever a v99 body holds
    send_frame(&mut conn, &body).await;
    let mut frame = read_frame(&mut conn).await.unwrap();
    let h = ResponseHeader::decode(&mut frame, 0).unwrap();
    assert_eq!(h.correlation_id, 42);
    let r = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
    assert_eq!(r.api_keys.len(), strata_kafka::apis::SUPPORTED.len());
    // The connection goes on.
    assert_eq!(api_versions(&mut conn).await.error_code, 0);
}

#[tokio::test]
async fn a_produced_batch_is_fetched_byte_for_byte_from_its_first_offset() {
    let k = start().await;
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    // Metadata creates the topic (auto.create.topics.enable).
    let mut m = MetadataRequest::default();
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_static_str("wire")));
    m.topics = Some(vec![t]);
    m.allow_auto_topic_creation = true;
    let meta: MetadataResponse = call(&mut conn, ApiKey::Metadata, 12, &m).await;
    assert_eq!(meta.topics[0].error_code, 0);
    assert_eq!(meta.topics[0].partitions.len(), 1);
    assert_eq!(
        meta.brokers[0].port.to_string(),
        k.addr.rsplit(':').next().unwrap()
    );
    assert!(!meta.topics[0].topic_id.is_nil());

    let first = batch(&[b"a", b"b", b"c"]);
    let second = batch(&[b"d"]);
    for b in [&first, &second] {
        let r: ProduceResponse = call(
            &mut conn,
            ApiKey::Produce,
            9,
            &produce_request("wire", 0, -1, b.clone()),
        )
        .await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "{:?}", p.error_message);
    }
    let r: FetchResponse = call(
        &mut conn,
        ApiKey::Fetch,
        12,
        &fetch_request("wire", 0, 1 << 20, -1),
    )
    .await;
    let p = partition_of(&r);
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 4);
    let records = p.records.clone().unwrap();
    assert_eq!(records.len(), first.len() + second.len());
    // The broker sets base offsets and the leader epoch (bytes 0..8 and 12..16, outside
    // the CRC); everything from the CRC on is what the producer sent.
    assert_eq!(&records[17..first.len()], &first[17..]);
    assert_eq!(&records[first.len() + 17..], &second[17..]);
    assert_eq!(&records[..8], &0i64.to_be_bytes());
    assert_eq!(&records[first.len()..first.len() + 8], &3i64.to_be_bytes());

    // A fetch from inside the first batch starts with that batch (the client skips
    // what it did not ask for).
    let r: FetchResponse = call(
        &mut conn,
        ApiKey::Fetch,
        12,
        &fetch_request("wire", 2, 1 << 20, -1),
    )
    .await;
    let records = partition_of(&r).records.clone().unwrap();
    assert_eq!(&records[..8], &0i64.to_be_bytes());

    // max.bytes below the first batch still returns that whole batch.
    let r: FetchResponse = call(
        &mut conn,
        ApiKey::Fetch,
        12,
        &fetch_request("wire", 0, 10, -1),
    )
    .await;
    let records = partition_of(&r).records.clone().unwrap();
    assert_eq!(records.len(), first.len());

    let list = |ts: i64| {
        let mut p = list_offsets_request::ListOffsetsPartition::default();
        p.partition_index = 0;
        p.timestamp = ts;
        p.current_leader_epoch = -1;
        let mut t = list_offsets_request::ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_static_str("wire"));
        t.partitions = vec![p];
        let mut r = ListOffsetsRequest::default();
        r.replica_id = BrokerId(-1);
        r.topics = vec![t];
        r
    };
    // OffsetForLeaderEpoch: epoch 0 (the only one) ends at the log end; a newer
    // current epoch than the leader's is UNKNOWN_LEADER_EPOCH.
    for (current, want) in [(-1, (0, 0, 4)), (0, (0, 0, 4)), (7, (75, -1, -1))] {
        let mut p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
        p.current_leader_epoch = current;
        p.leader_epoch = 0;
        let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
        t.topic = TopicName(StrBytes::from_static_str("wire"));
        t.partitions = vec![p];
        let mut req = OffsetForLeaderEpochRequest::default();
        req.replica_id = BrokerId(-1);
        req.topics = vec![t];
        let r: OffsetForLeaderEpochResponse =
            call(&mut conn, ApiKey::OffsetForLeaderEpoch, 4, &req).await;
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.leader_epoch, p.end_offset),
            want,
            "current {current}"
        );
    }

    for (ts, want) in [
        (-2, 0),
        (-1, 4),
        (1_700_000_000_001, 1),
        (1_800_000_000_000, -1),
    ] {
        let r: ListOffsetsResponse = call(&mut conn, ApiKey::ListOffsets, 6, &list(ts)).await;
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset), (0, want), "timestamp {ts}");
    }
    // v7-9: max timestamp (the first record at the largest timestamp: "c", though "d"
    // came later with an older one), earliest local, latest tiered (none yet).
    for (ts, want) in [(-3, (2, 1_700_000_000_002)), (-4, (0, -1)), (-5, (-1, -1))] {
        let r: ListOffsetsResponse = call(&mut conn, ApiKey::ListOffsets, 9, &list(ts)).await;
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error_code, 0, "timestamp {ts}");
        assert_eq!((p.offset, p.timestamp), want, "timestamp {ts}");
    }
    // -3 means nothing before v7.
    let r: ListOffsetsResponse = call(&mut conn, ApiKey::ListOffsets, 6, &list(-3)).await;
    assert_eq!(
        r.topics[0].partitions[0].error_code,
        ResponseError::InvalidRequest.code()
    );
}

#[tokio::test]
async fn failures_get_kafka_error_codes_on_an_open_connection() {
    let k = start().await;
    k.broker
        .create_topic("codes", 1, 1, Default::default())
        .await
        .unwrap();
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    let produce = |topic: &str, partition: i32, acks: i16, records: Bytes| {
        produce_request(topic, partition, acks, records)
    };
    let cases: Vec<(&str, ProduceRequest, ResponseError)> = vec![
        (
            "unknown topic",
            produce("nope", 0, 1, batch(&[b"x"])),
            ResponseError::UnknownTopicOrPartition,
        ),
        (
            "partition out of range",
            produce("codes", 5, 1, batch(&[b"x"])),
            ResponseError::UnknownTopicOrPartition,
        ),
        (
            "negative partition",
            produce("codes", -1, 1, batch(&[b"x"])),
            ResponseError::UnknownTopicOrPartition,
        ),
        (
            "acks=2",
            produce("codes", 0, 2, batch(&[b"x"])),
            ResponseError::InvalidRequiredAcks,
        ),
        (
            "a corrupt batch",
            {
                let mut b = batch(&[b"x"]).to_vec();
                let last = b.len() - 1;
                b[last] ^= 0xff;
                produce("codes", 0, 1, b.into())
            },
            ResponseError::CorruptMessage,
        ),
    ];
    for (what, req, want) in cases {
        let r: ProduceResponse = call(&mut conn, ApiKey::Produce, 9, &req).await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, want.code(), "{what}: {:?}", p.error_message);
        assert_eq!(p.base_offset, -1, "{what}");
        assert!(p.error_message.is_some(), "{what}: no message");
    }
    // Nothing was appended by any of them.
    assert_eq!(k.broker.partition("codes", 0).unwrap().log_end_offset(), 0);

    let fetch_cases = [
        (
            "unknown topic",
            fetch_request("nope", 0, 1024, -1),
            ResponseError::UnknownTopicOrPartition,
        ),
        (
            "offset past the end",
            fetch_request("codes", 5, 1024, -1),
            ResponseError::OffsetOutOfRange,
        ),
        (
            "a newer leader epoch",
            fetch_request("codes", 0, 1024, 9),
            ResponseError::UnknownLeaderEpoch,
        ),
    ];
    for (what, req, want) in fetch_cases {
        let r: FetchResponse = call(&mut conn, ApiKey::Fetch, 12, &req).await;
        assert_eq!(partition_of(&r).error_code, want.code(), "{what}");
    }
    // The connection still answers.
    assert_eq!(api_versions(&mut conn).await.error_code, 0);
}

#[tokio::test]
async fn a_long_poll_fetch_answers_when_a_record_arrives() {
    let k = start().await;
    k.broker
        .create_topic("poll", 1, 1, Default::default())
        .await
        .unwrap();
    let addr = k.addr.clone();
    let poll = tokio::spawn(async move {
        let mut conn = TcpStream::connect(&addr).await.unwrap();
        let mut req = fetch_request("poll", 0, 1 << 20, -1);
        req.max_wait_ms = 30_000;
        let r: FetchResponse = call(&mut conn, ApiKey::Fetch, 12, &req).await;
        partition_of(&r).records.clone().unwrap()
    });
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    let r: ProduceResponse = call(
        &mut conn,
        ApiKey::Produce,
        9,
        &produce_request("poll", 0, 1, batch(&[b"wake"])),
    )
    .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    // Had the fetch waited out its 30 s, this would time out first.
    let records = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("the long poll answered when the record arrived")
        .unwrap();
    assert!(!records.is_empty());
}

#[tokio::test]
async fn bad_frames_close_the_connection_and_others_are_still_served() {
    let k = start().await;
    let header = |key: i16, version: i16| {
        let mut b = BytesMut::new();
        b.put_i16(key);
        b.put_i16(version);
        b.put_i32(1);
        b.put_i16(-1);
        b
    };
    let mut huge_array = header(ApiKey::Metadata as i16, 4);
    huge_array.put_i32(i32::MAX); // topics: 2^31-1 of them, in a 14-byte frame
    let mut huge_compact = header(ApiKey::Metadata as i16, 12);
    huge_compact.put_u8(0); // no tagged fields in the header
    huge_compact.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // 2^32-2 topics
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a 3-byte frame",
            3i32.to_be_bytes()
                .iter()
                .chain(&[0u8; 3])
                .copied()
                .collect(),
        ),
        ("an empty frame", 0i32.to_be_bytes().to_vec()),
        ("a negative length", (-5i32).to_be_bytes().to_vec()),
        (
            "a frame over the limit",
            ((MAX_REQUEST + 1) as i32).to_be_bytes().to_vec(),
        ),
        ("an unknown api key", framed(&header(999, 0))),
        (
            "an api not served",
            framed(&header(ApiKey::DeleteRecords as i16, 0)),
        ),
        ("Produce v99", framed(&header(ApiKey::Produce as i16, 99))),
        (
            "Produce v2 (below Kafka 4's floor)",
            framed(&header(ApiKey::Produce as i16, 2)),
        ),
        ("an array count past the frame", framed(&huge_array)),
        (
            "a compact array count past the frame",
            framed(&huge_compact),
        ),
        ("garbage", framed(&[0x5a; 64])),
        ("a Metadata request over 8 MiB", {
            let mut big = header(ApiKey::Metadata as i16, 1);
            big.resize((8 << 20) + 1, 0);
            framed(&big)
        }),
    ];
    let n = cases.len() as u64;
    for (what, bytes) in cases {
        let mut conn = TcpStream::connect(&k.addr).await.unwrap();
        conn.write_all(&bytes).await.unwrap();
        assert_closed(&mut conn, what).await;
        // Everyone else is still served.
        let mut other = TcpStream::connect(&k.addr).await.unwrap();
        assert_eq!(api_versions(&mut other).await.error_code, 0, "after {what}");
    }
    assert_eq!(
        k.broker.metrics().kafka_bad_requests.get(),
        n,
        "each counted once"
    );
    // A length that promises more than is ever sent leaves the broker waiting on that
    // connection only: others are served meanwhile.
    let mut stalled = TcpStream::connect(&k.addr).await.unwrap();
    stalled.write_all(&100i32.to_be_bytes()).await.unwrap();
    stalled.write_all(&[0u8; 10]).await.unwrap();
    let mut other = TcpStream::connect(&k.addr).await.unwrap();
    assert_eq!(api_versions(&mut other).await.error_code, 0);
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn idempotent_batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&[u8]]) -> Bytes {
    let mut b = strata_record::BatchBuilder::new(1_700_000_000_000, 256);
    b.set_producer(producer_id, epoch, sequence);
    for v in values {
        b.append(1_700_000_000_000, Some(b"k"), Some(v), &[]);
    }
    b.finish()
}

#[tokio::test]
async fn an_idempotent_producer_is_deduplicated_and_a_gap_refused() {
    let k = start().await;
    k.broker
        .create_topic("idem", 1, 1, Default::default())
        .await
        .unwrap();
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    let init: InitProducerIdResponse = call(
        &mut conn,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default(),
    )
    .await;
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    assert!(pid >= 0);
    let p = produce_one(&mut conn, idempotent_batch(pid, epoch, 0, &[b"a", b"b"])).await;
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    // The same batch again (a retry after a lost answer): the first answer, not a copy.
    let p = produce_one(&mut conn, idempotent_batch(pid, epoch, 0, &[b"a", b"b"])).await;
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    // Sequence 5 after 0..=1: a gap.
    let p = produce_one(&mut conn, idempotent_batch(pid, epoch, 5, &[b"x"])).await;
    assert_eq!(p.error_code, ResponseError::OutOfOrderSequenceNumber.code());
    let p = produce_one(&mut conn, idempotent_batch(pid, epoch, 2, &[b"c"])).await;
    assert_eq!((p.error_code, p.base_offset), (0, 2));
    assert_eq!(k.broker.partition("idem", 0).unwrap().log_end_offset(), 3);
    // A transactional producer is told transactions are not supported.
    let mut txn = InitProducerIdRequest::default();
    txn.transactional_id = Some(TransactionalId(StrBytes::from_static_str("t1")));
    txn.transaction_timeout_ms = 60_000;
    let r: InitProducerIdResponse = call(&mut conn, ApiKey::InitProducerId, 4, &txn).await;
    assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
}

async fn produce_one(
    conn: &mut TcpStream,
    batch: Bytes,
) -> produce_response::PartitionProduceResponse {
    let r: ProduceResponse = call(
        conn,
        ApiKey::Produce,
        9,
        &produce_request("idem", 0, -1, batch),
    )
    .await;
    r.responses[0].partition_responses[0].clone()
}

#[tokio::test]
async fn a_fetch_session_answers_only_what_changed() {
    let k = start().await;
    k.broker
        .create_topic("sess", 2, 1, Default::default())
        .await
        .unwrap();
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    let fetch = |session_id: i32, epoch: i32, parts: &[(i32, i64)]| {
        let mut t = fetch_request::FetchTopic::default();
        t.topic = TopicName(StrBytes::from_static_str("sess"));
        t.partitions = parts
            .iter()
            .map(|&(p, offset)| {
                let mut fp = fetch_request::FetchPartition::default();
                fp.partition = p;
                fp.fetch_offset = offset;
                fp.partition_max_bytes = 1 << 20;
                fp
            })
            .collect();
        let mut r = FetchRequest::default();
        r.replica_id = BrokerId(-1);
        r.max_bytes = 1 << 20;
        r.session_id = session_id;
        r.session_epoch = epoch;
        r.topics = if parts.is_empty() { vec![] } else { vec![t] };
        r
    };
    let partitions = |r: &FetchResponse| -> Vec<(i32, usize)> {
        r.responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| (p.partition_index, p.records.as_ref().map_or(0, |b| b.len())))
            .collect()
    };
    // Epoch 0: a new session, a full answer.
    let r: FetchResponse = call(
        &mut conn,
        ApiKey::Fetch,
        12,
        &fetch(0, 0, &[(0, 0), (1, 0)]),
    )
    .await;
    assert_eq!(r.error_code, 0);
    let id = r.session_id;
    assert_ne!(id, 0, "a session was created");
    assert_eq!(partitions(&r), vec![(0, 0), (1, 0)]);
    // Nothing changed: an empty answer.
    let r: FetchResponse = call(&mut conn, ApiKey::Fetch, 12, &fetch(id, 1, &[])).await;
    assert_eq!((r.error_code, r.session_id), (0, id));
    assert!(partitions(&r).is_empty(), "{:?}", partitions(&r));
    // A record on partition 1: only partition 1 is answered, with it.
    let mut p = produce_request("sess", 1, 1, batch(&[b"news"]));
    p.timeout_ms = 1000;
    let _: ProduceResponse = call(&mut conn, ApiKey::Produce, 9, &p).await;
    let r: FetchResponse = call(&mut conn, ApiKey::Fetch, 12, &fetch(id, 2, &[])).await;
    let got = partitions(&r);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 1);
    assert!(got[0].1 > 0);
    // The client moves partition 1 past the record: nothing new again.
    let r: FetchResponse = call(&mut conn, ApiKey::Fetch, 12, &fetch(id, 3, &[(1, 1)])).await;
    assert!(partitions(&r).is_empty(), "{:?}", partitions(&r));
    // A stale epoch, and an unknown session.
    let r: FetchResponse = call(&mut conn, ApiKey::Fetch, 12, &fetch(id, 3, &[])).await;
    assert_eq!(r.error_code, ResponseError::InvalidFetchSessionEpoch.code());
    let r: FetchResponse = call(&mut conn, ApiKey::Fetch, 12, &fetch(id ^ 1, 1, &[])).await;
    assert_eq!(r.error_code, ResponseError::FetchSessionIdNotFound.code());
    // Epoch -1 closes it: the next incremental fetch finds no session.
    let r: FetchResponse = call(&mut conn, ApiKey::Fetch, 12, &fetch(id, -1, &[(0, 0)])).await;
    assert_eq!((r.error_code, r.session_id), (0, 0));
    let r: FetchResponse = call(&mut conn, ApiKey::Fetch, 12, &fetch(id, 4, &[])).await;
    assert_eq!(r.error_code, ResponseError::FetchSessionIdNotFound.code());
}

/// A request frame's body (header and request), for a request sent without waiting.
fn request_body<Req: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    req: &Req,
) -> BytesMut {
    let mut body = BytesMut::new();
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header
        .encode(&mut body, Req::header_version(version))
        .unwrap();
    req.encode(&mut body, version).unwrap();
    body
}

#[tokio::test]
async fn an_acks_0_produce_that_fails_closes_the_connection() {
    let k = start().await;
    k.broker
        .create_topic("quiet", 1, 1, Default::default())
        .await
        .unwrap();
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    // One that succeeds gets no answer and leaves the connection open.
    let ok = request_body(
        ApiKey::Produce,
        9,
        1,
        &produce_request("quiet", 0, 0, batch(&[b"x"])),
    );
    send_frame(&mut conn, &ok).await;
    let r = api_versions(&mut conn).await;
    assert_eq!(r.error_code, 0);
    assert_eq!(k.broker.partition("quiet", 0).unwrap().log_end_offset(), 1);
    // One that fails has no answer to carry its error: the connection closes, so the
    // producer learns of it.
    let bad = request_body(
        ApiKey::Produce,
        9,
        2,
        &produce_request("quiet", 7, 0, batch(&[b"x"])),
    );
    send_frame(&mut conn, &bad).await;
    assert_closed(&mut conn, "a failed acks=0 produce").await;
}

#[tokio::test]
async fn a_fetch_session_does_not_starve_its_later_partitions() {
    let k = start().await;
    k.broker
        .create_topic("fair", 2, 1, Default::default())
        .await
        .unwrap();
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    for p in 0..2 {
        let _: ProduceResponse = call(
            &mut conn,
            ApiKey::Produce,
            9,
            &produce_request("fair", p, 1, batch(&[b"record"])),
        )
        .await;
    }
    // max.bytes 1: each answer has room for one partition's first batch only.
    let mut t = fetch_request::FetchTopic::default();
    t.topic = TopicName(StrBytes::from_static_str("fair"));
    t.partitions = (0..2)
        .map(|p| {
            let mut fp = fetch_request::FetchPartition::default();
            fp.partition = p;
            fp.partition_max_bytes = 1 << 20;
            fp
        })
        .collect();
    let mut r = FetchRequest::default();
    r.replica_id = BrokerId(-1);
    r.max_bytes = 1;
    r.session_epoch = 0;
    r.topics = vec![t];
    let mut served = std::collections::BTreeSet::new();
    let mut id = 0;
    for epoch in 0..4 {
        r.session_id = id;
        r.session_epoch = epoch;
        if epoch > 0 {
            r.topics.clear();
        }
        let resp: FetchResponse = call(&mut conn, ApiKey::Fetch, 12, &r).await;
        assert_eq!(resp.error_code, 0);
        id = resp.session_id;
        for p in resp.responses.iter().flat_map(|t| t.partitions.iter()) {
            if p.records.as_ref().is_some_and(|b| !b.is_empty()) {
                served.insert(p.partition_index);
            }
        }
    }
    assert_eq!(served, [0, 1].into(), "partitions answered with records");
}

// ---- SASL ----

use strata_auth::{Mechanism, ScramClient, ScramCredential};

/// A broker whose Kafka listener requires SASL, with users `admin` (a super user) and
/// `alice`, each with both SCRAM mechanisms.
async fn sasl_broker() -> Kafka {
    let k = start_with(|c| {
        c.kafka_sasl_mechanisms = vec![
            "SCRAM-SHA-256".into(),
            "SCRAM-SHA-512".into(),
            "PLAIN".into(),
        ];
        c.super_users = vec!["User:admin".into()];
    })
    .await;
    for (user, password) in [("admin", "admin-secret"), ("alice", "alice-secret")] {
        for m in Mechanism::ALL {
            let c = ScramCredential::new(m, password, 4096).unwrap();
            strata_broker::security::Store::new(&k.broker, None)
                .upsert_user(user, m, c)
                .await
                .unwrap();
        }
    }
    k
}

async fn handshake(conn: &mut TcpStream, mechanism: &str) -> SaslHandshakeResponse {
    let mut r = SaslHandshakeRequest::default();
    r.mechanism = StrBytes::from_string(mechanism.to_string());
    call(conn, ApiKey::SaslHandshake, 1, &r).await
}

async fn sasl_authenticate(conn: &mut TcpStream, bytes: Vec<u8>) -> SaslAuthenticateResponse {
    let mut r = SaslAuthenticateRequest::default();
    r.auth_bytes = bytes.into();
    call(conn, ApiKey::SaslAuthenticate, 2, &r).await
}

/// A connection authenticated as `user` with SCRAM `m`.
async fn scram_login(
    k: &Kafka,
    m: Mechanism,
    user: &str,
    password: &str,
) -> Result<TcpStream, SaslAuthenticateResponse> {
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    let h = handshake(&mut conn, m.name()).await;
    assert_eq!(h.error_code, 0);
    let mut client = ScramClient::new(m, user, password);
    let first = sasl_authenticate(&mut conn, client.client_first()).await;
    if first.error_code != 0 {
        return Err(first);
    }
    let last = sasl_authenticate(&mut conn, client.client_final(&first.auth_bytes).unwrap()).await;
    if last.error_code != 0 {
        return Err(last);
    }
    client
        .verify_server_final(&last.auth_bytes)
        .expect("the broker proves it knows the credential");
    Ok(conn)
}

async fn metadata_topics(conn: &mut TcpStream) -> usize {
    let r: MetadataResponse = call(conn, ApiKey::Metadata, 12, &MetadataRequest::default()).await;
    r.topics.len()
}

#[tokio::test]
async fn sasl_scram_and_plain_authenticate_and_wrong_passwords_are_refused() {
    let k = sasl_broker().await;
    // ApiVersions is answered before authentication, and lists the SASL APIs.
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    let v = api_versions(&mut conn).await;
    assert!(
        v.api_keys
            .iter()
            .any(|a| a.api_key == ApiKey::SaslAuthenticate as i16)
    );
    // Anything else before authenticating closes the connection.
    let body = request_body(ApiKey::Metadata, 12, 1, &MetadataRequest::default());
    send_frame(&mut conn, &body).await;
    assert_closed(&mut conn, "metadata before SASL").await;

    for m in Mechanism::ALL {
        let mut conn = scram_login(&k, m, "alice", "alice-secret").await.unwrap();
        assert_eq!(metadata_topics(&mut conn).await, 0);
        // A second authentication on the same connection is out of turn.
        let again = handshake(&mut conn, m.name()).await;
        assert_eq!(again.error_code, ResponseError::IllegalSaslState.code());

        let refused = scram_login(&k, m, "alice", "wrong").await.unwrap_err();
        assert_eq!(
            refused.error_code,
            ResponseError::SaslAuthenticationFailed.code()
        );
        let msg = refused.error_message.unwrap().to_string();
        assert!(
            msg.contains("invalid credentials") && msg.contains(m.name()),
            "{msg}"
        );
        // An unknown user reads the same as a wrong password.
        let unknown = scram_login(&k, m, "mallory", "alice-secret")
            .await
            .unwrap_err();
        assert_eq!(
            unknown.error_code,
            ResponseError::SaslAuthenticationFailed.code()
        );
        assert_eq!(unknown.error_message.unwrap().to_string(), msg);
    }

    // PLAIN, against the same credentials.
    let plain = |user: &str, password: &str| format!("\0{user}\0{password}").into_bytes();
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    assert_eq!(handshake(&mut conn, "PLAIN").await.error_code, 0);
    let ok = sasl_authenticate(&mut conn, plain("alice", "alice-secret")).await;
    assert_eq!(ok.error_code, 0);
    assert_eq!(metadata_topics(&mut conn).await, 0);
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    assert_eq!(handshake(&mut conn, "PLAIN").await.error_code, 0);
    let bad = sasl_authenticate(&mut conn, plain("alice", "nope")).await;
    assert_eq!(
        bad.error_code,
        ResponseError::SaslAuthenticationFailed.code()
    );
    assert_closed(&mut conn, "after a failed PLAIN login").await;

    // A v0 handshake (bare SASL tokens would follow) is refused.
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    let mut r = SaslHandshakeRequest::default();
    r.mechanism = StrBytes::from_static_str("PLAIN");
    let h: SaslHandshakeResponse = call(&mut conn, ApiKey::SaslHandshake, 0, &r).await;
    assert_eq!(h.error_code, ResponseError::UnsupportedVersion.code());
    assert_closed(&mut conn, "after a v0 handshake").await;

    // A mechanism not offered is refused with the list of those that are.
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    let h = handshake(&mut conn, "GSSAPI").await;
    assert_eq!(h.error_code, ResponseError::UnsupportedSaslMechanism.code());
    assert_eq!(h.mechanisms.len(), 3);
    assert_closed(&mut conn, "after an unsupported mechanism").await;

    let m = k.broker.metrics();
    assert_eq!(m.kafka_authentications.get(), 3);
    assert_eq!(m.kafka_authentication_failures.get(), 5);
}

#[tokio::test]
async fn only_a_super_user_manages_scram_users_over_kafka() {
    let k = sasl_broker().await;
    let m = Mechanism::Sha512;
    let salt = strata_auth::scram::random(16);
    let mut up = alter_user_scram_credentials_request::ScramCredentialUpsertion::default();
    up.name = StrBytes::from_static_str("bob");
    up.mechanism = m.kafka_type();
    up.iterations = 8192;
    up.salt = salt.clone().into();
    up.salted_password = m.salt_password(b"bob-secret", &salt, 8192).into();
    let mut alter = AlterUserScramCredentialsRequest::default();
    alter.upsertions = vec![up];

    // alice is no super user: refused, and nothing changes.
    let mut alice = scram_login(&k, m, "alice", "alice-secret").await.unwrap();
    let r: AlterUserScramCredentialsResponse =
        call(&mut alice, ApiKey::AlterUserScramCredentials, 0, &alter).await;
    assert_eq!(
        r.results[0].error_code,
        ResponseError::ClusterAuthorizationFailed.code()
    );
    let d: DescribeUserScramCredentialsResponse = call(
        &mut alice,
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default(),
    )
    .await;
    assert_eq!(
        d.error_code,
        ResponseError::ClusterAuthorizationFailed.code()
    );
    assert!(scram_login(&k, m, "bob", "bob-secret").await.is_err());

    // admin adds bob, who then logs in; describe shows mechanisms, never keys.
    let mut admin = scram_login(&k, m, "admin", "admin-secret").await.unwrap();
    let r: AlterUserScramCredentialsResponse =
        call(&mut admin, ApiKey::AlterUserScramCredentials, 0, &alter).await;
    assert_eq!(
        r.results[0].error_code, 0,
        "{:?}",
        r.results[0].error_message
    );
    scram_login(&k, m, "bob", "bob-secret").await.unwrap();
    assert!(
        scram_login(&k, Mechanism::Sha256, "bob", "bob-secret")
            .await
            .is_err()
    );
    let mut who = DescribeUserScramCredentialsRequest::default();
    let mut name = describe_user_scram_credentials_request::UserName::default();
    name.name = StrBytes::from_static_str("bob");
    let mut ghost = describe_user_scram_credentials_request::UserName::default();
    ghost.name = StrBytes::from_static_str("ghost");
    who.users = Some(vec![name, ghost]);
    let d: DescribeUserScramCredentialsResponse =
        call(&mut admin, ApiKey::DescribeUserScramCredentials, 0, &who).await;
    assert_eq!(d.results[0].credential_infos.len(), 1);
    assert_eq!(d.results[0].credential_infos[0].iterations, 8192);
    assert_eq!(
        d.results[1].error_code,
        ResponseError::ResourceNotFound.code()
    );

    // Too few iterations, and a user named twice, are refused.
    let mut weak = alter.clone();
    weak.upsertions[0].iterations = 100;
    let r: AlterUserScramCredentialsResponse =
        call(&mut admin, ApiKey::AlterUserScramCredentials, 0, &weak).await;
    assert_eq!(
        r.results[0].error_code,
        ResponseError::UnacceptableCredential.code()
    );
    let mut twice = alter.clone();
    let mut del = alter_user_scram_credentials_request::ScramCredentialDeletion::default();
    del.name = StrBytes::from_static_str("bob");
    del.mechanism = m.kafka_type();
    twice.deletions = vec![del.clone()];
    let r: AlterUserScramCredentialsResponse =
        call(&mut admin, ApiKey::AlterUserScramCredentials, 0, &twice).await;
    assert_eq!(
        r.results[0].error_code,
        ResponseError::DuplicateResource.code()
    );
    scram_login(&k, m, "bob", "bob-secret").await.unwrap();

    // Deleted, bob can no longer log in.
    let mut delete = AlterUserScramCredentialsRequest::default();
    delete.deletions = vec![del];
    let r: AlterUserScramCredentialsResponse =
        call(&mut admin, ApiKey::AlterUserScramCredentials, 0, &delete).await;
    assert_eq!(r.results[0].error_code, 0);
    assert!(scram_login(&k, m, "bob", "bob-secret").await.is_err());
    let r: AlterUserScramCredentialsResponse =
        call(&mut admin, ApiKey::AlterUserScramCredentials, 0, &delete).await;
    assert_eq!(
        r.results[0].error_code,
        ResponseError::ResourceNotFound.code()
    );
}

// ---- ACLs ----

fn acl_creation(
    resource_type: i8,
    name: &str,
    pattern: i8,
    principal: &str,
    operation: i8,
    permission: i8,
) -> create_acls_request::AclCreation {
    let mut c = create_acls_request::AclCreation::default();
    c.resource_type = resource_type;
    c.resource_name = StrBytes::from_string(name.to_string());
    c.resource_pattern_type = pattern;
    c.principal = StrBytes::from_string(principal.to_string());
    c.host = StrBytes::from_static_str("*");
    c.operation = operation;
    c.permission_type = permission;
    c
}

/// Kafka's codes: resource types, pattern types, operations and permissions.
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const CLUSTER: i8 = 4;
const ANY: i8 = 1;
const MATCH: i8 = 2;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const READ: i8 = 3;
const WRITE: i8 = 4;
const ALTER: i8 = 7;
const DENY: i8 = 2;
const ALLOW: i8 = 3;

async fn create_acls(
    conn: &mut TcpStream,
    acls: Vec<create_acls_request::AclCreation>,
) -> Vec<i16> {
    let mut r = CreateAclsRequest::default();
    r.creations = acls;
    let resp: CreateAclsResponse = call(conn, ApiKey::CreateAcls, 3, &r).await;
    resp.results.iter().map(|r| r.error_code).collect()
}

async fn produce_code(conn: &mut TcpStream, topic: &str) -> i16 {
    let r: ProduceResponse = call(
        conn,
        ApiKey::Produce,
        9,
        &produce_request(topic, 0, -1, batch(&[b"v"])),
    )
    .await;
    r.responses[0].partition_responses[0].error_code
}

async fn fetch_code(conn: &mut TcpStream, topic: &str) -> (i16, usize) {
    let r: FetchResponse = call(
        conn,
        ApiKey::Fetch,
        12,
        &fetch_request(topic, 0, 1 << 20, -1),
    )
    .await;
    let p = &r.responses[0].partitions[0];
    (p.error_code, p.records.as_ref().map_or(0, |b| b.len()))
}

/// The topics a Metadata request for all of them lists.
async fn all_topics(conn: &mut TcpStream) -> Vec<String> {
    let mut r = MetadataRequest::default();
    r.topics = None;
    let resp: MetadataResponse = call(conn, ApiKey::Metadata, 12, &r).await;
    resp.topics
        .iter()
        .filter_map(|t| Some(t.name.as_ref()?.0.to_string()))
        .collect()
}

async fn find_group(conn: &mut TcpStream, group: &str) -> i16 {
    let mut r = FindCoordinatorRequest::default();
    r.key = StrBytes::from_string(group.to_string());
    let resp: FindCoordinatorResponse = call(conn, ApiKey::FindCoordinator, 3, &r).await;
    resp.error_code
}

#[tokio::test]
async fn acls_decide_what_an_authenticated_kafka_client_may_do() {
    let k = sasl_broker().await;
    let m = Mechanism::Sha512;
    let mut admin = scram_login(&k, m, "admin", "admin-secret").await.unwrap();
    let mut alice = scram_login(&k, m, "alice", "alice-secret").await.unwrap();
    k.broker
        .create_topic("orders", 1, 1, Default::default())
        .await
        .unwrap();
    // A super user needs no ACL.
    assert_eq!(produce_code(&mut admin, "orders").await, 0);

    // With authentication on and no ACL, alice may do nothing: the topic is hidden,
    // and each API answers the resource's *_AUTHORIZATION_FAILED.
    let topic_denied = ResponseError::TopicAuthorizationFailed.code();
    assert_eq!(metadata_topics(&mut alice).await, 0);
    let mut want = metadata_request::MetadataRequestTopic::default();
    want.name = Some(TopicName(StrBytes::from_static_str("orders")));
    let mut md = MetadataRequest::default();
    md.topics = Some(vec![want.clone()]);
    let r: MetadataResponse = call(&mut alice, ApiKey::Metadata, 12, &md).await;
    assert_eq!(r.topics[0].error_code, topic_denied);
    // Nor may she create one by asking for it.
    want.name = Some(TopicName(StrBytes::from_static_str("fresh")));
    md.topics = Some(vec![want]);
    md.allow_auto_topic_creation = true;
    let r: MetadataResponse = call(&mut alice, ApiKey::Metadata, 12, &md).await;
    assert_eq!(r.topics[0].error_code, topic_denied);
    assert!(k.broker.topic("fresh").is_err(), "no topic was created");
    assert_eq!(produce_code(&mut alice, "orders").await, topic_denied);
    assert_eq!(fetch_code(&mut alice, "orders").await.0, topic_denied);
    assert_eq!(
        find_group(&mut alice, "g").await,
        ResponseError::GroupAuthorizationFailed.code()
    );
    let r: InitProducerIdResponse = call(
        &mut alice,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default(),
    )
    .await;
    assert_eq!(
        r.error_code,
        ResponseError::ClusterAuthorizationFailed.code()
    );
    // And she may not grant herself anything.
    let grant = vec![acl_creation(
        TOPIC,
        "orders",
        LITERAL,
        "User:alice",
        WRITE,
        ALLOW,
    )];
    assert_eq!(
        create_acls(&mut alice, grant.clone()).await,
        vec![ResponseError::ClusterAuthorizationFailed.code()]
    );

    // The admin grants: Write on orders, Read on every topic starting "ord", Read on
    // group g. A malformed binding in the same request is refused on its own.
    let codes = create_acls(
        &mut admin,
        vec![
            grant[0].clone(),
            acl_creation(TOPIC, "ord", PREFIXED, "User:alice", READ, ALLOW),
            acl_creation(GROUP, "g", LITERAL, "User:alice", READ, ALLOW),
            acl_creation(TOPIC, "orders", LITERAL, "alice", READ, ALLOW),
        ],
    )
    .await;
    assert_eq!(codes, vec![0, 0, 0, ResponseError::InvalidRequest.code()]);
    assert_eq!(produce_code(&mut alice, "orders").await, 0);
    assert_eq!(
        fetch_code(&mut alice, "orders").await,
        (0, 2 * batch(&[b"v"]).len())
    );
    assert_eq!(
        all_topics(&mut alice).await,
        vec!["orders"],
        "Write and Read imply Describe"
    );
    assert_eq!(find_group(&mut alice, "g").await, 0);
    assert_eq!(
        find_group(&mut alice, "h").await,
        ResponseError::GroupAuthorizationFailed.code()
    );
    let r: InitProducerIdResponse = call(
        &mut alice,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default(),
    )
    .await;
    assert_eq!(
        r.error_code, 0,
        "Write on a topic starts an idempotent producer"
    );

    // A deny wins over the prefixed allow.
    let deny = acl_creation(TOPIC, "orders", LITERAL, "User:alice", READ, DENY);
    assert_eq!(create_acls(&mut admin, vec![deny]).await, vec![0]);
    assert_eq!(fetch_code(&mut alice, "orders").await.0, topic_denied);
    assert_eq!(
        produce_code(&mut alice, "orders").await,
        0,
        "only Read is denied"
    );

    // DescribeAcls: every binding that covers "orders".
    let mut d = DescribeAclsRequest::default();
    d.resource_type_filter = TOPIC;
    d.resource_name_filter = Some(StrBytes::from_static_str("orders"));
    d.pattern_type_filter = MATCH;
    d.principal_filter = None;
    d.host_filter = None;
    d.operation = ANY;
    d.permission_type = ANY;
    let r: DescribeAclsResponse = call(&mut admin, ApiKey::DescribeAcls, 3, &d).await;
    assert_eq!(r.error_code, 0);
    let mut seen: Vec<(String, i8, i8, i8)> = r
        .resources
        .iter()
        .flat_map(|res| {
            res.acls.iter().map(move |a| {
                (
                    res.resource_name.to_string(),
                    res.pattern_type,
                    a.operation,
                    a.permission_type,
                )
            })
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("ord".into(), PREFIXED, READ, ALLOW),
            ("orders".into(), LITERAL, READ, DENY),
            ("orders".into(), LITERAL, WRITE, ALLOW),
        ]
    );
    let r: DescribeAclsResponse = call(&mut alice, ApiKey::DescribeAcls, 3, &d).await;
    assert_eq!(
        r.error_code,
        ResponseError::ClusterAuthorizationFailed.code()
    );
    // An operation code Strata does not know is refused, saying which exist.
    d.operation = 13;
    let r: DescribeAclsResponse = call(&mut admin, ApiKey::DescribeAcls, 3, &d).await;
    assert_eq!(r.error_code, ResponseError::InvalidRequest.code());
    assert!(r.error_message.unwrap().contains("IdempotentWrite"));

    // Alter on the cluster makes alice an ACL manager too.
    let ops = acl_creation(
        CLUSTER,
        "kafka-cluster",
        LITERAL,
        "User:alice",
        ALTER,
        ALLOW,
    );
    assert_eq!(create_acls(&mut admin, vec![ops]).await, vec![0]);
    let mine = vec![acl_creation(GROUP, "h", LITERAL, "User:alice", READ, ALLOW)];
    assert_eq!(create_acls(&mut alice, mine).await, vec![0]);
    assert_eq!(find_group(&mut alice, "h").await, 0);

    // DeleteAcls: everything of alice's on topics goes; she is refused again.
    let mut f = delete_acls_request::DeleteAclsFilter::default();
    f.resource_type_filter = TOPIC;
    f.pattern_type_filter = ANY;
    f.resource_name_filter = None;
    f.principal_filter = Some(StrBytes::from_static_str("User:alice"));
    f.host_filter = None;
    f.operation = ANY;
    f.permission_type = ANY;
    let mut del = DeleteAclsRequest::default();
    del.filters = vec![f];
    let r: DeleteAclsResponse = call(&mut admin, ApiKey::DeleteAcls, 3, &del).await;
    assert_eq!(r.filter_results[0].error_code, 0);
    assert_eq!(r.filter_results[0].matching_acls.len(), 3);
    assert_eq!(produce_code(&mut alice, "orders").await, topic_denied);
    assert_eq!(find_group(&mut alice, "g").await, 0, "group bindings stay");
}

// ---- quotas and connection limits ----

#[tokio::test]
async fn a_client_over_its_quota_is_told_to_wait_and_its_connection_waits() {
    let k = start_with(|c| {
        c.quota_producer_byte_rate = 10_000;
        c.quota_consumer_byte_rate = 10_000;
    })
    .await;
    k.broker
        .create_topic("q", 1, 1, Default::default())
        .await
        .unwrap();
    let mut conn = TcpStream::connect(&k.addr).await.unwrap();
    let big = vec![b'x'; 20_000];
    let payload = batch(&[&big]);
    let produce = |records: Bytes| produce_request("q", 0, -1, records);
    // Within the first second's burst nothing is throttled.
    let r: ProduceResponse =
        call(&mut conn, ApiKey::Produce, 9, &produce(batch(&[b"small"]))).await;
    assert_eq!(r.throttle_time_ms, 0);
    // Twice the rate at once: answered at once (KIP-219), with the wait in it ...
    let r: ProduceResponse = call(&mut conn, ApiKey::Produce, 9, &produce(payload.clone())).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 0,
        "still served"
    );
    let first = r.throttle_time_ms;
    assert!((900..=2100).contains(&first), "throttle {first} ms");
    // ... and the connection reads nothing more until it has passed.
    let sent = std::time::Instant::now();
    let r: ProduceResponse = call(&mut conn, ApiKey::Produce, 9, &produce(payload.clone())).await;
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(first as u64 - 50),
        "the muted connection answered after {waited:?}, throttle was {first} ms"
    );
    assert!(r.throttle_time_ms > 0);
    // Fetching has its own rate.
    let f: FetchResponse = call(
        &mut conn,
        ApiKey::Fetch,
        12,
        &fetch_request("q", 0, 1 << 20, -1),
    )
    .await;
    assert!(f.responses[0].partitions[0].records.as_ref().unwrap().len() > 40_000);
    assert!(f.throttle_time_ms > 0, "{}", f.throttle_time_ms);
    let m = k.broker.metrics();
    assert_eq!(m.quota_produce_throttled.get(), 2);
    assert_eq!(m.quota_fetch_throttled.get(), 1);
}

#[tokio::test]
async fn an_address_holding_max_connections_per_ip_gets_no_more() {
    let k = start_with(|c| c.max_connections_per_ip = 2).await;
    let mut a = TcpStream::connect(&k.addr).await.unwrap();
    let mut b = TcpStream::connect(&k.addr).await.unwrap();
    assert_eq!(api_versions(&mut a).await.error_code, 0);
    assert_eq!(api_versions(&mut b).await.error_code, 0);
    let mut c = TcpStream::connect(&k.addr).await.unwrap();
    assert_closed(&mut c, "a third connection from 127.0.0.1").await;
    assert_eq!(k.broker.metrics().connections_refused.get(), 1);
    // Once one closes, its place is free again (the broker notices the close
    // asynchronously: try until it has, within a deadline).
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut d = TcpStream::connect(&k.addr).await.unwrap();
        let mut body = BytesMut::new();
        let mut h = RequestHeader::default();
        h.request_api_key = ApiKey::ApiVersions as i16;
        h.request_api_version = 3;
        h.encode(&mut body, ApiVersionsRequest::header_version(3))
            .unwrap();
        ApiVersionsRequest::default().encode(&mut body, 3).unwrap();
        send_frame(&mut d, &body).await;
        if read_frame(&mut d).await.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a closed connection's place was never freed"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(api_versions(&mut b).await.error_code, 0, "the others stay");
}
