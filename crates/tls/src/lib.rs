//! TLS for Strata's listeners: a broker's certificate and key, and the CA its clients'
//! certificates must chain to, loaded from PEM files ([`ServerTls`]); the files read
//! again on SIGHUP or when they change, without a restart ([`ServerTls::watch`]); and
//! the connections a listener accepts, plain or TLS ([`Conn`], [`incoming`]).
//!
//! Invariants:
//! - A reload that fails (a file missing, a key that does not match its certificate)
//!   changes nothing: the listener keeps the last configuration that loaded, and the
//!   failure is logged once per change of the files.
//! - A reload touches only handshakes that start after it. Connections already open keep
//!   the session they negotiated.
//! - A handshake runs on its own task with a deadline: a client that connects and says
//!   nothing holds neither the accept loop nor other clients.
//!
//! The crypto is rustls with aws-lc-rs; nothing here is hand-written crypto.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;

#[cfg(feature = "testing")]
pub mod testing;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes a listener runs at once; a connection past that is closed at once, so a
/// flood of peers that connect and say nothing holds bounded memory.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;
/// How often the files are checked for a change (SIGHUP reloads at once).
pub const DEFAULT_RELOAD_POLL: Duration = Duration::from_secs(10);

/// Whether a listener asks its clients for a certificate (Kafka's `ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client may present one; if it does, it must chain to the client CA.
    Requested,
    /// Every client must present a certificate that chains to the client CA.
    Required,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "requested" => Ok(Self::Requested),
            "required" => Ok(Self::Required),
            other => Err(format!(
                "tls_client_auth {other:?} is not one of none, requested, required"
            )),
        }
    }
}

/// Where a listener's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// This broker's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA (PEM, one or more certificates) client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// Why TLS material could not be used. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {}: {reason}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS {what} {}: {reason}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
}

fn pem_error(what: &'static str, path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => TlsError::Read {
            what,
            path: path.to_path_buf(),
            reason: io.to_string(),
        },
        E::NoItemsFound => TlsError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: format!("no PEM {what} found in it (is it the right file?)"),
        },
        other => TlsError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: format!("not valid PEM: {other}"),
        },
    }
}

/// Every certificate in a PEM file; an error if it holds none.
pub fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            what,
            path: path.to_path_buf(),
            reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error("private key", path, e))
}

/// The one crypto provider every TLS configuration here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A root store holding every certificate of a CA file.
pub fn root_store(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path, "CA certificate")? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            what: "CA certificate",
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// Builds a server configuration from the files as they are now.
pub fn server_config(
    files: &ServerFiles,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    let certs = load_certs(&files.cert, "certificate")?;
    let key = load_key(&files.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(format!("TLS protocol versions: {e}")))?;
    let builder = match (&files.client_ca, files.client_auth) {
        (_, ClientAuth::None) => builder.with_no_client_auth(),
        (None, auth) => {
            return Err(TlsError::Config(format!(
                "tls_client_auth is {auth:?} but no client CA is set: set tls_ca_file to the CA that signs client certificates"
            )));
        }
        (Some(ca), auth) => {
            let roots = Arc::new(root_store(ca)?);
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            if auth == ClientAuth::Requested {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| TlsError::Invalid {
                what: "CA certificate",
                path: ca.clone(),
                reason: format!("cannot verify clients with it: {e}"),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Invalid {
            what: "private key",
            path: files.key.clone(),
            reason: format!(
                "does not fit the certificate {} ({e}): check that the two files belong together",
                files.cert.display()
            ),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// What the files looked like when last loaded: a change to any of them triggers a
/// reload.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(files: &ServerFiles) -> Stamp {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
    .collect()
}

/// A listener's TLS configuration, reloadable while the listener runs.
pub struct ServerTls {
    files: ServerFiles,
    alpn: Vec<&'static [u8]>,
    current: RwLock<Arc<rustls::ServerConfig>>,
    loaded: Mutex<Stamp>,
    /// Room for handshakes in progress (see [`MAX_PENDING_HANDSHAKES`]).
    pending: tokio::sync::Semaphore,
    /// Reloads that took effect, and reloads that failed (the old configuration stayed).
    pub reloads: std::sync::atomic::AtomicU64,
    pub reload_failures: std::sync::atomic::AtomicU64,
    /// Handshakes that failed: plain-text clients, untrusted certificates, time-outs.
    pub handshake_failures: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files; `alpn` lists the protocols the listener speaks (`h2` for gRPC).
    pub fn load(files: ServerFiles, alpn: &[&'static [u8]]) -> Result<Arc<Self>, TlsError> {
        let loaded = stamp(&files);
        let config = server_config(&files, alpn)?;
        Ok(Arc::new(Self {
            files,
            alpn: alpn.to_vec(),
            current: RwLock::new(Arc::new(config)),
            loaded: Mutex::new(loaded),
            pending: tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES),
            reloads: Default::default(),
            reload_failures: Default::default(),
            handshake_failures: Default::default(),
        }))
    }

    pub fn files(&self) -> &ServerFiles {
        &self.files
    }

    /// The acceptor for the next handshake, with the configuration loaded last.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Reads the files again. On an error the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        use std::sync::atomic::Ordering::Relaxed;
        *self.loaded.lock() = stamp(&self.files);
        match server_config(&self.files, &self.alpn) {
            Ok(config) => {
                *self.current.write() = Arc::new(config);
                self.reloads.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    /// Whether a file changed since it was last read.
    pub fn changed(&self) -> bool {
        stamp(&self.files) != *self.loaded.lock()
    }

    /// Reloads on SIGHUP and whenever a file changes (checked every `poll`), until `stop`
    /// changes.
    pub async fn watch(
        self: Arc<Self>,
        poll: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let why = tokio::select! {
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => "SIGHUP",
                _ = tokio::time::sleep(poll) => {
                    if !self.changed() {
                        continue;
                    }
                    "the files changed"
                }
                _ = stop.changed() => return,
            };
            match self.reload() {
                Ok(()) => tracing::info!(
                    cert = %self.files.cert.display(),
                    reason = why,
                    "TLS certificate reloaded; new connections use it"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    reason = why,
                    "TLS files could not be loaded; still serving the previous certificate"
                ),
            }
        }
    }
}

/// A connection a listener accepted: plain TCP, or TLS over TCP.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Who is on the other end of a [`Conn`]: gRPC handlers find it in the request's
/// extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: Option<SocketAddr>,
    /// The client's certificate chain (leaf first), when it presented one over TLS.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    pub tls: bool,
}

impl Conn {
    pub fn peer(&self) -> PeerInfo {
        match self {
            Conn::Plain(s) => PeerInfo {
                addr: s.peer_addr().ok(),
                certs: None,
                tls: false,
            },
            Conn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                PeerInfo {
                    addr: tcp.peer_addr().ok(),
                    certs: session.peer_certificates().map(|c| Arc::new(c.to_vec())),
                    tls: true,
                }
            }
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Completes the TLS handshake on an accepted stream (when `tls` is set), within
/// [`HANDSHAKE_TIMEOUT`].
pub async fn handshake(stream: TcpStream, tls: Option<&ServerTls>) -> io::Result<Conn> {
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Conn::Plain(stream));
    };
    let Ok(_room) = tls.pending.try_acquire() else {
        return Err(io::Error::other(format!(
            "{MAX_PENDING_HANDSHAKES} TLS handshakes already in progress; connection closed"
        )));
    };
    let done = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
        Ok(Ok(s)) => return Ok(Conn::Tls(Box::new(s))),
        Ok(Err(e)) => e,
        Err(_) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
        ),
    };
    tls.handshake_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Err(done)
}

/// Prometheus text for the TLS counters of every listener, labelled by its name.
pub fn metrics_text(listeners: &[(&str, &ServerTls)]) -> String {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    type Counter = (&'static str, &'static str, fn(&ServerTls) -> u64);
    let counters: [Counter; 3] = [
        (
            "strata_tls_handshake_failures_total",
            "TLS handshakes that failed (plain-text clients, untrusted certificates, time-outs).",
            |t| t.handshake_failures.load(Relaxed),
        ),
        (
            "strata_tls_reloads_total",
            "TLS certificate reloads that took effect.",
            |t| t.reloads.load(Relaxed),
        ),
        (
            "strata_tls_reload_failures_total",
            "TLS reloads that failed (the previous certificate stayed).",
            |t| t.reload_failures.load(Relaxed),
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (listener, tls) in listeners {
            let _ = writeln!(out, "{name}{{listener=\"{listener}\"}} {}", value(tls));
        }
    }
    out
}

/// The connections `listener` accepts, handshaken, as a stream for a server to take:
/// each handshake runs on its own task, and one that fails is logged (with the peer and
/// the reason) and dropped. The accept loop ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    name: &'static str,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let limit = ConnectionLimit::new(0);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, name, limit, tx, |c: Limited| {
        c.conn
    }));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// [`incoming`], refusing a connection from an address that already holds
/// `limit`'s maximum (closed at once, before any handshake).
pub fn incoming_limited(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    name: &'static str,
    limit: Arc<ConnectionLimit>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Limited>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, name, limit, tx, |c| c));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn accept_loop<T: Send + 'static>(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    name: &'static str,
    limit: Arc<ConnectionLimit>,
    tx: tokio::sync::mpsc::Sender<io::Result<T>>,
    wrap: fn(Limited) -> T,
) {
    {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(listener = name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let Some(permit) = limit.try_acquire(peer.ip()) else {
                tracing::debug!(listener = name, %peer, max = limit.max(), "connection refused: too many from this address");
                continue;
            };
            let Some(tls) = tls.clone() else {
                // Plain text: nothing to wait for; the server takes it when it has room.
                let _ = stream.set_nodelay(true);
                let conn = Limited {
                    conn: Conn::Plain(stream),
                    _permit: permit,
                };
                if tx.send(Ok(wrap(conn))).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                match handshake(stream, Some(&tls)).await {
                    Ok(conn) => {
                        let conn = Limited {
                            conn,
                            _permit: permit,
                        };
                        let _ = tx.send(Ok(wrap(conn))).await;
                    }
                    Err(e) => tracing::info!(
                        listener = name,
                        %peer,
                        error = %e,
                        "TLS handshake failed (a plain-text client, or a certificate this listener does not trust?)"
                    ),
                }
            });
        }
    }
}

/// How many connections each client address may hold open on a listener (Kafka's
/// `max.connections.per.ip`); 0 is no limit.
pub struct ConnectionLimit {
    max: usize,
    open: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    refused: std::sync::atomic::AtomicU64,
    on_refuse: Option<Box<dyn Fn() + Send + Sync>>,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Default::default(),
            refused: Default::default(),
            on_refuse: None,
        })
    }

    /// A limit that calls `on_refuse` for each connection it refuses (a metric).
    pub fn counted(max: usize, on_refuse: impl Fn() + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Default::default(),
            refused: Default::default(),
            on_refuse: Some(Box::new(on_refuse)),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A place for one more connection from `ip`, held until the permit is dropped;
    /// `None` when `ip` already holds the maximum.
    pub fn try_acquire(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<ConnectionPermit> {
        if self.max > 0 {
            let mut open = self.open.lock();
            let n = open.entry(ip).or_default();
            if *n >= self.max {
                self.refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(f) = &self.on_refuse {
                    f();
                }
                return None;
            }
            *n += 1;
        }
        Some(ConnectionPermit {
            limit: self.clone(),
            ip,
        })
    }
}

/// One connection's place in a [`ConnectionLimit`].
pub struct ConnectionPermit {
    limit: Arc<ConnectionLimit>,
    ip: std::net::IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if self.limit.max == 0 {
            return;
        }
        let mut open = self.limit.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // Addresses come and go: the map holds only those with connections.
                open.remove(&self.ip);
            }
        }
    }
}

/// A [`Conn`] holding its place in a [`ConnectionLimit`] until it closes.
pub struct Limited {
    pub conn: Conn,
    _permit: ConnectionPermit,
}

impl tonic::transport::server::Connected for Limited {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.conn.peer()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }
    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }
    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
