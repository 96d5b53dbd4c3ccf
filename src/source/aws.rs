//! The edge to AWS: the only module that imports the SDK.
//!
//! A client factory in the manner of yet-another-cloudwatch-exporter: one
//! shared base from aws-config's default chain (environment, shared profile,
//! web identity, container and instance metadata), then each service's client
//! built from it with its own options. Endpoints are per service
//! (`aws.endpoint_url` is Compute Optimizer's only; STS and Organizations have
//! their own keys), so a VPC interface endpoint for one service never
//! redirects another; the SDK's `AWS_ENDPOINT_URL_<SERVICE>` and
//! `AWS_ENDPOINT_URL` variables apply where no key is set. Each call becomes
//! one plain [`Page`] or one [`ApiError`]; paging, retries and deadlines
//! belong to [`crate::source::paging`], which sees every attempt.

use aws_config::{BehaviorVersion, Region, retry::RetryConfig};
use aws_sdk_computeoptimizer::Client;
use aws_sdk_computeoptimizer::config::http::HttpResponse;
use aws_sdk_computeoptimizer::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_computeoptimizer::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_computeoptimizer::types::{EnrollmentFilter, EnrollmentFilterName};

use crate::config::AwsConfig;
use crate::model::{
    Account, AutomationAccount, AutomationEnrollment, OrgAccount, OrgStatus, Page, PageRequest,
    Root, RuleMode, Status,
};
use crate::source::error::ApiError;
use crate::source::{
    AutomationSource, COMPUTE_OPTIMIZER_PRINCIPAL, NameSource, ORGANIZATIONS_PAGE_SIZE, PageSource,
};

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
    "TooManyRequestsException",
    "ParentNotFoundException",
    "TargetNotFoundException",
    "AWSOrganizationsNotInUseException",
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
    "ServiceException",
    // Organizations: a malformed request (MaxResults, an ID's format).
    "InvalidInputException",
    // Compute Optimizer Automation: the caller may not use it, or is not
    // the management account (ListAccounts).
    "ForbiddenException",
    "NotManagementAccountException",
];

/// STS's own error codes, as they surface inside a credentials failure (the
/// `aws.role_arn` hop, web identity): kept in the `result` label instead of
/// `credentials`, so the cause shows. Throttling and IdP trouble are
/// transient and retried.
const STS_CODES: &[(&str, bool)] = &[
    // The role's trust policy or the caller's sts:AssumeRole refused the hop.
    ("AccessDenied", false),
    ("Throttling", true),
    ("IDPCommunicationError", true),
    ("ExpiredToken", false),
    ("RegionDisabledException", false),
    ("InvalidIdentityToken", false),
    ("MalformedPolicyDocument", false),
    ("PackedPolicyTooLarge", false),
];

/// What a transport failure looks like inside a credentials error's chain:
/// the provider (STS for the role hop, the container or instance endpoint)
/// could not be reached at all.
const NETWORK_MARKERS: &[&str] = &[
    "io error",
    "tcp connect error",
    "dns error",
    "connection refused",
    "connection reset",
    "error trying to connect",
    "timed out",
];

/// A credentials failure, labelled with STS's code where it names one, and
/// as `network` (retried) where the provider could not be reached: the
/// failure table's class for every connection failure.
fn credentials_error(detail: String) -> ApiError {
    let lower = detail.to_ascii_lowercase();
    // "None found anywhere" first: the chain's report of every provider it
    // tried includes instance metadata's own connection failure.
    if !crate::source::error::no_credentials(&detail)
        && NETWORK_MARKERS.iter().any(|m| lower.contains(m))
    {
        return ApiError::new("network", detail, true);
    }
    let named = STS_CODES.iter().find(|(code, _)| {
        detail.match_indices(code).any(|(at, _)| {
            let before = detail[..at].chars().next_back();
            let after = detail[at + code.len()..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
    });
    match named {
        Some((code, retryable)) => ApiError::new(*code, detail, *retryable),
        None => ApiError::new("credentials", detail, false),
    }
}

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
    /// Compute Optimizer Automation (regional: `aws.automation_region`, else
    /// the organisation's region). Building it sends nothing.
    automation: aws_sdk_computeoptimizerautomation::Client,
    /// Region actually in use, for logs.
    pub region: String,
    /// The region Automation is asked in.
    pub automation_region: String,
}

impl AwsSource {
    /// Builds the clients. Fails only when no region can be found anywhere.
    pub async fn connect(
        cfg: &AwsConfig,
        credentials: Option<StaticCredentials>,
    ) -> Result<AwsSource, String> {
        // No endpoint here: one set on the shared config reaches every client.
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // The paging loop retries (and counts) each attempt itself.
            .retry_config(RetryConfig::disabled());
        if let Some(region) = &cfg.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &cfg.profile {
            loader = loader.profile_name(profile);
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
        let base = loader.load().await;
        let region = base
            .region()
            .map(|r| r.to_string())
            .ok_or("no AWS region found: set aws.region in the config file, AWS_REGION, or a region in the AWS profile")?;

        let mut shared = base.to_builder();
        if let Some(role) = &cfg.role_arn {
            // STS in the configured region, at its own endpoint if one is set.
            // The role hop retries on its own (the SDK's standard mode: three
            // attempts, throttling and 5xx): the paging loop cannot retry
            // inside the credentials provider, and one STS throttle during a
            // refresh must not fail a poll.
            let sts = with_endpoint(&base, cfg.sts_endpoint_url.as_deref())
                .to_builder()
                .retry_config(RetryConfig::standard().with_max_attempts(3))
                .build();
            let mut assume = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                .session_name(cfg.session_name.clone())
                .configure(&sts);
            if let Some(id) = cfg.external_id() {
                assume = assume.external_id(id);
            }
            // The provider caches and refreshes the session before it expires;
            // every client shares it.
            shared.set_credentials_provider(Some(SharedCredentialsProvider::new(
                assume.build().await,
            )));
        }
        let shared = shared.build();
        let mut co = aws_sdk_computeoptimizer::config::Builder::from(&shared);
        if let Some(url) = &cfg.endpoint_url {
            co = co.endpoint_url(url);
        }
        let home = organizations_region(&region).await;
        let organizations = cfg.organizations.then(|| {
            // Organizations is global: AWS's own endpoint rules sign for the
            // partition's home region whatever aws.region is, but with a
            // custom endpoint (key or variable) the SDK would sign for
            // aws.region, which AWS refuses. Pinning the region does both.
            let mut conf =
                aws_sdk_organizations::config::Builder::from(&shared).region(Region::new(home));
            if let Some(url) = &cfg.organizations_endpoint_url {
                conf = conf.endpoint_url(url);
            }
            aws_sdk_organizations::Client::from_conf(conf.build())
        });
        let automation_region = cfg.automation_region.clone().unwrap_or(region.clone());
        let mut automation = aws_sdk_computeoptimizerautomation::config::Builder::from(&shared)
            .region(Region::new(automation_region.clone()));
        if let Some(url) = &cfg.automation_endpoint_url {
            automation = automation.endpoint_url(url);
        }
        Ok(AwsSource {
            client: Client::from_conf(co.build()),
            organizations,
            automation: aws_sdk_computeoptimizerautomation::Client::from_conf(automation.build()),
            region,
            automation_region,
        })
    }
}

/// A warning when the profile the chain will read (`aws.profile`, else
/// `AWS_PROFILE`) is defined in none of the shared files: the chain then
/// finds no credentials or region there, and aws-config never says which
/// profile it looked for.
pub async fn missing_profile(cfg: &AwsConfig) -> Option<String> {
    use aws_runtime::env_config::file::EnvConfigFiles as ProfileFiles;
    use aws_types::os_shim_internal::{Env, Fs};
    let (named, from) = match &cfg.profile {
        Some(p) => (p.clone(), "aws.profile"),
        None => (std::env::var("AWS_PROFILE").ok()?, "AWS_PROFILE"),
    };
    let set = aws_config::profile::load(
        &Fs::real(),
        &Env::real(),
        &ProfileFiles::default(),
        Some(named.clone().into()),
    )
    .await;
    let defined: Vec<String> = match &set {
        Ok(set) if set.get_profile(&named).is_some() => return None,
        Ok(set) => set.profiles().map(|p| format!("{p:?}")).collect(),
        Err(_) => Vec::new(),
    };
    Some(format!(
        "{from} names the profile {named:?}, which the shared config and credentials files \
         (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/config and ~/.aws/credentials) \
         do not define (they define {}); no credentials or region come from it",
        if defined.is_empty() {
            "none".to_owned()
        } else {
            defined.join(", ")
        }
    ))
}

/// The region Organizations requests are signed for in `region`'s
/// partition (its home region), as the SDK's own endpoint rules and
/// partition data say: us-east-1, cn-northwest-1, us-gov-west-1, the ISO
/// partitions' and the European Sovereign Cloud's own.
async fn organizations_region(region: &str) -> String {
    use aws_sdk_organizations::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
    let resolved = match Params::builder().region(region).build() {
        Ok(params) => DefaultResolver::new().resolve_endpoint(&params).await.ok(),
        Err(_) => None,
    };
    resolved
        .as_ref()
        .and_then(|e| e.auth_schemes().first()?.get("signingRegion")?.as_string())
        .unwrap_or("us-east-1")
        .to_owned()
}

/// `base`, with its endpoint replaced where `url` is set. The endpoint is
/// marked as set in code: otherwise the SDK ranks `AWS_ENDPOINT_URL` (and
/// the service's own variable) above it, and the key would be ignored.
fn with_endpoint(base: &aws_config::SdkConfig, url: Option<&str>) -> aws_config::SdkConfig {
    match url {
        Some(url) => {
            let mut b = base.to_builder().endpoint_url(url);
            b.insert_origin("endpoint_url", aws_types::origin::Origin::shared_config());
            b.build()
        }
        None => base.clone(),
    }
}

impl PageSource for AwsSource {
    async fn fetch_org_status(&self) -> Result<Option<OrgStatus>, ApiError> {
        let out = self
            .client
            .get_enrollment_status()
            .send()
            .await
            .map_err(classify)?;
        Ok(Some(OrgStatus {
            status: out.status().map(|s| Status::from_api(s.as_str())),
            status_reason: out.status_reason().map(str::to_owned),
            member_accounts_enrolled: out.member_accounts_enrolled(),
            member_accounts_opted_in: out.number_of_member_accounts_opted_in().map(i64::from),
            last_updated: out.last_updated_timestamp().map(|t| t.as_secs_f64()),
        }))
    }

    async fn fetch_page(&self, req: &PageRequest) -> Result<Page<Account>, ApiError> {
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
            page.items.push(Account {
                account_id,
                status: Status::from_api(status.as_str()),
                status_reason: item.status_reason,
                last_updated: item.last_updated_timestamp.map(|t| t.as_secs_f64()),
            });
        }
        Ok(page)
    }
}

/// Only what the exporter keeps leaves this impl (IDs, names, states, tag
/// pairs, the organisation's ID): e-mail addresses, ARNs and the rest stay
/// out. An item missing a field it needs is `None`, counted skipped.
fn page_of<T>(next_token: Option<&str>, items: impl Iterator<Item = Option<T>>) -> Page<T> {
    let mut page = Page {
        next_token: next_token.map(str::to_owned),
        ..Page::default()
    };
    for item in items {
        match item {
            Some(item) => page.items.push(item),
            None => page.skipped += 1,
        }
    }
    page
}

/// `(id, name)` or `(key, value)` pairs, each part required.
fn pairs<'a>(
    next_token: Option<&str>,
    items: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> Page<(String, String)> {
    page_of(
        next_token,
        items.map(|(a, b)| Some((a?.to_owned(), b?.to_owned()))),
    )
}

impl AwsSource {
    fn organizations(&self) -> Result<&aws_sdk_organizations::Client, ApiError> {
        self.organizations.as_ref().ok_or_else(|| ApiError {
            code: "other".into(),
            message: "aws.organizations is off".into(),
            retryable: false,
        })
    }
}

impl NameSource for AwsSource {
    async fn list_roots(&self, token: Option<String>) -> Result<Page<Root>, ApiError> {
        let out = self
            .organizations()?
            .list_roots()
            .max_results(i32::from(ORGANIZATIONS_PAGE_SIZE))
            .set_next_token(token)
            .send()
            .await
            .map_err(classify)?;
        Ok(page_of(
            out.next_token(),
            out.roots().iter().map(|r| {
                Some(Root {
                    id: r.id()?.to_owned(),
                    name: r.name()?.to_owned(),
                    organization: r.arn().and_then(Root::organization_of),
                })
            }),
        ))
    }

    async fn list_ous(
        &self,
        parent: &str,
        token: Option<String>,
    ) -> Result<Page<(String, String)>, ApiError> {
        let out = self
            .organizations()?
            .list_organizational_units_for_parent()
            .parent_id(parent)
            .max_results(i32::from(ORGANIZATIONS_PAGE_SIZE))
            .set_next_token(token)
            .send()
            .await
            .map_err(classify)?;
        Ok(pairs(
            out.next_token(),
            out.organizational_units()
                .iter()
                .map(|o| (o.id(), o.name())),
        ))
    }

    async fn list_accounts_for_parent(
        &self,
        parent: &str,
        token: Option<String>,
    ) -> Result<Page<OrgAccount>, ApiError> {
        let out = self
            .organizations()?
            .list_accounts_for_parent()
            .parent_id(parent)
            .max_results(i32::from(ORGANIZATIONS_PAGE_SIZE))
            .set_next_token(token)
            .send()
            .await
            .map_err(classify)?;
        // `Name` is optional in the model: an account without one is kept
        // (its OU and tags still route alerts); one without an ID is not.
        Ok(page_of(
            out.next_token(),
            out.accounts().iter().map(|a| {
                Some(OrgAccount {
                    id: a.id()?.to_owned(),
                    name: a.name().unwrap_or_default().to_owned(),
                    state: a.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                })
            }),
        ))
    }

    async fn list_tags(
        &self,
        account: &str,
        token: Option<String>,
    ) -> Result<Page<(String, String)>, ApiError> {
        let out = self
            .organizations()?
            .list_tags_for_resource()
            .resource_id(account)
            .set_next_token(token)
            .send()
            .await
            .map_err(classify)?;
        Ok(pairs(
            out.next_token(),
            out.tags().iter().map(|t| (Some(t.key()), Some(t.value()))),
        ))
    }

    async fn list_service_access(
        &self,
        token: Option<String>,
    ) -> Result<Page<(String, Option<f64>)>, ApiError> {
        let out = self
            .organizations()?
            .list_aws_service_access_for_organization()
            .max_results(i32::from(ORGANIZATIONS_PAGE_SIZE))
            .set_next_token(token)
            .send()
            .await
            .map_err(classify)?;
        Ok(page_of(
            out.next_token(),
            out.enabled_service_principals().iter().map(|p| {
                Some((
                    p.service_principal()?.to_owned(),
                    p.date_enabled().map(|t| t.as_secs_f64()),
                ))
            }),
        ))
    }

    async fn list_delegated_administrators(
        &self,
        token: Option<String>,
    ) -> Result<Page<(String, String)>, ApiError> {
        let out = self
            .organizations()?
            .list_delegated_administrators()
            .service_principal(COMPUTE_OPTIMIZER_PRINCIPAL)
            .max_results(i32::from(ORGANIZATIONS_PAGE_SIZE))
            .set_next_token(token)
            .send()
            .await
            .map_err(classify)?;
        // `Name` is optional: an administrator without one is still listed.
        Ok(page_of(
            out.next_token(),
            out.delegated_administrators()
                .iter()
                .map(|a| Some((a.id()?.to_owned(), a.name().unwrap_or_default().to_owned()))),
        ))
    }
}

impl AutomationSource for AwsSource {
    async fn list_automation_accounts(
        &self,
        max_results: u16,
        token: Option<String>,
    ) -> Result<Page<AutomationAccount>, ApiError> {
        let out = self
            .automation
            .list_accounts()
            .max_results(i32::from(max_results))
            .set_next_token(token)
            .send()
            .await
            .map_err(classify)?;
        // Every field but the reason is required in the model: an item the
        // SDK could read has them all.
        Ok(page_of(
            out.next_token(),
            out.accounts().iter().map(|a| {
                Some(AutomationAccount {
                    account_id: a.account_id().to_owned(),
                    status: Status::from_api(a.status().as_str()),
                    rule_mode: Some(RuleMode::from_api(a.organization_rule_mode().as_str())),
                    status_reason: a.status_reason().map(str::to_owned),
                    last_updated: Some(a.last_updated_timestamp().as_secs_f64()),
                })
                .filter(|a| !a.account_id.is_empty())
            }),
        ))
    }

    async fn automation_enrollment(&self) -> Result<AutomationEnrollment, ApiError> {
        let out = self
            .automation
            .get_enrollment_configuration()
            .send()
            .await
            .map_err(classify)?;
        Ok(AutomationEnrollment {
            status: Status::from_api(out.status().as_str()),
            status_reason: out.status_reason().map(str::to_owned),
            rule_mode: out
                .organization_rule_mode()
                .map(|m| RuleMode::from_api(m.as_str())),
            last_updated: out.last_updated_timestamp().map(|t| t.as_secs_f64()),
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
            credentials_error(detail)
        }
        SdkError::DispatchFailure(_) => ApiError::new("network", detail, true),
        SdkError::ResponseError(_) => ApiError::new("invalid_response", detail, true),
        SdkError::ConstructionFailure(_) if looks_like_credentials(&detail) => {
            credentials_error(detail)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn organizations_is_signed_for_its_partitions_home_region() {
        for (region, home) in [
            ("eu-west-1", "us-east-1"),
            ("us-east-1", "us-east-1"),
            ("cn-north-1", "cn-northwest-1"),
            ("us-gov-east-1", "us-gov-west-1"),
            ("us-iso-west-1", "us-iso-east-1"),
            ("us-isob-east-1", "us-isob-east-1"),
            ("eusc-de-east-1", "eusc-de-east-1"),
        ] {
            assert_eq!(organizations_region(region).await, home, "{region}");
        }
    }

    #[test]
    fn sts_codes_in_a_credentials_failure_are_found_as_whole_words() {
        let e = credentials_error(
            "failed to load credentials: RegionDisabledException: STS is not activated".into(),
        );
        assert_eq!(e.code, "RegionDisabledException");
        assert!(!e.retryable);
        for (detail, code) in [
            // Another service's code that merely starts the same is not STS's.
            ("ExpiredTokenException: x", "credentials"),
            ("no providers in chain provided credentials", "credentials"),
            // STS's AccessDenied, not Compute Optimizer's AccessDeniedException.
            (
                "service error: AccessDenied: User: x is not authorized",
                "AccessDenied",
            ),
            ("AccessDeniedException: no", "credentials"),
        ] {
            assert_eq!(credentials_error(detail.into()).code, code, "{detail}");
        }
        assert!(credentials_error("service error: Throttling: Rate exceeded".into()).retryable);
    }

    #[test]
    fn an_unreachable_credentials_provider_is_a_network_failure() {
        for detail in [
            "credentials: dispatch failure: other: an error occurred while loading credentials: dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error 111)",
            "an error occurred while loading credentials: dispatch failure: io error: dns error: failed to lookup address information",
        ] {
            let e = credentials_error(detail.into());
            assert_eq!(e.code, "network", "{detail}");
            assert!(e.retryable);
        }
        // None found anywhere stays a credentials failure, even though the
        // chain's report shows instance metadata unreachable.
        let none = "dispatch failure: other: the credential provider was not enabled: no credentials found in chain. Attempted:\n  Environment: the credential provider was not enabled\n  Ec2InstanceMetadata: failed to load IMDS session token: dispatch failure: io error: tcp connect error: Connection refused";
        assert_eq!(credentials_error(none.into()).code, "credentials");
    }

    #[test]
    fn known_codes_are_listed_once_each_and_cover_organizations() {
        let mut seen = std::collections::HashSet::new();
        for code in KNOWN_CODES {
            assert!(seen.insert(code), "{code} listed twice");
        }
        for code in [
            "InvalidInputException",
            "TooManyRequestsException",
            "AWSOrganizationsNotInUseException",
        ] {
            assert!(KNOWN_CODES.contains(&code), "{code}");
        }
    }
}
