//! Who a gRPC call comes from. [`Authenticate`] runs before every call of the public
//! service and leaves the caller's [`Principal`] in the request's extensions:
//!
//! 1. an `authorization: Bearer TOKEN` header names the token's holder (from
//!    `grpc_token_file`); a header with a token the file does not hold is refused
//!    (UNAUTHENTICATED), never downgraded to anonymous;
//! 2. else a TLS client certificate names its common name;
//! 3. else the caller is `User:ANONYMOUS`, refused when `grpc_auth_required`.
//!
//! Health and reflection stay open (probes and tools use them before any credential).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_auth::{Principal, TokenFile};
use tonic::{Request, Status};

/// The gRPC authenticator (a tonic interceptor).
#[derive(Clone)]
pub struct Authenticate {
    tokens: Option<Arc<TokenFile>>,
    required: bool,
}

impl Authenticate {
    /// From the broker's config; an unreadable or malformed token file is an error
    /// naming it.
    pub fn new(config: &strata_broker::BrokerConfig) -> Result<Self, String> {
        let tokens = config
            .grpc_token_file
            .as_deref()
            .map(|p: &Path| TokenFile::load(p).map(Arc::new).map_err(|e| e.to_string()))
            .transpose()?;
        Ok(Self {
            tokens,
            required: config.grpc_auth_required,
        })
    }

    /// Reloads the token file when it changes (checked every `poll`) and on SIGHUP,
    /// until `stop`; a file that fails to load keeps the tokens in use.
    pub async fn watch(self, poll: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(tokens) = self.tokens else { return };
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let forced = tokio::select! {
                _ = tokio::time::sleep(poll) => false,
                Some(()) = async { hup.as_mut()?.recv().await } => true,
                _ = stop.changed() => return,
            };
            let t = tokens.clone();
            let reloaded = tokio::task::spawn_blocking(move || {
                if forced {
                    t.reload().map(Some)
                } else {
                    t.reload_if_changed()
                }
            })
            .await;
            match reloaded {
                Ok(Ok(Some(n))) => {
                    tracing::info!(file = %tokens.path().display(), tokens = n, "reloaded the gRPC token file")
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the gRPC token file did not reload; the tokens in use stay")
                }
                Err(e) => tracing::warn!(error = %e, "reloading the gRPC token file failed"),
            }
        }
    }

    fn principal<T>(&self, r: &Request<T>) -> Result<Principal, Status> {
        if let Some(h) = r.metadata().get("authorization") {
            let token = h
                .to_str()
                .ok()
                .and_then(|h| strata_auth::tokens::bearer(h).ok())
                .ok_or_else(|| {
                    Status::unauthenticated(
                        "the authorization header is not `Bearer TOKEN`; pass the token with --token (STRATA_TOKEN)",
                    )
                })?;
            let Some(tokens) = &self.tokens else {
                return Err(Status::unauthenticated(
                    "this broker takes no bearer tokens (no grpc_token_file); drop --token, or ask the operator for a client certificate",
                ));
            };
            return tokens.authenticate(token).ok_or_else(|| {
                Status::unauthenticated(
                    "the bearer token is not valid here: it is not in the broker's token file (revoked, mistyped, or for another cluster?)",
                )
            });
        }
        if let Some(p) = cert_principal(r) {
            return Ok(p);
        }
        if self.required {
            return Err(Status::unauthenticated(
                "this broker requires authentication: pass a token with --token (STRATA_TOKEN) or a client certificate with --tls-cert and --tls-key",
            ));
        }
        Ok(Principal::anonymous())
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut r: Request<()>) -> Result<Request<()>, Status> {
        let p = self.principal(&r)?;
        r.extensions_mut().insert(p);
        Ok(r)
    }
}

/// The principal a TLS client certificate names, if the caller presented one.
pub fn cert_principal<T>(r: &Request<T>) -> Option<Principal> {
    let certs = r
        .extensions()
        .get::<strata_tls::PeerInfo>()?
        .certs
        .clone()?;
    strata_auth::cert::principal(certs.first()?)
}

/// The caller [`Authenticate`] found, with the address it called from.
pub fn caller<T>(r: &Request<T>) -> strata_broker::security::Caller {
    let host = r
        .extensions()
        .get::<strata_tls::PeerInfo>()
        .and_then(|p| p.addr)
        .or_else(|| r.remote_addr())
        .map(|a| a.ip());
    strata_broker::security::Caller::new(principal(r), host)
}

/// The caller [`Authenticate`] found (anonymous where it did not run).
pub fn principal<T>(r: &Request<T>) -> Principal {
    r.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::anonymous)
}
