//! Compute Optimizer Automation's enrollment (`aws.automation`): every
//! account's Automation status and rule mode (`ListAccounts`, every page,
//! 1,000 a page) and the calling account's own
//! (`GetEnrollmentConfiguration`), on `aws.automation_interval`.
//!
//! A producer like the others: its own segment, its own health
//! (`aws_compute_optimizer_automation_up` and its last success), its
//! requests counted with every other. A failed round keeps the last good
//! segment and never touches the enrollment poll's: Automation is regional
//! and opt-in, and an organisation not enrolled in it, or a region that
//! does not offer it, is an advised error in the log, not a wipe.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{PollOptions, format_duration};
use crate::expose::exposition::{Segment, render_in_turn};
use crate::expose::metrics::{OrgMetrics, render_automation};
use crate::model::{AutomationAccounts, AutomationEnrollment, AutomationSnapshot};
use crate::produce::{Health, Producer, Round, Stopped, blocking, drive};
use crate::shutdown::Shutdown;
use crate::source::error::PollError;
use crate::source::paging::{self, Listing};
use crate::source::{
    AUTOMATION_ACCOUNTS, AUTOMATION_ENROLLMENT, AUTOMATION_PAGE_SIZE, AutomationSource,
};
use crate::state::Org;

/// Its slot in the organisation's segments, and its name in the fleet.
pub const NAME: &str = "automation";

pub const UP: &str = "aws_compute_optimizer_automation_up";
pub const LAST_SUCCESS: &str = "aws_compute_optimizer_automation_last_success_timestamp_seconds";

/// What the producer takes from the configuration besides the retry
/// settings every listing shares.
#[derive(Debug, Clone)]
pub struct AutomationOptions {
    /// `aws.automation_interval` (default `poll.interval`); also the
    /// deadline of one round, so rounds never overlap.
    pub interval: Duration,
    /// The region Automation is asked in, and its endpoint override, for
    /// the advice of a failed round.
    pub region: String,
    pub endpoint_url: Option<String>,
}

/// Its health series, the same for every start of the producer.
pub fn health(m: &OrgMetrics) -> Health {
    Health {
        up: m.gauge(
            UP,
            "1 if the latest poll of Compute Optimizer Automation (aws.automation) listed every account, 0 if it failed. Absent while it is off or before its first end.",
        ),
        last_success: m.gauge(
            LAST_SUCCESS,
            "Unix time at which the latest complete poll of Compute Optimizer Automation ended.",
        ),
        duration: None,
        rounds: None,
    }
}

/// The Automation poll as a producer: a round lists every account and
/// publishes them in one swap; rounds start `interval` apart.
pub struct Automation<S> {
    source: S,
    options: AutomationOptions,
    opts: PollOptions,
    org: Arc<Org>,
    /// The last answer of `GetEnrollmentConfiguration`, kept when it fails.
    management: Option<AutomationEnrollment>,
    /// What the latest round has to log, once it is recorded.
    outcome: Option<Outcome>,
}

enum Outcome {
    Success {
        accounts: usize,
        pages: usize,
        took: Duration,
    },
    Failure {
        code: String,
        error: String,
        advice: String,
    },
}

impl<S: AutomationSource> Automation<S> {
    pub fn new(
        source: S,
        options: AutomationOptions,
        opts: PollOptions,
        org: Arc<Org>,
    ) -> Automation<S> {
        Automation {
            source,
            options,
            opts,
            org,
            management: None,
            outcome: None,
        }
    }

    /// Every page of `ListAccounts` under one deadline, then one attempt at
    /// `GetEnrollmentConfiguration` (whose failure keeps its last answer).
    async fn poll(&mut self) -> Result<AutomationSnapshot, PollError> {
        let listing = Listing::new(
            AUTOMATION_ACCOUNTS,
            usize::from(AUTOMATION_PAGE_SIZE),
            self.options.interval,
            &self.opts,
            &self.org.metrics.api_requests,
        );
        let source = &self.source;
        let listed = paging::list_all(&listing, |token| async move {
            source
                .list_automation_accounts(AUTOMATION_PAGE_SIZE, token)
                .await
        })
        .await?;
        listed.count_skipped(
            &self.org.metrics.accounts_skipped,
            crate::expose::metrics::SKIPPED_MISSING,
        );
        let mut snap = AutomationSnapshot {
            pages: listed.pages,
            accounts: AutomationAccounts::from_listed(listed.items),
            management: None,
        };
        if let Some(management) = self.enrollment(listing.deadline).await {
            self.management = Some(management);
        }
        snap.management = self.management.clone();
        Ok(snap)
    }

    async fn enrollment(&self, deadline: Instant) -> Option<AutomationEnrollment> {
        let source = &self.source;
        let err = match paging::once(
            AUTOMATION_ENROLLMENT,
            deadline,
            self.opts.request_timeout,
            &self.org.metrics.api_requests,
            "no response before the round's deadline",
            async { source.automation_enrollment().await.map(Some) },
        )
        .await
        {
            Ok(enrollment) => return enrollment,
            Err(e) => e,
        };
        tracing::warn!(
            code = %err.code,
            error = %err,
            advice = "grant aco-automation:GetEnrollmentConfiguration to see the calling account's own Automation enrollment; the per-account data is unaffected",
            "GetEnrollmentConfiguration failed; keeping its last answer"
        );
        None
    }
}

impl<S: AutomationSource> Producer for Automation<S> {
    async fn round(&mut self, stop: &Shutdown) -> Result<Round, Stopped> {
        let started = Instant::now();
        let result = tokio::select! {
            r = self.poll() => r,
            _ = stop.wait() => return Err(Stopped),
        };
        let took = started.elapsed();
        let snap = match result {
            Ok(snap) => snap,
            Err(err) => {
                self.outcome = Some(Outcome::Failure {
                    code: err.code().to_owned(),
                    error: err.to_string(),
                    advice: advice(&err, &self.options, &self.opts),
                });
                return Ok(Round::ok(false));
            }
        };
        // Rendered off the runtime's threads (10,000 accounts are a few
        // megabytes of text), in this span; never raced against stop.
        let (org, accounts, pages) = (self.org.clone(), snap.accounts.len(), snap.pages);
        blocking(move || {
            let segment =
                render_in_turn(|| Segment::new(render_automation(&snap, org.name.as_deref())));
            let details = Arc::new(snap);
            org.publish_segment(NAME, segment, || org.set_details(NAME, details));
        })
        .await;
        self.outcome = Some(Outcome::Success {
            accounts,
            pages,
            took,
        });
        Ok(Round {
            ok: true,
            took: Some(took),
        })
    }

    fn next_round(&mut self, started: Instant, _round: Round) -> Instant {
        started + self.options.interval
    }

    fn recorded(&mut self, _round: Round) {
        match self.outcome.take() {
            Some(Outcome::Success {
                accounts,
                pages,
                took,
            }) => tracing::info!(
                accounts,
                pages,
                duration_ms = took.as_millis() as u64,
                outcome = "success",
                "Automation listing finished"
            ),
            Some(Outcome::Failure {
                code,
                error,
                advice,
            }) => tracing::error!(
                outcome = "failure",
                code,
                error,
                advice,
                "Automation listing failed; keeping the last good data"
            ),
            None => {}
        }
    }
}

/// What is wrong with a failed round and how to fix it: Automation's own
/// refusals first, then what every listing shares (credentials, STS).
pub fn advice(err: &PollError, options: &AutomationOptions, opts: &PollOptions) -> String {
    let region = &options.region;
    let endpoint = match &options.endpoint_url {
        Some(u) => format!("aws.automation_endpoint_url ({u})"),
        None => format!("aco-automation.{region}.amazonaws.com"),
    };
    match err.code() {
        "AccessDeniedException" | "ForbiddenException" => format!(
            "the credentials need IAM permissions aco-automation:ListAccounts and aco-automation:GetEnrollmentConfiguration (deploy/iam/reader-permissions.json){}",
            opts.role_arn
                .as_deref()
                .map(|r| format!(" on the role the exporter assumes ({r})"))
                .unwrap_or_default()
        ),
        "NotManagementAccountException" => "ListAccounts answers only the organisation's management account or a delegated administrator for Compute Optimizer: point aws.role_arn at a role there, or set aws.automation = false for this organisation".into(),
        "OptInRequiredException" => format!(
            "the organisation is not enrolled in Compute Optimizer Automation in {region}: enroll it (the console, or aws compute-optimizer-automation update-enrollment-configuration --status Active), ask the region where it is enrolled (aws.automation_region), or set aws.automation = false"
        ),
        "network" if !err.to_string().contains("loading credentials") => format!(
            "cannot reach Compute Optimizer Automation at {endpoint}: it is offered in fewer regions than Compute Optimizer, so set aws.automation_region to one that offers it (us-east-1 does), or check DNS, egress (a VPC interface endpoint for aco-automation in private subnets) and HTTPS_PROXY/NO_PROXY"
        ),
        "invalid_response" => format!(
            "the answer was not a Compute Optimizer Automation response: check that {endpoint} reaches the service and not a proxy or another service"
        ),
        "timeout" => format!(
            "raise aws.automation_interval (now {}; a round must end within it) or aws.request_timeout (now {})",
            format_duration(options.interval),
            format_duration(opts.request_timeout)
        ),
        "ThrottlingException" => format!(
            "Automation is throttling the exporter: raise aws.automation_interval (now {}) or aws.retry_backoff (now {})",
            format_duration(options.interval),
            format_duration(opts.retry_backoff)
        ),
        _ => err.advice(opts).unwrap_or_default(),
    }
}

/// Lists Automation's accounts now, then every `interval`, until `stop`.
pub async fn run<S: AutomationSource>(
    source: S,
    options: AutomationOptions,
    opts: PollOptions,
    org: Arc<Org>,
    stop: Shutdown,
) {
    let health = health(&org.metrics);
    drive(
        Automation::new(source, options, opts, org.clone()),
        health,
        org,
        stop,
    )
    .await;
}

/// Switched off: its segment, its details and its health go.
pub fn switched_off(org: &Org) {
    org.withdraw(NAME);
    health(&org.metrics).forget();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ENROLLMENTS;
    use crate::source::error::ApiError;

    fn options() -> AutomationOptions {
        AutomationOptions {
            interval: Duration::from_secs(300),
            region: "eu-central-2".into(),
            endpoint_url: None,
        }
    }

    fn failed(code: &str, message: &str) -> PollError {
        PollError::Api {
            operation: AUTOMATION_ACCOUNTS,
            page: 1,
            attempts: 1,
            source: ApiError::new(code, message, false),
        }
    }

    #[test]
    fn advice_names_automation_and_what_to_change() {
        let opts = PollOptions::from_config(&crate::config::Config::default());
        let o = options();
        let optin = advice(&failed("OptInRequiredException", "x"), &o, &opts);
        assert!(optin.contains("not enrolled in Compute Optimizer Automation in eu-central-2"));
        assert!(optin.contains("aws.automation = false"), "{optin}");
        let network = advice(&failed("network", "dns error"), &o, &opts);
        assert!(network.contains("aco-automation.eu-central-2.amazonaws.com"));
        assert!(network.contains("aws.automation_region"), "{network}");
        let denied = advice(&failed("AccessDeniedException", "x"), &o, &opts);
        assert!(denied.contains("aco-automation:ListAccounts"), "{denied}");
        assert!(!denied.contains(ENROLLMENTS), "{denied}");
        // STS unreachable is about STS, as for every listing.
        let sts = advice(
            &failed(
                "network",
                "an error occurred while loading credentials: io error",
            ),
            &o,
            &opts,
        );
        assert!(sts.contains("credentials provider"), "{sts}");
    }
}
