//! Running a broker: the gRPC server, the metrics endpoint and housekeeping, until a
//! shutdown signal. Tests bind `127.0.0.1:0` and call [`run`] in-process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1::strata_server::StrataServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::broker::Broker;
use crate::service::Service;

/// Largest gRPC message accepted or sent (a produce request or fetch answer).
pub const MAX_MESSAGE_BYTES: usize = 128 << 20;
/// How long a shutdown waits for open requests before closing connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `broker` on `listener` (and `/metrics` on `metrics`) until `shutdown` resolves,
/// then flushes every log.
pub async fn run(
    broker: Arc<Broker>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let housekeeping = tokio::spawn(housekeeping(broker.clone(), stop_rx.clone()));
    let tiering = tokio::spawn(tiering(broker.clone(), stop_rx.clone()));
    let deletions = tokio::spawn(deletions(broker.clone(), stop_rx.clone()));
    let cleaner = tokio::spawn(cleaner(broker.clone(), stop_rx.clone()));
    let snapshots = tokio::spawn(group_offset_snapshots(broker.clone(), stop_rx.clone()));
    let flusher = tokio::spawn({
        let b = broker.clone();
        let stop = stop_rx.clone();
        async move { b.run_flusher(stop).await }
    });
    let metrics_task = metrics.map(|l| tokio::spawn(serve_metrics(l, broker.clone(), stop_rx)));
    let service = StrataServer::new(Service::new(broker.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel();
    let b = broker.clone();
    let serve = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .max_frame_size(Some((1 << 20) - 1))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            // End subscriptions, long polls and produce streams so connections drain.
            b.begin_shutdown();
            let _ = signalled_tx.send(());
        });
    tokio::pin!(serve);
    let result = tokio::select! {
        r = &mut serve => r,
        _ = async {
            let _ = signalled_rx.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown began; closing them");
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    let _ = housekeeping.await;
    let _ = tiering.await;
    let _ = deletions.await;
    let _ = cleaner.await;
    let _ = snapshots.await;
    // The last commits into the bucket's copy too (bounded: the store may be away).
    if let Err(e) = tokio::time::timeout(SHUTDOWN_GRACE, broker.snapshot_group_offsets()).await {
        tracing::warn!(error = %e, "group offsets were not copied to the object store at shutdown");
    }
    let _ = flusher.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let b = broker.clone();
    let _ = tokio::task::spawn_blocking(move || b.close_all()).await;
    tracing::info!("broker stopped");
    result
}

/// Runs `round` every housekeeping interval until `stop`; a round in progress is
/// abandoned at shutdown.
async fn every<F, Fut>(
    broker: Arc<Broker>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut round: F,
) where
    F: FnMut(Arc<Broker>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(Duration::from_millis(
        broker.config().housekeeping_interval_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = round(broker.clone()) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Retention, flush.ms, segment.ms and group sessions (blocking file work).
async fn housekeeping(broker: Arc<Broker>, stop: tokio::sync::watch::Receiver<bool>) {
    every(broker, stop, |b| async move {
        let _ = tokio::task::spawn_blocking(move || b.housekeeping()).await;
    })
    .await
}

/// Copies the committed group offsets to the bucket when they changed.
async fn group_offset_snapshots(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every_ms = broker.config().offsets_snapshot_interval_ms;
    if every_ms == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            r = broker.snapshot_group_offsets() => if let Err(e) = r {
                tracing::warn!(error = %e, "could not copy group offsets to the object store; retrying");
            },
            _ = stop.changed() => return,
        }
    }
}

/// Log compaction: one pass at a time over the compacted partitions (Kafka's single
/// cleaner thread), on a blocking thread; produce and fetch wait only for each swap.
///
/// A pass under way is not abandoned at shutdown: it stops at its next segment (it
/// watches the broker's shutdown) and is awaited, so no pass outlives the broker.
async fn cleaner(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(
        broker.config().housekeeping_interval_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.compact_logs()).await;
    }
}

/// Offload and remote retention; runs beside produce, never in its way. Every
/// housekeeping interval each partition not already in a round starts one, so a
/// partition working through a long backlog holds back no other; rounds under way are
/// abandoned at shutdown.
async fn tiering(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    use futures::StreamExt;
    let mut tick = tokio::time::interval(Duration::from_millis(
        broker.config().housekeeping_interval_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = futures::stream::FuturesUnordered::new();
    let mut busy = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for work in broker.tier_work_list() {
                    let key = Arc::as_ptr(&work.partition) as usize;
                    if busy.insert(key) {
                        let b = broker.clone();
                        rounds.push(async move {
                            b.tier_partition(&work).await;
                            key
                        });
                    }
                }
            }
            Some(key) = rounds.next(), if !rounds.is_empty() => {
                busy.remove(&key);
            }
            _ = stop.changed() => return,
        }
    }
}

/// Removes deleted topics' objects: at once when a topic is deleted, then every
/// housekeeping interval while any removal waits for its retry. A removal under way is
/// abandoned at shutdown and redone at the next start (its tombstone stays).
async fn deletions(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(
        broker.config().housekeeping_interval_ms,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = broker.deletion_requested() => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = broker.run_deletions() => {}
            _ = stop.changed() => return,
        }
    }
}

/// A minimal HTTP/1.1 endpoint: `GET /metrics` answers the Prometheus text format.
async fn serve_metrics(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (mut conn, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut req = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
                match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => req.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let line = String::from_utf8_lossy(&req);
            let (status, body) = if line.starts_with("GET /metrics ") {
                ("200 OK", broker.metrics_text())
            } else {
                ("404 Not Found", "try GET /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}
