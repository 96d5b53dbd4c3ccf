//! The edge to AWS: the only module that imports the SDK.
//!
//! It builds a Compute Optimizer client from aws-config's default chain
//! (environment, shared profile, web identity, container and instance
//! metadata), optionally assumes a role through STS, and turns one SDK call
//! into one plain [`Page`] or one [`ApiError`]. Pagination, retries and
//! deadlines belong to the scheduler, which sees every attempt.

use aws_config::{BehaviorVersion, Region, retry::RetryConfig};
use aws_sdk_computeoptimizer::Client;
use aws_sdk_computeoptimizer::config::http::HttpResponse;
use aws_sdk_computeoptimizer::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_computeoptimizer::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_computeoptimizer::types::{EnrollmentFilter, EnrollmentFilterName};

use crate::config::AwsConfig;
use crate::error::ApiError;
use crate::model::{Account, OrgStatus, Page, PageRequest, Status};
use crate::names::{NameSource, NamesPage};
use crate::scheduler::PageSource;

pub const OPERATION: &str = "GetEnrollmentStatusesForOrganization";

/// Error codes kept as they are in the `result` label; anything else the
/// upstream sends is counted as `other` so a misbehaving endpoint cannot
/// create unbounded series.
const KNOWN_CODES: &[&str] = &[
    "AccessDeniedException",
    "InternalServerException",
    "InvalidParameterValueException",
    "MissingAuthenticationToken",
    "ServiceUnavailableException",
    "ThrottlingException",
    "OptInRequiredException",
    "ResourceNotFoundException",
    "LimitExceededException",
    "ExpiredTokenException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "RequestExpired",
    "SignatureDoesNotMatch",
    "AWSOrganizationsNotInUseException",
    "TooManyRequestsException",
    "ServiceException",
];

/// Static keys, for tests and tools that must not touch the environment.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticCredentials(<redacted>)")
    }
}

/// A Compute Optimizer client ready to page through the organisation.
#[derive(Clone, Debug)]
pub struct AwsSource {
    client: Client,
    /// AWS Organizations, when account names are wanted (`aws.organizations`).
    organizations: Option<aws_sdk_organizations::Client>,
    /// Region actually in use, for logs.
    pub region: String,
}

impl AwsSource {
    /// Builds the client. Fails only when no region can be found anywhere.
    pub async fn connect(
        cfg: &AwsConfig,
        credentials: Option<StaticCredentials>,
    ) -> Result<AwsSource, String> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // The scheduler retries (and counts) each attempt itself.
            .retry_config(RetryConfig::disabled());
        if let Some(region) = &cfg.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &cfg.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &cfg.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(c) = credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                None,
                None,
                "static",
            ));
        }
        let sdk = loader.load().await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .ok_or("no AWS region found: set aws.region in the config file, AWS_REGION, or a region in the AWS profile")?;

        let base = sdk.clone();
        let mut sdk = sdk.into_builder();
        if let Some(role) = &cfg.role_arn {
            let mut assume = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                .session_name(cfg.session_name.clone())
                .configure(&base);
            if let Some(id) = &cfg.external_id {
                assume = assume.external_id(id.clone());
            }
            // The provider caches and refreshes the session before it expires;
            // both clients share it.
            sdk.set_credentials_provider(Some(SharedCredentialsProvider::new(
                assume.build().await,
            )));
        }
        let sdk = sdk.build();
        Ok(AwsSource {
            client: Client::new(&sdk),
            organizations: cfg
                .organizations
                .then(|| aws_sdk_organizations::Client::new(&sdk)),
            region,
        })
    }
}

impl PageSource for AwsSource {
    fn operation(&self) -> &'static str {
        OPERATION
    }

    async fn fetch_org_status(&self) -> Result<Option<OrgStatus>, ApiError> {
        let out = self
            .client
            .get_enrollment_status()
            .send()
            .await
            .map_err(classify)?;
        Ok(Some(OrgStatus {
            status: out.status().map_or(Status::Other(String::new()), |s| {
                Status::from_api(s.as_str())
            }),
            status_reason: out.status_reason().map(str::to_owned),
            member_accounts_enrolled: out.member_accounts_enrolled(),
            member_accounts_opted_in: out.number_of_member_accounts_opted_in().map(i64::from),
            last_updated: out.last_updated_timestamp().map(|t| t.as_secs_f64()),
        }))
    }

    async fn fetch_page(&self, req: &PageRequest) -> Result<Page, ApiError> {
        let mut call = self
            .client
            .get_enrollment_statuses_for_organization()
            .max_results(i32::from(req.max_results))
            .set_next_token(req.next_token.clone());
        if !req.statuses.is_empty() {
            let mut filter = EnrollmentFilter::builder().name(EnrollmentFilterName::Status);
            for s in &req.statuses {
                filter = filter.values(s.as_str());
            }
            call = call.filters(filter.build());
        }
        let out = call.send().await.map_err(classify)?;
        let mut page = Page {
            next_token: out.next_token,
            ..Page::default()
        };
        for item in out.account_enrollment_statuses.unwrap_or_default() {
            let (Some(account_id), Some(status)) = (item.account_id, item.status) else {
                page.skipped += 1;
                continue;
            };
            page.accounts.push(Account {
                account_id,
                status: Status::from_api(status.as_str()),
                status_reason: item.status_reason,
                last_updated: item.last_updated_timestamp.map(|t| t.as_secs_f64()),
            });
        }
        Ok(page)
    }
}

impl NameSource for AwsSource {
    async fn list_accounts(&self, token: Option<String>) -> Result<NamesPage, ApiError> {
        let Some(orgs) = &self.organizations else {
            return Ok(NamesPage::default());
        };
        let out = orgs
            .list_accounts()
            .max_results(crate::names::PAGE_SIZE)
            .set_next_token(token)
            .send()
            .await
            .map_err(classify)?;
        // Only ID and name: e-mail addresses and the rest stay out.
        let names = out
            .accounts()
            .iter()
            .filter_map(|a| Some((a.id()?.to_owned(), a.name()?.to_owned())))
            .collect();
        Ok(NamesPage {
            names,
            next_token: out.next_token().map(str::to_owned),
        })
    }
}

/// Reduces an SDK error to a bounded code, a message and whether to retry.
/// Both SDK crates use the smithy runtime's `HttpResponse`.
fn classify<E>(err: SdkError<E, HttpResponse>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = error_chain(&err);
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            match service.err().code() {
                Some(code) => {
                    let message = service.err().message().unwrap_or("");
                    let label = if KNOWN_CODES.contains(&code) {
                        code
                    } else {
                        "other"
                    };
                    let retryable = matches!(
                        code,
                        "ThrottlingException"
                            | "TooManyRequestsException"
                            | "InternalServerException"
                            | "ServiceUnavailableException"
                            | "ServiceException"
                    ) || status >= 500
                        || status == 429;
                    ApiError::new(
                        label,
                        format!("{code} (HTTP {status}): {message}"),
                        retryable,
                    )
                }
                // A body the SDK could not read (wrong protocol, truncated, a proxy's page).
                None => ApiError::new(
                    "invalid_response",
                    format!("unreadable response (HTTP {status}): {detail}"),
                    status >= 500 || status == 429,
                ),
            }
        }
        SdkError::TimeoutError(_) => ApiError::new("timeout", detail, true),
        SdkError::DispatchFailure(d) if d.is_timeout() => ApiError::new("timeout", detail, true),
        SdkError::DispatchFailure(d) if d.is_io() => ApiError::new("network", detail, true),
        SdkError::DispatchFailure(_) if looks_like_credentials(&detail) => {
            ApiError::new("credentials", detail, false)
        }
        SdkError::DispatchFailure(_) => ApiError::new("network", detail, true),
        SdkError::ResponseError(_) => ApiError::new("invalid_response", detail, true),
        SdkError::ConstructionFailure(_) if looks_like_credentials(&detail) => {
            ApiError::new("credentials", detail, false)
        }
        _ => ApiError::new("other", detail, false),
    }
}

/// "outer: cause: root cause" on one line (DisplayErrorContext adds a Debug dump).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn looks_like_credentials(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("credential") || d.contains("identity")
}
