//! Fault injection: every upstream failure is handled, counted, and
//! recovered from, with the last good data kept in the meantime.

mod support;

use std::time::Duration;

use support::standin::{Fault, Standin, org};
use support::{Exporter, api_requests, enrollment_lines as enrollment, sample};

const FAST: &str = "[poll]\ninterval = \"1s\"\ntimeout = \"1s\"\n";

fn requests(text: &str, result: &str) -> f64 {
    api_requests(text, "GetEnrollmentStatusesForOrganization", result)
}

#[tokio::test]
async fn throttling_and_5xx_are_retried_within_the_poll() {
    let standin = Standin::start(org(250)).await;
    standin.fault(0, Fault::Error(400, "ThrottlingException"), 1);
    standin.fault(1, Fault::Error(500, "InternalServerException"), 1);
    standin.fault(2, Fault::Error(503, "ServiceUnavailableException"), 1);
    let exporter = Exporter::start(&standin, FAST).await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
    assert_eq!(requests(&text, "ThrottlingException"), 1.0);
    assert_eq!(requests(&text, "InternalServerException"), 1.0);
    assert_eq!(requests(&text, "ServiceUnavailableException"), 1.0);
    assert_eq!(requests(&text, "success"), 3.0);
    assert_eq!(standin.requests(), 6);
    exporter.stop().await;
}

#[tokio::test]
async fn retries_are_bounded_by_max_attempts() {
    let standin = Standin::start(org(50)).await;
    // The first poll passes; the second is throttled on every attempt.
    standin.fault(0, Fault::Pass, 1);
    standin.fault(0, Fault::Error(429, "ThrottlingException"), 3);
    let exporter = Exporter::start(&standin, FAST).await;
    let good = exporter.wait_polls(1).await;
    let text = exporter.wait_polls(2).await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(0.0));
    // The default: three attempts per page, each counted.
    assert_eq!(requests(&text, "ThrottlingException"), 3.0);
    assert_eq!(enrollment(&text), enrollment(&good));
    let healed = exporter
        .wait_for(10, |t| sample(t, "aws_compute_optimizer_up") == Some(1.0))
        .await;
    assert_eq!(requests(&healed, "ThrottlingException"), 3.0);
    exporter.stop().await;
}

#[tokio::test]
async fn access_denied_is_not_retried() {
    let standin = Standin::start(org(50)).await;
    standin.fault(0, Fault::Error(403, "AccessDeniedException"), 1);
    standin.fault(0, Fault::Error(403, "MissingAuthenticationToken"), 1);
    let exporter = Exporter::start(&standin, FAST).await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(0.0));
    assert_eq!(requests(&text, "AccessDeniedException"), 1.0);
    assert_eq!(standin.requests(), 1);
    let text = exporter.wait_polls(2).await;
    assert_eq!(requests(&text, "MissingAuthenticationToken"), 1.0);
    assert_eq!(standin.requests(), 2);
    exporter
        .wait_for(10, |t| sample(t, "aws_compute_optimizer_up") == Some(1.0))
        .await;
    exporter.stop().await;
}

#[tokio::test]
async fn invalid_parameter_is_not_retried() {
    let standin = Standin::start(org(50)).await;
    standin.fault(0, Fault::Error(400, "InvalidParameterValueException"), 1);
    let exporter = Exporter::start(&standin, FAST).await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(requests(&text, "InvalidParameterValueException"), 1.0);
    assert_eq!(standin.requests(), 1);
    exporter.stop().await;
}

#[tokio::test]
async fn a_connection_reset_is_retried_and_counted_as_network() {
    let standin = Standin::start(org(150)).await;
    standin.fault(1, Fault::Reset, 1);
    let exporter = Exporter::start(&standin, FAST).await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
    assert_eq!(requests(&text, "network"), 1.0);
    assert_eq!(requests(&text, "success"), 2.0);
    exporter.stop().await;
}

#[tokio::test]
async fn a_page_slower_than_the_deadline_fails_the_poll_on_time() {
    let standin = Standin::start(org(150)).await;
    standin.fault(1, Fault::Delay(Duration::from_secs(5)), 1);
    // Interval 2s leaves a window to see the failure before the next poll.
    let exporter = Exporter::start(&standin, "[poll]\ninterval = \"2s\"\ntimeout = \"1s\"\n").await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(0.0));
    assert_eq!(requests(&text, "timeout"), 1.0);
    // Deadline 1s: the poll is abandoned long before the 5s page answers,
    // as the exporter itself measured the poll (not the test's clock, which
    // would count the exporter's start too).
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_poll_duration_seconds_bucket{le=\"2.5\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // The next poll starts on schedule and succeeds.
    let text = exporter
        .wait_for(10, |t| sample(t, "aws_compute_optimizer_up") == Some(1.0))
        .await;
    assert!(sample(&text, "aws_compute_optimizer_poll_duration_seconds_count").unwrap() >= 2.0);
    exporter.stop().await;
}

#[tokio::test]
async fn a_slow_attempt_is_cut_by_the_request_timeout_and_retried() {
    let standin = Standin::start(org(50)).await;
    standin.fault(0, Fault::Delay(Duration::from_secs(5)), 1);
    let exporter = Exporter::start(
        &standin,
        "request_timeout = \"300ms\"\n[poll]\ninterval = \"2s\"\ntimeout = \"2s\"\n",
    )
    .await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
    assert_eq!(requests(&text, "timeout"), 1.0);
    assert_eq!(requests(&text, "success"), 1.0);
    exporter.stop().await;
}

#[tokio::test]
async fn malformed_and_truncated_pages_fail_the_poll_without_harm() {
    for fault in [Fault::Garbage, Fault::Truncated] {
        let standin = Standin::start(org(150)).await;
        standin.fault(0, Fault::Pass, 1);
        standin.fault(0, fault.clone(), 1);
        let exporter = Exporter::start(&standin, FAST).await;
        let good = exporter.wait_polls(1).await;
        let bad = exporter.wait_polls(2).await;
        assert_eq!(
            sample(&bad, "aws_compute_optimizer_up"),
            Some(0.0),
            "{fault:?}"
        );
        assert_eq!(requests(&bad, "invalid_response"), 1.0, "{fault:?}");
        assert_eq!(enrollment(&bad), enrollment(&good), "{fault:?}");
        exporter
            .wait_for(10, |t| sample(t, "aws_compute_optimizer_up") == Some(1.0))
            .await;
        exporter.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assumed_role_credentials_are_refreshed_before_they_expire() {
    let standin = Standin::start(org(20)).await;
    // Sessions of 15s: the SDK's cache renews them shortly before expiry.
    standin.set_session_seconds(15);
    let exporter = Exporter::start(
        &standin,
        &format!(
            "{}session_name = \"co-test\"\n[poll]\ninterval = \"1s\"\ntimeout = \"1s\"\n",
            support::hop()
        ),
    )
    .await;
    exporter.wait_polls(1).await;
    let first = standin.seen()[0].authorization.clone().unwrap();
    assert!(
        first.contains("Credential=ASIASESSION1/"),
        "{first} {:?}",
        standin.seen()[0]
    );
    // Within 20s a second session is in use, without a restart or a failed poll.
    exporter
        .wait_for(20, |_| {
            standin
                .seen()
                .last()
                .and_then(|s| s.authorization.clone())
                .is_some_and(|a| a.contains("Credential=ASIASESSION2/"))
        })
        .await;
    assert!(standin.assume_role_calls() >= 2);
    let text = exporter.metrics().await;
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_polls_total{result=\"failure\"}"
        ),
        Some(0.0)
    );
    exporter.stop().await;
}

/// One throttle from STS during a credential fetch is retried by the role
/// hop itself: the poll succeeds instead of failing as `credentials`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_assume_role_is_retried_not_a_failed_poll() {
    let standin = Standin::start(org(20)).await;
    standin.throttle_assume_role(1);
    let exporter = Exporter::start(
        &standin,
        &format!("{}[poll]\ninterval = \"1h\"\n", support::hop()),
    )
    .await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(standin.assume_role_throttled(), 1, "the fault was served");
    assert_eq!(
        sample(&text, "aws_compute_optimizer_up"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_polls_total{result=\"failure\"}"
        ),
        Some(0.0)
    );
    exporter.stop().await;
}

/// STS's own error codes reach the `result` label and the advice: a region
/// where STS is disabled says so, not "needs IAM permission".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_error_codes_are_labelled_and_advised() {
    let standin = Standin::start(org(5)).await;
    standin.fail_assume_role(100, 403, "RegionDisabledException");
    let exporter = Exporter::start(
        &standin,
        &format!("{}[poll]\ninterval = \"1h\"\n", support::hop()),
    )
    .await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(0.0));
    assert_eq!(
        support::api_requests(
            &text,
            "GetEnrollmentStatusesForOrganization",
            "RegionDisabledException"
        ),
        1.0,
        "{text}"
    );
    let outcome = exporter.state.orgs()[0].last_poll().unwrap().error.unwrap();
    assert!(outcome.contains("RegionDisabledException"), "{outcome}");
    exporter.stop().await;
}
