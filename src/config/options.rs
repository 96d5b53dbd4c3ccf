//! What the producers and the paging loop take from a configuration.
use std::time::Duration;

use super::Config;
use crate::model::Status;

/// What one poll needs to know, taken from the configuration.
#[derive(Debug, Clone)]
pub struct PollOptions {
    pub interval: Duration,
    pub timeout: Duration,
    pub page_size: u8,
    pub statuses: Vec<Status>,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub request_timeout: Duration,
    /// Only for the advice in error logs.
    pub role_arn: Option<String>,
    pub endpoint_url: Option<String>,
}

impl PollOptions {
    pub fn from_config(c: &Config) -> PollOptions {
        PollOptions {
            interval: c.poll.interval,
            timeout: c.poll.timeout,
            // Validated to 1..=100 at load time.
            page_size: c.poll.page_size.clamp(1, 100) as u8,
            statuses: c.poll.status_filter(),
            max_attempts: c.aws.max_attempts.max(1),
            retry_backoff: c.aws.retry_backoff,
            request_timeout: c.aws.request_timeout,
            role_arn: c.aws.role_arn.clone(),
            endpoint_url: c.aws.endpoint_url.clone(),
        }
    }
}
