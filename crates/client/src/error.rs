use tonic::Code;

/// Everything a client call can fail with. Messages come from the broker where it
/// answered, and say what to do where it did not.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach a broker at {addr}: {reason}; {hint}", hint = unreachable_hint(reason))]
    Unreachable { addr: String, reason: String },
    #[error("invalid broker address {addr:?}: {reason}; use HOST:PORT such as 127.0.0.1:9292")]
    InvalidAddress { addr: String, reason: String },
    #[error(
        "TLS: {reason}; check --tls-ca, --tls-cert and --tls-key (or STRATA_TLS_CA, STRATA_TLS_CERT, STRATA_TLS_KEY)"
    )]
    Tls { reason: String },
    #[error("{message}")]
    Broker { code: Code, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("the producer is closed: {0}")]
    Closed(String),
}

impl ClientError {
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether trying again may succeed: the broker is unreachable or answered that
    /// it cannot serve this now (a leader or coordinator moving, a deadline).
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Broker { code, .. } => matches!(
                code,
                Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
            ),
            _ => false,
        }
    }

    pub(crate) fn from_status(addr: &str, s: tonic::Status) -> Self {
        match s.code() {
            // A status the transport made (its source is the I/O or TLS error), not
            // one the broker sent.
            Code::Unavailable | Code::Unknown
                if std::error::Error::source(&s).is_some()
                    || s.message().contains("transport")
                    || s.message().contains("connect") =>
            {
                Self::Unreachable {
                    addr: addr.to_string(),
                    reason: root_cause(&s),
                }
            }
            // The connection itself failed (a TLS listener cutting off a plain-text
            // client), not one stream: a status the transport made, never the broker.
            Code::Cancelled | Code::Internal
                if std::error::Error::source(&s).is_some()
                    && (s.message().contains("operation was canceled")
                        || s.message().contains("h2 protocol error: http2 error")) =>
            {
                Self::Unreachable {
                    addr: addr.to_string(),
                    reason: root_cause(&s),
                }
            }
            code => Self::Broker {
                code,
                message: s.message().to_string(),
            },
        }
    }
}

/// The innermost error under `e`: for a transport failure, the one that says what went
/// wrong (a refused connection, a TLS alert), not "transport error".
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut reason = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        reason = s.to_string();
        src = s.source();
    }
    reason
}

/// What to check, given why a broker could not be reached.
fn unreachable_hint(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("corrupt message") || r.contains("invalidcontenttype") {
        "the broker does not speak TLS there: drop --tls-ca/--tls-cert/--tls-key (STRATA_TLS_*) or connect to its TLS port"
    } else if r.contains("certificate")
        || r.contains("alert")
        || r.contains("tls")
        || r.contains("handshake")
    {
        "the TLS handshake failed: check --tls-ca (the CA of the broker's certificate) and, where the broker requires one, --tls-cert and --tls-key (or STRATA_TLS_CA, STRATA_TLS_CERT, STRATA_TLS_KEY)"
    } else if r.contains("connection reset")
        || r.contains("broken pipe")
        || r.contains("frame with invalid size")
        || r.contains("connection closed")
    {
        "the broker closed the connection: if it serves TLS, connect with --tls-ca (STRATA_TLS_CA)"
    } else {
        "is `strata server` running there? (set --broker or STRATA_BROKER)"
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
