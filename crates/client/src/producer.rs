//! The batching producer.
//!
//! Records accumulate per partition in a [`BatchBuilder`] (the log's own format, one
//! buffer per batch). A batch is sent when it reaches `batch_size`, when it is older than
//! `linger` (checked by [`Producer::poll_linger`] and on sends), or on
//! [`Producer::flush`]. Batches go out in order over one `ProduceStream` per producer,
//! which the broker answers in order, so records of a partition keep their order even
//! with several requests in flight. At most `max_in_flight` requests are unanswered;
//! `send` waits when the window is full (backpressure, bounded memory).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use parking_lot::Mutex;
use strata_proto::v1 as pb;
use strata_record::BatchBuilder;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::Client;
use crate::error::{ClientError, Result};
use crate::partitioner::partition_for_key;

/// How many replicas must have a batch before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// The broker answers without offsets.
    None,
    /// The leader has appended the batch.
    Leader,
    /// Every in-sync replica has the batch.
    All,
}

impl Acks {
    fn proto(self) -> pb::Acks {
        match self {
            Acks::None => pb::Acks::None,
            Acks::Leader => pb::Acks::Leader,
            Acks::All => pb::Acks::All,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("invalid acks {other:?}: use 0, 1 or all")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Close a partition's batch when it reaches this many bytes.
    pub batch_size: usize,
    /// Send a batch at the latest this long after its first record.
    pub linger: Duration,
    pub acks: Acks,
    /// Unanswered requests allowed at once.
    pub max_in_flight: usize,
    /// Keep a list of every acknowledged batch (for tools and tests).
    pub track_acks: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            batch_size: 128 * 1024,
            linger: Duration::from_millis(5),
            acks: Acks::Leader,
            max_in_flight: 8,
            track_acks: false,
        }
    }
}

/// One acknowledged batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckedBatch {
    pub topic: String,
    pub partition: u32,
    pub base_offset: i64,
    pub record_count: u32,
}

/// What a producer has done so far.
#[derive(Debug, Clone, Default)]
pub struct ProducerStats {
    pub records_sent: u64,
    pub records_acked: u64,
    pub batches_acked: u64,
    pub bytes_acked: u64,
}

struct Pending {
    id: u64,
    topic: String,
    partition: u32,
    records: u32,
    bytes: usize,
    started: Instant,
    _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Shared {
    pending: VecDeque<Pending>,
    error: Option<ClientError>,
    stats: ProducerStats,
    acks: Vec<AckedBatch>,
    latency: Option<hdrhistogram::Histogram<u64>>,
}

struct OpenBatch {
    builder: BatchBuilder,
    opened: Instant,
}

struct TopicState {
    open: Vec<Option<OpenBatch>>,
    sticky: u32,
}

pub struct Producer {
    client: Client,
    config: ProducerConfig,
    topics: HashMap<String, TopicState>,
    tx: Option<mpsc::Sender<pb::ProduceRequest>>,
    window: Arc<Semaphore>,
    shared: Arc<Mutex<Shared>>,
    reader: Option<JoinHandle<()>>,
    next_id: u64,
    sends_since_linger_check: u32,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Producer {
    /// Opens the produce stream to the broker.
    pub async fn new(client: Client, config: ProducerConfig) -> Result<Self> {
        if config.max_in_flight == 0 || config.batch_size == 0 {
            return Err(ClientError::Invalid(
                "batch size and max in-flight requests must be at least 1".into(),
            ));
        }
        let (tx, rx) = mpsc::channel(config.max_in_flight);
        let responses = client
            .raw()
            .produce_stream(ReceiverStream::new(rx))
            .await
            .map_err(|s| client.err(s))?
            .into_inner();
        let shared = Arc::new(Mutex::new(Shared {
            latency: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
            ..Shared::default()
        }));
        let reader = tokio::spawn(read_responses(
            responses,
            shared.clone(),
            client.addr().to_string(),
            config.track_acks,
        ));
        Ok(Self {
            window: Arc::new(Semaphore::new(config.max_in_flight)),
            client,
            config,
            topics: HashMap::new(),
            tx: Some(tx),
            shared,
            reader: Some(reader),
            next_id: 0,
            sends_since_linger_check: 0,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Partitions of `topic`, learned from the broker on first use.
    pub async fn partitions(&mut self, topic: &str) -> Result<u32> {
        if let Some(t) = self.topics.get(topic) {
            return Ok(t.open.len() as u32);
        }
        let d = self.client.describe_topic(topic).await?;
        let n = d.partitions.len();
        if n == 0 {
            return Err(ClientError::Invalid(format!(
                "topic {topic:?} has no partitions"
            )));
        }
        self.topics.insert(
            topic.to_string(),
            TopicState {
                open: (0..n).map(|_| None).collect(),
                sticky: (now_ms() as u32) % n as u32,
            },
        );
        Ok(n as u32)
    }

    fn check_failed(&self) -> Result<()> {
        match &self.shared.lock().error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Adds one record. The partition is `partition` if given, else the key's hash, else
    /// the topic's sticky partition (which moves on each time a batch fills up).
    pub async fn send(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<()> {
        let n = self.partitions(topic).await?;
        let p = match (partition, key) {
            (Some(p), _) if p >= n => {
                return Err(ClientError::Invalid(format!(
                    "partition {p} does not exist in topic {topic:?}: valid partitions are 0..={}",
                    n - 1
                )));
            }
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, n),
            (None, None) => self.topics[topic].sticky,
        };
        let ts = now_ms();
        let batch_size = self.config.batch_size;
        let state = self.topics.get_mut(topic).expect("known topic");
        let slot = &mut state.open[p as usize];
        let mut full = None;
        if let Some(open) = slot
            && !open.builder.is_empty()
            && open.builder.size() + open.builder.record_size(ts, key, value, headers) > batch_size
        {
            full = slot.take();
        }
        let open = slot.get_or_insert_with(|| OpenBatch {
            builder: BatchBuilder::new(ts, batch_size.min(1 << 20) + 1024),
            opened: Instant::now(),
        });
        open.builder.append(ts, key, value, headers);
        if open.builder.size() >= batch_size && full.is_none() {
            full = slot.take();
        }
        if full.is_some() && partition.is_none() && key.is_none() {
            state.sticky = (state.sticky + 1) % n;
        }
        if let Some(b) = full {
            self.dispatch(topic, p, b).await?;
        }
        self.sends_since_linger_check += 1;
        if self.sends_since_linger_check >= 1024 {
            self.poll_linger().await?;
        }
        Ok(())
    }

    /// Sends every batch older than `linger`. Call it when no records arrive for a while
    /// (the CLI does so from a timer); `send` also calls it now and then.
    pub async fn poll_linger(&mut self) -> Result<()> {
        self.sends_since_linger_check = 0;
        let linger = self.config.linger;
        let mut due = Vec::new();
        for (topic, state) in &mut self.topics {
            for (p, slot) in state.open.iter_mut().enumerate() {
                if slot.as_ref().is_some_and(|b| b.opened.elapsed() >= linger) {
                    due.push((topic.clone(), p as u32, slot.take().expect("checked")));
                }
            }
        }
        for (topic, p, b) in due {
            self.dispatch(&topic, p, b).await?;
        }
        Ok(())
    }

    /// When the oldest open batch becomes due, if any batch is open.
    pub fn next_linger_deadline(&self) -> Option<Instant> {
        self.topics
            .values()
            .flat_map(|t| t.open.iter().flatten())
            .map(|b| b.opened + self.config.linger)
            .min()
    }

    async fn dispatch(&mut self, topic: &str, partition: u32, batch: OpenBatch) -> Result<()> {
        self.check_failed()?;
        let records = batch.builder.record_count() as u32;
        let bytes = batch.builder.finish();
        let permit = self
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed("window closed".into()))?;
        let id = self.next_id;
        self.next_id += 1;
        {
            let mut shared = self.shared.lock();
            shared.stats.records_sent += records as u64;
            shared.pending.push_back(Pending {
                id,
                topic: topic.to_string(),
                partition,
                records,
                bytes: bytes.len(),
                started: Instant::now(),
                _permit: permit,
            });
        }
        let req = pb::ProduceRequest {
            topic: topic.to_string(),
            partition,
            acks: self.config.acks.proto() as i32,
            batches: bytes,
            records: Vec::new(),
            correlation_id: id,
            ..Default::default()
        };
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| ClientError::Closed("already closed".into()))?;
        if tx.send(req).await.is_err() {
            self.check_failed()?;
            return Err(ClientError::Closed("the produce stream ended".into()));
        }
        Ok(())
    }

    /// Sends every open batch and waits until every request is answered. Fails with the
    /// first error any request met.
    pub async fn flush(&mut self) -> Result<ProducerStats> {
        let mut all = Vec::new();
        for (topic, state) in &mut self.topics {
            for (p, slot) in state.open.iter_mut().enumerate() {
                if let Some(b) = slot.take() {
                    all.push((topic.clone(), p as u32, b));
                }
            }
        }
        for (topic, p, b) in all {
            self.dispatch(&topic, p, b).await?;
        }
        let n = self.config.max_in_flight as u32;
        let permits = self
            .window
            .acquire_many(n)
            .await
            .map_err(|_| ClientError::Closed("window closed".into()))?;
        drop(permits);
        self.check_failed()?;
        Ok(self.stats())
    }

    /// Flushes and closes the stream.
    pub async fn close(mut self) -> Result<ProducerStats> {
        let stats = self.flush().await;
        self.tx = None;
        if let Some(r) = self.reader.take() {
            let _ = r.await;
        }
        stats
    }

    pub fn stats(&self) -> ProducerStats {
        self.shared.lock().stats.clone()
    }

    /// Every acknowledged batch so far (with `track_acks`).
    pub fn acked(&self) -> Vec<AckedBatch> {
        self.shared.lock().acks.clone()
    }

    /// Per-request latency histogram in microseconds.
    pub fn latency(&self) -> Option<hdrhistogram::Histogram<u64>> {
        self.shared.lock().latency.clone()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
    }
}

async fn read_responses(
    mut responses: tonic::Streaming<pb::ProduceResponse>,
    shared: Arc<Mutex<Shared>>,
    addr: String,
    track_acks: bool,
) {
    loop {
        let msg = responses.next().await;
        let mut s = shared.lock();
        let resp = match msg {
            Some(Ok(r)) => r,
            Some(Err(status)) => {
                let e = ClientError::from_status(&addr, status);
                s.error.get_or_insert(e);
                s.pending.clear();
                return;
            }
            None => {
                let unanswered = s.pending.len();
                if unanswered > 0 {
                    s.error.get_or_insert(ClientError::Unreachable {
                        addr: addr.clone(),
                        reason: format!(
                            "the broker closed the stream with {unanswered} requests unanswered"
                        ),
                    });
                }
                s.pending.clear();
                return;
            }
        };
        let Some(p) = s.pending.pop_front() else {
            s.error.get_or_insert(ClientError::Invalid(
                "broker answered a request never sent".into(),
            ));
            return;
        };
        if p.id != resp.correlation_id {
            s.error.get_or_insert(ClientError::Invalid(format!(
                "broker answered request {} while {} was expected",
                resp.correlation_id, p.id
            )));
            return;
        }
        if resp.error_code != 0 {
            let e = ClientError::Broker {
                code: tonic::Code::from(resp.error_code),
                message: resp.error_message,
            };
            s.error.get_or_insert(e);
            continue;
        }
        s.stats.records_acked += p.records as u64;
        s.stats.batches_acked += 1;
        s.stats.bytes_acked += p.bytes as u64;
        let us = p.started.elapsed().as_micros() as u64;
        if let Some(h) = s.latency.as_mut() {
            let _ = h.record(us.max(1));
        }
        if track_acks {
            s.acks.push(AckedBatch {
                topic: p.topic,
                partition: p.partition,
                base_offset: resp.base_offset,
                record_count: resp.record_count,
            });
        }
    }
}
