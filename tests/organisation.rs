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

/// `/status.json`, and its entry for one account that is not Active.
async fn status_entry(e: &Exporter, account: &str) -> (serde_json::Value, serde_json::Value) {
    let json: serde_json::Value =
        serde_json::from_slice(&get(e.addr, "/status.json").await.body).unwrap();
    let entry = json["not_active"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account_id"] == account)
        .unwrap_or_else(|| panic!("{account} not in {json}"))
        .clone();
    (json, entry)
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
    // 45 accounts under the root at 20 a page: three ListAccountsForParent
    // requests over awsJson1_1.
    assert!(standin.organizations_calls("ListAccountsForParent") >= 3);
    let named = label_values(&text, "aws_compute_optimizer_account_info", "account_id");
    let enrolled = label_values(
        &text,
        "aws_compute_optimizer_enrollment_status",
        "account_id",
    );
    assert_eq!(named, enrolled, "every account has a name to join");
    assert!(text.contains(
        "aws_compute_optimizer_account_info{account_id=\"100000000003\",account_name=\"team \\\"quoted\\\" \\\\ name\",account_state=\"ACTIVE\",ou_id=\"r-1a2b\",ou_path=\"Root\"} 1"
    ));
    assert!(!text.contains("example.com"), "no e-mail addresses");

    let html = get(e.addr, "/status").await.text();
    assert!(!html.contains("<script>"));
    assert!(html.contains("<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"));
    let (json, entry) = status_entry(&e, "100000000002").await;
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
    for op in ["ListRoots", "ListAccountsForParent", "ListAccounts"] {
        assert_eq!(standin.organizations_calls(op), 0);
    }
    e.stop().await;
}

#[tokio::test]
async fn failing_names_never_fail_the_enrollment_poll() {
    let standin = Standin::start(org(30)).await;
    standin.deny_organizations(true);
    let e = Exporter::start(&standin, NAMES).await;
    let text = e
        .wait_for(10, |t| {
            requests(t, "ListRoots", "AccessDeniedException") >= 2.0
        })
        .await;
    assert!(requests(&text, "ListRoots", "AccessDeniedException") >= 2.0);
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
    standin.deny_organizations(false);
    e.wait_for(10, |t| t.contains("aws_compute_optimizer_account_info{"))
        .await;
    // Denied again: the last names are kept.
    standin.deny_organizations(true);
    let before = requests(&e.metrics().await, "ListRoots", "AccessDeniedException");
    let text = e
        .wait_for(10, |t| {
            requests(t, "ListRoots", "AccessDeniedException") > before
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

/// The `account_info` line of one account.
fn info_line<'a>(text: &'a str, account: &str) -> &'a str {
    text.lines()
        .find(|l| {
            l.starts_with(&format!(
                "aws_compute_optimizer_account_info{{account_id=\"{account}\""
            ))
        })
        .unwrap_or_else(|| panic!("no account_info for {account}"))
}

const TREE: &str = "organizations = true\norganizations_interval = \"1s\"\n\
    organizations_requests_per_second = 1000\naccount_tags = [\"team\", \"cost-center\"]\n\
    [poll]\ninterval = \"1h\"\n";

/// [`TREE`], walked once in a test's time (the next walk an hour away), so
/// counts cannot race a second walk.
fn tree_once() -> String {
    TREE.replace(
        "organizations_interval = \"1s\"",
        "organizations_interval = \"1h\"",
    )
}

/// The tree walk and the tags, through the real SDK: each account's OU and
/// path from the root, one label per tag key (sanitised), empty where an
/// account lacks the tag, and an account that moves shows its new place.
#[tokio::test]
async fn accounts_carry_their_place_in_the_tree_and_their_tags() {
    let standin = Standin::start(org(45)).await;
    standin.set_ou("100000000001", "Prod/Payments");
    standin.set_ou("100000000002", "Prod");
    standin.set_ou("100000000003", "Sandbox");
    standin.set_tag("100000000001", "team", "payments");
    standin.set_tag("100000000001", "cost-center", "cc-7");
    standin.set_tag("100000000002", "owner", "not asked for");
    // One walk only: the counts below are of exactly one.
    let e = Exporter::start(&standin, &tree_once()).await;
    let text = e
        .wait_for(10, |t| t.contains("tag_team=\"payments\""))
        .await;
    let payments = standin.ou_id("Prod/Payments");
    assert_eq!(
        info_line(&text, "100000000001"),
        format!(
            "aws_compute_optimizer_account_info{{account_id=\"100000000001\",account_name=\"account-100000000001\",account_state=\"ACTIVE\",ou_id=\"{payments}\",ou_path=\"Root/Prod/Payments\",tag_cost_center=\"cc-7\",tag_team=\"payments\"}} 1"
        )
    );
    assert!(info_line(&text, "100000000002").contains(&format!(
        "ou_id=\"{}\",ou_path=\"Root/Prod\",tag_cost_center=\"\",tag_team=\"\"}}",
        standin.ou_id("Prod")
    )));
    assert!(info_line(&text, "100000000000").contains("ou_id=\"r-1a2b\",ou_path=\"Root\","));
    assert!(!text.contains("not asked for"));
    // The walk: one ListRoots, then per parent (root, Prod, Payments,
    // Sandbox) one OU listing and one account listing, the root's 41
    // accounts on three pages; one ListTagsForResource per account.
    assert_eq!(standin.organizations_calls("ListRoots"), 1);
    assert_eq!(
        standin.organizations_calls("ListOrganizationalUnitsForParent"),
        4
    );
    assert_eq!(standin.organizations_calls("ListAccountsForParent"), 6);
    assert_eq!(standin.organizations_calls("ListAccounts"), 0);
    assert_eq!(standin.organizations_calls("ListTagsForResource"), 45);
    assert_eq!(requests(&text, "ListTagsForResource", "success"), 45.0);
    // The status page shows the OU and a column per tag key.
    let html = get(e.addr, "/status").await.text();
    assert!(
        html.contains("<th>OU</th><th>cost-center</th><th>team</th>"),
        "{html}"
    );
    assert!(
        html.contains(
            "<td>account-100000000001</td><td>Root/Prod/Payments</td><td>cc-7</td><td>payments</td>"
        ),
        "{html}"
    );
    let (_, entry) = status_entry(&e, "100000000001").await;
    assert_eq!(entry["ou_path"], "Root/Prod/Payments");
    assert_eq!(entry["tags"]["team"], "payments");
    e.stop().await;
}

/// An account moved between OUs and retagged: the next walk says so.
#[tokio::test]
async fn an_account_that_moves_shows_its_new_place_at_the_next_walk() {
    let standin = Standin::start(org(5)).await;
    standin.set_ou("100000000001", "Prod/Payments");
    standin.set_tag("100000000001", "team", "payments");
    let e = Exporter::start(&standin, TREE).await;
    e.wait_for(10, |t| t.contains("tag_team=\"payments\""))
        .await;
    standin.set_ou("100000000001", "Sandbox");
    standin.set_tag("100000000001", "team", "platform");
    let text = e
        .wait_for(10, |t| t.contains("tag_team=\"platform\""))
        .await;
    assert!(info_line(&text, "100000000001").contains("ou_path=\"Root/Sandbox\""));
    e.stop().await;
}

/// Organizations throttles hard: at a rate below its limit the exporter is
/// never throttled; when throttled, each refusal is retried, counted by
/// operation, and never touches the enrollment poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_organizations_rate_limit_keeps_clear_of_throttling() {
    let tree = |rate: &str| {
        format!(
            "organizations = true\norganizations_interval = \"1h\"\n\
             organizations_requests_per_second = {rate}\naccount_tags = [\"team\"]\n\
             max_attempts = 10\n[poll]\ninterval = \"1h\"\n"
        )
    };
    // 20 accounts: 3 walk requests and 20 tag requests.
    let standin = Standin::start(org(20)).await;
    standin.limit_organizations(20.0);
    let e = Exporter::start(&standin, &tree("15")).await;
    e.wait_for(10, |t| {
        requests(t, "ListTagsForResource", "success") >= 20.0
    })
    .await;
    assert_eq!(standin.organizations_throttled(), 0);
    e.stop().await;

    // Throttled (as Organizations throttles a burst): five requests are
    // refused whatever the machine's speed; each is retried and counted.
    let standin = Standin::start(org(20)).await;
    standin.throttle_organizations(5);
    let e = Exporter::start(&standin, &tree("1000")).await;
    let text = e
        .wait_for(20, |t| {
            requests(t, "ListTagsForResource", "success") >= 20.0
                && sample(t, "aws_compute_optimizer_trusted_access_up").is_some()
        })
        .await;
    assert_eq!(standin.organizations_throttled(), 5);
    let throttled: f64 = [
        "ListRoots",
        "ListOrganizationalUnitsForParent",
        "ListAccountsForParent",
        "ListTagsForResource",
        // The trusted-access check shares the walk's pace and quota.
        "ListAWSServiceAccessForOrganization",
        "ListDelegatedAdministrators",
    ]
    .iter()
    .map(|op| requests(&text, op, "TooManyRequestsException"))
    .sum();
    assert_eq!(throttled as usize, standin.organizations_throttled());
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
    e.stop().await;
}

/// A refresh that fails part-way keeps each account's last known tags for
/// the accounts it did not reach, and the enrollment poll goes on.
#[tokio::test]
async fn a_refresh_failing_part_way_keeps_the_last_known_tags() {
    let standin = Standin::start(org(30)).await;
    for i in 0..30 {
        standin.set_tag(&format!("{}", 100_000_000_000u64 + i), "team", "old");
    }
    let e = Exporter::start(&standin, TREE).await;
    e.wait_for(10, |t| t.matches("tag_team=\"old\"").count() == 30)
        .await;
    for i in 0..30 {
        standin.set_tag(&format!("{}", 100_000_000_000u64 + i), "team", "new");
    }
    standin.fail_tags_after(Some(10));
    let text = e
        .wait_for(10, |t| {
            requests(t, "ListTagsForResource", "AccessDeniedException") >= 1.0
        })
        .await;
    // Published at the failure: ten accounts refreshed, twenty kept.
    let text = if text.matches("tag_team=\"new\"").count() == 10 {
        text
    } else {
        e.wait_for(5, |t| t.matches("tag_team=\"new\"").count() == 10)
            .await
    };
    assert_eq!(text.matches("tag_team=\"old\"").count(), 20);
    assert_eq!(
        text.matches("aws_compute_optimizer_account_info{").count(),
        30
    );
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
    e.stop().await;
}

/// China and GovCloud: Organizations is signed for the partition's home
/// region (from the SDK's partition data), whatever aws.region is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizations_is_signed_for_the_partitions_home_region() {
    for (region, home) in [
        ("cn-north-1", "cn-northwest-1"),
        ("us-gov-east-1", "us-gov-west-1"),
    ] {
        let standin = Standin::start(org(5)).await;
        standin.organizations_home(home);
        let toml = format!(
            "[aws]\nregion = \"{region}\"\n{}retry_backoff = \"10ms\"\norganizations = true\norganizations_interval = \"1h\"\n[poll]\ninterval = \"1h\"\n",
            standin.endpoint_keys()
        );
        let e = Exporter::start_toml(&toml).await;
        let text = e.wait_walked(10).await;
        assert_eq!(
            sample(&text, "aws_compute_optimizer_organizations_up"),
            Some(1.0),
            "{region}: {text}"
        );
        assert!(
            standin
                .signed_regions()
                .contains(&format!("organizations {home}")),
            "{region}: {:?}",
            standin.signed_regions()
        );
        e.stop().await;
    }
}

/// From a delegated administrator, GetEnrollmentStatus carries no member
/// count and its `memberAccountsEnrolled` can read false: neither member
/// series is exported rather than a wrong 0; the account's own status is.
#[tokio::test]
async fn a_delegated_administrators_answer_exports_no_member_figures() {
    let standin = Standin::start(org(8)).await;
    standin.org_status_as_delegated_administrator(true);
    let e = Exporter::start(&standin, "[poll]\ninterval = \"1h\"\n").await;
    let text = e.wait_polls(1).await;
    assert_eq!(requests(&text, "GetEnrollmentStatus", "success"), 1.0);
    assert!(
        !text.contains("aws_compute_optimizer_organization_member_accounts_enrolled"),
        "{text}"
    );
    assert!(!text.contains("aws_compute_optimizer_organization_member_accounts_opted_in"));
    assert!(text.contains(
        "aws_compute_optimizer_management_account_enrollment_status{status=\"Active\"} 1"
    ));
    e.stop().await;
}

/// Accounts that leave the organisation during the tag pass (listed by the
/// walk, gone when their tags are asked for) are dropped and the pass goes
/// on: the walk succeeds and every other account gets its tags.
#[tokio::test]
async fn an_account_that_leaves_during_the_tag_pass_is_dropped_and_the_pass_goes_on() {
    let standin = Standin::start(org(10)).await;
    for i in 0..10 {
        standin.set_tag(&format!("{}", 100_000_000_000u64 + i), "team", "t");
    }
    standin.leave_on_tags(&["100000000003", "100000000007"]);
    let e = Exporter::start(&standin, &tree_once()).await;
    let text = e.wait_walked(10).await;
    assert_eq!(
        sample(&text, "aws_compute_optimizer_organizations_up"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(text.matches("tag_team=\"t\"").count(), 8, "{text}");
    for gone in ["100000000003", "100000000007"] {
        assert!(
            !text.contains(&format!("account_info{{account_id=\"{gone}\"")),
            "{gone}"
        );
    }
    assert_eq!(
        requests(&text, "ListTagsForResource", "TargetNotFoundException"),
        2.0
    );
    e.stop().await;
}
