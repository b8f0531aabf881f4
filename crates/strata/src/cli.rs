//! Command-line parsing and the client and server commands.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use strata_broker::{Broker, BrokerConfig};
use strata_client::{
    Acks, Client, ConnectOptions, DEFAULT_BROKER, Producer, ProducerConfig, StartOffset,
    TlsOptions, consumer, pb,
};
use tokio::net::TcpListener;

use crate::bench;

#[derive(Parser, Debug)]
#[command(
    name = "strata",
    version,
    about = "Strata: a tiered-storage streaming platform"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
pub struct BrokerArg {
    /// Broker address (HOST:PORT).
    #[arg(long, env = "STRATA_BROKER", default_value = DEFAULT_BROKER, global = true)]
    pub broker: String,
    /// Connect over TLS, trusting the brokers' certificates this CA signed (PEM).
    #[arg(long, env = "STRATA_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for brokers that require one.
    #[arg(long, env = "STRATA_TLS_CERT", global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, env = "STRATA_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A bearer token (`strata token create`), for brokers with a token file.
    #[arg(long, env = "STRATA_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

/// Leaves the token out.
impl std::fmt::Debug for BrokerArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerArg")
            .field("broker", &self.broker)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("token", &self.token.as_ref().map(|_| ".."))
            .finish()
    }
}

impl BrokerArg {
    /// TLS when any TLS file is given or the address says https://.
    pub fn options(&self) -> ConnectOptions {
        let tls =
            self.tls_ca.is_some() || self.tls_cert.is_some() || self.broker.starts_with("https://");
        ConnectOptions {
            tls: tls.then(|| TlsOptions {
                ca: self.tls_ca.clone(),
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                domain: None,
            }),
            token: self.token.clone(),
        }
    }

    pub async fn connect(&self) -> Result<Client> {
        Ok(Client::connect_with(&self.broker, &self.options()).await?)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a broker. With no flags: a single-node broker with data in ./strata-data.
    Server(Box<ServerArgs>),
    /// Create, list, describe, alter and delete topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// Produce one record per line of standard input.
    Produce(ProduceArgs),
    /// Print records of a topic, one per line; follows the tail unless --max-records.
    Consume(ConsumeArgs),
    /// The cluster: brokers, controller, partitions in trouble.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// List, describe, reset and delete consumer groups.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// SASL/SCRAM users of the Kafka listener: add (or change a password), list, remove.
    User {
        #[command(subcommand)]
        command: crate::users::UserCommand,
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// Access control lists (Kafka's ACLs), the same on gRPC and Kafka: add, list,
    /// remove.
    Acl {
        #[command(subcommand)]
        command: crate::acls::AclCommand,
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// Bearer tokens for gRPC.
    Token {
        #[command(subcommand)]
        command: crate::users::TokenCommand,
    },
    /// Who the broker takes this client for: a token's name, a certificate's common
    /// name, or User:ANONYMOUS.
    Whoami {
        #[command(flatten)]
        broker: BrokerArg,
    },
    /// Load generator: produce or consume at full speed and report the rates.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
        #[command(flatten)]
        broker: BrokerArg,
    },
}

#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// Data directory (partition logs and metadata).
    #[arg(long, env = "STRATA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:9292].
    #[arg(long, env = "STRATA_LISTEN")]
    listen: Option<String>,
    /// Prometheus /metrics listen address ("" disables) [default: 127.0.0.1:9293].
    #[arg(long, env = "STRATA_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Kafka protocol listen address ("" disables) [default: 127.0.0.1:9092].
    #[arg(long, env = "STRATA_KAFKA_LISTEN")]
    kafka_listen: Option<String>,
    /// The HOST:PORT Kafka clients are told to connect to [default: --kafka-listen].
    #[arg(long, env = "STRATA_KAFKA_ADVERTISE")]
    kafka_advertise: Option<String>,
    /// Cold tier: file:///PATH, s3://BUCKET/PREFIX (AWS_* variables) or memory://
    /// [default: file://<data-dir>/objects].
    #[arg(long, env = "STRATA_OBJECT_STORE")]
    object_store: Option<String>,
    /// TOML config file (see deploy/strata.toml); flags and STRATA_* variables win.
    #[arg(long, env = "STRATA_CONFIG")]
    config: Option<PathBuf>,
    /// This broker's id (at least 1; never reused for a wiped disk) [default: 1].
    #[arg(long, env = "STRATA_NODE_ID")]
    node_id: Option<u32>,
    /// The address others reach this broker at [default: --listen].
    #[arg(long, env = "STRATA_ADVERTISE")]
    advertise: Option<String>,
    /// The controller's voters: ID@HOST:PORT,... (each its advertised gRPC address).
    /// Without it: a single broker.
    #[arg(long, env = "STRATA_VOTERS")]
    voters: Option<String>,
    /// A cluster member to join through, for a broker that is not among the voters.
    #[arg(long, env = "STRATA_JOIN")]
    join: Option<String>,
    /// This broker's rack, for spreading replicas.
    #[arg(long, env = "STRATA_RACK")]
    rack: Option<String>,
    /// This broker's TLS certificate chain (PEM): the gRPC listener then speaks only TLS.
    #[arg(long, env = "STRATA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "STRATA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) that signs client certificates and the other brokers' certificates.
    #[arg(long, env = "STRATA_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Whether clients must present a certificate: none, requested or required
    /// [default: none].
    #[arg(long, env = "STRATA_TLS_CLIENT_AUTH")]
    tls_client_auth: Option<String>,
    /// SASL mechanisms the Kafka listener requires, comma-separated: SCRAM-SHA-256,
    /// SCRAM-SHA-512, PLAIN [default: none, no SASL].
    #[arg(long, env = "STRATA_KAFKA_SASL_MECHANISMS", value_delimiter = ',')]
    kafka_sasl_mechanisms: Option<Vec<String>>,
    /// Bearer tokens for gRPC: a file of `NAME sha256:HEX` lines (`strata token create`).
    #[arg(long, env = "STRATA_GRPC_TOKEN_FILE")]
    grpc_token_file: Option<PathBuf>,
    /// Refuse gRPC calls without a valid token or client certificate.
    #[arg(long, env = "STRATA_GRPC_AUTH_REQUIRED")]
    grpc_auth_required: bool,
    /// A principal allowed everything (Kafka's super.users), e.g. User:admin;
    /// repeat or comma-separate.
    #[arg(long = "super-user", env = "STRATA_SUPER_USERS", value_delimiter = ',')]
    super_users: Option<Vec<String>>,
    /// Whether a resource no ACL names is open to everyone (Kafka's
    /// allow.everyone.if.no.acl.found) [default: true without authentication, false
    /// with it].
    #[arg(long, env = "STRATA_ALLOW_EVERYONE_IF_NO_ACL_FOUND")]
    allow_everyone_if_no_acl_found: Option<bool>,
    /// Connections one client address may hold open on each listener (Kafka's
    /// max.connections.per.ip) [default: 0, no limit].
    #[arg(long, env = "STRATA_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Bytes per second each principal may produce (Kafka's producer_byte_rate client
    /// quota) [default: 0, no limit]; per-principal rates go in the config file.
    #[arg(long, env = "STRATA_QUOTA_PRODUCER_BYTE_RATE")]
    quota_producer_byte_rate: Option<u64>,
    /// Bytes per second each principal may fetch (consumer_byte_rate) [default: 0].
    #[arg(long, env = "STRATA_QUOTA_CONSUMER_BYTE_RATE")]
    quota_consumer_byte_rate: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Brokers (id, address, rack, state), the controller and its Raft term.
    Status {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        partitions: i64,
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        replication_factor: i64,
        /// Topic config KEY=VALUE (Kafka names, e.g. retention.ms=3600000); repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics.
    List {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show a topic's configs and partitions.
    Describe {
        name: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Change topic configs, or add partitions.
    Alter {
        name: String,
        /// Raise the partition count to N (new partitions start empty; keys hashed to
        /// a partition may map to another afterwards).
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        partitions: Option<i64>,
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Return a key to its default; repeatable.
        #[arg(long = "delete-config", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Delete a topic and all its data.
    Delete { name: String },
    /// Move a partition to other brokers (a cluster): the new replicas copy its log by
    /// follower fetch, then the old ones drop out; producers and consumers go on.
    Reassign {
        name: String,
        #[arg(long)]
        partition: u32,
        /// The brokers to move to, e.g. 2,3,4; the first is the preferred leader.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u32>,
        /// Bytes per second each new replica may copy at; 0: unthrottled.
        #[arg(long, default_value_t = 0)]
        throttle: u64,
        /// Wait until the move is done, showing how far each new replica is.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// List groups with their state and member count.
    List {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Members, assigned partitions, committed offsets, high watermarks and lag.
    Describe {
        group: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Move a group's committed offsets for a topic (only while the group has no members).
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// Only these partitions (repeatable; default: all).
        #[arg(long = "partition")]
        partitions: Vec<u32>,
        #[arg(long, group = "to", required = true)]
        to_earliest: bool,
        #[arg(long, group = "to")]
        to_latest: bool,
        #[arg(long, group = "to", value_name = "N", allow_negative_numbers = true)]
        to_offset: Option<i64>,
        /// The first record at or after this time (ms since the epoch).
        #[arg(long, group = "to", value_name = "MS")]
        to_timestamp: Option<i64>,
    },
    /// Delete a group and its committed offsets (only while it has no members).
    Delete { group: String },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum RecordOutput {
    Value,
    Json,
}

#[derive(clap::Args, Debug)]
struct ProduceArgs {
    topic: String,
    /// Send every record to this partition (default: by key hash, or sticky without key).
    #[arg(long)]
    partition: Option<u32>,
    /// Split each line into key and value at the first SEP.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// 0 (no offsets back), 1 (leader appended) or all (every in-sync replica).
    #[arg(long, default_value = "1")]
    acks: String,
    /// Bytes per batch.
    #[arg(long, default_value_t = 128 * 1024)]
    batch_size: usize,
    /// Longest wait before a partial batch is sent.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Codec for each batch: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: strata_record::Compression,
    #[command(flatten)]
    broker: BrokerArg,
}

#[derive(clap::Args, Debug)]
struct ConsumeArgs {
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// earliest, latest or an offset.
    #[arg(long, default_value = "latest", allow_negative_numbers = true)]
    offset: String,
    /// Start at the first record at or after this time (ms since the epoch).
    #[arg(long, conflicts_with = "offset")]
    timestamp: Option<i64>,
    /// Stop after this many records (default: follow the tail).
    #[arg(long)]
    max_records: Option<u64>,
    #[arg(long, value_enum, default_value_t = RecordOutput::Value)]
    output: RecordOutput,
    /// Consume as a member of this group: partitions are assigned by the broker and
    /// positions committed; --offset earliest|latest applies where nothing is committed.
    #[arg(long, conflicts_with_all = ["partition", "timestamp"])]
    group: Option<String>,
    /// With --group: the broker reassigns this member's partitions if it is silent this long.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u32,
    /// With --group: range or roundrobin.
    #[arg(long, default_value = "range")]
    assignor: String,
    #[command(flatten)]
    broker: BrokerArg,
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub async fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Server(a) => {
            init_tracing("info,openraft=warn");
            server(*a).await
        }
        Command::Topic { command, broker } => {
            init_tracing("warn");
            topic(command, &broker).await
        }
        Command::Produce(a) => {
            init_tracing("warn");
            produce(a).await
        }
        Command::Consume(a) => {
            init_tracing("warn");
            consume(a).await
        }
        Command::Group { command, broker } => {
            init_tracing("warn");
            group(command, &broker).await
        }
        Command::Cluster { command, broker } => {
            init_tracing("warn");
            cluster(command, &broker).await
        }
        Command::User { command, broker } => {
            init_tracing("warn");
            crate::users::user(command, &broker).await
        }
        Command::Acl { command, broker } => {
            init_tracing("warn");
            crate::acls::acl(command, &broker).await
        }
        Command::Token { command } => crate::users::token(command),
        Command::Whoami { broker } => {
            init_tracing("warn");
            crate::users::whoami(&broker).await
        }
        Command::Bench { command, broker } => {
            init_tracing("warn");
            bench::run(command, &broker).await
        }
    }
}

async fn server(a: ServerArgs) -> Result<()> {
    let mut config = match &a.config {
        Some(path) => BrokerConfig::from_file(path)?,
        None => BrokerConfig::default(),
    };
    if let Some(d) = a.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = a.listen {
        config.listen = l;
    }
    if let Some(m) = a.metrics_listen {
        config.metrics_listen = m;
    }
    if let Some(k) = a.kafka_listen {
        config.kafka_listen = k;
    }
    if let Some(k) = a.kafka_advertise {
        config.kafka_advertise = k;
    }
    if let Some(o) = a.object_store {
        config.object_store = o;
    }
    if let Some(n) = a.node_id {
        config.node_id = n;
    }
    if let Some(v) = a.advertise {
        config.advertise = v;
    }
    if let Some(v) = a.voters {
        config.voters = v;
    }
    if let Some(v) = a.join {
        config.join = v;
    }
    if let Some(v) = a.rack {
        config.rack = v;
    }
    if let Some(v) = a.tls_cert {
        config.tls_cert_file = Some(v);
    }
    if let Some(v) = a.tls_key {
        config.tls_key_file = Some(v);
    }
    if let Some(v) = a.tls_ca {
        config.tls_ca_file = Some(v);
    }
    if let Some(v) = a.tls_client_auth {
        config.tls_client_auth = v;
    }
    if let Some(v) = a.kafka_sasl_mechanisms {
        config.kafka_sasl_mechanisms = v;
    }
    if let Some(v) = a.grpc_token_file {
        config.grpc_token_file = Some(v);
    }
    if a.grpc_auth_required {
        config.grpc_auth_required = true;
    }
    if let Some(v) = a.super_users {
        config.super_users = v;
    }
    if let Some(v) = a.allow_everyone_if_no_acl_found {
        config.allow_everyone_if_no_acl_found = Some(v);
    }
    if let Some(v) = a.max_connections_per_ip {
        config.max_connections_per_ip = v;
    }
    if let Some(v) = a.quota_producer_byte_rate {
        config.quota_producer_byte_rate = v;
    }
    if let Some(v) = a.quota_consumer_byte_rate {
        config.quota_consumer_byte_rate = v;
    }
    config.validate()?;
    strata_server::check_tls(&config)?;
    let listener = TcpListener::bind(&config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another server running? use --listen)",
            config.listen
        )
    })?;
    let metrics = if config.metrics_listen.is_empty() {
        None
    } else {
        Some(
            TcpListener::bind(&config.metrics_listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot serve metrics on {} (use --metrics-listen, or \"\" to disable)",
                        config.metrics_listen
                    )
                })?,
        )
    };
    let kafka = if config.kafka_listen.is_empty() {
        None
    } else {
        let listener = TcpListener::bind(&config.kafka_listen).await.with_context(|| {
            format!(
                "cannot listen for Kafka clients on {} (is a Kafka broker running there? use --kafka-listen, or \"\" to disable)",
                config.kafka_listen
            )
        })?;
        let bound = listener.local_addr()?;
        let advertise = if config.kafka_advertise.is_empty() {
            bound.to_string()
        } else {
            config.kafka_advertise.clone()
        };
        // Refused here, before anything starts, with what to set.
        strata_kafka::split_host_port(&advertise).map_err(anyhow::Error::msg)?;
        Some(strata_server::KafkaListener {
            listener,
            config: strata_kafka::KafkaConfig::new(advertise, &config)?,
        })
    };
    let kafka_addr = kafka.as_ref().map(|k| k.config.advertise.clone());
    let data_dir = config.data_dir.clone();
    let metrics_addr = metrics.as_ref().map(|m| m.local_addr()).transpose()?;
    let voters = config.voter_map()?;
    let broker = Broker::open(config, Arc::new(strata_log::SystemClock)).await?;
    let controller = if voters.is_empty() {
        None
    } else {
        let c = broker.config();
        let cc = strata_controller::ControllerConfig {
            node_id: c.node_id as u64,
            addr: c.advertised().to_string(),
            kafka_addr: kafka_addr.clone(),
            rack: (!c.rack.is_empty()).then(|| c.rack.clone()),
            voters,
            join: (!c.join.is_empty()).then(|| c.join.clone()),
            dir: c.data_dir.join("raft"),
            incarnation: broker.incarnation().to_string(),
            heartbeat_interval_ms: c.broker_heartbeat_interval_ms,
            session_timeout_ms: c.broker_session_timeout_ms,
            election_timeout_ms: (
                c.controller_election_timeout_ms,
                2 * c.controller_election_timeout_ms,
            ),
        };
        let transport = Arc::new(strata_server::cluster::GrpcTransport::for_config(c)?);
        Some(strata_server::ControllerSetup {
            config: cc,
            transport: transport.clone(),
            link: transport,
        })
    };
    let addr = listener.local_addr()?;
    let metrics_scheme = if broker.config().metrics_tls {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        %addr,
        data_dir = %data_dir.display(),
        metrics = %metrics_addr.map(|a| format!("{metrics_scheme}://{a}/metrics")).unwrap_or_else(|| "off".into()),
        kafka = %kafka_addr.unwrap_or_else(|| "off".into()),
        tls = broker.config().tls(),
        "strata server ready"
    );
    strata_server::run_node(
        broker,
        controller,
        listener,
        metrics,
        kafka,
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

fn parse_configs(items: &[String]) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                anyhow!("malformed --config {kv:?}: use KEY=VALUE, e.g. retention.ms=3600000")
            })?;
            if k.trim().is_empty() {
                bail!("malformed --config {kv:?}: the key is empty");
            }
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn deleting_json(d: &[pb::PendingDeletion]) -> serde_json::Value {
    d.iter()
        .map(|d| {
            serde_json::json!({
                "name": d.name,
                "topic_id": d.topic_id,
                "deleted_ms": d.deleted_ms,
                "attempts": d.attempts,
                "last_error": if d.last_error.is_empty() { serde_json::Value::Null } else { serde_json::Value::String(d.last_error.clone()) },
            })
        })
        .collect()
}

fn print_deleting(d: &[pb::PendingDeletion]) {
    for d in d {
        let why = if d.last_error.is_empty() {
            String::new()
        } else {
            format!("\tlast_error={}", d.last_error)
        };
        println!(
            "{}\t(deleted; removing its objects)\ttopic_id={}\tattempts={}{why}",
            d.name, d.topic_id, d.attempts
        );
    }
}

pub fn describe_json(d: &pb::TopicDescription) -> serde_json::Value {
    serde_json::json!({
        "name": d.name,
        "topic_id": d.topic_id,
        "deleting": deleting_json(&d.deleting),
        "replication_factor": d.replication_factor,
        "configs": d.configs.iter().map(|c| (c.name.clone(), serde_json::Value::String(c.value.clone()))).collect::<serde_json::Map<_, _>>(),
        "partitions": d.partitions.iter().map(|p| serde_json::json!({
            "partition": p.partition,
            "leader": (p.leader >= 0).then_some(p.leader),
            "replicas": p.replicas,
            "isr": p.isr,
            "adding_replicas": p.adding_replicas,
            "removing_replicas": p.removing_replicas,
            "leader_epoch": p.leader_epoch,
            "log_start_offset": p.log_start_offset,
            "high_watermark": p.high_watermark,
            "size_bytes": p.size_bytes,
            "segments": p.segments,
            "local_log_start_offset": p.local_log_start_offset,
            "remote_segments": p.remote_segments,
            "remote_bytes": p.remote_bytes,
            "upload_lag": p.upload_lag,
            "tier_error": if p.tier_error.is_empty() { serde_json::Value::Null } else { serde_json::Value::String(p.tier_error.clone()) },
        })).collect::<Vec<_>>(),
    })
}

async fn topic(cmd: TopicCommand, broker: &BrokerArg) -> Result<()> {
    let client = broker.connect().await?;
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let configs = parse_configs(&configs)?;
            let partitions = i32::try_from(partitions).map_err(|_| {
                anyhow!("invalid partition count {partitions}: a topic needs 1..=10000 partitions")
            })?;
            let rf = i32::try_from(replication_factor)
                .map_err(|_| anyhow!("invalid replication factor {replication_factor}"))?;
            let d = client.create_topic(&name, partitions, rf, configs).await?;
            println!(
                "created topic {} with {} partitions",
                d.name,
                d.partitions.len()
            );
        }
        TopicCommand::List { output } => {
            let all = client.list_topics_full().await?;
            match output {
                Output::Json => {
                    let v: Vec<_> = all
                        .topics
                        .iter()
                        .map(|t| serde_json::json!({"name": t.name, "topic_id": t.topic_id, "partitions": t.partitions, "replication_factor": t.replication_factor}))
                        .collect();
                    // Live topics only; `topic describe` shows deletions under way.
                    println!("{}", serde_json::Value::Array(v));
                }
                Output::Text => {
                    for t in &all.topics {
                        println!(
                            "{}\tpartitions={}\treplication_factor={}\ttopic_id={}",
                            t.name, t.partitions, t.replication_factor, t.topic_id
                        );
                    }
                    print_deleting(&all.deleting);
                }
            }
        }
        TopicCommand::Describe { name, output } => {
            let d = client.describe_topic(&name).await?;
            match output {
                Output::Json => println!("{}", describe_json(&d)),
                Output::Text => print_description(&d),
            }
        }
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            delete,
        } => {
            let set = parse_configs(&configs)?;
            if let Some(count) = partitions {
                let d = client.create_partitions(&name, count).await?;
                println!("topic {} has {} partitions now", d.name, d.partitions.len());
                if set.is_empty() && delete.is_empty() {
                    return Ok(());
                }
            }
            let d = client.alter_configs(&name, set, delete).await?;
            println!("updated configs of topic {}", d.name);
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
        TopicCommand::Reassign {
            name,
            partition,
            replicas,
            throttle,
            wait,
        } => {
            let d = client
                .reassign_partition(&name, partition, &replicas, throttle)
                .await?;
            let p = &d.partitions[partition as usize];
            if p.adding_replicas.is_empty() && p.removing_replicas.is_empty() {
                println!("{name}-{partition} is on {:?}", p.replicas);
                return Ok(());
            }
            println!(
                "moving {name}-{partition} to {replicas:?}: adding {:?}, removing {:?}",
                p.adding_replicas, p.removing_replicas
            );
            if wait {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let d = client.describe_topic(&name).await?;
                    let p = &d.partitions[partition as usize];
                    if p.adding_replicas.is_empty() && p.removing_replicas.is_empty() {
                        println!(
                            "done: {name}-{partition} is on {:?}, in sync {:?}, leader {}",
                            p.replicas, p.isr, p.leader
                        );
                        break;
                    }
                    eprintln!(
                        "  adding {:?} (in sync: {:?}), high watermark {}",
                        p.adding_replicas, p.isr, p.high_watermark
                    );
                }
            }
        }
    }
    Ok(())
}

fn print_description(d: &pb::TopicDescription) {
    println!(
        "Topic: {}\tTopicId: {}\tPartitions: {}\tReplicationFactor: {}",
        d.name,
        d.topic_id,
        d.partitions.len(),
        d.replication_factor
    );
    print_deleting(&d.deleting);
    let overrides: Vec<String> = d
        .configs
        .iter()
        .filter(|c| !c.is_default)
        .map(|c| format!("{}={}", c.name, c.value))
        .collect();
    println!(
        "Configs: {}",
        if overrides.is_empty() {
            "(defaults)".to_string()
        } else {
            overrides.join(",")
        }
    );
    for p in &d.partitions {
        println!(
            "  Partition: {}\tLeader: {}\tEpoch: {}\tReplicas: {:?}\tIsr: {:?}\tLogStart: {}\tHighWatermark: {}\tSize: {}\tSegments: {}",
            p.partition,
            if p.leader >= 0 {
                p.leader.to_string()
            } else {
                "none".to_string()
            },
            p.leader_epoch,
            p.replicas,
            p.isr,
            p.log_start_offset,
            p.high_watermark,
            p.size_bytes,
            p.segments
        );
        if !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty() {
            println!(
                "    Reassigning: adding {:?}, removing {:?}",
                p.adding_replicas, p.removing_replicas
            );
        }
    }
}

/// Reads standard input on a thread, handing over chunks of whole lines.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        use std::io::BufRead;
        let stdin = std::io::stdin();
        let mut r = std::io::BufReader::with_capacity(1 << 20, stdin.lock());
        loop {
            let mut chunk = Vec::with_capacity(256 * 1024);
            loop {
                match r.read_until(b'\n', &mut chunk) {
                    Ok(0) => break,
                    Ok(_) if chunk.len() >= 256 * 1024 => break,
                    Ok(_) => {
                        // Hand over what we have when no more input is buffered, so an
                        // interactive producer sends each line promptly.
                        if r.buffer().is_empty() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if chunk.is_empty() || tx.blocking_send(Ok(chunk)).is_err() {
                return;
            }
        }
    });
    rx
}

async fn produce(a: ProduceArgs) -> Result<()> {
    let acks: Acks = a.acks.parse().map_err(|e: String| anyhow!(e))?;
    if a.key_separator.as_deref() == Some("") {
        bail!("--key-separator must not be empty");
    }
    let client = a.broker.connect().await?;
    let config = ProducerConfig {
        batch_size: a.batch_size,
        linger: Duration::from_millis(a.linger_ms),
        acks,
        compression: a.compression,
        ..ProducerConfig::default()
    };
    let mut producer = Producer::new(client, config).await?;
    let partitions = producer.partitions(&a.topic).await?;
    if let Some(p) = a.partition
        && p >= partitions
    {
        bail!(
            "partition {p} does not exist in topic {:?}: valid partitions are 0..={}",
            a.topic,
            partitions - 1
        );
    }
    let sep = a.key_separator.as_deref().map(str::as_bytes);
    let started = Instant::now();
    let mut lines = stdin_lines();
    let mut count = 0u64;
    let mut bytes = 0u64;
    loop {
        let deadline = producer.next_linger_deadline();
        let chunk = tokio::select! {
            c = lines.recv() => c,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded").into()).await }, if deadline.is_some() => {
                producer.poll_linger().await?;
                continue;
            }
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk.context("reading standard input")?;
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let (key, value) = match sep {
                Some(sep) => match line.windows(sep.len()).position(|w| w == sep) {
                    Some(i) => (Some(&line[..i]), &line[i + sep.len()..]),
                    None => (None, line),
                },
                None => (None, line),
            };
            producer
                .send(&a.topic, a.partition, key, Some(value), &[])
                .await?;
            count += 1;
            bytes += line.len() as u64;
        }
    }
    let stats = producer.close().await?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {} records ({:.1} MB) to {} in {:.2} s: {:.0} records/s, {:.1} MB/s (acked {})",
        count,
        bytes as f64 / 1e6,
        a.topic,
        secs,
        count as f64 / secs,
        bytes as f64 / 1e6 / secs,
        stats.records_acked
    );
    Ok(())
}

fn parse_start(offset: &str, timestamp: Option<i64>) -> Result<StartOffset> {
    if let Some(ts) = timestamp {
        return Ok(StartOffset::Timestamp(ts));
    }
    match offset {
        "earliest" | "beginning" => Ok(StartOffset::Earliest),
        "latest" | "end" => Ok(StartOffset::Latest),
        n => match n.parse::<i64>() {
            Ok(o) if o >= 0 => Ok(StartOffset::Offset(o)),
            _ => bail!("invalid --offset {n:?}: use earliest, latest or a non-negative offset"),
        },
    }
}

#[derive(serde::Serialize)]
struct JsonRecord<'a> {
    partition: u32,
    offset: i64,
    timestamp: i64,
    key: Option<std::borrow::Cow<'a, str>>,
    value: Option<std::borrow::Cow<'a, str>>,
}

async fn consume(a: ConsumeArgs) -> Result<()> {
    if a.group.is_some() {
        return consume_group(a).await;
    }
    let start = parse_start(&a.offset, a.timestamp)?;
    let client = a.broker.connect().await?;
    let d = client.describe_topic(&a.topic).await?;
    let n = d.partitions.len() as u32;
    let partitions: Vec<u32> = match a.partition {
        Some(p) if p >= n => bail!(
            "partition {p} does not exist in topic {:?}: valid partitions are 0..={}",
            a.topic,
            n - 1
        ),
        Some(p) => vec![p],
        None => (0..n).collect(),
    };
    if a.max_records == Some(0) {
        return Ok(());
    }
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<consumer::Batches, strata_client::ClientError>>(16);
    let mut streams = Vec::new();
    for p in partitions {
        // Subscribe first so a bad offset fails here, before anything is printed.
        streams.push(consumer::subscribe(&client, &a.topic, p, start, 1 << 20).await?);
    }
    for mut s in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(b) = s.next().await {
                let failed = b.is_err();
                if tx.send(b).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    drop(tx);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let max = a.max_records.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    while let Some(batches) = rx.recv().await {
        let batches = batches?;
        let (_, done) = print_records(&mut out, &batches, a.output, max - printed)?;
        printed += done;
        if printed >= max {
            out.flush()?;
            return Ok(());
        }
        if rx.is_empty() {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Prints up to `limit` records; returns (offset after the last printed, count).
fn print_records(
    out: &mut impl Write,
    batches: &consumer::Batches,
    output: RecordOutput,
    limit: u64,
) -> Result<(i64, u64)> {
    let mut n = 0;
    let mut next = batches.from;
    for r in batches.records() {
        if n >= limit {
            break;
        }
        let r = r.map_err(|e| anyhow!("partition {}: {e}", batches.partition))?;
        match output {
            RecordOutput::Value => {
                out.write_all(r.value.unwrap_or_default())?;
                out.write_all(b"\n")?;
            }
            RecordOutput::Json => {
                let rec = JsonRecord {
                    partition: batches.partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key.map(String::from_utf8_lossy),
                    value: r.value.map(String::from_utf8_lossy),
                };
                serde_json::to_writer(&mut *out, &rec)?;
                out.write_all(b"\n")?;
            }
        }
        n += 1;
        next = r.offset + 1;
    }
    if n < limit {
        next = batches.next_offset;
    }
    Ok((next, n))
}

async fn consume_group(a: ConsumeArgs) -> Result<()> {
    let group = a.group.clone().expect("checked");
    let reset = match parse_start(&a.offset, None)? {
        s @ (StartOffset::Earliest | StartOffset::Latest) => s,
        _ => bail!(
            "with --group, --offset must be earliest or latest (where the group has no committed offset); use `strata group reset-offsets` to move a group"
        ),
    };
    let client = a.broker.connect().await?;
    let config = strata_client::group::GroupConfig {
        session_timeout: Duration::from_millis(a.session_timeout_ms as u64),
        assignor: a.assignor.clone(),
        auto_offset_reset: reset,
        auto_commit_interval: Some(Duration::from_secs(1)),
        ..strata_client::group::GroupConfig::new(&group, &[&a.topic])
    };
    let mut member = strata_client::group::GroupConsumer::join(client, config).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let max = a.max_records.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        let polled = tokio::select! {
            p = member.poll(Duration::from_millis(500)) => p?,
            _ = &mut stop => break,
        };
        for ((topic, partition), batches) in polled {
            let (next, done) = print_records(&mut out, &batches, a.output, max - printed)?;
            printed += done;
            if printed >= max {
                // Commit exactly what was printed, not the rest of the batch.
                member.seek(&topic, partition, next);
                break;
            }
        }
        out.flush()?;
        if printed >= max {
            break;
        }
    }
    out.flush()?;
    member.close().await?;
    Ok(())
}

async fn cluster(cmd: ClusterCommand, broker: &BrokerArg) -> Result<()> {
    let client = broker.connect().await?;
    match cmd {
        ClusterCommand::Status { output } => {
            let c = client.describe_cluster().await?;
            match output {
                Output::Json => {
                    let brokers: Vec<_> = c
                        .brokers
                        .iter()
                        .map(|b| serde_json::json!({"id": b.id, "address": b.address, "rack": b.rack, "state": b.state, "voter": b.voter}))
                        .collect();
                    let v = serde_json::json!({
                        "brokers": brokers,
                        "controller_id": c.controller_id,
                        "raft_term": c.raft_term,
                        "node_id": c.node_id,
                        "under_replicated_partitions": c.under_replicated_partitions,
                        "offline_partitions": c.offline_partitions,
                    });
                    println!("{v}");
                }
                Output::Text => {
                    let controller = if c.controller_id < 0 {
                        "none (an election is under way)".to_string()
                    } else {
                        c.controller_id.to_string()
                    };
                    println!(
                        "controller: {controller}\traft_term={}\tanswered_by={}",
                        c.raft_term, c.node_id
                    );
                    println!(
                        "partitions: under_replicated={}\toffline={}",
                        c.under_replicated_partitions, c.offline_partitions
                    );
                    for b in &c.brokers {
                        let rack = if b.rack.is_empty() { "-" } else { &b.rack };
                        let role = if b.voter { "voter" } else { "broker" };
                        println!(
                            "broker {}\t{}\track={rack}\t{}\t{role}",
                            b.id, b.address, b.state
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

async fn group(cmd: GroupCommand, broker: &BrokerArg) -> Result<()> {
    let client = broker.connect().await?;
    match cmd {
        GroupCommand::List { output } => {
            let groups = client.list_groups().await?;
            match output {
                Output::Json => {
                    let v: Vec<_> = groups
                        .iter()
                        .map(|g| serde_json::json!({"group": g.group, "state": g.state, "members": g.members}))
                        .collect();
                    println!("{}", serde_json::Value::Array(v));
                }
                Output::Text => {
                    for g in groups {
                        println!("{}\tstate={}\tmembers={}", g.group, g.state, g.members);
                    }
                }
            }
        }
        GroupCommand::Describe { group, output } => {
            let d = client.describe_group(&group).await?;
            match output {
                Output::Json => println!("{}", group_json(&d)),
                Output::Text => {
                    println!(
                        "Group: {}\tState: {}\tAssignor: {}\tEpoch: {}",
                        d.group, d.state, d.assignor, d.group_epoch
                    );
                    for m in &d.members {
                        let parts: Vec<String> = m
                            .assignments
                            .iter()
                            .map(|tp| format!("{}:{:?}", tp.topic, tp.partitions))
                            .collect();
                        println!(
                            "  Member: {}\tEpoch: {}\tAssigned: {}",
                            m.member_id,
                            m.member_epoch,
                            parts.join(" ")
                        );
                    }
                    println!(
                        "  {:<30} {:>9} {:>16} {:>16} {:>10}",
                        "TOPIC", "PARTITION", "COMMITTED", "HIGH-WATERMARK", "LAG"
                    );
                    for o in &d.offsets {
                        let committed = if o.committed_offset < 0 {
                            "-".to_string()
                        } else {
                            o.committed_offset.to_string()
                        };
                        println!(
                            "  {:<30} {:>9} {:>16} {:>16} {:>10}",
                            o.topic, o.partition, committed, o.high_watermark, o.lag
                        );
                    }
                }
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            partitions,
            to_earliest: _,
            to_latest,
            to_offset,
            to_timestamp,
        } => {
            let (spec, ts) = match (to_latest, to_timestamp) {
                (true, _) => (pb::OffsetSpec::Latest, 0),
                (_, Some(t)) => (pb::OffsetSpec::Timestamp, t),
                _ => (pb::OffsetSpec::Earliest, 0),
            };
            let offsets = client
                .reset_group_offsets(pb::ResetGroupOffsetsRequest {
                    group: group.clone(),
                    topic,
                    spec: spec as i32,
                    timestamp_ms: ts,
                    offset: to_offset,
                    partitions,
                })
                .await?;
            for o in offsets {
                println!("{}\t{}\t{}\t{}", group, o.topic, o.partition, o.offset);
            }
        }
        GroupCommand::Delete { group } => {
            client.delete_group(&group).await?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}

pub fn group_json(d: &pb::GroupDescription) -> serde_json::Value {
    serde_json::json!({
        "group": d.group,
        "state": d.state,
        "assignor": d.assignor,
        "group_epoch": d.group_epoch,
        "members": d.members.iter().map(|m| serde_json::json!({
            "member_id": m.member_id,
            "member_epoch": m.member_epoch,
            "topics": m.topics,
            "assignments": m.assignments.iter().map(|tp| serde_json::json!({"topic": tp.topic, "partitions": tp.partitions})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "offsets": d.offsets.iter().map(|o| serde_json::json!({
            "topic": o.topic,
            "partition": o.partition,
            "committed_offset": o.committed_offset,
            "high_watermark": o.high_watermark,
            "lag": o.lag,
        })).collect::<Vec<_>>(),
    })
}
