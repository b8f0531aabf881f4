//! Broker configuration: a TOML file (see `deploy/strata.toml`, the commented source of
//! truth), then `STRATA_*` environment variables and flags (applied by the CLI), checked
//! by [`BrokerConfig::validate`] with errors that name the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::topic_config;

/// The address a broker listens on when not told otherwise; clients default to it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9292";
/// Where `/metrics` is served by default.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9293";
/// Where Kafka clients connect by default (Kafka's own port).
pub const DEFAULT_KAFKA_LISTEN: &str = "127.0.0.1:9092";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id, shown as leader and replica in describe output.
    pub node_id: u32,
    /// Where partition logs and topic metadata live.
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub listen: String,
    /// The address other brokers and clients reach this one at; empty: `listen`.
    pub advertise: String,
    /// This broker's rack (replica placement spreads over racks); empty: none.
    pub rack: String,
    /// The controller's voters, `ID@HOST:PORT,...` (each its advertised gRPC address);
    /// empty for a single broker. A broker listed here is a voter; others `join`.
    pub voters: String,
    /// A cluster member to join through, for a broker that is not a voter.
    pub join: String,
    /// How often a cluster broker heartbeats to the controller leader.
    pub broker_heartbeat_interval_ms: u64,
    /// A broker the controller has not heard from for this long is fenced: it leads
    /// nothing and leaves in-sync sets (Kafka's `broker.session.timeout.ms`).
    pub broker_session_timeout_ms: u64,
    /// A follower that has not caught up with its leader for this long leaves the
    /// partition's in-sync set (Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// The controller's Raft election timeout: a random value between this and twice
    /// this; Raft's heartbeats go at a fifth of it.
    pub controller_election_timeout_ms: u64,
    /// Prometheus `/metrics` listen address; empty disables it.
    pub metrics_listen: String,
    /// Kafka protocol listen address; empty disables the Kafka listener.
    pub kafka_listen: String,
    /// The address Kafka clients are told to connect to (Kafka's
    /// `advertised.listeners`); empty: `kafka_listen` as bound.
    pub kafka_advertise: String,
    /// Create a topic a Kafka client asks metadata for when it does not exist, with one
    /// partition and the broker's defaults (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics_enable: bool,
    /// Cold tier: `file:///PATH`, `s3://BUCKET/PREFIX` (AWS_* variables) or `memory://`;
    /// empty means `file://<data_dir>/objects`.
    pub object_store: String,
    /// Options for the object store (object_store's keys, e.g. `aws_endpoint`,
    /// `aws_allow_http`); they win over the AWS_* environment variables.
    pub object_store_options: BTreeMap<String, String>,
    /// Memory for cached cold row groups (0 with `cold_cache_disk_bytes` 0: no cache).
    pub cold_cache_memory_bytes: usize,
    /// Disk for cached cold row groups, in `<data_dir>/cache`.
    pub cold_cache_disk_bytes: usize,
    /// Memory for Parquet fetched ahead of sequential cold reads (a quarter of it per
    /// GET); 0 turns read-ahead off.
    pub cold_read_ahead_bytes: u64,
    /// How often retention, `flush.ms` and `segment.ms` are checked.
    pub housekeeping_interval_ms: u64,
    /// Produce to a partition waits while more than this many bytes of its sealed
    /// segments wait for upload and uploads are succeeding, so offload keeps up and local
    /// disk stays bounded under sustained load. During an object-store outage produce
    /// never waits. 0 turns the limit off.
    pub upload_backlog_limit_bytes: u64,
    /// Segment size of the compacted offsets topic (Kafka's `offsets.topic.segment.bytes`):
    /// compaction never touches the active segment, so this bounds what it leaves.
    pub offsets_topic_segment_bytes: u64,
    /// Partitions of the offsets topic in a cluster (Kafka's `offsets.topic.num.partitions`):
    /// groups are spread over them by a hash of the group id, each coordinated by its
    /// partition's leader. Fixed once the topic exists. A single broker uses one.
    pub offsets_topic_partitions: u32,
    /// Replicas of each offsets partition (Kafka's `offsets.topic.replication.factor`),
    /// at most the number of voters; the topic is created once that many brokers are live.
    pub offsets_topic_replication_factor: u32,
    /// How often committed group offsets are copied to the bucket, when they changed, so
    /// a broker rebuilt from the bucket alone has them (0: never).
    pub offsets_snapshot_interval_ms: u64,
    /// Broker-wide defaults for topic configs, by Kafka name.
    pub topic_defaults: BTreeMap<String, String>,
    /// This broker's TLS certificate chain (PEM, leaf first). With it (and
    /// `tls_key_file`) the gRPC listener, and so broker-to-broker traffic, speaks only
    /// TLS. Its names must cover the advertised host.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// The CA (PEM) that signs client certificates and the other brokers' certificates:
    /// needed for `tls_client_auth` and in a TLS cluster.
    pub tls_ca_file: Option<PathBuf>,
    /// Whether clients must present a certificate: `none`, `requested` or `required`
    /// (Kafka's `ssl.client.auth`).
    pub tls_client_auth: String,
    /// Serve `/metrics` over TLS as well (scrapers then need the CA).
    pub metrics_tls: bool,
    /// How often the TLS files are checked for a change (SIGHUP reloads at once).
    pub tls_reload_interval_ms: u64,
    /// SASL mechanisms the Kafka listener offers (`SCRAM-SHA-256`, `SCRAM-SHA-512`,
    /// `PLAIN`); with any, every Kafka connection must authenticate (SASL_PLAINTEXT,
    /// or SASL_SSL with TLS). Users are managed with `strata user` or Kafka's
    /// AlterUserScramCredentials.
    pub kafka_sasl_mechanisms: Vec<String>,
    /// Bearer tokens for gRPC: a file of `NAME sha256:HEX` lines (`strata token
    /// create`), reloaded when it changes.
    pub grpc_token_file: Option<PathBuf>,
    /// Refuse gRPC calls that carry neither a valid token nor a client certificate.
    pub grpc_auth_required: bool,
    /// Principals allowed everything (Kafka's `super.users`), such as `User:admin`:
    /// they manage users, and in a TLS cluster brokers must present one of them. Needed
    /// once any authentication is on.
    pub super_users: Vec<String>,
    /// Whether a request on a resource no ACL names is allowed (Kafka's
    /// `allow.everyone.if.no.acl.found`). Unset: allowed only while no authentication
    /// is on (the single-broker quick start); with authentication, denied unless a
    /// super user asks or an ACL allows it.
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// Connections one client address may hold open on each listener (Kafka's
    /// `max.connections.per.ip`); one more is closed at once. 0: no limit.
    pub max_connections_per_ip: usize,
    /// Bytes per second each principal may produce (Kafka's `producer_byte_rate` client
    /// quota for the default user); over it, answers carry a throttle time and the
    /// connection waits it out. 0: no limit.
    pub quota_producer_byte_rate: u64,
    /// Bytes per second each principal may fetch (`consumer_byte_rate`). 0: no limit.
    pub quota_consumer_byte_rate: u64,
    /// Rates for named principals, overriding the two above:
    /// `[quota_overrides."User:etl"]` with `producer_byte_rate` and `consumer_byte_rate`.
    pub quota_overrides: BTreeMap<String, crate::quotas::QuotaRates>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            data_dir: PathBuf::from("strata-data"),
            listen: DEFAULT_LISTEN.to_string(),
            advertise: String::new(),
            rack: String::new(),
            voters: String::new(),
            join: String::new(),
            broker_heartbeat_interval_ms: 500,
            broker_session_timeout_ms: 2000,
            replica_lag_time_max_ms: 30_000,
            controller_election_timeout_ms: 1000,
            metrics_listen: DEFAULT_METRICS_LISTEN.to_string(),
            kafka_listen: DEFAULT_KAFKA_LISTEN.to_string(),
            kafka_advertise: String::new(),
            auto_create_topics_enable: true,
            object_store: String::new(),
            object_store_options: BTreeMap::new(),
            cold_cache_memory_bytes: 64 << 20,
            cold_cache_disk_bytes: 256 << 20,
            cold_read_ahead_bytes: 128 << 20,
            housekeeping_interval_ms: 1000,
            upload_backlog_limit_bytes: 4 << 30,
            offsets_topic_segment_bytes: 64 << 20,
            offsets_topic_partitions: 16,
            offsets_topic_replication_factor: 3,
            offsets_snapshot_interval_ms: 5000,
            topic_defaults: BTreeMap::new(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_client_auth: "none".to_string(),
            metrics_tls: false,
            tls_reload_interval_ms: 10_000,
            kafka_sasl_mechanisms: Vec::new(),
            grpc_token_file: None,
            grpc_auth_required: false,
            super_users: Vec::new(),
            allow_everyone_if_no_acl_found: None,
            max_connections_per_ip: 0,
            quota_producer_byte_rate: 0,
            quota_consumer_byte_rate: 0,
            quota_overrides: BTreeMap::new(),
        }
    }
}

impl BrokerConfig {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, BrokerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BrokerError::io(format!("reading config file {}", path.display()), e))?;
        toml::from_str(&text)
            .map_err(|e| BrokerError::InvalidConfig(format!("config file {}: {e}", path.display())))
    }

    /// The object store URL, with the default filled in.
    pub fn object_store_url(&self) -> String {
        if !self.object_store.is_empty() {
            return self.object_store.clone();
        }
        let dir = std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        format!("file://{}", dir.join("objects").display())
    }

    /// The address others reach this broker at.
    pub fn advertised(&self) -> &str {
        if self.advertise.is_empty() {
            &self.listen
        } else {
            &self.advertise
        }
    }

    /// Whether this broker is a cluster member (`voters` set).
    pub fn clustered(&self) -> bool {
        !self.voters.is_empty()
    }

    /// The voters, by node id; empty for a single broker.
    pub fn voter_map(&self) -> Result<BTreeMap<u64, String>, BrokerError> {
        let mut out = BTreeMap::new();
        if self.voters.is_empty() {
            return Ok(out);
        }
        for part in self.voters.split(',') {
            let bad = || {
                BrokerError::InvalidConfig(format!(
                    "voters: {part:?} is not ID@HOST:PORT; list every voter, e.g. 1@10.0.0.1:9292,2@10.0.0.2:9292,3@10.0.0.3:9292"
                ))
            };
            let (id, addr) = part.trim().split_once('@').ok_or_else(bad)?;
            let id: u64 = id.parse().map_err(|_| bad())?;
            if id == 0 || !addr.contains(':') {
                return Err(bad());
            }
            if out.insert(id, addr.to_string()).is_some() {
                return Err(BrokerError::InvalidConfig(format!(
                    "voters: node {id} is listed twice"
                )));
            }
        }
        Ok(out)
    }

    /// Whether the listeners speak TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert_file.is_some()
    }

    fn validate_tls(&self) -> Result<(), BrokerError> {
        let bad = |m: &str| Err(BrokerError::InvalidConfig(m.to_string()));
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return bad(
                "tls_cert_file and tls_key_file go together: set both (--tls-cert and --tls-key) or neither",
            );
        }
        if !matches!(
            self.tls_client_auth.as_str(),
            "none" | "requested" | "required"
        ) {
            return Err(BrokerError::InvalidConfig(format!(
                "tls_client_auth = {:?} is not one of none, requested, required",
                self.tls_client_auth
            )));
        }
        if !self.tls() {
            if self.tls_client_auth != "none" || self.metrics_tls {
                return bad(
                    "tls_client_auth and metrics_tls need TLS: set tls_cert_file and tls_key_file (--tls-cert, --tls-key)",
                );
            }
            return Ok(());
        }
        if self.tls_client_auth != "none" && self.tls_ca_file.is_none() {
            return bad(
                "tls_client_auth needs tls_ca_file (--tls-ca): the CA that signs client certificates",
            );
        }
        if self.clustered() && self.tls_ca_file.is_none() {
            return bad(
                "a TLS cluster member needs tls_ca_file (--tls-ca) to check the other brokers' certificates",
            );
        }
        if self.clustered() && self.tls_client_auth == "none" {
            return bad(
                "a TLS cluster member needs tls_client_auth = requested or required (--tls-client-auth): brokers prove who they are with their certificates",
            );
        }
        if self.tls_reload_interval_ms == 0 {
            return bad("tls_reload_interval_ms must be at least 1");
        }
        Ok(())
    }

    /// Whether any listener authenticates its clients.
    pub fn authenticates(&self) -> bool {
        !self.kafka_sasl_mechanisms.is_empty() || self.grpc_auth_required
    }

    /// Whether clients may prove who they are in any way (SASL, tokens, client
    /// certificates): then principals mean something, and ACLs are enforced.
    pub fn identifies_clients(&self) -> bool {
        self.authenticates()
            || self.grpc_token_file.is_some()
            || (self.tls() && self.tls_client_auth != "none")
    }

    /// The SASL mechanisms the Kafka listener offers.
    pub fn sasl_mechanisms(&self) -> Result<Vec<strata_auth::SaslMechanism>, BrokerError> {
        self.kafka_sasl_mechanisms
            .iter()
            .map(|m| {
                m.parse()
                    .map_err(|e| BrokerError::InvalidConfig(format!("kafka_sasl_mechanisms: {e}")))
            })
            .collect()
    }

    /// See `allow_everyone_if_no_acl_found`.
    pub fn allow_everyone_if_no_acl_found(&self) -> bool {
        self.allow_everyone_if_no_acl_found
            .unwrap_or(!self.identifies_clients())
    }

    /// The client quotas these settings make.
    pub fn quotas(&self) -> Result<crate::quotas::Quotas, BrokerError> {
        crate::quotas::Quotas::new(
            crate::quotas::QuotaRates {
                producer_byte_rate: self.quota_producer_byte_rate,
                consumer_byte_rate: self.quota_consumer_byte_rate,
            },
            &self.quota_overrides,
        )
    }

    /// `super_users`, parsed.
    pub fn super_users(&self) -> Result<Vec<strata_auth::Principal>, BrokerError> {
        self.super_users
            .iter()
            .map(|p| {
                strata_auth::Principal::parse(p)
                    .map_err(|e| BrokerError::InvalidConfig(format!("super_users: {e}")))
            })
            .collect()
    }

    fn validate_auth(&self) -> Result<(), BrokerError> {
        self.sasl_mechanisms()?;
        self.super_users()?;
        if self.authenticates() && self.super_users.is_empty() {
            return Err(BrokerError::InvalidConfig(
                "authentication is on (kafka_sasl_mechanisms or grpc_auth_required) but super_users is empty: nobody could manage users; name the admin principal, e.g. super_users = [\"User:admin\"] (--super-user User:admin)".into(),
            ));
        }
        // Principals that mean something, and nobody to grant them anything: every
        // request would be refused.
        if self.identifies_clients()
            && self.super_users.is_empty()
            && self.allow_everyone_if_no_acl_found != Some(true)
        {
            return Err(BrokerError::InvalidConfig(
                "clients are identified (client certificates or a token file) but super_users is empty: with ACLs enforced nobody could be granted anything; name the admin principal (super_users = [\"User:admin\"], --super-user User:admin), or set allow_everyone_if_no_acl_found = true to leave what no ACL names open".into(),
            ));
        }
        // A cluster's brokers talk over the gRPC port; without TLS client certificates
        // naming super users, anyone reaching it could propose controller changes (a
        // user of their own) or fetch as a follower, around every credential.
        let secured = self.authenticates() || self.grpc_token_file.is_some();
        if self.clustered() && secured && (!self.tls() || self.tls_client_auth == "none") {
            return Err(BrokerError::InvalidConfig(
                "authentication in a cluster needs TLS with client certificates between brokers: set tls_cert_file, tls_key_file, tls_ca_file and tls_client_auth = requested or required, with each broker's certificate naming one of super_users".into(),
            ));
        }
        if self.clustered() && secured && self.super_users.is_empty() {
            return Err(BrokerError::InvalidConfig(
                "authentication in a cluster needs super_users naming the brokers' certificates (e.g. super_users = [\"User:broker\", \"User:admin\"]): only they may call the brokers' own service".into(),
            ));
        }
        if self.grpc_auth_required
            && self.grpc_token_file.is_none()
            && self.tls_client_auth == "none"
        {
            return Err(BrokerError::InvalidConfig(
                "grpc_auth_required needs a way to authenticate: grpc_token_file (--grpc-token-file), or client certificates (tls_client_auth = requested or required)".into(),
            ));
        }
        Ok(())
    }

    /// Checks every setting; the error names the key and what is valid.
    pub fn validate(&self) -> Result<(), BrokerError> {
        self.validate_tls()?;
        self.validate_auth()?;
        self.quotas()?;
        let bad = |m: String| Err(BrokerError::InvalidConfig(m));
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad(format!(
                "listen = {:?} is not a socket address; use HOST:PORT such as {DEFAULT_LISTEN}",
                self.listen
            ));
        }
        if !self.metrics_listen.is_empty() && self.metrics_listen.parse::<SocketAddr>().is_err() {
            return bad(format!(
                "metrics_listen = {:?} is not a socket address; use HOST:PORT such as {DEFAULT_METRICS_LISTEN}, or \"\" to disable",
                self.metrics_listen
            ));
        }
        let voters = self.voter_map()?;
        let me = self.node_id as u64;
        if !voters.is_empty() {
            match voters.get(&me) {
                Some(addr) if addr != self.advertised() => {
                    return bad(format!(
                        "voters lists node {me} at {addr}, but it listens at {} (--advertise / --listen): give each voter its own advertised address",
                        self.advertised()
                    ));
                }
                Some(_) if !self.join.is_empty() => {
                    return bad(format!(
                        "node {me} is a voter: it needs no --join (only brokers outside --voters join)"
                    ));
                }
                None if self.join.is_empty() => {
                    return bad(format!(
                        "node {me} is not among the voters ({}): add it there, or give --join HOST:PORT of a cluster member",
                        self.voters
                    ));
                }
                _ => {}
            }
            if self.advertised().starts_with("0.0.0.0:") || self.advertised().starts_with("[::]:") {
                return bad(format!(
                    "advertise = {:?} is not an address others can reach; set --advertise HOST:PORT",
                    self.advertised()
                ));
            }
        } else if !self.join.is_empty() {
            return bad("join needs voters: give --voters too (the controller's voter set)".into());
        }
        if self.node_id == 0 {
            return bad("node_id must be at least 1".into());
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms
        {
            return bad(format!(
                "broker_session_timeout_ms ({}) must be longer than broker_heartbeat_interval_ms ({}), which must be at least 1",
                self.broker_session_timeout_ms, self.broker_heartbeat_interval_ms
            ));
        }
        if self.controller_election_timeout_ms < 50 {
            return bad("controller_election_timeout_ms must be at least 50".into());
        }
        if self.housekeeping_interval_ms == 0 {
            return bad("housekeeping_interval_ms must be at least 1".into());
        }
        if !(1..=1000).contains(&self.offsets_topic_partitions) {
            return bad(format!(
                "offsets_topic_partitions = {} must be between 1 and 1000",
                self.offsets_topic_partitions
            ));
        }
        if self.offsets_topic_replication_factor == 0 {
            return bad("offsets_topic_replication_factor must be at least 1".into());
        }
        topic_config::validate(
            "segment.bytes",
            &self.offsets_topic_segment_bytes.to_string(),
        )
        .map_err(|e| BrokerError::InvalidConfig(format!("offsets_topic_segment_bytes: {e}")))?;
        for (k, v) in &self.topic_defaults {
            topic_config::validate(k, v)
                .map_err(|e| BrokerError::InvalidConfig(format!("topic_defaults: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = toml::from_str::<BrokerConfig>("listn = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn"), "{e}");
        let c: BrokerConfig = toml::from_str("listen = \"nowhere\"").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("listen") && e.contains("HOST:PORT"), "{e}");
        let c: BrokerConfig =
            toml::from_str("[topic_defaults]\n\"retention.ms\" = \"-5\"").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("retention.ms"), "{e}");
        BrokerConfig::default().validate().unwrap();
    }

    #[test]
    fn authentication_settings_are_checked_together() {
        let bad = |toml_text: &str, want: &str| {
            let c: BrokerConfig = toml::from_str(toml_text).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{toml_text}: {e}");
        };
        bad("kafka_sasl_mechanisms = [\"GSSAPI\"]", "SCRAM-SHA-256");
        bad("kafka_sasl_mechanisms = [\"PLAIN\"]", "super_users");
        bad("super_users = [\"Group:ops\"]", "User:NAME");
        bad(
            "grpc_auth_required = true\nsuper_users = [\"User:admin\"]",
            "grpc_token_file",
        );
        bad(
            "kafka_sasl_mechanisms = [\"PLAIN\"]\nsuper_users = [\"admin\"]\nnode_id = 1\nvoters = \"1@127.0.0.1:9292\"",
            "TLS with client certificates between brokers",
        );
        let c: BrokerConfig = toml::from_str(
            "kafka_sasl_mechanisms = [\"scram-sha-512\", \"PLAIN\"]\nsuper_users = [\"admin\"]",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.sasl_mechanisms().unwrap().len(), 2);
        assert_eq!(c.super_users().unwrap()[0].to_string(), "User:admin");
        assert!(
            !c.allow_everyone_if_no_acl_found(),
            "closed with authentication"
        );

        // Tokens (or client certificates) identify clients too: ACLs are enforced, so
        // someone must be able to grant, or everything be left open on purpose.
        bad("grpc_token_file = \"t\"", "super_users is empty");
        let open: BrokerConfig =
            toml::from_str("grpc_token_file = \"t\"\nallow_everyone_if_no_acl_found = true")
                .unwrap();
        open.validate().unwrap();
        assert!(open.allow_everyone_if_no_acl_found());
        let closed: BrokerConfig =
            toml::from_str("grpc_token_file = \"t\"\nsuper_users = [\"User:ops\"]").unwrap();
        closed.validate().unwrap();
        assert!(!closed.allow_everyone_if_no_acl_found());
        // The quick start: no way to tell clients apart, everything open.
        let quick = BrokerConfig::default();
        quick.validate().unwrap();
        assert!(quick.allow_everyone_if_no_acl_found());
    }

    #[test]
    fn tls_settings_are_checked_together() {
        let bad = |toml_text: &str, want: &str| {
            let c: BrokerConfig = toml::from_str(toml_text).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{toml_text}: {e}");
        };
        bad("tls_cert_file = \"a.pem\"", "tls_key_file");
        bad("tls_client_auth = \"always\"", "none, requested, required");
        bad("metrics_tls = true", "tls_cert_file");
        let with_cert = "tls_cert_file = \"a.pem\"\ntls_key_file = \"a.key\"\n";
        bad(
            &format!("{with_cert}tls_client_auth = \"required\""),
            "tls_ca_file",
        );
        bad(
            &format!("{with_cert}node_id = 1\nvoters = \"1@127.0.0.1:9292\""),
            "other brokers' certificates",
        );
        bad(
            &format!(
                "{with_cert}tls_ca_file = \"ca.pem\"\nnode_id = 1\nvoters = \"1@127.0.0.1:9292\""
            ),
            "requested or required",
        );
        // Client certificates name principals: someone must grant them access.
        let mtls = format!("{with_cert}tls_ca_file = \"ca.pem\"\ntls_client_auth = \"required\"");
        bad(&mtls, "super_users is empty");
        let c: BrokerConfig =
            toml::from_str(&format!("{mtls}\nsuper_users = [\"User:admin\"]")).unwrap();
        c.validate().unwrap();
        assert!(c.tls());
        assert!(!c.allow_everyone_if_no_acl_found());
    }

    #[test]
    fn the_example_config_file_is_valid_and_matches_the_defaults() {
        let text = include_str!("../../../deploy/strata.toml");
        let c: BrokerConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        let d = BrokerConfig::default();
        assert_eq!(
            (c.listen, c.metrics_listen, c.data_dir),
            (d.listen, d.metrics_listen, d.data_dir)
        );
    }
}
