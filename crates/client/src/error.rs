use tonic::Code;

/// Everything a client call can fail with. Messages come from the broker where it
/// answered, and say what to do where it did not.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach a broker at {addr}: {reason}; is `strata server` running there? (set --broker or STRATA_BROKER)"
    )]
    Unreachable { addr: String, reason: String },
    #[error("invalid broker address {addr:?}: {reason}; use HOST:PORT such as 127.0.0.1:9292")]
    InvalidAddress { addr: String, reason: String },
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
            Code::Unavailable | Code::Unknown
                if s.message().contains("transport") || s.message().contains("connect") =>
            {
                Self::Unreachable {
                    addr: addr.to_string(),
                    reason: s.message().to_string(),
                }
            }
            code => Self::Broker {
                code,
                message: s.message().to_string(),
            },
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
