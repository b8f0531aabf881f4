//! SASL on the Kafka listener (Kafka's SASL_PLAINTEXT and SASL_SSL): with mechanisms
//! configured, a connection must authenticate before anything but ApiVersions is
//! answered, as on a Kafka broker (KIP-43's SaslHandshake v1, then SaslAuthenticate
//! frames, KIP-152). A v0 handshake, after which a client would send bare SASL tokens,
//! is answered UNSUPPORTED_VERSION and the connection closed.
//!
//! - PLAIN: the password is checked against the user's stored SCRAM credential
//!   (SHA-512's if it has one, else SHA-256's). PBKDF2 runs on the blocking pool.
//! - SCRAM-SHA-256/512: [`strata_auth::ScramServer`], two SaslAuthenticate rounds.
//!
//! A failure answers SASL_AUTHENTICATION_FAILED after [`FAILURE_DELAY`] (Kafka's
//! `connection.failed.authentication.delay.ms`: a guesser gets few tries a second per
//! connection) and closes the connection. An exchange must finish within
//! [`AUTH_TIMEOUT`]. Re-authentication (KIP-368) is not offered: a session's lifetime
//! is unbounded (`session_lifetime_ms` 0).

use std::time::Duration;

use futures::StreamExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use strata_auth::{AuthError, Mechanism, Principal, SaslMechanism, ScramServer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;

use crate::conn::{Close, Decoded, Frames, Request, decode_request, response};
use crate::{Context, str};

/// Longest an authentication may take, from the connection's first byte.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(30);
/// PLAIN password checks (PBKDF2) running at once.
static PBKDF2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The largest frame read before a connection has authenticated (Kafka's limit for
/// SASL tokens): a stranger cannot make the broker buffer a produce-sized frame.
pub const MAX_UNAUTHENTICATED_FRAME: usize = 512 << 10;

/// How long a failed authentication waits before it is answered.
pub const FAILURE_DELAY: Duration = Duration::from_millis(100);

/// Runs a connection's SASL exchange: answers ApiVersions and the SASL requests until
/// the client has authenticated, then returns who it is. An error is why the
/// connection must close (its answer, if any, already sent).
pub(crate) async fn authenticate<R, W>(
    frames: &mut FramedRead<R, Frames>,
    wr: &mut W,
    ctx: &Context,
) -> Result<Principal, String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
    let mut chosen: Option<SaslMechanism> = None;
    let mut scram: Option<ScramServer> = None;
    loop {
        let frame = match tokio::time::timeout_at(deadline, frames.next()).await {
            Err(_) => {
                return Err(format!(
                    "SASL authentication not done within {AUTH_TIMEOUT:?}"
                ));
            }
            Ok(None) => return Err("closed before authenticating".into()),
            Ok(Some(Err(e))) => return Err(format!("unreadable frame before authenticating: {e}")),
            Ok(Some(Ok(f))) => f.freeze(),
        };
        let (h, r) = match decode_request(frame).map_err(|Close(why)| why)? {
            Decoded::NewerApiVersions { correlation_id } => {
                send(
                    wr,
                    crate::handlers::api_versions_unsupported(correlation_id),
                )
                .await?;
                continue;
            }
            Decoded::Request(h, r) => (h, r),
        };
        let (id, v) = (h.correlation_id, h.version);
        match *r {
            Request::ApiVersions(_) => {
                send(wr, response(id, v, &crate::handlers::api_versions(0))).await?;
            }
            Request::SaslHandshake(req) if chosen.is_none() => {
                let offered = &ctx.config.sasl_mechanisms;
                let mut resp = SaslHandshakeResponse::default();
                resp.mechanisms = offered.iter().map(|m| str(m.name())).collect();
                let asked = req.mechanism.as_str();
                if v == 0 {
                    resp.error_code = ResponseError::UnsupportedVersion.code();
                    send(wr, response(id, v, &resp)).await?;
                    return Err(
                        "SaslHandshake v0 (raw SASL tokens) is not supported; the client must use SaslAuthenticate (Kafka clients since 1.0 do)".into(),
                    );
                }
                match offered.iter().find(|m| m.name() == asked) {
                    Some(&m) => {
                        chosen = Some(m);
                        if let SaslMechanism::Scram(s) = m {
                            scram = Some(ScramServer::new(s));
                        }
                        send(wr, response(id, v, &resp)).await?;
                    }
                    None => {
                        resp.error_code = ResponseError::UnsupportedSaslMechanism.code();
                        send(wr, response(id, v, &resp)).await?;
                        return Err(format!(
                            "the client asked for SASL mechanism {asked:?}; this listener offers {:?}",
                            offered.iter().map(|m| m.name()).collect::<Vec<_>>()
                        ));
                    }
                }
            }
            Request::SaslAuthenticate(req) if chosen.is_some() => {
                let mechanism = chosen.expect("checked");
                let step = match scram.as_mut() {
                    None => plain(ctx, &req.auth_bytes).await,
                    Some(s) => scram_step(ctx, s, &req.auth_bytes),
                };
                let mut resp = SaslAuthenticateResponse::default();
                match step {
                    Ok(Outcome::Challenge(bytes)) => {
                        resp.auth_bytes = bytes.into();
                        send(wr, response(id, v, &resp)).await?;
                    }
                    Ok(Outcome::Done(principal, bytes)) => {
                        resp.auth_bytes = bytes.into();
                        send(wr, response(id, v, &resp)).await?;
                        ctx.broker.metrics().kafka_authentications.add(1);
                        tracing::debug!(%principal, mechanism = mechanism.name(), "kafka: authenticated");
                        return Ok(principal);
                    }
                    Err(e) => {
                        ctx.broker.metrics().kafka_authentication_failures.add(1);
                        tokio::time::sleep(FAILURE_DELAY).await;
                        resp.error_code = ResponseError::SaslAuthenticationFailed.code();
                        resp.error_message = Some(str(&match &e {
                            AuthError::Failed => format!(
                                "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                                mechanism.name()
                            ),
                            other => format!("Authentication failed: {other}"),
                        }));
                        send(wr, response(id, v, &resp)).await?;
                        return Err(format!(
                            "SASL {} authentication failed: {e}",
                            mechanism.name()
                        ));
                    }
                }
            }
            Request::SaslAuthenticate(_) | Request::SaslHandshake(_) => {
                return Err(format!(
                    "{:?} out of turn during SASL authentication",
                    h.api_key
                ));
            }
            _ => {
                return Err(format!(
                    "{:?} before SASL authentication (is the client configured for SASL_PLAINTEXT or SASL_SSL?)",
                    h.api_key
                ));
            }
        }
    }
}

/// Where one SaslAuthenticate round left the exchange.
enum Outcome {
    /// Another round is needed: the server's message.
    Challenge(Vec<u8>),
    /// Authenticated: who, and the server's last message.
    Done(Principal, Vec<u8>),
}

async fn send<W: AsyncWrite + Unpin>(wr: &mut W, frame: bytes::Bytes) -> Result<(), String> {
    wr.write_all(&frame)
        .await
        .map_err(|e| format!("writing a SASL answer failed: {e}"))
}

fn scram_step(ctx: &Context, s: &mut ScramServer, msg: &[u8]) -> Result<Outcome, AuthError> {
    if s.started() {
        let (principal, last) = s.client_final(msg)?;
        return Ok(Outcome::Done(principal, last));
    }
    let users = ctx.store().map_err(|e| AuthError::Io(e.to_string()))?;
    let m = s.mechanism();
    s.client_first(msg, |user| users.user(user, m))
        .map(Outcome::Challenge)
}

async fn plain(ctx: &Context, msg: &[u8]) -> Result<Outcome, AuthError> {
    let m = strata_auth::plain::parse(msg)?;
    let users = ctx.store().map_err(|e| AuthError::Io(e.to_string()))?;
    let found = [Mechanism::Sha512, Mechanism::Sha256]
        .into_iter()
        .find_map(|mech| users.user(&m.user, mech).map(|c| (mech, c, true)));
    // An unknown user costs the same PBKDF2 as a known one: the time to answer does
    // not tell which users exist.
    let (mech, credential, known) = found.unwrap_or_else(|| {
        let mech = Mechanism::Sha512;
        (mech, strata_auth::scram::unknown_user(mech, &m.user), false)
    });
    // PBKDF2 on the blocking pool, a few at a time: a flood of PLAIN logins queues
    // here instead of taking every blocking thread.
    let _slot = PBKDF2_SLOTS
        .acquire()
        .await
        .map_err(|e| AuthError::Io(e.to_string()))?;
    let user = tokio::task::spawn_blocking(move || {
        (credential.verify_password(mech, &m.password) && known).then_some(m.user)
    })
    .await
    .map_err(|e| AuthError::Io(e.to_string()))?
    .ok_or(AuthError::Failed)?;
    Ok(Outcome::Done(Principal::user(user), Vec::new()))
}
