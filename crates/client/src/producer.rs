//! The batching producer.
//!
//! Records accumulate per partition in a [`BatchBuilder`] (the log's own format, one
//! buffer per batch). A batch is sent when it reaches `batch_size`, when it is older than
//! `linger` (checked by [`Producer::poll_linger`] and on sends), or on
//! [`Producer::flush`]. At most `max_in_flight` batches are unacknowledged; `send` waits
//! when the window is full (backpressure, bounded memory).
//!
//! A sender task takes the finished batches to each partition's leader, over one
//! `ProduceStream` per broker (answered in order, so a partition's batches keep their
//! order with several in flight). The leaders come from the cluster's metadata, asked
//! again when a broker answers that it does not lead, when a broker cannot be reached,
//! or when a partition has no leader for a moment.
//!
//! A batch that fails retriably is sent again, in its partition's order, until
//! `delivery_timeout` after it was closed. With `acks=all` the producer is idempotent
//! (Kafka's KIP-98): it gets a producer id and numbers each partition's batches, so a
//! batch sent again after an answer was lost (a leader killed mid-request, a timeout)
//! is recognised by the broker and written once; a batch refused because an earlier one
//! is missing (out of order) waits for that one and goes again after it. Without
//! idempotence only batches the broker says it did not write (not the leader, no
//! leader yet) are sent again: one whose outcome is unknown fails the producer rather
//! than risk a duplicate.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
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
    /// With `acks=all`: number the batches so the broker writes a batch sent again once
    /// (Kafka's `enable.idempotence`). Ignored with other acks.
    pub idempotent: bool,
    /// How long a batch may take, retries included, before the producer fails.
    pub delivery_timeout: Duration,
    /// Pause before a failed batch is sent again.
    pub retry_backoff: Duration,
    /// A broker that answers nothing on a stream for this long is given up on (a
    /// paused or cut-off broker holds a connection open): what it carried is sent again.
    pub request_timeout: Duration,
    /// Codec for the records of each batch (Kafka's `compression.type`).
    pub compression: strata_record::Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            batch_size: 128 * 1024,
            linger: Duration::from_millis(5),
            acks: Acks::Leader,
            max_in_flight: 8,
            track_acks: false,
            idempotent: true,
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            request_timeout: Duration::from_secs(30),
            compression: strata_record::Compression::None,
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

/// A closed batch on its way to its partition's leader.
struct Work {
    topic: Arc<str>,
    partition: u32,
    batch: Bytes,
    records: u32,
    /// Its place among its partition's batches (sequence order when idempotent).
    order: u64,
    started: Instant,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Shared {
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
    name: Arc<str>,
    open: Vec<Option<OpenBatch>>,
    /// Per partition: the sequence number of the next batch's first record.
    next_seq: Vec<i32>,
    sticky: u32,
    /// When the partition count was last asked for (ms since the epoch, the clock
    /// record timestamps come from).
    described_ms: i64,
}

/// How long a topic's partition count is trusted before it is asked for again (Kafka's
/// `metadata.max.age.ms`): partitions added since get records by key from then on.
const METADATA_MAX_AGE_MS: i64 = 300_000;

pub struct Producer {
    client: Client,
    config: ProducerConfig,
    topics: HashMap<String, TopicState>,
    tx: Option<mpsc::UnboundedSender<Work>>,
    window: Arc<Semaphore>,
    shared: Arc<Mutex<Shared>>,
    sender: Option<JoinHandle<()>>,
    /// (producer id, epoch) when idempotent.
    producer_id: Option<(i64, i16)>,
    next_order: u64,
    sends_since_linger_check: u32,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Producer {
    /// Starts a producer on the cluster `client` is connected to (an idempotent one
    /// gets its producer id here).
    pub async fn new(client: Client, config: ProducerConfig) -> Result<Self> {
        if config.max_in_flight == 0 || config.batch_size == 0 {
            return Err(ClientError::Invalid(
                "batch size and max in-flight requests must be at least 1".into(),
            ));
        }
        let producer_id = if config.idempotent && config.acks == Acks::All {
            Some(client.init_producer_id().await?)
        } else {
            None
        };
        let shared = Arc::new(Mutex::new(Shared {
            latency: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
            ..Shared::default()
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = Sender::new(
            client.clone(),
            &config,
            producer_id.is_some(),
            shared.clone(),
        );
        let sender = tokio::spawn(sender.run(rx));
        Ok(Self {
            window: Arc::new(Semaphore::new(config.max_in_flight)),
            client,
            config,
            topics: HashMap::new(),
            tx: Some(tx),
            shared,
            sender: Some(sender),
            producer_id,
            next_order: 0,
            sends_since_linger_check: 0,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The producer id and epoch, when idempotent.
    pub fn producer_id(&self) -> Option<(i64, i16)> {
        self.producer_id
    }

    /// Partitions of `topic`, learned from the broker on first use.
    pub async fn partitions(&mut self, topic: &str) -> Result<u32> {
        self.partitions_at(topic, now_ms()).await
    }

    /// [`Producer::partitions`] as of `now` (ms): `send` passes the clock reading its
    /// record's timestamp takes, so a record costs one.
    async fn partitions_at(&mut self, topic: &str, now: i64) -> Result<u32> {
        let Some(t) = self.topics.get(topic) else {
            return self.describe_partitions(topic).await;
        };
        if now - t.described_ms < METADATA_MAX_AGE_MS {
            return Ok(t.open.len() as u32);
        }
        let known = t.open.len() as u32;
        match self.describe_partitions(topic).await {
            Ok(n) => Ok(n),
            // The count known still holds (partitions are never removed): asked again
            // at the next age-out.
            Err(e) => {
                tracing::debug!(topic, error = %e, "could not refresh the partition count");
                if let Some(t) = self.topics.get_mut(topic) {
                    t.described_ms = now;
                }
                Ok(known)
            }
        }
    }

    /// Asks for a topic's partition count; a count grown since adds partitions (one
    /// never shrinks: partitions are never removed).
    async fn describe_partitions(&mut self, topic: &str) -> Result<u32> {
        let d = self.client.describe_topic(topic).await?;
        let n = d.partitions.len();
        if n == 0 {
            return Err(ClientError::Invalid(format!(
                "topic {topic:?} has no partitions"
            )));
        }
        let state = self
            .topics
            .entry(topic.to_string())
            .or_insert_with(|| TopicState {
                name: topic.into(),
                open: Vec::new(),
                next_seq: Vec::new(),
                sticky: (now_ms() as u32) % n as u32,
                described_ms: 0,
            });
        state.described_ms = now_ms();
        if n > state.open.len() {
            state.open.resize_with(n, || None);
            state.next_seq.resize(n, 0);
        }
        Ok(state.open.len() as u32)
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
        let ts = now_ms();
        let mut n = self.partitions_at(topic, ts).await?;
        if partition.is_some_and(|p| p >= n) {
            // Partitions may have been added since the count was asked for.
            n = self.describe_partitions(topic).await?;
        }
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
        let mut builder = batch.builder;
        let records = builder.record_count() as u32;
        let state = self.topics.get_mut(topic).expect("known topic");
        if let Some((id, epoch)) = self.producer_id {
            let seq = &mut state.next_seq[partition as usize];
            builder.set_producer(id, epoch, *seq);
            *seq = strata_record::increment_sequence(*seq, records as i32);
        }
        let mut bytes = builder.finish();
        if self.config.compression != strata_record::Compression::None {
            let packed =
                strata_record::compression::compress_batch(self.config.compression, &bytes);
            bytes = packed.into();
        }
        let permit = self
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed("window closed".into()))?;
        self.shared.lock().stats.records_sent += records as u64;
        let now = Instant::now();
        let work = Work {
            topic: state.name.clone(),
            partition,
            batch: bytes,
            records,
            order: self.next_order,
            started: now,
            deadline: now + self.config.delivery_timeout,
            _permit: permit,
        };
        self.next_order += 1;
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| ClientError::Closed("already closed".into()))?;
        if tx.send(work).is_err() {
            self.check_failed()?;
            return Err(ClientError::Closed("the sender stopped".into()));
        }
        Ok(())
    }

    /// Sends every open batch and waits until every batch is acknowledged (retries
    /// included). Fails with the first error any batch met.
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

    /// Flushes and stops the sender.
    pub async fn close(mut self) -> Result<ProducerStats> {
        let stats = self.flush().await;
        self.tx = None;
        if let Some(s) = self.sender.take() {
            let _ = s.await;
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

    /// Per-batch latency histogram in microseconds (retries included).
    pub fn latency(&self) -> Option<hdrhistogram::Histogram<u64>> {
        self.shared.lock().latency.clone()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if let Some(s) = self.sender.take() {
            s.abort();
        }
    }
}

/// What a broker connection reports to the sender.
enum Event {
    Answer(String, pb::ProduceResponse),
    /// The stream ended (an error, or the broker went away).
    Closed(String, String),
}

/// One `ProduceStream` to a broker.
struct Conn {
    tx: mpsc::Sender<pb::ProduceRequest>,
    /// Requests sent on it and not answered, in order, with when they were sent.
    unanswered: VecDeque<(u64, Instant)>,
    reader: JoinHandle<()>,
}

/// One partition's batches not yet acknowledged.
#[derive(Default)]
struct Part {
    /// Waiting to be sent, in order.
    queue: VecDeque<Work>,
    /// Sent and unanswered (by request id).
    in_flight: usize,
    /// Sending waits until then (after a failure).
    paused_until: Option<Instant>,
    /// The broker its unanswered batches went to: a partition's batches go to one
    /// broker at a time, so a new leader never sees a batch before an earlier one.
    sent_to: Option<String>,
}

type Key = (Arc<str>, u32);

/// Batches of one partition in flight at once when idempotent (Kafka's limit too).
const IDEMPOTENT_IN_FLIGHT: usize = 5;

/// How long metadata and a new stream may take before the broker is passed over.
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);

/// The task that takes batches to the leaders and sends failed ones again.
struct Sender {
    client: Client,
    acks: pb::Acks,
    idempotent: bool,
    track_acks: bool,
    backoff: Duration,
    request_timeout: Duration,
    window: usize,
    shared: Arc<Mutex<Shared>>,
    leaders: HashMap<Key, String>,
    /// Brokers learned from the metadata, asked for it when the bootstrap one fails.
    brokers: Vec<String>,
    conns: HashMap<String, Conn>,
    parts: HashMap<Key, Part>,
    /// Request id -> (partition, batch, broker).
    in_flight: HashMap<u64, (Key, Work, String)>,
    next_id: u64,
    events: (mpsc::UnboundedSender<Event>, mpsc::UnboundedReceiver<Event>),
}

impl Sender {
    fn new(
        client: Client,
        config: &ProducerConfig,
        idempotent: bool,
        shared: Arc<Mutex<Shared>>,
    ) -> Self {
        Self {
            client,
            acks: config.acks.proto(),
            idempotent,
            track_acks: config.track_acks,
            backoff: config.retry_backoff,
            request_timeout: config.request_timeout,
            window: config.max_in_flight,
            shared,
            leaders: HashMap::new(),
            brokers: Vec::new(),
            conns: HashMap::new(),
            parts: HashMap::new(),
            in_flight: HashMap::new(),
            next_id: 0,
            events: mpsc::unbounded_channel(),
        }
    }

    async fn run(mut self, mut work: mpsc::UnboundedReceiver<Work>) {
        let mut open = true;
        loop {
            let busy =
                !self.in_flight.is_empty() || self.parts.values().any(|p| !p.queue.is_empty());
            if !open && !busy {
                break;
            }
            let wake = self.parts.values().filter_map(|p| p.paused_until).min();
            let stale = self
                .conns
                .values()
                .filter_map(|c| {
                    c.unanswered
                        .front()
                        .map(|(_, at)| *at + self.request_timeout)
                })
                .min();
            tokio::select! {
                _ = sleep_until(stale), if stale.is_some() => {
                    let now = Instant::now();
                    let silent: Vec<String> = self
                        .conns
                        .iter()
                        .filter(|(_, c)| c.unanswered.front().is_some_and(|(_, at)| *at + self.request_timeout <= now))
                        .map(|(a, _)| a.clone())
                        .collect();
                    for addr in silent {
                        let why = format!("no answer within {:?}", self.request_timeout);
                        self.on_event(Event::Closed(addr, why)).await;
                    }
                }
                w = work.recv(), if open => match w {
                    Some(w) => {
                        let key = (w.topic.clone(), w.partition);
                        self.parts.entry(key.clone()).or_default().queue.push_back(w);
                        self.pump(&key).await;
                    }
                    None => open = false,
                },
                Some(e) = self.events.1.recv() => self.on_event(e).await,
                _ = sleep_until(wake), if wake.is_some() => {
                    let now = Instant::now();
                    let due: Vec<Key> = self
                        .parts
                        .iter()
                        .filter(|(_, p)| p.paused_until.is_some_and(|t| t <= now))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in due {
                        if let Some(p) = self.parts.get_mut(&key) {
                            p.paused_until = None;
                        }
                        self.pump(&key).await;
                    }
                }
            }
        }
        for (_, c) in self.conns.drain() {
            c.reader.abort();
        }
    }

    /// Sends `key`'s queued batches to its leader, unless it is paused or batches of
    /// it are unanswered by another broker (they are answered or fail first, so a new
    /// leader gets the partition's batches in order).
    async fn pump(&mut self, key: &Key) {
        loop {
            let Some(part) = self.parts.get(key) else {
                return;
            };
            if part.paused_until.is_some() || part.queue.is_empty() {
                return;
            }
            let Some(addr) = self.leader(key).await else {
                self.pause(key);
                return;
            };
            let part = self.parts.get(key).expect("checked");
            if part.in_flight > 0 && part.sent_to.as_deref() != Some(addr.as_str()) {
                return;
            }
            // The broker remembers a producer's last five batches per partition: more
            // in flight, and one sent again could be too old to be recognised.
            if self.idempotent && part.in_flight >= IDEMPOTENT_IN_FLIGHT {
                return;
            }
            let Some(tx) = self.conn(&addr).await else {
                self.leaders.remove(key);
                self.pause(key);
                return;
            };
            let part = self.parts.get_mut(key).expect("checked");
            let w = part.queue.pop_front().expect("checked");
            if Instant::now() > w.deadline {
                self.fail(ClientError::Invalid(format!(
                    "a batch for {}-{} was not delivered within the delivery timeout",
                    key.0, key.1
                )));
                continue;
            }
            part.in_flight += 1;
            part.sent_to = Some(addr.clone());
            let id = self.next_id;
            self.next_id += 1;
            let req = pb::ProduceRequest {
                topic: w.topic.to_string(),
                partition: w.partition,
                acks: self.acks as i32,
                batches: w.batch.clone(),
                correlation_id: id,
                ..Default::default()
            };
            if let Some(c) = self.conns.get_mut(&addr) {
                c.unanswered.push_back((id, Instant::now()));
            }
            self.in_flight.insert(id, (key.clone(), w, addr.clone()));
            if tx.send(req).await.is_err() {
                // Its reader reports the stream closed, which fails what it carried.
                return;
            }
        }
    }

    /// Pauses `key` for the retry backoff.
    fn pause(&mut self, key: &Key) {
        if let Some(p) = self.parts.get_mut(key) {
            p.paused_until = Some(Instant::now() + self.backoff);
        }
    }

    fn fail(&self, e: ClientError) {
        self.shared.lock().error.get_or_insert(e);
    }

    /// The leader's address for `key`, from the metadata when not known.
    async fn leader(&mut self, key: &Key) -> Option<String> {
        if let Some(a) = self.leaders.get(key) {
            return Some(a.clone());
        }
        self.refresh(&key.0).await;
        self.leaders.get(key).cloned()
    }

    /// Asks for `topic`'s leaders and the brokers' addresses: the bootstrap broker
    /// first, then the others it named before.
    async fn refresh(&mut self, topic: &str) {
        let others: Vec<String> = self
            .brokers
            .iter()
            .filter(|b| *b != self.client.addr())
            .cloned()
            .collect();
        // The bootstrap broker first; another is connected to only when it fails.
        for other in std::iter::once(None).chain(others.into_iter().map(Some)) {
            let c = match other {
                None => self.client.clone(),
                Some(addr) => match self.client.sibling(&addr).await {
                    Ok(c) => c,
                    Err(_) => continue,
                },
            };
            // Bounded: a paused broker accepts connections and answers nothing.
            let ask = async { (c.describe_cluster().await, c.describe_topic(topic).await) };
            if let Ok((Ok(cluster), Ok(d))) = tokio::time::timeout(METADATA_TIMEOUT, ask).await {
                self.learn(topic, c.addr(), cluster, d);
                return;
            }
        }
    }

    /// Takes in `topic`'s leaders and the brokers' addresses, as the broker reached at
    /// `asked` described them.
    fn learn(
        &mut self,
        topic: &str,
        asked: &str,
        cluster: pb::DescribeClusterResponse,
        d: pb::TopicDescription,
    ) {
        let addr_of: HashMap<u64, String> = cluster
            .brokers
            .iter()
            .map(|b| (b.id, b.address.clone()))
            .collect();
        self.brokers = cluster
            .brokers
            .into_iter()
            .filter(|b| b.state == "active")
            .map(|b| b.address)
            .collect();
        for p in d.partitions {
            let key: Key = (topic.into(), p.partition);
            let leader = u64::try_from(p.leader).ok();
            // The broker that answered is reached where it was reached (its advertised
            // address may be one only other brokers can use).
            let addr = match leader {
                Some(l) if l == cluster.node_id => Some(asked.to_string()),
                Some(l) => addr_of.get(&l).cloned(),
                None => None,
            };
            match addr {
                Some(a) => self.leaders.insert(key, a),
                None => self.leaders.remove(&key),
            };
        }
    }

    /// The stream to `addr`, opened if needed.
    async fn conn(&mut self, addr: &str) -> Option<mpsc::Sender<pb::ProduceRequest>> {
        if !self.conns.contains_key(addr) {
            let client = if addr == self.client.addr() {
                self.client.clone()
            } else {
                self.client.sibling(addr).await.ok()?
            };
            let (tx, rx) = mpsc::channel(self.window.max(1));
            let mut raw = client.raw();
            let open = raw.produce_stream(ReceiverStream::new(rx));
            let responses = tokio::time::timeout(METADATA_TIMEOUT, open)
                .await
                .ok()?
                .ok()?
                .into_inner();
            let reader = tokio::spawn(read_responses(
                responses,
                addr.to_string(),
                self.events.0.clone(),
            ));
            self.conns.insert(
                addr.to_string(),
                Conn {
                    tx,
                    unanswered: VecDeque::new(),
                    reader,
                },
            );
        }
        self.conns.get(addr).map(|c| c.tx.clone())
    }

    async fn on_event(&mut self, e: Event) {
        match e {
            Event::Answer(addr, resp) => {
                let expected = self
                    .conns
                    .get_mut(&addr)
                    .and_then(|c| c.unanswered.pop_front())
                    .map(|(id, _)| id);
                if expected != Some(resp.correlation_id) {
                    self.fail(ClientError::Invalid(format!(
                        "broker {addr} answered request {} while {expected:?} was expected",
                        resp.correlation_id
                    )));
                    return;
                }
                let Some((key, w, _)) = self.in_flight.remove(&resp.correlation_id) else {
                    return;
                };
                if let Some(p) = self.parts.get_mut(&key) {
                    p.in_flight -= 1;
                }
                if resp.error_code == 0 {
                    self.acked(&key, w, &resp);
                } else {
                    let error = ClientError::Broker {
                        code: tonic::Code::from(resp.error_code),
                        message: resp.error_message.clone(),
                    };
                    self.retry_or_fail(key.clone(), w, error, &resp);
                }
                self.pump(&key).await;
            }
            Event::Closed(addr, reason) => {
                let Some(conn) = self.conns.remove(&addr) else {
                    return;
                };
                conn.reader.abort();
                for (id, _) in conn.unanswered {
                    let Some((key, w, _)) = self.in_flight.remove(&id) else {
                        continue;
                    };
                    if let Some(p) = self.parts.get_mut(&key) {
                        p.in_flight -= 1;
                    }
                    let error = ClientError::Unreachable {
                        addr: addr.clone(),
                        reason: reason.clone(),
                    };
                    let unknown = pb::ProduceResponse {
                        outcome_unknown: true,
                        ..Default::default()
                    };
                    self.retry_or_fail(key.clone(), w, error, &unknown);
                    self.pump(&key).await;
                }
            }
        }
    }

    fn acked(&mut self, key: &Key, w: Work, resp: &pb::ProduceResponse) {
        let mut s = self.shared.lock();
        s.stats.records_acked += w.records as u64;
        s.stats.batches_acked += 1;
        s.stats.bytes_acked += w.batch.len() as u64;
        let us = w.started.elapsed().as_micros() as u64;
        if let Some(h) = s.latency.as_mut() {
            let _ = h.record(us.max(1));
        }
        if self.track_acks {
            s.acks.push(AckedBatch {
                topic: key.0.to_string(),
                partition: key.1,
                base_offset: resp.base_offset,
                record_count: resp.record_count,
            });
        }
    }

    /// A batch that failed with `error`: queued again in its partition's order when
    /// that is safe and time is left, else the producer fails.
    fn retry_or_fail(&mut self, key: Key, w: Work, error: ClientError, resp: &pb::ProduceResponse) {
        let kind = resp.error_kind.as_str();
        let part = self.parts.entry(key.clone()).or_default();
        // Out of order: an earlier batch of the partition failed and goes again first.
        let earlier_pending = part.queue.iter().any(|q| q.order < w.order)
            || self
                .in_flight
                .values()
                .any(|(k, q, _)| *k == key && q.order < w.order);
        let retriable = match kind {
            "OutOfOrderSequence" => self.idempotent && earlier_pending,
            _ => error.is_retriable() && (self.idempotent || !resp.outcome_unknown),
        };
        if !retriable || Instant::now() > w.deadline {
            self.fail(error);
            return;
        }
        // The broker that refused may name the leader; else ask the metadata again.
        if resp.leader_address.is_empty() {
            self.leaders.remove(&key);
        } else {
            self.leaders
                .insert(key.clone(), resp.leader_address.clone());
        }
        let part = self.parts.get_mut(&key).expect("inserted");
        let at = part
            .queue
            .iter()
            .position(|q| q.order > w.order)
            .unwrap_or(part.queue.len());
        part.queue.insert(at, w);
        if part.paused_until.is_none() {
            part.paused_until = Some(Instant::now() + self.backoff);
        }
        tracing::debug!(topic = %key.0, partition = key.1, %error, "sending a batch again");
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn read_responses(
    mut responses: tonic::Streaming<pb::ProduceResponse>,
    addr: String,
    events: mpsc::UnboundedSender<Event>,
) {
    loop {
        let event = match responses.next().await {
            Some(Ok(r)) => Event::Answer(addr.clone(), r),
            Some(Err(status)) => Event::Closed(addr.clone(), status.message().to_string()),
            None => Event::Closed(addr.clone(), "the broker closed the stream".into()),
        };
        let closed = matches!(event, Event::Closed(..));
        if events.send(event).is_err() || closed {
            return;
        }
    }
}
