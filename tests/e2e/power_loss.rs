//! Power loss under the data directory and the `file://` object store: what the broker
//! acknowledged, uploaded and then deleted locally is all still there after the machine
//! loses power, and what remote retention deleted stays deleted.
//!
//! A power cut keeps only what the filesystem had already handed to the disk. The test
//! puts a broker's data directory, and with it the default `file://<data-dir>/objects`
//! store, on an ext4 filesystem in an image file mounted through a loop device, so the
//! disk is a file the test can copy: the copy, mounted again (ext4 replays its journal),
//! is the disk as a power cut at that instant leaves it. The filesystem is mounted with
//! `commit=300,noauto_da_alloc`, so its journal is committed only when something fsyncs,
//! and a renamed or truncated file is never flushed on its own; with delayed allocation a
//! file that was written but never fsynced comes back empty (its name committed by
//! another file's fsync, its data not) or not at all. Only an fsync makes anything
//! durable, as on a disk whose cache the cut empties.
//!
//! The test needs root and loop devices (`losetup`, `mkfs.ext4`, `mount`); without them
//! it fails and says so, it never passes silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strata_client::{Client, Producer, ProducerConfig};

use crate::helpers::*;
use crate::history::History;

const TOPIC: &str = "outage";
/// Records produced: about twenty 16 KiB segments.
const RECORDS: u64 = 3000;
/// The size of the filesystem image (sparse: only what is written takes space).
const IMAGE_BYTES: u64 = 256 << 20;
const NEEDS: &str =
    "this test needs root and loop devices (losetup -f, mkfs.ext4, mount -t ext4 of a loop device)";

fn value(n: u64) -> Vec<u8> {
    format!("outage-{n:010}-{}", "v".repeat(80)).into_bytes()
}

/// Runs a command; its trimmed stdout, or what it said on stderr.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A sparse file of `IMAGE_BYTES` with an empty ext4 filesystem in it.
fn make_image(path: &Path) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(IMAGE_BYTES))
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(path))
        .unwrap_or_else(|e| panic!("{NEEDS}: {e}"));
}

/// Attaches `image` to a free loop device and returns the device. Another process may
/// take the device `losetup -f` picked before it is attached; that attempt fails and
/// the next one picks another.
fn attach(image: &Path) -> String {
    let mut last = String::new();
    for attempt in 0..10u64 {
        match run(Command::new("losetup").args(["-f", "--show"]).arg(image)) {
            Ok(device) if device.starts_with("/dev/loop") => return device,
            Ok(other) => last = format!("losetup printed {other:?}, not a loop device"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50 * (attempt + 1)));
    }
    panic!("{NEEDS}: {last}");
}

/// An ext4 image mounted through its own loop device, and the broker running on it.
/// Dropping it (also when the test fails) kills the broker, unmounts the filesystem and
/// detaches the device.
struct LoopMount {
    mount_point: PathBuf,
    device: Option<String>,
    mounted: bool,
    broker: Option<ServerProcess>,
}

impl LoopMount {
    /// Mounts `image` at `mount_point` (created if missing).
    fn mount(image: &Path, mount_point: &Path) -> Self {
        std::fs::create_dir_all(mount_point).unwrap();
        let mut m = Self {
            mount_point: mount_point.to_path_buf(),
            device: Some(attach(image)),
            mounted: false,
            broker: None,
        };
        let device = m.device.clone().unwrap();
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "commit=300,noauto_da_alloc", &device])
            .arg(mount_point))
        .unwrap_or_else(|e| panic!("{NEEDS}: {e}"));
        m.mounted = true;
        m
    }

    fn broker(&self) -> &ServerProcess {
        self.broker.as_ref().expect("a broker runs on the disk")
    }

    /// Cuts the power: the broker dies with kill -9 and `image`, the disk under the
    /// mount, is copied to `copy`, which then holds only what reached the disk. The
    /// process is killed first so that nothing writes while the copy is taken, as at
    /// the instant of a real cut; killing it writes nothing itself (the mount's
    /// `noauto_da_alloc` keeps a close from flushing). Then unmounts and detaches.
    fn power_cut(mut self, image: &Path, copy: &Path) {
        if let Some(mut broker) = self.broker.take() {
            broker.kill();
        }
        std::fs::copy(image, copy)
            .unwrap_or_else(|e| panic!("copying {} at the power cut: {e}", image.display()));
        self.release().unwrap();
    }

    /// Kills the broker, unmounts and detaches; each step runs even if one before it
    /// failed, and what failed is returned.
    fn release(&mut self) -> Result<(), String> {
        drop(self.broker.take());
        let mut errors = Vec::new();
        if self.mounted {
            let mut result = Err(String::new());
            // The kernel may still hold the filesystem for a moment after its last
            // process exits.
            for attempt in 0..20u64 {
                result = run(Command::new("umount").arg(&self.mount_point));
                if result.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50 * (attempt + 1)));
            }
            if let Err(e) = result {
                // Lazily, so no mount is left behind; the device is freed with it.
                let _ = run(Command::new("umount").arg("-l").arg(&self.mount_point));
                errors.push(e);
            }
            self.mounted = false;
        }
        if let Some(device) = self.device.take()
            && let Err(e) = run(Command::new("losetup").args(["-d", &device]))
        {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("cleaning up {}: {e}", self.mount_point.display());
        }
    }
}

/// Produces `RECORDS` numbered records to partition 0 and returns every (offset, value)
/// the broker acknowledged, which is all of them.
async fn produce(client: Client) -> Vec<(i64, Vec<u8>)> {
    let config = ProducerConfig {
        batch_size: 4096,
        track_acks: true,
        ..ProducerConfig::default()
    };
    let mut p = Producer::new(client, config).await.unwrap();
    for n in 0..RECORDS {
        p.send(TOPIC, Some(0), None, Some(&value(n)), &[])
            .await
            .unwrap();
    }
    p.flush().await.unwrap();
    // One producer, in order, to one partition: the n-th record sent went to offset n.
    let acked: Vec<(i64, Vec<u8>)> = p
        .acked()
        .iter()
        .flat_map(|a| a.base_offset..a.base_offset + a.record_count as i64)
        .map(|o| (o, value(o as u64)))
        .collect();
    assert_eq!(acked.len() as u64, RECORDS, "every record is acknowledged");
    acked
}

/// The names in a directory, sorted; none if it does not exist.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The topic's partition 0 in the data directory.
fn local_dir(data: &Path) -> PathBuf {
    data.join("topics").join(TOPIC).join("0")
}

/// The topic's partition 0 in the bucket: the default `file://` store, under the data
/// directory and so on the same disk.
fn remote_dir(data: &Path, topic_id: &str) -> PathBuf {
    data.join(format!(
        "objects/topics/{TOPIC}/topic_id={topic_id}/partition=0"
    ))
}

/// The `.parquet` objects in the bucket's partition directory.
fn objects_in(data: &Path, topic_id: &str) -> Vec<String> {
    names_in(&remote_dir(data, topic_id))
        .into_iter()
        .filter(|n| n.ends_with(".parquet"))
        .collect()
}

/// A fresh disk in `dir`, a broker on it, the topic created with `configs` (every
/// acknowledged record fsynced first, small segments that leave the local disk as soon
/// as the manifest lists them, and what the test adds), and `RECORDS` acknowledged.
async fn produce_on_a_fresh_disk(
    dir: &Path,
    configs: &[(&str, &str)],
) -> (LoopMount, Client, String, Vec<(i64, Vec<u8>)>) {
    let image = dir.join("disk.img");
    make_image(&image);
    let mut disk = LoopMount::mount(&image, &dir.join("disk"));
    let data = disk.mount_point.join("data");
    disk.broker = Some(ServerProcess::start(&data, &dir.join("before.log")));
    let client = Client::connect(&disk.broker().addr).await.unwrap();
    let mut all = BTreeMap::from([
        ("flush.messages".to_string(), "1".to_string()),
        ("segment.bytes".to_string(), "16384".to_string()),
        ("local.retention.bytes".to_string(), "1".to_string()),
        ("local.retention.ms".to_string(), "1".to_string()),
    ]);
    all.extend(configs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    client.create_topic(TOPIC, 1, 1, all).await.unwrap();
    let topic_id = client.describe_topic(TOPIC).await.unwrap().topic_id;
    let acked = produce(client.clone()).await;
    (disk, client, topic_id, acked)
}

/// Polls the topic's partition 0 until `ready` holds for it and the data directory;
/// fails after 60 s, showing the partition and the broker's log.
async fn wait_for(
    disk: &LoopMount,
    client: &Client,
    what: &str,
    ready: impl Fn(&strata_client::pb::PartitionDescription, &Path) -> bool,
) -> strata_client::pb::PartitionDescription {
    let data = disk.mount_point.join("data");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = client.describe_topic(TOPIC).await.unwrap().partitions[0].clone();
        if ready(&p, &data) {
            assert!(p.tier_error.is_empty(), "{}", p.tier_error);
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in 60 s: {p:?}\n{}",
            disk.broker().log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cuts the power under `disk` and mounts what the disk held, in `dir`.
fn cut_and_mount_again(disk: LoopMount, dir: &Path) -> LoopMount {
    let cut = dir.join("disk-after-the-cut.img");
    disk.power_cut(&dir.join("disk.img"), &cut);
    LoopMount::mount(&cut, &dir.join("disk-after-the-cut"))
}

/// Checks the bucket as the power cut left it, before a broker touches it: the manifest
/// parses, every object it lists is whole, and no object it stopped listing (one below
/// its end) is back. Returns the manifest.
fn check_the_bucket(data: &Path, topic_id: &str) -> serde_json::Value {
    let path = remote_dir(data, topic_id).join("_manifest.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "the manifest {} survives the power cut: {e}",
            path.display()
        )
    });
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "the manifest survives the power cut whole, but its {} bytes do not parse: {e}",
            bytes.len()
        )
    });
    let mut listed = Vec::new();
    for s in manifest["segments"].as_array().unwrap() {
        let key = s["key"].as_str().unwrap();
        let len = std::fs::metadata(data.join("objects").join(key)).map(|m| m.len());
        assert_eq!(
            len.ok(),
            s["size_bytes"].as_u64(),
            "the object {key} survives the power cut whole"
        );
        listed.push(key.rsplit('/').next().unwrap().to_string());
    }
    // `<base>-<last>.parquet`; one at or past the end is an upload whose manifest save
    // the cut prevented, which offload writes again.
    let end = manifest["end_offset"].as_i64().unwrap();
    let back: Vec<String> = objects_in(data, topic_id)
        .into_iter()
        .filter(|n| !listed.contains(n))
        .filter(|n| {
            let last = n.trim_end_matches(".parquet").rsplit('-').next().unwrap();
            last.parse::<i64>().unwrap() < end
        })
        .collect();
    assert!(
        back.is_empty(),
        "objects deleted before the power cut are back after it: {back:?}; the manifest: {manifest}"
    );
    manifest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_after_offload_and_local_deletion_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, client, topic_id, acked) = produce_on_a_fresh_disk(dir.path(), &[]).await;
    let first_segment = format!("{:020}.log", 0);
    let before = wait_for(&disk, &client, "offload and local deletion", |p, data| {
        p.remote_segments >= 5
            && objects_in(data, &topic_id).len() >= 5
            && p.local_log_start_offset > 0
            && !names_in(&local_dir(data)).contains(&first_segment)
    })
    .await;

    let mut disk = cut_and_mount_again(disk, dir.path());
    let data = disk.mount_point.join("data");
    assert!(
        !names_in(&local_dir(&data)).contains(&first_segment),
        "the first segment's local deletion survives the cut, so the cold tier must serve it"
    );
    let manifest = check_the_bucket(&data, &topic_id);
    assert!(
        manifest["end_offset"].as_i64().unwrap() >= before.local_log_start_offset,
        "the manifest covers what left the local disk ({}): {manifest}",
        before.local_log_start_offset
    );

    disk.broker = Some(ServerProcess::start(&data, &dir.path().join("after.log")));
    let client = Client::connect(&disk.broker().addr).await.unwrap();
    let p = client.describe_topic(TOPIC).await.unwrap().partitions[0].clone();
    assert_eq!(
        (p.log_start_offset, p.high_watermark),
        (0, RECORDS as i64),
        "{p:?}"
    );
    let records = read_all(&client, TOPIC, 0, 0).await;
    let mut history = History::new();
    for (o, v) in acked {
        history.ack(o, v);
    }
    history.read(0, records.into_iter().map(|(o, _, v)| (o, v)));
    history.assert_clean("after a power cut");
    disk.release().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_after_remote_retention_brings_no_deleted_object_back() {
    let dir = tempfile::tempdir().unwrap();
    // Remote retention removes every remote segment that has left the local disk.
    let (disk, client, topic_id, acked) =
        produce_on_a_fresh_disk(dir.path(), &[("retention.bytes", "1")]).await;
    // Settled: only the active segment is local, and every segment before it was
    // uploaded, removed from the manifest and deleted; nothing is left to do.
    let before = wait_for(&disk, &client, "offload and retention", |p, data| {
        p.segments == 1
            && p.remote_segments == 0
            && p.log_start_offset == p.local_log_start_offset
            && p.log_start_offset > 0
            && objects_in(data, &topic_id).is_empty()
    })
    .await;

    let mut disk = cut_and_mount_again(disk, dir.path());
    let data = disk.mount_point.join("data");
    let manifest = check_the_bucket(&data, &topic_id);
    assert_eq!(
        manifest["end_offset"].as_i64(),
        Some(before.log_start_offset),
        "{manifest}"
    );

    disk.broker = Some(ServerProcess::start(&data, &dir.path().join("after.log")));
    let client = Client::connect(&disk.broker().addr).await.unwrap();
    let p = client.describe_topic(TOPIC).await.unwrap().partitions[0].clone();
    assert_eq!(
        (p.log_start_offset, p.high_watermark),
        (before.log_start_offset, RECORDS as i64),
        "{p:?}"
    );
    let records = read_all(&client, TOPIC, 0, p.log_start_offset).await;
    let mut history = History::new();
    for (o, v) in acked {
        history.ack(o, v);
    }
    history.read(
        p.log_start_offset,
        records.into_iter().map(|(o, _, v)| (o, v)),
    );
    history.assert_clean("after a power cut");
    disk.release().unwrap();
}
