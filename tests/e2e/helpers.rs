//! Shared helpers: brokers in-process and as child processes, and record checks.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_broker::{Broker, BrokerConfig};
use strata_client::Client;
use tokio::net::TcpListener;

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A broker running inside the test process.
pub struct TestBroker {
    pub addr: String,
    /// Its Kafka listener.
    pub kafka_addr: String,
    pub broker: Arc<Broker>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestBroker {
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, |_| {}).await
    }

    pub async fn start_with(dir: &Path, tweak: impl FnOnce(&mut BrokerConfig)) -> Self {
        let mut config = BrokerConfig {
            data_dir: dir.to_path_buf(),
            listen: "127.0.0.1:0".into(),
            metrics_listen: String::new(),
            cold_cache_memory_bytes: 8 << 20,
            cold_cache_disk_bytes: 16 << 20,
            ..BrokerConfig::default()
        };
        tweak(&mut config);
        let broker = Broker::open(config, Arc::new(strata_log::SystemClock))
            .await
            .expect("broker opens");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let kafka = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let kafka_addr = kafka.local_addr().unwrap().to_string();
        let kafka = strata_server::KafkaListener {
            listener: kafka,
            config: strata_kafka::KafkaConfig::new(kafka_addr.clone(), broker.config()).unwrap(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let b = broker.clone();
        let task = tokio::spawn(async move {
            strata_server::run_node(b, None, listener, None, Some(kafka), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            kafka_addr,
            broker,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.addr).await.expect("connects")
    }

    /// Stops the server and waits for it to finish (logs flushed, lock released).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

/// The `strata server` binary as a child process, with its log in a file.
pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl ServerProcess {
    pub fn start(data_dir: &Path, log: &Path) -> Self {
        Self::start_with(data_dir, log, &[], &[])
    }

    /// `strata server` with extra arguments and environment (e.g. `FAILPOINTS`).
    pub fn start_with(data_dir: &Path, log: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in(None, data_dir, log, args, env)
    }

    /// [`ServerProcess::start_with`] inside network namespace `netns` (`ip netns exec`
    /// execs, so the child is the server itself).
    pub fn start_in(
        netns: Option<&str>,
        data_dir: &Path,
        log: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Self::command(netns, data_dir, args, env)
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts strata server");
        // The server logs its address when ready; everything it logs goes to `log`.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log_path = log.to_path_buf();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap();
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if !sent && line.contains("strata server ready") {
                    let addr = line
                        .split("addr=")
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next())
                        .map(str::to_string);
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                panic!(
                    "server did not start; log: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            });
        Self {
            child,
            addr,
            log: log.to_path_buf(),
        }
    }

    fn command(
        netns: Option<&str>,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Command {
        let mut c = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, STRATA]);
                c
            }
            None => Command::new(STRATA),
        };
        c.arg("server");
        if !args.contains(&"--metrics-listen") {
            c.args(["--metrics-listen", ""]);
        }
        if !args.contains(&"--kafka-listen") {
            c.args(["--kafka-listen", ""]);
        }
        if !args.contains(&"--listen") {
            c.args(["--listen", "127.0.0.1:0"]);
        }
        c.arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null());
        c
    }

    /// Runs `strata server` until it exits by itself (a failpoint that crashes it), at
    /// most 60 s, logging to `log`; returns the log. Panics if it exits another way.
    pub fn run_until_crash(
        data_dir: &Path,
        log: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> String {
        let file = std::fs::File::create(log).unwrap();
        let mut child = Self::command(None, data_dir, args, env)
            .stderr(file)
            .spawn()
            .expect("starts strata server");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(status.signal(), Some(9), "killed by its failpoint: {text}");
                return text;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not reach its failpoint in 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most 60 s) for the process to die by SIGKILL, as a crash failpoint
    /// makes it.
    pub async fn wait_for_crash(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(9),
                    "crashed by its failpoint: {}",
                    self.log_text()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not crash within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until it holds or `timeout` passes; panics with `what` on timeout.
/// The names of every topic the broker lists.
pub async fn topic_names(client: &Client) -> Vec<String> {
    client
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect()
}

pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A record read back: (offset, key, value).
pub type ReadRecord = (i64, Option<Vec<u8>>, Vec<u8>);

/// Every record of a partition from `from` to its high watermark.
pub async fn read_all(client: &Client, topic: &str, partition: u32, from: i64) -> Vec<ReadRecord> {
    try_read_all(client, topic, partition, from)
        .await
        .expect("fetch")
}

/// Every record a partition retains, while retention may still be moving its start:
/// a read that retention overtakes starts again from the new log start, as a consumer
/// with `auto.offset.reset=earliest` would. Returns the offset the read began at.
pub async fn read_retained(client: &Client, topic: &str, partition: u32) -> (i64, Vec<ReadRecord>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = client.describe_topic(topic).await.expect("describe");
        let start = d.partitions[partition as usize].log_start_offset;
        match try_read_all(client, topic, partition, start).await {
            Ok(recs) => return (start, recs),
            Err(e) if e.code() == Some(tonic::Code::OutOfRange) => {
                assert!(
                    Instant::now() < deadline,
                    "retention kept overtaking the read: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("fetch: {e:?}"),
        }
    }
}

pub async fn try_read_all(
    client: &Client,
    topic: &str,
    partition: u32,
    from: i64,
) -> Result<Vec<ReadRecord>, strata_client::ClientError> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let r = client
            .fetch(topic, partition, at, 1 << 20, 1, Duration::from_millis(0))
            .await?;
        if r.batches.is_empty() {
            if at >= r.high_watermark {
                return Ok(out);
            }
            panic!(
                "empty fetch at {at} below the high watermark {}",
                r.high_watermark
            );
        }
        out.extend(records_from(&r.batches, at));
        at = r.next_offset;
    }
}

/// The records of fetched `batches` at or after `at` (a fetch's first batch may start
/// before the offset asked for), as (offset, key, value).
pub fn records_from(batches: &[u8], at: i64) -> Vec<ReadRecord> {
    let mut out = Vec::new();
    for b in strata_record::BatchIter::new(batches) {
        for rec in b.expect("valid batch").records() {
            let rec = rec.expect("valid record");
            if rec.offset >= at {
                out.push((
                    rec.offset,
                    rec.key.map(<[u8]>::to_vec),
                    rec.value.unwrap_or_default().to_vec(),
                ));
            }
        }
    }
    out
}

/// The path `tests/tools/<script>` prints after installing what it installs (a Python
/// with its packages in a virtualenv under target/, a Debian tool; `what` is for the
/// failure message).
pub fn tool(script: &str, what: &str) -> String {
    let path = format!("{}/../../tests/tools/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "installing {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `python -c script dir` (a reader we did not write, over a bucket's files); its
/// stdout as JSON. Fails with its stderr, `what` naming the reader.
pub fn python_json<T: serde::de::DeserializeOwned>(
    python: &str,
    script: &str,
    dir: &Path,
    what: &str,
) -> T {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn strata() -> Command {
    Command::new(STRATA)
}
