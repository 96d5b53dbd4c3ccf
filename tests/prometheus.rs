//! The shipped rules, dashboard and exposition against the real Prometheus
//! tools: promtool's rule unit tests and metric lint, and a real server
//! scraping the exporter with the rules loaded.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::prom::{api, encode, eventually, query, start_prometheus};
use support::{Exporter, get, sample};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// promtool or the Prometheus server.
fn tool(name: &str) -> Command {
    support::debian_tool(name, "prometheus")
}

#[test]
fn rule_unit_tests_pass() {
    let dir = root().join("deploy/prometheus");
    let check = tool("promtool")
        .args(["check", "rules", "rules.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let test = tool("promtool")
        .args(["test", "rules", "rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[test]
fn the_prometheus_rule_resource_embeds_the_rules_file() {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/rules.yml")).unwrap();
    let resource =
        std::fs::read_to_string(root().join("deploy/kubernetes/prometheusrule.yaml")).unwrap();
    let spec = resource.split_once("\nspec:\n").expect("a spec: section").1;
    let unindented: String = spec
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let groups_only = |s: &str| -> String {
        let from = s.find("groups:").expect("groups:");
        s[from..].trim_end().to_owned()
    };
    assert_eq!(
        groups_only(&unindented),
        groups_only(&rules),
        "regenerate with scripts/gen-mixin.sh"
    );
}

/// The script, the mixin and the files it writes, copied to a folder of
/// their own (the script renders into the tree it sits in).
fn mixin_copy() -> std::path::PathBuf {
    let copy = support::tempdir();
    let files = [
        "scripts/gen-mixin.sh",
        "deploy/prometheus/rules.yml",
        "deploy/prometheus/rules.test.yml",
        "deploy/kubernetes/prometheusrule.yaml",
        "deploy/grafana/compute-optimizer-exporter.json",
    ];
    let mixin: Vec<String> = walk(&root().join("mixin"))
        .into_iter()
        .map(|p| {
            p.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for file in files.iter().map(|f| f.to_string()).chain(mixin) {
        let to = copy.join(&file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root().join(&file), to).unwrap();
    }
    copy
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The shipped rules, their PrometheusRule and the dashboard are exactly
/// what the mixin renders, and the mixin is as jsonnetfmt writes it.
#[test]
fn the_shipped_monitoring_files_are_what_the_mixin_renders() {
    let copy = mixin_copy();
    let run = Command::new("bash")
        .arg(copy.join("scripts/gen-mixin.sh"))
        .env_remove("RUNBOOK_BASE")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for file in [
        "deploy/prometheus/rules.yml",
        "deploy/prometheus/rules.test.yml",
        "deploy/kubernetes/prometheusrule.yaml",
        "deploy/grafana/compute-optimizer-exporter.json",
    ] {
        let shipped = std::fs::read_to_string(root().join(file)).unwrap();
        let rendered = std::fs::read_to_string(copy.join(file)).unwrap();
        assert!(
            shipped == rendered,
            "{file} differs from what mixin/ renders: run scripts/gen-mixin.sh"
        );
    }
    for file in walk(&root().join("mixin")) {
        let name = file.to_string_lossy();
        if !(name.ends_with(".libsonnet") || name.ends_with(".jsonnet")) {
            continue;
        }
        let fmt = Command::new("jsonnetfmt")
            .arg("--test")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            fmt.status.success(),
            "{name} is not as jsonnetfmt writes it"
        );
    }
}

/// The `runbook_url` of each alert in a rules file, by alert name.
fn runbook_urls(rules: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            out.push((name.to_owned(), None));
        } else if let Some(url) = line.strip_prefix("runbook_url: ") {
            out.last_mut().expect("runbook_url after an alert").1 =
                Some(url.trim_matches('"').to_owned());
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation
/// other than `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_links_its_runbook_section_from_one_base() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(anchor)
        .collect();
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/rules.yml")).unwrap();
    let alerts = runbook_urls(&rules);
    assert!(alerts.len() >= 7, "{alerts:?}");
    for (alert, url) in &alerts {
        let url = url
            .as_deref()
            .unwrap_or_else(|| panic!("{alert}: no runbook_url"));
        let (base, section) = url.split_once('#').unwrap();
        assert_eq!(base, "README.md", "{alert}: the default base");
        assert_eq!(section, anchor(&format!("Runbook: {alert}")), "{alert}");
        assert!(
            anchors.contains(section),
            "{alert}: no README section #{section}"
        );
    }

    // Another base, through the script: every link in the rules, their
    // unit tests and the PrometheusRule moves to it, and nothing else.
    let copy = mixin_copy();
    let base = "https://git.example.com/platform/coe/-/blob/main/README.md";
    let run = Command::new("bash")
        .arg(copy.join("scripts/gen-mixin.sh"))
        .env("RUNBOOK_BASE", base)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let moved = std::fs::read_to_string(copy.join("deploy/prometheus/rules.yml")).unwrap();
    let resource =
        std::fs::read_to_string(copy.join("deploy/kubernetes/prometheusrule.yaml")).unwrap();
    let tests = std::fs::read_to_string(copy.join("deploy/prometheus/rules.test.yml")).unwrap();
    for (alert, url) in runbook_urls(&moved)
        .into_iter()
        .chain(runbook_urls(&resource))
    {
        let url = url.unwrap_or_else(|| panic!("{alert}: no runbook_url"));
        assert_eq!(
            url,
            format!("{base}#{}", anchor(&format!("Runbook: {alert}"))),
            "{alert}"
        );
    }
    assert!(
        !tests.contains("\"README.md#"),
        "unit tests keep the old base"
    );
    assert!(tests.contains(&format!("{base}#runbook-")));
    assert_eq!(
        moved.replace(base, "README.md"),
        rules,
        "only the links change"
    );
    let refused = Command::new("bash")
        .arg(copy.join("scripts/gen-mixin.sh"))
        .env("RUNBOOK_BASE", "https://x.example/\"")
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_nothing_wrong_with_a_live_scrape() {
    let e = Exporter::start_with(None, true).await;
    e.wait_polls(1).await;
    for encoding in ["identity", "gzip"] {
        let r = support::request(e.addr, "GET", "/metrics", &[("Accept-Encoding", encoding)]).await;
        let mut lint = tool("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        lint.stdin
            .take()
            .unwrap()
            .write_all(r.decoded().as_bytes())
            .unwrap();
        let out = lint.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "{encoding}: {report}"
        );
    }
    e.stop().await;
}

/// What Prometheus 3 sends (Prometheus 2 prefers OpenMetrics too).
const PROMETHEUS_ACCEPT: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";

/// The Python `prometheus_client` OpenMetrics parser's reading of a body:
/// one JSON line per family (name, type, unit) and per sample.
fn python_openmetrics(body: &str) -> Vec<Value> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    print(json.dumps({"family": f.name, "type": f.type, "unit": f.unit}))
    for s in f.samples:
        print(json.dumps({"sample": s.name, "labels": s.labels, "value": s.value}))
"#;
    let mut python = support::tool("python3", "install python3 and PyPI prometheus-client")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    python
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the body: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_is_served_when_preferred_and_parses_with_the_same_samples() {
    let e = Exporter::start_with(None, true).await;
    // Both producers have published: the walk (account_info) and the poll.
    e.wait_for(20, |t| {
        t.contains("aws_compute_optimizer_account_info{")
            && t.contains("aws_compute_optimizer_enrollment_status_last_updated_timestamp_seconds{")
    })
    .await;
    let text = support::request(e.addr, "GET", "/metrics", &[])
        .await
        .text();
    for encoding in ["identity", "gzip"] {
        let r = support::request(
            e.addr,
            "GET",
            "/metrics",
            &[("Accept", PROMETHEUS_ACCEPT), ("Accept-Encoding", encoding)],
        )
        .await;
        assert_eq!(
            r.header("content-type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        let body = r.decoded();
        assert!(body.ends_with("\n# EOF\n"), "{encoding}");
        assert_eq!(body.matches("# EOF").count(), 1);
        let parsed = python_openmetrics(&body);
        let family = |name: &str| -> &Value {
            parsed
                .iter()
                .find(|v| v["family"] == name)
                .unwrap_or_else(|| panic!("{encoding}: no family {name}"))
        };
        assert_eq!(family("aws_compute_optimizer_account")["type"], "info");
        assert_eq!(
            family("aws_compute_optimizer_exporter_build")["type"],
            "info"
        );
        assert_eq!(
            family("aws_compute_optimizer_api_requests")["type"],
            "counter"
        );
        let stamp =
            family("aws_compute_optimizer_enrollment_status_last_updated_timestamp_seconds");
        assert_eq!(stamp["unit"], "seconds");
        assert_eq!(family("process_cpu_seconds")["unit"], "seconds");
        assert_eq!(
            family("aws_compute_optimizer_poll_duration_seconds")["type"],
            "histogram"
        );
        // Every sample of the organisation's series, as in the text format.
        let cached = |name: &str| {
            name.starts_with("aws_compute_optimizer_enrollment_status")
                || name.starts_with("aws_compute_optimizer_account_info")
                || name == "aws_compute_optimizer_enrollment_accounts"
        };
        let from_text: BTreeSet<String> = text
            .lines()
            .filter(|l| !l.starts_with('#') && cached(l.split(['{', ' ']).next().unwrap()))
            .map(str::to_owned)
            .collect();
        let from_openmetrics: BTreeSet<String> = body
            .lines()
            .filter(|l| !l.starts_with('#') && cached(l.split(['{', ' ']).next().unwrap()))
            .map(str::to_owned)
            .collect();
        assert!(from_text.len() > 1500, "{}", from_text.len());
        assert_eq!(from_openmetrics, from_text, "{encoding}");
        let parsed_samples = parsed
            .iter()
            .filter(|v| v["sample"].as_str().is_some_and(cached))
            .count();
        assert_eq!(parsed_samples, from_text.len(), "{encoding}");
    }
    e.stop().await;
}

/// The shipped dashboard.
fn dashboard() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/compute-optimizer-exporter.json"))
            .unwrap(),
    )
    .unwrap()
}

/// Waits until Prometheus listens and scrapes `n` healthy targets.
async fn targets_up(prom: &support::prom::Prometheus, n: usize) {
    eventually(30, || async {
        if tokio::net::TcpStream::connect(prom.addr).await.is_err() {
            return Err("prometheus is not listening".into());
        }
        let v: Value = serde_json::from_slice(&get(prom.addr, "/api/v1/targets").await.body)
            .unwrap_or_default();
        let up = v["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["health"] == "up")
            .count();
        if up == n {
            Ok(())
        } else {
            Err(format!("{up} of {n} targets up: {v}"))
        }
    })
    .await;
}

/// Account IDs whose one-hot series for `status` is 1 in a scrape.
/// The account IDs of the `account_info` lines that `keep` keeps.
fn info_ids(text: &str, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("aws_compute_optimizer_account_info{") && keep(l))
        .filter_map(|l| {
            l.split("account_id=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

fn accounts_in(text: &str, status: &str) -> BTreeSet<String> {
    in_status(text, "aws_compute_optimizer_enrollment_status", status)
}

/// The same for Compute Optimizer Automation's enrollment.
fn automation_in(text: &str, status: &str) -> BTreeSet<String> {
    in_status(
        text,
        "aws_compute_optimizer_automation_enrollment_status",
        status,
    )
}

fn in_status(text: &str, metric: &str, status: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| {
            l.starts_with(&format!("{metric}{{"))
                && l.ends_with(&format!("status=\"{status}\"}} 1"))
        })
        .map(|l| l.split('"').nth(1).unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_evaluates_rules_and_dashboard_queries() {
    // The demo as users start it: names from (simulated) Organizations on.
    let mut config = compute_optimizer_exporter::config::Config::default();
    config.aws.organizations = true;
    config.aws.automation = true;
    let e = Exporter::start_config(config, None, true).await;
    e.wait_for(10, |t| {
        t.contains("aws_compute_optimizer_account_info{")
            && t.contains("aws_compute_optimizer_automation_enrollment_status{")
            && t.contains("aws_compute_optimizer_organization_trusted_access_enabled ")
    })
    .await;
    e.wait_polls(1).await;
    let prom = start_prometheus(&[e.addr], &root().join("deploy/prometheus/rules.yml"), None);

    targets_up(&prom, 1).await;

    // The Pending count in Prometheus equals the organisation's.
    let scrape = e.metrics().await;
    let pending = sample(
        &scrape,
        "aws_compute_optimizer_enrollment_accounts{status=\"Pending\"}",
    )
    .unwrap();
    eventually(10, || async {
        let r = query(
            &prom,
            "count(aws_compute_optimizer_enrollment_status{status=\"Pending\"} == 1)",
        )
        .await;
        let got: f64 = r
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0);
        if got == pending {
            Ok(())
        } else {
            Err(format!("count {got} != {pending}"))
        }
    })
    .await;

    // Prometheus scraped OpenMetrics: it learned the types and units the
    // text format cannot carry.
    let metadata = api(&prom, "/api/v1/metadata").await;
    assert_eq!(metadata["aws_compute_optimizer_account"][0]["type"], "info");
    assert_eq!(
        metadata["aws_compute_optimizer_enrollment_status_last_updated_timestamp_seconds"][0]["unit"],
        "seconds"
    );
    assert_eq!(
        metadata["aws_compute_optimizer_polls"][0]["type"],
        "counter"
    );

    // Every rule of the shipped file is loaded and evaluates cleanly.
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/rules.yml"),
    )
    .unwrap()
    .lines()
    .filter(|l| {
        let l = l.trim_start();
        l.starts_with("- alert:") || l.starts_with("- record:")
    })
    .count();
    assert_eq!(shipped, 18);
    eventually(15, || async {
        let data = api(&prom, "/api/v1/rules").await;
        let mut rules = 0;
        for group in data["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                rules += 1;
                if rule["health"] != "ok" {
                    return Err(format!(
                        "rule {} is {}: {}",
                        rule["name"], rule["health"], rule["lastError"]
                    ));
                }
            }
        }
        if rules == shipped {
            Ok(())
        } else {
            Err(format!("{rules} rules loaded"))
        }
    })
    .await;

    // Per-account alerts go pending for exactly the stuck accounts, but not
    // for those Organizations has suspended or is closing.
    let beyond_reach = info_ids(&scrape, |l| {
        ["SUSPENDED", "PENDING_CLOSURE", "CLOSED"]
            .iter()
            .any(|s| l.contains(&format!("account_state=\"{s}\"")))
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let stuck_pending: BTreeSet<String> = accounts_in(&scrape, "Pending")
        .into_iter()
        .filter(|id| {
            let ts = sample(
                &scrape,
                &format!("aws_compute_optimizer_enrollment_status_last_updated_timestamp_seconds{{account_id=\"{id}\"}}"),
            )
            .unwrap();
            now - ts > 86_400.0
        })
        .filter(|id| !beyond_reach.contains(id))
        .collect();
    let failed: BTreeSet<String> = accounts_in(&scrape, "Failed")
        .difference(&beyond_reach)
        .cloned()
        .collect();
    assert!(!stuck_pending.is_empty() && !failed.is_empty());
    let stuck_but_suspended = accounts_in(&scrape, "Failed")
        .union(&accounts_in(&scrape, "Pending"))
        .filter(|id| beyond_reach.contains(*id))
        .count();
    assert!(
        stuck_but_suspended > 0,
        "the demo has a suspended stuck account"
    );
    assert!(
        stuck_pending.len() < accounts_in(&scrape, "Pending").len(),
        "the demo also has fresh Pending accounts"
    );
    eventually(15, || {
        let (stuck_pending, failed) = (stuck_pending.clone(), failed.clone());
        let prom = &prom;
        async move {
            let data = api(prom, "/api/v1/alerts").await;
            let alerts = data["alerts"].as_array().unwrap();
            let ids = |name: &str| -> BTreeSet<String> {
                alerts
                    .iter()
                    .filter(|a| a["labels"]["alertname"] == name && a["state"] == "pending")
                    .map(|a| a["labels"]["account_id"].as_str().unwrap().to_owned())
                    .collect()
            };
            let (p, f) = (ids("ComputeOptimizerAccountPendingTooLong"), ids("ComputeOptimizerAccountFailed"));
            let others: Vec<_> = alerts
                .iter()
                .filter(|a| {
                    let name = a["labels"]["alertname"].as_str().unwrap();
                    !name.starts_with("ComputeOptimizerAccount")
                        && !name.starts_with("ComputeOptimizerAutomationAccount")
                })
                .collect();
            if p == stuck_pending && f == failed && others.is_empty() {
                Ok(())
            } else {
                Err(format!("pending {p:?} vs {stuck_pending:?}; failed {f:?} vs {failed:?}; others {others:?}"))
            }
        }
    })
    .await;

    // The same for Compute Optimizer Automation: its alerts go pending for
    // its stuck accounts, not for suspended or closing ones.
    let automation_pending: BTreeSet<String> = automation_in(&scrape, "Pending")
        .into_iter()
        .filter(|id| {
            let ts = sample(
                &scrape,
                &format!("aws_compute_optimizer_automation_enrollment_status_last_updated_timestamp_seconds{{account_id=\"{id}\"}}"),
            )
            .unwrap();
            now - ts > 86_400.0
        })
        .filter(|id| !beyond_reach.contains(id))
        .collect();
    let automation_failed: BTreeSet<String> = automation_in(&scrape, "Failed")
        .difference(&beyond_reach)
        .cloned()
        .collect();
    assert!(!automation_pending.is_empty() && !automation_failed.is_empty());
    assert!(
        automation_in(&scrape, "Failed")
            .iter()
            .any(|id| beyond_reach.contains(id)),
        "the demo has a suspended account Failed in Automation"
    );
    eventually(15, || {
        let (want_p, want_f) = (automation_pending.clone(), automation_failed.clone());
        let prom = &prom;
        async move {
            let data = api(prom, "/api/v1/alerts").await;
            let alerts = data["alerts"].as_array().unwrap();
            let ids = |name: &str| -> BTreeSet<String> {
                alerts
                    .iter()
                    .filter(|a| a["labels"]["alertname"] == name && a["state"] == "pending")
                    .map(|a| a["labels"]["account_id"].as_str().unwrap().to_owned())
                    .collect()
            };
            let (p, f) = (
                ids("ComputeOptimizerAutomationAccountPendingTooLong"),
                ids("ComputeOptimizerAutomationAccountFailed"),
            );
            if p == want_p && f == want_f {
                Ok(())
            } else {
                Err(format!(
                    "pending {p:?} vs {want_p:?}; failed {f:?} vs {want_f:?}"
                ))
            }
        }
    })
    .await;

    // Every dashboard query (and the instance variable) returns data.
    let dashboard = dashboard();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push((
                panel["title"].as_str().unwrap().to_owned(),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(exprs.len() >= 10);
    // As mixin dashboards: every query follows the cluster and job
    // variables, and the organization one (README, "Several organisations").
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        ["cluster", "job", "organization"]
            .iter()
            .all(|v| variables.contains(v)),
        "{variables:?}"
    );
    for (title, expr) in &exprs {
        assert!(
            expr.contains("cluster=~\"$cluster\"")
                && expr.contains("job=~\"$job\"")
                && expr.contains("organization=~\"$organization\""),
            "panel {title:?} ignores $cluster, $job or $organization: {expr}"
        );
    }
    for (title, expr) in &exprs {
        let promql = expr
            .replace("$__rate_interval", "30s")
            .replace("$instance", ".*")
            .replace("$cluster", ".*")
            .replace("$organization", ".*")
            .replace("$job", ".*")
            .replace("$ou_path", ".*")
            .replace("$team", ".*");
        eventually(10, || async {
            let r = query(&prom, &promql).await;
            if r.is_empty() {
                Err(format!("panel {title:?}: no data for {promql}"))
            } else {
                Ok(())
            }
        })
        .await;
    }
    // The stuck-accounts table lists each stuck account once, named.
    let (_, table) = exprs
        .iter()
        .find(|(title, _)| title.starts_with("Accounts in Pending or Failed"))
        .expect("the stuck-accounts table");
    let stuck: BTreeSet<String> = accounts_in(&scrape, "Pending")
        .union(&accounts_in(&scrape, "Failed"))
        .cloned()
        .collect();
    let all = |t: &str| {
        t.replace("$instance", ".*")
            .replace("$cluster", ".*")
            .replace("$organization", ".*")
            .replace("$job", ".*")
            .replace("$ou_path", ".*")
            .replace("$team", ".*")
    };
    let rows = query(&prom, &all(table)).await;
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["metric"]["account_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), stuck.len(), "one row per stuck account: {ids:?}");
    assert_eq!(
        ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        stuck
    );
    assert!(rows.iter().all(|r| r["metric"]["account_name"].is_string()));
    // Filtered by OU (the demo puts accounts in an OU per stage), the table
    // keeps exactly the stuck accounts of that OU.
    let in_prod: BTreeSet<String> = info_ids(&scrape, |l| l.contains("ou_path=\"Root/Prod\""))
        .intersection(&stuck)
        .cloned()
        .collect();
    assert!(!in_prod.is_empty());
    let filtered = table
        .replace("$instance", ".*")
        .replace("$cluster", ".*")
        .replace("$organization", ".*")
        .replace("$job", ".*")
        .replace("$ou_path", "Root/Prod")
        .replace("$team", ".*");
    let rows = query(&prom, &filtered).await;
    let ids: BTreeSet<String> = rows
        .iter()
        .map(|r| r["metric"]["account_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, in_prod);
    assert!(rows.iter().all(|r| r["metric"]["ou_path"] == "Root/Prod"));
    let values = api(
        &prom,
        &format!(
            "/api/v1/label/instance/values?match[]={}",
            encode("aws_compute_optimizer_up")
        ),
    )
    .await;
    assert_eq!(values.as_array().unwrap().len(), 1);
    e.stop().await;
}

/// An HA pair scraped together: every stat panel and the stuck-accounts
/// table count each account once, not once per replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_counts_each_account_once_with_two_replicas() {
    // Two demo replicas polling once (the simulation is seeded): the same data.
    let mut config = compute_optimizer_exporter::config::Config::demo();
    config.poll.interval = std::time::Duration::from_secs(3600);
    config.poll.timeout = config.poll.interval;
    let a = Exporter::start_config(config.clone(), None, true).await;
    let b = Exporter::start_config(config, None, true).await;
    a.wait_polls(1).await;
    b.wait_polls(1).await;
    let scrape = a.metrics().await;
    let prom = start_prometheus(
        &[a.addr, b.addr],
        &root().join("deploy/prometheus/rules.yml"),
        None,
    );
    targets_up(&prom, 2).await;
    let dashboard = dashboard();
    let expr_of = |title: &str| -> String {
        dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"].as_str().is_some_and(|t| t.starts_with(title)))
            .and_then(|p| p["targets"][0]["expr"].as_str())
            .unwrap_or_else(|| panic!("no panel {title:?}"))
            .replace("$instance", ".*")
            .replace("$cluster", ".*")
            .replace("$organization", ".*")
            .replace("$job", ".*")
            .replace("$ou_path", ".*")
            .replace("$team", ".*")
    };
    for status in ["Active", "Inactive", "Pending", "Failed"] {
        let expected = sample(
            &scrape,
            &format!("aws_compute_optimizer_enrollment_accounts{{status=\"{status}\"}}"),
        )
        .unwrap();
        let promql = expr_of(status);
        eventually(30, || async {
            let r = query(&prom, &promql).await;
            let got: f64 = r
                .first()
                .and_then(|s| s["value"][1].as_str()?.parse().ok())
                .unwrap_or(-1.0);
            if got == expected {
                Ok(())
            } else {
                Err(format!(
                    "{status}: {got} from {promql}, one replica has {expected}"
                ))
            }
        })
        .await;
    }
    let stuck: BTreeSet<String> = accounts_in(&scrape, "Pending")
        .union(&accounts_in(&scrape, "Failed"))
        .cloned()
        .collect();
    let table = expr_of("Accounts in Pending or Failed");
    let rows = query(&prom, &table).await;
    let ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["metric"]["account_id"].as_str())
        .collect();
    assert_eq!(ids.len(), stuck.len(), "one row per stuck account: {ids:?}");
    // The organisation-wide stat panels: one value for the pair, as for one
    // replica (each of their queries, the panel's every target).
    for title in [
        "Management account status",
        "Member accounts included in the opt-in",
        "Opted in: organisation summary vs accounts listed Active",
    ] {
        let panel = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"));
        for target in panel["targets"].as_array().unwrap() {
            let promql = target["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$cluster", ".*")
                .replace("$organization", ".*")
                .replace("$job", ".*");
            eventually(30, || async {
                let r = query(&prom, &promql).await;
                if r.len() == 1 {
                    Ok(())
                } else {
                    Err(format!("{title}: {} series from {promql}: {r:?}", r.len()))
                }
            })
            .await;
        }
    }
    a.stop().await;
    b.stop().await;
}
