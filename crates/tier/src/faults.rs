//! A fault-injecting `ObjectStore` wrapper: on command, chosen operations fail, answer
//! 503 SlowDown, stall until released, or do their work and lose the answer (a
//! connection dropped after the server acted).
//!
//! Every [`crate::store::Bucket`] has one between the counting wrapper and the real
//! store, disarmed (one atomic load per request). Tests arm it through
//! [`Faults::inject`] to make the broker meet a real failure through the same seam S3
//! would give it, instead of setting a subsystem's state by hand.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use parking_lot::Mutex;

/// The kind of request a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `get`, ranged gets and `head`.
    Get,
    /// `put` and the start of a multipart upload.
    Put,
    Delete,
    List,
    Copy,
}

/// What happens to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails at once, nothing done.
    Fail,
    /// Fails at once as a throttled S3 does (503 SlowDown), nothing done.
    SlowDown,
    /// Waits, without an answer, until the fault is cleared; then goes through.
    Stall,
    /// Does its work, then fails: the caller cannot tell that it took effect.
    LoseAnswer,
}

struct Rule {
    op: Op,
    key_contains: String,
    fault: Fault,
    /// How many more requests it applies to; `None`: until cleared.
    remaining: Option<u32>,
}

/// The faults armed on one store.
#[derive(Default)]
pub struct Faults {
    armed: AtomicBool,
    rules: Mutex<Vec<Rule>>,
    released: tokio::sync::Notify,
    generation: AtomicU64,
    hits: AtomicU64,
    /// Puts ignore their conditions (If-Match, If-None-Match), as some S3-compatible
    /// stores do.
    ignore_conditions: AtomicBool,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("rules", &self.rules.lock().len())
            .field("hits", &self.hits())
            .finish()
    }
}

impl Faults {
    /// Arms `fault` for requests of kind `op` whose key (or list prefix) contains
    /// `key_contains` (empty: every key), for the next `times` of them (`None`: until
    /// [`Faults::clear`]).
    pub fn inject(&self, op: Op, key_contains: &str, fault: Fault, times: Option<u32>) {
        assert_ne!(times, Some(0), "a fault for no request at all");
        self.rules.lock().push(Rule {
            op,
            key_contains: key_contains.to_string(),
            fault,
            remaining: times,
        });
        self.armed.store(true, Ordering::Release);
    }

    /// Disarms every fault and lets stalled requests go on.
    pub fn clear(&self) {
        let mut rules = self.rules.lock();
        rules.clear();
        self.armed.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(rules);
        self.released.notify_waiters();
    }

    /// Makes every put ignore its conditions (`on`), or honour them again.
    pub fn ignore_conditional_writes(&self, on: bool) {
        self.ignore_conditions.store(on, Ordering::Release);
    }

    /// Requests a fault has applied to so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The fault for this request, if any, and the generation it belongs to (a stall
    /// ends when [`Faults::clear`] moves past it).
    fn take(&self, op: Op, key: &str) -> Option<(Fault, u64)> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let mut rules = self.rules.lock();
        let generation = self.generation.load(Ordering::Acquire);
        let i = rules
            .iter()
            .position(|r| r.op == op && key.contains(&r.key_contains))?;
        let fault = rules[i].fault;
        if let Some(n) = &mut rules[i].remaining {
            *n -= 1;
            if *n == 0 {
                rules.remove(i);
            }
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some((fault, generation))
    }

    /// Applies the fault for a request before it runs: an error to return, or `None`
    /// to run it. A lost answer is reported through `lose_answer` (run it, then fail).
    async fn before(&self, op: Op, key: &str) -> std::result::Result<bool, object_store::Error> {
        match self.take(op, key) {
            None => Ok(false),
            Some((Fault::Fail, _)) => Err(injected(op, key, "injected failure")),
            Some((Fault::SlowDown, _)) => Err(injected(
                op,
                key,
                "503 SlowDown: please reduce your request rate (injected)",
            )),
            Some((Fault::Stall, generation)) => loop {
                let released = self.released.notified();
                if self.generation.load(Ordering::Acquire) != generation {
                    return Ok(false);
                }
                released.await;
            },
            Some((Fault::LoseAnswer, _)) => Ok(true),
        }
    }
}

fn injected(op: Op, key: &str, what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("{what} on {op:?} {key}").into(),
    }
}

/// The wrapper; see the module docs.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }

    async fn run<T>(
        &self,
        op: Op,
        key: &str,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let lose = self.faults.before(op, key).await?;
        let r = f.await?;
        if lose {
            return Err(injected(
                op,
                key,
                "connection lost after the request was done",
            ));
        }
        Ok(r)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> Result<PutResult> {
        if self.faults.ignore_conditions.load(Ordering::Acquire) {
            opts.mode = object_store::PutMode::Overwrite;
        }
        self.run(
            Op::Put,
            location.as_ref(),
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.run(
            Op::Put,
            location.as_ref(),
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.run(
            Op::Get,
            location.as_ref(),
            self.inner.get_opts(location, options),
        )
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let faults = self.faults.clone();
        let inner = self.inner.clone();
        locations
            .then(move |location| {
                let (faults, inner) = (faults.clone(), inner.clone());
                async move {
                    let location = location?;
                    let lose = faults.before(Op::Delete, location.as_ref()).await?;
                    let mut done =
                        inner.delete_stream(futures::stream::once(async { Ok(location) }).boxed());
                    let r = done.next().await.expect("one delete answered")?;
                    if lose {
                        return Err(injected(
                            Op::Delete,
                            r.as_ref(),
                            "connection lost after the request was done",
                        ));
                    }
                    Ok(r)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let faults = self.faults.clone();
        let inner = self.inner.clone();
        let prefix = prefix.cloned();
        let key = prefix.as_ref().map(|p| p.to_string()).unwrap_or_default();
        futures::stream::once(async move { faults.before(Op::List, &key).await })
            .flat_map(move |r| match r {
                Err(e) => futures::stream::once(async { Err(e) }).boxed(),
                // A lost answer on a listing is a failure after it ran: nothing to undo.
                Ok(true) => futures::stream::once(async {
                    Err(injected(Op::List, "", "connection lost during the listing"))
                })
                .boxed(),
                Ok(false) => inner.list(prefix.as_ref()),
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let key = prefix.map(|p| p.to_string()).unwrap_or_default();
        self.run(Op::List, &key, self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.run(
            Op::Copy,
            to.as_ref(),
            self.inner.copy_opts(from, to, options),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    fn store() -> (Arc<dyn ObjectStore>, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        let inner = Arc::new(object_store::memory::InMemory::new());
        (Arc::new(FaultyStore::new(inner, faults.clone())), faults)
    }

    #[tokio::test]
    async fn faults_apply_to_the_chosen_requests_then_go_away() {
        let (s, faults) = store();
        let (a, b) = (Path::from("t/a"), Path::from("t/b"));
        faults.inject(Op::Put, "t/a", Fault::Fail, Some(1));
        assert!(s.put(&a, PutPayload::from_static(b"1")).await.is_err());
        assert!(s.get(&a).await.is_err(), "a failed put wrote nothing");
        s.put(&b, PutPayload::from_static(b"2")).await.unwrap();
        s.put(&a, PutPayload::from_static(b"1")).await.unwrap();
        // A lost answer: the caller sees an error, the store has the object.
        faults.inject(Op::Put, "", Fault::LoseAnswer, Some(1));
        let e = s.put(&a, PutPayload::from_static(b"3")).await.unwrap_err();
        assert!(e.to_string().contains("connection lost"), "{e}");
        assert_eq!(&s.get(&a).await.unwrap().bytes().await.unwrap()[..], b"3");
        faults.inject(Op::Get, "", Fault::SlowDown, None);
        let e = s.get(&a).await.unwrap_err();
        assert!(e.to_string().contains("SlowDown"), "{e}");
        faults.inject(Op::Delete, "", Fault::Fail, None);
        assert!(s.delete(&b).await.is_err());
        faults.clear();
        s.delete(&b).await.unwrap();
        assert_eq!(faults.hits(), 4);
    }

    #[tokio::test]
    async fn a_stalled_request_waits_until_the_fault_is_cleared() {
        let (s, faults) = store();
        let a = Path::from("a");
        faults.inject(Op::Put, "", Fault::Stall, None);
        let mut put = Box::pin(s.put(&a, PutPayload::from_static(b"x")));
        for _ in 0..10 {
            assert!(futures::poll!(&mut put).is_pending());
            tokio::task::yield_now().await;
        }
        faults.clear();
        put.await.unwrap();
        assert!(s.get(&a).await.is_ok());
    }
}
