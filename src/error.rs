//! Error types. Each renders as one line that says what is wrong and where.

use std::path::PathBuf;
use std::time::Duration;

/// A configuration that cannot be used. Always names the file, and the key
/// and line where they are known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}{}: {}{msg}", path.display(), location(*line, *column), key_prefix(key))]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        key: Option<String>,
        msg: String,
    },
    #[error("{}{}: {key}: {msg}", path.display(), location(*line, None))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        msg: String,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn key_prefix(key: &Option<String>) -> String {
    match key {
        Some(k) if !k.is_empty() && k != "." => format!("{k}: "),
        _ => String::new(),
    }
}

/// One failed API attempt, reduced to what the exporter needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Bounded value used as the `result` label: a modelled AWS error code,
    /// `timeout`, `network`, `invalid_response`, `credentials` or `other`.
    pub code: String,
    /// Human-readable detail for logs (may contain the upstream's message).
    pub message: String,
    /// Worth another attempt within the same poll.
    pub retryable: bool,
}

impl ApiError {
    pub fn new(code: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        ApiError {
            code: code.into(),
            message: message.into(),
            retryable,
        }
    }
}

/// Why a poll did not produce a complete organisation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PollError {
    #[error("page {page} failed after {attempts} attempt(s): {source}")]
    Api {
        page: usize,
        attempts: u32,
        source: ApiError,
    },
    #[error("poll did not finish within {}s (reached page {page})", timeout.as_secs_f64())]
    Timeout { timeout: Duration, page: usize },
    #[error(
        "page {page} returned a nextToken already seen in this poll; stopping instead of looping"
    )]
    RepeatedToken { page: usize },
    #[error("page {page} was empty but carried a nextToken; refusing to follow it")]
    EmptyPageWithToken { page: usize },
    #[error("more than {limit} pages; no real organisation needs that many, stopping")]
    TooManyPages { limit: usize },
}

impl PollError {
    /// The API error code behind the failure, if any.
    pub fn code(&self) -> &str {
        match self {
            PollError::Api { source, .. } => &source.code,
            PollError::Timeout { .. } => "timeout",
            PollError::RepeatedToken { .. } => "repeated_token",
            PollError::EmptyPageWithToken { .. } => "empty_page",
            PollError::TooManyPages { .. } => "too_many_pages",
        }
    }
}
