//! `strata bench`: a load generator in the manner of kafka-producer-perf-test and
//! kafka-consumer-perf-test. Prints progress every few seconds, then records/s, MB/s
//! and latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    },
}

pub async fn run(cmd: BenchCommand, addr: &str) -> Result<()> {
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
        } => {
            let acks: Acks = acks.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            if concurrency == 0 || partitions == 0 {
                bail!("--concurrency and --partitions must be at least 1");
            }
            let config = ProducerConfig {
                batch_size,
                linger: Duration::from_millis(linger_ms),
                acks,
                max_in_flight,
                track_acks: false,
            };
            produce(
                addr,
                &topic,
                records,
                record_size,
                partitions,
                concurrency,
                config,
            )
            .await
        }
        BenchCommand::Consume {
            topic,
            records,
            fetch_size,
        } => consume(addr, &topic, records, fetch_size).await,
    }
}

/// Prints progress every 5 s until `done` is set.
fn progress(
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

async fn produce(
    addr: &str,
    topic: &str,
    records: u64,
    record_size: usize,
    partitions: u32,
    concurrency: usize,
    config: ProducerConfig,
) -> Result<()> {
    let client = Client::connect(addr).await?;
    let partitions = match client.describe_topic(topic).await {
        Ok(d) => d.partitions.len() as u32,
        Err(ClientError::Broker {
            code: tonic::Code::NotFound,
            ..
        }) => {
            client
                .create_topic(topic, partitions as i32, 1, Default::default())
                .await?;
            partitions
        }
        Err(e) => return Err(e.into()),
    };
    // One pseudo-random buffer; each record is a window into it (no per-record allocation).
    let mut payload = vec![0u8; record_size + 4096];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in payload.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = b'a' + (x % 26) as u8;
    }
    let payload = Arc::new(payload);
    let sent = Arc::new(AtomicU64::new(0));
    let sent_bytes = Arc::new(AtomicU64::new(0));
    let reporter = progress("produce", sent.clone(), sent_bytes.clone());
    let per_record_batch = (config.batch_size / (record_size + 8)).max(1) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let n = records / concurrency as u64 + u64::from((i as u64) < records % concurrency as u64);
        let client = Client::connect(addr).await?;
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
                let off = (j % 4096) as usize;
                p.send(
                    &topic,
                    Some(part),
                    None,
                    Some(&payload[off..off + record_size]),
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
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        let (stats, latency) = t.await??;
        acked += stats.records_acked;
        if let Some(l) = latency {
            hist.add(l)?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    reporter.abort();
    let mb = acked as f64 * record_size as f64 / 1e6;
    println!(
        "{acked} records sent, {:.1} records/sec ({:.2} MB/sec), {:.1} ms avg latency, {:.1} ms max latency, {:.1} ms 50th, {:.1} ms 99th, {:.1} ms 99.9th (latency per produce request)",
        acked as f64 / secs,
        mb / secs,
        hist.mean() / 1000.0,
        hist.max() as f64 / 1000.0,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
    );
    if acked != records && config.acks != Acks::None {
        bail!("only {acked} of {records} records were acknowledged");
    }
    Ok(())
}

async fn consume(addr: &str, topic: &str, limit: Option<u64>, fetch_size: u32) -> Result<()> {
    let client = Client::connect(addr).await?;
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
        let client = Client::connect(addr).await?;
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
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    reporter.abort();
    let n = count.load(Ordering::Relaxed);
    let mb = bytes.load(Ordering::Relaxed) as f64 / 1e6;
    println!(
        "{n} records read, {:.1} records/sec ({:.2} MB/sec), {:.1} ms 50th, {:.1} ms 99th between batches",
        n as f64 / secs,
        mb / secs,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
    );
    Ok(())
}
