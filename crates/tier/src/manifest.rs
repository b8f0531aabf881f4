//! The per-partition manifest:
//! `<prefix>/topics/<topic>/topic_id=<id>/partition=<n>/_manifest.json`.
//!
//! It lists every remote segment of the partition, oldest first, with what a reader
//! needs to serve an offset without listing the bucket or reading footers first: offset
//! and time ranges, size, the first offset of each row group, and a CRC-32 of the object,
//! of its footer and of each row group, so no byte read back reaches the Parquet decoder
//! unchecked. It is rewritten whole after each upload or deletion (format in
//! `docs/cold-tier.md`).
//!
//! In a cluster whose store honours conditional writes, each write is conditional on
//! the version last read or written ([`Manifest::save_if`]) and carries the writer's
//! leader epoch: a new leader claims the manifest by writing it in its epoch, and from
//! then on a deposed leader's write fails; reading back a newer epoch, it stops.

use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::store::Bucket;
use crate::{Result, TierError};

/// Version 2 added `topic_id` (and the `topic_id=<id>` level in every key).
pub const MANIFEST_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSegment {
    pub base_offset: i64,
    pub last_offset: i64,
    pub records: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub size_bytes: u64,
    /// Object key, relative to the bucket root.
    pub key: String,
    /// First offset of each row group, in order.
    pub row_groups: Vec<i64>,
    /// CRC-32 of the whole object.
    pub crc32: u32,
    /// The footer's length and CRC-32. Absent in entries written before they were
    /// recorded: such a footer is parsed unchecked (contained, on a blocking thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer: Option<FooterSum>,
    /// CRC-32 of each row group's bytes, in order; absent like `footer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_group_crc32: Option<Vec<u32>>,
}

/// The footer of an object: its last `len` bytes (the Thrift `FileMetaData`, its 4-byte
/// length and the closing `PAR1`), and their CRC-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FooterSum {
    pub len: u64,
    pub crc32: u32,
}

impl FooterSum {
    /// The footer that `tail`, the last bytes of an object, ends with; None if they do
    /// not end in a footer that lies inside them.
    pub fn of(tail: &[u8]) -> Option<Self> {
        let end = &tail[tail.len().checked_sub(8)?..];
        if &end[4..] != b"PAR1" {
            return None;
        }
        let len = u32::from_le_bytes(end[..4].try_into().expect("4 bytes")) as usize + 8;
        let footer = &tail[tail.len().checked_sub(len)?..];
        Some(Self {
            len: len as u64,
            crc32: crc32fast::hash(footer),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub topic: String,
    /// The incarnation of the topic this manifest belongs to.
    pub topic_id: String,
    pub partition: u32,
    pub segments: Vec<RemoteSegment>,
    /// Offset after the last record ever offloaded. Remote retention removes segments
    /// but never this: a manifest that retention emptied still says where the cold
    /// tier ends, so nothing below it is uploaded again and no log restarts below it.
    #[serde(default)]
    pub end_offset: Option<i64>,
    /// In a cluster: the leader epoch of the broker that wrote it. A leader never
    /// writes over a manifest of a later epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_epoch: Option<i32>,
}

/// What a conditional manifest write found.
#[derive(Debug)]
pub enum SaveIf {
    /// Written; the version to make the next write conditional on.
    Saved(UpdateVersion),
    /// Someone else wrote it since the version given (or it exists where none was
    /// expected): read it again.
    Conflict,
}

impl Manifest {
    pub fn new(topic: &str, topic_id: &str, partition: u32) -> Self {
        Self {
            version: MANIFEST_VERSION,
            topic: topic.to_string(),
            topic_id: topic_id.to_string(),
            partition,
            segments: Vec::new(),
            end_offset: None,
            leader_epoch: None,
        }
    }

    fn key(
        bucket: &Bucket,
        topic: &str,
        topic_id: &str,
        partition: u32,
    ) -> object_store::path::Path {
        bucket
            .partition_dir(topic, topic_id, partition)
            .join("_manifest.json")
    }

    /// Offset after the last record ever offloaded (the first offset not offloaded),
    /// also once remote retention has removed every segment.
    pub fn next_offset(&self) -> Option<i64> {
        self.segments
            .last()
            .map(|s| s.last_offset + 1)
            .or(self.end_offset)
    }

    /// The remote segment holding `offset`.
    pub fn find(&self, offset: i64) -> Option<&RemoteSegment> {
        self.find_with_next(offset).map(|(seg, _)| seg)
    }

    /// The remote segment holding `offset`, and the one after it.
    pub fn find_with_next(&self, offset: i64) -> Option<(&RemoteSegment, Option<&RemoteSegment>)> {
        let i = self.segments.partition_point(|s| s.last_offset < offset);
        let seg = self.segments.get(i).filter(|s| s.base_offset <= offset)?;
        Some((seg, self.segments.get(i + 1)))
    }

    /// Adds a segment; it must continue the manifest without a gap or overlap, or be one
    /// already listed (an upload retried after it succeeded).
    pub fn add(&mut self, seg: RemoteSegment) -> Result<bool> {
        if self
            .segments
            .iter()
            .any(|s| s.base_offset == seg.base_offset && s.last_offset == seg.last_offset)
        {
            return Ok(false);
        }
        if let Some(next) = self.next_offset()
            && seg.base_offset != next
        {
            return Err(TierError::Format(format!(
                "segment {}..={} does not follow the manifest's last offset {}",
                seg.base_offset,
                seg.last_offset,
                next - 1
            )));
        }
        self.end_offset = Some(seg.last_offset + 1);
        self.segments.push(seg);
        Ok(true)
    }

    /// Loads the manifest of one partition of one topic incarnation; one that names
    /// another topic, id or partition than its key says is refused.
    pub async fn load(
        bucket: &Bucket,
        topic: &str,
        topic_id: &str,
        partition: u32,
    ) -> Result<Option<Self>> {
        Ok(Self::load_versioned(bucket, topic, topic_id, partition)
            .await?
            .map(|(m, _)| m))
    }

    /// [`Manifest::load`], with the version read (for [`Manifest::save_if`]).
    pub async fn load_versioned(
        bucket: &Bucket,
        topic: &str,
        topic_id: &str,
        partition: u32,
    ) -> Result<Option<(Self, UpdateVersion)>> {
        let key = Self::key(bucket, topic, topic_id, partition);
        match bucket.store.get(&key).await {
            Ok(r) => {
                let version = UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r.bytes().await?;
                let m: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| TierError::Format(format!("manifest {key} is not valid: {e}")))?;
                if m.version != MANIFEST_VERSION {
                    return Err(TierError::Format(format!(
                        "manifest {key} has version {}; this broker reads version {MANIFEST_VERSION}",
                        m.version
                    )));
                }
                if (m.topic.as_str(), m.topic_id.as_str(), m.partition)
                    != (topic, topic_id, partition)
                {
                    return Err(TierError::Format(format!(
                        "manifest {key} describes {}-{} (topic id {}), not the partition its key names",
                        m.topic, m.partition, m.topic_id
                    )));
                }
                Ok(Some((m, version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn save(&self, bucket: &Bucket) -> Result<()> {
        let key = Self::key(bucket, &self.topic, &self.topic_id, self.partition);
        let body = serde_json::to_vec_pretty(self).expect("manifest serializes");
        bucket.store.put(&key, PutPayload::from(body)).await?;
        Ok(())
    }

    /// Writes the manifest only if the stored one is still `expected` (`None`: only if
    /// there is none).
    pub async fn save_if(
        &self,
        bucket: &Bucket,
        expected: Option<&UpdateVersion>,
    ) -> Result<SaveIf> {
        let key = Self::key(bucket, &self.topic, &self.topic_id, self.partition);
        let body = serde_json::to_vec_pretty(self).expect("manifest serializes");
        let mode = match expected {
            Some(v) => PutMode::Update(v.clone()),
            None => PutMode::Create,
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match bucket
            .store
            .put_opts(&key, PutPayload::from(body), opts)
            .await
        {
            Ok(r) => Ok(SaveIf::Saved(r.into())),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(SaveIf::Conflict),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, last: i64) -> RemoteSegment {
        RemoteSegment {
            base_offset: base,
            last_offset: last,
            records: (last - base + 1) as u64,
            min_timestamp: 0,
            max_timestamp: 0,
            size_bytes: 1,
            key: format!("k{base}"),
            row_groups: vec![base],
            crc32: 0,
            footer: None,
            row_group_crc32: None,
        }
    }

    #[tokio::test]
    async fn segments_must_be_contiguous_and_round_trip() {
        let bucket = crate::store::open("memory://").unwrap();
        assert_eq!(Manifest::load(&bucket, "t", "a", 0).await.unwrap(), None);
        let mut m = Manifest::new("t", "a", 0);
        assert!(m.add(seg(0, 9)).unwrap());
        assert!(
            !m.add(seg(0, 9)).unwrap(),
            "a retried upload is not listed twice"
        );
        assert!(m.add(seg(11, 20)).is_err(), "a gap is refused");
        assert!(m.add(seg(10, 20)).unwrap());
        assert_eq!(m.find(15).unwrap().base_offset, 10);
        assert_eq!(m.find(21), None);
        // Retention empties it: it still knows where the cold tier ends.
        let mut emptied = m.clone();
        emptied.segments.clear();
        assert_eq!(emptied.next_offset(), Some(21));
        assert!(
            emptied.add(seg(0, 9)).is_err(),
            "nothing below its end again"
        );
        assert!(emptied.add(seg(21, 30)).unwrap());
        m.save(&bucket).await.unwrap();
        assert_eq!(Manifest::load(&bucket, "t", "a", 0).await.unwrap(), Some(m));
        assert_eq!(
            Manifest::load(&bucket, "t", "b", 0).await.unwrap(),
            None,
            "another incarnation of the name has a manifest of its own"
        );
    }
}
