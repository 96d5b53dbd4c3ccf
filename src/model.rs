//! Plain data types shared by the poller, the renderer and the HTTP pages.
//! Nothing here knows about the AWS SDK.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

/// An account's Compute Optimizer enrollment status.
///
/// The four documented values are variants; anything else the API returns is
/// kept verbatim so it can still be exported (under its raw value) instead of
/// being silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Active,
    Inactive,
    Pending,
    Failed,
    Other(String),
}

impl Status {
    /// The documented statuses, in the order they are exported.
    pub const KNOWN: [Status; 4] = [
        Status::Active,
        Status::Inactive,
        Status::Pending,
        Status::Failed,
    ];

    /// Parses a status as the API spells it; unknown values become `Other`.
    pub fn from_api(raw: &str) -> Status {
        match raw {
            "Active" => Status::Active,
            "Inactive" => Status::Inactive,
            "Pending" => Status::Pending,
            "Failed" => Status::Failed,
            other => Status::Other(other.to_owned()),
        }
    }

    /// Parses one of the four documented values only (for configuration).
    pub fn parse_known(raw: &str) -> Option<Status> {
        match Status::from_api(raw) {
            Status::Other(_) => None,
            known => Some(known),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Status::Active => "Active",
            Status::Inactive => "Inactive",
            Status::Pending => "Pending",
            Status::Failed => "Failed",
            Status::Other(raw) => raw,
        }
    }

    pub fn is_known(&self) -> bool {
        !matches!(self, Status::Other(_))
    }

    /// Accounts per status: the four documented ones always (0 where none
    /// is), any other as seen.
    pub fn count<'a>(statuses: impl Iterator<Item = &'a Status>) -> BTreeMap<Status, u64> {
        let mut counts: BTreeMap<Status, u64> =
            Status::KNOWN.iter().map(|s| (s.clone(), 0)).collect();
        for s in statuses {
            *counts.entry(s.clone()).or_default() += 1;
        }
        counts
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One account's enrollment, as one item of a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub account_id: String,
    pub status: Status,
    /// Free text from the API: shown to people, never used as a label.
    pub status_reason: Option<String>,
    /// `lastUpdatedTimestamp` as Unix seconds.
    pub last_updated: Option<f64>,
}

/// What one page request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub max_results: u8,
    pub next_token: Option<String>,
    /// Server-side status filter; empty means all statuses.
    pub statuses: Vec<Status>,
}

/// One page of any listing the exporter makes.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
    /// Items the upstream sent without a field we need; counted, not exported.
    pub skipped: usize,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Page {
            items: Vec::new(),
            next_token: None,
            skipped: 0,
        }
    }
}

/// The calling (management or delegated administrator) account's own
/// enrollment, from `GetEnrollmentStatus`.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgStatus {
    /// `None` when the answer carried no status: no series is made up for it.
    pub status: Option<Status>,
    pub status_reason: Option<String>,
    /// Whether the opt-in covers the organisation's member accounts.
    pub member_accounts_enrolled: bool,
    pub member_accounts_opted_in: Option<i64>,
    pub last_updated: Option<f64>,
}

/// One account's enrollment in Compute Optimizer Automation, as one item
/// of `ListAccounts`.
#[derive(Debug, Clone, PartialEq)]
pub struct AutomationAccount {
    pub account_id: String,
    /// The same four documented statuses as Compute Optimizer's own.
    pub status: Status,
    /// `organizationRuleMode`: whether the management account's rules may
    /// act on the account.
    pub rule_mode: Option<RuleMode>,
    pub status_reason: Option<String>,
    /// `lastUpdatedTimestamp` as Unix seconds.
    pub last_updated: Option<f64>,
}

/// Automation's `organizationRuleMode`: the two documented values, and
/// anything else verbatim (exported under its raw value, as a status is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleMode {
    AnyAllowed,
    NoneAllowed,
    Other(String),
}

impl RuleMode {
    pub fn from_api(raw: &str) -> RuleMode {
        match raw {
            "AnyAllowed" => RuleMode::AnyAllowed,
            "NoneAllowed" => RuleMode::NoneAllowed,
            other => RuleMode::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RuleMode::AnyAllowed => "AnyAllowed",
            RuleMode::NoneAllowed => "NoneAllowed",
            RuleMode::Other(raw) => raw,
        }
    }
}

/// Automation's accounts, sorted by ID, each once: one vector (at 100,000
/// accounts a map would hold every ID twice, and the listing's vector and
/// the map would both be alive while it is built).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AutomationAccounts(Vec<AutomationAccount>);

impl AutomationAccounts {
    /// From a listing's items; an ID listed twice keeps its last listing.
    pub fn from_listed(mut listed: Vec<AutomationAccount>) -> AutomationAccounts {
        listed.reverse();
        listed.sort_by(|a, b| a.account_id.cmp(&b.account_id));
        listed.dedup_by(|later, kept| later.account_id == kept.account_id);
        listed.shrink_to_fit();
        AutomationAccounts(listed)
    }

    pub fn get(&self, id: &str) -> Option<&AutomationAccount> {
        self.0
            .binary_search_by(|a| a.account_id.as_str().cmp(id))
            .ok()
            .map(|i| &self.0[i])
    }

    /// In account ID order.
    pub fn values(&self) -> std::slice::Iter<'_, AutomationAccount> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The calling account's own Automation enrollment
/// (`GetEnrollmentConfiguration`).
#[derive(Debug, Clone, PartialEq)]
pub struct AutomationEnrollment {
    pub status: Status,
    pub status_reason: Option<String>,
    pub rule_mode: Option<RuleMode>,
    pub last_updated: Option<f64>,
}

/// What one round of the Automation producer learned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AutomationSnapshot {
    pub accounts: AutomationAccounts,
    /// `None` when `GetEnrollmentConfiguration` failed this round.
    pub management: Option<AutomationEnrollment>,
    pub pages: usize,
}

impl AutomationSnapshot {
    /// Accounts per status: the four documented ones always, others as seen.
    pub fn counts(&self) -> BTreeMap<Status, u64> {
        Status::count(self.accounts.values().map(|a| &a.status))
    }
}

/// Whether Compute Optimizer has trusted access in AWS Organizations, and
/// its delegated administrators: what `ListAWSServiceAccessForOrganization`
/// and `ListDelegatedAdministrators` say.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrustedAccess {
    /// `Some(since)` when trusted access is on (`DateEnabled`, Unix
    /// seconds, if given).
    pub enabled: Option<Option<f64>>,
    /// `(account ID, account name)`, sorted.
    pub delegated_administrators: Vec<(String, String)>,
}

/// What AWS Organizations says of each account: name, place in the
/// organisation tree and the tags asked for (`aws.account_tags`).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Directory {
    /// The organisation this is of, as the walk saw it: its ID (`o-…`, from
    /// the root's ARN); empty where not known (a file from an older build).
    /// A saved directory of another organisation is never served as this
    /// one's.
    #[serde(default)]
    pub organization: String,
    /// Label names of the tags, sorted (`tag_team`, `tag_cost_center`), and
    /// the tag key each is read from.
    pub tag_labels: Vec<(String, String)>,
    /// By account ID.
    pub accounts: BTreeMap<String, AccountInfo>,
}

#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct AccountInfo {
    /// Empty when Organizations lists the account without a name (`Name`
    /// is optional in its model).
    pub name: String,
    /// The account's parent: an OU ID, or the root's ID.
    pub ou_id: String,
    /// Names from the root down joined by `/`: `Root/Prod/Payments`.
    pub ou_path: String,
    /// Values for [`Directory::tag_labels`], in the same order; empty where
    /// the account has no such tag (or its tags are not known yet).
    pub tags: Vec<String>,
    /// Organizations' `State`: `ACTIVE`, `SUSPENDED`, `PENDING_CLOSURE`,
    /// `CLOSED`, `PENDING_ACTIVATION`; empty when not given.
    #[serde(default)]
    pub state: String,
    /// Whether `tags` were read for this account (empty values then mean
    /// "no such tag", not "not known yet").
    #[serde(default)]
    pub tags_known: bool,
}

/// When the parts of the organisation's directory were learned (Unix
/// seconds; 0 for never): the structure (names, OUs, states) from a whole
/// walk, the tags from the latest account whose tags were read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Learned {
    pub structure: f64,
    pub tags: f64,
    /// When the latest whole walk, tags included, succeeded (0: none
    /// known): `aws_compute_optimizer_organizations_last_success_timestamp_seconds`.
    pub walked: f64,
}

/// A root of the organisation tree, as `ListRoots` gives it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Root {
    pub id: String,
    pub name: String,
    /// The organisation's ID (`o-…`), read from the root's ARN
    /// (`arn:aws:organizations::<management account>:root/<o-…>/<r-…>`).
    pub organization: Option<String>,
}

impl Root {
    /// The organisation ID in a root's ARN, if it has the documented shape.
    pub fn organization_of(arn: &str) -> Option<String> {
        let rest = arn.split_once(":root/")?.1;
        let (org, _root) = rest.split_once('/')?;
        (org.starts_with("o-") && org.len() > 2).then(|| org.to_owned())
    }
}

/// One account as AWS Organizations lists it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrgAccount {
    pub id: String,
    /// Empty when the listing carries no `Name`.
    pub name: String,
    pub state: String,
}

/// Organizations' account states in which Compute Optimizer enrollment can
/// never complete: nobody can fix a Pending or Failed status there.
pub const STATES_BEYOND_REACH: [&str; 3] = ["SUSPENDED", "PENDING_CLOSURE", "CLOSED"];

impl Directory {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn name(&self, account_id: &str) -> Option<&str> {
        self.accounts.get(account_id).map(|a| a.name.as_str())
    }

    /// True when names, OUs and every configured tag are known for every
    /// account listed (the walk's data is whole, not part-way).
    pub fn complete(&self) -> bool {
        self.tag_labels.is_empty() || self.accounts.values().all(|a| a.tags_known)
    }
}

/// Every account of a poll, sorted by account ID, each once (an account
/// that appears on two pages, the organisation changing mid-poll, keeps its
/// later listing).
///
/// A sorted `Vec` rather than a map keyed by ID: the ID is not stored twice
/// and there are no tree nodes, which halves what an organisation's
/// statuses take (they are held twice while a poll publishes, by every
/// organisation whose poll ends at the same time).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Accounts(Vec<Account>);

impl Accounts {
    /// The accounts as listed, in any order, duplicates included.
    pub fn from_listed(mut listed: Vec<Account>) -> Accounts {
        // A stable sort of the reversed listing puts each ID's last listing
        // first, and `dedup_by` keeps the first of each run.
        listed.reverse();
        listed.sort_by(|a, b| a.account_id.cmp(&b.account_id));
        listed.dedup_by(|later, kept| later.account_id == kept.account_id);
        listed.shrink_to_fit();
        Accounts(listed)
    }

    /// Adds or replaces the account with this ID (tests, tools: a poll
    /// builds the whole list with [`Accounts::from_listed`]).
    pub fn insert(&mut self, account: Account) {
        match self.position(&account.account_id) {
            Ok(i) => self.0[i] = account,
            Err(i) => self.0.insert(i, account),
        }
    }

    fn position(&self, id: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|a| a.account_id.as_str().cmp(id))
    }

    pub fn get(&self, id: &str) -> Option<&Account> {
        self.position(id).ok().map(|i| &self.0[i])
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.position(id).is_ok()
    }

    /// In account ID order.
    pub fn values(&self) -> std::slice::Iter<'_, Account> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Accounts {
    type Item = &'a Account;
    type IntoIter = std::slice::Iter<'a, Account>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The result of one complete poll: every account of every page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub accounts: Accounts,
    pub pages: usize,
    pub finished_at: Option<SystemTime>,
    /// `None` when `GetEnrollmentStatus` was not answered this poll.
    pub org: Option<OrgStatus>,
}

impl Snapshot {
    /// Number of accounts per status: the four documented statuses always,
    /// plus any other value seen.
    pub fn counts(&self) -> BTreeMap<Status, u64> {
        Status::count(self.accounts.values().map(|a| &a.status))
    }
}

/// Seconds since the Unix epoch, as Prometheus timestamps are written.
pub fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_status_keeps_its_raw_value() {
        let s = Status::from_api("Suspended");
        assert_eq!(s, Status::Other("Suspended".into()));
        assert_eq!(s.as_str(), "Suspended");
        assert!(!s.is_known());
        assert_eq!(Status::parse_known("Suspended"), None);
        assert_eq!(Status::parse_known("Pending"), Some(Status::Pending));
    }

    #[test]
    fn accounts_are_sorted_by_id_and_a_later_listing_wins() {
        let account = |id: &str, status: Status| Account {
            account_id: id.into(),
            status,
            status_reason: None,
            last_updated: None,
        };
        let listed = vec![
            account("3", Status::Active),
            account("1", Status::Pending),
            account("2", Status::Active),
            account("1", Status::Failed),
        ];
        let accounts = Accounts::from_listed(listed);
        let ids: Vec<&str> = accounts.values().map(|a| a.account_id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
        assert_eq!(accounts.get("1").map(|a| &a.status), Some(&Status::Failed));
        assert!(accounts.contains_key("3") && !accounts.contains_key("4"));
        let mut more = accounts.clone();
        more.insert(account("0", Status::Inactive));
        more.insert(account("2", Status::Pending));
        let ids: Vec<&str> = more.values().map(|a| a.account_id.as_str()).collect();
        assert_eq!(ids, ["0", "1", "2", "3"]);
        assert_eq!(more.get("2").map(|a| &a.status), Some(&Status::Pending));
    }

    #[test]
    fn counts_always_have_the_four_statuses() {
        let mut snap = Snapshot::default();
        snap.accounts.insert(Account {
            account_id: "1".into(),
            status: Status::Other("Weird".into()),
            status_reason: None,
            last_updated: None,
        });
        let counts = snap.counts();
        assert_eq!(counts.len(), 5);
        assert_eq!(counts[&Status::Pending], 0);
        assert_eq!(counts[&Status::Other("Weird".into())], 1);
    }
}
