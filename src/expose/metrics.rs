//! The two halves of `/metrics`.
//!
//! * The organisation's series change only when a poll or a walk completes,
//!   so they are rendered here once per change, in both formats, and kept
//!   compressed as segments ([`crate::expose::exposition`]) that every scrape serves.
//! * The exporter's own metrics (poll health, API request counters, process
//!   metrics) are small and change all the time; they live in a
//!   `prometheus::Registry` and are encoded on each scrape and appended.
//!
//! Both halves use metric names that never overlap, so the concatenation is a
//! valid exposition in either format ([`crate::expose::openmetrics`]).

use std::fmt::Write as _;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::expose::exposition::Rendered;
use crate::expose::openmetrics::{Format, Kind};
use crate::model::{AutomationSnapshot, Directory, Snapshot, Status, TrustedAccess};

pub const STATUS: &str = "aws_compute_optimizer_enrollment_status";
pub const LAST_UPDATED: &str =
    "aws_compute_optimizer_enrollment_status_last_updated_timestamp_seconds";
pub const ACCOUNTS: &str = "aws_compute_optimizer_enrollment_accounts";
pub const ACCOUNT_INFO: &str = "aws_compute_optimizer_account_info";
pub const MANAGEMENT_STATUS: &str = "aws_compute_optimizer_management_account_enrollment_status";
pub const MEMBERS_ENROLLED: &str = "aws_compute_optimizer_organization_member_accounts_enrolled";
pub const MEMBERS_OPTED_IN: &str = "aws_compute_optimizer_organization_member_accounts_opted_in";

pub const AUTOMATION_STATUS: &str = "aws_compute_optimizer_automation_enrollment_status";
pub const AUTOMATION_LAST_UPDATED: &str =
    "aws_compute_optimizer_automation_enrollment_status_last_updated_timestamp_seconds";
pub const AUTOMATION_ACCOUNTS: &str = "aws_compute_optimizer_automation_enrollment_accounts";
pub const AUTOMATION_RULE_MODE: &str = "aws_compute_optimizer_automation_organization_rule_mode";
pub const AUTOMATION_MANAGEMENT_STATUS: &str =
    "aws_compute_optimizer_automation_management_account_enrollment_status";
pub const TRUSTED_ACCESS: &str = "aws_compute_optimizer_organization_trusted_access_enabled";
pub const TRUSTED_ACCESS_SINCE: &str =
    "aws_compute_optimizer_organization_trusted_access_enabled_timestamp_seconds";
pub const DELEGATED_ADMINISTRATOR: &str = "aws_compute_optimizer_delegated_administrator_info";

/// `organizationRuleMode`'s documented values.
pub const RULE_MODES: [&str; 2] = ["AnyAllowed", "NoneAllowed"];

const FROM_AUTOMATION: &str = "Comes from the background poll of Compute Optimizer Automation's ListAccounts, not from the scrape.";
const FROM_AUTOMATION_ENROLLMENT: &str = "Comes from the background poll of Compute Optimizer Automation's GetEnrollmentConfiguration, not from the scrape.";
const FROM_ACCESS: &str = "Comes from the background check of AWS Organizations (ListAWSServiceAccessForOrganization, ListDelegatedAdministrators), not from the scrape.";

const FROM_POLL: &str =
    "Comes from the background poll of GetEnrollmentStatusesForOrganization, not from the scrape.";
const FROM_ORG_STATUS: &str =
    "Comes from the background poll of GetEnrollmentStatus, not from the scrape.";

/// The `reason` of `aws_compute_optimizer_skipped_items_total`.
pub const SKIPPED_MISSING: &str = "missing_account_id_or_status";
/// The same, for an Organizations item without an ID (or an OU or root
/// without a name).
pub const SKIPPED_ORGANIZATIONS: &str = "organizations_item_missing_id";

/// The label every per-organisation series carries when the configuration
/// has `[[organization]]` tables.
pub const ORGANIZATION_LABEL: &str = "organization";

/// The exporter's own metrics that are not about one organisation: the
/// configuration, the HTTP side, the build and the process.
pub struct SelfMetrics {
    registry: Registry,
    pub reload_success: Gauge,
    pub reload_timestamp: Gauge,
}

/// One organisation's health and request metrics, in a registry of its
/// own: an organisation added or removed by a reload adds or drops its
/// series without touching the others', and the `prometheus` crate's rule
/// that a name keeps its label names for the life of the process cannot
/// stand between a file without `[[organization]]` tables and one with.
pub struct OrgMetrics {
    registry: Registry,
    /// The poll's health (no labels of their own; present from the start).
    pub up: GaugeVec,
    pub last_success: GaugeVec,
    pub poll_duration: Histogram,
    pub polls: IntCounterVec,
    pub api_requests: IntCounterVec,
    pub accounts_skipped: IntCounterVec,
    pub poll_interval: Gauge,
    pub transitions: IntCounterVec,
    /// The organisation walk's health; no series while it is off.
    pub organizations_up: GaugeVec,
    pub organizations_last_success: GaugeVec,
    pub organizations_complete: GaugeVec,
    pub storage_write_failures: prometheus::IntCounter,
    /// Other producers' label-less gauges (their health), made and
    /// registered on first use, by name: a producer that restarts gets the
    /// same series back.
    gauges: std::sync::Mutex<Vec<(&'static str, GaugeVec)>>,
    organization: Option<String>,
}

fn register(registry: &Registry, collectors: Vec<Box<dyn prometheus::core::Collector>>) {
    for c in collectors {
        registry.register(c).expect("metric names are unique");
    }
}

impl OrgMetrics {
    /// The label-less gauge `name` of this organisation (its `organization`
    /// label only), registered the first time it is asked for: absent from
    /// scrapes until set, and gone again after `reset()`.
    pub fn gauge(&self, name: &'static str, help: &str) -> GaugeVec {
        let mut gauges = crate::sync::lock(&self.gauges);
        if let Some((_, g)) = gauges.iter().find(|(n, _)| *n == name) {
            return g.clone();
        }
        let opts = Opts::new(name, help);
        let opts = match &self.organization {
            Some(org) => opts.const_label(ORGANIZATION_LABEL, org),
            None => opts,
        };
        let g = GaugeVec::new(opts, &[]).expect("valid metric");
        let _ = self.registry.register(Box::new(g.clone()));
        gauges.push((name, g.clone()));
        g
    }

    /// Adds a producer's own series (its health, its counters) to the
    /// organisation's registry: they carry its `organization` label only if
    /// their options say so. Registering one twice is a no-op.
    pub fn register(&self, collectors: Vec<Box<dyn prometheus::core::Collector>>) {
        for c in collectors {
            let _ = self.registry.register(c);
        }
    }

    /// The metrics of the organisation called `organization` (the
    /// `organization` label's value), or of the only one (no such label).
    pub fn new(organization: Option<&str>) -> OrgMetrics {
        let opts = |name: &str, help: String| {
            let opts = Opts::new(name, help);
            match organization {
                Some(org) => opts.const_label(ORGANIZATION_LABEL, org),
                None => opts,
            }
        };
        // Label-less vectors: a producer's health (recorded by the driver)
        // can be absent until its first round ends, or switched off.
        let label_less =
            |name: &str, help: String| GaugeVec::new(opts(name, help), &[]).expect("valid metric");
        // The poll's are served from the start, at 0, as plain gauges were.
        let present = |name: &str, help: String| {
            let g = label_less(name, help);
            g.with_label_values(&[] as &[&str]).set(0.0);
            g
        };
        let up = present(
            "aws_compute_optimizer_up",
            format!("1 if the latest poll completed every page, 0 if it failed. {FROM_POLL}"),
        );
        let last_success = present(
            "aws_compute_optimizer_last_successful_poll_timestamp_seconds",
            format!("Unix time at which the latest complete poll finished. {FROM_POLL}"),
        );
        let poll_duration = Histogram::with_opts(
            HistogramOpts {
                common_opts: opts(
                    "aws_compute_optimizer_poll_duration_seconds",
                    format!("Duration of polls, successful or not. {FROM_POLL}"),
                ),
                buckets: Vec::new(),
            }
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ]),
        )
        .expect("valid metric");
        let polls = IntCounterVec::new(
            opts(
                "aws_compute_optimizer_polls_total",
                format!("Polls by outcome (success or failure). {FROM_POLL}"),
            ),
            &["result"],
        )
        .expect("valid metric");
        let api_requests = IntCounterVec::new(
            opts(
                "aws_compute_optimizer_api_requests_total",
                format!(
                    "AWS API attempts, retries included, by operation and result (success or the error code). {FROM_POLL}"
                ),
            ),
            &["operation", "result"],
        )
        .expect("valid metric");
        let accounts_skipped = IntCounterVec::new(
            opts(
                "aws_compute_optimizer_skipped_items_total",
                format!(
                    "Items the API returned that could not be exported, by reason. {FROM_POLL}"
                ),
            ),
            &["reason"],
        )
        .expect("valid metric");
        let poll_interval = Gauge::with_opts(opts(
            "aws_compute_optimizer_poll_interval_seconds",
            "Configured time between the starts of two polls (poll.interval).".into(),
        ))
        .expect("valid metric");
        let transitions = IntCounterVec::new(
            opts(
                "aws_compute_optimizer_enrollment_status_transitions_total",
                format!(
                    "Accounts whose enrollment status changed between two consecutive successful polls, by old and new status (a status outside the documented four counts as \"other\"). {FROM_POLL}"
                ),
            ),
            &["from", "to"],
        )
        .expect("valid metric");
        let walk_gauge = |name: &str, help: &str| label_less(name, help.into());
        let organizations_up = walk_gauge(
            "aws_compute_optimizer_organizations_up",
            "1 if the latest walk of the organisation (aws.organizations), tags included, succeeded, 0 if it failed. Absent while the walk is off or before its first end.",
        );
        let organizations_last_success = walk_gauge(
            "aws_compute_optimizer_organizations_last_success_timestamp_seconds",
            "Unix time at which the latest successful walk of the organisation ended.",
        );
        let organizations_complete = walk_gauge(
            "aws_compute_optimizer_organizations_complete",
            "1 if names, OUs and every configured tag are known for every listed account (from a walk or a restored --storage.path snapshot), 0 while some are not.",
        );
        let storage_write_failures = prometheus::IntCounter::with_opts(opts(
            "aws_compute_optimizer_exporter_storage_write_failures_total",
            "Saves of the organisation to --storage.path that failed (the data in memory is kept and served).".into(),
        ))
        .expect("valid metric");

        let registry = Registry::new();
        register(
            &registry,
            vec![
                Box::new(up.clone()),
                Box::new(last_success.clone()),
                Box::new(poll_duration.clone()),
                Box::new(polls.clone()),
                Box::new(api_requests.clone()),
                Box::new(accounts_skipped.clone()),
                Box::new(poll_interval.clone()),
                Box::new(transitions.clone()),
                Box::new(organizations_up.clone()),
                Box::new(organizations_last_success.clone()),
                Box::new(organizations_complete.clone()),
                Box::new(storage_write_failures.clone()),
            ],
        );
        // Series that exist before anything happens, so rate() and alerts see them.
        for result in ["success", "failure"] {
            polls.with_label_values(&[result]);
        }
        accounts_skipped.with_label_values(&[SKIPPED_MISSING]);
        accounts_skipped.with_label_values(&[SKIPPED_ORGANIZATIONS]);
        for from in &Status::KNOWN {
            for to in Status::KNOWN.iter().filter(|to| *to != from) {
                transitions.with_label_values(&[from.as_str(), to.as_str()]);
            }
        }
        OrgMetrics {
            registry,
            up,
            last_success,
            poll_duration,
            polls,
            api_requests,
            accounts_skipped,
            poll_interval,
            transitions,
            organizations_up,
            organizations_last_success,
            organizations_complete,
            storage_write_failures,
            gauges: std::sync::Mutex::new(Vec::new()),
            organization: organization.map(str::to_owned),
        }
    }
}

impl SelfMetrics {
    pub fn new(version: &str, revision: &str) -> SelfMetrics {
        let registry = Registry::new();
        let reload_success = Gauge::with_opts(Opts::new(
            "aws_compute_optimizer_exporter_config_last_reload_successful",
            "1 if the latest configuration (re)load succeeded, 0 if it was refused.",
        ))
        .expect("valid metric");
        let reload_timestamp = Gauge::with_opts(Opts::new(
            "aws_compute_optimizer_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the latest successful configuration (re)load.",
        ))
        .expect("valid metric");
        let build_info = GaugeVec::new(
            Opts::new(
                "aws_compute_optimizer_exporter_build_info",
                "Constant 1, labelled with the exporter's version and source revision.",
            ),
            &["version", "revision"],
        )
        .expect("valid metric");
        build_info.with_label_values(&[version, revision]).set(1.0);
        register(
            &registry,
            vec![
                Box::new(reload_success.clone()),
                Box::new(reload_timestamp.clone()),
                Box::new(build_info),
            ],
        );
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics register once");
        SelfMetrics {
            registry,
            reload_success,
            reload_timestamp,
        }
    }

    /// Adds series another part of the exporter counts (the web layer's),
    /// so they are encoded with these. Registering one twice (a second
    /// server on the same state, in tests) is a no-op.
    pub fn register(&self, collectors: Vec<Box<dyn prometheus::core::Collector>>) {
        for c in collectors {
            let _ = self.registry.register(c);
        }
    }

    /// Encodes the exporter's own metrics and those of `orgs` (done per
    /// scrape; they are few). A family several organisations share is
    /// written once, their series in the order given.
    pub fn encode<'a>(
        &self,
        format: Format,
        orgs: impl IntoIterator<Item = &'a OrgMetrics>,
    ) -> Vec<u8> {
        let mut families: std::collections::BTreeMap<String, prometheus::proto::MetricFamily> =
            std::collections::BTreeMap::new();
        let gathered = orgs.into_iter().map(|o| o.registry.gather());
        for mut family in std::iter::once(self.registry.gather())
            .chain(gathered)
            .flatten()
        {
            match families.entry(family.name().to_owned()) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(family);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    e.get_mut().mut_metric().extend(family.take_metric());
                }
            }
        }
        let families: Vec<_> = families.into_values().collect();
        match format {
            Format::Text => {
                let mut out = Vec::with_capacity(8 * 1024);
                // Encoding gathered families into a Vec cannot fail.
                let _ = TextEncoder::new().encode(&families, &mut out);
                out
            }
            Format::OpenMetrics => crate::expose::openmetrics::encode(&families),
        }
    }
}

pub const ACCOUNT_INFO_HELP: &str = "Constant 1 per organisation account, labelled with its name, its Organizations state (account_state: ACTIVE, SUSPENDED, PENDING_CLOSURE, CLOSED, PENDING_ACTIVATION), its place in the organisation (ou_id, ou_path: names from the root down) and the tags listed in aws.account_tags (tag_<key>), from AWS Organizations, for joining onto other series and routing alerts. Comes from the background walk of the organisation, not from the scrape.";

/// Renders the organisation's series exactly as `prometheus::TextEncoder`
/// would (families by name, series by label values), but in one pass over a
/// sorted snapshot and without building a registry per poll: the walk's
/// segment, then the poll's (their families sort in that order).
pub fn render_snapshot(
    snap: &Snapshot,
    names: &Directory,
    org: Option<&str>,
    format: Format,
) -> String {
    render_walk(names, org).to_string(format) + &render_poll(snap, org).to_string(format)
}

/// `organization="<name>"` for the series of a named organisation; nothing
/// for the only one. Label names sort, so it goes between `account_*` and
/// `ou_*`/`status`, where `prometheus::TextEncoder` puts a const label.
fn organization_pair(org: Option<&str>) -> String {
    let mut pair = String::new();
    if let Some(org) = org {
        pair.push_str(ORGANIZATION_LABEL);
        pair.push_str("=\"");
        escape_label(&mut pair, org);
        pair.push('"');
    }
    pair
}

/// The organisation's pair in each place a renderer writes it: before the
/// labels that sort after it (`lead`: the pair and a comma), after those
/// that sort before it (`between`: a comma and the pair), or as a series'
/// only label (`braced`). All empty for the only, unnamed organisation.
struct OrgLabel {
    lead: String,
    between: String,
    braced: String,
}

impl OrgLabel {
    fn of(org: Option<&str>) -> OrgLabel {
        let pair = organization_pair(org);
        if pair.is_empty() {
            return OrgLabel {
                lead: String::new(),
                between: String::new(),
                braced: String::new(),
            };
        }
        OrgLabel {
            lead: format!("{pair},"),
            between: format!(",{pair}"),
            braced: format!("{{{pair}}}"),
        }
    }
}

/// The organisation walk's series: `account_info`.
pub fn render_walk(names: &Directory, org: Option<&str>) -> Rendered {
    let org = organization_pair(org);
    let mut out = Rendered::new();
    if !names.is_empty() {
        header(&mut out, ACCOUNT_INFO, ACCOUNT_INFO_HELP);
        for (id, info) in &names.accounts {
            out.push_str(ACCOUNT_INFO);
            out.push_str("{account_id=\"");
            escape_label(&mut out, id);
            out.push_str("\",account_name=\"");
            escape_label(&mut out, &info.name);
            out.push_str("\",account_state=\"");
            escape_label(&mut out, &info.state);
            if !org.is_empty() {
                out.push_str("\",");
                out.push_str(&org);
                out.push_str(",ou_id=\"");
            } else {
                out.push_str("\",ou_id=\"");
            }
            escape_label(&mut out, &info.ou_id);
            out.push_str("\",ou_path=\"");
            escape_label(&mut out, &info.ou_path);
            for (i, (label, _)) in names.tag_labels.iter().enumerate() {
                out.push_str("\",");
                out.push_str(label);
                out.push_str("=\"");
                escape_label(&mut out, info.tags.get(i).map_or("", String::as_str));
            }
            out.push_str("\"} 1\n");
            out.end_of_series();
        }
    }
    out
}

/// The enrollment poll's series; nothing before the first poll (no
/// made-up statuses).
pub fn render_poll(snap: &Snapshot, org: Option<&str>) -> Rendered {
    if snap.finished_at.is_none() {
        return Rendered::default();
    }
    let OrgLabel {
        lead,
        between,
        braced,
    } = OrgLabel::of(org);
    let mut out = Rendered::new();

    per_status(
        &mut out,
        ACCOUNTS,
        &format!("Number of organisation member accounts in each enrollment status. {FROM_POLL}"),
        &snap.counts(),
        &lead,
    );
    per_account(
        &mut out,
        [STATUS, LAST_UPDATED],
        [
            &format!(
                "Enrollment status of each member account in Compute Optimizer: 1 for its current status, 0 for the other documented statuses. {FROM_POLL}"
            ),
            &format!(
                "When the account's enrollment status was last updated (lastUpdatedTimestamp), as Unix seconds. {FROM_POLL}"
            ),
        ],
        || {
            snap.accounts
                .values()
                .map(|a| (a.account_id.as_str(), &a.status, a.last_updated))
        },
        &between,
    );

    if let Some(management) = &snap.org {
        if let Some(status) = &management.status {
            header(
                &mut out,
                MANAGEMENT_STATUS,
                &format!(
                    "Enrollment status of the calling (management or delegated administrator) account: 1 for its current status, 0 for the others. {FROM_ORG_STATUS}"
                ),
            );
            one_hot(&mut out, &format!("{MANAGEMENT_STATUS}{{{lead}"), status);
        }
        // Only the management account's answer carries the member count; a
        // delegated administrator's leaves it out and can read
        // memberAccountsEnrolled (a plain bool) as false: then neither is
        // exported, rather than a wrong 0.
        if let Some(n) = management.member_accounts_opted_in {
            header(
                &mut out,
                MEMBERS_ENROLLED,
                &format!(
                    "1 if the organisation-wide opt-in covers member accounts (memberAccountsEnrolled), else 0. {FROM_ORG_STATUS}"
                ),
            );
            let _ = writeln!(
                out,
                "{MEMBERS_ENROLLED}{braced} {}",
                u8::from(management.member_accounts_enrolled)
            );
            header(
                &mut out,
                MEMBERS_OPTED_IN,
                &format!(
                    "Number of member accounts opted in (numberOfMemberAccountsOptedIn). {FROM_ORG_STATUS}"
                ),
            );
            let _ = writeln!(out, "{MEMBERS_OPTED_IN}{braced} {n}");
        }
    }
    out
}

/// Compute Optimizer Automation's series (`aws.automation`): per account,
/// its enrollment status (one-hot), when that last changed and its rule
/// mode (one-hot); the count per status; the calling account's own status.
pub fn render_automation(snap: &AutomationSnapshot, org: Option<&str>) -> Rendered {
    let OrgLabel { lead, between, .. } = OrgLabel::of(org);
    let mut out = Rendered::new();
    per_status(
        &mut out,
        AUTOMATION_ACCOUNTS,
        &format!(
            "Number of organisation accounts in each Compute Optimizer Automation enrollment status. {FROM_AUTOMATION}"
        ),
        &snap.counts(),
        &lead,
    );
    per_account(
        &mut out,
        [AUTOMATION_STATUS, AUTOMATION_LAST_UPDATED],
        [
            &format!(
                "Enrollment status of each account in Compute Optimizer Automation: 1 for its current status, 0 for the other documented statuses. {FROM_AUTOMATION}"
            ),
            &format!(
                "When the account's Compute Optimizer Automation enrollment status was last updated (lastUpdatedTimestamp), as Unix seconds. {FROM_AUTOMATION}"
            ),
        ],
        || {
            snap.accounts
                .values()
                .map(|a| (a.account_id.as_str(), &a.status, a.last_updated))
        },
        &between,
    );

    if let Some(management) = &snap.management {
        header(
            &mut out,
            AUTOMATION_MANAGEMENT_STATUS,
            &format!(
                "Compute Optimizer Automation enrollment status of the calling (management or delegated administrator) account: 1 for its current status, 0 for the others. {FROM_AUTOMATION_ENROLLMENT}"
            ),
        );
        one_hot(
            &mut out,
            &format!("{AUTOMATION_MANAGEMENT_STATUS}{{{lead}"),
            &management.status,
        );
    }

    if snap.accounts.values().any(|a| a.rule_mode.is_some()) {
        header(
            &mut out,
            AUTOMATION_RULE_MODE,
            &format!(
                "Whether the management account's Automation rules may act on the account (organizationRuleMode): 1 for its current mode, 0 for the other documented mode. {FROM_AUTOMATION}"
            ),
        );
        let mut prefix = String::new();
        for account in snap.accounts.values() {
            let Some(mode) = &account.rule_mode else {
                continue;
            };
            prefix.clear();
            prefix.push_str(AUTOMATION_RULE_MODE);
            prefix.push_str("{account_id=\"");
            escape_label(&mut prefix, &account.account_id);
            prefix.push_str("\",");
            one_hot_of(
                &mut out,
                &prefix,
                "mode",
                &RULE_MODES,
                mode.as_str(),
                &between,
            );
            out.end_of_series();
        }
    }
    out
}

/// Organizations' view of Compute Optimizer: trusted access (and since
/// when) and its delegated administrators. Nothing while it is not known
/// (refused to a delegated administrator, not asked yet).
pub fn render_access(access: Option<&TrustedAccess>, org: Option<&str>) -> Rendered {
    let mut out = Rendered::new();
    let Some(access) = access else {
        return out;
    };
    let OrgLabel {
        between, braced, ..
    } = OrgLabel::of(org);
    if !access.delegated_administrators.is_empty() {
        header(
            &mut out,
            DELEGATED_ADMINISTRATOR,
            &format!(
                "Constant 1 per delegated administrator account of Compute Optimizer (compute-optimizer.amazonaws.com), labelled with its name. {FROM_ACCESS}"
            ),
        );
        for (id, name) in &access.delegated_administrators {
            out.push_str(DELEGATED_ADMINISTRATOR);
            out.push_str("{account_id=\"");
            escape_label(&mut out, id);
            out.push_str("\",account_name=\"");
            escape_label(&mut out, name);
            let _ = writeln!(out, "\"{between}}} 1");
        }
    }
    header(
        &mut out,
        TRUSTED_ACCESS,
        &format!(
            "1 if Compute Optimizer (compute-optimizer.amazonaws.com) has trusted access in AWS Organizations, else 0: without it, member accounts cannot be enrolled. {FROM_ACCESS}"
        ),
    );
    let _ = writeln!(
        out,
        "{TRUSTED_ACCESS}{braced} {}",
        u8::from(access.enabled.is_some())
    );
    if let Some(Some(since)) = access.enabled {
        header(
            &mut out,
            TRUSTED_ACCESS_SINCE,
            &format!(
                "When Compute Optimizer's trusted access in AWS Organizations was enabled (DateEnabled), as Unix seconds. {FROM_ACCESS}"
            ),
        );
        let _ = writeln!(out, "{TRUSTED_ACCESS_SINCE}{braced} {since}");
    }
    out
}

/// A count per status (the four documented ones always, others as seen),
/// ordered by label value as the encoder orders them: `lead` is the
/// organisation's pair and a comma, or nothing.
fn per_status(
    out: &mut Rendered,
    name: &str,
    help: &str,
    counts: &std::collections::BTreeMap<Status, u64>,
    lead: &str,
) {
    header(out, name, help);
    let mut by_label: Vec<(&str, u64)> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    by_label.sort_unstable();
    for (status, n) in by_label {
        out.push_str(name);
        out.push('{');
        out.push_str(lead);
        out.push_str("status=\"");
        escape_label(out, status);
        let _ = writeln!(out, "\"}} {n}");
    }
}

/// Per account: its status one-hot (`names[0]`), then when it last changed
/// (`names[1]`, only if some account has a time), in account ID order;
/// `between` is a comma and the organisation's pair, or nothing. Shared by
/// every enrollment programme (Compute Optimizer, Automation).
fn per_account<'a, I>(
    out: &mut Rendered,
    names: [&str; 2],
    helps: [&str; 2],
    accounts: impl Fn() -> I,
    between: &str,
) where
    I: Iterator<Item = (&'a str, &'a Status, Option<f64>)>,
{
    let [status_name, updated_name] = names;
    header(out, status_name, helps[0]);
    let mut prefix = String::new();
    for (id, status, _) in accounts() {
        prefix.clear();
        prefix.push_str(status_name);
        prefix.push_str("{account_id=\"");
        escape_label(&mut prefix, id);
        prefix.push('"');
        prefix.push_str(between);
        prefix.push(',');
        one_hot(out, &prefix, status);
        out.end_of_series();
    }
    if accounts().any(|(_, _, updated)| updated.is_some()) {
        header(out, updated_name, helps[1]);
        for (id, _, updated) in accounts() {
            if let Some(ts) = updated {
                out.push_str(updated_name);
                out.push_str("{account_id=\"");
                escape_label(out, id);
                let _ = writeln!(out, "\"{between}}} {ts}");
                out.end_of_series();
            }
        }
    }
}

/// One series per documented status (plus the current one if unknown),
/// sorted by status: `prefix` is `name{` plus any labels before `status`.
fn one_hot(out: &mut String, prefix: &str, current: &Status) {
    let known = Status::KNOWN.each_ref().map(Status::as_str);
    one_hot_of(out, prefix, "status", &known, current.as_str(), "");
}

/// One series per documented value of `label` (plus the current one if it
/// is none of them), sorted by value, 1 for `current`: `prefix` is `name{`
/// plus the labels before `label`, `suffix` those after it (a comma first).
fn one_hot_of(
    out: &mut String,
    prefix: &str,
    label: &str,
    known: &[&str],
    current: &str,
    suffix: &str,
) {
    let mut values: Vec<&str> = known.to_vec();
    if !values.contains(&current) {
        values.push(current);
    }
    values.sort_unstable();
    for value in values {
        out.push_str(prefix);
        out.push_str(label);
        out.push_str("=\"");
        escape_label(out, value);
        let _ = writeln!(out, "\"{suffix}}} {}", u8::from(value == current));
    }
}

fn header(out: &mut Rendered, name: &str, help: &str) {
    out.header(name, help, Kind::Gauge);
}

/// Escapes a label value as both formats require.
fn escape_label(out: &mut String, value: &str) {
    crate::expose::openmetrics::escape(out, value, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Account;
    use std::time::SystemTime;

    fn snapshot(n: usize) -> Snapshot {
        let mut snap = Snapshot {
            finished_at: Some(SystemTime::now()),
            ..Default::default()
        };
        for i in 0..n {
            let id = format!(
                "{:012}",
                100_000_000_000u64 + (i as u64 * 7919) % 900_000_000_000
            );
            let status = match i % 6 {
                0..=2 => Status::Active,
                3 => Status::Pending,
                4 => Status::Failed,
                _ if i % 12 == 5 => Status::Other("Suspe\"nded\\\n".into()),
                _ => Status::Inactive,
            };
            snap.accounts.insert(Account {
                account_id: id,
                status,
                status_reason: Some("reason".into()),
                last_updated: (i % 5 != 0).then_some(1_700_000_000.0 + i as f64 * 0.25),
            });
        }
        snap
    }

    fn names(snap: &Snapshot) -> Directory {
        Directory {
            organization: String::new(),
            tag_labels: vec![
                ("tag_cost_center".into(), "cost-center".into()),
                ("tag_team".into(), "team".into()),
            ],
            accounts: snap
                .accounts
                .values()
                .map(|a| &a.account_id)
                .step_by(2)
                .enumerate()
                .map(|(i, id)| {
                    let info = crate::model::AccountInfo {
                        name: format!("team \"{id}\" <prod>\\"),
                        ou_id: format!("ou-ab12-{i:08}"),
                        ou_path: if i % 3 == 0 {
                            "Root".into()
                        } else {
                            "Root/Prod/Pay\"ments".into()
                        },
                        tags: if i % 4 == 0 {
                            vec![]
                        } else {
                            vec!["cc-1".into(), format!("team-{}", i % 5)]
                        },
                        state: ["ACTIVE", "SUSPENDED", ""][i % 3].into(),
                        tags_known: i % 4 != 0,
                    };
                    (id.clone(), info)
                })
                .collect(),
        }
    }

    /// The reference: the same data through a plain prometheus registry.
    fn registry_render(snap: &Snapshot, names: &Directory, org: Option<&str>) -> String {
        let r = Registry::new();
        // What OrgMetrics does for a named organisation: a const label.
        let with_org = |opts: Opts| match org {
            Some(org) => opts.const_label(ORGANIZATION_LABEL, org),
            None => opts,
        };
        let status = GaugeVec::new(
            with_org(Opts::new(STATUS, format!("Enrollment status of each member account in Compute Optimizer: 1 for its current status, 0 for the other documented statuses. {FROM_POLL}"))),
            &["account_id", "status"],
        )
        .unwrap();
        let last = GaugeVec::new(
            with_org(Opts::new(LAST_UPDATED, format!("When the account's enrollment status was last updated (lastUpdatedTimestamp), as Unix seconds. {FROM_POLL}"))),
            &["account_id"],
        )
        .unwrap();
        let accounts = GaugeVec::new(
            with_org(Opts::new(
                ACCOUNTS,
                format!(
                    "Number of organisation member accounts in each enrollment status. {FROM_POLL}"
                ),
            )),
            &["status"],
        )
        .unwrap();
        let mut info_labels = vec![
            "account_id",
            "account_name",
            "account_state",
            "ou_id",
            "ou_path",
        ];
        info_labels.extend(names.tag_labels.iter().map(|(l, _)| l.as_str()));
        let info = GaugeVec::new(
            with_org(Opts::new(ACCOUNT_INFO, ACCOUNT_INFO_HELP)),
            &info_labels,
        )
        .unwrap();
        let mgmt = GaugeVec::new(
            with_org(Opts::new(MANAGEMENT_STATUS, format!("Enrollment status of the calling (management or delegated administrator) account: 1 for its current status, 0 for the others. {FROM_ORG_STATUS}"))),
            &["status"],
        )
        .unwrap();
        let enrolled = Gauge::with_opts(with_org(Opts::new(MEMBERS_ENROLLED, format!("1 if the organisation-wide opt-in covers member accounts (memberAccountsEnrolled), else 0. {FROM_ORG_STATUS}")))).unwrap();
        let opted = Gauge::with_opts(with_org(Opts::new(MEMBERS_OPTED_IN, format!("Number of member accounts opted in (numberOfMemberAccountsOptedIn). {FROM_ORG_STATUS}")))).unwrap();
        for a in snap.accounts.values() {
            for s in Status::KNOWN.iter().chain(std::iter::once(&a.status)) {
                let v = if *s == a.status { 1.0 } else { 0.0 };
                status
                    .with_label_values(&[a.account_id.as_str(), s.as_str()])
                    .set(v);
            }
            if let Some(ts) = a.last_updated {
                last.with_label_values(&[a.account_id.as_str()]).set(ts);
            }
        }
        for (s, n) in snap.counts() {
            accounts.with_label_values(&[s.as_str()]).set(n as f64);
        }
        for (id, a) in &names.accounts {
            let mut values = vec![id.as_str(), &a.name, &a.state, &a.ou_id, &a.ou_path];
            for i in 0..names.tag_labels.len() {
                values.push(a.tags.get(i).map_or("", String::as_str));
            }
            info.with_label_values(&values).set(1.0);
        }
        if let Some(org) = &snap.org {
            if let Some(status) = &org.status {
                for s in Status::KNOWN.iter().chain(std::iter::once(status)) {
                    mgmt.with_label_values(&[s.as_str()])
                        .set(if s == status { 1.0 } else { 0.0 });
                }
            }
            enrolled.set(if org.member_accounts_enrolled {
                1.0
            } else {
                0.0
            });
            opted.set(org.member_accounts_opted_in.unwrap() as f64);
            r.register(Box::new(mgmt)).unwrap();
            r.register(Box::new(enrolled)).unwrap();
            r.register(Box::new(opted)).unwrap();
        }
        r.register(Box::new(status)).unwrap();
        r.register(Box::new(last)).unwrap();
        r.register(Box::new(accounts)).unwrap();
        r.register(Box::new(info)).unwrap();
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cached_render_equals_registry_encoding() {
        for (n, org) in [
            (1, None),
            (7, None),
            (1000, None),
            (7, Some("gov-cloud.1")),
            (1000, Some("a")),
        ] {
            let mut snap = snapshot(n);
            let none = Directory::default();
            assert_eq!(
                render_snapshot(&snap, &none, org, Format::Text),
                registry_render(&snap, &none, org),
                "n={n}"
            );
            let names = names(&snap);
            snap.org = Some(crate::model::OrgStatus {
                status: match n {
                    7 => Some(Status::Other("Odd".into())),
                    1000 => None,
                    _ => Some(Status::Active),
                },
                status_reason: None,
                member_accounts_enrolled: n != 1,
                member_accounts_opted_in: Some(n as i64),
                last_updated: None,
            });
            assert_eq!(
                render_snapshot(&snap, &names, org, Format::Text),
                registry_render(&snap, &names, org),
                "n={n} with names"
            );
        }
    }

    #[test]
    fn nothing_is_rendered_before_the_first_poll() {
        for format in [Format::Text, Format::OpenMetrics] {
            assert_eq!(
                render_snapshot(&Snapshot::default(), &Directory::default(), None, format),
                ""
            );
        }
    }

    #[test]
    fn both_compression_levels_give_valid_streams() {
        // Above the threshold the faster level is used; both must inflate.
        use crate::expose::deflate::STRONGEST_LEVEL_MAX_BYTES;
        use crate::expose::exposition::Exposition;
        let big = render_snapshot(&snapshot(40_000), &Directory::default(), None, Format::Text);
        assert!(big.len() > STRONGEST_LEVEL_MAX_BYTES, "{}", big.len());
        let small = render_snapshot(&snapshot(300), &Directory::default(), None, Format::Text);
        for text in [small, big] {
            let exp = Exposition::new(text.clone());
            let all = exp.gzip_body(Format::Text, b"x 1\n").concat();
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&all[..]), &mut got)
                .unwrap();
            assert_eq!(&got[..4], b"x 1\n");
            assert!(got[4..] == *text.as_bytes());
        }
    }

    #[test]
    fn self_metrics_have_help_and_build_info() {
        let m = SelfMetrics::new("1.2.3", "abc");
        let org = OrgMetrics::new(None);
        let text = String::from_utf8(m.encode(Format::Text, [&org])).unwrap();
        assert!(text.contains(
            "aws_compute_optimizer_exporter_build_info{revision=\"abc\",version=\"1.2.3\"} 1"
        ));
        assert!(text.contains("# HELP aws_compute_optimizer_up "));
        assert!(text.contains("aws_compute_optimizer_polls_total{result=\"failure\"} 0"));
        assert!(text.contains(
            "aws_compute_optimizer_skipped_items_total{reason=\"missing_account_id_or_status\"} 0"
        ));
    }
}
