//! What each fuzz target does with its input, and valid inputs to start from.
//!
//! A target must never panic, hang or allocate without bound, whatever the bytes: every
//! bad input is an error. Shared by the `cargo fuzz` binaries (`tests/fuzz`) and the
//! fuzz smoke test of the e2e suite, which runs these bodies over the seeds and a few
//! thousand mutations of them.

use std::sync::Arc;

use strata_record::{Batch, BatchBuilder, BatchHeader, BatchIter};

/// The batch codec on wire or disk bytes: header decode, full validation, iteration.
pub fn batch(data: &[u8]) {
    let _ = BatchHeader::decode(data);
    if let Ok((b, _min_ts)) = Batch::validate_with_min_timestamp(data) {
        for r in b.records() {
            let r = r.expect("a validated batch decodes");
            for _ in r.headers() {}
        }
    }
    for b in BatchIter::new(data) {
        let Ok(b) = b else { break };
        for r in b.records() {
            let Ok(r) = r else { break };
            for _ in r.headers() {}
        }
    }
}

/// A partition directory: the first byte picks which files are present, the next eight
/// give the lengths of the two index files, the rest is the segment's bytes and then
/// the index files'. Opening (recovery) and reading every offset must end in an answer.
pub fn segment(data: &[u8]) {
    if data.len() < 9 {
        return;
    }
    let flags = data[0];
    let idx_len = u32::from_le_bytes(data[1..5].try_into().unwrap()) as usize;
    let tix_len = u32::from_le_bytes(data[5..9].try_into().unwrap()) as usize;
    let rest = &data[9..];
    let idx_len = idx_len.min(rest.len());
    let tix_len = tix_len.min(rest.len() - idx_len);
    let log_len = rest.len() - idx_len - tix_len;
    let (log, idx) = rest.split_at(log_len);
    let (idx, tix) = idx.split_at(idx_len);
    let dir = tempfile::tempdir().expect("temp dir");
    let name = |base: i64, ext: &str| dir.path().join(format!("{base:020}.{ext}"));
    std::fs::write(name(0, "log"), log).unwrap();
    if flags & 1 != 0 {
        std::fs::write(name(0, "index"), idx).unwrap();
        std::fs::write(name(0, "timeindex"), tix).unwrap();
    }
    // Bit 1: the segment is sealed (an empty active segment follows it).
    if flags & 2 != 0 {
        std::fs::write(name(1 << 40, "log"), b"").unwrap();
    }
    let options = strata_log::OpenOptions {
        start_offset: 0,
        clean_shutdown: flags & 4 != 0,
    };
    let clock = Arc::new(strata_log::SystemClock);
    let config = strata_log::LogConfig {
        index_interval_bytes: 256,
        ..Default::default()
    };
    let Ok((log, _)) = strata_log::Log::open_with(dir.path(), "fuzz-0", config, clock, options)
    else {
        return;
    };
    // Every offset from the start, at most 4096 steps: each read answers (data or an
    // error) and a read that serves batches moves past them.
    let (mut at, end) = (log.log_start_offset(), log.log_end_offset());
    for _ in 0..4096 {
        if at >= end {
            break;
        }
        match log.read(at, 4096) {
            Ok(buf) if !buf.is_empty() => {
                let next = BatchIter::new(&buf)
                    .map_while(Result::ok)
                    .map(|b| b.header().next_offset())
                    .last();
                at = next.filter(|&n| n > at).unwrap_or(at + 1);
            }
            _ => at += 1,
        }
    }
    for ts in [i64::MIN, 0, 1000, i64::MAX] {
        let _ = log.offset_for_timestamp(ts);
    }
}

/// A record as written and as read back: offset, timestamp, key, value, headers.
type Rec = (
    i64,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(Vec<u8>, Option<Vec<u8>>)>,
);

fn records_of(batches: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    for b in BatchIter::new(batches) {
        for r in b.expect("valid batches").records() {
            let r = r.expect("valid records");
            let headers = r
                .headers()
                .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)));
            let (key, value) = (r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec));
            out.push((r.offset, r.timestamp, key, value, headers.collect()));
        }
    }
    out
}

/// The runtime the cold tier's uploader and reader run on here.
static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
});

/// How a cold object is read: whole with one GET (objects up to 16 MiB), or its footer
/// and row groups fetched on their own (larger ones).
fn readers(bucket: &strata_tier::store::Bucket) -> [Arc<strata_tier::read::ColdReader>; 2] {
    use strata_tier::read::{ColdReader, ReadOptions};
    let whole = ReadOptions {
        read_ahead_bytes: 0,
        ..Default::default()
    };
    let spans = ReadOptions {
        whole_object_bytes: 0,
        ..whole.clone()
    };
    [whole, spans].map(|o| ColdReader::new(bucket.clone(), None, o))
}

/// Every record of `seg`, read from its first offset to its last as a consumer would.
async fn read_all(
    reader: &Arc<strata_tier::read::ColdReader>,
    seg: &strata_tier::manifest::RemoteSegment,
) -> Result<Vec<Rec>, strata_tier::TierError> {
    let mut out: Vec<Rec> = Vec::new();
    let mut at = seg.base_offset;
    while at <= seg.last_offset {
        let got = records_of(&reader.read(seg, None, at, 64 * 1024).await?);
        out.extend(got.into_iter().filter(|r| r.0 >= at));
        let next = out.last().map_or(at, |r| r.0 + 1);
        assert!(next > at, "a read at offset {at} made no progress");
        at = next;
    }
    Ok(out)
}

/// Uploads the segment file holding `batches` (offsets from 0) as the broker does.
async fn upload(
    bucket: &strata_tier::store::Bucket,
    batches: &[u8],
    rows_per_group: usize,
) -> strata_tier::manifest::RemoteSegment {
    let last = records_of(batches).last().expect("records").0;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("00000000000000000000.log");
    std::fs::write(&file, batches).unwrap();
    strata_tier::remote::upload_segment_file(bucket, "t", "id", 0, &file, 0..=last, rows_per_group)
        .await
        .expect("a valid segment uploads")
}

/// The object a manifest lists, for inputs that are the bytes the bucket holds under its
/// key: its entry and its records.
async fn listed() -> &'static (strata_tier::manifest::RemoteSegment, Vec<Rec>) {
    static LISTED: tokio::sync::OnceCell<(strata_tier::manifest::RemoteSegment, Vec<Rec>)> =
        tokio::sync::OnceCell::const_new();
    LISTED
        .get_or_init(|| async {
            let bucket = strata_tier::store::open("memory://").expect("memory store");
            let batches = batches(40, 0);
            (upload(&bucket, &batches, 7).await, records_of(&batches))
        })
        .await
}

/// A length byte and that many bytes (or as many as are left) off the front of `data`.
fn take(data: &mut &[u8]) -> Vec<u8> {
    let Some((&n, rest)) = data.split_first() else {
        return Vec::new();
    };
    let (field, rest) = rest.split_at((n as usize).min(rest.len()));
    *data = rest;
    field.to_vec()
}

/// Records from fuzz bytes: per record a tag (bit 0 key, bit 1 value, bits 2-3 header
/// count, bits 4-7 timestamp step), then each field as a length byte and its bytes; a
/// header value's length byte 255 means null. At most 1000 records, in batches of up to
/// `per_batch`.
fn records_from(mut data: &[u8], per_batch: usize) -> Vec<u8> {
    let (mut out, mut ts, mut offset) = (Vec::new(), 1_000i64, 0i64);
    while !data.is_empty() && offset < 1000 {
        let mut b = BatchBuilder::new(ts, 1024);
        let mut n = 0;
        while n < per_batch && !data.is_empty() {
            let tag = data[0];
            data = &data[1..];
            ts += (tag >> 4) as i64;
            let key = (tag & 1 != 0).then(|| take(&mut data));
            let value = (tag & 2 != 0).then(|| take(&mut data));
            let mut headers = Vec::new();
            for _ in 0..(tag >> 2) & 3 {
                let k = String::from_utf8_lossy(&take(&mut data)).into_owned();
                let v = match data.split_first() {
                    Some((255, rest)) => {
                        data = rest;
                        None
                    }
                    _ => Some(take(&mut data)),
                };
                headers.push((k, v));
            }
            let headers: Vec<(&str, Option<&[u8]>)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            b.append(ts, key.as_deref(), value.as_deref(), &headers);
            n += 1;
        }
        let mut bytes = b.finish_vec();
        strata_record::set_base_offset(&mut bytes, offset);
        offset += n as i64;
        out.extend(bytes);
    }
    out
}

/// A cold-tier object through the product path: uploaded by the uploader, which records
/// its manifest entry, and read back by the cold reader, which checks every byte against
/// that entry before the parquet decoder sees it. Two kinds of input:
///
/// - bytes starting with `PAR1` are what the bucket returns for a listed object (the
///   seeds' records, uploaded once): read whole and in spans, they give back exactly
///   its records or an error;
/// - anything else is records (see [`records_from`]) after four bytes: records per
///   batch (1 + the high four bits) and rows per row group (2 to the power of the low
///   three), the position (u16) of a byte to damage, and the mask to XOR it with (0:
///   none). The object must read back exactly, whole and in spans, and undamaged also
///   through an entry from before footer and row-group CRCs were recorded. Damaged, it
///   is refused (`Corrupt`) when read whole, and read exactly or refused in spans,
///   where the leading magic and the page index are never read.
///
/// Inputs the checks refuse never reach the decoder, so a slow or failing decode here
/// is a finding in what the uploader writes.
pub fn parquet(data: &[u8]) {
    RUNTIME.block_on(parquet_async(data))
}

async fn parquet_async(data: &[u8]) {
    use object_store::ObjectStoreExt;
    use strata_tier::TierError;
    let bucket = strata_tier::store::open("memory://").expect("memory store");
    if data.starts_with(b"PAR1") {
        let (seg, records) = listed().await;
        let path = object_store::path::Path::from(seg.key.as_str());
        bucket.store.put(&path, data.to_vec().into()).await.unwrap();
        for reader in readers(&bucket) {
            if let Ok(got) = read_all(&reader, seg).await {
                assert!(&got == records, "other records than the listed object's");
            }
        }
        return;
    }
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let batches = records_from(rest, 1 + (head[0] >> 4) as usize);
    if batches.is_empty() {
        return;
    }
    let written = records_of(&batches);
    let seg = upload(&bucket, &batches, 1 << (head[0] & 7)).await;
    for reader in readers(&bucket) {
        assert!(read_all(&reader, &seg).await.unwrap() == written);
    }
    let (at, mask) = (u16::from_le_bytes([head[1], head[2]]) as u64, head[3]);
    if mask == 0 {
        let mut legacy = seg.clone();
        legacy.footer = None;
        legacy.row_group_crc32 = None;
        assert!(read_all(&readers(&bucket)[1], &legacy).await.unwrap() == written);
        return;
    }
    let path = object_store::path::Path::from(seg.key.as_str());
    let mut object = bucket
        .store
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let at = (at % seg.size_bytes) as usize;
    object[at] ^= mask;
    bucket.store.put(&path, object.into()).await.unwrap();
    let [whole, spans] = readers(&bucket);
    let refused = |e: &TierError| matches!(e, TierError::Corrupt { .. });
    match read_all(&whole, &seg).await {
        Err(e) => assert!(refused(&e), "byte {at} damaged: {e}"),
        Ok(_) => panic!("byte {at} damaged, yet the object was read whole"),
    }
    match read_all(&spans, &seg).await {
        Err(e) => assert!(refused(&e), "byte {at} damaged: {e}"),
        Ok(got) => assert!(got == written, "byte {at} damaged: other records read"),
    }
}

/// Batches of `n` records from offset `base`, with keys, values and headers.
fn batches(n: i64, base: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(1000, 1024);
    for i in 0..n {
        let v = format!("value-{i}");
        let h: Vec<(&str, Option<&[u8]>)> = if i % 3 == 0 {
            vec![("h", Some(b"x".as_slice())), ("n", None)]
        } else {
            vec![]
        };
        let key = format!("k{i}");
        let key = (i % 5 != 0).then_some(key.as_bytes());
        b.append(1000 + i, key, Some(v.as_bytes()), &h);
    }
    let mut bytes = b.finish_vec();
    strata_record::set_base_offset(&mut bytes, base);
    bytes
}

/// Valid inputs for `target`, to start fuzzing from.
/// The Kafka listener's request decoder on one frame (its length prefix already read):
/// any bytes end in a decoded request or an error, within the frame's own size.
pub fn kafka(data: &[u8]) {
    if let Ok(strata_kafka::conn::Decoded::Request(h, r)) =
        strata_kafka::conn::decode_request(bytes::Bytes::copy_from_slice(data))
    {
        // Something decoded must be something served.
        assert!(strata_kafka::apis::versions(h.api_key).is_some(), "{r:?}");
    }
}

/// Every served API at its lowest and highest version, each with a little content.
fn kafka_seeds() -> Vec<Vec<u8>> {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
    fn frame<T: Encodable + HeaderVersion>(key: ApiKey, version: i16, body: &T) -> Option<Vec<u8>> {
        let mut buf = bytes::BytesMut::new();
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = 1;
        h.client_id = Some(StrBytes::from_static_str("fuzz"));
        h.encode(&mut buf, T::header_version(version)).ok()?;
        body.encode(&mut buf, version).ok()?;
        Some(buf.to_vec())
    }
    let topic = || TopicName(StrBytes::from_static_str("t"));
    let mut out = Vec::new();
    for &(key, min, max) in strata_kafka::apis::SUPPORTED {
        for v in [min, max] {
            let f = match key {
                ApiKey::ApiVersions => {
                    let mut r = ApiVersionsRequest::default();
                    r.client_software_name = StrBytes::from_static_str("fuzz");
                    r.client_software_version = StrBytes::from_static_str("1.0");
                    frame(key, v, &r)
                }
                ApiKey::Metadata => {
                    let mut t = metadata_request::MetadataRequestTopic::default();
                    t.name = Some(topic());
                    let mut r = MetadataRequest::default();
                    r.topics = Some(vec![t]);
                    frame(key, v, &r)
                }
                ApiKey::Produce => {
                    let mut p = produce_request::PartitionProduceData::default();
                    p.records = Some(batches(3, 0).into());
                    let mut t = produce_request::TopicProduceData::default();
                    t.name = topic();
                    t.partition_data = vec![p];
                    let mut r = ProduceRequest::default();
                    r.acks = -1;
                    r.topic_data = vec![t];
                    frame(key, v, &r)
                }
                ApiKey::Fetch => {
                    let mut p = fetch_request::FetchPartition::default();
                    p.partition_max_bytes = 1 << 20;
                    let mut t = fetch_request::FetchTopic::default();
                    t.topic = topic();
                    t.partitions = vec![p];
                    let mut r = FetchRequest::default();
                    r.topics = vec![t];
                    frame(key, v, &r)
                }
                ApiKey::ListOffsets => {
                    let mut p = list_offsets_request::ListOffsetsPartition::default();
                    p.timestamp = -2;
                    let mut t = list_offsets_request::ListOffsetsTopic::default();
                    t.name = topic();
                    t.partitions = vec![p];
                    let mut r = ListOffsetsRequest::default();
                    r.topics = vec![t];
                    frame(key, v, &r)
                }
                ApiKey::InitProducerId => frame(key, v, &InitProducerIdRequest::default()),
                ApiKey::FindCoordinator => {
                    let mut r = FindCoordinatorRequest::default();
                    if v >= 4 {
                        r.coordinator_keys = vec![StrBytes::from_static_str("g")];
                    } else {
                        r.key = StrBytes::from_static_str("g");
                    }
                    frame(key, v, &r)
                }
                ApiKey::JoinGroup => {
                    let mut p = join_group_request::JoinGroupRequestProtocol::default();
                    p.name = StrBytes::from_static_str("range");
                    p.metadata = bytes::Bytes::from_static(b"\0\0\0\0\0\x01\0\x01t");
                    let mut r = JoinGroupRequest::default();
                    r.group_id = GroupId(StrBytes::from_static_str("g"));
                    r.session_timeout_ms = 10_000;
                    r.protocol_type = StrBytes::from_static_str("consumer");
                    r.protocols = vec![p];
                    frame(key, v, &r)
                }
                ApiKey::SyncGroup => {
                    let mut a = sync_group_request::SyncGroupRequestAssignment::default();
                    a.member_id = StrBytes::from_static_str("m");
                    let mut r = SyncGroupRequest::default();
                    r.group_id = GroupId(StrBytes::from_static_str("g"));
                    r.assignments = vec![a];
                    frame(key, v, &r)
                }
                ApiKey::Heartbeat => frame(key, v, &HeartbeatRequest::default()),
                ApiKey::LeaveGroup => {
                    let mut r = LeaveGroupRequest::default();
                    if v >= 3 {
                        r.members = vec![leave_group_request::MemberIdentity::default()];
                    }
                    frame(key, v, &r)
                }
                ApiKey::OffsetCommit => {
                    let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
                    t.name = topic();
                    t.partitions = vec![Default::default()];
                    let mut r = OffsetCommitRequest::default();
                    r.topics = vec![t];
                    frame(key, v, &r)
                }
                ApiKey::OffsetFetch => {
                    let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
                    t.name = topic();
                    t.partition_indexes = vec![0, 1];
                    let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                    g.group_id = GroupId(StrBytes::from_static_str("g"));
                    let mut r = OffsetFetchRequest::default();
                    if v >= 8 {
                        r.groups = vec![g];
                    } else {
                        r.topics = Some(vec![t]);
                    }
                    frame(key, v, &r)
                }
                ApiKey::ListGroups => frame(key, v, &ListGroupsRequest::default()),
                ApiKey::DescribeGroups => {
                    let mut r = DescribeGroupsRequest::default();
                    r.groups = vec![GroupId(StrBytes::from_static_str("g"))];
                    frame(key, v, &r)
                }
                ApiKey::DeleteGroups => {
                    let mut r = DeleteGroupsRequest::default();
                    r.groups_names = vec![GroupId(StrBytes::from_static_str("g"))];
                    frame(key, v, &r)
                }
                ApiKey::ConsumerGroupHeartbeat => {
                    let mut r = ConsumerGroupHeartbeatRequest::default();
                    r.group_id = GroupId(StrBytes::from_static_str("g"));
                    r.subscribed_topic_names = Some(vec![topic()]);
                    r.topic_partitions = Some(vec![Default::default()]);
                    frame(key, v, &r)
                }
                ApiKey::ConsumerGroupDescribe => {
                    let mut r = ConsumerGroupDescribeRequest::default();
                    r.group_ids = vec![GroupId(StrBytes::from_static_str("g"))];
                    frame(key, v, &r)
                }
                ApiKey::CreateTopics => {
                    let mut c = create_topics_request::CreatableTopicConfig::default();
                    c.name = StrBytes::from_static_str("retention.ms");
                    c.value = Some(StrBytes::from_static_str("1000"));
                    let mut t = create_topics_request::CreatableTopic::default();
                    t.name = topic();
                    t.num_partitions = 3;
                    t.replication_factor = 1;
                    t.configs = vec![c];
                    let mut r = CreateTopicsRequest::default();
                    r.topics = vec![t];
                    frame(key, v, &r)
                }
                ApiKey::DeleteTopics => {
                    let mut r = DeleteTopicsRequest::default();
                    if v >= 6 {
                        let mut t = delete_topics_request::DeleteTopicState::default();
                        t.name = Some(topic());
                        r.topics = vec![t];
                    } else {
                        r.topic_names = vec![topic()];
                    }
                    frame(key, v, &r)
                }
                ApiKey::CreatePartitions => {
                    let mut t = create_partitions_request::CreatePartitionsTopic::default();
                    t.name = topic();
                    t.count = 4;
                    let mut r = CreatePartitionsRequest::default();
                    r.topics = vec![t];
                    r.timeout_ms = 30_000;
                    frame(key, v, &r)
                }
                ApiKey::DescribeConfigs => {
                    let mut res = describe_configs_request::DescribeConfigsResource::default();
                    res.resource_type = 2;
                    res.resource_name = StrBytes::from_static_str("t");
                    let mut r = DescribeConfigsRequest::default();
                    r.resources = vec![res];
                    frame(key, v, &r)
                }
                ApiKey::IncrementalAlterConfigs => {
                    let mut c = incremental_alter_configs_request::AlterableConfig::default();
                    c.name = StrBytes::from_static_str("retention.ms");
                    c.value = Some(StrBytes::from_static_str("1000"));
                    let mut res =
                        incremental_alter_configs_request::AlterConfigsResource::default();
                    res.resource_type = 2;
                    res.resource_name = StrBytes::from_static_str("t");
                    res.configs = vec![c];
                    let mut r = IncrementalAlterConfigsRequest::default();
                    r.resources = vec![res];
                    frame(key, v, &r)
                }
                ApiKey::DescribeCluster => frame(key, v, &DescribeClusterRequest::default()),
                ApiKey::OffsetForLeaderEpoch => {
                    let mut p =
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
                    p.leader_epoch = 3;
                    let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
                    t.topic = topic();
                    t.partitions = vec![p];
                    let mut r = OffsetForLeaderEpochRequest::default();
                    r.topics = vec![t];
                    frame(key, v, &r)
                }
                ApiKey::SaslHandshake => {
                    let mut r = SaslHandshakeRequest::default();
                    r.mechanism = StrBytes::from_static_str("SCRAM-SHA-256");
                    frame(key, v, &r)
                }
                ApiKey::SaslAuthenticate => {
                    let mut r = SaslAuthenticateRequest::default();
                    r.auth_bytes =
                        bytes::Bytes::from_static(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
                    frame(key, v, &r)
                }
                ApiKey::DescribeUserScramCredentials => {
                    let mut u = describe_user_scram_credentials_request::UserName::default();
                    u.name = StrBytes::from_static_str("alice");
                    let mut r = DescribeUserScramCredentialsRequest::default();
                    r.users = Some(vec![u]);
                    frame(key, v, &r)
                }
                ApiKey::AlterUserScramCredentials => {
                    let mut u =
                        alter_user_scram_credentials_request::ScramCredentialUpsertion::default();
                    u.name = StrBytes::from_static_str("alice");
                    u.mechanism = 1;
                    u.iterations = 4096;
                    u.salt = bytes::Bytes::from_static(b"0123456789abcdef");
                    u.salted_password = bytes::Bytes::from_static(&[7; 32]);
                    let mut d =
                        alter_user_scram_credentials_request::ScramCredentialDeletion::default();
                    d.name = StrBytes::from_static_str("bob");
                    d.mechanism = 2;
                    let mut r = AlterUserScramCredentialsRequest::default();
                    r.upsertions = vec![u];
                    r.deletions = vec![d];
                    frame(key, v, &r)
                }
                ApiKey::CreateAcls => {
                    let mut c = create_acls_request::AclCreation::default();
                    c.resource_type = 2;
                    c.resource_name = StrBytes::from_static_str("orders");
                    c.resource_pattern_type = 3;
                    c.principal = StrBytes::from_static_str("User:alice");
                    c.host = StrBytes::from_static_str("*");
                    c.operation = 3;
                    c.permission_type = 3;
                    let mut r = CreateAclsRequest::default();
                    r.creations = vec![c];
                    frame(key, v, &r)
                }
                ApiKey::DescribeAcls => {
                    let mut r = DescribeAclsRequest::default();
                    r.resource_type_filter = 1;
                    r.resource_name_filter = Some(StrBytes::from_static_str("orders"));
                    r.pattern_type_filter = 2;
                    r.principal_filter = None;
                    r.host_filter = None;
                    r.operation = 1;
                    r.permission_type = 1;
                    frame(key, v, &r)
                }
                ApiKey::DeleteAcls => {
                    let mut f = delete_acls_request::DeleteAclsFilter::default();
                    f.resource_type_filter = 2;
                    f.resource_name_filter = None;
                    f.pattern_type_filter = 1;
                    f.principal_filter = Some(StrBytes::from_static_str("User:alice"));
                    f.host_filter = None;
                    f.operation = 1;
                    f.permission_type = 1;
                    let mut r = DeleteAclsRequest::default();
                    r.filters = vec![f];
                    frame(key, v, &r)
                }
                other => panic!("no seed for {other:?}: add one"),
            };
            out.push(f.unwrap_or_else(|| panic!("{key:?} v{v} encodes")));
        }
    }
    out
}

pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "batch" => vec![batches(1, 0), batches(7, 0), batches(30, 1000)],
        "segment" => {
            // Three batches back to back, as a segment file holds them.
            let mut log = batches(5, 0);
            log.extend(batches(5, 5));
            log.extend(batches(20, 10));
            let mut out = Vec::new();
            for flags in [0u8, 2, 3, 7] {
                let mut s = vec![flags];
                s.extend(0u32.to_le_bytes());
                s.extend(0u32.to_le_bytes());
                s.extend(&log);
                out.push(s);
            }
            out
        }
        "parquet" => {
            let mut out = Vec::new();
            for rows_per_group in [7, 1000] {
                let mut rows = strata_tier::codec::RowsBuilder::new();
                rows.append_batches(&batches(40, 0), 0).unwrap();
                let batch = rows.finish();
                let props = strata_tier::codec::writer_properties(rows_per_group);
                let mut w =
                    parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))
                        .unwrap();
                w.write(&batch).unwrap();
                out.push(w.into_inner().unwrap());
            }
            // Records: batches of 2, row groups of 8; intact, then damaged at byte 64
            // (a row group) and at byte 0 (the magic, which no reader looks at).
            let mut records = Vec::new();
            for i in 0..30u8 {
                records.extend([0x1f, 2, b'k', i, 3, b'v', i, i, 1, b'h', 255]);
                records.extend([1, b'n', 1, i, 0, 0]);
            }
            for head in [[0x13, 0, 0, 0], [0x13, 64, 0, 0xff], [0x13, 0, 0, 0x01]] {
                out.push([head.as_slice(), &records].concat());
            }
            out
        }
        "kafka" => kafka_seeds(),
        other => panic!("no fuzz target {other}"),
    }
}
