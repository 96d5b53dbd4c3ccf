//! What the producers and the paging loop take from a configuration.
use std::time::Duration;

use super::{AwsConfig, Config, PollConfig};
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
    /// From a file with only `[aws]` (tests, tools); an organisation's
    /// come from [`super::OrgSettings::poll_options`].
    pub fn from_config(c: &Config) -> PollOptions {
        PollOptions::new(&c.aws, &c.poll)
    }

    pub fn new(aws: &AwsConfig, poll: &PollConfig) -> PollOptions {
        PollOptions {
            interval: poll.interval,
            timeout: poll.timeout,
            // Validated to 1..=100 at load time.
            page_size: poll.page_size.clamp(1, 100) as u8,
            statuses: poll.status_filter(),
            max_attempts: aws.max_attempts.max(1),
            retry_backoff: aws.retry_backoff,
            request_timeout: aws.request_timeout,
            role_arn: aws.role_arn.clone(),
            endpoint_url: aws.endpoint_url.clone(),
        }
    }
}
