//! Clusters of real `strata server` processes: the controller's Raft group forms,
//! every broker registers, a killed broker is fenced and a killed controller replaced,
//! and a broker whose disk was wiped cannot come back under its old id.
//!
//! Each cluster listens on its own random loopback address (127.x.y.z), so clusters
//! of tests running side by side never meet, and ports can be fixed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_client::{Client, pb};

use crate::helpers::*;
use crate::history::History;
use crate::netns::Net;

/// A cluster of broker processes on one loopback address.
pub struct Cluster {
    pub dir: PathBuf,
    ip: String,
    pub nodes: Vec<Option<ServerProcess>>,
    voters: String,
    /// More flags and environment for every broker (a shared object store).
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    /// Nodes the test treats as cut off: it asks only the others who leads.
    cut: Vec<u64>,
    /// The private network, when the brokers run in namespaces of their own (after
    /// `nodes`: the processes stop before their namespaces go).
    net: Option<Net>,
    /// Whether brokers run their Kafka listener (at [`Cluster::kafka_addr`]).
    kafka: bool,
    /// Flags for one broker only (its own certificate).
    pub node_args: std::collections::BTreeMap<u64, Vec<String>>,
    /// How the test's clients connect (TLS for a TLS cluster).
    pub client_options: strata_client::ConnectOptions,
}

impl Cluster {
    /// Starts `n` voters.
    pub fn start(dir: &Path, n: u64) -> Self {
        Self::start_with(dir, n, Vec::new(), Vec::new())
    }

    /// Starts `n` voters with more flags and environment.
    pub fn start_with(
        dir: &Path,
        n: u64,
        extra_args: Vec<String>,
        extra_env: Vec<(String, String)>,
    ) -> Self {
        Self::start_on(dir, n, extra_args, extra_env, None, false)
    }

    /// Starts `n` voters, each in its own namespace of `net` if given.
    fn start_on(
        dir: &Path,
        n: u64,
        extra_args: Vec<String>,
        extra_env: Vec<(String, String)>,
        net: Option<Net>,
        kafka: bool,
    ) -> Self {
        let mut c = Self::unstarted(dir, n, extra_args, extra_env, net, kafka);
        c.start_all(n);
        c
    }

    /// A cluster of `n` voters whose addresses are chosen but whose brokers have not
    /// started: a test can make certificates for [`Cluster::ip`] first.
    pub fn unstarted(
        dir: &Path,
        n: u64,
        extra_args: Vec<String>,
        extra_env: Vec<(String, String)>,
        net: Option<Net>,
        kafka: bool,
    ) -> Self {
        let mut c = Self {
            dir: dir.to_path_buf(),
            ip: random_loopback(),
            nodes: Vec::new(),
            voters: String::new(),
            extra_args,
            extra_env,
            cut: Vec::new(),
            net,
            kafka,
            node_args: Default::default(),
            client_options: Default::default(),
        };
        c.voters = (1..=n)
            .map(|i| format!("{i}@{}", c.addr(i)))
            .collect::<Vec<_>>()
            .join(",");
        c
    }

    /// Starts the `n` voters of an [`Cluster::unstarted`] cluster.
    pub fn start_all(&mut self, n: u64) {
        for id in 1..=n {
            let node = self.spawn(id);
            self.nodes.push(Some(node));
        }
    }

    /// The loopback address every broker listens on (its own port each).
    pub fn ip(&self) -> &str {
        &self.ip
    }

    pub fn addr(&self, id: u64) -> String {
        match &self.net {
            Some(net) => format!("{}:{}", net.ip(id), 19_300 + id),
            None => format!("{}:{}", self.ip, 19_300 + id),
        }
    }

    /// Node `id`'s Kafka listener (when the cluster runs them).
    pub fn kafka_addr(&self, id: u64) -> String {
        match &self.net {
            Some(net) => format!("{}:{}", net.ip(id), 19_400 + id),
            None => format!("{}:{}", self.ip, 19_400 + id),
        }
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    fn spawn(&self, id: u64) -> ServerProcess {
        let addr = self.addr(id);
        let node_id = id.to_string();
        let mut args = vec![
            "--node-id",
            &node_id,
            "--listen",
            &addr,
            "--voters",
            &self.voters,
        ];
        // A node past the voters joins through the first.
        let via = self.addr(1);
        if !self.voters.contains(&format!("{id}@")) {
            args.extend(["--join", &via]);
        }
        args.extend(self.extra_args.iter().map(String::as_str));
        if let Some(own) = self.node_args.get(&id) {
            args.extend(own.iter().map(String::as_str));
        }
        let kafka = self.kafka_addr(id);
        if self.kafka {
            args.extend(["--kafka-listen", &kafka]);
        }
        let mut env = vec![("RUST_LOG", "info,openraft=warn")];
        env.extend(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        ServerProcess::start_in(
            self.net.as_ref().map(|n| n.ns(id)).as_deref(),
            &self.data_dir(id),
            &self.dir.join(format!("node-{id}.log")),
            &args,
            &env,
        )
    }

    /// Starts one more broker, not a voter: it joins through node 1.
    pub fn add_broker(&mut self) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let node = self.spawn(id);
        self.nodes.push(Some(node));
        id
    }

    /// kill -9 of node `id`.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut n) = self.nodes[id as usize - 1].take() {
            n.kill();
        }
    }

    /// Starts node `id` again on its data directory.
    pub fn restart(&mut self, id: u64) {
        let node = self.spawn(id);
        self.nodes[id as usize - 1] = Some(node);
    }

    /// Removes node `id`'s data directory (it must be stopped).
    pub fn wipe(&self, id: u64) {
        std::fs::remove_dir_all(self.data_dir(id)).unwrap();
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.join(format!("node-{id}.log"))).unwrap_or_default()
    }

    /// What node `id` answers to DescribeCluster, if it answers.
    pub async fn describe(&self, id: u64) -> Option<pb::DescribeClusterResponse> {
        let client = Client::connect_with(&self.addr(id), &self.client_options)
            .await
            .ok()?;
        client.describe_cluster().await.ok()
    }

    /// Waits until every running node agrees on a controller and on each broker's state.
    pub async fn settled(&self, what: &str, ok: impl Fn(&pb::DescribeClusterResponse) -> bool) {
        let running: Vec<u64> = (1..=self.nodes.len() as u64)
            .filter(|id| self.nodes[*id as usize - 1].is_some())
            .collect();
        wait_until(Duration::from_secs(60), what, || async {
            let mut seen = Vec::new();
            for id in &running {
                match self.describe(*id).await {
                    Some(d) if d.controller_id > 0 && ok(&d) => {
                        seen.push((d.controller_id, states(&d)))
                    }
                    _ => return false,
                }
            }
            seen.windows(2).all(|w| w[0] == w[1])
        })
        .await;
    }
}

/// (id, state) of every broker.
fn states(d: &pb::DescribeClusterResponse) -> Vec<(u64, String)> {
    d.brokers.iter().map(|b| (b.id, b.state.clone())).collect()
}

fn state_of(d: &pb::DescribeClusterResponse, id: u64) -> Option<&str> {
    d.brokers
        .iter()
        .find(|b| b.id == id)
        .map(|b| b.state.as_str())
}

/// A loopback address of its own for one cluster: 127.x.y.z, never 127.0.0.1.
pub(crate) fn random_loopback() -> String {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ ((std::process::id() as u64) << 32);
    // splitmix64: spreads nearby seeds apart.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let b = z.to_le_bytes();
    format!("127.{}.{}.{}", 1 + b[0] % 254, b[1], 1 + b[2] % 254)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_elect_a_controller_fence_a_killed_one_and_replace_a_killed_controller() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3);
    c.settled("three active brokers and one controller", |d| {
        d.brokers.len() == 3 && d.brokers.iter().all(|b| b.state == "active" && b.voter)
    })
    .await;
    let first = c.describe(1).await.unwrap();
    let leader = first.controller_id as u64;
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();

    // A follower killed: the controller fences it.
    let follower = others[0];
    c.kill(follower);
    c.settled("the killed follower is fenced", |d| {
        state_of(d, follower) == Some("fenced") && d.controller_id as u64 == leader
    })
    .await;
    c.restart(follower);
    c.settled("the restarted follower is active again", |d| {
        d.brokers.iter().all(|b| b.state == "active")
    })
    .await;

    // The controller killed: the others elect one of themselves in a later term, and
    // fence the old one.
    c.kill(leader);
    c.settled("a new controller, which fences the old one", |d| {
        d.controller_id as u64 != leader
            && d.raft_term > first.raft_term
            && state_of(d, leader) == Some("fenced")
    })
    .await;
    c.restart(leader);
    c.settled("all three active again", |d| {
        d.brokers.len() == 3 && d.brokers.iter().all(|b| b.state == "active")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_disk_was_wiped_is_refused_under_its_old_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::active(dir.path(), 3).await;
    // Never the controller: its restart would also have to wait for an election.
    let leader = c.describe(1).await.unwrap().controller_id as u64;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    c.kill(victim);
    c.wipe(victim);
    c.restart(victim);
    // It must not take part in Raft: it stops, saying why and what to do.
    let node = c.nodes[victim as usize - 1].as_mut().unwrap();
    let status = wait_for_exit(&mut node.child, Duration::from_secs(60)).await;
    assert!(!status.success(), "the wiped voter stops with an error");
    let log = c.log(victim);
    assert!(
        log.contains("its disk was wiped or replaced") && log.contains("new --node-id"),
        "{log}"
    );
    // The other two go on, with the wiped one fenced.
    c.nodes[victim as usize - 1] = None;
    c.settled("the wiped broker fenced, the others active", |d| {
        state_of(d, victim) == Some("fenced")
            && d.brokers.iter().filter(|b| b.state == "active").count() == 2
    })
    .await;
}

/// Waits for a child process to exit by itself.
async fn wait_for_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process did not exit within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_broker_joins_a_running_cluster_as_a_non_voter() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::active(dir.path(), 3).await;
    let id = c.add_broker();
    // Every node, the new one too (it follows the controller's log), sees it active
    // and not voting.
    c.settled("the fourth broker active, not a voter", |d| {
        d.brokers.len() == 4
            && d.brokers.iter().all(|b| b.state == "active")
            && d.brokers.iter().filter(|b| b.voter).count() == 3
            && d.brokers.iter().any(|b| b.id == id && !b.voter)
    })
    .await;
    // Wiped and back under its id: refused before it takes part, like a voter.
    c.kill(id);
    c.wipe(id);
    c.restart(id);
    let node = c.nodes[id as usize - 1].as_mut().unwrap();
    let status = wait_for_exit(&mut node.child, Duration::from_secs(60)).await;
    assert!(!status.success(), "the wiped broker stops with an error");
    assert!(c.log(id).contains("its disk was wiped or replaced"));
    c.nodes[id as usize - 1] = None;
    // It never leads the controller, whoever is killed.
    let leader = c.describe(1).await.unwrap().controller_id as u64;
    c.kill(leader);
    c.settled("a new controller among the voters", |d| {
        let new = d.controller_id as u64;
        new != leader && new != id && state_of(d, leader) == Some("fenced")
    })
    .await;
}

/// A raw gRPC client for one broker.
async fn raw(addr: &str) -> pb::strata_client::StrataClient<tonic::transport::Channel> {
    pb::strata_client::StrataClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

impl Cluster {
    /// Starts `n` voters and waits until all are active.
    async fn active(dir: &Path, n: u64) -> Self {
        Self::active_on(dir, n, None).await
    }

    /// [`Cluster::active`], each broker in its own namespace of `net` if given.
    async fn active_on(dir: &Path, n: u64, net: Option<Net>) -> Self {
        let c = Self::start_on(dir, n, Vec::new(), Vec::new(), net, false);
        c.all_active().await;
        c
    }

    /// [`Cluster::active`] with every broker's Kafka listener on.
    pub async fn active_with_kafka(dir: &Path, n: u64) -> Self {
        let c = Self::start_on(dir, n, Vec::new(), Vec::new(), None, true);
        c.all_active().await;
        c
    }

    /// Waits until every broker started is registered and active.
    async fn all_active(&self) {
        let n = self.nodes.len();
        self.settled("every broker active", |d| {
            d.brokers.len() == n && d.brokers.iter().all(|b| b.state == "active")
        })
        .await;
    }

    /// Three voters sharing the bucket `bucket` of the S3 server at `options` (prefix
    /// `cluster`), with `env` more, on `net` if given; once all are active, creates
    /// `cold` (one partition on three replicas, 4 KiB segments kept locally only until
    /// offloaded) and returns its partition once the three are in sync.
    async fn on_shared_store(
        dir: &Path,
        options: std::collections::BTreeMap<String, String>,
        bucket: &str,
        mut env: Vec<(String, String)>,
        net: Option<Net>,
    ) -> (Self, pb::PartitionDescription) {
        env.extend(options.into_iter().map(|(k, v)| (k.to_uppercase(), v)));
        let args = vec![
            "--object-store".to_string(),
            format!("s3://{bucket}/cluster"),
        ];
        let c = Self::start_on(dir, 3, args, env, net, false);
        c.all_active().await;
        let configs = [("segment.bytes", "4096"), ("local.retention.bytes", "4096")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Client::connect(&c.addr(1))
            .await
            .unwrap()
            .create_topic("cold", 1, 3, configs)
            .await
            .unwrap();
        let first = c.led("cold", None, 3).await;
        (c, first)
    }

    /// Reads `topic` from its leader into `history` up to everything acknowledged, and
    /// fails naming any anomaly (`what` says when); returns that end.
    async fn assert_history_clean(&self, topic: &str, history: &mut History, what: &str) -> i64 {
        let end = history_end(history);
        read_from_leader(self, topic, history, end).await;
        history.assert_clean(what);
        end
    }

    /// Creates `topic` with one partition on three replicas, through broker 1; returns
    /// the partition once its three replicas are in sync.
    async fn replicated_topic(&self, topic: &str) -> pb::PartitionDescription {
        let client = Client::connect(&self.addr(1)).await.unwrap();
        client
            .create_topic(topic, 1, 3, Default::default())
            .await
            .unwrap();
        self.led(topic, None, 3).await
    }

    pub fn running(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64)
            .filter(|id| self.nodes[*id as usize - 1].is_some())
            .collect()
    }

    /// Partition `n` of `topic` as the first running node that answers describes it.
    async fn partition_n(&self, topic: &str, n: u32) -> Option<pb::PartitionDescription> {
        for id in self
            .running()
            .into_iter()
            .filter(|id| !self.cut.contains(id))
        {
            // Bounded: a paused broker accepts connections and never answers.
            let ask = async {
                let client = Client::connect(&self.addr(id)).await.ok()?;
                client.describe_topic(topic).await.ok()
            };
            if let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(1), ask).await {
                return d.partitions.get(n as usize).cloned();
            }
        }
        None
    }

    /// Every node's log lines about `topic`'s leaders and in-sync sets (for a failure).
    fn isr_history(&self, topic: &str) -> String {
        let mut out = String::new();
        for id in 1..=self.nodes.len() as u64 {
            let log = self.log(id);
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    (l.contains(&format!("topic={topic} "))
                        || l.contains(&format!("topic=\"{topic}\""))
                        || l.contains(&format!("topic: \"{topic}\"")))
                        && !l.contains("__consumer_offsets")
                        || l.contains("fenced")
                        || l.contains("registered")
                        || l.contains("local replica")
                        || l.contains("listening")
                })
                .collect();
            out.push_str(&format!("--- node {id}\n"));
            for l in &lines[lines.len().saturating_sub(60)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Waits until partition 0 of `topic` has a leader other than `not` with `isr`
    /// in-sync replicas; returns it.
    pub async fn led(&self, topic: &str, not: Option<u64>, isr: usize) -> pb::PartitionDescription {
        self.led_n(topic, 0, not, isr).await
    }

    /// [`Cluster::led`] for partition `n`.
    pub async fn led_n(
        &self,
        topic: &str,
        n: u32,
        not: Option<u64>,
        isr: usize,
    ) -> pb::PartitionDescription {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(p) = self.partition_n(topic, n).await
                && p.leader >= 0
                && Some(p.leader as u64) != not
                && p.isr.len() >= isr
            {
                return p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{topic}-{n}: no leader other than {not:?} with {isr} in sync within 60 s: {:?}\n{}",
                self.partition_n(topic, n).await,
                self.isr_history(topic)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Ten records whose values, `<prefix>-record-<i>`, no other produce attempt has.
fn attempt_records(prefix: &str) -> (Vec<Vec<u8>>, Vec<pb::Record>) {
    let values: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("{prefix}-record-{i}").into_bytes())
        .collect();
    let records = values
        .iter()
        .map(|v| pb::Record {
            value: Some(v.clone().into()),
            ..Default::default()
        })
        .collect();
    (values, records)
}

/// Produces `count` acks=all records of 10 to partition 0 of `topic` through its leader,
/// following the leader when it changes; every attempt carries new values, so a retry
/// of a produce whose outcome was unknown can never look like a duplicate. Calls
/// `midway` once, after `count / 2` records were acknowledged.
async fn produce_following_leader(
    c: &mut Cluster,
    topic: &str,
    tag: &str,
    count: usize,
    history: &mut History,
    mut midway: impl FnMut(&mut Cluster, u64),
) -> Option<Duration> {
    let mut fired_at: Option<std::time::Instant> = None;
    let mut failover = None;
    let mut attempt = 0u64;
    let mut acked = 0;
    let mut fired = false;
    let mut leader = c.led(topic, None, 0).await.leader as u64;
    let mut client = raw(&c.addr(leader)).await;
    while acked < count {
        if !fired && acked >= count / 2 {
            fired = true;
            fired_at = Some(std::time::Instant::now());
            midway(c, leader);
        }
        attempt += 1;
        let (values, records) = attempt_records(&format!("{tag}-attempt-{attempt}"));
        // A deadline of our own: a paused broker never answers.
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            client.produce(pb::ProduceRequest {
                topic: topic.into(),
                acks: pb::Acks::All as i32,
                records,
                timeout_ms: 2_000,
                ..Default::default()
            }),
        )
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in 3 s")));
        match r {
            Ok(r) => {
                let r = r.into_inner();
                if let Some(at) = fired_at
                    && failover.is_none()
                {
                    failover = Some(at.elapsed());
                }
                for (i, v) in values.into_iter().enumerate() {
                    history.ack(r.base_offset + i as i64, v);
                }
                acked += 10;
            }
            Err(status) => {
                // Unknown outcome: find the leader again and go on with new values.
                // (NOT_FOUND: the leader named by one broker's metadata may not have
                // applied the topic's creation yet; Kafka's clients retry its
                // UNKNOWN_TOPIC_OR_PARTITION too.)
                let retriable = matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::NotFound
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                );
                assert!(
                    retriable,
                    "produce failed for good: {status:?}\n{}",
                    c.isr_history(topic)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
                let p = c.led(topic, None, 0).await;
                if p.leader as u64 != leader {
                    leader = p.leader as u64;
                    client = raw(&c.addr(leader)).await;
                }
            }
        }
    }
    failover
}

/// Reads partition 0 of `topic` from its leader once its HW covers every acknowledged
/// offset (a new leader's HW moves once its followers have fetched), into `history`.
/// A retriable answer (a new leader still loading the cold tier's manifest, or
/// leadership moving between the check and the read) starts the read again.
async fn read_from_leader(c: &Cluster, topic: &str, history: &mut History, end: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let records = loop {
        let p = c.led(topic, None, 0).await;
        if let Ok(client) = Client::connect(&c.addr(p.leader as u64)).await
            && client
                .list_offsets(topic, 0, pb::OffsetSpec::Latest, 0)
                .await
                .is_ok_and(|o| o.offset >= end)
        {
            match try_read_all(&client, topic, 0, 0).await {
                Ok(records) => break records,
                Err(e) if e.is_retriable() => {}
                Err(e) => panic!("reading {topic} from its leader: {e}"),
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the leader of {topic} did not answer a read up to {end} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    history.read(0, records.into_iter().map(|(o, _, v)| (o, v)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_topic_keeps_every_acknowledged_record_through_leader_kills() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::active(dir.path(), 3).await;
    // Created through any broker; every broker describes it the same way.
    let client = Client::connect(&c.addr(2)).await.unwrap();
    let d = client
        .create_topic("r", 1, 3, Default::default())
        .await
        .unwrap();
    assert_eq!(d.replication_factor, 3);
    assert_eq!(d.partitions[0].replicas.len(), 3);
    let first = c.led("r", None, 3).await;

    // A follower refuses produce, naming the leader.
    let follower = (1..=3).find(|id| *id != first.leader as u64).unwrap();
    // (Once it has applied the metadata: until then it says it knows no leader.)
    let leader_addr = c.addr(first.leader as u64);
    wait_until(
        Duration::from_secs(30),
        "the follower naming the leader",
        || {
            let (addr, leader_addr) = (c.addr(follower), leader_addr.clone());
            async move {
                let e = raw(&addr)
                    .await
                    .produce(pb::ProduceRequest {
                        topic: "r".into(),
                        records: vec![pb::Record::default()],
                        ..Default::default()
                    })
                    .await
                    .unwrap_err();
                // (A broker whose metadata does not have the topic yet says so.)
                if e.code() == tonic::Code::NotFound {
                    return false;
                }
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                e.metadata()
                    .get("strata-leader-address")
                    .is_some_and(|a| a == leader_addr.as_str())
            }
        },
    )
    .await;

    let mut history = History::new();
    // Kill -9 the leader halfway through acks=all produces.
    produce_following_leader(&mut c, "r", "first", 400, &mut history, |c, leader| {
        c.kill(leader)
    })
    .await;
    let killed = first.leader as u64;
    let second = c.led("r", Some(killed), 2).await;
    assert!(second.leader_epoch > first.leader_epoch);
    read_from_leader(&c, "r", &mut history, 400).await;
    history.assert_clean("after the first leader was killed");

    // The old leader returns as a follower, truncates what it had beyond the new
    // leader's log, catches up and is in sync again; then it leads again (preferred).
    c.restart(killed);
    let third = c.led("r", None, 3).await;
    // Kill the leader again, with the returned broker among those who may take over.
    let mut total = 0;
    produce_following_leader(&mut c, "r", "second", 400, &mut history, |c, leader| {
        c.kill(leader);
        total = leader;
    })
    .await;
    c.led("r", Some(total), 2).await;
    c.assert_history_clean("r", &mut history, "after the second leader was killed")
        .await;
    assert!(third.leader_epoch >= second.leader_epoch);
    // A client given a broker that does not lead the partition follows the leader it
    // names and reads the same records.
    let leader = c.led("r", None, 0).await.leader as u64;
    let other = c.running().into_iter().find(|id| *id != leader).unwrap();
    let client = Client::connect(&c.addr(other)).await.unwrap();
    let records = read_all(&client, "r", 0, 0).await;
    history.read(0, records.into_iter().map(|(o, _, v)| (o, v)));
    history.assert_clean("read through a broker that does not lead");
}

fn history_end(h: &History) -> i64 {
    h.last_acked().map_or(0, |o| o + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_altered_and_deleted_through_any_broker() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::active(dir.path(), 3).await;
    let via = |id| {
        let addr = c.addr(id);
        async move { Client::connect(&addr).await }
    };
    // More replicas than live brokers is refused, naming both numbers.
    let e = via(1)
        .await
        .unwrap()
        .create_topic("t", 2, 4, Default::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("replication factor 4"), "{e}");
    let d = via(1)
        .await
        .unwrap()
        .create_topic("t", 2, 2, Default::default())
        .await
        .unwrap();
    assert_eq!(d.partitions.len(), 2);
    assert!(d.partitions.iter().all(|p| p.replicas.len() == 2));
    let p = c.led("t", None, 2).await;
    // Configs changed through a broker; the leader applies them to its log.
    let other = (1..=3).find(|id| *id != p.leader as u64).unwrap();
    let set = [("max.message.bytes".to_string(), "200".to_string())].into();
    via(other)
        .await
        .unwrap()
        .alter_configs("t", set, Vec::new())
        .await
        .unwrap();
    let mut leader = raw(&c.addr(p.leader as u64)).await;
    wait_until(
        Duration::from_secs(30),
        "the leader refusing a large batch",
        || {
            let mut leader = leader.clone();
            async move {
                let e = leader
                    .produce(pb::ProduceRequest {
                        topic: "t".into(),
                        records: vec![pb::Record {
                            value: Some(vec![7u8; 1000].into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .await;
                matches!(e, Err(s) if s.message().contains("max.message.bytes=200"))
            }
        },
    )
    .await;
    // Every broker describes the change (once it has applied it: metadata reaches
    // brokers one by one).
    wait_until(
        Duration::from_secs(30),
        "every broker describing the change",
        || async {
            let mut all = true;
            for id in 1..=3 {
                let d = via(id).await.unwrap().describe_topic("t").await.unwrap();
                let v = d.configs.iter().find(|c| c.name == "max.message.bytes");
                all &= v.is_some_and(|v| v.value == "200");
            }
            all
        },
    )
    .await;
    // Deleted through a third broker: gone from every broker's metadata and disk.
    via(3).await.unwrap().delete_topic("t").await.unwrap();
    wait_until(Duration::from_secs(30), "every replica removed", || async {
        let mut gone = true;
        for id in 1..=3 {
            let described = via(id).await.unwrap().describe_topic("t").await;
            gone &= described.is_err_and(|e| e.code() == Some(tonic::Code::NotFound));
            gone &= !c.data_dir(id).join("topics").join("t").exists();
        }
        gone
    })
    .await;
    leader
        .produce(pb::ProduceRequest {
            topic: "t".into(),
            records: vec![pb::Record::default()],
            ..Default::default()
        })
        .await
        .unwrap_err();
}

impl Cluster {
    /// Cuts node `id` off from the other brokers (the test still reaches it); from now
    /// on the test asks only the others who leads.
    fn cut_off(&mut self, id: u64) {
        self.net
            .as_ref()
            .expect("a cluster on a private network")
            .cut_off(id);
        self.cut.push(id);
    }

    /// Ends every partition.
    fn heal(&mut self) {
        self.net
            .as_ref()
            .expect("a cluster on a private network")
            .heal();
        self.cut.clear();
    }
}

/// kill -STOP / -CONT of node `id`.
fn signal(c: &Cluster, id: u64, sig: &str) {
    let pid = c.nodes[id as usize - 1].as_ref().unwrap().child.id();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_session_is_replaced_and_rejoins_as_a_follower() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::active(dir.path(), 3).await;
    let first = c.replicated_topic("p").await;
    let mut history = History::new();
    let mut paused = 0;
    produce_following_leader(&mut c, "p", "paused", 200, &mut history, |c, leader| {
        signal(c, leader, "-STOP");
        paused = leader;
    })
    .await;
    let second = c.led("p", Some(paused), 2).await;
    assert!(second.leader_epoch > first.leader_epoch);
    // Woken, it learns it was replaced, truncates what only it had, and catches up.
    signal(&c, paused, "-CONT");
    c.led("p", None, 3).await;
    c.assert_history_clean("p", &mut history, "after a paused leader came back")
        .await;
}

/// A network partition, the way a failed switch port looks (brokers in network
/// namespaces made by the test; frames between the sides vanish, connections hang):
/// the leader is cut off from the other brokers halfway through acks=all produces,
/// while the test still reaches it. The majority fences it and elects a new leader; the
/// cut-off leader, still believing it leads, acknowledges nothing; healed, it learns it
/// was replaced, drops what only it had, and is in sync again. Twice, so the second cut
/// may fall on another broker, and then the history must be clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_by_a_network_partition_acknowledges_nothing_and_rejoins_after_healing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::active_on(dir.path(), 3, Some(Net::new(3))).await;
    let mut epoch = c.replicated_topic("n").await.leader_epoch;
    let mut history = History::new();
    for round in 0..2 {
        let mut cut = 0;
        let tag = format!("round-{round}");
        produce_following_leader(&mut c, "n", &tag, 200, &mut history, |c, leader| {
            c.cut_off(leader);
            cut = leader;
        })
        .await;
        let next = c.led("n", Some(cut), 2).await;
        assert!(next.leader_epoch > epoch);
        epoch = next.leader_epoch;
        // The cut-off broker cannot know it was replaced; an acks=all produce to it
        // must still not be acknowledged (no follower can reach it to copy the batch).
        let stray = format!("{tag}-to-the-cut-off-leader").into_bytes();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            raw(&c.addr(cut)).await.produce(pb::ProduceRequest {
                topic: "n".into(),
                acks: pb::Acks::All as i32,
                records: vec![pb::Record {
                    value: Some(stray.into()),
                    ..Default::default()
                }],
                timeout_ms: 2_000,
                ..Default::default()
            }),
        )
        .await;
        assert!(
            !matches!(answer, Ok(Ok(_))),
            "{tag}: the cut-off leader acknowledged an acks=all produce\n{}",
            c.isr_history("n")
        );
        c.heal();
        c.led("n", None, 3).await;
    }
    c.assert_history_clean(
        "n",
        &mut history,
        "after two leaders were cut off by a network partition",
    )
    .await;
}

/// Kill -9 of the leader during acks=all produce, `STRATA_LEADER_KILLS` times (3 by
/// default; `tests/chaos.sh` runs many), the killed broker restarted and back in sync
/// before the next. Prints the failover times: from the kill to the first acks=all
/// produce acknowledged by the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_leader_kills_lose_no_acknowledged_record() {
    let cycles: usize = std::env::var("STRATA_LEADER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::active(dir.path(), 3).await;
    c.replicated_topic("k").await;
    let mut history = History::new();
    let mut failovers = Vec::new();
    for cycle in 0..cycles {
        let mut killed = 0;
        let took = produce_following_leader(
            &mut c,
            "k",
            &format!("cycle-{cycle}"),
            100,
            &mut history,
            |c, leader| {
                c.kill(leader);
                killed = leader;
            },
        )
        .await;
        failovers.extend(took);
        c.restart(killed);
        c.led("k", None, 3).await;
    }
    c.assert_history_clean("k", &mut history, &format!("after {cycles} leader kills"))
        .await;
    failovers.sort();
    let ms = |d: &Duration| d.as_millis();
    println!(
        "leader kills: {cycles}; failover to the first acks=all ack: min {} ms, median {} ms, max {} ms",
        failovers.first().map_or(0, ms),
        failovers.get(failovers.len() / 2).map_or(0, ms),
        failovers.last().map_or(0, ms),
    );
}

/// Produces `count` acks=all records to partition `n` of `topic` through its leader,
/// following it; each attempt carries new values (see `produce_following_leader`).
async fn produce_acked(c: &Cluster, topic: &str, n: u32, tag: &str, count: usize, h: &mut History) {
    let mut acked = 0;
    let mut attempt = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked < count {
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}-{n}: only {acked} of {count} records acknowledged within 60 s"
        );
        attempt += 1;
        let leader = c.led_n(topic, n, None, 0).await.leader as u64;
        let (values, records) = attempt_records(&format!("{tag}-{n}-attempt-{attempt}"));
        let produce = async {
            raw(&c.addr(leader))
                .await
                .produce(pb::ProduceRequest {
                    topic: topic.into(),
                    partition: n,
                    acks: pb::Acks::All as i32,
                    records,
                    timeout_ms: 2_000,
                    ..Default::default()
                })
                .await
        };
        match tokio::time::timeout(Duration::from_secs(3), produce).await {
            Ok(Ok(r)) => {
                let base = r.into_inner().base_offset;
                for (i, v) in values.into_iter().enumerate() {
                    h.ack(base + i as i64, v);
                }
                acked += 10;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What the group delivered and had committed, in the order it happened.
#[derive(Default)]
struct GroupLog {
    /// Per partition: every (offset, value) delivered, in delivery order.
    delivered: [Vec<(i64, Vec<u8>)>; 2],
    /// Per partition: the last commit the coordinator acknowledged.
    committed: [i64; 2],
    /// Offsets delivered again below an acknowledged commit: more than at-least-once.
    redelivered_below_commit: Vec<(u32, i64, i64)>,
}

impl GroupLog {
    /// One poll of `m`: records what it delivered, then commits those positions.
    async fn poll(&mut self, m: &mut strata_client::group::GroupConsumer, topic: &str) {
        let got = match m.poll(Duration::from_millis(100)).await {
            Ok(got) => got,
            Err(e) => panic!("a group member failed for good: {e}"),
        };
        let mut positions = Vec::new();
        for ((t, p), b) in got {
            assert_eq!(t, topic);
            let seen = &mut self.delivered[p as usize];
            for r in b.records() {
                let r = r.unwrap();
                if r.offset < self.committed[p as usize] && seen.iter().any(|(o, _)| *o == r.offset)
                {
                    self.redelivered_below_commit
                        .push((p, r.offset, self.committed[p as usize]));
                }
                seen.push((r.offset, r.value.unwrap_or_default().to_vec()));
            }
            positions.push((t, p, b.next_offset));
        }
        if positions.is_empty() {
            return;
        }
        // A commit whose answer is lost (the coordinator moving) may or may not count;
        // only acknowledged ones bound what may be delivered again.
        if m.commit_offsets(&positions).await.is_ok() {
            for (_, p, o) in positions {
                let c = &mut self.committed[p as usize];
                *c = (*c).max(o);
            }
        }
    }

    fn covers(&self, p: usize, end: i64) -> bool {
        let offsets: std::collections::BTreeSet<i64> =
            self.delivered[p].iter().map(|(o, _)| *o).collect();
        (0..end).all(|o| offsets.contains(&o))
    }
}

/// The coordinator of `group`: the leader of its `__consumer_offsets` partition, once
/// that partition has `isr` replicas in sync.
pub async fn coordinator(c: &Cluster, group: &str, not: Option<u64>, isr: usize) -> u64 {
    let offsets = strata_broker::groups::OFFSETS_TOPIC;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let count = 'found: loop {
        for id in c.running() {
            if let Ok(client) = Client::connect(&c.addr(id)).await
                && let Ok(t) = client.describe_topic(offsets).await
            {
                break 'found t.partitions.len() as u32;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {offsets} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let n = strata_broker::groups::partition_for(group, count);
    c.led_n(offsets, n, not, isr).await.leader as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_keeps_committed_offsets_and_members_through_a_coordinator_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::active(dir.path(), 3).await;
    let admin = Client::connect(&c.addr(1)).await.unwrap();
    admin
        .create_topic("gt", 2, 3, Default::default())
        .await
        .unwrap();
    let coord = coordinator(&c, "gf", None, 3).await;
    // The group's requests go through a broker that does not coordinate it, and one
    // that stays up: it names the coordinator, and the client follows.
    let boot = (1..=3).find(|id| *id != coord).unwrap();
    let (boot_addr, coord_addr) = (c.addr(boot), c.addr(coord));
    // (Once it has applied the metadata: until then it knows no coordinator.)
    wait_until(
        Duration::from_secs(30),
        "a broker naming the coordinator",
        || {
            let (boot_addr, coord_addr) = (boot_addr.clone(), coord_addr.clone());
            async move {
                let e = raw(&boot_addr)
                    .await
                    .describe_group(pb::DescribeGroupRequest { group: "gf".into() })
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                e.metadata()
                    .get("strata-leader-address")
                    .is_some_and(|a| a == coord_addr.as_str())
            }
        },
    )
    .await;

    let mut histories = [History::new(), History::new()];
    for n in 0..2 {
        c.led_n("gt", n, None, 3).await;
        produce_acked(&c, "gt", n, "before", 100, &mut histories[n as usize]).await;
    }
    let mut config = strata_client::group::GroupConfig::new("gf", &["gt"]);
    config.auto_offset_reset = strata_client::StartOffset::Earliest;
    config.auto_commit_interval = None;
    let mut members = Vec::new();
    for _ in 0..2 {
        let client = Client::connect(&c.addr(boot)).await.unwrap();
        members.push(
            strata_client::group::GroupConsumer::join(client, config.clone())
                .await
                .unwrap(),
        );
    }
    let mut log = GroupLog::default();
    // Consume about half, committing as we go.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while log.committed.iter().any(|c| *c < 50) {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing committed in 60 s"
        );
        for m in members.iter_mut() {
            log.poll(m, "gt").await;
        }
    }
    let before_kill = log.committed;
    // Listed through any broker, though only its coordinator holds it.
    let groups = Client::connect(&c.addr(boot))
        .await
        .unwrap()
        .list_groups()
        .await
        .unwrap();
    assert!(
        groups.iter().any(|g| g.group == "gf" && g.members == 2),
        "{groups:?}"
    );

    c.kill(coord);
    let new_coord = coordinator(&c, "gf", Some(coord), 2).await;
    assert_ne!(new_coord, coord);
    for n in 0..2 {
        produce_acked(&c, "gt", n, "after", 100, &mut histories[n as usize]).await;
    }
    let ends: Vec<i64> = histories
        .iter()
        .map(|h| h.last_acked().unwrap() + 1)
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !(0..2).all(|p| log.covers(p, ends[p]) && log.committed[p] >= ends[p]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the group did not consume and commit everything within 90 s: committed {:?} of {ends:?}",
            log.committed
        );
        for m in members.iter_mut() {
            log.poll(m, "gt").await;
        }
    }
    assert!(
        log.redelivered_below_commit.is_empty(),
        "records delivered again below an acknowledged commit (more than at-least-once): {:?}",
        log.redelivered_below_commit
    );
    // Every acknowledged commit survived the failover: the new coordinator has them.
    let committed = Client::connect(&c.addr(boot))
        .await
        .unwrap()
        .committed_offsets("gf", Vec::new())
        .await
        .unwrap();
    for e in &committed {
        let p = e.partition as usize;
        assert!(
            e.offset >= before_kill[p] && e.offset >= log.committed[p],
            "{committed:?}"
        );
    }
    assert_eq!(committed.len(), 2, "{committed:?}");
    // What the group delivered is what was acknowledged, and the log lost nothing.
    for (n, h) in histories.iter_mut().enumerate() {
        for (o, v) in std::mem::take(&mut log.delivered[n]) {
            h.read(o, [(o, v)]);
        }
        let client = Client::connect(&c.addr(boot)).await.unwrap();
        let records = read_all(&client, "gt", n as u32, 0).await;
        h.read(0, records.into_iter().map(|(o, _, v)| (o, v)));
        h.assert_clean(&format!("partition {n} through a coordinator kill"));
    }
    for m in members {
        m.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_refuses_a_shared_store_that_cannot_fence_manifest_writes() {
    // object_store's local file system has no conditional update: brokers sharing it
    // could not fence a deposed leader, so a cluster member refuses it at start-up.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("shared").display());
    let addr = format!("{}:19301", random_loopback());
    let out = strata()
        .args([
            "server",
            "--node-id",
            "1",
            "--metrics-listen",
            "",
            "--kafka-listen",
            "",
        ])
        .args(["--listen", &addr, "--voters", &format!("1@{addr}")])
        .args(["--object-store", &url])
        .arg("--data-dir")
        .arg(dir.path().join("node"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not honour conditional writes")
            && err.contains("leave object_store unset"),
        "{err}"
    );
}

/// The stored manifest of partition 0 of `topic` in the test S3 server's bucket.
fn stored_manifest(s3_root: &Path, prefix: &str, topic: &str) -> Option<serde_json::Value> {
    let dir = s3_root
        .join(crate::s3::BUCKET)
        .join(prefix)
        .join("topics")
        .join(topic);
    let id_dir = std::fs::read_dir(&dir).ok()?.flatten().next()?.path();
    let text = std::fs::read_to_string(id_dir.join("partition=0/_manifest.json")).ok()?;
    serde_json::from_str(&text).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_sharing_an_s3_store_hand_the_cold_tier_over_through_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    let s3 = crate::s3::S3Server::start(&s3_root).await;
    let cluster_dir = dir.path().join("cluster");
    std::fs::create_dir_all(&cluster_dir).unwrap();
    let (mut c, first) = Cluster::on_shared_store(
        &cluster_dir,
        s3.options(),
        crate::s3::BUCKET,
        Vec::new(),
        None,
    )
    .await;
    let mut history = History::new();
    produce_following_leader(&mut c, "cold", "first", 300, &mut history, |_, _| {}).await;
    let offloaded = |epoch: i32| {
        let root = s3_root.clone();
        move || {
            let m = stored_manifest(&root, "cluster", "cold");
            std::future::ready(m.is_some_and(|m| {
                m["leader_epoch"].as_i64() == Some(epoch as i64)
                    && m["segments"].as_array().is_some_and(|s| !s.is_empty())
            }))
        }
    };
    wait_until(
        Duration::from_secs(60),
        "the first leader offloads",
        offloaded(first.leader_epoch),
    )
    .await;
    // Kill -9 of the leader halfway through more produce: the new leader claims the
    // manifest in its epoch and offloads from where the old one stopped.
    produce_following_leader(&mut c, "cold", "second", 300, &mut history, |c, leader| {
        c.kill(leader)
    })
    .await;
    let second = c.led("cold", Some(first.leader as u64), 2).await;
    assert!(second.leader_epoch > first.leader_epoch);
    let end = history_end(&history);
    // Everything acknowledged is offloaded by the new leader (segments roll at 4 KiB).
    wait_until(
        Duration::from_secs(60),
        "the new leader offloads in its epoch",
        offloaded(second.leader_epoch),
    )
    .await;
    for key in s3.keys().iter().filter(|k| k.ends_with(".parquet")) {
        assert!(
            key.rsplit('/').next().unwrap().contains("-e"),
            "a cluster object is named by its leader epoch: {key}"
        );
    }
    // Read from offset 0: the cold tier (both leaders' objects) and the local tail.
    read_from_leader(&c, "cold", &mut history, end).await;
    history.assert_clean("a shared store through a leader kill");
}

/// A zombie leader on a shared store: the leader stalls between uploading an object and
/// adding it to the manifest (failpoint), is cut off from the other brokers by a network
/// partition meanwhile (it still reaches the store), and a new leader claims the
/// manifest and offloads. The zombie's late conditional write is refused: the manifest
/// stays the new leader's, every object it lists is still there, and after healing
/// every acknowledged record reads back from offset 0 across both tiers. The store is
/// moto (atomic conditional writes), reached over the test's network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_deposed_mid_offload_cannot_overwrite_its_successors_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new(3);
    let moto = crate::moto::MotoServer::start(&net.host_ip());
    let failpoint = (
        "FAILPOINTS".to_string(),
        "tier-upload-stall-before-manifest=1*return(cold)".to_string(),
    );
    let (mut c, first) = Cluster::on_shared_store(
        dir.path(),
        moto.options(),
        crate::moto::BUCKET,
        vec![failpoint],
        Some(net),
    )
    .await;
    let zombie = first.leader as u64;
    let mut history = History::new();
    produce_following_leader(&mut c, "cold", "first", 300, &mut history, |_, _| {}).await;
    // The leader's first offload has uploaded its object and waits before the manifest.
    wait_until(
        Duration::from_secs(60),
        "the leader's first offload stalls before its manifest write",
        || std::future::ready(c.log(zombie).contains("failpoint tier-upload-stall")),
    )
    .await;
    c.cut_off(zombie);
    let second = c.led("cold", Some(zombie), 2).await;
    produce_following_leader(&mut c, "cold", "second", 300, &mut history, |_, _| {}).await;
    // The zombie wakes still believing it leads (it cannot hear the controller) and
    // tries its write: refused, since the manifest is the new leader's now.
    wait_until(
        Duration::from_secs(60),
        "the deposed leader's manifest write is refused",
        || {
            std::future::ready(
                c.log(zombie)
                    .contains("not writing the manifest: the manifest was written in leader epoch"),
            )
        },
    )
    .await;
    wait_until(
        Duration::from_secs(60),
        "the new leader offloads in its epoch",
        || async {
            moto.manifest("cluster", "cold").await.is_some_and(|m| {
                m["leader_epoch"].as_i64() == Some(second.leader_epoch as i64)
                    && m["segments"].as_array().is_some_and(|s| !s.is_empty())
            })
        },
    )
    .await;
    let m = moto.manifest("cluster", "cold").await.unwrap();
    assert_eq!(m["leader_epoch"].as_i64(), Some(second.leader_epoch as i64));
    for s in m["segments"].as_array().unwrap() {
        let key = s["key"].as_str().unwrap();
        assert!(moto.exists(key).await, "{key} is listed but gone");
    }
    c.heal();
    c.led("cold", None, 3).await;
    c.assert_history_clean(
        "cold",
        &mut history,
        "a leader deposed mid-offload on a shared store",
    )
    .await;
}

/// An idempotent acks=all producer through `addr` that keeps every acknowledged batch,
/// giving up on a silent broker after 3 s.
async fn idempotent_producer(addr: &str) -> strata_client::Producer {
    let config = strata_client::ProducerConfig {
        acks: strata_client::Acks::All,
        batch_size: 2048,
        track_acks: true,
        request_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let client = Client::connect(addr).await.unwrap();
    strata_client::Producer::new(client, config).await.unwrap()
}

/// The history of a producer that sent `values` in order to one partition: its
/// acknowledged batches, in offset order, hold them in the order sent.
fn acked_in_order(mut acked: Vec<strata_client::AckedBatch>, values: &[Vec<u8>]) -> History {
    acked.sort_by_key(|a| a.base_offset);
    let mut history = History::new();
    let mut next = values.iter();
    for a in &acked {
        for i in 0..a.record_count as i64 {
            history.ack(a.base_offset + i, next.next().unwrap().clone());
        }
    }
    history
}

/// The Rust producer follows leaders and retries idempotently: acks=all batches keep
/// flowing while the leader is killed (-9), and again while the next leader is paused
/// past its session (its stream hangs, so the request timeout gives it up). The
/// producer finds each new leader from the metadata (through a broker other than a dead
/// bootstrap one) and sends unanswered batches again with their sequence numbers: every
/// value is in the log exactly once, in the order sent, at the offsets acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_rides_out_leader_failures_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::active(dir.path(), 3).await;
    let first = c.replicated_topic("idem").await;
    let mut producer = idempotent_producer(&c.addr(first.leader as u64)).await;
    assert!(producer.producer_id().is_some());
    let values: Vec<Vec<u8>> = (0..30_000)
        .map(|i| format!("idem-{i:06}").into_bytes())
        .collect();
    let mut killed = None;
    let mut paused = None;
    for (i, v) in values.iter().enumerate() {
        if i == 10_000 {
            // The leader the producer was given as bootstrap dies.
            let leader = c.led("idem", None, 3).await.leader as u64;
            c.kill(leader);
            killed = Some(leader);
        }
        if i == 20_000 {
            // Back, in sync (a quorum of voters stays up while the next one pauses).
            c.restart(killed.unwrap());
            let leader = c.led("idem", None, 3).await.leader as u64;
            signal(&c, leader, "-STOP");
            paused = Some(leader);
        }
        producer
            .send("idem", Some(0), None, Some(v), &[])
            .await
            .unwrap();
    }
    let stats = producer.flush().await.unwrap();
    assert_eq!(stats.records_acked, values.len() as u64);
    let acked = producer.acked();
    producer.close().await.unwrap();
    signal(&c, paused.unwrap(), "-CONT");
    let mut history = acked_in_order(acked, &values);
    let end = c
        .assert_history_clean(
            "idem",
            &mut history,
            "an idempotent producer through a leader kill and a pause",
        )
        .await;
    assert_eq!(end, values.len() as i64, "every value once, no more");
}

/// A broker added online takes over a partition (KIP-455): a fourth broker joins,
/// `strata topic reassign` moves a partition off its preferred replica onto the new
/// broker, throttled, while an idempotent acks=all producer keeps writing through it.
/// The new replica copies the log by follower fetch, joins the in-sync set and, as the
/// target's first replica, leads; the old one drops out and its local copy goes. A
/// consumer reading from the start throughout sees no gap, no duplicate and no step
/// back, and every acknowledged record reads back once, at the offset acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_to_a_broker_added_online_while_producing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::active(dir.path(), 3).await;
    let before = c.replicated_topic("mv").await;
    let new = c.add_broker();
    c.all_active().await;
    let mut producer = idempotent_producer(&c.addr(2)).await;
    let values: Vec<Vec<u8>> = (0..20_000)
        .map(|i| format!("mv-{i:06}").into_bytes())
        .collect();
    // A consumer reads the partition from the start throughout, following the leader.
    let reader = {
        let client = Client::connect(&c.addr(3)).await.unwrap();
        let n = values.len() as i64;
        tokio::spawn(async move {
            let mut got: Vec<(i64, Vec<u8>)> = Vec::new();
            let mut at = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while at < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the consumer stalled at {at}"
                );
                match client
                    .fetch("mv", 0, at, 1 << 20, 1, Duration::from_millis(200))
                    .await
                {
                    Ok(r) if !r.batches.is_empty() => {
                        let read = records_from(&r.batches, at).into_iter();
                        got.extend(read.map(|(o, _, v)| (o, v)));
                        at = r.next_offset;
                    }
                    Ok(_) => {}
                    Err(e) if e.is_retriable() => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("the consumer failed: {e}"),
                }
            }
            got
        })
    };
    let leaving = before.replicas[0] as u64;
    let target: Vec<String> = std::iter::once(new)
        .chain(before.replicas[1..].iter().map(|r| *r as u64))
        .map(|r| r.to_string())
        .collect();
    let mut moved = None;
    for (i, v) in values.iter().enumerate() {
        if i == 5_000 {
            let out = strata()
                .args(["topic", "reassign", "mv", "--partition", "0"])
                .args(["--replicas", &target.join(","), "--throttle", "100000"])
                .args(["--broker", &c.addr(3)])
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{said} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(said.contains(&format!("adding [{new}]")), "{said}");
            moved = Some(std::time::Instant::now());
        }
        producer
            .send("mv", Some(0), None, Some(v), &[])
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    // The move ends with the target in sync and the new broker leading.
    let want: Vec<u32> = target.iter().map(|r| r.parse().unwrap()).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let after = loop {
        let p = c.partition_n("mv", 0).await;
        if let Some(p) =
            p.filter(|p| p.replicas == want && p.isr.len() == 3 && p.leader == new as i32)
        {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the move did not finish: {:?}",
            c.partition_n("mv", 0).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("reassignment took {:?}", moved.unwrap().elapsed());
    assert!(after.leader_epoch > before.leader_epoch);
    assert!(after.adding_replicas.is_empty() && after.removing_replicas.is_empty());
    // The broker that left removed its copy.
    let gone = c.data_dir(leaving).join("topics").join("mv");
    wait_until(
        Duration::from_secs(30),
        "the old replica's copy removed",
        || std::future::ready(!gone.exists()),
    )
    .await;
    let acked = producer.acked();
    producer.close().await.unwrap();
    let mut history = acked_in_order(acked, &values);
    history.read(0, reader.await.unwrap());
    let end = c
        .assert_history_clean(
            "mv",
            &mut history,
            "a partition moved to a broker added online",
        )
        .await;
    assert_eq!(end, values.len() as i64);
}
