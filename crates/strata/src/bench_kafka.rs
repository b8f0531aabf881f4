//! `strata bench produce|consume --kafka HOST:PORT`: the gRPC benchmarks' load over the
//! Kafka listener. Records go into batches through the same builder, with the same
//! sticky partitioning, as the gRPC producer's; each batch is one Produce request, at
//! most `--max-in-flight` unanswered per connection. The consumer fetches each
//! partition on its own connection and walks every record as the gRPC consumer does.
//! One client for both front ends, so their figures compare the broker, not two
//! clients of different speed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use strata_client::consumer::Batches;
use strata_record::BatchBuilder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::bench::{Payload, Values, histogram, progress};

/// Flexible versions every Kafka since 2.4 (and this listener) speaks.
const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const METADATA_VERSION: i16 = 9;
const CREATE_TOPICS_VERSION: i16 = 5;

/// One request as a frame: length, header, body.
fn frame<Req: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    req: &Req,
    capacity: usize,
) -> Result<Bytes> {
    let mut buf = BytesMut::with_capacity(capacity + 128);
    buf.put_i32(0);
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("strata-bench"));
    header.encode(&mut buf, Req::header_version(version))?;
    req.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> Result<Bytes> {
    let len = r.read_i32().await.context("reading a response")?;
    if !(0..=(256 << 20)).contains(&len) {
        bail!("the broker sent a frame of {len} bytes");
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await.context("reading a response")?;
    Ok(buf.into())
}

/// A response's body, its header checked.
fn decode<Resp: Decodable + HeaderVersion>(mut f: Bytes, version: i16) -> Result<Resp> {
    ResponseHeader::decode(&mut f, Resp::header_version(version))?;
    Resp::decode(&mut f, version)
}

fn check(code: i16, what: &str) -> Result<()> {
    match code {
        0 => Ok(()),
        _ => Err(error(code, what)),
    }
}

fn error(code: i16, what: &str) -> anyhow::Error {
    match ResponseError::try_from_code(code) {
        Some(e) => anyhow!("{what}: {e:?} ({code})"),
        None => anyhow!("{what}: error code {code}"),
    }
}

/// One request and its answer, on a connection with nothing else in flight.
async fn call<Req, Resp>(conn: &mut TcpStream, key: ApiKey, version: i16, req: &Req) -> Result<Resp>
where
    Req: Encodable + HeaderVersion,
    Resp: Decodable + HeaderVersion,
{
    conn.write_all(&frame(key, version, 1, req, 0)?).await?;
    decode(read_frame(conn).await?, version)
}

async fn connect(addr: &str) -> Result<TcpStream> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the Kafka listener at {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The topic's partition count; a missing topic is created with `create` partitions if
/// given.
async fn ensure_topic(addr: &str, topic: &str, create: Option<u32>) -> Result<u32> {
    let mut conn = connect(addr).await?;
    let name = TopicName(StrBytes::from_string(topic.to_string()));
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(name.clone());
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    // Created below with the partitions asked for, not the broker's default.
    req.allow_auto_topic_creation = false;
    let md: MetadataResponse = call(&mut conn, ApiKey::Metadata, METADATA_VERSION, &req).await?;
    let found = &md.topics[0];
    if found.error_code == 0 {
        return Ok(found.partitions.len() as u32);
    }
    let missing = ResponseError::try_from_code(found.error_code)
        == Some(ResponseError::UnknownTopicOrPartition);
    let Some(partitions) = create.filter(|_| missing) else {
        return Err(error(found.error_code, &format!("metadata of {topic}")));
    };
    let mut t = create_topics_request::CreatableTopic::default();
    t.name = name;
    t.num_partitions = partitions as i32;
    t.replication_factor = -1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 30_000;
    let r: CreateTopicsResponse =
        call(&mut conn, ApiKey::CreateTopics, CREATE_TOPICS_VERSION, &req).await?;
    check(r.topics[0].error_code, &format!("creating {topic}"))?;
    Ok(partitions)
}

/// What one producing connection was given.
struct ProduceJob {
    addr: String,
    topic: String,
    /// This connection's index and how many there are: record `j` of this one is
    /// record `j * concurrency + index` of the run.
    index: usize,
    concurrency: usize,
    records: u64,
    partitions: u32,
    batch_size: usize,
    acks: i16,
    max_in_flight: usize,
    payload: Arc<Values>,
    sent: Arc<AtomicU64>,
    sent_bytes: Arc<AtomicU64>,
}

/// Sends one connection's records; returns how many were acknowledged and the latency
/// of each Produce request (µs).
async fn produce_one(job: ProduceJob) -> Result<(u64, hdrhistogram::Histogram<u64>)> {
    let (r, mut w) = connect(&job.addr).await?.into_split();
    // Answers come in request order: the reader pairs each with its send time.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, u64)>(job.max_in_flight.max(1));
    let reader = tokio::spawn(async move {
        let mut r = BufReader::with_capacity(64 << 10, r);
        let mut hist = histogram()?;
        let mut acked = 0;
        while let Some((at, n)) = rx.recv().await {
            let resp: ProduceResponse = decode(read_frame(&mut r).await?, PRODUCE_VERSION)?;
            for t in &resp.responses {
                for p in &t.partition_responses {
                    check(p.error_code, &format!("produce to partition {}", p.index))?;
                }
            }
            let _ = hist.record(at.elapsed().as_micros().max(1) as u64);
            acked += n;
        }
        Ok::<_, anyhow::Error>((acked, hist))
    });
    let name = TopicName(StrBytes::from_string(job.topic.clone()));
    let per_batch = (job.batch_size / (job.payload.size + 8)).max(1) as u64;
    let mut open: Option<(u32, BatchBuilder)> = None;
    let mut unacked = 0u64;
    let mut id = 0i32;
    let mut send = async |partition: u32, batch: BatchBuilder| -> Result<()> {
        let n = batch.record_count() as u64;
        let mut p = produce_request::PartitionProduceData::default();
        p.index = partition as i32;
        p.records = Some(batch.finish());
        let mut t = produce_request::TopicProduceData::default();
        t.name = name.clone();
        t.partition_data = vec![p];
        let mut req = ProduceRequest::default();
        req.acks = job.acks;
        req.timeout_ms = 30_000;
        req.topic_data = vec![t];
        id = id.wrapping_add(1);
        let f = frame(ApiKey::Produce, PRODUCE_VERSION, id, &req, job.batch_size)?;
        if job.acks == 0 {
            unacked += n;
        } else {
            tx.send((Instant::now(), n))
                .await
                .map_err(|_| anyhow!("the connection's reader stopped"))?;
        }
        w.write_all(&f).await.context("sending a produce")?;
        job.sent.fetch_add(n, Ordering::Relaxed);
        job.sent_bytes
            .fetch_add(n * job.payload.size as u64, Ordering::Relaxed);
        Ok(())
    };
    for j in 0..job.records {
        let partition = ((j / per_batch) as u32 + job.index as u32) % job.partitions;
        let value = job
            .payload
            .get(j * job.concurrency as u64 + job.index as u64);
        let ts = crate::bench::now_ms();
        if let Some((p, b)) = &open
            && (*p != partition
                || b.size() + b.record_size(ts, None, Some(value), &[]) > job.batch_size)
        {
            let (p, b) = open.take().expect("open");
            send(p, b).await?;
        }
        let (_, b) = open.get_or_insert_with(|| (partition, BatchBuilder::new(ts, job.batch_size)));
        b.append(ts, None, Some(value), &[]);
    }
    if let Some((p, b)) = open.take() {
        send(p, b).await?;
    }
    drop(tx);
    let (acked, hist) = reader.await??;
    w.shutdown().await.ok();
    Ok((acked + unacked, hist))
}

#[allow(clippy::too_many_arguments)]
pub async fn produce(
    addr: &str,
    topic: &str,
    records: u64,
    record_size: usize,
    partitions: u32,
    concurrency: usize,
    batch_size: usize,
    acks: i16,
    max_in_flight: usize,
    payload: Payload,
) -> Result<()> {
    let partitions = ensure_topic(addr, topic, Some(partitions)).await?;
    let payload = Arc::new(Values::new(payload, record_size));
    let sent = Arc::new(AtomicU64::new(0));
    let sent_bytes = Arc::new(AtomicU64::new(0));
    let reporter = progress("produce", sent.clone(), sent_bytes.clone());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for index in 0..concurrency {
        let n =
            records / concurrency as u64 + u64::from((index as u64) < records % concurrency as u64);
        tasks.push(tokio::spawn(produce_one(ProduceJob {
            addr: addr.to_string(),
            topic: topic.to_string(),
            index,
            concurrency,
            records: n,
            partitions,
            batch_size,
            acks,
            max_in_flight,
            payload: payload.clone(),
            sent: sent.clone(),
            sent_bytes: sent_bytes.clone(),
        })));
    }
    let mut acked = 0;
    let mut hist = histogram()?;
    for t in tasks {
        let (n, h) = t.await??;
        acked += n;
        hist.add(h)?;
    }
    let secs = started.elapsed().as_secs_f64();
    reporter.abort();
    crate::bench::report_produce(acked, record_size, secs, &hist, "Kafka");
    if acked != records {
        bail!("only {acked} of {records} records were acknowledged");
    }
    Ok(())
}

/// Reads one partition from offset 0 to the high watermark its first answer gives.
/// The next Fetch goes out before an answer's records are walked (as Kafka's consumers
/// prefetch), so at most one is in flight and the broker works while the client reads.
/// Returns the time between answers (µs).
async fn consume_one(
    addr: String,
    topic: String,
    partition: i32,
    fetch_size: u32,
    count: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
) -> Result<hdrhistogram::Histogram<u64>> {
    let (r, mut w) = connect(&addr).await?.into_split();
    let mut r = BufReader::with_capacity(256 << 10, r);
    let name = TopicName(StrBytes::from_string(topic.clone()));
    let fetch = |offset: i64, id: i32| {
        let mut p = fetch_request::FetchPartition::default();
        p.partition = partition;
        p.fetch_offset = offset;
        p.partition_max_bytes = fetch_size as i32;
        p.current_leader_epoch = -1;
        let mut ft = fetch_request::FetchTopic::default();
        ft.topic = name.clone();
        ft.partitions = vec![p];
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = 500;
        req.min_bytes = 1;
        req.max_bytes = fetch_size as i32;
        req.session_epoch = -1;
        req.topics = vec![ft];
        frame(ApiKey::Fetch, FETCH_VERSION, id, &req, 0)
    };
    let mut hist = histogram()?;
    let mut position = 0i64;
    let mut id = 1;
    w.write_all(&fetch(position, id)?).await?;
    let mut end = None;
    let mut t = Instant::now();
    loop {
        let resp: FetchResponse = decode(read_frame(&mut r).await?, FETCH_VERSION)?;
        check(resp.error_code, "fetch")?;
        let pd = &resp.responses[0].partitions[0];
        check(pd.error_code, &format!("fetch of {topic}-{partition}"))?;
        let end = *end.get_or_insert(pd.high_watermark);
        let data = pd.records.clone().unwrap_or_default();
        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
        t = Instant::now();
        let mut next = position;
        let mut at = 0;
        while let Some(Ok(len)) = strata_record::batch_total_len(&data[at..]) {
            if at + len > data.len() {
                break;
            }
            next = strata_record::BatchHeader::decode(&data[at..])?.next_offset();
            at += len;
        }
        if next == position && position < end {
            bail!(
                "{topic}-{partition}: an empty fetch at {position}, below the high watermark {end}"
            );
        }
        if next < end {
            id += 1;
            w.write_all(&fetch(next, id)?).await?;
        }
        let batches = Batches::new(partition as u32, position, next, end, data);
        let (mut n, mut sz) = (0u64, 0u64);
        for rec in batches.records() {
            let rec = rec?;
            if rec.offset >= end {
                break;
            }
            n += 1;
            sz += rec.value.map_or(0, |v| v.len()) as u64 + rec.key.map_or(0, |k| k.len()) as u64;
        }
        count.fetch_add(n, Ordering::Relaxed);
        bytes.fetch_add(sz, Ordering::Relaxed);
        position = next;
        if position >= end {
            return Ok(hist);
        }
    }
}

pub async fn consume(addr: &str, topic: &str, fetch_size: u32) -> Result<()> {
    let partitions = ensure_topic(addr, topic, None).await?;
    let count = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let reporter = progress("consume", count.clone(), bytes.clone());
    let started = Instant::now();
    let tasks: Vec<_> = (0..partitions as i32)
        .map(|p| {
            tokio::spawn(consume_one(
                addr.to_string(),
                topic.to_string(),
                p,
                fetch_size,
                count.clone(),
                bytes.clone(),
            ))
        })
        .collect();
    let mut hist = histogram()?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    reporter.abort();
    crate::bench::report_consume(&count, &bytes, secs, &hist, "Kafka");
    Ok(())
}
