//! The poller through the real SDK, over real HTTP, against the stand-in.

mod support;

use std::time::Duration;

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
    let exporter = Exporter::start(&standin, FAST).await;
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
    let exporter = Exporter::start(&standin, FAST).await;
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
        &standin,
        "[poll]\ninterval = \"1s\"\ntimeout = \"1s\"\npage_size = 10\nstatuses = [\"Pending\", \"Failed\"]\n",
    )
    .await;
    let text = exporter.wait_polls(1).await;
    let seen = standin.seen();
    // AWS cuts pages before filtering: 100 accounts, 10 a page, 10 requests
    // for the 50 matching accounts.
    assert_eq!(seen.len(), 10);
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

/// A filtered listing as AWS shapes it: most pages are empty but carry a
/// token. Every page is followed and every matching account exported.
#[tokio::test]
async fn a_filtered_listing_with_empty_pages_exports_every_match() {
    let mut accounts = org(2000);
    for (i, a) in accounts.iter_mut().enumerate() {
        a.status = match i {
            150 | 1999 => "Pending".into(),
            777 => "Failed".into(),
            _ => "Active".into(),
        };
    }
    let standin = Standin::start(accounts).await;
    let exporter = Exporter::start(
        &standin,
        "[poll]\ninterval = \"1h\"\nstatuses = [\"Pending\", \"Failed\"]\n",
    )
    .await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
    // 20 pages, 17 of them empty with a token, all followed.
    assert_eq!(standin.seen().len(), 20);
    for (id, status) in [
        ("100000000150", "Pending"),
        ("100000000777", "Failed"),
        ("100000001999", "Pending"),
    ] {
        assert_eq!(status_of(&text, id, status), Some(1.0), "{id}");
    }
    assert_eq!(
        text.lines()
            .filter(
                |l| l.starts_with("aws_compute_optimizer_enrollment_status{") && l.ends_with(" 1")
            )
            .count(),
        3
    );
    exporter.stop().await;
}

#[tokio::test]
async fn changes_between_polls_are_picked_up_and_vanished_accounts_vanish() {
    let standin = Standin::start(org(120)).await;
    let exporter = Exporter::start(&standin, FAST).await;
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
    // The second poll sees a smaller organisation and fails on its second page.
    standin.fault(0, Fault::Pass, 1);
    standin.fault(0, Fault::Replace(org(150)), 1);
    standin.fault(1, Fault::Pass, 1);
    standin.fault(1, Fault::Error(403, "AccessDeniedException"), 1);
    let exporter = Exporter::start(&standin, FAST).await;
    let good = exporter.wait_polls(1).await;
    let last_success = sample(
        &good,
        "aws_compute_optimizer_last_successful_poll_timestamp_seconds",
    )
    .unwrap();
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
    // One poll only, so every request seen is that poll's.
    let exporter = Exporter::start(&standin, "[poll]\ninterval = \"1h\"\n").await;
    let text = exporter.wait_polls(1).await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(0.0));
    assert!(!text.contains("aws_compute_optimizer_enrollment_status{"));
    // Page 1, page 2 (which repeats its token): two requests, then stop.
    let tokens: Vec<_> = standin
        .seen()
        .iter()
        .map(|s| s.next_token.clone())
        .collect();
    assert_eq!(tokens, [None, Some("tok-100".into())]);
    // Ready all the same: a failing exporter must be scraped to be alerted on.
    let ready = support::get(exporter.addr, "/-/ready").await;
    assert_eq!(ready.status, 200);
    // And /status.json says the same.
    let status: serde_json::Value =
        serde_json::from_slice(&support::get(exporter.addr, "/status.json").await.body).unwrap();
    assert_eq!(status["ready"], true, "{status}");
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
    let exporter = Exporter::start(&standin, FAST).await;
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
    // The second poll sees another organisation and stalls on its second page.
    let renamed: Vec<OrgAccount> = org(150)
        .into_iter()
        .map(|mut a| {
            a.id = a.id.replacen("1000", "2000", 1);
            a
        })
        .collect();
    standin.fault(0, Fault::Pass, 1);
    standin.fault(0, Fault::Replace(renamed), 1);
    standin.fault(1, Fault::Pass, 1);
    standin.fault(1, Fault::Delay(Duration::from_millis(1500)), 1);
    let exporter = Exporter::start(&standin, "[poll]\ninterval = \"2s\"\ntimeout = \"2s\"\n").await;
    let before = exporter.wait_polls(1).await;
    // Two requests of the first poll, then the second poll's first two.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while standin.requests() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second poll did not reach its second page"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
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
