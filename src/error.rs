//! The one error type of the request path, classified by source, and its one status mapping.

use std::time::Duration;

use http::StatusCode;

/// Where an error came from: the client's request, an origin, or the edge itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    Client,
    Origin,
    Internal,
}

/// Which part of an origin exchange timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    FirstByte,
    Idle,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstByte => "first byte",
            TimeoutPhase::Idle => "idle read",
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EdgeError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("method {method} not allowed")]
    MethodNotAllowed {
        method: http::Method,
        /// The `Allow` value of the answer.
        allow: &'static str,
    },
    #[error("not implemented: {0}")]
    NotImplemented(String),
    #[error("host {0:?} is not served here")]
    UnknownHost(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("not in cache and only-if-cached was requested")]
    NotCached,
    #[error("origin {origin} unreachable: {detail}")]
    OriginUnreachable { origin: String, detail: String },
    #[error("origin {origin} timed out ({phase}) after {after:?}")]
    OriginTimeout {
        origin: String,
        phase: TimeoutPhase,
        after: Duration,
    },
    #[error("origin {origin} broke the response: {detail}")]
    OriginProtocol { origin: String, detail: String },
    /// The origin answered with a server error (500, 502, 503, 504) where a stale copy may be
    /// served instead (RFC 5861 §4); the status is passed on when it is not.
    #[error("origin {origin} answered {status}")]
    OriginStatus { origin: String, status: StatusCode },
    #[error("no healthy origin for {key}")]
    NoHealthyOrigin { key: String },
    #[error("too many requests waiting for {key}")]
    Overloaded { key: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl EdgeError {
    pub fn source_class(&self) -> ErrorSource {
        match self {
            EdgeError::BadRequest(_)
            | EdgeError::NotImplemented(_)
            | EdgeError::MethodNotAllowed { .. }
            | EdgeError::UnknownHost(_)
            | EdgeError::Forbidden(_)
            | EdgeError::PreconditionFailed
            | EdgeError::PayloadTooLarge { .. }
            | EdgeError::NotCached => ErrorSource::Client,
            EdgeError::OriginUnreachable { .. }
            | EdgeError::OriginTimeout { .. }
            | EdgeError::OriginProtocol { .. }
            | EdgeError::OriginStatus { .. }
            | EdgeError::NoHealthyOrigin { .. } => ErrorSource::Origin,
            EdgeError::Overloaded { .. } | EdgeError::Internal(_) => ErrorSource::Internal,
        }
    }

    /// The one mapping from error to status code.
    pub fn status(&self) -> StatusCode {
        match self {
            EdgeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EdgeError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            EdgeError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            EdgeError::UnknownHost(_) => StatusCode::MISDIRECTED_REQUEST,
            EdgeError::Forbidden(_) => StatusCode::FORBIDDEN,
            EdgeError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            EdgeError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            // RFC 9111 §5.2.1.7: only-if-cached without a stored response gets 504.
            EdgeError::NotCached => StatusCode::GATEWAY_TIMEOUT,
            EdgeError::OriginUnreachable { .. } | EdgeError::OriginProtocol { .. } => {
                StatusCode::BAD_GATEWAY
            }
            EdgeError::OriginTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            EdgeError::OriginStatus { status, .. } => *status,
            EdgeError::NoHealthyOrigin { .. } | EdgeError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            EdgeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short generic text for the response body; details stay in the logs.
    pub fn public_message(&self) -> &'static str {
        match self {
            EdgeError::BadRequest(_) => "bad request",
            EdgeError::NotImplemented(_) => "not implemented",
            EdgeError::MethodNotAllowed { .. } => "method not allowed",
            EdgeError::UnknownHost(_) => "misdirected request",
            EdgeError::Forbidden(_) => "forbidden",
            EdgeError::PreconditionFailed => "precondition failed",
            EdgeError::PayloadTooLarge { .. } => "payload too large",
            EdgeError::NotCached => "not cached",
            EdgeError::OriginUnreachable { .. } | EdgeError::OriginProtocol { .. } => "bad gateway",
            EdgeError::OriginStatus { .. } => "origin error",
            EdgeError::OriginTimeout { .. } => "gateway timeout",
            EdgeError::NoHealthyOrigin { .. } | EdgeError::Overloaded { .. } => {
                "service unavailable"
            }
            EdgeError::Internal(_) => "internal server error",
        }
    }

    /// True when a different origin might answer where this one failed (before any byte was sent).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EdgeError::OriginUnreachable { .. }
                | EdgeError::OriginTimeout {
                    phase: TimeoutPhase::Connect | TimeoutPhase::FirstByte,
                    ..
                }
        )
    }

    /// The RFC 9211 `detail` of an error response (of a forward error, for origin errors).
    pub fn cache_status_detail(&self) -> &'static str {
        match self {
            EdgeError::OriginUnreachable { .. } => "origin-unreachable",
            EdgeError::OriginTimeout { .. } => "origin-timeout",
            EdgeError::OriginProtocol { .. } | EdgeError::OriginStatus { .. } => "origin-error",
            EdgeError::NoHealthyOrigin { .. } => "no-healthy-origin",
            EdgeError::NotCached => "not-cached",
            EdgeError::Overloaded { .. } => "overloaded",
            _ if self.source_class() == ErrorSource::Client => "client-error",
            _ => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        let t = EdgeError::OriginTimeout {
            origin: "a".into(),
            phase: TimeoutPhase::FirstByte,
            after: Duration::from_secs(1),
        };
        assert_eq!(t.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(t.source_class(), ErrorSource::Origin);
        assert!(t.is_retryable());
        let u = EdgeError::OriginUnreachable {
            origin: "a".into(),
            detail: "refused".into(),
        };
        assert_eq!(u.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            EdgeError::BadRequest("x".into()).source_class(),
            ErrorSource::Client
        );
        assert_eq!(
            EdgeError::MethodNotAllowed {
                method: http::Method::POST,
                allow: "GET, HEAD"
            }
            .status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let idle = EdgeError::OriginTimeout {
            origin: "a".into(),
            phase: TimeoutPhase::Idle,
            after: Duration::from_secs(1),
        };
        assert!(!idle.is_retryable());
    }
}
