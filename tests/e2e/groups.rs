//! Consumer groups: assignment without double ownership, fail-over after kill -9,
//! durable offsets, lag, reset and bad input.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_client::group::{GroupConfig, GroupConsumer, RebalanceListener, TopicPartition};
use strata_client::{Client, Producer, ProducerConfig, StartOffset, pb};
use tonic::Code;

use crate::helpers::*;

/// Records which member owns which partition, and counts overlaps.
#[derive(Default)]
struct Ownership {
    owner: HashMap<TopicPartition, usize>,
    violations: usize,
}

struct Tracker {
    me: usize,
    shared: Arc<Mutex<Ownership>>,
}

impl RebalanceListener for Tracker {
    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        let mut s = self.shared.lock();
        for tp in partitions {
            if s.owner.get(tp) == Some(&self.me) {
                s.owner.remove(tp);
            }
        }
    }
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        let mut s = self.shared.lock();
        for tp in partitions {
            if let Some(prev) = s.owner.insert(tp.clone(), self.me)
                && prev != self.me
            {
                s.violations += 1;
            }
        }
    }
}

fn config(group: &str, topic: &str) -> GroupConfig {
    GroupConfig {
        session_timeout: Duration::from_secs(2),
        auto_offset_reset: StartOffset::Earliest,
        auto_commit_interval: None,
        ..GroupConfig::new(group, &[topic])
    }
}

async fn produce_values(client: &Client, topic: &str, partitions: u32, from: u64, to: u64) {
    let mut p = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    for i in from..to {
        p.send(
            topic,
            Some((i % partitions as u64) as u32),
            None,
            Some(format!("r{i}").as_bytes()),
            &[],
        )
        .await
        .unwrap();
    }
    p.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_six_partitions_exactly_once_and_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(dir.path(), |c| c.housekeeping_interval_ms = 100).await;
    let client = broker.client().await;
    client
        .create_topic("shared", 6, 1, Default::default())
        .await
        .unwrap();
    const TOTAL: u64 = 6000;

    let ownership = Arc::new(Mutex::new(Ownership::default()));
    let processed = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let joined = Arc::new(AtomicUsize::new(0));
    let mut members = Vec::new();
    // Records arrive while members join one by one, so rebalances happen mid-stream.
    let producer = {
        let client = client.clone();
        tokio::spawn(async move {
            for round in 0..30 {
                produce_values(&client, "shared", 6, round * 200, (round + 1) * 200).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for me in 0..3 {
        let c = broker.client().await;
        let listener = Tracker {
            me,
            shared: ownership.clone(),
        };
        let (processed, stop, joined_) = (processed.clone(), stop.clone(), joined.clone());
        members.push(tokio::spawn(async move {
            let mut m =
                GroupConsumer::join_with(c, config("g1", "shared"), Some(Box::new(listener)))
                    .await
                    .unwrap();
            joined_.fetch_add(1, Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                let polled = m.poll(Duration::from_millis(100)).await.unwrap();
                for (_, b) in &polled {
                    let mut p = processed.lock();
                    for r in b.records() {
                        p.push(String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap());
                    }
                }
                // Commit after processing, before polling again.
                m.commit().await.unwrap();
            }
            m.close().await.unwrap();
        }));
        let n = me + 1;
        wait_until(Duration::from_secs(20), "member to join", || {
            let j = joined.load(Ordering::SeqCst);
            async move { j >= n }
        })
        .await;
    }
    // Settled: each of the three owns two partitions.
    wait_until(Duration::from_secs(30), "two partitions per member", || {
        let s = ownership.lock();
        let mut per: BTreeMap<usize, usize> = BTreeMap::new();
        for m in s.owner.values() {
            *per.entry(*m).or_default() += 1;
        }
        let ok = s.owner.len() == 6 && per.len() == 3 && per.values().all(|&n| n == 2);
        async move { ok }
    })
    .await;
    let d = client.describe_group("g1").await.unwrap();
    assert_eq!(d.members.len(), 3);
    for m in &d.members {
        let n: usize = m.assignments.iter().map(|a| a.partitions.len()).sum();
        assert_eq!(n, 2, "{m:?}");
    }
    producer.await.unwrap();
    wait_until(Duration::from_secs(60), "every record processed", || {
        let n = processed.lock().len() as u64;
        async move { n >= TOTAL }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for m in members {
        m.await.unwrap();
    }
    let p = processed.lock().clone();
    let unique: BTreeSet<&String> = p.iter().collect();
    assert_eq!(unique.len() as u64, TOTAL, "every record processed");
    assert_eq!(p.len() as u64, TOTAL, "and none twice");
    let violations = ownership.lock().violations;
    assert_eq!(violations, 0, "no partition was ever owned by two members");
    let d = client.describe_group("g1").await.unwrap();
    assert_eq!(d.state, "Empty");
    assert!(
        d.offsets
            .iter()
            .all(|o| o.lag == 0 && o.committed_offset == 1000),
        "{:?}",
        d.offsets
    );
    broker.stop().await;
}

fn spawn_cli_member(addr: &str, out: &std::path::Path) -> std::process::Child {
    strata()
        .args([
            "consume", "failover", "--group", "g2", "--offset", "earliest", "--output", "json",
        ])
        .args(["--session-timeout-ms", "2000", "--broker", addr])
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn values_in(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["value"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_s_partitions_move_on_and_nothing_is_missed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(dir.path(), |c| c.housekeeping_interval_ms = 100).await;
    let client = broker.client().await;
    client
        .create_topic("failover", 6, 1, Default::default())
        .await
        .unwrap();
    let outs: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("member{i}.out")))
        .collect();
    let mut children: Vec<_> = outs
        .iter()
        .map(|o| spawn_cli_member(&broker.addr, o))
        .collect();
    wait_until(
        Duration::from_secs(30),
        "three members with two partitions each",
        || {
            let c = client.clone();
            async move {
                let d = c.describe_group("g2").await;
                d.is_ok_and(|d| {
                    d.members.len() == 3
                        && d.state == "Stable"
                        && d.members.iter().all(|m| {
                            m.assignments
                                .iter()
                                .map(|a| a.partitions.len())
                                .sum::<usize>()
                                == 2
                        })
                })
            }
        },
    )
    .await;
    produce_values(&client, "failover", 6, 0, 3000).await;
    // Member 0 has read its share; kill it without a chance to leave or commit.
    wait_until(Duration::from_secs(30), "member 0 to read", || {
        let n = values_in(&outs[0]).len();
        async move { n >= 1000 }
    })
    .await;
    children[0].kill().unwrap();
    children[0].wait().unwrap();
    let killed_at = Instant::now();
    produce_values(&client, "failover", 6, 3000, 4500).await;
    wait_until(
        Duration::from_secs(30),
        "the survivors to own all six partitions",
        || {
            let c = client.clone();
            async move {
                let d = c.describe_group("g2").await.unwrap();
                d.members.len() == 2
                    && d.members
                        .iter()
                        .map(|m| {
                            m.assignments
                                .iter()
                                .map(|a| a.partitions.len())
                                .sum::<usize>()
                        })
                        .sum::<usize>()
                        == 6
            }
        },
    )
    .await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(15),
        "moved after the 2 s session timeout, not some other delay"
    );
    wait_until(
        Duration::from_secs(60),
        "every record to be consumed",
        || {
            let seen: BTreeSet<String> = outs.iter().flat_map(|o| values_in(o)).collect();
            async move { seen.len() == 4500 }
        },
    )
    .await;
    // Stop the survivors cleanly: they commit and leave.
    for c in &mut children[1..] {
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        c.wait().unwrap();
    }
    let seen: BTreeSet<String> = outs.iter().flat_map(|o| values_in(o)).collect();
    let want: BTreeSet<String> = (0..4500).map(|i| format!("r{i}")).collect();
    assert_eq!(
        seen, want,
        "every produced record was processed at least once"
    );
    let d = client.describe_group("g2").await.unwrap();
    assert_eq!(d.state, "Empty");
    assert!(
        d.offsets
            .iter()
            .all(|o| o.committed_offset == 750 && o.lag == 0),
        "{:?}",
        d.offsets
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_and_groups_survive_kill_9_of_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(&data, &dir.path().join("a.log"));
    let client = Client::connect(&server.addr).await.unwrap();
    client
        .create_topic("durable", 2, 1, Default::default())
        .await
        .unwrap();
    produce_values(&client, "durable", 2, 0, 100).await;
    let mut m = GroupConsumer::join(client.clone(), config("g3", "durable"))
        .await
        .unwrap();
    let mut read = 0;
    while read < 100 {
        for (_, b) in m.poll(Duration::from_millis(200)).await.unwrap() {
            read += b.records().count();
        }
    }
    m.commit_offsets(&[("durable".into(), 0, 30), ("durable".into(), 1, 40)])
        .await
        .unwrap();
    let member = m.member_id().to_string();
    server.kill();
    drop(m);

    let server = ServerProcess::start(&data, &dir.path().join("b.log"));
    let client = Client::connect(&server.addr).await.unwrap();
    let groups = client.list_groups().await.unwrap();
    assert_eq!(
        groups.iter().map(|g| g.group.as_str()).collect::<Vec<_>>(),
        vec!["g3"]
    );
    let d = client.describe_group("g3").await.unwrap();
    // The member it had is remembered until its session runs out.
    assert_eq!(
        d.members
            .iter()
            .map(|m| m.member_id.clone())
            .collect::<Vec<_>>(),
        vec![member]
    );
    let committed: BTreeMap<u32, i64> = d
        .offsets
        .iter()
        .map(|o| (o.partition, o.committed_offset))
        .collect();
    assert_eq!(committed, BTreeMap::from([(0, 30), (1, 40)]));
    // A new member resumes from the committed offsets once the old session expires.
    let mut m = GroupConsumer::join(client.clone(), config("g3", "durable"))
        .await
        .unwrap();
    let mut firsts = BTreeMap::new();
    let start = Instant::now();
    while firsts.len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "resumed");
        for ((_, p), b) in m.poll(Duration::from_millis(200)).await.unwrap() {
            if let Some(r) = b.records().next() {
                firsts.entry(p).or_insert(r.unwrap().offset);
            }
        }
    }
    assert_eq!(firsts, BTreeMap::from([(0, 30), (1, 40)]));
    m.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_lag_and_reset_to_timestamp_rewinds() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .create_topic("lagging", 1, 1, Default::default())
        .await
        .unwrap();
    let mut raw = pb::strata_client::StrataClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    let records: Vec<pb::Record> = (0..100)
        .map(|i| pb::Record {
            value: Some(format!("t{i}").into_bytes().into()),
            timestamp_ms: 1_000_000 + i * 10,
            ..Default::default()
        })
        .collect();
    raw.produce(pb::ProduceRequest {
        topic: "lagging".into(),
        records,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut m = GroupConsumer::join(client.clone(), config("g4", "lagging"))
        .await
        .unwrap();
    let mut n = 0;
    while n < 100 {
        for (_, b) in m.poll(Duration::from_millis(200)).await.unwrap() {
            n += b.records().count();
        }
        m.commit().await.unwrap();
    }
    m.close().await.unwrap();

    // Lag while a producer runs: every snapshot is consistent with its high watermark.
    let producing = {
        let client = client.clone();
        tokio::spawn(async move { produce_values(&client, "lagging", 1, 0, 5000).await })
    };
    let mut max_lag = 0;
    while !producing.is_finished() {
        let d = client.describe_group("g4").await.unwrap();
        let o = &d.offsets[0];
        assert_eq!(o.committed_offset, 100);
        assert_eq!(o.lag, o.high_watermark - 100);
        max_lag = max_lag.max(o.lag);
    }
    producing.await.unwrap();
    let d = client.describe_group("g4").await.unwrap();
    assert_eq!(d.offsets[0].lag, 5000);
    assert!(max_lag <= 5000);

    // Rewind to the first record at or after a timestamp, through the CLI.
    let out = strata()
        .args([
            "group",
            "reset-offsets",
            "g4",
            "--topic",
            "lagging",
            "--to-timestamp",
            "1000495",
            "--broker",
            &broker.addr,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = strata()
        .args([
            "group",
            "describe",
            "g4",
            "--output",
            "json",
            "--broker",
            &broker.addr,
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["group"], "g4");
    assert_eq!(v["offsets"][0]["committed_offset"], 50);
    assert_eq!(v["offsets"][0]["lag"], 5050);
    assert!(v["members"].as_array().unwrap().is_empty());
    let mut m = GroupConsumer::join(client.clone(), config("g4", "lagging"))
        .await
        .unwrap();
    let first = loop {
        if let Some((_, b)) = m
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .into_iter()
            .next()
        {
            let r = b.records().next().unwrap().unwrap();
            break (
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            );
        }
    };
    assert_eq!(first, (50, "t50".to_string()));
    m.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .create_topic("gt", 2, 1, Default::default())
        .await
        .unwrap();
    produce_values(&client, "gt", 2, 0, 20).await;

    let e = client.describe_group("nope").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));
    assert!(e.to_string().contains("unknown group \"nope\""), "{e}");
    let e = client.delete_group("nope").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));

    let e = GroupConsumer::join(client.clone(), config("g5", "no-such-topic"))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Some(Code::NotFound));
    let bad = GroupConfig {
        assignor: "sticky-ish".into(),
        ..config("g5", "gt")
    };
    let e = GroupConsumer::join(client.clone(), bad)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("unknown assignor"), "{e}");

    // Two members: each owns one partition.
    let mut a = GroupConsumer::join(client.clone(), config("g5", "gt"))
        .await
        .unwrap();
    let mut b = GroupConsumer::join(client.clone(), config("g5", "gt"))
        .await
        .unwrap();
    // Members converge by heartbeating, which they do while they poll.
    let start = Instant::now();
    loop {
        let _ = a.poll(Duration::from_millis(50)).await.unwrap();
        let _ = b.poll(Duration::from_millis(50)).await.unwrap();
        let d = client.describe_group("g5").await.unwrap();
        if d.state == "Stable"
            && d.members.len() == 2
            && a.assignment().len() == 1
            && b.assignment().len() == 1
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "one partition each"
        );
    }
    a.commit_offsets(&[("gt".into(), a.assignment()[0].1, 5)])
        .await
        .unwrap();
    let before = client.describe_group("g5").await.unwrap().offsets;

    // A commit for the other member's partition.
    let theirs = b.assignment()[0].1;
    let e = a
        .commit_offsets(&[("gt".into(), theirs, 3)])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition));
    assert!(e.to_string().contains("does not own gt-"), "{e}");
    // An offset out of range.
    let mine = a.assignment()[0].1;
    let e = a
        .commit_offsets(&[("gt".into(), mine, 11)])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::OutOfRange));
    assert!(e.to_string().contains("valid offsets are 0..=10"), "{e}");
    // Reset and delete while members are live.
    let out = strata()
        .args([
            "group",
            "reset-offsets",
            "g5",
            "--topic",
            "gt",
            "--to-earliest",
            "--broker",
            &broker.addr,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 live member(s)"));
    let e = client.delete_group("g5").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition));
    // A commit from outside the group while it has members.
    let e = client
        .commit_offsets(
            "g5",
            "",
            0,
            vec![pb::OffsetEntry {
                topic: "gt".into(),
                partition: 0,
                offset: 1,
                metadata: String::new(),
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition));
    assert_eq!(
        client.describe_group("g5").await.unwrap().offsets,
        before,
        "nothing changed"
    );

    a.close().await.unwrap();
    b.close().await.unwrap();
    // Once empty: out-of-range reset is refused, a valid one works, delete works.
    let e = client
        .reset_group_offsets(pb::ResetGroupOffsetsRequest {
            group: "g5".into(),
            topic: "gt".into(),
            offset: Some(99),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::OutOfRange));
    client.delete_group("g5").await.unwrap();
    assert!(client.list_groups().await.unwrap().is_empty());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_partitions_deliver_nothing_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .create_topic("pausing", 2, 1, Default::default())
        .await
        .unwrap();
    let mut m = GroupConsumer::join(client.clone(), config("g6", "pausing"))
        .await
        .unwrap();
    assert_eq!(m.assignment().len(), 2);
    m.pause("pausing", 0);
    produce_values(&client, "pausing", 2, 0, 100).await;
    // Partition 1 delivers all its 50 records; partition 0 nothing while paused.
    let mut from = BTreeMap::<u32, usize>::new();
    while from.get(&1).copied().unwrap_or(0) < 50 {
        for ((_, p), b) in m.poll(Duration::from_millis(100)).await.unwrap() {
            *from.entry(p).or_default() += b.records().count();
        }
    }
    for ((_, p), _) in m.poll(Duration::from_millis(300)).await.unwrap() {
        assert_ne!(p, 0, "paused partition delivered");
    }
    assert_eq!(from.get(&0), None);
    assert_eq!(m.position("pausing", 0), Some(0));
    m.resume("pausing", 0);
    while from.get(&0).copied().unwrap_or(0) < 50 {
        for ((_, p), b) in m.poll(Duration::from_millis(100)).await.unwrap() {
            *from.entry(p).or_default() += b.records().count();
        }
    }
    assert_eq!(from, BTreeMap::from([(0, 50), (1, 50)]));
    m.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_or_commit_with_a_stale_member_epoch_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .create_topic("fence", 6, 1, Default::default())
        .await
        .unwrap();
    let hb = |id: &str, epoch: i32, owned: Vec<u32>| pb::GroupHeartbeatRequest {
        group: "fg".into(),
        member_id: id.to_string(),
        member_epoch: epoch,
        topics: vec!["fence".into()],
        owned: vec![pb::TopicPartitions {
            topic: "fence".into(),
            partitions: owned,
        }],
        assignor: String::new(),
        session_timeout_ms: 30_000,
    };
    let mine = |r: &pb::GroupHeartbeatResponse| -> Vec<u32> {
        r.assignment
            .iter()
            .flat_map(|tp| tp.partitions.clone())
            .collect()
    };
    // A alone owns all six partitions; each member that joins takes some away, and
    // every change of A's assignment raises A's epoch.
    let a = client.group_heartbeat(hb("", 0, vec![])).await.unwrap();
    let id = a.member_id.clone();
    let mut epochs = vec![a.member_epoch];
    let mut owned = mine(&a);
    assert_eq!(owned.len(), 6);
    for other in 0..2 {
        client.group_heartbeat(hb("", 0, vec![])).await.unwrap();
        let r = client
            .group_heartbeat(hb(&id, *epochs.last().unwrap(), owned.clone()))
            .await
            .unwrap();
        assert!(mine(&r).len() < owned.len(), "member {other} took some");
        assert!(r.member_epoch > *epochs.last().unwrap());
        epochs.push(r.member_epoch);
        owned = mine(&r);
    }
    let current = *epochs.last().unwrap();
    let stale = epochs[0];
    assert!(stale < current - 1, "{epochs:?}");

    // A zombie with an old epoch is fenced, whatever it claims to own.
    for (epoch, claims) in [(stale, owned.clone()), (current + 3, owned.clone())] {
        let e = client
            .group_heartbeat(hb(&id, epoch, claims))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(Code::Aborted), "{e}");
        assert!(e.to_string().contains("fenced"), "{e}");
    }
    // The epoch before the current one is a lost answer, accepted only from a member
    // that owns nothing it was not given.
    let e = client
        .group_heartbeat(hb(&id, current - 1, (0..6).collect()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::Aborted), "{e}");
    let r = client
        .group_heartbeat(hb(&id, current - 1, owned.clone()))
        .await
        .unwrap();
    assert_eq!(r.member_epoch, current);

    // Commits: the stale epoch is fenced and changes nothing; the current one works.
    let entry = |offset| {
        vec![pb::OffsetEntry {
            topic: "fence".into(),
            partition: owned[0],
            offset,
            metadata: String::new(),
        }]
    };
    let e = client
        .commit_offsets("fg", &id, stale, entry(0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::Aborted), "{e}");
    let committed = client.committed_offsets("fg", vec![]).await.unwrap();
    assert!(committed.iter().all(|o| o.offset == -1), "{committed:?}");
    client
        .commit_offsets("fg", &id, current, entry(0))
        .await
        .unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_or_commit_that_cannot_be_stored_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .create_topic("unstored", 4, 1, Default::default())
        .await
        .unwrap();
    produce_values(&client, "unstored", 4, 0, 40).await;
    let hb = |id: &str, epoch: i32, owned: Vec<u32>| pb::GroupHeartbeatRequest {
        group: "ug".into(),
        member_id: id.to_string(),
        member_epoch: epoch,
        topics: vec!["unstored".into()],
        owned: vec![pb::TopicPartitions {
            topic: "unstored".into(),
            partitions: owned,
        }],
        assignor: String::new(),
        session_timeout_ms: 30_000,
    };
    let a = client.group_heartbeat(hb("", 0, vec![])).await.unwrap();
    let owned: Vec<u32> = a
        .assignment
        .iter()
        .flat_map(|tp| tp.partitions.clone())
        .collect();
    assert_eq!(owned.len(), 4);
    let entry = |offset| {
        vec![pb::OffsetEntry {
            topic: "unstored".into(),
            partition: 0,
            offset,
            metadata: String::new(),
        }]
    };
    client
        .commit_offsets("ug", &a.member_id, a.member_epoch, entry(5))
        .await
        .unwrap();
    let before = client.describe_group("ug").await.unwrap();

    // The offsets topic refuses the write: a join and a commit both fail, and neither
    // leaves a trace in memory that the log does not have.
    let scope = dir.path().to_string_lossy().to_string();
    strata_failpoint::configure("groups-persist", &format!("return({scope})")).unwrap();
    let joined = client.group_heartbeat(hb("", 0, vec![])).await;
    let committed = client
        .commit_offsets("ug", &a.member_id, a.member_epoch, entry(9))
        .await;
    strata_failpoint::clear("groups-persist");
    assert!(joined.is_err(), "the join was not stored: {joined:?}");
    assert!(
        committed.is_err(),
        "the commit was not stored: {committed:?}"
    );
    let after = client.describe_group("ug").await.unwrap();
    assert_eq!(after.group_epoch, before.group_epoch);
    let ids = |d: &pb::GroupDescription| -> Vec<String> {
        d.members.iter().map(|m| m.member_id.clone()).collect()
    };
    assert_eq!(ids(&after), ids(&before));
    let offsets = client.committed_offsets("ug", vec![]).await.unwrap();
    assert_eq!(
        offsets.iter().map(|o| o.offset).collect::<Vec<_>>(),
        vec![5]
    );
    // A's assignment is untouched; once the log takes writes again a join works.
    let r = client
        .group_heartbeat(hb(&a.member_id, a.member_epoch, owned.clone()))
        .await
        .unwrap();
    assert_eq!(r.member_epoch, a.member_epoch);
    let b = client.group_heartbeat(hb("", 0, vec![])).await.unwrap();
    assert!(!b.member_id.is_empty());
    assert_eq!(client.describe_group("ug").await.unwrap().members.len(), 2);
    broker.stop().await;
}
