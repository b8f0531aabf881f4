//! `strata bench`: a load generator in the manner of kafka-producer-perf-test and
//! kafka-consumer-perf-test. Prints progress every few seconds, then records/s, MB/s
//! and latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cli::BrokerArg;
use anyhow::{Result, bail};
use clap::Subcommand;
use futures::StreamExt;
use strata_client::{Acks, Client, ClientError, Producer, ProducerConfig, StartOffset, consumer};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Produce records as fast as the broker takes them.
    Produce {
        /// Topic to write (created with --partitions if missing).
        #[arg(long, default_value = "strata-bench")]
        topic: String,
        /// Records in total.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Bytes per record value.
        #[arg(long, default_value_t = 100)]
        record_size: usize,
        /// Bytes per batch.
        #[arg(long, default_value_t = 256 * 1024)]
        batch_size: usize,
        /// Partitions of the topic if it is created.
        #[arg(long, default_value_t = 3)]
        partitions: u32,
        /// 0, 1 or all.
        #[arg(long, default_value = "1")]
        acks: String,
        /// Producers, each with its own connection.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Unanswered requests per producer.
        #[arg(long, default_value_t = 8)]
        max_in_flight: usize,
        #[arg(long, default_value_t = 5)]
        linger_ms: u64,
        /// What values hold: `repeat` (windows of one 4 KiB buffer: compresses about
        /// 100x), `random` (bytes that do not compress) or `json` (JSON-like event
        /// text with varying fields, which compresses as real events do).
        #[arg(long, default_value = "repeat")]
        payload: Payload,
        /// Send through this Kafka listener (HOST:PORT) instead of gRPC: the same
        /// batches, one Produce request each.
        #[arg(long, value_name = "HOST:PORT")]
        kafka: Option<String>,
    },
    /// End-to-end latency: a producer at a fixed rate and a consumer tailing the same
    /// partitions; reports produce-time-to-delivery percentiles (like Kafka's
    /// EndToEndLatency tool and the OpenMessaging Benchmark).
    E2e {
        #[arg(long, default_value = "strata-e2e")]
        topic: String,
        /// Records per second the producer sends.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Seconds to send for (after one second of warm-up, not counted).
        #[arg(long, default_value_t = 30)]
        duration: u64,
        #[arg(long, default_value_t = 100)]
        record_size: usize,
        /// Partitions of the topic if it is created.
        #[arg(long, default_value_t = 3)]
        partitions: u32,
        #[arg(long, default_value_t = 1)]
        linger_ms: u64,
        #[arg(long, default_value = "1")]
        acks: String,
    },
    /// Read a topic from the earliest offset to its current end (one subscription per
    /// partition, as `strata consume` does).
    Consume {
        #[arg(long, default_value = "strata-bench")]
        topic: String,
        /// Stop after this many records (default: everything up to the current end).
        #[arg(long)]
        records: Option<u64>,
        /// Bytes per fetch answer. Answers near the CPU cache size copy fastest.
        #[arg(long, default_value_t = 256 * 1024)]
        fetch_size: u32,
        /// Read through this Kafka listener (HOST:PORT) instead of gRPC: Fetch requests,
        /// one partition per connection, one in flight each.
        #[arg(long, value_name = "HOST:PORT")]
        kafka: Option<String>,
    },
}

pub async fn run(cmd: BenchCommand, broker: &BrokerArg) -> Result<()> {
    match cmd {
        BenchCommand::Produce {
            topic,
            records,
            record_size,
            batch_size,
            partitions,
            acks,
            concurrency,
            max_in_flight,
            linger_ms,
            payload,
            kafka,
        } => {
            let acks: Acks = acks.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            if concurrency == 0 || partitions == 0 {
                bail!("--concurrency and --partitions must be at least 1");
            }
            if let Some(kafka) = kafka {
                let acks = match acks {
                    Acks::None => 0,
                    Acks::Leader => 1,
                    Acks::All => -1,
                };
                return crate::bench_kafka::produce(
                    &kafka,
                    &topic,
                    records,
                    record_size,
                    partitions,
                    concurrency,
                    batch_size,
                    acks,
                    max_in_flight,
                    payload,
                )
                .await;
            }
            let config = ProducerConfig {
                batch_size,
                linger: Duration::from_millis(linger_ms),
                acks,
                max_in_flight,
                track_acks: false,
                ..Default::default()
            };
            produce(
                broker,
                &topic,
                records,
                record_size,
                partitions,
                concurrency,
                config,
                payload,
            )
            .await
        }
        BenchCommand::E2e {
            topic,
            rate,
            duration,
            record_size,
            partitions,
            linger_ms,
            acks,
        } => {
            let acks: Acks = acks.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            if rate == 0 || partitions == 0 || record_size < 8 {
                bail!("--rate and --partitions must be at least 1, --record-size at least 8");
            }
            let config = ProducerConfig {
                batch_size: 64 * 1024,
                linger: Duration::from_millis(linger_ms),
                acks,
                max_in_flight: 8,
                track_acks: false,
                ..Default::default()
            };
            e2e(
                broker,
                &topic,
                rate,
                duration,
                record_size,
                partitions,
                config,
            )
            .await
        }
        BenchCommand::Consume {
            topic,
            records,
            fetch_size,
            kafka,
        } => match kafka {
            Some(_) if records.is_some() => {
                bail!("--records is for gRPC reads; over --kafka the whole topic is read")
            }
            Some(kafka) => crate::bench_kafka::consume(&kafka, &topic, fetch_size).await,
            None => consume(broker, &topic, records, fetch_size).await,
        },
    }
}

/// Prints progress every 5 s until aborted.
pub(crate) fn progress(
    label: &'static str,
    count: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        let mut last = (0u64, Instant::now());
        loop {
            tick.tick().await;
            let n = count.load(Ordering::Relaxed);
            let b = bytes.load(Ordering::Relaxed);
            let dt = last.1.elapsed().as_secs_f64();
            eprintln!(
                "{label}: {n} records, {:.0} records/s, {:.1} MB/s over the last {:.0} s ({:.0} s elapsed)",
                (n - last.0) as f64 / dt,
                b as f64 / 1e6 / start.elapsed().as_secs_f64(),
                dt,
                start.elapsed().as_secs_f64()
            );
            last = (n, Instant::now());
        }
    })
}

/// What benchmark values hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Payload {
    Repeat,
    Random,
    Json,
}

/// Bytes that records take their values from, one window per record: allocated once,
/// so producing allocates nothing per record. `windows` is how many distinct values
/// there are before they repeat.
pub(crate) struct Values {
    bytes: Vec<u8>,
    stride: usize,
    windows: usize,
    pub(crate) size: usize,
}

impl Values {
    pub(crate) fn new(kind: Payload, size: usize) -> Self {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        match kind {
            // Windows one byte apart into a 4 KiB buffer of letters.
            Payload::Repeat => {
                let bytes = (0..size + 4096)
                    .map(|_| b'a' + (next() % 26) as u8)
                    .collect();
                Self {
                    bytes,
                    stride: 1,
                    windows: 4096,
                    size,
                }
            }
            // 64 MiB of random bytes, windows side by side: longer than any zstd window.
            Payload::Random => {
                let windows = ((64 << 20) / size.max(1)).max(1);
                let mut bytes = Vec::with_capacity(windows * size);
                while bytes.len() < windows * size {
                    bytes.extend_from_slice(&next().to_le_bytes());
                }
                bytes.truncate(windows * size);
                Self {
                    bytes,
                    stride: size,
                    windows,
                    size,
                }
            }
            // Events as JSON, each padded or cut to the record size.
            Payload::Json => {
                let windows = ((16 << 20) / size.max(1)).clamp(1, 1 << 20);
                let events = ["page_view", "click", "add_to_cart", "checkout", "search"];
                let countries = ["DE", "FR", "US", "BR", "JP", "IN", "NG", "SE"];
                let mut bytes = Vec::with_capacity(windows * size);
                for i in 0..windows {
                    let r = next();
                    let mut e = format!(
                        "{{\"event\":\"{}\",\"user\":\"u{:07}\",\"session\":\"{:016x}\",\"ts\":{},\"country\":\"{}\",\"path\":\"/products/{}\",\"amount\":{}.{:02},\"ua\":\"Mozilla/5.0 (X11; Linux x86_64)\"}}",
                        events[(r % 5) as usize],
                        (r >> 8) % 5_000_000,
                        next(),
                        1_767_225_600_000u64 + i as u64 * 7 + (r >> 40) % 7,
                        countries[((r >> 16) % 8) as usize],
                        (r >> 24) % 100_000,
                        (r >> 32) % 500,
                        (r >> 48) % 100,
                    )
                    .into_bytes();
                    e.resize(size, b' ');
                    bytes.extend_from_slice(&e);
                }
                Self {
                    bytes,
                    stride: size,
                    windows,
                    size,
                }
            }
        }
    }

    /// The value of record `n`.
    pub(crate) fn get(&self, n: u64) -> &[u8] {
        let at = (n % self.windows as u64) as usize * self.stride;
        &self.bytes[at..at + self.size]
    }
}

/// A latency histogram in µs, up to a minute.
pub(crate) fn histogram() -> Result<hdrhistogram::Histogram<u64>> {
    Ok(hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// Milliseconds since the epoch, as record timestamps hold them.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The produce summary line (kafka-producer-perf-test's), naming the front end used.
pub(crate) fn report_produce(
    acked: u64,
    record_size: usize,
    secs: f64,
    hist: &hdrhistogram::Histogram<u64>,
    via: &str,
) {
    let mb = acked as f64 * record_size as f64 / 1e6;
    println!(
        "{acked} records sent, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency, {:.1} ms 50th, {:.1} ms 99th, {:.1} ms 99.9th (latency per produce request, over {via})",
        acked as f64 / secs,
        mb / secs,
        hist.mean() / 1000.0,
        hist.max() as f64 / 1000.0,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
    );
}

/// The consume summary line, naming the front end used.
pub(crate) fn report_consume(
    count: &AtomicU64,
    bytes: &AtomicU64,
    secs: f64,
    hist: &hdrhistogram::Histogram<u64>,
    via: &str,
) {
    let (n, bytes) = (count.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed));
    println!(
        "{n} records read, {:.1} records/sec ({:.2} MB/sec), {:.1} ms 50th, {:.1} ms 99th between batches (over {via})",
        n as f64 / secs,
        bytes as f64 / 1e6 / secs,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
    );
}

/// Finds the topic's partition count, creating it with `partitions` if it is missing.
async fn ensure_topic(client: &Client, topic: &str, partitions: u32) -> Result<u32> {
    match client.describe_topic(topic).await {
        Ok(d) => Ok(d.partitions.len() as u32),
        Err(ClientError::Broker {
            code: tonic::Code::NotFound,
            ..
        }) => {
            client
                .create_topic(topic, partitions as i32, 1, Default::default())
                .await?;
            Ok(partitions)
        }
        Err(e) => Err(e.into()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn produce(
    broker: &BrokerArg,
    topic: &str,
    records: u64,
    record_size: usize,
    partitions: u32,
    concurrency: usize,
    config: ProducerConfig,
    payload: Payload,
) -> Result<()> {
    let client = broker.connect().await?;
    let partitions = ensure_topic(&client, topic, partitions).await?;
    let payload = Arc::new(Values::new(payload, record_size));
    let sent = Arc::new(AtomicU64::new(0));
    let sent_bytes = Arc::new(AtomicU64::new(0));
    let reporter = progress("produce", sent.clone(), sent_bytes.clone());
    let per_record_batch = (config.batch_size / (record_size + 8)).max(1) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let n = records / concurrency as u64 + u64::from((i as u64) < records % concurrency as u64);
        let client = broker.connect().await?;
        let config = config.clone();
        let (payload, sent, sent_bytes, topic) = (
            payload.clone(),
            sent.clone(),
            sent_bytes.clone(),
            topic.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut p = Producer::new(client, config).await?;
            for j in 0..n {
                let part = ((j / per_record_batch) as u32 + i as u32) % partitions;
                p.send(
                    &topic,
                    Some(part),
                    None,
                    Some(payload.get(j * concurrency as u64 + i as u64)),
                    &[],
                )
                .await?;
                if j % 4096 == 4095 {
                    sent.fetch_add(4096, Ordering::Relaxed);
                    sent_bytes.fetch_add(4096 * record_size as u64, Ordering::Relaxed);
                }
            }
            p.flush().await?;
            let latency = p.latency();
            let stats = p.close().await?;
            Ok::<_, ClientError>((stats, latency))
        }));
    }
    let mut acked = 0;
    let mut hist = histogram()?;
    for t in tasks {
        let (stats, latency) = t.await??;
        acked += stats.records_acked;
        if let Some(l) = latency {
            hist.add(l)?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    reporter.abort();
    report_produce(acked, record_size, secs, &hist, "gRPC");
    if acked != records && config.acks != Acks::None {
        bail!("only {acked} of {records} records were acknowledged");
    }
    Ok(())
}

async fn consume(
    broker: &BrokerArg,
    topic: &str,
    limit: Option<u64>,
    fetch_size: u32,
) -> Result<()> {
    let client = broker.connect().await?;
    let d = client.describe_topic(topic).await?;
    let total: u64 = d
        .partitions
        .iter()
        .map(|p| (p.high_watermark - p.log_start_offset) as u64)
        .sum();
    let want = limit.unwrap_or(total).min(total);
    let count = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let reporter = progress("consume", count.clone(), bytes.clone());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in &d.partitions {
        // One connection per partition, as each producer has its own.
        let client = broker.connect().await?;
        let (topic, count, bytes) = (topic.to_string(), count.clone(), bytes.clone());
        let (partition, end) = (p.partition, p.high_watermark);
        tasks.push(tokio::spawn(async move {
            // A subscription: the broker streams batches ahead of the reader.
            let stream = consumer::subscribe(
                &client,
                &topic,
                partition,
                StartOffset::Earliest,
                fetch_size,
            )
            .await?;
            let mut stream = std::pin::pin!(stream);
            let mut hist =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut position = 0;
            let mut t = Instant::now();
            while position < end && count.load(Ordering::Relaxed) < want {
                let Some(b) = stream.next().await else { break };
                let b = b?;
                let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                t = Instant::now();
                let (mut n, mut sz) = (0u64, 0u64);
                for r in b.records() {
                    let r = r.map_err(|e| ClientError::Invalid(e.to_string()))?;
                    if r.offset >= end {
                        break;
                    }
                    n += 1;
                    sz += r.value.map(|v| v.len()).unwrap_or(0) as u64
                        + r.key.map(|k| k.len()).unwrap_or(0) as u64;
                }
                position = b.next_offset;
                count.fetch_add(n, Ordering::Relaxed);
                bytes.fetch_add(sz, Ordering::Relaxed);
            }
            Ok::<_, ClientError>(hist)
        }));
    }
    let mut hist = histogram()?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    reporter.abort();
    report_consume(&count, &bytes, secs, &hist, "gRPC");
    Ok(())
}

/// A producer at a fixed rate and a consumer per partition tailing it, in one process:
/// each value starts with its send time (ns since the run began), and the consumer
/// records delivery time minus send time. The first second is warm-up, not counted.
async fn e2e(
    broker: &BrokerArg,
    topic: &str,
    rate: u64,
    duration: u64,
    record_size: usize,
    partitions: u32,
    config: ProducerConfig,
) -> Result<()> {
    let client = broker.connect().await?;
    let partitions = ensure_topic(&client, topic, partitions).await?;
    let base = Instant::now();
    let warmup_ns = 1_000_000_000u64;
    let received = Arc::new(AtomicU64::new(0));
    let received_bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut consumers = Vec::new();
    for partition in 0..partitions {
        let client = broker.connect().await?;
        let stream =
            consumer::subscribe(&client, topic, partition, StartOffset::Latest, 256 * 1024).await?;
        let (received, received_bytes, stop) =
            (received.clone(), received_bytes.clone(), stop.clone());
        consumers.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut hist =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            while !stop.load(Ordering::Relaxed) {
                let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
                let Ok(Some(b)) = next else { continue };
                let b = b?;
                let now = base.elapsed().as_nanos() as u64;
                let (mut n, mut bytes) = (0, 0);
                for r in b.records() {
                    let r = r.map_err(|e| ClientError::Invalid(e.to_string()))?;
                    let v = r.value.unwrap_or_default();
                    let Some(stamp) = v.get(..8) else { continue };
                    let sent = u64::from_le_bytes(stamp.try_into().expect("8 bytes"));
                    if sent >= warmup_ns {
                        let _ = hist.record((now.saturating_sub(sent) / 1000).max(1));
                    }
                    n += 1;
                    bytes += v.len() as u64;
                }
                received.fetch_add(n, Ordering::Relaxed);
                received_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Ok::<_, ClientError>(hist)
        }));
    }
    let values = Values::new(Payload::Random, record_size);
    let mut value = values.get(0).to_vec();
    let mut p = Producer::new(client, config).await?;
    let reporter = progress("e2e", received.clone(), received_bytes.clone());
    let total_ns = (duration + 1) * 1_000_000_000;
    let mut sent = 0u64;
    loop {
        let elapsed = base.elapsed().as_nanos() as u64;
        if elapsed >= total_ns {
            break;
        }
        let due = (elapsed as u128 * rate as u128 / 1_000_000_000) as u64;
        while sent < due {
            value.copy_from_slice(values.get(sent));
            let stamp = base.elapsed().as_nanos() as u64;
            value[..8].copy_from_slice(&stamp.to_le_bytes());
            // Sticky partitions, a hundred records at a time, as Kafka's producer does.
            let partition = ((sent / 100) % partitions as u64) as u32;
            p.send(topic, Some(partition), None, Some(&value), &[])
                .await?;
            sent += 1;
        }
        p.poll_linger().await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    p.flush().await?;
    let drained = Instant::now();
    while received.load(Ordering::Relaxed) < sent && drained.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    reporter.abort();
    let mut hist = histogram()?;
    for c in consumers {
        hist.add(c.await??)?;
    }
    let got = received.load(Ordering::Relaxed);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{sent} records sent at {rate} records/s, {got} delivered; end-to-end latency {:.2} ms 50th, {:.2} ms 99th, {:.2} ms 99.9th, {:.2} ms max ({} measured after 1 s of warm-up)",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1000.0,
        hist.len(),
    );
    if got < sent {
        bail!("only {got} of {sent} records were delivered within 30 s of the last send");
    }
    Ok(())
}
