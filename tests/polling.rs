//! The poller through the real SDK, over real HTTP, against the stand-in.

mod support;

use support::standin::{Fault, OPERATION_PATH, OrgAccount, Standin, org};
use support::{Exporter, enrollment_lines, sample};

const FAST: &str = "[poll]\ninterval = \"1s\"\ntimeout = \"1s\"\n";

fn status_of(text: &str, account: &str, status: &str) -> Option<f64> {
    sample(
        text,
        &format!(
            "aws_compute_optimizer_enrollment_status{{account_id=\"{account}\",status=\"{status}\"}}"
        ),
    )
}

#[tokio::test]
async fn one_page_speaks_rpcv2_cbor_and_exports_every_account() {
    let standin = Standin::start(org(40)).await;
    let exporter = Exporter::start(&standin.url(), FAST).await;
    let text = exporter.wait_polls(1).await;

    let seen = standin.seen();
    let first = &seen[0];
    assert_eq!(first.path, OPERATION_PATH);
    assert_eq!(first.smithy_protocol.as_deref(), Some("rpc-v2-cbor"));
    assert_eq!(first.content_type.as_deref(), Some("application/cbor"));
    let auth = first.authorization.as_deref().unwrap_or("");
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/"),
        "{auth}"
    );
    assert!(
        auth.contains("/us-east-1/compute-optimizer/aws4_request"),
        "{auth}"
    );
    assert!(!auth.contains("test-secret"));
    assert_eq!(first.max_results, Some(100));
    assert_eq!(first.next_token, None);
    assert!(first.status_filter.is_empty());

    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
    // The staleness alert compares data age with this.
    assert_eq!(
        sample(&text, "aws_compute_optimizer_poll_interval_seconds"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_enrollment_accounts{status=\"Pending\"}"
        ),
        Some(10.0)
    );
    // 40 accounts x 4 one-hot series.
    let series = text
        .lines()
        .filter(|l| l.starts_with("aws_compute_optimizer_enrollment_status{"))
        .count();
    assert_eq!(series, 160);
    assert_eq!(status_of(&text, "100000000002", "Pending"), Some(1.0));
    assert_eq!(status_of(&text, "100000000002", "Active"), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_enrollment_status_last_updated_timestamp_seconds{account_id=\"100000000002\"}"
        ),
        Some(1_700_000_002.0)
    );
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_api_requests_total{operation=\"GetEnrollmentStatusesForOrganization\",result=\"success\"}"
        ),
        Some(1.0)
    );
    exporter.stop().await;
}

#[tokio::test]
async fn many_pages_cost_exactly_ceil_n_over_100_requests() {
    let standin = Standin::start(org(250)).await;
    let exporter = Exporter::start(&standin.url(), FAST).await;
    let text = exporter.wait_polls(1).await;
    let seen = standin.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let tokens: Vec<_> = seen.iter().map(|s| s.next_token.clone()).collect();
    assert_eq!(
        tokens,
        [None, Some("tok-100".into()), Some("tok-200".into())]
    );
    let total: f64 = ["Active", "Inactive", "Pending", "Failed"]
        .iter()
        .map(|s| {
            sample(
                &text,
                &format!("aws_compute_optimizer_enrollment_accounts{{status=\"{s}\"}}"),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(total, 250.0);
    assert_eq!(status_of(&text, "100000000249", "Inactive"), Some(1.0));
    exporter.stop().await;
}

#[tokio::test]
async fn page_size_and_status_filter_are_sent() {
    let standin = Standin::start(org(100)).await;
    let exporter = Exporter::start(
        &standin.url(),
        "[poll]\ninterval = \"1s\"\ntimeout = \"1s\"\npage_size = 10\nstatuses = [\"Pending\", \"Failed\"]\n",
    )
    .await;
    let text = exporter.wait_polls(1).await;
    let seen = standin.seen();
    // 50 matching accounts, 10 a page.
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| s.max_results == Some(10)));
    assert!(
        seen.iter()
            .all(|s| s.status_filter == ["Pending", "Failed"])
    );
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_enrollment_accounts{status=\"Active\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_enrollment_accounts{status=\"Failed\"}"
        ),
        Some(25.0)
    );
    exporter.stop().await;
}

#[tokio::test]
async fn changes_between_polls_are_picked_up_and_vanished_accounts_vanish() {
    let standin = Standin::start(org(120)).await;
    let exporter = Exporter::start(&standin.url(), FAST).await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(status_of(&text, "100000000002", "Pending"), Some(1.0));
    assert!(status_of(&text, "100000000119", "Active").is_some());

    let mut next = org(119); // the last account leaves the organisation
    next[2].status = "Active".into(); // a Pending account becomes Active
    next.push(OrgAccount {
        id: "999999999999".into(),
        status: "Pending".into(),
        reason: None,
        last_updated: 1_800_000_000.0,
    });
    standin.set_accounts(next);
    let text = exporter
        .wait_for(10, |t| status_of(t, "999999999999", "Pending") == Some(1.0))
        .await;
    assert_eq!(status_of(&text, "100000000002", "Active"), Some(1.0));
    assert_eq!(status_of(&text, "100000000002", "Pending"), Some(0.0));
    assert!(status_of(&text, "100000000119", "Active").is_none());
    assert!(!text.contains("100000000119"));
    exporter.stop().await;
}

#[tokio::test]
async fn an_error_on_a_middle_page_keeps_the_last_good_data() {
    let standin = Standin::start(org(250)).await;
    let exporter = Exporter::start(&standin.url(), FAST).await;
    let good = exporter.wait_polls(1).await;
    let last_success = sample(
        &good,
        "aws_compute_optimizer_last_successful_poll_timestamp_seconds",
    )
    .unwrap();

    // The organisation changes, but the next poll fails on its second page.
    standin.set_accounts(org(150));
    standin.fault(1, Fault::Error(403, "AccessDeniedException"), 1);
    let bad = exporter.wait_polls(2).await;
    assert_eq!(sample(&bad, "aws_compute_optimizer_up"), Some(0.0));
    assert_eq!(enrollment_lines(&bad), enrollment_lines(&good));
    assert_eq!(
        sample(
            &bad,
            "aws_compute_optimizer_last_successful_poll_timestamp_seconds"
        ),
        Some(last_success)
    );
    assert_eq!(
        sample(
            &bad,
            "aws_compute_optimizer_api_requests_total{operation=\"GetEnrollmentStatusesForOrganization\",result=\"AccessDeniedException\"}"
        ),
        Some(1.0),
        "403 must not be retried"
    );

    // The upstream heals: the next poll publishes the new, smaller organisation.
    let healed = exporter
        .wait_for(10, |t| sample(t, "aws_compute_optimizer_up") == Some(1.0))
        .await;
    assert!(!healed.contains("100000000150"));
    assert_eq!(status_of(&healed, "100000000149", "Inactive"), Some(1.0));
    exporter.stop().await;
}

#[tokio::test]
async fn a_repeated_token_fails_the_poll_instead_of_looping() {
    let standin = Standin::start(org(300)).await;
    standin.fault(1, Fault::RepeatToken, 1);
    let exporter = Exporter::start(&standin.url(), FAST).await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(0.0));
    assert!(!text.contains("aws_compute_optimizer_enrollment_status{"));
    // Page 1, page 2 (which repeats its token): two requests, then stop.
    assert_eq!(standin.seen()[..2].len(), 2);
    let first_poll: Vec<_> = standin
        .seen()
        .iter()
        .take(2)
        .map(|s| s.next_token.clone())
        .collect();
    assert_eq!(first_poll, [None, Some("tok-100".into())]);
    let not_ready = support::get(exporter.addr, "/-/ready").await;
    assert_eq!(not_ready.status, 503);
    let home = support::get(exporter.addr, "/").await.text();
    assert!(home.contains("Last poll FAILED"), "{home}");
    assert!(home.contains("already seen in this poll"), "{home}");
    assert!(home.contains("(there has been none yet)"), "{home}");
    exporter.stop().await;
}

#[tokio::test]
async fn an_unknown_status_is_exported_under_its_raw_value() {
    let mut accounts = org(8);
    accounts[1].status = "Suspended".into();
    let standin = Standin::start(accounts).await;
    let exporter = Exporter::start(&standin.url(), FAST).await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
    assert_eq!(status_of(&text, "100000000001", "Suspended"), Some(1.0));
    assert_eq!(status_of(&text, "100000000001", "Inactive"), Some(0.0));
    assert_eq!(status_of(&text, "100000000000", "Suspended"), None);
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_enrollment_accounts{status=\"Suspended\"}"
        ),
        Some(1.0)
    );
    exporter.stop().await;
}

#[tokio::test]
async fn a_scrape_during_a_poll_sees_the_whole_previous_organisation() {
    let standin = Standin::start(org(150)).await;
    let exporter = Exporter::start(
        &standin.url(),
        "[poll]\ninterval = \"2s\"\ntimeout = \"2s\"\n",
    )
    .await;
    let before = exporter.wait_polls(1).await;
    // The next poll sees another organisation and stalls on its second page.
    let renamed: Vec<OrgAccount> = org(150)
        .into_iter()
        .map(|mut a| {
            a.id = a.id.replacen("1000", "2000", 1);
            a
        })
        .collect();
    standin.set_accounts(renamed);
    standin.fault(1, Fault::Delay(std::time::Duration::from_millis(1500)), 1);
    let polls_before = standin.requests();
    while standin.requests() < polls_before + 2 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Page 2 of the new poll is in flight: the scrape answers at once, with
    // the previous organisation exactly, none of the new one.
    let during = exporter.metrics().await;
    assert_eq!(
        sample(
            &during,
            "aws_compute_optimizer_polls_total{result=\"success\"}"
        ),
        Some(1.0)
    );
    assert_eq!(enrollment_lines(&during), enrollment_lines(&before));
    assert!(!during.contains("200000000"));
    let after = exporter
        .wait_for(10, |t| {
            sample(t, "aws_compute_optimizer_polls_total{result=\"success\"}") == Some(2.0)
        })
        .await;
    assert!(!after.contains("100000000"));
    assert_eq!(status_of(&after, "200000000149", "Inactive"), Some(1.0));
    exporter.stop().await;
}
