//! Compute Optimizer Automation (`aws.automation`) and Compute Optimizer's
//! trusted access in Organizations, through the real SDK against the
//! stand-ins: every page, every status and mode, each error class, the
//! organisation tables, and that neither ever touches the enrollment
//! poll's data.
mod support;

use std::collections::BTreeSet;

use support::standin::{Fault, Service, Standin, automation_of, org};
use support::{Exporter, api_requests, sample};

const AUTOMATION: &str = "automation = true\n[poll]\ninterval = \"1h\"\n";

fn up(t: &str) -> Option<f64> {
    sample(t, "aws_compute_optimizer_automation_up")
}

/// Automation's first round has ended, and so has the enrollment poll's.
fn both_ended(t: &str) -> bool {
    up(t).is_some()
        && sample(t, "aws_compute_optimizer_polls_total{result=\"success\"}").unwrap_or(0.0)
            + sample(t, "aws_compute_optimizer_polls_total{result=\"failure\"}").unwrap_or(0.0)
            >= 1.0
}

/// Account IDs with a series of `metric` (any labels).
fn accounts_of(text: &str, metric: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| l.split("account_id=\"").nth(1)?.split('"').next())
        .map(str::to_owned)
        .collect()
}

/// 2,500 accounts take three pages of 1,000, each asked with
/// maxResults=1000 and the previous page's token; every account has one
/// series per documented status, its current one at 1, its rule mode
/// one-hot, its last update; the counts add up; the calling account's own
/// enrollment is there; and no request reached another service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_every_status_and_mode() {
    let accounts = org(2_500);
    let standin = Standin::start(accounts.clone()).await;
    let mut automation = automation_of(&accounts);
    automation[7].status = "Suspended".into();
    standin.set_automation(automation.clone());
    let exporter = Exporter::start(&standin, AUTOMATION).await;
    let text = exporter.wait_for(20, |t| up(t).is_some()).await;
    exporter.stop().await;
    assert_eq!(up(&text), Some(1.0), "{text}");
    let pages: Vec<_> = standin
        .seen()
        .into_iter()
        .filter(|s| s.service == Service::Automation && s.path.ends_with("/ListAccounts"))
        .map(|s| (s.max_results, s.next_token))
        .collect();
    assert_eq!(
        pages,
        vec![
            (Some(1000), None),
            (Some(1000), Some("auto-1000".into())),
            (Some(1000), Some("auto-2000".into())),
        ]
    );
    assert_eq!(standin.misrouted(), Vec::<String>::new());
    assert_eq!(
        accounts_of(&text, "aws_compute_optimizer_automation_enrollment_status").len(),
        2_500
    );
    for (i, a) in automation.iter().enumerate().step_by(97) {
        for status in ["Active", "Failed", "Inactive", "Pending"] {
            let want = if status == a.status { 1.0 } else { 0.0 };
            let series = format!(
                "aws_compute_optimizer_automation_enrollment_status{{account_id=\"{}\",status=\"{status}\"}}",
                a.id
            );
            assert_eq!(sample(&text, &series), Some(want), "{i}: {series}");
        }
        for mode in ["AnyAllowed", "NoneAllowed"] {
            let series = format!(
                "aws_compute_optimizer_automation_organization_rule_mode{{account_id=\"{}\",mode=\"{mode}\"}}",
                a.id
            );
            let want = if mode == a.mode { 1.0 } else { 0.0 };
            assert_eq!(sample(&text, &series), Some(want), "{series}");
        }
        let updated = format!(
            "aws_compute_optimizer_automation_enrollment_status_last_updated_timestamp_seconds{{account_id=\"{}\"}}",
            a.id
        );
        assert_eq!(sample(&text, &updated), Some(a.last_updated));
    }
    // A status outside the documented four keeps its raw value.
    let odd = format!(
        "aws_compute_optimizer_automation_enrollment_status{{account_id=\"{}\",status=\"Suspended\"}}",
        automation[7].id
    );
    assert_eq!(sample(&text, &odd), Some(1.0), "{text}");
    let count = |s: &str| {
        sample(
            &text,
            &format!("aws_compute_optimizer_automation_enrollment_accounts{{status=\"{s}\"}}"),
        )
    };
    let counted: Vec<_> = ["Active", "Inactive", "Pending", "Failed", "Suspended"]
        .iter()
        .map(|s| count(s).unwrap_or(-1.0))
        .collect();
    assert_eq!(counted, vec![625.0, 625.0, 625.0, 624.0, 1.0]);
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_automation_management_account_enrollment_status{status=\"Active\"}"
        ),
        Some(1.0)
    );
    assert_eq!(api_requests(&text, "ListAccounts", "success"), 3.0);
    assert_eq!(
        api_requests(&text, "GetEnrollmentConfiguration", "success"),
        1.0
    );
    assert!(
        sample(
            &text,
            "aws_compute_optimizer_automation_last_success_timestamp_seconds"
        )
        .unwrap()
            > 1e9
    );
}

/// Off by default: no request to Automation, no series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automation_is_off_by_default() {
    let standin = Standin::start(org(5)).await;
    let exporter = Exporter::start(&standin, "[poll]\ninterval = \"1h\"\n").await;
    let text = exporter.wait_polls(1).await;
    exporter.stop().await;
    assert!(
        !text.contains("aws_compute_optimizer_automation_"),
        "{text}"
    );
    assert_eq!(standin.automation_calls("ListAccounts"), 0);
}

/// An organisation not enrolled in Automation: `ListAccounts` refused with
/// OptInRequiredException, counted, not retried (it will not change within
/// the round), up 0 and no Automation series made up; the enrollment
/// poll's data is all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_not_enrolled_is_a_counted_failure_that_touches_nothing_else() {
    let standin = Standin::start(org(30)).await;
    standin.automation_off(true);
    let exporter = Exporter::start(&standin, AUTOMATION).await;
    let text = exporter.wait_for(20, both_ended).await;
    exporter.stop().await;
    assert_eq!(up(&text), Some(0.0));
    assert_eq!(
        api_requests(&text, "ListAccounts", "OptInRequiredException"),
        1.0
    );
    assert!(
        !text.contains("aws_compute_optimizer_automation_enrollment_status{"),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "aws_compute_optimizer_automation_last_success_timestamp_seconds"
        )
        .is_none()
    );
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
    assert_eq!(
        accounts_of(&text, "aws_compute_optimizer_enrollment_status").len(),
        30
    );
}

/// Throttling and server errors are retried within the round and counted
/// under their own codes; the round still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried_and_counted() {
    let standin = Standin::start(org(1_500)).await;
    standin.automation_fault(1, Fault::Error(400, "ThrottlingException"), 1);
    standin.automation_fault(1, Fault::Error(500, "InternalServerException"), 1);
    let exporter = Exporter::start(&standin, AUTOMATION).await;
    let text = exporter.wait_for(20, |t| up(t).is_some()).await;
    exporter.stop().await;
    assert_eq!(up(&text), Some(1.0), "{text}");
    assert_eq!(
        api_requests(&text, "ListAccounts", "ThrottlingException"),
        1.0
    );
    assert_eq!(
        api_requests(&text, "ListAccounts", "InternalServerException"),
        1.0
    );
    assert_eq!(api_requests(&text, "ListAccounts", "success"), 2.0);
    assert_eq!(
        accounts_of(&text, "aws_compute_optimizer_automation_enrollment_status").len(),
        1_500
    );
}

/// A failed round keeps the last good Automation data (a reload that keeps
/// the clients makes the next round start at once); a looping token fails
/// the round instead of publishing a short organisation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_round_keeps_the_last_good_data() {
    let standin = Standin::start(org(1_200)).await;
    let dir = support::tempdir();
    let path = dir.join("config.toml");
    let write = |interval: &str| {
        let toml = format!(
            "[aws]\nregion = \"us-east-1\"\n{}retry_backoff = \"10ms\"\nmax_attempts = 2\nautomation = true\nautomation_interval = \"{interval}\"\n[poll]\ninterval = \"1h\"\n",
            standin.endpoint_keys()
        );
        std::fs::write(&path, toml).unwrap();
    };
    write("1h");
    let exporter = Exporter::start_with(Some(&path), false).await;
    exporter
        .wait_for(20, |t| up(t) == Some(1.0) && both_ended(t))
        .await;
    // The second page repeats its own token on the next round.
    standin.automation_fault(1, Fault::RepeatToken, 1);
    write("2h");
    let r = support::request(exporter.addr, "POST", "/-/reload", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = exporter.wait_for(20, |t| up(t) == Some(0.0)).await;
    assert_eq!(
        accounts_of(&text, "aws_compute_optimizer_automation_enrollment_status").len(),
        1_200,
        "the last good data is kept"
    );
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
    exporter.stop().await;
}

/// Automation unreachable (a region that does not offer it looks the same:
/// no such host) is `network`, retried, and the enrollment poll goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_automation_endpoint_is_a_network_failure() {
    let standin = Standin::start(org(10)).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let keys = standin
        .endpoint_keys()
        .replace(&standin.automation_url(), &url);
    let toml =
        format!("[aws]\nregion = \"us-east-1\"\n{keys}retry_backoff = \"10ms\"\n{AUTOMATION}");
    let exporter = Exporter::start_toml(&toml).await;
    let text = exporter.wait_for(20, both_ended).await;
    exporter.stop().await;
    assert_eq!(up(&text), Some(0.0));
    assert_eq!(
        api_requests(&text, "ListAccounts", "network"),
        3.0,
        "{text}"
    );
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
}

/// With `[[organization]]` tables: on in one organisation (set in its
/// table) and in another by `[aws]`'s default, off in a third; each one's
/// series carry its `organization` label, and the one that is off has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisation_tables_turn_it_on_and_off_each_for_its_own() {
    let blue = Standin::start(org(3)).await;
    let green = Standin::start(org(4)).await;
    let grey = Standin::start(org(5)).await;
    let table = |name: &str, s: &Standin, extra: &str| {
        format!(
            "[[organization]]\nname = \"{name}\"\n{}{extra}",
            s.endpoint_keys()
        )
    };
    let toml = format!(
        "[aws]\nregion = \"us-east-1\"\nretry_backoff = \"10ms\"\nautomation = true\n[poll]\ninterval = \"1h\"\n{}{}{}",
        table("blue", &blue, ""),
        table("green", &green, "automation_interval = \"30m\"\n"),
        table("grey", &grey, "automation = false\n"),
    );
    let exporter = Exporter::start_toml(&toml).await;
    let text = exporter
        .wait_for(20, |t| {
            sample(
                t,
                "aws_compute_optimizer_automation_up{organization=\"blue\"}",
            )
            .is_some()
                && sample(
                    t,
                    "aws_compute_optimizer_automation_up{organization=\"green\"}",
                )
                .is_some()
        })
        .await;
    exporter.stop().await;
    for (name, n) in [("blue", 3.0), ("green", 4.0)] {
        let series = format!(
            "aws_compute_optimizer_automation_enrollment_accounts{{organization=\"{name}\",status=\"Active\"}}"
        );
        assert!(sample(&text, &series).is_some(), "{series}: {text}");
        let total: f64 = ["Active", "Inactive", "Pending", "Failed"]
            .iter()
            .map(|s| {
                sample(
                    &text,
                    &format!("aws_compute_optimizer_automation_enrollment_accounts{{organization=\"{name}\",status=\"{s}\"}}"),
                )
                .unwrap()
            })
            .sum();
        assert_eq!(total, n, "{name}");
    }
    assert!(
        !text
            .contains("aws_compute_optimizer_automation_enrollment_accounts{organization=\"grey\""),
        "{text}"
    );
    assert!(!text.contains("aws_compute_optimizer_automation_up{organization=\"grey\"}"));
    assert_eq!(grey.automation_calls("ListAccounts"), 0);
    assert!(
        !text.contains("\naws_compute_optimizer_automation_up "),
        "unlabelled"
    );
}

/// Switched off by a reload: its series and health go, the poll's stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switched_off_by_a_reload_its_series_go() {
    let standin = Standin::start(org(8)).await;
    let dir = support::tempdir();
    let path = dir.join("config.toml");
    let write = |on: bool| {
        let toml = format!(
            "[aws]\nregion = \"us-east-1\"\n{}retry_backoff = \"10ms\"\nautomation = {on}\n[poll]\ninterval = \"1h\"\n",
            standin.endpoint_keys()
        );
        std::fs::write(&path, toml).unwrap();
    };
    write(true);
    let exporter = Exporter::start_with(Some(&path), false).await;
    exporter
        .wait_for(20, |t| up(t) == Some(1.0) && both_ended(t))
        .await;
    write(false);
    let r = support::request(exporter.addr, "POST", "/-/reload", &[]).await;
    assert_eq!(r.status, 200);
    let text = exporter.metrics().await;
    exporter.stop().await;
    assert!(
        !text.contains("aws_compute_optimizer_automation_"),
        "{text}"
    );
    assert_eq!(
        accounts_of(&text, "aws_compute_optimizer_enrollment_status").len(),
        8
    );
}

/// Trusted access and delegated administrators, from Organizations with
/// `aws.organizations`: on since its date with two administrators listed;
/// off, with no timestamp. The administrators' names are escaped labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_access_and_delegated_administrators() {
    let standin = Standin::start(org(5)).await;
    standin.set_delegated_administrators(vec![
        (
            "222233334444",
            "finops \"tools\"",
            "compute-optimizer.amazonaws.com",
        ),
        (
            "555566667777",
            "platform",
            "compute-optimizer.amazonaws.com",
        ),
        // Another service's administrator is not Compute Optimizer's.
        ("888899990000", "security", "guardduty.amazonaws.com"),
    ]);
    let config = "organizations = true\norganizations_requests_per_second = 1000\n[poll]\ninterval = \"1h\"\n";
    let exporter = Exporter::start(&standin, config).await;
    let text = exporter
        .wait_for(20, |t| {
            sample(t, "aws_compute_optimizer_trusted_access_up").is_some()
        })
        .await;
    exporter.stop().await;
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_organization_trusted_access_enabled"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_organization_trusted_access_enabled_timestamp_seconds"
        ),
        Some(1_650_000_000.0)
    );
    let admins: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("aws_compute_optimizer_delegated_administrator_info{"))
        .collect();
    assert_eq!(
        admins,
        vec![
            "aws_compute_optimizer_delegated_administrator_info{account_id=\"222233334444\",account_name=\"finops \\\"tools\\\"\"} 1",
            "aws_compute_optimizer_delegated_administrator_info{account_id=\"555566667777\",account_name=\"platform\"} 1",
        ]
    );

    let standin = Standin::start(org(5)).await;
    standin.set_service_access(vec![("sso.amazonaws.com", 1_600_000_000.0)]);
    let exporter = Exporter::start(&standin, config).await;
    let text = exporter
        .wait_for(20, |t| {
            sample(t, "aws_compute_optimizer_trusted_access_up").is_some()
        })
        .await;
    exporter.stop().await;
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_organization_trusted_access_enabled"
        ),
        Some(0.0)
    );
    assert!(
        !text.contains("trusted_access_enabled_timestamp_seconds "),
        "{text}"
    );
    assert!(!text.contains("aws_compute_optimizer_delegated_administrator_info{"));
}

/// Refused (as Organizations refuses a delegated administrator): the series
/// are absent, the refusal counted, up 0, and nothing else is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_trusted_access_leaves_its_series_absent() {
    let standin = Standin::start(org(5)).await;
    let policies = support::standin::iam::Policies::shipped()
        .without_action("organizations:ListAWSServiceAccessForOrganization");
    standin.set_policies(policies);
    let config = "organizations = true\norganizations_requests_per_second = 1000\n[poll]\ninterval = \"1h\"\n";
    let exporter = Exporter::start(&standin, config).await;
    let text = exporter
        .wait_for(20, |t| {
            sample(t, "aws_compute_optimizer_trusted_access_up").is_some()
                && sample(t, "aws_compute_optimizer_organizations_up").is_some()
        })
        .await;
    exporter.stop().await;
    assert_eq!(
        sample(&text, "aws_compute_optimizer_trusted_access_up"),
        Some(0.0)
    );
    assert_eq!(
        api_requests(
            &text,
            "ListAWSServiceAccessForOrganization",
            "AccessDeniedException"
        ),
        1.0
    );
    assert!(!text.contains("aws_compute_optimizer_organization_trusted_access_enabled"));
    assert_eq!(
        sample(&text, "aws_compute_optimizer_organizations_up"),
        Some(1.0)
    );
    assert!(text.contains("aws_compute_optimizer_account_info{"));
}

/// `/status.json` and `/status` show Automation beside enrollment: each
/// account not Active carries its Automation status, Automation's own
/// accounts not Active are listed with their rule mode, and trusted access
/// with the delegated administrators is stated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_pages_show_automation_beside_enrollment() {
    let accounts = org(8);
    let standin = Standin::start(accounts.clone()).await;
    let mut automation = automation_of(&accounts);
    // 100000000002 is Pending in Compute Optimizer, Failed in Automation.
    automation[2].status = "Failed".into();
    automation[2].reason = Some("not <enrolled>".into());
    standin.set_automation(automation);
    standin.set_delegated_administrators(vec![(
        "222233334444",
        "finops",
        "compute-optimizer.amazonaws.com",
    )]);
    let config =
        format!("organizations = true\norganizations_requests_per_second = 1000\n{AUTOMATION}");
    let exporter = Exporter::start(&standin, &config).await;
    exporter
        .wait_for(20, |t| {
            both_ended(t) && sample(t, "aws_compute_optimizer_trusted_access_up").is_some()
        })
        .await;
    let json: serde_json::Value =
        serde_json::from_str(&support::get(exporter.addr, "/status.json").await.text()).unwrap();
    let html = support::get(exporter.addr, "/status").await.text();
    exporter.stop().await;
    let row = json["not_active"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account_id"] == "100000000002")
        .unwrap();
    assert_eq!(row["status"], "Pending");
    assert_eq!(row["automation_status"], "Failed");
    let a = &json["automation"];
    assert_eq!(a["accounts_total"], 8);
    assert_eq!(a["counts"]["Failed"], 3);
    assert_eq!(a["management_account_status"], "Active");
    let failed = a["not_active"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account_id"] == "100000000002")
        .unwrap();
    assert_eq!(failed["organization_rule_mode"], "NoneAllowed");
    assert_eq!(failed["account_name"], "account-100000000002");
    let t = &json["trusted_access"];
    assert_eq!(t["enabled"], true);
    assert_eq!(t["enabled_timestamp_seconds"], 1_650_000_000.0);
    assert_eq!(
        t["delegated_administrators"][0]["account_id"],
        "222233334444"
    );
    assert!(
        html.contains("<h3>Compute Optimizer Automation</h3>"),
        "{html}"
    );
    assert!(html.contains("<th>Automation</th>"));
    assert!(html.contains("not &lt;enrolled&gt;"), "escaped: {html}");
    assert!(html.contains("Delegated administrators: 222233334444 (finops)"));
}

/// A page that is not Automation's answer (a proxy's page, another
/// service) is `invalid_response`: counted, the round failed, no series
/// made up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_page_is_an_invalid_response() {
    let standin = Standin::start(org(10)).await;
    standin.automation_fault(0, Fault::Garbage, 1);
    let exporter = Exporter::start(&standin, AUTOMATION).await;
    let text = exporter.wait_for(20, both_ended).await;
    exporter.stop().await;
    assert_eq!(up(&text), Some(0.0), "{text}");
    assert_eq!(
        api_requests(&text, "ListAccounts", "invalid_response"),
        1.0,
        "{text}"
    );
    assert!(!text.contains("aws_compute_optimizer_automation_enrollment_status{"));
    assert_eq!(sample(&text, "aws_compute_optimizer_up"), Some(1.0));
}
