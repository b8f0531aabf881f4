//! moto's S3 server as a child process: an S3 implementation we did not write whose
//! conditional writes are atomic (it serves one request at a time), for tests where a
//! zombie's conditional PUT may race its successor's. Installed into a virtualenv by
//! `tests/tools/moto-env.sh`; run by `tests/tools/moto-server.py`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BUCKET: &str = "strata";

pub struct MotoServer {
    child: Child,
    pub addr: String,
}

impl MotoServer {
    /// Starts moto on an ephemeral port of `host` (an address of this machine), with
    /// [`BUCKET`] created.
    pub fn start(host: &str) -> Self {
        let python = crate::helpers::tool("moto-env.sh", "moto");
        let server = format!(
            "{}/../../tests/tools/moto-server.py",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut child = Command::new(python)
            .args([&server, host, BUCKET])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts moto");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("moto listening on ")
            .unwrap_or_else(|| panic!("moto did not start: {line:?}"))
            .to_string();
        Self { child, addr }
    }

    /// Broker settings (object_store's keys) that point at this server.
    pub fn options(&self) -> BTreeMap<String, String> {
        crate::s3::S3Server::options_for(&format!("http://{}", self.addr))
    }

    /// The stored manifest of partition 0 of `topic` under `prefix`, if there is one.
    pub async fn manifest(&self, prefix: &str, topic: &str) -> Option<serde_json::Value> {
        use object_store::ObjectStoreExt;
        let bucket =
            strata_tier::store::open_with(&format!("s3://{BUCKET}/{prefix}"), &self.options())
                .unwrap();
        let keys = bucket.list_keys(&bucket.topic_name_dir(topic)).await.ok()?;
        let key = keys
            .iter()
            .find(|k| k.as_ref().ends_with("partition=0/_manifest.json"))?;
        let bytes = bucket.store.get(key).await.ok()?.bytes().await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Whether `key` (relative to the bucket) is stored.
    pub async fn exists(&self, key: &str) -> bool {
        use object_store::ObjectStoreExt;
        let bucket =
            strata_tier::store::open_with(&format!("s3://{BUCKET}"), &self.options()).unwrap();
        bucket.store.head(&key.into()).await.is_ok()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
