//! One Kafka connection: frames in, responses out, in request order.
//!
//! A frame is a 4-byte big-endian length and that many bytes. The length is checked
//! against the configured maximum before any of the frame is read (the codec refuses
//! a longer one), so a peer cannot make the broker buffer more than that. A request is
//! decoded from the frame it arrived in: byte fields (produce records) are slices of
//! it, never copies.
//!
//! Produce and Fetch requests are handled as they arrive and their answers sent in the
//! same order, up to [`MAX_IN_FLIGHT`] (and [`MAX_IN_FLIGHT_BYTES`] of requests) at once:
//! a produce is appended before the next request is read (appends keep the connection's
//! order, which idempotent sequences rely on), then its acknowledgement and any
//! long-poll fetch wait side by side. Every other request runs alone, after those before
//! it are answered and before any after it starts, so its effects come in request order
//! as on a Kafka broker. An `acks=0` produce that fails closes the connection (it has
//! no answer to carry the error).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, FramedRead};
use tracing::Instrument;

use crate::Context;

/// Requests of one connection handled at once; the next is read once one is answered.
pub const MAX_IN_FLIGHT: usize = 32;
/// Request bytes one connection may hold in flight; past it, reading waits for answers
/// (one request is always let in, whatever its size).
pub const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;
/// Largest request other than Produce (tens of thousands of partitions fit).
pub const MAX_OTHER_REQUEST_BYTES: usize = 8 << 20;
/// Answers smaller than this are gathered into one write.
const SMALL_FRAME: usize = 64 << 10;

/// What handling a request yields.
pub enum Answer {
    /// The response frame.
    Frame(Bytes),
    /// No response (an `acks=0` produce that succeeded).
    Nothing,
    /// Close the connection: how an `acks=0` producer learns its produce failed, as
    /// from Kafka.
    Close(String),
}

pub type Reply = BoxFuture<'static, Answer>;

/// Why a connection is closed instead of answered.
#[derive(Debug)]
pub struct Close(pub String);

/// A decoded request header.
#[derive(Debug)]
pub struct Header {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

/// Serves one connection until the peer closes it, it sends something that cannot be
/// answered, or the broker stops.
pub async fn serve_connection(
    conn: strata_tls::Conn,
    peer: SocketAddr,
    ctx: Arc<Context>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let span = tracing::info_span!("kafka_connection", %peer, principal = tracing::field::Empty);
    // A client certificate names the principal, unless SASL names another.
    let cert = conn
        .peer()
        .certs
        .and_then(|c| strata_auth::cert::principal(c.first()?));
    match conn {
        // Plain TCP splits without a lock between the halves.
        strata_tls::Conn::Plain(tcp) => {
            let (rd, wr) = tcp.into_split();
            serve_halves(rd, wr, peer, cert, ctx, stop)
                .instrument(span)
                .await
        }
        strata_tls::Conn::Tls(tls) => {
            let (rd, wr) = tokio::io::split(*tls);
            serve_halves(rd, wr, peer, cert, ctx, stop)
                .instrument(span)
                .await
        }
    }
}

async fn serve_halves<R, W>(
    rd: R,
    mut wr: W,
    peer: SocketAddr,
    cert: Option<strata_auth::Principal>,
    ctx: Arc<Context>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    {
        let codec = Frames {
            max: ctx.config.max_request_bytes,
        };
        let mut frames = FramedRead::with_capacity(rd, codec, 64 << 10);
        let principal = if ctx.config.sasl_mechanisms.is_empty() {
            cert.unwrap_or_else(strata_auth::Principal::anonymous)
        } else {
            frames.decoder_mut().max = crate::sasl::MAX_UNAUTHENTICATED_FRAME;
            let authenticated = tokio::select! {
                r = crate::sasl::authenticate(&mut frames, &mut wr, &ctx) => r,
                _ = stop.changed() => return,
            };
            frames.decoder_mut().max = ctx.config.max_request_bytes;
            match authenticated {
                Ok(p) => p,
                Err(why) => {
                    tracing::info!(reason = %why, "closing kafka connection: not authenticated");
                    let _ = wr.shutdown().await;
                    return;
                }
            }
        };
        tracing::Span::current().record("principal", tracing::field::display(&principal));
        let session = Arc::new(crate::Session::new(strata_broker::security::Caller::new(
            principal,
            Some(peer.ip()),
        )));
        let mut in_flight = InFlight::default();
        // A request that runs alone, read while others were in flight: it starts once
        // they are answered, and nothing more is read until then.
        let mut parked: Option<Bytes> = None;
        let mut out = BytesMut::new();
        loop {
            let muted = session.muted();
            if in_flight.is_empty()
                && muted.is_none()
                && let Some(frame) = parked.take()
                && let Err(Close(why)) = in_flight.start(&ctx, &session, frame)
            {
                ctx.broker.metrics().kafka_bad_requests.add(1);
                tracing::info!(reason = %why, "closing kafka connection");
                break;
            }
            let room = parked.is_none() && in_flight.has_room() && muted.is_none();
            tokio::select! {
                // A throttled client's next request waits out its throttle time.
                _ = tokio::time::sleep_until(muted.unwrap_or_else(tokio::time::Instant::now)), if muted.is_some() => {}
                frame = frames.next(), if room => {
                    let frame = match frame {
                        None => break,
                        Some(Ok(f)) => f.freeze(),
                        Some(Err(e)) => {
                            ctx.broker.metrics().kafka_bad_requests.add(1);
                            tracing::info!(error = %e, max = ctx.config.max_request_bytes,
                                "closing kafka connection: unreadable frame (over socket.request.max.bytes, or cut short)");
                            break;
                        }
                    };
                    if runs_alone(&frame) && !in_flight.is_empty() {
                        parked = Some(frame);
                        continue;
                    }
                    if let Err(Close(why)) = in_flight.start(&ctx, &session, frame) {
                        ctx.broker.metrics().kafka_bad_requests.add(1);
                        tracing::info!(reason = %why, "closing kafka connection");
                        break;
                    }
                }
                Some(answer) = in_flight.next() => {
                    // Answers already done go out together: small ones copied into one
                    // buffer, large ones (fetched records) written as they are.
                    let mut next = Some(answer);
                    out.clear();
                    while let Some(answer) = next.take() {
                        match answer {
                            Answer::Frame(frame) if frame.len() < SMALL_FRAME => {
                                out.extend_from_slice(&frame);
                            }
                            Answer::Frame(frame) => {
                                if !out.is_empty() && wr.write_all(&out).await.is_err() {
                                    return;
                                }
                                out.clear();
                                if wr.write_all(&frame).await.is_err() {
                                    return;
                                }
                            }
                            Answer::Nothing => {}
                            Answer::Close(why) => {
                                // What came before it is answered first.
                                let _ = wr.write_all(&out).await;
                                tracing::info!(reason = %why, "closing kafka connection");
                                let _ = wr.shutdown().await;
                                return;
                            }
                        }
                        if out.len() < SMALL_FRAME {
                            next = futures::FutureExt::now_or_never(in_flight.next()).flatten();
                        }
                    }
                    if !out.is_empty() && let Err(e) = wr.write_all(&out).await {
                        tracing::debug!(error = %e, "kafka connection write failed");
                        return;
                    }
                }
                _ = stop.changed() => break,
            }
        }
        // Answer what was read before the peer closed its side (a client may half-close
        // after its last request).
        while let Some(answer) = in_flight.next().await {
            match answer {
                Answer::Frame(frame) => {
                    if wr.write_all(&frame).await.is_err() {
                        return;
                    }
                }
                Answer::Nothing => {}
                Answer::Close(_) => break,
            }
        }
        let _ = wr.shutdown().await;
    }
}

/// Kafka's framing: a 4-byte big-endian length, then that many bytes. A length over
/// `max` (or negative) is refused before any of the frame is read. The buffer is sized
/// for the whole frame at once only up to [`READ_AHEAD`] (a produce request of usual
/// size then lands without a copy); past that it grows as the frame's bytes arrive, so
/// a peer that declares a large frame and stalls costs what it sent, not what it
/// declared.
pub(crate) struct Frames {
    max: usize,
}

/// How far the read buffer is grown ahead of a frame's bytes.
const READ_AHEAD: usize = 1 << 20;

impl Decoder for Frames {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        let Some(head) = src.get(..4) else {
            return Ok(None);
        };
        let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if len < 0 || len as usize > self.max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a frame of {len} bytes declared; at most {} are accepted",
                    self.max
                ),
            ));
        }
        let len = len as usize;
        if src.len() < 4 + len {
            src.reserve((4 + len - src.len()).min(READ_AHEAD));
            return Ok(None);
        }
        bytes::Buf::advance(src, 4);
        Ok(Some(src.split_to(len)))
    }
}

/// A connection's requests being handled, answered in the order they came.
#[derive(Default)]
struct InFlight {
    replies: FuturesOrdered<Reply>,
    /// Frame sizes of the requests in flight, in order: reading pauses while they hold
    /// more than MAX_IN_FLIGHT_BYTES (a produce's records are slices of its frame).
    sizes: VecDeque<usize>,
    held: usize,
    /// The request in flight runs alone: nothing more starts until it is answered.
    alone: bool,
}

impl InFlight {
    fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Whether another request may be read now (one is always let in, whatever its size).
    fn has_room(&self) -> bool {
        self.is_empty()
            || (!self.alone
                && self.replies.len() < MAX_IN_FLIGHT
                && self.held < MAX_IN_FLIGHT_BYTES)
    }

    fn start(
        &mut self,
        ctx: &Arc<Context>,
        session: &Arc<crate::Session>,
        frame: Bytes,
    ) -> Result<(), Close> {
        let len = frame.len();
        self.alone = runs_alone(&frame);
        let reply = handle_frame(ctx, session, frame)?;
        self.replies.push_back(reply);
        self.sizes.push_back(len);
        self.held += len;
        Ok(())
    }

    async fn next(&mut self) -> Option<Answer> {
        let answer = self.replies.next().await?;
        self.held -= self.sizes.pop_front().unwrap_or(0);
        Some(answer)
    }
}

/// Decodes a frame and starts handling it.
fn handle_frame(
    ctx: &Arc<Context>,
    session: &Arc<crate::Session>,
    frame: Bytes,
) -> Result<Reply, Close> {
    match decode_request(frame)? {
        Decoded::Request(h, r) => {
            let span = tracing::debug_span!(
                "kafka_request",
                api = ?h.api_key,
                version = h.version,
                correlation_id = h.correlation_id,
                client_id = h.client_id.as_deref().unwrap_or_default(),
            );
            let started = std::time::Instant::now();
            let metrics = ctx.broker.metrics().clone();
            let reply = span.in_scope(|| crate::handlers::dispatch(ctx, session, h, *r));
            Ok(Box::pin(
                async move {
                    let out = reply.await;
                    metrics.kafka_requests.add(1);
                    metrics.kafka_request_latency.observe(started.elapsed());
                    out
                }
                .instrument(span),
            ))
        }
        Decoded::NewerApiVersions { correlation_id } => Ok(ready(
            crate::handlers::api_versions_unsupported(correlation_id),
        )),
    }
}

/// What a frame holds.
#[derive(Debug)]
pub enum Decoded {
    Request(Header, Box<Request>),
    /// ApiVersions in a version newer than served: answered in v0 (KIP-511).
    NewerApiVersions {
        correlation_id: i32,
    },
}

/// A decoded request of a served API.
#[derive(Debug)]
pub enum Request {
    ApiVersions(ApiVersionsRequest),
    Metadata(MetadataRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    InitProducerId(InitProducerIdRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    ListGroups(ListGroupsRequest),
    DescribeGroups(DescribeGroupsRequest),
    DeleteGroups(DeleteGroupsRequest),
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest),
    ConsumerGroupDescribe(ConsumerGroupDescribeRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    CreatePartitions(CreatePartitionsRequest),
    DescribeConfigs(DescribeConfigsRequest),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest),
    DescribeCluster(DescribeClusterRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    SaslHandshake(SaslHandshakeRequest),
    SaslAuthenticate(SaslAuthenticateRequest),
    DescribeUserScramCredentials(DescribeUserScramCredentialsRequest),
    AlterUserScramCredentials(AlterUserScramCredentialsRequest),
    CreateAcls(CreateAclsRequest),
    DescribeAcls(DescribeAclsRequest),
    DeleteAcls(DeleteAclsRequest),
}

/// Decodes one request frame (without its length prefix). Anything that is not a
/// well-formed request of a served API and version is an error naming what is wrong;
/// nothing here panics. Decoded requests take more memory than their bytes (a struct
/// per element), so only Produce, whose records stay slices of the frame, may use the
/// whole `socket.request.max.bytes`; every other request is held to
/// [`MAX_OTHER_REQUEST_BYTES`].
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, Close> {
    // api_key, api_version, correlation_id: read by hand so a short frame or an
    // unknown key is a clean error, never a decoder panic.
    if frame.len() < 8 {
        return Err(Close(format!(
            "a {}-byte frame is too short for a request header",
            frame.len()
        )));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api_key) = ApiKey::try_from(key) else {
        return Err(Close(format!("unknown API key {key}")));
    };
    if api_key != ApiKey::Produce && frame.len() > MAX_OTHER_REQUEST_BYTES {
        return Err(Close(format!(
            "a {}-byte {api_key:?} request is larger than the {MAX_OTHER_REQUEST_BYTES} bytes any request but Produce may take",
            frame.len()
        )));
    }
    let Some((min, max)) = crate::apis::versions(api_key) else {
        return Err(Close(format!(
            "API {api_key:?} (key {key}) is not served by this broker"
        )));
    };
    if version < min || version > max {
        if api_key == ApiKey::ApiVersions && version > max {
            // KIP-511: answer in v0 with UNSUPPORTED_VERSION and our table, so the
            // client asks again in a version both speak.
            return Ok(Decoded::NewerApiVersions { correlation_id });
        }
        return Err(Close(format!(
            "{api_key:?} v{version} requested; this broker serves v{min} to v{max}"
        )));
    }
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| Close(format!("{api_key:?} v{version}: bad request header: {e}")))?;
    let h = Header {
        api_key,
        version,
        correlation_id,
        client_id: header.client_id.map(|c| c.to_string()),
    };
    let r = match api_key {
        ApiKey::ApiVersions => Request::ApiVersions(decode(&h, frame)?),
        ApiKey::Metadata => Request::Metadata(decode(&h, frame)?),
        ApiKey::Produce => Request::Produce(decode(&h, frame)?),
        ApiKey::Fetch => Request::Fetch(decode(&h, frame)?),
        ApiKey::ListOffsets => Request::ListOffsets(decode(&h, frame)?),
        ApiKey::InitProducerId => Request::InitProducerId(decode(&h, frame)?),
        ApiKey::FindCoordinator => Request::FindCoordinator(decode(&h, frame)?),
        ApiKey::JoinGroup => Request::JoinGroup(decode(&h, frame)?),
        ApiKey::SyncGroup => Request::SyncGroup(decode(&h, frame)?),
        ApiKey::Heartbeat => Request::Heartbeat(decode(&h, frame)?),
        ApiKey::LeaveGroup => Request::LeaveGroup(decode(&h, frame)?),
        ApiKey::OffsetCommit => Request::OffsetCommit(decode(&h, frame)?),
        ApiKey::OffsetFetch => Request::OffsetFetch(decode(&h, frame)?),
        ApiKey::ListGroups => Request::ListGroups(decode(&h, frame)?),
        ApiKey::DescribeGroups => Request::DescribeGroups(decode(&h, frame)?),
        ApiKey::DeleteGroups => Request::DeleteGroups(decode(&h, frame)?),
        ApiKey::ConsumerGroupHeartbeat => Request::ConsumerGroupHeartbeat(decode(&h, frame)?),
        ApiKey::ConsumerGroupDescribe => Request::ConsumerGroupDescribe(decode(&h, frame)?),
        ApiKey::CreateTopics => Request::CreateTopics(decode(&h, frame)?),
        ApiKey::DeleteTopics => Request::DeleteTopics(decode(&h, frame)?),
        ApiKey::CreatePartitions => Request::CreatePartitions(decode(&h, frame)?),
        ApiKey::DescribeConfigs => Request::DescribeConfigs(decode(&h, frame)?),
        ApiKey::IncrementalAlterConfigs => Request::IncrementalAlterConfigs(decode(&h, frame)?),
        ApiKey::DescribeCluster => Request::DescribeCluster(decode(&h, frame)?),
        ApiKey::OffsetForLeaderEpoch => Request::OffsetForLeaderEpoch(decode(&h, frame)?),
        ApiKey::SaslHandshake => Request::SaslHandshake(decode(&h, frame)?),
        ApiKey::SaslAuthenticate => Request::SaslAuthenticate(decode(&h, frame)?),
        ApiKey::DescribeUserScramCredentials => {
            Request::DescribeUserScramCredentials(decode(&h, frame)?)
        }
        ApiKey::AlterUserScramCredentials => Request::AlterUserScramCredentials(decode(&h, frame)?),
        ApiKey::CreateAcls => Request::CreateAcls(decode(&h, frame)?),
        ApiKey::DescribeAcls => Request::DescribeAcls(decode(&h, frame)?),
        ApiKey::DeleteAcls => Request::DeleteAcls(decode(&h, frame)?),
        other => return Err(Close(format!("API {other:?} is not served"))),
    };
    Ok(Decoded::Request(h, Box::new(r)))
}

/// Decodes a request body of type `T`. Bytes after it are ignored, as Kafka brokers
/// ignore them (librdkafka 2.x sends Metadata v12 with fields the version dropped).
fn decode<T: Decodable>(h: &Header, mut body: Bytes) -> Result<T, Close> {
    T::decode(&mut body, h.version).map_err(|e| {
        Close(format!(
            "{:?} v{}: malformed request: {e}",
            h.api_key, h.version
        ))
    })
}

/// A response frame: length, header (its version from the API's), body.
pub fn response<T: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &T,
) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let encoded = header
        .encode(&mut buf, T::header_version(version))
        .and_then(|()| body.encode(&mut buf, version));
    if let Err(e) = encoded {
        // Only a response built wrong gets here (a field the version cannot carry).
        tracing::error!(error = %e, version, "encoding a kafka response failed");
        buf.truncate(4);
        let _ = header.encode(&mut buf, T::header_version(version));
    }
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

/// A reply that is ready now.
pub fn ready(frame: Bytes) -> Reply {
    Box::pin(std::future::ready(Answer::Frame(frame)))
}

/// Whether a request must run alone on its connection: everything but Produce and
/// Fetch waits for the requests before it to finish and holds back the ones after it,
/// so its effects come in request order (a commit before the fetch of offsets that
/// follows it), as on a Kafka broker, which handles a connection's requests one at a
/// time. Produce keeps order anyway (it appends before the next request is read) and
/// Fetch changes nothing.
fn runs_alone(frame: &[u8]) -> bool {
    let key = frame
        .get(..2)
        .map_or(-1, |k| i16::from_be_bytes([k[0], k[1]]));
    key != ApiKey::Produce as i16 && key != ApiKey::Fetch as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_length_reserves_only_what_arrives() {
        let mut codec = Frames { max: 100 << 20 };
        let mut buf = BytesMut::new();
        buf.put_i32(90 << 20);
        buf.extend_from_slice(b"0123456789");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= READ_AHEAD + 64,
            "a 90 MiB frame header made the buffer {} bytes",
            buf.capacity()
        );
    }

    #[test]
    fn frames_split_at_their_lengths_and_oversized_or_negative_ones_are_refused() {
        let mut codec = Frames { max: 16 };
        let mut buf = BytesMut::new();
        for body in [&b"abc"[..], b"", b"0123456789abcdef"] {
            buf.put_i32(body.len() as i32);
            buf.extend_from_slice(body);
        }
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"abc");
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"");
        assert_eq!(
            &codec.decode(&mut buf).unwrap().unwrap()[..],
            b"0123456789abcdef"
        );
        assert!(codec.decode(&mut buf).unwrap().is_none());
        for len in [17, -1] {
            let mut buf = BytesMut::new();
            buf.put_i32(len);
            assert!(codec.decode(&mut buf).is_err(), "length {len}");
        }
    }
}
