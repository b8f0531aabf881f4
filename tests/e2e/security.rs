//! Security and the gRPC ecosystem: TLS on the gRPC listener (client certificates,
//! refusals, rotation without a restart); reflection and health, checked with tools we
//! did not write (grpcurl, Python grpcio) and a health watch across shutdown.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use strata_client::{Client, ConnectOptions, Producer, ProducerConfig, TlsOptions};
use strata_tls::testing::{LeafFiles, TestCa};

use crate::helpers::{ServerProcess, TestBroker, read_all, strata, tool, wait_until};
use crate::history::History;

/// A CA, the broker's certificate (for localhost and 127.0.0.1) and a client's.
struct Pki {
    ca_file: PathBuf,
    server: LeafFiles,
    client: LeafFiles,
}

fn pki(dir: &Path) -> Pki {
    let ca = TestCa::new("Strata test CA");
    Pki {
        ca_file: ca.write(dir, "ca"),
        server: ca
            .leaf("broker-1", &["localhost", "127.0.0.1"])
            .write(dir, "broker"),
        client: ca.leaf("alice", &[]).write(dir, "alice"),
    }
}

fn tls(ca: &Path, identity: Option<&LeafFiles>) -> ConnectOptions {
    ConnectOptions {
        tls: Some(TlsOptions {
            ca: Some(ca.to_path_buf()),
            cert: identity.map(|i| i.cert.clone()),
            key: identity.map(|i| i.key.clone()),
            domain: None,
        }),
        token: None,
    }
}

/// What a call through `options` to the broker at `addr` ends in: Ok, or the error the
/// client shows its user.
async fn try_list(addr: &str, options: &ConnectOptions) -> Result<Vec<String>, String> {
    let c = Client::connect_with(addr, options)
        .await
        .map_err(|e| e.to_string())?;
    let topics = c.list_topics().await.map_err(|e| e.to_string())?;
    Ok(topics.into_iter().map(|t| t.name).collect())
}

async fn tls_broker(dir: &Path, p: &Pki) -> TestBroker {
    let (cert, key, ca) = (
        p.server.cert.clone(),
        p.server.key.clone(),
        p.ca_file.clone(),
    );
    TestBroker::start_with(&dir.join("data"), move |c| {
        c.tls_cert_file = Some(cert);
        c.tls_key_file = Some(key);
        c.tls_ca_file = Some(ca);
        c.tls_client_auth = "required".into();
        // Client certificates make principals, so ACLs are enforced: alice, the test
        // client, may do everything.
        c.super_users = vec!["User:alice".into()];
    })
    .await
}

#[tokio::test]
async fn a_tls_listener_refuses_plain_text_strangers_and_missing_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let b = tls_broker(dir.path(), &p).await;

    let good = tls(&p.ca_file, Some(&p.client));
    let client = Client::connect_with(&b.addr, &good).await.unwrap();
    client
        .create_topic("t", 1, 1, Default::default())
        .await
        .unwrap();
    let mut producer = Producer::new(client.clone(), ProducerConfig::default())
        .await
        .unwrap();
    producer
        .send("t", Some(0), Some(b"k"), Some(b"over TLS"), &[])
        .await
        .unwrap();
    producer.close().await.unwrap();
    let read = read_all(&client, "t", 0, 0).await;
    assert_eq!(read, vec![(0, Some(b"k".to_vec()), b"over TLS".to_vec())]);

    // Plain text: the TLS listener never answers it.
    let e = try_list(&b.addr, &ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(e.contains(&b.addr), "{e}");
    // No client certificate, or one another CA signed: refused in the handshake.
    let e = try_list(&b.addr, &tls(&p.ca_file, None)).await.unwrap_err();
    assert!(
        e.contains("certificate") || e.contains("handshake") || e.contains("alert"),
        "{e}"
    );
    let stranger_ca = TestCa::new("someone else's CA");
    let stranger = stranger_ca
        .leaf("mallory", &[])
        .write(dir.path(), "mallory");
    let e = try_list(&b.addr, &tls(&p.ca_file, Some(&stranger)))
        .await
        .unwrap_err();
    assert!(e.contains("certificate") || e.contains("alert"), "{e}");
    // A broker certificate the client's CA did not sign: the client refuses it.
    let other_ca_file = stranger_ca.write(dir.path(), "other-ca");
    let e = try_list(&b.addr, &tls(&other_ca_file, Some(&p.client)))
        .await
        .unwrap_err();
    assert!(e.contains("certificate"), "{e}");
    // A missing file is named.
    let e = try_list(&b.addr, &tls(&dir.path().join("nope.pem"), None))
        .await
        .unwrap_err();
    assert!(e.contains("nope.pem") && e.contains("--tls-ca"), "{e}");

    // None of the refused clients changed anything.
    let topics = try_list(&b.addr, &good).await.unwrap();
    assert!(
        topics.contains(&"t".to_string()) && topics.len() <= 2,
        "{topics:?}"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_tls_from_flags_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let b = tls_broker(dir.path(), &p).await;
    let flags = [
        "--broker",
        &b.addr,
        "--tls-ca",
        p.ca_file.to_str().unwrap(),
        "--tls-cert",
        p.client.cert.to_str().unwrap(),
        "--tls-key",
        p.client.key.to_str().unwrap(),
    ];
    let out = strata()
        .args(["topic", "create", "cli-tls", "--partitions", "2"])
        .args(flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = strata()
        .args(["topic", "list"])
        .env("STRATA_BROKER", &b.addr)
        .env("STRATA_TLS_CA", &p.ca_file)
        .env("STRATA_TLS_CERT", &p.client.cert)
        .env("STRATA_TLS_KEY", &p.client.key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli-tls"));
    // Without its certificate the CLI is refused, says so, and exits non-zero.
    let out = strata()
        .args(["topic", "list", "--broker", &b.addr, "--tls-ca"])
        .arg(&p.ca_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&b.addr), "{err}");
    // A certificate without its key is refused before anything is sent.
    let out = strata()
        .args(["topic", "list", "--broker", &b.addr, "--tls-cert"])
        .arg(&p.client.cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.stop().await;
}

fn sighup(server: &ServerProcess) {
    let pid = server.child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

/// The broker's certificate is replaced by one from a new CA while a producer streams
/// through a connection made with the old one. After SIGHUP new connections get the new
/// certificate; the open connection goes on and every acknowledged record is read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        &[
            "--tls-cert",
            p.server.cert.to_str().unwrap(),
            "--tls-key",
            p.server.key.to_str().unwrap(),
            "--tls-ca",
            p.ca_file.to_str().unwrap(),
            "--tls-client-auth",
            "required",
            "--super-user",
            "User:alice",
        ],
        &[],
    );
    let old = tls(&p.ca_file, Some(&p.client));
    let client = Client::connect_with(&server.addr, &old).await.unwrap();
    client
        .create_topic("rot", 1, 1, Default::default())
        .await
        .unwrap();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let acked_so_far = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer = {
        let client = client.clone();
        let acked_so_far = acked_so_far.clone();
        tokio::spawn(async move {
            let config = ProducerConfig {
                batch_size: 4 * 1024,
                track_acks: true,
                ..Default::default()
            };
            let mut p = Producer::new(client, config).await.unwrap();
            let mut n = 0u64;
            while !*stop_rx.borrow() {
                p.send("rot", Some(0), None, Some(&value(n)), &[]).await?;
                n += 1;
                if n.is_multiple_of(200) {
                    p.poll_linger().await?;
                    acked_so_far.store(
                        p.stats().records_acked,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    tokio::task::yield_now().await;
                }
            }
            p.flush().await?;
            Ok::<_, strata_client::ClientError>(p.acked())
        })
    };
    let acked = |at_least: u64| {
        let a = acked_so_far.clone();
        move || {
            let n = a.load(std::sync::atomic::Ordering::Relaxed);
            async move { n >= at_least }
        }
    };
    wait_until(
        Duration::from_secs(60),
        "2000 records acknowledged",
        acked(2000),
    )
    .await;

    // Rotate: a new CA signs the broker's new certificate. Client certificates of the
    // old CA stay valid (the client CA file is unchanged).
    let new_ca = TestCa::new("Strata rotated CA");
    new_ca
        .leaf("broker-1", &["localhost", "127.0.0.1"])
        .write(dir.path(), "broker");
    let new_ca_file = new_ca.write(dir.path(), "new-ca");
    let new = tls(&new_ca_file, Some(&p.client));
    assert!(
        try_list(&server.addr, &new).await.is_err(),
        "not rotated yet"
    );
    sighup(&server);
    wait_until(
        Duration::from_secs(20),
        "the new certificate served",
        || {
            let (addr, new) = (server.addr.clone(), new.clone());
            async move { try_list(&addr, &new).await.is_ok() }
        },
    )
    .await;
    assert!(
        try_list(&server.addr, &old).await.is_err(),
        "a new connection still got the old certificate"
    );
    let before = acked_so_far.load(std::sync::atomic::Ordering::Relaxed);
    wait_until(
        Duration::from_secs(60),
        "2000 more records acknowledged after the rotation",
        acked(before + 2000),
    )
    .await;
    stop_tx.send(true).unwrap();
    let acks = producer
        .await
        .unwrap()
        .expect("the producer's connection outlived the rotation");

    let (mut history, n) = acked_history(acks);
    assert!(n >= before + 2000);
    let reader = Client::connect_with(&server.addr, &new).await.unwrap();
    let records = read_all(&reader, "rot", 0, 0).await;
    history.read(0, records.into_iter().map(|(o, _, v)| (o, v)));
    history.assert_clean("across a certificate rotation");
    assert!(server.log_text().contains("TLS certificate reloaded"));
}

fn value(n: u64) -> Vec<u8> {
    format!("rotation-{n:08}").into_bytes()
}

/// What one producer sending [`value`]`(0..)` in order to one partition was
/// acknowledged: the history, and how many records.
fn acked_history(acks: Vec<strata_client::AckedBatch>) -> (History, u64) {
    let mut history = History::new();
    let mut n = 0u64;
    for a in acks {
        for i in 0..a.record_count as i64 {
            history.ack(a.base_offset + i, value(n));
            n += 1;
        }
    }
    (history, n)
}

fn grpcurl(venv: &str) -> Command {
    Command::new(format!("{venv}/bin/grpcurl"))
}

fn run(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// grpcurl lists, describes and calls the API through reflection alone (no .proto
/// file), over plain text and over mutual TLS, and checks health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_finds_the_api_through_reflection() {
    let venv = tool("grpc-env.sh", "grpcurl and Python gRPC");
    let dir = tempfile::tempdir().unwrap();
    let plain = TestBroker::start(&dir.path().join("plain")).await;
    let listed = run(grpcurl(&venv).args(["-plaintext", &plain.addr, "list"]));
    for service in ["strata.v1.Strata", "grpc.health.v1.Health"] {
        assert!(listed.lines().any(|l| l == service), "{listed}");
    }
    assert!(!listed.contains("internal"), "{listed}");
    let described = run(grpcurl(&venv).args([
        "-plaintext",
        &plain.addr,
        "describe",
        "strata.v1.Strata.CreateTopic",
    ]));
    assert!(described.contains("CreateTopicRequest"), "{described}");
    run(grpcurl(&venv).args([
        "-plaintext",
        "-d",
        r#"{"name": "from-grpcurl", "partitions": 2}"#,
        &plain.addr,
        "strata.v1.Strata/CreateTopic",
    ]));
    let client = plain.client().await;
    let d = client.describe_topic("from-grpcurl").await.unwrap();
    assert_eq!(d.partitions.len(), 2);
    let health = run(grpcurl(&venv).args([
        "-plaintext",
        "-d",
        r#"{"service": "strata.v1.Strata"}"#,
        &plain.addr,
        "grpc.health.v1.Health/Check",
    ]));
    assert!(
        health.contains("SERVING") && !health.contains("NOT_SERVING"),
        "{health}"
    );
    plain.stop().await;

    let p = pki(dir.path());
    let b = tls_broker(dir.path(), &p).await;
    let port = b.addr.rsplit(':').next().unwrap().to_string();
    let target = format!("localhost:{port}");
    let tls_args = [
        "-cacert",
        p.ca_file.to_str().unwrap(),
        "-cert",
        p.client.cert.to_str().unwrap(),
        "-key",
        p.client.key.to_str().unwrap(),
    ];
    let listed = run(grpcurl(&venv)
        .args(tls_args)
        .args([target.as_str(), "list"]));
    assert!(listed.contains("strata.v1.Strata"), "{listed}");
    // Plain text to the TLS port, and TLS without a client certificate, fail.
    let out = grpcurl(&venv)
        .args(["-plaintext", &target, "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = grpcurl(&venv)
        .args(["-cacert", p.ca_file.to_str().unwrap(), &target, "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    b.stop().await;
}

/// The Python example in docs/ (client generated from proto/ with grpcio-tools) runs
/// against a broker that requires client certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_runs_over_mutual_tls() {
    let venv = tool("grpc-env.sh", "grpcurl and Python gRPC");
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let b = tls_broker(dir.path(), &p).await;
    let port = b.addr.rsplit(':').next().unwrap().to_string();
    let script = format!(
        "{}/../../docs/python/strata_example.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = run(Command::new(format!("{venv}/bin/python"))
        .arg(&script)
        .args(["--broker", &format!("localhost:{port}"), "--topic", "py"])
        .arg("--ca")
        .arg(&p.ca_file)
        .arg("--cert")
        .arg(&p.client.cert)
        .arg("--key")
        .arg(&p.client.key));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["offset"], i as i64);
        assert_eq!(l["key"], format!("k{i}"));
        assert_eq!(l["value"], format!("hello {i}"));
        assert_eq!(l["headers"]["from"], "python");
    }
    // And what it wrote is what the Rust client reads.
    let client = Client::connect_with(&b.addr, &tls(&p.ca_file, Some(&p.client)))
        .await
        .unwrap();
    let read = read_all(&client, "py", 0, 0).await;
    assert_eq!(read[2], (2, Some(b"k2".to_vec()), b"hello 2".to_vec()));
    b.stop().await;
}

/// The health service says SERVING while the broker serves, and NOT_SERVING to a
/// watcher as soon as shutdown begins, before the connections close.
#[tokio::test]
async fn health_turns_not_serving_when_shutdown_begins() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", b.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "strata.v1.Strata"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let e = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "strata.v1.Strata".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(b.stop());
    let next = watch
        .message()
        .await
        .expect("the watch stays open until shutdown's grace ends")
        .expect("an update before the stream closes");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    stopping.await.unwrap();
}

/// Three voters with TLS and client certificates requested, one of them holding a
/// certificate from a CA the others do not trust. The two that trust each other form
/// the cluster and replicate over TLS; the stranger never joins, is never given a
/// replica, and its own health says NOT_SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_replicate_over_tls_and_shut_out_a_broker_with_a_stranger_certificate() {
    use crate::cluster::Cluster;
    use strata_client::Acks;
    let dir = tempfile::tempdir().unwrap();
    // The operator's token, for managing users over gRPC.
    let tokens = dir.path().join("tokens");
    let (ok, admin_token, err) = cli(
        vec![
            "token".into(),
            "create".into(),
            "admin".into(),
            "--file".into(),
            tokens.display().to_string(),
        ],
        vec![],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let admin_token = admin_token.trim().to_string();
    let mut c = Cluster::unstarted(dir.path(), 3, Vec::new(), Vec::new(), None, true);
    let ca = TestCa::new("cluster CA");
    let ca_file = ca.write(dir.path(), "ca");
    let broker = ca.leaf("broker", &[c.ip()]).write(dir.path(), "broker");
    let stranger_ca = TestCa::new("stranger CA");
    let stranger_ca_file = stranger_ca.write(dir.path(), "stranger-ca");
    let stranger = stranger_ca
        .leaf("broker", &[c.ip()])
        .write(dir.path(), "stranger");
    let client = ca.leaf("alice", &[]).write(dir.path(), "alice");
    let own = |l: &LeafFiles| {
        vec![
            "--tls-cert".to_string(),
            l.cert.to_str().unwrap().to_string(),
            "--tls-key".to_string(),
            l.key.to_str().unwrap().to_string(),
            "--tls-ca".to_string(),
            ca_file.to_str().unwrap().to_string(),
            "--tls-client-auth".to_string(),
            "requested".to_string(),
            // Brokers' certificates name User:broker: only they may call the brokers'
            // own service. Kafka clients log in with SCRAM (SASL_SSL).
            "--super-user".to_string(),
            "User:broker,User:admin".to_string(),
            "--kafka-sasl-mechanisms".to_string(),
            "SCRAM-SHA-512".to_string(),
            "--grpc-token-file".to_string(),
            tokens.to_str().unwrap().to_string(),
        ]
    };
    c.node_args.insert(1, own(&broker));
    c.node_args.insert(2, own(&broker));
    c.node_args.insert(3, own(&stranger));
    // The test's own calls run as the admin (the token names the principal; the
    // certificate only opens the TLS session).
    c.client_options = ConnectOptions {
        token: Some(admin_token.clone()),
        ..tls(&ca_file, Some(&client))
    };
    c.start_all(3);

    wait_until(
        Duration::from_secs(60),
        "brokers 1 and 2 active",
        || async {
            c.describe(1).await.is_some_and(|d| {
                let active: Vec<u64> = d
                    .brokers
                    .iter()
                    .filter(|b| b.state == "active")
                    .map(|b| b.id)
                    .collect();
                active == [1, 2]
            })
        },
    )
    .await;
    let admin = Client::connect_with(&c.addr(1), &c.client_options)
        .await
        .unwrap();
    let e = admin
        .create_topic("three", 1, 3, Default::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("replication"), "{e}");
    admin
        .create_topic("two", 1, 2, Default::default())
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), "both replicas in sync", || async {
        admin
            .describe_topic("two")
            .await
            .is_ok_and(|d| d.partitions[0].isr.len() == 2)
    })
    .await;
    let mut producer = Producer::new(
        admin.clone(),
        ProducerConfig {
            acks: Acks::All,
            track_acks: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for n in 0..500u64 {
        producer
            .send("two", Some(0), None, Some(&value(n)), &[])
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let (mut history, n) = acked_history(producer.acked());
    assert_eq!(n, 500);
    // acks=all with both replicas in sync: the follower holds every acknowledged record.
    let d = admin.describe_topic("two").await.unwrap();
    assert_eq!(d.partitions[0].isr.len(), 2, "{d:?}");
    let records = read_all(&admin, "two", 0, 0).await;
    history.read(0, records.into_iter().map(|(o, _, v)| (o, v)));
    history.assert_clean("replicated over TLS");

    // A TLS client without a certificate reaches the public API (client certificates
    // are only requested) but not the brokers' own service.
    let anonymous = tls(&ca_file, None);
    Client::connect_with(&c.addr(1), &anonymous)
        .await
        .unwrap()
        .list_topics()
        .await
        .unwrap();
    let e = replica_fetch(tls_channel(&c.addr(1), &ca_file, None).await).await;
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // Nor does a client certificate of the cluster's own CA: it names no super user.
    let e = replica_fetch(tls_channel(&c.addr(1), &ca_file, Some(&client)).await).await;
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("User:alice is not a broker"), "{e:?}");

    // A SCRAM user made through broker 2 is the controller's: it logs in to the Kafka
    // listener of every broker (kcat over SASL_SSL), and a wrong password is refused.
    // The admin's CLI, through broker `id`.
    let admin_cli = |id: u64, args: &[&str], stdin: &str| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--broker".to_string(),
            c.addr(id),
            "--tls-ca".to_string(),
            ca_file.display().to_string(),
        ]);
        let (env, stdin) = (
            vec![("STRATA_TOKEN", admin_token.clone())],
            stdin.to_string(),
        );
        async move { cli(v, env, &stdin).await }
    };
    let (ok, _, err) = admin_cli(
        2,
        &[
            "user",
            "add",
            "dave",
            "--password-stdin",
            "--mechanism",
            "SCRAM-SHA-512",
        ],
        "dave-pw\n",
    )
    .await;
    assert!(ok, "{err}");
    let kcat = tool("kcat.sh", "kcat");
    let login = |id: u64, password: &str| {
        let (kcat, addr, ca, password) = (
            kcat.clone(),
            c.kafka_addr(id),
            ca_file.clone(),
            password.to_string(),
        );
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(&kcat)
                    .args(["-b", &addr, "-L", "-m", "5"])
                    .args([
                        "-X",
                        "security.protocol=SASL_SSL",
                        "-X",
                        "sasl.mechanisms=SCRAM-SHA-512",
                    ])
                    .args(["-X", "sasl.username=dave", "-X"])
                    .arg(format!("sasl.password={password}"))
                    .arg("-X")
                    .arg(format!("ssl.ca.location={}", ca.display()))
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    // dave logs in, but sees no topic until an ACL lets him describe it; the binding,
    // made through broker 1, is the controller's and holds on broker 2 too.
    wait_until(Duration::from_secs(30), "dave logs in", || async {
        let out = login(2, "dave-pw").await;
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("0 topics")
    })
    .await;
    let (ok, _, err) = admin_cli(
        1,
        &[
            "acl",
            "add",
            "--allow",
            "User:dave",
            "--operation",
            "describe",
            "--topic",
            "two",
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    for id in [1, 2] {
        wait_until(Duration::from_secs(30), "dave sees topic two", || async {
            let out = login(id, "dave-pw").await;
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("topic \"two\"")
        })
        .await;
    }
    let out = login(1, "not-daves").await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The stranger: refused by the others' handshakes, so never registered.
    let d = c.describe(1).await.unwrap();
    assert!(d.brokers.iter().all(|b| b.id != 3), "{d:?}");
    // Its own health (asked trusting its CA) says it cannot serve.
    let ch = tls_channel(&c.addr(3), &stranger_ca_file, Some(&client)).await;
    let status = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    let log = c.log(1) + &c.log(2);
    assert!(
        log.contains("TLS handshake failed"),
        "the others log the refused handshakes"
    );
}

/// A gRPC channel to `addr` over TLS, trusting `ca`, presenting `identity` if given.
async fn tls_channel(
    addr: &str,
    ca: &Path,
    identity: Option<&LeafFiles>,
) -> tonic::transport::Channel {
    let mut config = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(std::fs::read(ca).unwrap()),
    );
    if let Some(i) = identity {
        config = config.identity(tonic::transport::Identity::from_pem(
            std::fs::read(&i.cert).unwrap(),
            std::fs::read(&i.key).unwrap(),
        ));
    }
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(config)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A follower's fetch through `ch`, expected to be refused: the refusal.
async fn replica_fetch(ch: tonic::transport::Channel) -> tonic::Status {
    strata_proto::internal::v1::cluster_client::ClusterClient::new(ch)
        .replica_fetch(strata_proto::internal::v1::ReplicaFetchRequest {
            topic: "two".into(),
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap_err()
}

/// Kafka's SSL on the Kafka listener: Debian's kcat (librdkafka 2.0.2) and
/// confluent-kafka (librdkafka 2.x) produce and consume with client certificates; a
/// PLAINTEXT client and one without a certificate get nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_speak_ssl_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let b = tls_broker(dir.path(), &p).await;
    let kcat = tool("kcat.sh", "kcat");
    let path = |f: &Path| f.to_str().unwrap().to_string();
    let ssl = vec![
        "-X".to_string(),
        "security.protocol=SSL".to_string(),
        "-X".to_string(),
        format!("ssl.ca.location={}", path(&p.ca_file)),
        "-X".to_string(),
        format!("ssl.certificate.location={}", path(&p.client.cert)),
        "-X".to_string(),
        format!("ssl.key.location={}", path(&p.client.key)),
    ];
    let kafka = b.kafka_addr.clone();
    let (kcat2, ssl2, kafka2) = (kcat.clone(), ssl.clone(), kafka.clone());
    let produced = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(&kcat2)
            .args(["-b", &kafka2, "-t", "ssl", "-P"])
            .args(&ssl2)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"one\ntwo\nthree\n")
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        produced.status.success(),
        "kcat -P over SSL: {}",
        String::from_utf8_lossy(&produced.stderr)
    );
    let (kcat2, ssl2, kafka2) = (kcat.clone(), ssl.clone(), kafka.clone());
    let consumed = tokio::task::spawn_blocking(move || {
        Command::new(&kcat2)
            .args([
                "-b",
                &kafka2,
                "-t",
                "ssl",
                "-C",
                "-o",
                "beginning",
                "-c",
                "3",
                "-e",
            ])
            .args(["-f", "%o %s\n"])
            .args(&ssl2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&consumed.stdout),
        "0 one\n1 two\n2 three\n",
        "{}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    // PLAINTEXT against the SSL listener, and SSL without a client certificate: no
    // metadata within kcat's timeout.
    for args in [vec![], ssl[..4].to_vec()] {
        let (kcat2, kafka2, args2) = (kcat.clone(), kafka.clone(), args.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(&kcat2)
                .args(["-b", &kafka2, "-L", "-m", "3"])
                .args(&args2)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            !out.status.success(),
            "kcat -L {args:?} got metadata: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // confluent-kafka: an idempotent producer and a consumer over SSL.
    let python = tool("kafka-python-env.sh", "the Python Kafka clients and DuckDB");
    let script = r#"
import json, sys
from confluent_kafka import Consumer, Producer
bootstrap, ca, cert, key = sys.argv[1:5]
ssl = {"bootstrap.servers": bootstrap, "security.protocol": "SSL", "ssl.ca.location": ca,
       "ssl.certificate.location": cert, "ssl.key.location": key}
p = Producer({**ssl, "enable.idempotence": True, "acks": "all"})
for i in range(10):
    p.produce("ssl", key=b"k%d" % i, value=b"confluent-%d" % i)
assert p.flush(30) == 0
c = Consumer({**ssl, "group.id": "ssl-group", "auto.offset.reset": "earliest"})
c.subscribe(["ssl"])
seen = []
while len(seen) < 13:
    m = c.poll(10)
    assert m is not None, "nothing to read over SSL after %d records" % len(seen)
    assert m.error() is None, m.error()
    seen.append(m.value().decode())
c.close()
print(json.dumps(seen))
"#;
    let args = [
        kafka.clone(),
        path(&p.ca_file),
        path(&p.client.cert),
        path(&p.client.key),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "confluent-kafka over SSL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(&seen[..3], ["one", "two", "three"]);
    assert_eq!(seen[12], "confluent-9");

    // What the Kafka clients wrote over SSL reads back through gRPC over TLS.
    let client = Client::connect_with(&b.addr, &tls(&p.ca_file, Some(&p.client)))
        .await
        .unwrap();
    let read = read_all(&client, "ssl", 0, 0).await;
    assert_eq!(read.len(), 13);
    assert_eq!(read[3], (3, Some(b"k0".to_vec()), b"confluent-0".to_vec()));
    b.stop().await;
}

/// Runs `strata` with `args`, `stdin` on its standard input; (success, stdout, stderr).
async fn cli(
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    stdin: &str,
) -> (bool, String, String) {
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = strata()
            .args(&args)
            .envs(env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_certificates_and_sasl_scram_authenticate_and_only_super_users_manage_users() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let tokens = dir.path().join("tokens");
    // The operator's first token, made by the CLI: only its hash is in the file.
    let (ok, admin_token, err) = cli(
        vec![
            "token".into(),
            "create".into(),
            "admin".into(),
            "--file".into(),
            tokens.display().to_string(),
        ],
        vec![],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let admin_token = admin_token.trim().to_string();
    assert!(admin_token.starts_with("strata_"), "{admin_token}");
    assert!(
        !std::fs::read_to_string(&tokens)
            .unwrap()
            .contains(&admin_token)
    );

    let (cert, key, ca, t) = (
        p.server.cert.clone(),
        p.server.key.clone(),
        p.ca_file.clone(),
        tokens.clone(),
    );
    let b = TestBroker::start_with(&dir.path().join("data"), move |c| {
        c.tls_cert_file = Some(cert);
        c.tls_key_file = Some(key);
        c.tls_ca_file = Some(ca);
        // Token holders need no certificate; certificate holders no token.
        c.tls_client_auth = "requested".into();
        c.grpc_token_file = Some(t);
        c.grpc_auth_required = true;
        c.tls_reload_interval_ms = 100;
        c.super_users = vec!["User:admin".into()];
        c.kafka_sasl_mechanisms = vec![
            "SCRAM-SHA-256".into(),
            "SCRAM-SHA-512".into(),
            "PLAIN".into(),
        ];
    })
    .await;
    let base = [
        "--broker".to_string(),
        b.addr.clone(),
        "--tls-ca".into(),
        p.ca_file.display().to_string(),
    ];
    let with = |extra: &[&str]| {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(base.iter().cloned());
        v
    };
    let cert_flags = [
        "--tls-cert",
        p.client.cert.to_str().unwrap(),
        "--tls-key",
        p.client.key.to_str().unwrap(),
    ];

    // Who the broker takes each caller for.
    let (ok, _, err) = cli(with(&["whoami"]), vec![], "").await;
    assert!(
        !ok && err.contains("requires authentication") && err.contains("--token"),
        "{err}"
    );
    let (ok, _, err) = cli(
        with(&["whoami", "--token", "strata_not-a-real-token"]),
        vec![],
        "",
    )
    .await;
    assert!(!ok && err.contains("token is not valid"), "{err}");
    let (ok, out, err) = cli(
        with(&["whoami"]),
        vec![("STRATA_TOKEN", admin_token.clone())],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "User:admin");
    let mut alice = with(&["whoami"]);
    alice.extend(cert_flags.iter().map(|s| s.to_string()));
    let (ok, out, err) = cli(alice, vec![], "").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "User:alice");

    // alice (a certificate) is no super user: she may not add users.
    let mut add = with(&["user", "add", "carol", "--password-stdin"]);
    add.extend(cert_flags.iter().map(|s| s.to_string()));
    let (ok, _, err) = cli(add, vec![], "carol-pw\n").await;
    assert!(
        !ok && err.contains("User:alice is not allowed Alter on Cluster"),
        "{err}"
    );
    // admin (a token) may; the listing shows mechanisms, never keys or the password.
    let admin_env = vec![("STRATA_TOKEN", admin_token.clone())];
    let (ok, _, err) = cli(
        with(&["user", "add", "carol", "--password-stdin"]),
        admin_env.clone(),
        "carol-pw\n",
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = cli(with(&["user", "list"]), admin_env.clone(), "").await;
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "carol\tSCRAM-SHA-256 (4096 iterations), SCRAM-SHA-512 (4096 iterations)"
    );
    let stored = std::fs::read_to_string(dir.path().join("data/security/users.json")).unwrap();
    assert!(!stored.contains("carol-pw"));

    // confluent-kafka over SASL_SSL: SCRAM-SHA-512 and -256 and PLAIN as carol; a bad
    // password gets librdkafka's authentication error and no metadata.
    let python = tool("kafka-python-env.sh", "the Python Kafka clients and DuckDB");
    let script = r#"
import json, sys, time
from confluent_kafka import Consumer, KafkaError, Producer
bootstrap, ca, mode = sys.argv[1:4]
def conf(mechanism, password):
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL",
            "ssl.ca.location": ca, "sasl.mechanism": mechanism,
            "sasl.username": "carol", "sasl.password": password}
if mode == "denied":
    failed = []
    p = Producer({**conf("SCRAM-SHA-512", "carol-pw"), "message.timeout.ms": 20000})
    p.produce("sasl", b"no", on_delivery=lambda err, msg: failed.append(err.name() if err else None))
    p.flush(30)
    print(json.dumps({"denied": failed}))
    sys.exit(0)
p = Producer({**conf("SCRAM-SHA-512", "carol-pw"), "enable.idempotence": True, "acks": "all"})
for i in range(10):
    p.produce("sasl", key=b"k%d" % i, value=b"scram-%d" % i)
assert p.flush(30) == 0
seen = {}
for mechanism in ["SCRAM-SHA-256", "PLAIN"]:
    c = Consumer({**conf(mechanism, "carol-pw"), "group.id": "g-" + mechanism,
                  "auto.offset.reset": "earliest"})
    c.subscribe(["sasl"])
    got = []
    while len(got) < 10:
        m = c.poll(10)
        assert m is not None, "%s: nothing to read after %d records" % (mechanism, len(got))
        assert m.error() is None, m.error()
        got.append(m.value().decode())
    c.close()
    seen[mechanism] = got
errors = []
bad = Producer({**conf("SCRAM-SHA-256", "wrong"), "error_cb": errors.append})
deadline = time.time() + 30
while time.time() < deadline and not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
    bad.poll(0.2)
auth = [str(e) for e in errors if e.code() == KafkaError._AUTHENTICATION]
assert auth, "no authentication error: %s" % errors
seen["bad"] = auth[0]
print(json.dumps(seen))
"#;
    let confluent = |mode: &str| {
        let args = [
            b.kafka_addr.clone(),
            p.ca_file.display().to_string(),
            mode.to_string(),
        ];
        let python = python.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(python)
                    .arg("-c")
                    .arg(script)
                    .args(args)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    // With authentication on, carol may do nothing until an ACL allows it: librdkafka
    // reports the broker's TOPIC_AUTHORIZATION_FAILED, and no topic is created.
    let out = confluent("denied").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["denied"],
        serde_json::json!(["TOPIC_AUTHORIZATION_FAILED"])
    );
    // alice (a certificate) may not grant anything; admin grants carol her topic
    // (created on first use) and her groups (by prefix).
    let mut grant = with(&[
        "acl",
        "add",
        "--allow",
        "User:carol",
        "--operation",
        "write",
        "--operation",
        "read",
        "--operation",
        "create",
        "--topic",
        "sasl",
    ]);
    let mut as_alice = grant.clone();
    as_alice.extend(cert_flags.iter().map(|s| s.to_string()));
    let (ok, _, err) = cli(as_alice, vec![], "").await;
    assert!(
        !ok && err.contains("User:alice is not allowed Alter on Cluster"),
        "{err}"
    );
    let (ok, out, err) = cli(grant.clone(), admin_env.clone(), "").await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    grant = with(&[
        "acl",
        "add",
        "--allow",
        "User:carol",
        "--operation",
        "read",
        "--group",
        "g-",
        "--prefixed",
    ]);
    let (ok, _, err) = cli(grant, admin_env.clone(), "").await;
    assert!(ok, "{err}");
    let (ok, out, err) = cli(
        with(&["acl", "list", "--principal", "User:carol"]),
        admin_env.clone(),
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "Allow User:carol Read from * on Literal Topic \"sasl\"",
            "Allow User:carol Write from * on Literal Topic \"sasl\"",
            "Allow User:carol Create from * on Literal Topic \"sasl\"",
            "Allow User:carol Read from * on Prefixed Group \"g-\"",
        ]
    );
    let out = confluent("allowed").await;
    assert!(
        out.status.success(),
        "confluent-kafka over SASL_SSL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: Vec<String> = (0..10).map(|i| format!("scram-{i}")).collect();
    assert_eq!(seen["SCRAM-SHA-256"], serde_json::json!(want));
    assert_eq!(seen["PLAIN"], serde_json::json!(want));
    let bad = seen["bad"].as_str().unwrap();
    assert!(
        bad.contains("Authentication failed") && bad.contains("invalid credentials"),
        "{bad}"
    );
    assert!(
        !bad.contains("wrong"),
        "the password shows in the error: {bad}"
    );

    // What carol wrote reads back over gRPC with the admin's token.
    let admin = ConnectOptions {
        token: Some(admin_token.clone()),
        ..tls(&p.ca_file, None)
    };
    let client = Client::connect_with(&b.addr, &admin).await.unwrap();
    let read = read_all(&client, "sasl", 0, 0).await;
    assert_eq!(read.len(), 10);
    assert_eq!(read[9], (9, Some(b"k9".to_vec()), b"scram-9".to_vec()));
    // gRPC decides by the same ACLs: alice's certificate may not read carol's topic
    // (PERMISSION_DENIED, naming the ACL to add), nor see it listed, until allowed.
    let alice = Client::connect_with(&b.addr, &tls(&p.ca_file, Some(&p.client)))
        .await
        .unwrap();
    let e = alice
        .fetch("sasl", 0, 0, 1 << 20, 0, Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("User:alice is not allowed Read on Topic \"sasl\"")
            && e.contains("strata acl add"),
        "{e}"
    );
    assert!(alice.list_topics().await.unwrap().is_empty());
    let (ok, _, err) = cli(
        with(&[
            "acl",
            "add",
            "--allow",
            "User:alice",
            "--operation",
            "read",
            "--topic",
            "sasl",
        ]),
        admin_env.clone(),
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(read_all(&alice, "sasl", 0, 0).await, read);
    assert_eq!(alice.list_topics().await.unwrap().len(), 1);
    // Removing the binding takes the right away again.
    let (ok, out, err) = cli(
        with(&[
            "acl",
            "remove",
            "--allow",
            "User:alice",
            "--operation",
            "read",
            "--topic",
            "sasl",
        ]),
        admin_env.clone(),
        "",
    )
    .await;
    assert!(
        ok && out.starts_with("removed: Allow User:alice Read"),
        "{err}{out}"
    );
    let e = alice
        .fetch("sasl", 0, 0, 1 << 20, 0, Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("User:alice is not allowed Read"), "{e}");

    // A new token works once the file reloads; a removed one stops working.
    let (ok, ci_token, err) = cli(
        vec![
            "token".into(),
            "create".into(),
            "User:ci".into(),
            "--file".into(),
            tokens.display().to_string(),
        ],
        vec![],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let ci = ConnectOptions {
        token: Some(ci_token.trim().to_string()),
        ..tls(&p.ca_file, None)
    };
    let who = |o: ConnectOptions| {
        let addr = b.addr.clone();
        async move {
            match Client::connect_with(&addr, &o).await {
                Ok(c) => c.who_am_i().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    wait_until(
        Duration::from_secs(20),
        "the new token to be accepted",
        || {
            let w = who(ci.clone());
            async move { w.await.is_ok_and(|p| p == "User:ci") }
        },
    )
    .await;
    let kept: String = std::fs::read_to_string(&tokens)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("admin "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&tokens, kept).unwrap();
    wait_until(
        Duration::from_secs(20),
        "the removed token to be refused",
        || {
            let w = who(admin.clone());
            async move { w.await.is_err_and(|e| e.contains("token is not valid")) }
        },
    )
    .await;
    assert_eq!(who(ci.clone()).await.unwrap(), "User:ci");
    b.stop().await;
}

/// `GET /metrics` of the broker at `addr`, over plain HTTP.
async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Passwords, tokens and the S3 secret key never show in a log line, an error, a
/// metric or a topic description: a real broker process logging at debug level (every
/// crate) through a run that creates users, logs in right and wrong over SASL, calls
/// with a right and a wrong token, offloads to S3 and serves metrics; then every line
/// is searched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_an_error_or_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = crate::s3::S3Server::start(&dir.path().join("s3")).await;
    let tokens = dir.path().join("tokens");
    let (ok, admin_token, err) = cli(
        vec![
            "token".into(),
            "create".into(),
            "admin".into(),
            "--file".into(),
            tokens.display().to_string(),
        ],
        vec![],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let admin_token = admin_token.trim().to_string();
    let (password, wrong_password, wrong_token) =
        ("pw-alice-9d1f", "pw-wrong-77aa", "strata_wrong-3a9c");

    let ip = crate::cluster::random_loopback();
    let (kafka, metrics) = (format!("{ip}:19500"), format!("{ip}:19501"));
    let mut env: Vec<(String, String)> = s3
        .options()
        .into_iter()
        .map(|(k, v)| (k.to_uppercase(), v))
        .collect();
    env.push(("RUST_LOG".into(), "debug".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let store = format!("s3://{}/secrets", crate::s3::BUCKET);
    let tokens_arg = tokens.display().to_string();
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        &[
            "--kafka-listen",
            &kafka,
            "--metrics-listen",
            &metrics,
            "--object-store",
            &store,
            "--kafka-sasl-mechanisms",
            "SCRAM-SHA-256,PLAIN",
            "--super-user",
            "User:admin",
            "--grpc-token-file",
            &tokens_arg,
            "--grpc-auth-required",
        ],
        &env,
    );
    let mut shown = Vec::new(); // everything a user saw
    let base = ["--broker".to_string(), server.addr.clone()];
    let run = |args: &[&str], env: Vec<(&'static str, String)>, stdin: &str| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(base.iter().cloned());
        let stdin = stdin.to_string();
        async move { cli(v, env, &stdin).await }
    };
    let admin = vec![("STRATA_TOKEN", admin_token.clone())];
    let (ok, out, err) = run(
        &["user", "add", "alice", "--password-stdin"],
        admin.clone(),
        &format!("{password}\n"),
    )
    .await;
    assert!(ok, "{err}");
    shown.extend([out, err]);
    let (ok, out, err) = run(&["whoami", "--token", wrong_token], vec![], "").await;
    assert!(!ok && err.contains("token is not valid"), "{err}");
    shown.extend([out, err]);
    let (ok, out, err) = run(
        &["user", "add", "bob", "--password-stdin"],
        vec![("STRATA_TOKEN", wrong_token.to_string())],
        "pw\n",
    )
    .await;
    assert!(!ok, "{out}");
    shown.extend([out, err]);
    let (ok, out, err) = run(
        &[
            "topic",
            "create",
            "s",
            "--config",
            "segment.bytes=4096",
            "--config",
            "local.retention.bytes=4096",
        ],
        admin.clone(),
        "",
    )
    .await;
    assert!(ok, "{err}");
    shown.extend([out, err]);
    let (ok, out, err) = run(
        &[
            "acl",
            "add",
            "--allow",
            "User:alice",
            "--operation",
            "write",
            "--topic",
            "s",
        ],
        admin.clone(),
        "",
    )
    .await;
    assert!(ok, "{err}");
    shown.extend([out, err]);

    // Kafka clients log in right (SCRAM, PLAIN) and wrong, and produce enough to roll
    // segments that go to S3.
    let kcat = tool("kcat.sh", "kcat");
    let sasl = |mechanism: &str, password: &str| {
        [
            "-X".to_string(),
            "security.protocol=SASL_PLAINTEXT".to_string(),
            "-X".to_string(),
            format!("sasl.mechanisms={mechanism}"),
            "-X".to_string(),
            "sasl.username=alice".to_string(),
            "-X".to_string(),
            format!("sasl.password={password}"),
        ]
    };
    let lines: String = (0..300)
        .map(|i| format!("record-{i:04}-{}\n", "x".repeat(80)))
        .collect();
    for (mechanism, pw, good) in [
        ("SCRAM-SHA-256", password, true),
        ("PLAIN", password, true),
        ("SCRAM-SHA-256", wrong_password, false),
        ("PLAIN", wrong_password, false),
    ] {
        let (kcat, kafka, args, lines) = (
            kcat.clone(),
            kafka.clone(),
            sasl(mechanism, pw),
            lines.clone(),
        );
        let out = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = Command::new(&kcat)
                .args([
                    "-b",
                    &kafka,
                    "-t",
                    "s",
                    "-P",
                    "-X",
                    "message.timeout.ms=10000",
                ])
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(lines.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.success() && !err.contains("ERROR"),
            good,
            "{mechanism} {good}: {err}"
        );
        shown.push(err);
    }
    wait_until(
        Duration::from_secs(60),
        "a segment offloaded to S3",
        || async {
            let m = scrape(&metrics).await;
            m.lines()
                .find_map(|l| l.strip_prefix("strata_tier_uploads_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
        },
    )
    .await;
    shown.push(scrape(&metrics).await);
    let (ok, out, err) = run(&["topic", "describe", "s"], admin.clone(), "").await;
    assert!(ok, "{err}");
    shown.extend([out, err]);

    // Stop it (SIGTERM) so its last lines are written too.
    let pid = server.child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // Its last line is in the log file once the reader of its output has copied
    // everything.
    wait_until(
        Duration::from_secs(30),
        "the broker to log its stop",
        || std::future::ready(server.log_text().contains("broker stopped")),
    )
    .await;
    shown.extend(server.log_text().lines().map(str::to_string));
    let log_lines = shown.len();
    assert!(
        log_lines > 100,
        "a debug run logs plenty; got {log_lines} lines"
    );
    let all = shown.join("\n");
    // The run did what it is meant to: failed logins and an upload are in the log.
    assert!(
        all.contains("SASL PLAIN authentication failed"),
        "no failed PLAIN login logged"
    );
    assert!(all.contains("strata_tier_uploads_total"));
    assert!(
        all.contains(" DEBUG "),
        "the broker did not log at debug level"
    );
    for secret in [
        crate::s3::SECRET_KEY,
        &admin_token,
        password,
        wrong_password,
        wrong_token,
    ] {
        let hits: Vec<&str> = all.lines().filter(|l| l.contains(secret)).take(3).collect();
        assert!(hits.is_empty(), "{secret:?} shows in: {hits:#?}");
    }
}

/// Quotas as Kafka clients see them: confluent-kafka's throttle callback reports the
/// broker's throttle time for producing and for fetching over the rate, while every
/// record still arrives; a gRPC produce over the rate is held back by what its answer
/// says; and one address holding `max_connections_per_ip` gRPC connections gets no
/// more until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_throttle_kafka_and_grpc_clients_and_connections_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(dir.path(), |c| {
        c.quota_producer_byte_rate = 40_000;
        c.quota_consumer_byte_rate = 40_000;
        c.max_connections_per_ip = 6;
    })
    .await;
    let python = tool("kafka-python-env.sh", "the Python Kafka clients and DuckDB");
    let script = r#"
import json, sys
from confluent_kafka import Consumer, Producer
bootstrap = sys.argv[1]
throttles = {"produce": [], "fetch": []}
def on(kind):
    return lambda event: throttles[kind].append(event.throttle_time)
p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
              "throttle_cb": on("produce")})
for i in range(40):
    p.produce("quota", value=(b"%03d" % i) + b"x" * 5000)
    p.poll(0)
assert p.flush(60) == 0
p.poll(0)
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "q",
              "auto.offset.reset": "earliest",
              "max.partition.fetch.bytes": 100000, "throttle_cb": on("fetch")})
c.subscribe(["quota"])
got = []
while len(got) < 40:
    m = c.poll(10)
    assert m is not None, "nothing after %d records" % len(got)
    assert m.error() is None, m.error()
    got.append(m.value()[:3].decode())
c.poll(0)
c.close()
print(json.dumps({"got": got, "throttles": throttles}))
"#;
    let bootstrap = b.kafka_addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg("-c")
            .arg(script)
            .arg(bootstrap)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "confluent-kafka under quotas: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: Vec<String> = (0..40).map(|i| format!("{i:03}")).collect();
    assert_eq!(
        seen["got"],
        serde_json::json!(want),
        "every record, in order"
    );
    for kind in ["produce", "fetch"] {
        let t = seen["throttles"][kind].as_array().unwrap();
        assert!(
            t.iter().any(|secs| secs.as_f64().unwrap() > 0.0),
            "{kind}: librdkafka saw no throttle time: {t:?}"
        );
    }
    let m = b.broker.metrics();
    assert!(m.quota_produce_throttled.get() > 0 && m.quota_fetch_throttled.get() > 0);

    // gRPC: 100 kB at once, 2.5 times the rate, is held back as long as it says.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", b.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = strata_proto::v1::strata_client::StrataClient::new(channel);
    let produce = |n: usize| strata_proto::v1::ProduceRequest {
        topic: "quota".into(),
        records: vec![strata_proto::v1::Record {
            value: Some(vec![b'y'; n].into()),
            ..Default::default()
        }],
        acks: strata_proto::v1::Acks::Leader as i32,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let r = raw.produce(produce(100_000)).await.unwrap().into_inner();
    let took = started.elapsed();
    assert!(r.throttle_time_ms > 0, "{r:?}");
    assert!(
        took >= Duration::from_millis(r.throttle_time_ms as u64),
        "answered after {took:?}, throttle {} ms",
        r.throttle_time_ms
    );

    // Six connections from 127.0.0.1 are let in (the one above is one); a seventh is
    // closed at once, and the refusal counted.
    let mut open = Vec::new();
    for _ in 0..5 {
        let c = Client::connect(&b.addr).await.unwrap();
        c.who_am_i().await.unwrap();
        open.push(c);
    }
    let refused_before = m.connections_refused.get();
    let extra = match Client::connect(&b.addr).await {
        Ok(c) => c.who_am_i().await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(extra.is_err(), "a seventh connection was let in");
    assert!(m.connections_refused.get() > refused_before);
    // One closes: a new one gets in.
    drop(open.pop());
    wait_until(Duration::from_secs(20), "a freed place to be taken", || {
        let addr = b.addr.clone();
        async move {
            match Client::connect(&addr).await {
                Ok(c) => c.who_am_i().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    drop(raw);
    b.stop().await;
}
