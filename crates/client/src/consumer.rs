//! Reading partitions: a long-poll fetch loop ([`Consumer`]) and a server-streamed
//! subscription ([`subscribe`]). Both hand out [`Batches`]: stored batch bytes plus the
//! offset to start from; records before it (a batch can start earlier) are skipped.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use strata_record::{BatchIter, RecordError, RecordRef};

use crate::error::Result;
use crate::{Client, StartOffset};

/// Batches fetched from one partition.
#[derive(Debug, Clone)]
pub struct Batches {
    pub partition: u32,
    /// First offset the reader asked for.
    pub from: i64,
    /// Offset to read next.
    pub next_offset: i64,
    pub high_watermark: i64,
    pub data: Bytes,
}

impl Batches {
    /// Batches fetched at `from`; compressed ones are decompressed here, so
    /// [`Batches::records`] borrows one buffer whatever codec the producer used.
    pub fn new(
        partition: u32,
        from: i64,
        next_offset: i64,
        high_watermark: i64,
        data: Bytes,
    ) -> Self {
        let data = match strata_record::compression::decompressed_batches(&data) {
            Ok(std::borrow::Cow::Owned(flat)) => Bytes::from(flat),
            // Unchanged, or damaged: records() reports the damage where it is.
            _ => data,
        };
        Self {
            partition,
            from,
            next_offset,
            high_watermark,
            data,
        }
    }

    /// The records at or after `from`, each checked; keys and values borrow `data`.
    pub fn records(&self) -> impl Iterator<Item = Result<RecordRef<'_>, RecordError>> + '_ {
        let from = self.from;
        BatchIter::new(&self.data)
            .flat_map(
                |b| -> Box<dyn Iterator<Item = Result<RecordRef<'_>, RecordError>>> {
                    match b {
                        Ok(b) => Box::new(b.records()),
                        Err(e) => Box::new(std::iter::once(Err(e))),
                    }
                },
            )
            .filter(move |r| r.as_ref().map(|r| r.offset >= from).unwrap_or(true))
    }
}

/// A fetch loop over one partition with long polls: no client-side polling interval.
pub struct Consumer {
    client: Client,
    topic: String,
    partition: u32,
    position: i64,
    pub max_bytes: u32,
    pub max_wait: Duration,
}

impl Consumer {
    pub async fn new(
        client: Client,
        topic: &str,
        partition: u32,
        start: StartOffset,
    ) -> Result<Self> {
        let position = client.resolve_offset(topic, partition, start).await?;
        Ok(Self {
            client,
            topic: topic.to_string(),
            partition,
            position,
            max_bytes: 1 << 20,
            max_wait: Duration::from_millis(500),
        })
    }

    pub fn position(&self) -> i64 {
        self.position
    }

    pub fn seek(&mut self, offset: i64) {
        self.position = offset;
    }

    /// Waits up to `max_wait` for records at the position; returns what arrived (maybe
    /// nothing) and moves the position past it.
    pub async fn poll(&mut self) -> Result<Batches> {
        let r = self
            .client
            .fetch(
                &self.topic,
                self.partition,
                self.position,
                self.max_bytes,
                1,
                self.max_wait,
            )
            .await?;
        let b = Batches::new(
            self.partition,
            self.position,
            r.next_offset,
            r.high_watermark,
            r.batches,
        );
        self.position = r.next_offset;
        Ok(b)
    }
}

/// Streams a partition from `start`, following the tail as records arrive.
pub async fn subscribe(
    client: &Client,
    topic: &str,
    partition: u32,
    start: StartOffset,
    max_bytes: u32,
) -> Result<impl Stream<Item = Result<Batches>> + Send + 'static> {
    let offset = client.resolve_offset(topic, partition, start).await?;
    let stream = client
        .subscribe(topic, partition, offset, max_bytes)
        .await?;
    let c = client.clone();
    let mut from = offset;
    Ok(stream.map(move |r| {
        let r = r.map_err(|s| c.err(s))?;
        let b = Batches::new(partition, from, r.next_offset, r.high_watermark, r.batches);
        from = r.next_offset;
        Ok(b)
    }))
}
