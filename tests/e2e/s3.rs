//! An S3-compatible HTTP server inside the test process (s3s + s3s-fs, SigV4 checked),
//! which a test can stop and start again on the same port to simulate an outage.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub const ACCESS_KEY: &str = "strata-test";
pub const SECRET_KEY: &str = "strata-test-secret";
pub const BUCKET: &str = "strata";

pub struct S3Server {
    pub addr: SocketAddr,
    root: PathBuf,
    tasks: JoinSet<()>,
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
        };
        s.serve(listener);
        s
    }

    fn serve(&mut self, listener: TcpListener) {
        let fs = s3s_fs::FileSystem::new(&self.root).unwrap();
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
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
