//! An S3-compatible HTTP server inside the test process (s3s + s3s-fs, SigV4 checked),
//! which a test can stop and start again on the same port to simulate an outage, and
//! make answer `503 SlowDown`, as S3 does under load, to a share of its requests.
//!
//! Layout: a front service ([`Front`]) takes every HTTP request first. It tells the
//! request's kind ([`S3Op`]) from its method and query, and either answers it `503`
//! with S3's XML error body itself or hands it to s3s. What it answers is decided by a
//! few atomics that the test sets through [`S3Server::slow_down`] and friends.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::service::TowerToHyperService;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{HttpError, HttpRequest, HttpResponse};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

// tower's `Service` and http-body's `Body` traits, as tonic re-exports them: this crate
// depends on neither tower nor hyper directly.
use tonic::codegen::{Body, Service};

pub const ACCESS_KEY: &str = "strata-test";
pub const SECRET_KEY: &str = "strata-test-secret";
pub const BUCKET: &str = "strata";

/// The body S3 sends with `503 SlowDown`.
pub const SLOW_DOWN_BODY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

/// A kind of S3 request, as the server tells them apart by method and query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum S3Op {
    /// `GET` on the bucket (ListObjectsV2).
    List,
    /// `GET` of an object, whole or a range.
    Get,
    Head,
    /// `PUT` of a whole object.
    Put,
    /// `POST ?uploads`.
    CreateMultipart,
    /// `PUT ?partNumber=..&uploadId=..`.
    UploadPart,
    /// `POST ?uploadId=..`.
    CompleteMultipart,
    /// `DELETE ?uploadId=..`.
    AbortMultipart,
    /// `DELETE` of one object.
    Delete,
    /// `POST ?delete` (DeleteObjects).
    DeleteMany,
    Other,
}

impl S3Op {
    pub const ALL: [S3Op; 11] = [
        S3Op::List,
        S3Op::Get,
        S3Op::Head,
        S3Op::Put,
        S3Op::CreateMultipart,
        S3Op::UploadPart,
        S3Op::CompleteMultipart,
        S3Op::AbortMultipart,
        S3Op::Delete,
        S3Op::DeleteMany,
        S3Op::Other,
    ];

    /// The kind of a path-style request (`/<bucket>[/<key>]?<query>`).
    fn of(method: &str, path: &str, query: &str) -> Self {
        let has = |name: &str| {
            query
                .split('&')
                .any(|p| p == name || p.starts_with(&format!("{name}=")))
        };
        let on_bucket = !path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .contains('/');
        match method {
            "GET" if on_bucket => S3Op::List,
            "GET" => S3Op::Get,
            "HEAD" => S3Op::Head,
            "PUT" if has("partNumber") => S3Op::UploadPart,
            "PUT" => S3Op::Put,
            "POST" if has("uploads") => S3Op::CreateMultipart,
            "POST" if has("uploadId") => S3Op::CompleteMultipart,
            "POST" if has("delete") => S3Op::DeleteMany,
            "DELETE" if has("uploadId") => S3Op::AbortMultipart,
            "DELETE" => S3Op::Delete,
            _ => S3Op::Other,
        }
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// Which requests are answered `503 SlowDown`, and how many were.
#[derive(Default)]
struct Throttle {
    /// The kinds the rule applies to, one bit per [`S3Op`].
    ops: AtomicU32,
    /// Requests of those kinds still to answer 503, whatever `percent` says.
    next: AtomicU64,
    /// Percent of the rest answered 503.
    percent: AtomicU32,
    /// Requests of each kind that `percent` has judged since the rule was set.
    judged: [AtomicU64; S3Op::ALL.len()],
    /// 503s answered, by kind, since the server started.
    answered: [AtomicU64; S3Op::ALL.len()],
}

impl Throttle {
    fn set(&self, ops: &[S3Op], next: u64, percent: u32) {
        assert!(percent <= 100, "a percentage: {percent}");
        self.ops.store(0, Ordering::SeqCst);
        self.next.store(next, Ordering::SeqCst);
        self.percent.store(percent, Ordering::SeqCst);
        for j in &self.judged {
            j.store(0, Ordering::SeqCst);
        }
        let bits = ops.iter().fold(0, |b, op| b | op.bit());
        self.ops.store(bits, Ordering::SeqCst);
    }

    /// Whether to answer this request 503. Spread evenly and without randomness: the
    /// k-th request of a kind (from 0) is answered 503 when `k * percent mod 100` is
    /// below `percent`, so each kind's first one is, and 50 alternates.
    fn slow_down(&self, op: S3Op) -> bool {
        if self.ops.load(Ordering::SeqCst) & op.bit() == 0 {
            return false;
        }
        self.next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
            || {
                let percent = u64::from(self.percent.load(Ordering::SeqCst));
                let k = self.judged[op as usize].fetch_add(1, Ordering::SeqCst);
                k * percent % 100 < percent
            }
    }
}

/// The HTTP service in front of s3s (see the module docs).
#[derive(Clone)]
struct Front {
    s3: S3Service,
    throttle: Arc<Throttle>,
}

impl<B> Service<HttpRequest<B>> for Front
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), HttpError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: HttpRequest<B>) -> Self::Future {
        let uri = req.uri();
        let op = S3Op::of(req.method().as_str(), uri.path(), uri.query().unwrap_or(""));
        if !self.throttle.slow_down(op) {
            return Service::call(&mut self.s3, req);
        }
        let throttle = self.throttle.clone();
        Box::pin(async move {
            // The request is read to its end first, as S3 does, so the client hears the
            // answer rather than a connection reset under a body it is still sending.
            let mut body = std::pin::pin!(req.into_body());
            while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                if frame.is_err() {
                    break;
                }
            }
            // Counted here, where the answer is made, so a count is a 503 sent.
            throttle.answered[op as usize].fetch_add(1, Ordering::SeqCst);
            Ok(HttpResponse::<()>::builder()
                .status(503)
                .header("content-type", "application/xml")
                .body(s3s::Body::from(SLOW_DOWN_BODY.to_string()))
                .expect("a valid response"))
        })
    }
}

pub struct S3Server {
    pub addr: SocketAddr,
    root: PathBuf,
    tasks: JoinSet<()>,
    throttle: Arc<Throttle>,
}

impl S3Server {
    /// Serves `root` (one directory per bucket) on an ephemeral port; creates `BUCKET`.
    pub async fn start(root: &Path) -> Self {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = Self {
            addr,
            root: root.to_path_buf(),
            tasks: JoinSet::new(),
            throttle: Arc::default(),
        };
        s.serve(listener);
        s
    }

    fn serve(&mut self, listener: TcpListener) {
        let fs = s3s_fs::FileSystem::new(&self.root).unwrap();
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = TowerToHyperService::new(Front {
            s3: b.build(),
            throttle: self.throttle.clone(),
        });
        self.tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let service = service.clone();
                conns.spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    /// Stops answering: the listener and every open connection go away.
    pub async fn stop(&mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Serves again on the same address.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// From now on answers `percent` % of the requests of each kind in `ops` with
    /// `503 SlowDown` (spread evenly, each kind's first request among them; 100: all),
    /// serving the rest.
    pub fn slow_down(&self, percent: u32, ops: &[S3Op]) {
        self.throttle.set(ops, 0, percent);
    }

    /// Answers the next `n` requests of the kinds in `ops` with `503 SlowDown`, then
    /// serves every request again.
    pub fn slow_down_next(&self, n: u64, ops: &[S3Op]) {
        self.throttle.set(ops, n, 0);
    }

    /// Serves every request again.
    pub fn serve_all(&self) {
        self.throttle.set(&[], 0, 0);
    }

    /// How many requests of each kind were answered `503 SlowDown` since the server
    /// started (kinds with none left out).
    pub fn slowed_down(&self) -> BTreeMap<S3Op, u64> {
        S3Op::ALL
            .into_iter()
            .map(|op| {
                (
                    op,
                    self.throttle.answered[op as usize].load(Ordering::SeqCst),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Broker settings that point at this server.
    pub fn options(&self) -> BTreeMap<String, String> {
        Self::options_for(&format!("http://{}", self.addr))
    }

    /// The options for this test server's credentials at `endpoint`.
    pub fn options_for(endpoint: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("aws_endpoint".to_string(), endpoint.to_string()),
            ("aws_access_key_id".to_string(), ACCESS_KEY.to_string()),
            ("aws_secret_access_key".to_string(), SECRET_KEY.to_string()),
            ("aws_region".to_string(), "us-east-1".to_string()),
            ("aws_allow_http".to_string(), "true".to_string()),
            (
                "aws_virtual_hosted_style_request".to_string(),
                "false".to_string(),
            ),
        ])
    }

    /// Every object key in the bucket (files under its directory).
    pub fn keys(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        let base = self.root.join(BUCKET);
        walk(&base, &base, &mut out);
        out.retain(|k| !k.starts_with(".s3s"));
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}
