//! Beyond the raw API: account names from AWS Organizations, the calling
//! account's own enrollment, and status transitions.

mod support;

use std::collections::BTreeSet;

use support::standin::{Standin, org};
use support::{Exporter, api_requests as requests, get, sample};

const FAST: &str = "[poll]\ninterval = \"1s\"\ntimeout = \"1s\"\n";
const NAMES: &str = "organizations = true\norganizations_interval = \"1s\"\n[poll]\ninterval = \"1s\"\ntimeout = \"1s\"\n";

fn label_values(text: &str, metric: &str, label: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            l.split(&format!("{label}=\""))
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn every_series_can_be_joined_to_a_name_and_names_are_escaped() {
    let standin = Standin::start(org(45)).await;
    standin.set_name("100000000002", "<script>alert(1)</script>");
    standin.set_name("100000000003", "team \"quoted\" \\ name");
    let e = Exporter::start(&standin, NAMES).await;
    let text = e
        .wait_for(10, |t| {
            t.contains("aws_compute_optimizer_account_info{")
                && t.contains("aws_compute_optimizer_enrollment_status{")
        })
        .await;
    // 45 accounts at 20 a page: three ListAccounts requests over awsJson1_1.
    assert!(standin.list_accounts_calls() >= 3);
    let named = label_values(&text, "aws_compute_optimizer_account_info", "account_id");
    let enrolled = label_values(
        &text,
        "aws_compute_optimizer_enrollment_status",
        "account_id",
    );
    assert_eq!(named, enrolled, "every account has a name to join");
    assert!(text.contains(
        "aws_compute_optimizer_account_info{account_id=\"100000000003\",account_name=\"team \\\"quoted\\\" \\\\ name\"} 1"
    ));
    assert!(!text.contains("example.com"), "no e-mail addresses");

    let html = get(e.addr, "/status").await.text();
    assert!(!html.contains("<script>"));
    assert!(html.contains("<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"));
    let json: serde_json::Value =
        serde_json::from_slice(&get(e.addr, "/status.json").await.body).unwrap();
    let entry = json["not_active"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account_id"] == "100000000002")
        .unwrap();
    assert_eq!(entry["account_name"], "<script>alert(1)</script>");
    assert!(!json.to_string().contains("example.com"));
    e.stop().await;
}

#[tokio::test]
async fn names_are_off_by_default() {
    let standin = Standin::start(org(5)).await;
    let e = Exporter::start(&standin, FAST).await;
    let text = e.wait_polls(2).await;
    assert!(!text.contains("aws_compute_optimizer_account_info"));
    assert_eq!(standin.list_accounts_calls(), 0);
    e.stop().await;
}

#[tokio::test]
async fn failing_names_never_fail_the_enrollment_poll() {
    let standin = Standin::start(org(30)).await;
    standin.deny_list_accounts(true);
    let e = Exporter::start(&standin, NAMES).await;
    let text = e
        .wait_for(10, |t| {
            requests(t, "ListAccounts", "AccessDeniedException") >= 2.0
        })
        .await;
    assert!(requests(&text, "ListAccounts", "AccessDeniedException") >= 2.0);
    let text = e.wait_polls(1).await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_polls_total{result=\"failure\"}"
        ),
        Some(0.0)
    );
    assert!(!text.contains("aws_compute_optimizer_account_info"));
    // Granted later: names appear without a restart.
    standin.deny_list_accounts(false);
    e.wait_for(10, |t| t.contains("aws_compute_optimizer_account_info{"))
        .await;
    // Denied again: the last names are kept.
    standin.deny_list_accounts(true);
    let before = requests(&e.metrics().await, "ListAccounts", "AccessDeniedException");
    let text = e
        .wait_for(10, |t| {
            requests(t, "ListAccounts", "AccessDeniedException") > before
        })
        .await;
    assert!(text.contains("aws_compute_optimizer_account_info{account_id=\"100000000000\""));
    e.stop().await;
}

#[tokio::test]
async fn the_calling_accounts_enrollment_is_exported_and_its_failure_is_harmless() {
    let standin = Standin::start(org(40)).await;
    let e = Exporter::start(&standin, FAST).await;
    let text = e.wait_polls(1).await;
    assert!(standin.org_status_calls() >= 1);
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_management_account_enrollment_status{status=\"Active\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_management_account_enrollment_status{status=\"Pending\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_organization_member_accounts_enrolled"
        ),
        Some(1.0)
    );
    // Comparable with what the pages show: 10 of the 40 accounts are Active.
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_organization_member_accounts_opted_in"
        ),
        Some(10.0)
    );
    // One call per poll, not per page.
    assert_eq!(
        requests(&text, "GetEnrollmentStatus", "success"),
        sample(
            &text,
            "aws_compute_optimizer_polls_total{result=\"success\"}"
        )
        .unwrap()
    );

    standin.deny_org_status(true);
    let text = e
        .wait_for(10, |t| {
            requests(t, "GetEnrollmentStatus", "AccessDeniedException") >= 1.0
        })
        .await;
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_organization_member_accounts_opted_in"
        ),
        Some(10.0)
    );
    e.stop().await;
}

/// An answer without `status` makes no series up: no empty `status` label.
#[tokio::test]
async fn a_calling_account_status_that_is_absent_is_not_exported() {
    let standin = Standin::start(org(8)).await;
    standin.org_status_without_status(true);
    let e = Exporter::start(&standin, "[poll]\ninterval = \"1h\"\n").await;
    let text = e.wait_polls(1).await;
    assert_eq!(requests(&text, "GetEnrollmentStatus", "success"), 1.0);
    assert!(!text.contains("status=\"\""), "{text}");
    assert!(!text.contains("aws_compute_optimizer_management_account_enrollment_status"));
    // What the answer did carry is still exported.
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_organization_member_accounts_enrolled"
        ),
        Some(1.0)
    );
    e.stop().await;
}

#[tokio::test]
async fn transitions_are_counted_between_polls() {
    let standin = Standin::start(org(40)).await;
    let e = Exporter::start(&standin, FAST).await;
    let text = e.wait_polls(1).await;
    let pending_to_active =
        "aws_compute_optimizer_enrollment_status_transitions_total{from=\"Pending\",to=\"Active\"}";
    assert_eq!(sample(&text, pending_to_active), Some(0.0));
    // Three Pending accounts become Active, one Active becomes Suspended.
    let mut next = org(40);
    for i in [2, 6, 10] {
        next[i].status = "Active".into();
    }
    next[0].status = "Suspended".into();
    standin.set_accounts(next);
    let text = e
        .wait_for(10, |t| sample(t, pending_to_active) == Some(3.0))
        .await;
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_enrollment_status_transitions_total{from=\"Active\",to=\"other\"}"
        ),
        Some(1.0)
    );
    // Nothing changes further: the counters stay.
    let polls = sample(
        &text,
        "aws_compute_optimizer_polls_total{result=\"success\"}",
    )
    .unwrap();
    let text = e
        .wait_for(10, |t| {
            sample(t, "aws_compute_optimizer_polls_total{result=\"success\"}").unwrap()
                >= polls + 1.0
        })
        .await;
    assert_eq!(sample(&text, pending_to_active), Some(3.0));
    e.stop().await;
}
