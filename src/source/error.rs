//! API and poll errors. Each renders as one line that says what is wrong,
//! and a failed poll also says how to fix it ([`PollError::advice`]).

use std::time::Duration;

use crate::config::{PollOptions, format_duration};
use crate::model::Status;

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

    /// The upstream asks us to slow down: Compute Optimizer's
    /// `ThrottlingException`, Organizations' `TooManyRequestsException`,
    /// STS's `Throttling`.
    pub fn is_throttling(&self) -> bool {
        matches!(
            self.code.as_str(),
            "ThrottlingException" | "TooManyRequestsException" | "Throttling"
        )
    }
}

/// Why a listing (every page of one operation) did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PollError {
    #[error("{operation} page {page} failed after {attempts} attempt(s): {source}")]
    Api {
        operation: &'static str,
        page: usize,
        attempts: u32,
        source: ApiError,
    },
    #[error("{operation} did not finish within {} (reached page {page})", format_duration(*timeout))]
    Timeout {
        operation: &'static str,
        timeout: Duration,
        page: usize,
    },
    #[error(
        "{operation} page {page} returned a nextToken already seen in this poll; stopping instead of looping"
    )]
    RepeatedToken {
        operation: &'static str,
        page: usize,
    },
    #[error(
        "{operation} returned more than {limit} pages; no real organisation needs that many, stopping"
    )]
    TooManyPages {
        operation: &'static str,
        limit: usize,
    },
}

impl PollError {
    /// The API error code behind the failure, if any.
    pub fn code(&self) -> &str {
        match self {
            PollError::Api { source, .. } => &source.code,
            PollError::Timeout { .. } => "timeout",
            PollError::RepeatedToken { .. } => "repeated_token",
            PollError::TooManyPages { .. } => "too_many_pages",
        }
    }

    /// What is wrong and how to fix it, for the log line of a failed poll.
    pub fn advice(&self, opts: &PollOptions) -> Option<String> {
        let role = match &opts.role_arn {
            Some(r) => {
                format!(" (the exporter assumes role {r}: check that role's policy and trust)")
            }
            None => String::new(),
        };
        let endpoint = match &opts.endpoint_url {
            Some(u) => format!("aws.endpoint_url ({u})"),
            None => "the regional endpoint (aws.region, AWS_ENDPOINT_URL_COMPUTE_OPTIMIZER)".into(),
        };
        match self.code() {
            "credentials" if no_credentials(&self.to_string()) => Some(
                "no credentials were found: the default chain looked at AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the shared config and credentials files (~/.aws, AWS_PROFILE or aws.profile), web identity (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, as IRSA sets them), the ECS container endpoint and EC2 instance metadata; give the exporter one of them".into(),
            ),
            "RegionDisabledException" => Some(format!(
                "STS is not active in the region it was called in: activate it for the account (IAM, Account settings, Security Token Service endpoints) or set aws.sts_endpoint_url to an active region's STS{role}"
            )),
            "ExpiredToken" | "InvalidIdentityToken" | "IDPCommunicationError" => Some(
                "the web identity token was refused or could not be checked: with IRSA, check the service account's role annotation, the role's trust of the cluster's OIDC provider and that the projected token is mounted (AWS_WEB_IDENTITY_TOKEN_FILE)".into(),
            ),
            "AccessDenied" => Some(format!(
                "STS refused the role hop{}: the role's trust policy must name the exporter's own role as principal with sts:AssumeRole and the external ID the exporter sends (aws.external_id or aws.external_id_file; deploy/iam/reader-trust.json), and the exporter's role needs sts:AssumeRole on the role (deploy/iam/exporter-assume-reader.json)",
                opts.role_arn.as_deref().map(|r| format!(" into {r}")).unwrap_or_default()
            )),
            "Throttling" => Some(
                "STS is throttling credential requests; they are retried, and a refresh is rare: if it persists, look for other callers of STS in the account".into(),
            ),
            "AccessDeniedException"
            | "MissingAuthenticationToken"
            | "MalformedPolicyDocument"
            | "PackedPolicyTooLarge"
            | "credentials"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "ExpiredTokenException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch" => Some(format!(
                "the credentials need IAM permission compute-optimizer:GetEnrollmentStatusesForOrganization, and the call must come from the organisation's management account or a delegated administrator for Compute Optimizer, with trusted access for Compute Optimizer enabled in Organizations (aws organizations enable-aws-service-access --service-principal compute-optimizer.amazonaws.com){role}"
            )),
            "InvalidParameterValueException" => Some(format!(
                "the request was rejected as invalid: maxResults={} statuses={:?}; check poll.page_size and poll.statuses",
                opts.page_size,
                opts.statuses.iter().map(Status::as_str).collect::<Vec<_>>()
            )),
            "ThrottlingException" | "TooManyRequestsException" => Some(format!(
                "AWS is throttling the exporter: raise poll.interval (now {}), aws.retry_backoff (now {}) or aws.max_attempts (now {})",
                format_duration(opts.interval),
                format_duration(opts.retry_backoff),
                opts.max_attempts
            )),
            "InternalServerException" | "ServiceUnavailableException" | "ServiceException" => {
                Some(format!(
                    "AWS answered with server errors; they are usually brief: raise aws.max_attempts (now {}) to ride them out",
                    opts.max_attempts
                ))
            }
            "network" if self.to_string().contains("loading credentials") => Some(format!(
                "cannot reach the credentials provider{}: check DNS resolution and egress to STS (aws.sts_endpoint_url, AWS_ENDPOINT_URL_STS, or sts.<region>.amazonaws.com; a VPC interface endpoint for sts in private subnets) or to the container or instance metadata endpoint, and HTTPS_PROXY/NO_PROXY where a proxy is required",
                if opts.role_arn.is_some() { " (STS, for the aws.role_arn hop)" } else { "" }
            )),
            "network" => Some(format!(
                "cannot reach Compute Optimizer: check DNS resolution and egress to {endpoint} (security groups, NACLs, a VPC interface endpoint for compute-optimizer in private subnets), and HTTPS_PROXY/NO_PROXY where a proxy is required"
            )),
            "invalid_response" => Some(format!(
                "the answer was not a Compute Optimizer response: check that {endpoint} reaches Compute Optimizer and not a proxy or another service"
            )),
            "timeout" => Some(format!(
                "raise poll.timeout (now {}) or aws.request_timeout (now {})",
                format_duration(opts.timeout),
                format_duration(opts.request_timeout)
            )),
            _ => None,
        }
    }
}

/// How aws-config says that no provider of the chain had credentials.
const NO_CREDENTIALS: &[&str] = &[
    "no providers in chain provided credentials",
    "no credentials found in chain",
    "the credential provider was not enabled",
];

/// True when a credentials failure is "none found anywhere", not a
/// provider's error (as aws-config words it).
pub fn no_credentials(message: &str) -> bool {
    NO_CREDENTIALS.iter().any(|m| message.contains(m))
}
