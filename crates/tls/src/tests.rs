use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_stream::StreamExt;

use crate::testing::{LeafFiles, TestCa};
use crate::*;

struct Setup {
    dir: tempfile::TempDir,
    ca: TestCa,
    server: LeafFiles,
    ca_file: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test CA");
    let server = ca
        .leaf("broker", &["localhost", "127.0.0.1"])
        .write(dir.path(), "server");
    let ca_file = ca.write(dir.path(), "ca");
    Setup {
        dir,
        ca,
        server,
        ca_file,
    }
}

fn files(s: &Setup, auth: ClientAuth) -> ServerFiles {
    ServerFiles {
        cert: s.server.cert.clone(),
        key: s.server.key.clone(),
        client_ca: Some(s.ca_file.clone()),
        client_auth: auth,
    }
}

/// A TLS client trusting `ca`, presenting `identity` if given.
fn connector(ca: &Path, identity: Option<&LeafFiles>) -> TlsConnector {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(root_store(ca).unwrap());
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                load_certs(&id.cert, "certificate").unwrap(),
                load_key(&id.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// Serves `tls` on a fresh port: every accepted connection echoes one line prefixed
/// with whether the peer presented a certificate.
async fn echo_server(tls: Arc<ServerTls>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut conns = incoming(listener, Some(tls), "test");
    tokio::spawn(async move {
        while let Some(Ok(mut conn)) = conns.next().await {
            tokio::spawn(async move {
                let peer = conn.peer();
                let mut buf = [0u8; 64];
                loop {
                    let n = match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let tag: &[u8] = if peer.certs.is_some() { b"C" } else { b"-" };
                    if conn.write_all(&[tag, &buf[..n]].concat()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `msg` over a connection and reads the echo; an error if the handshake or
/// exchange fails.
async fn roundtrip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    msg: &[u8],
) -> std::io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len() + 1];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn connect(
    addr: SocketAddr,
    c: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let mut s = c
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    // TLS 1.3 reports a refused client certificate only on the first read.
    roundtrip(&mut s, b"hello").await?;
    Ok(s)
}

#[tokio::test]
async fn required_client_auth_admits_only_certificates_of_its_ca() {
    let s = setup();
    let tls = ServerTls::load(files(&s, ClientAuth::Required), &[]).unwrap();
    let addr = echo_server(tls.clone()).await;

    let client = s.ca.leaf("alice", &[]).write(s.dir.path(), "alice");
    let mut ok = connect(addr, &connector(&s.ca_file, Some(&client)))
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut ok, b"x").await.unwrap(), b"Cx");

    let refused = connect(addr, &connector(&s.ca_file, None)).await;
    assert!(refused.is_err(), "a client without a certificate got in");

    let stranger_ca = TestCa::new("other CA");
    let stranger = stranger_ca
        .leaf("mallory", &[])
        .write(s.dir.path(), "mallory");
    let refused = connect(addr, &connector(&s.ca_file, Some(&stranger))).await;
    assert!(refused.is_err(), "a certificate of another CA got in");

    // And the client side refuses a server its CA did not sign.
    let other_ca_file = stranger_ca.write(s.dir.path(), "other-ca");
    let refused = connect(addr, &connector(&other_ca_file, Some(&client))).await;
    assert!(
        refused.is_err(),
        "the client trusted a server of another CA"
    );
    // Each refusal is counted where operators see it (the server's side of a handshake
    // may end just after the client's).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tls
        .handshake_failures
        .load(std::sync::atomic::Ordering::Relaxed)
        < 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            metrics_text(&[("test", &tls)])
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        metrics_text(&[("test", &tls)])
            .contains("strata_tls_handshake_failures_total{listener=\"test\"} 3\n")
    );
}

#[tokio::test]
async fn requested_client_auth_admits_clients_without_a_certificate() {
    let s = setup();
    let tls = ServerTls::load(files(&s, ClientAuth::Requested), &[]).unwrap();
    let addr = echo_server(tls).await;
    let mut anonymous = connect(addr, &connector(&s.ca_file, None)).await.unwrap();
    assert_eq!(roundtrip(&mut anonymous, b"y").await.unwrap(), b"-y");
    let stranger = TestCa::new("other CA")
        .leaf("mallory", &[])
        .write(s.dir.path(), "mallory");
    assert!(
        connect(addr, &connector(&s.ca_file, Some(&stranger)))
            .await
            .is_err(),
        "a presented certificate of another CA must still be refused"
    );
}

#[tokio::test]
async fn a_plain_text_client_gets_no_answer_from_a_tls_listener() {
    let s = setup();
    let tls = ServerTls::load(files(&s, ClientAuth::None), &[]).unwrap();
    let addr = echo_server(tls).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The server ends the connection (after a TLS alert at most): no echo.
    let _ = tcp.read_to_end(&mut buf).await;
    assert!(
        !buf.windows(3).any(|w| w == b"PRI"),
        "plain text was echoed: {buf:?}"
    );
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_keeps_open_connections() {
    let s = setup();
    let tls = ServerTls::load(files(&s, ClientAuth::Required), &[]).unwrap();
    let addr = echo_server(tls.clone()).await;
    let client = s.ca.leaf("alice", &[]).write(s.dir.path(), "alice");
    let mut before = connect(addr, &connector(&s.ca_file, Some(&client)))
        .await
        .unwrap();
    assert!(!tls.changed());

    // Rotate to a new CA: new server certificate, new client CA.
    let new_ca = TestCa::new("new CA");
    new_ca
        .leaf("broker", &["localhost"])
        .write(s.dir.path(), "server");
    let new_ca_file = new_ca.write(s.dir.path(), "ca");
    let new_client = new_ca.leaf("alice", &[]).write(s.dir.path(), "alice2");
    assert!(tls.changed(), "rewritten files are noticed");
    tls.reload().unwrap();
    assert!(!tls.changed());

    let mut after = connect(addr, &connector(&new_ca_file, Some(&new_client)))
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut after, b"n").await.unwrap(), b"Cn");
    let old_ca_file = s.dir.path().join("old-ca.pem");
    std::fs::write(&old_ca_file, s.ca.pem()).unwrap();
    assert!(
        connect(addr, &connector(&old_ca_file, Some(&client)))
            .await
            .is_err(),
        "a new handshake still got the old certificate"
    );
    // The connection made before the rotation goes on.
    assert_eq!(roundtrip(&mut before, b"o").await.unwrap(), b"Co");
}

#[tokio::test]
async fn a_failed_reload_keeps_serving_the_previous_certificate() {
    let s = setup();
    let tls = ServerTls::load(files(&s, ClientAuth::None), &[]).unwrap();
    let addr = echo_server(tls.clone()).await;
    // A key that belongs to another certificate.
    let other = s.ca.leaf("other", &[]);
    std::fs::write(&s.server.key, &other.key_pem).unwrap();
    let e = tls.reload().unwrap_err().to_string();
    assert!(e.contains("does not fit the certificate"), "{e}");
    assert_eq!(
        tls.reload_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let mut c = connect(addr, &connector(&s.ca_file, None)).await.unwrap();
    assert_eq!(roundtrip(&mut c, b"z").await.unwrap(), b"-z");
}

#[test]
fn bad_files_are_named_with_what_is_wrong() {
    let s = setup();
    let missing = ServerFiles {
        cert: s.dir.path().join("nope.pem"),
        ..files(&s, ClientAuth::None)
    };
    let e = server_config(&missing, &[]).unwrap_err().to_string();
    assert!(
        e.contains("cannot read the TLS certificate") && e.contains("nope.pem"),
        "{e}"
    );

    let not_pem = s.dir.path().join("junk.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let junk = ServerFiles {
        cert: not_pem.clone(),
        ..files(&s, ClientAuth::None)
    };
    let e = server_config(&junk, &[]).unwrap_err().to_string();
    assert!(e.contains("junk.pem") && e.contains("no PEM"), "{e}");

    let no_key = ServerFiles {
        key: s.server.cert.clone(),
        ..files(&s, ClientAuth::None)
    };
    let e = server_config(&no_key, &[]).unwrap_err().to_string();
    assert!(e.contains("private key") && e.contains("server.pem"), "{e}");

    let no_ca = ServerFiles {
        client_ca: None,
        ..files(&s, ClientAuth::Required)
    };
    let e = server_config(&no_ca, &[]).unwrap_err().to_string();
    assert!(e.contains("tls_ca_file"), "{e}");

    assert!(
        "maybe"
            .parse::<ClientAuth>()
            .unwrap_err()
            .contains("none, requested, required")
    );
}
