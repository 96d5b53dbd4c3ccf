//! Pages for people and scripts: the landing page, `/status` and
//! `/status.json`. Pure functions of the published state, escaped throughout,
//! and rendered at most once a second ([`PageCache`]): at 10,000 accounts a
//! render costs ~7.5 ms, so rendering per request let 32 clients asking for
//! `/status` take the CPU the scrapes need.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use crate::model::{AutomationSnapshot, Directory, Snapshot, Status, TrustedAccess, unix_seconds};
use crate::produce::{access, automation};
use crate::state::{PollOutcome, State};

/// How long one rendering serves while what it shows is unchanged: the
/// ages on the pages ("in status for") are at most this old.
pub const PAGES_MAX_AGE: Duration = Duration::from_secs(1);

/// The three pages, as rendered together from one report.
pub struct Pages {
    pub landing: Bytes,
    pub status_html: Bytes,
    pub status_json: Bytes,
}

/// What the pages show of one organisation: a new poll, new names or
/// readiness make a new rendering at once.
struct ShownOrg {
    name: Option<String>,
    /// The published snapshot and names: each publish swaps in a new `Arc`.
    snapshot: Arc<Snapshot>,
    names: Arc<Directory>,
    /// Compute Optimizer Automation's accounts (`aws.automation`) and
    /// trusted access (with `aws.organizations`), as last published.
    automation: Option<Arc<AutomationSnapshot>>,
    access: Option<Arc<TrustedAccess>>,
    last_poll: Option<PollOutcome>,
    ready: bool,
}

/// The same publish, or both absent.
fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl PartialEq for ShownOrg {
    /// The same publishes (by identity, not by comparing their contents).
    fn eq(&self, other: &ShownOrg) -> bool {
        Arc::ptr_eq(&self.snapshot, &other.snapshot)
            && Arc::ptr_eq(&self.names, &other.names)
            && same(&self.automation, &other.automation)
            && same(&self.access, &other.access)
            && self.name == other.name
            && self.ready == other.ready
            && self.last_poll.as_ref().map(|p| p.finished_at)
                == other.last_poll.as_ref().map(|p| p.finished_at)
    }
}

/// What the pages show: every organisation, readiness and the demo flag.
#[derive(PartialEq)]
struct Shown {
    orgs: Vec<ShownOrg>,
    ready: bool,
    simulated: bool,
}

/// The latest rendering of the pages, shared by every connection.
#[derive(Default)]
pub struct PageCache {
    latest: Mutex<Option<(Shown, Instant, Arc<Pages>)>>,
}

impl PageCache {
    /// The pages for the state as published now: the cached rendering if
    /// it shows the same and is younger than [`PAGES_MAX_AGE`], else a new
    /// one (made by one request while the others wait for it).
    pub fn get(&self, state: &State, telemetry_path: &str) -> Arc<Pages> {
        let shown = Shown {
            orgs: state
                .orgs()
                .iter()
                .map(|o| ShownOrg {
                    name: o.name.clone(),
                    snapshot: o.snapshot(),
                    names: o.names(),
                    automation: o.details(automation::NAME),
                    access: o.details(access::NAME),
                    last_poll: o.last_poll(),
                    ready: o.is_ready(),
                })
                .collect(),
            ready: state.is_ready(),
            simulated: state.is_simulated(),
        };
        let mut latest = crate::sync::lock(&self.latest);
        if let Some((s, made, pages)) = latest.as_ref()
            && *s == shown
            && made.elapsed() < PAGES_MAX_AGE
        {
            return pages.clone();
        }
        let now = SystemTime::now();
        let reports: Vec<StatusReport> = shown
            .orgs
            .iter()
            .map(|o| {
                let mut r = report(&o.snapshot, &o.names, o.last_poll.as_ref(), now);
                r.add_automation(o.automation.as_deref(), &o.names, now);
                r.trusted_access = o.access.as_deref().map(TrustedAccessReport::of);
                r.simulated = shown.simulated;
                // The same answer as /-/ready: a first poll has finished,
                // even a failed one.
                r.ready = o.ready;
                r.organization = o.name.clone();
                r
            })
            .collect();
        let json = match &reports[..] {
            // A file without [[organization]] tables: the report as it was.
            [one] if one.organization.is_none() => serde_json::to_string(one),
            _ => serde_json::to_string(&FleetReport {
                ready: shown.ready,
                simulated: shown.simulated,
                generated_timestamp_seconds: unix_seconds(now),
                organizations: &reports,
            }),
        };
        let json = json.unwrap_or_else(|_| "{}".into()) + "\n";
        let pages = Arc::new(Pages {
            landing: Bytes::from(landing(state.version, telemetry_path, &reports)),
            status_html: Bytes::from(status_html(&reports)),
            status_json: Bytes::from(json),
        });
        *latest = Some((shown, Instant::now(), pages.clone()));
        pages
    }
}

/// `/status.json` with `[[organization]]` tables: one report per
/// organisation, in configuration order.
#[derive(Debug, Serialize)]
pub struct FleetReport<'a> {
    /// Every organisation's first poll has finished (`/-/ready`).
    pub ready: bool,
    pub simulated: bool,
    pub generated_timestamp_seconds: f64,
    pub organizations: &'a [StatusReport],
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The `organization` label's value; absent without `[[organization]]`
    /// tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    pub ready: bool,
    /// `--demo`: the organisation is simulated, nothing comes from AWS.
    pub simulated: bool,
    /// When this report was made, Unix seconds.
    pub generated_timestamp_seconds: f64,
    pub last_poll: Option<PollReport>,
    pub last_successful_poll_timestamp_seconds: Option<f64>,
    pub accounts_total: usize,
    pub counts: std::collections::BTreeMap<String, u64>,
    /// Accounts not Active, longest in their status first.
    pub not_active: Vec<AccountReport>,
    /// The tag keys of `aws.account_tags`, in the order of each account's
    /// `tags` columns on the HTML page.
    pub tag_keys: Vec<String>,
    /// Compute Optimizer Automation, when `aws.automation` is on and a
    /// poll of it has succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automation: Option<AutomationReport>,
    /// Compute Optimizer in AWS Organizations, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_access: Option<TrustedAccessReport>,
}

/// Compute Optimizer Automation's side of an organisation.
#[derive(Debug, Serialize)]
pub struct AutomationReport {
    pub accounts_total: usize,
    pub counts: std::collections::BTreeMap<String, u64>,
    /// The calling account's own Automation status, when known.
    pub management_account_status: Option<String>,
    /// Accounts not Active in Automation, longest in their status first.
    pub not_active: Vec<AutomationAccountReport>,
}

#[derive(Debug, Serialize)]
pub struct AutomationAccountReport {
    pub account_id: String,
    pub account_name: Option<String>,
    pub status: String,
    pub organization_rule_mode: Option<String>,
    pub status_reason: Option<String>,
    pub last_updated_timestamp_seconds: Option<f64>,
    pub seconds_in_status: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct TrustedAccessReport {
    pub enabled: bool,
    pub enabled_timestamp_seconds: Option<f64>,
    pub delegated_administrators: Vec<DelegatedAdministrator>,
}

#[derive(Debug, Serialize)]
pub struct DelegatedAdministrator {
    pub account_id: String,
    pub account_name: String,
}

impl TrustedAccessReport {
    fn of(a: &TrustedAccess) -> TrustedAccessReport {
        TrustedAccessReport {
            enabled: a.enabled.is_some(),
            enabled_timestamp_seconds: a.enabled.flatten(),
            delegated_administrators: a
                .delegated_administrators
                .iter()
                .map(|(id, name)| DelegatedAdministrator {
                    account_id: id.clone(),
                    account_name: name.clone(),
                })
                .collect(),
        }
    }
}

impl StatusReport {
    /// Automation's accounts: each not-Active enrollment row gains its
    /// Automation status, and Automation's own not-Active accounts are
    /// listed beside.
    fn add_automation(
        &mut self,
        snap: Option<&AutomationSnapshot>,
        names: &Directory,
        now: SystemTime,
    ) {
        let Some(snap) = snap else {
            return;
        };
        let now_s = unix_seconds(now);
        for row in &mut self.not_active {
            row.automation_status = snap
                .accounts
                .get(&row.account_id)
                .map(|a| a.status.as_str().to_owned());
        }
        let mut not_active: Vec<AutomationAccountReport> = snap
            .accounts
            .values()
            .filter(|a| a.status != Status::Active)
            .map(|a| AutomationAccountReport {
                account_id: a.account_id.clone(),
                account_name: names.name(&a.account_id).map(str::to_owned),
                status: a.status.as_str().to_owned(),
                organization_rule_mode: a.rule_mode.as_ref().map(|m| m.as_str().to_owned()),
                status_reason: a.status_reason.clone(),
                last_updated_timestamp_seconds: a.last_updated,
                seconds_in_status: a.last_updated.map(|t| (now_s - t).max(0.0)),
            })
            .collect();
        stuck_first(&mut not_active, |r| {
            (&r.status, r.last_updated_timestamp_seconds, &r.account_id)
        });
        self.automation = Some(AutomationReport {
            accounts_total: snap.accounts.len(),
            counts: snap
                .counts()
                .into_iter()
                .map(|(s, n)| (s.as_str().to_owned(), n))
                .collect(),
            management_account_status: snap
                .management
                .as_ref()
                .map(|m| m.status.as_str().to_owned()),
            not_active,
        });
    }
}

#[derive(Debug, Serialize)]
pub struct PollReport {
    pub success: bool,
    pub finished_timestamp_seconds: f64,
    pub duration_seconds: f64,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AccountReport {
    pub account_id: String,
    /// From AWS Organizations, when `aws.organizations` is on.
    pub account_name: Option<String>,
    /// Its place in the organisation (`Root/Prod/Payments`), when known.
    pub ou_path: Option<String>,
    /// The tags of `aws.account_tags` it has, by key.
    pub tags: std::collections::BTreeMap<String, String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub last_updated_timestamp_seconds: Option<f64>,
    pub seconds_in_status: Option<f64>,
    /// Its status in Compute Optimizer Automation, when that is watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automation_status: Option<String>,
}

pub fn report(
    snap: &Snapshot,
    names: &Directory,
    last: Option<&PollOutcome>,
    now: SystemTime,
) -> StatusReport {
    let now_s = unix_seconds(now);
    let mut not_active: Vec<AccountReport> = snap
        .accounts
        .values()
        .filter(|a| a.status != Status::Active)
        .map(|a| AccountReport {
            account_id: a.account_id.clone(),
            account_name: names.name(&a.account_id).map(str::to_owned),
            ou_path: names
                .accounts
                .get(&a.account_id)
                .map(|i| i.ou_path.clone())
                .filter(|p| !p.is_empty()),
            tags: names
                .accounts
                .get(&a.account_id)
                .map(|i| {
                    names
                        .tag_labels
                        .iter()
                        .zip(&i.tags)
                        .filter(|(_, v)| !v.is_empty())
                        .map(|((_, key), v)| (key.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            status: a.status.as_str().to_owned(),
            status_reason: a.status_reason.clone(),
            last_updated_timestamp_seconds: a.last_updated,
            seconds_in_status: a.last_updated.map(|t| (now_s - t).max(0.0)),
            automation_status: None,
        })
        .collect();
    stuck_first(&mut not_active, |r| {
        (&r.status, r.last_updated_timestamp_seconds, &r.account_id)
    });
    StatusReport {
        organization: None,
        ready: snap.finished_at.is_some(),
        simulated: false,
        generated_timestamp_seconds: now_s,
        last_poll: last.map(|p| PollReport {
            success: p.error.is_none(),
            finished_timestamp_seconds: unix_seconds(p.finished_at),
            duration_seconds: p.duration.as_secs_f64(),
            error: p.error.clone(),
        }),
        last_successful_poll_timestamp_seconds: snap.finished_at.map(unix_seconds),
        accounts_total: snap.accounts.len(),
        counts: snap
            .counts()
            .into_iter()
            .map(|(s, n)| (s.as_str().to_owned(), n))
            .collect(),
        not_active,
        tag_keys: names.tag_labels.iter().map(|(_, k)| k.clone()).collect(),
        automation: None,
        trusted_access: None,
    }
}

/// The order of every list of accounts not Active: stuck (Pending, Failed,
/// unknown) before opted-out (Inactive); within each, longest in status
/// first, unknown ages last, ties by account ID. `key` gives a row's
/// status, last update and account ID.
fn stuck_first<T>(rows: &mut [T], key: impl Fn(&T) -> (&String, Option<f64>, &String)) {
    rows.sort_by(|a, b| {
        let ((sa, ta, ia), (sb, tb, ib)) = (key(a), key(b));
        let age = |t: Option<f64>| t.unwrap_or(f64::INFINITY);
        (sa == "Inactive")
            .cmp(&(sb == "Inactive"))
            .then_with(|| age(ta).total_cmp(&age(tb)))
            .then_with(|| ia.cmp(ib))
    });
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "3d 4h", "12m", "40s": how long, for people.
pub fn human_age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

// Account IDs, names, statuses and ages never wrap; reasons do.
const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}td:not(:last-child){white-space:nowrap}.Failed{color:#b00}.Pending{color:#a60}.demo{background:#fff3cd;border:1px solid #e0c36c;padding:.5em .8em}";

/// A banner on every page in `--demo`, so a screenshot cannot pass for a
/// real organisation.
fn demo_banner(r: &StatusReport) -> &'static str {
    if r.simulated {
        "<p class=\"demo\"><strong>Demo:</strong> this organisation is simulated (<code>--demo</code>); nothing on this page comes from AWS.</p>\n"
    } else {
        ""
    }
}

fn poll_line(r: &StatusReport) -> String {
    match &r.last_poll {
        None => "No poll has finished yet.".into(),
        Some(p) if p.success => format!(
            "Last poll succeeded {} ago, in {:.2}s; {} accounts.",
            human_age(r.generated_timestamp_seconds - p.finished_timestamp_seconds),
            p.duration_seconds,
            r.accounts_total
        ),
        Some(p) => format!(
            "Last poll FAILED {} ago, after {:.2}s: {}. The data shown is from the last successful poll{}.",
            human_age(r.generated_timestamp_seconds - p.finished_timestamp_seconds),
            p.duration_seconds,
            escape(p.error.as_deref().unwrap_or("")),
            match r.last_successful_poll_timestamp_seconds {
                Some(t) => format!(", {} ago", human_age(r.generated_timestamp_seconds - t)),
                None => " (there has been none yet)".into(),
            }
        ),
    }
}

/// `name: ` before an organisation's lines, when it has a name.
fn org_prefix(r: &StatusReport) -> String {
    match &r.organization {
        Some(name) => format!("<strong>{}</strong>: ", escape(name)),
        None => String::new(),
    }
}

pub fn landing(version: &str, telemetry_path: &str, reports: &[StatusReport]) -> String {
    let path = escape(telemetry_path);
    let mut orgs = String::new();
    for r in reports {
        let prefix = org_prefix(r);
        orgs.push_str(&format!(
            "<p>{prefix}{}</p>\n<p>{prefix}{}</p>\n",
            poll_line(r),
            counts_line(r)
        ));
    }
    let banner = reports.first().map_or("", demo_banner);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Compute Optimizer Exporter</title><style>{STYLE}</style></head><body>\n<h1>Compute Optimizer Exporter</h1>\n{banner}<p>Exports the AWS Compute Optimizer enrollment status (Active, Inactive, Pending, Failed) of every account in an AWS Organization to Prometheus, polled from <code>GetEnrollmentStatusesForOrganization</code>, so accounts stuck in Pending or Failed can be graphed and alerted on.</p>\n<p>Version {}</p>\n{orgs}<ul>\n<li><a href=\"{path}\">Metrics</a></li>\n<li><a href=\"/status\">Accounts not Active</a> (<a href=\"/status.json\">JSON</a>)</li>\n<li><a href=\"/-/healthy\">Health</a></li>\n<li><a href=\"/-/ready\">Readiness</a></li>\n</ul>\n</body></html>\n",
        escape(version),
    )
}

fn counts_line(r: &StatusReport) -> String {
    r.counts
        .iter()
        .map(|(s, n)| format!("{}: {n}", escape(s)))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// One organisation's part of `/status`: its poll, its counts and its
/// accounts not Active (under its name as a heading, when it has one).
fn status_section(r: &StatusReport) -> String {
    let mut rows = String::new();
    let tag_heads: String = r
        .tag_keys
        .iter()
        .map(|k| format!("<th>{}</th>", escape(k)))
        .collect();
    let with_automation = r.automation.is_some();
    for a in &r.not_active {
        let automation = if with_automation {
            format!(
                "<td>{}</td>",
                escape(a.automation_status.as_deref().unwrap_or(""))
            )
        } else {
            String::new()
        };
        let tags: String = r
            .tag_keys
            .iter()
            .map(|k| {
                format!(
                    "<td>{}</td>",
                    escape(a.tags.get(k).map_or("", String::as_str))
                )
            })
            .collect();
        rows.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td>{tags}<td>{}</td><td>{}</td>{automation}<td>{}</td></tr>\n",
            escape(&a.status),
            escape(&a.account_id),
            escape(a.account_name.as_deref().unwrap_or("")),
            escape(a.ou_path.as_deref().unwrap_or("")),
            escape(&a.status),
            a.seconds_in_status
                .map(human_age)
                .unwrap_or_else(|| "unknown".into()),
            escape(a.status_reason.as_deref().unwrap_or("")),
        ));
    }
    let heading = match &r.organization {
        Some(name) => format!("<h2 id=\"{0}\">{0}</h2>\n", escape(name)),
        None => String::new(),
    };
    let automation_head = if with_automation {
        "<th>Automation</th>"
    } else {
        ""
    };
    format!(
        "{heading}<p>{}</p>\n<p>{}</p>\n{}<table>\n<thead><tr><th>Account</th><th>Name</th><th>OU</th>{tag_heads}<th>Status</th><th>In status for</th>{automation_head}<th>Reason</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n{}",
        poll_line(r),
        counts_line(r),
        access_line(r),
        automation_section(r),
    )
}

/// Trusted access and delegated administrators, when known.
fn access_line(r: &StatusReport) -> String {
    let Some(t) = &r.trusted_access else {
        return String::new();
    };
    let state = match (t.enabled, t.enabled_timestamp_seconds) {
        (true, Some(since)) => format!(
            "on for {}",
            human_age(r.generated_timestamp_seconds - since)
        ),
        (true, None) => "on".into(),
        (false, _) => "<strong class=\"Failed\">OFF</strong>: member accounts cannot enroll".into(),
    };
    let admins = if t.delegated_administrators.is_empty() {
        "none".into()
    } else {
        t.delegated_administrators
            .iter()
            .map(|a| format!("{} ({})", escape(&a.account_id), escape(&a.account_name)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "<p>Trusted access for Compute Optimizer in AWS Organizations: {state}. Delegated administrators: {admins}.</p>\n"
    )
}

/// Compute Optimizer Automation's accounts not Active, when watched.
fn automation_section(r: &StatusReport) -> String {
    let Some(a) = &r.automation else {
        return String::new();
    };
    let counts = a
        .counts
        .iter()
        .map(|(s, n)| format!("{}: {n}", escape(s)))
        .collect::<Vec<_>>()
        .join(" · ");
    let mut rows = String::new();
    for x in &a.not_active {
        rows.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&x.status),
            escape(&x.account_id),
            escape(x.account_name.as_deref().unwrap_or("")),
            escape(&x.status),
            escape(x.organization_rule_mode.as_deref().unwrap_or("")),
            x.seconds_in_status
                .map(human_age)
                .unwrap_or_else(|| "unknown".into()),
            escape(x.status_reason.as_deref().unwrap_or("")),
        ));
    }
    format!(
        "<h3>Compute Optimizer Automation</h3>\n<p>{} accounts; {counts}; the calling account: {}.</p>\n<table>\n<thead><tr><th>Account</th><th>Name</th><th>Status</th><th>Rule mode</th><th>In status for</th><th>Reason</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n",
        a.accounts_total,
        escape(a.management_account_status.as_deref().unwrap_or("unknown")),
    )
}

pub fn status_html(reports: &[StatusReport]) -> String {
    let sections: String = reports.iter().map(status_section).collect();
    let banner = reports.first().map_or("", demo_banner);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Accounts not Active</title><style>{STYLE}</style></head><body>\n<h1>Accounts not Active</h1>\n{banner}{sections}<p><a href=\"/\">Home</a> · <a href=\"/status.json\">JSON</a></p>\n</body></html>\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Account;
    use std::time::Duration;

    fn account(id: &str, status: Status, age: f64, now: f64) -> Account {
        Account {
            account_id: id.into(),
            status,
            status_reason: Some("<script>alert(1)</script>".into()),
            last_updated: Some(now - age),
        }
    }

    #[test]
    fn stuck_accounts_sorted_oldest_first_and_escaped() {
        let now = SystemTime::now();
        let n = unix_seconds(now);
        let mut snap = Snapshot {
            finished_at: Some(now),
            ..Default::default()
        };
        for a in [
            account("111111111111", Status::Pending, 3600.0, n),
            account("222222222222", Status::Failed, 5.0 * 86_400.0, n),
            account("333333333333", Status::Active, 9.0 * 86_400.0, n),
            account("444444444444", Status::Inactive, 9.0 * 86_400.0, n),
        ] {
            snap.accounts.insert(a);
        }
        let last = PollOutcome {
            finished_at: now,
            duration: Duration::from_millis(10),
            error: None,
        };
        let mut names = Directory::default();
        names.accounts.insert(
            "111111111111".to_owned(),
            crate::model::AccountInfo {
                name: "<script>alert(2)</script>".into(),
                ..Default::default()
            },
        );
        let r = report(&snap, &names, Some(&last), now);
        let ids: Vec<&str> = r.not_active.iter().map(|a| a.account_id.as_str()).collect();
        assert_eq!(ids, ["222222222222", "111111111111", "444444444444"]);
        let html = status_html(std::slice::from_ref(&r));
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<td>&lt;script&gt;alert(2)&lt;/script&gt;</td>"));
        assert!(html.contains("5d 0h"));
        assert!(html.contains("1h 0m"));
    }

    #[test]
    fn only_the_reason_column_wraps() {
        let html = status_html(&[report(
            &Snapshot::default(),
            &Directory::default(),
            None,
            SystemTime::now(),
        )]);
        assert!(html.contains("td:not(:last-child){white-space:nowrap}"));
        assert!(
            html.contains("<th>Reason</th></tr>"),
            "the reason is the last column"
        );
    }

    #[test]
    fn human_ages() {
        assert_eq!(human_age(42.0), "42s");
        assert_eq!(human_age(600.0), "10m");
        assert_eq!(human_age(90_000.0), "1d 1h");
        assert_eq!(human_age(-3.0), "0s");
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use crate::config::{Config, PollOptions};

    #[test]
    fn pages_are_rendered_once_per_change_and_at_most_once_a_second() {
        let state = Arc::new(State::new("test", "test"));
        let org = state.set_orgs(&[None]).remove(0);
        let cache = PageCache::default();
        let first = cache.get(&state, "/metrics");
        assert!(
            Arc::ptr_eq(&first, &cache.get(&state, "/metrics")),
            "re-rendered"
        );
        // A poll publishes: the next request shows it at once.
        let snap = Snapshot {
            finished_at: Some(SystemTime::now()),
            ..Snapshot::default()
        };
        let opts = PollOptions::from_config(&Config::default());
        crate::produce::poll::publish(&org, Ok(snap), Duration::from_millis(1), &opts);
        let after_poll = cache.get(&state, "/metrics");
        assert!(!Arc::ptr_eq(&first, &after_poll));
        assert!(String::from_utf8_lossy(&after_poll.status_json).contains("\"ready\":true"));
        // Unchanged, but the ages move on: a second later, a new rendering.
        std::thread::sleep(PAGES_MAX_AGE + Duration::from_millis(50));
        assert!(!Arc::ptr_eq(&after_poll, &cache.get(&state, "/metrics")));
    }
}
