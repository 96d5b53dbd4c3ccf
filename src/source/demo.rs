//! `--demo`: a simulated organisation, served page by page like the real API,
//! so the whole exporter (scheduler, pagination, registry, HTTP) runs without
//! AWS credentials. Statuses move a little on every poll.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::model::{
    Account, AutomationAccount, AutomationEnrollment, OrgAccount, OrgStatus, Page, PageRequest,
    Root, RuleMode, Status, unix_seconds,
};
use crate::source::error::ApiError;
use crate::source::{
    AutomationSource, COMPUTE_OPTIMIZER_PRINCIPAL, NameSource, ORGANIZATIONS_PAGE_SIZE, PageSource,
};

pub const DEMO_ACCOUNTS: usize = 300;
const DAY: f64 = 86_400.0;

pub struct DemoSource {
    org: Mutex<DemoOrg>,
    /// The simulated organisation's ID, the same for the same seed.
    organization: String,
}

struct DemoOrg {
    rng: u64,
    generation: u64,
    accounts: Vec<DemoAccount>,
    /// Compute Optimizer Automation's enrollment of each account, rolled
    /// out more slowly than Compute Optimizer's: its own listing moves it.
    automation: Vec<AutomationAccount>,
    automation_generation: u64,
    /// Automation's own random state: the two listings run concurrently,
    /// and one sharing the other's would make a replica's statuses depend
    /// on which ran first (two replicas of the same seed must agree).
    automation_rng: u64,
}

struct DemoAccount {
    account: Account,
    /// Stuck accounts never move: they are what the alerts are for.
    stuck: bool,
}

impl DemoSource {
    pub fn new(accounts: usize, seed: u64) -> DemoSource {
        let now = unix_seconds(SystemTime::now());
        let mut org = DemoOrg {
            rng: seed | 1,
            generation: 0,
            accounts: Vec::with_capacity(accounts),
            automation: Vec::with_capacity(accounts),
            automation_generation: 0,
            automation_rng: seed.rotate_left(32) | 1,
        };
        let mut ids = std::collections::BTreeSet::new();
        while ids.len() < accounts {
            ids.insert(100_000_000_000 + org.next() % 900_000_000_000);
        }
        for (i, id) in ids.into_iter().enumerate() {
            let roll = org.next() % 100;
            let (status, reason, age_days, stuck) = match roll {
                0..=69 => (Status::Active, None, 1.0 + (org.next() % 90) as f64, false),
                70..=79 => (
                    Status::Inactive,
                    None,
                    1.0 + (org.next() % 30) as f64,
                    false,
                ),
                80..=87 => (
                    Status::Pending,
                    Some("Enrollment is in progress"),
                    (org.next() % 12) as f64 / 24.0,
                    false,
                ),
                88..=91 => (
                    Status::Pending,
                    Some("Waiting for the service-linked role to be created"),
                    2.0 + (org.next() % 10) as f64,
                    true,
                ),
                _ => (
                    Status::Failed,
                    Some(
                        "Compute Optimizer could not create the service-linked role AWSServiceRoleForComputeOptimizer",
                    ),
                    1.0 + (org.next() % 20) as f64,
                    true,
                ),
            };
            // One account shows how a status outside the documented four is exported.
            let status = if i == 7 {
                Status::Other("Suspended".into())
            } else {
                status
            };
            org.accounts.push(DemoAccount {
                account: Account {
                    account_id: format!("{id:012}"),
                    status,
                    status_reason: reason.map(str::to_owned),
                    last_updated: Some((now - age_days * DAY).floor()),
                },
                stuck: stuck || i == 7,
            });
        }
        for i in 0..org.accounts.len() {
            let roll = org.next() % 100;
            let (status, reason) = match roll {
                0..=39 => (Status::Active, None),
                40..=74 => (Status::Inactive, None),
                75..=89 => (Status::Pending, Some("Enrollment is in progress")),
                _ => (
                    Status::Failed,
                    Some("The account is not enrolled in Compute Optimizer"),
                ),
            };
            // An account on its way out stays Failed: what the alerts leave out.
            let (status, reason) = if i % 100 == 99 {
                (Status::Failed, Some("The account is suspended"))
            } else {
                (status, reason)
            };
            let mode = if roll.is_multiple_of(3) {
                RuleMode::NoneAllowed
            } else {
                RuleMode::AnyAllowed
            };
            let age_days = 1.0 + (org.next() % 30) as f64;
            let account_id = org.accounts[i].account.account_id.clone();
            org.automation.push(AutomationAccount {
                account_id,
                status,
                rule_mode: Some(mode),
                status_reason: reason.map(str::to_owned),
                last_updated: Some((now - age_days * DAY).floor()),
            });
        }
        DemoSource {
            org: Mutex::new(org),
            organization: format!("o-demo{:08x}", seed & 0xffff_ffff),
        }
    }

    /// Current number of accounts per status (for tests).
    pub fn count(&self, status: &Status) -> usize {
        let org = crate::sync::lock(&self.org);
        org.accounts
            .iter()
            .filter(|a| &a.account.status == status)
            .count()
    }
}

/// The offset a demo `nextToken` ("<listing>:<offset>") carries.
fn offset_of(token: &str) -> Result<usize, ApiError> {
    token
        .rsplit(':')
        .next()
        .and_then(|o| o.parse::<usize>().ok())
        .ok_or_else(|| ApiError::new("InvalidParameterValueException", "bad nextToken", false))
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

impl DemoOrg {
    /// xorshift64: deterministic for a seed, good enough for a simulation.
    fn next(&mut self) -> u64 {
        xorshift(&mut self.rng)
    }

    /// The same, from Automation's own state.
    fn next_automation(&mut self) -> u64 {
        xorshift(&mut self.automation_rng)
    }

    /// One tick of Automation's rollout: Pending accounts finish or fail,
    /// Inactive ones are asked to join. Failed accounts whose Compute
    /// Optimizer enrollment is not Active stay Failed (what the alert is for).
    fn step_automation(&mut self) {
        self.automation_generation += 1;
        let now = unix_seconds(SystemTime::now()).floor();
        for i in 0..self.automation.len() {
            let roll = self.next_automation() % 1000;
            if i % 100 == 99 {
                continue;
            }
            let enrolled = self.accounts[i].account.status == Status::Active;
            let next = match (&self.automation[i].status, roll) {
                (Status::Pending, 0..=149) if enrolled => Some((Status::Active, None)),
                (Status::Pending, 150..=159) => Some((
                    Status::Failed,
                    Some("The account is not enrolled in Compute Optimizer"),
                )),
                (Status::Inactive, 0..=29) => {
                    Some((Status::Pending, Some("Enrollment is in progress")))
                }
                (Status::Failed, 0..=19) if enrolled => {
                    Some((Status::Pending, Some("Enrollment is in progress")))
                }
                _ => None,
            };
            if let Some((status, reason)) = next {
                let a = &mut self.automation[i];
                a.status = status;
                a.status_reason = reason.map(str::to_owned);
                a.last_updated = Some(now);
            }
        }
    }

    /// One tick of the simulation: a few accounts move along the enrollment path.
    fn step(&mut self) {
        self.generation += 1;
        let now = unix_seconds(SystemTime::now()).floor();
        for i in 0..self.accounts.len() {
            if self.accounts[i].stuck {
                continue;
            }
            let roll = self.next() % 1000;
            let next = match (&self.accounts[i].account.status, roll) {
                (Status::Pending, 0..=199) => Some((Status::Active, None)),
                (Status::Pending, 200..=209) => Some((
                    Status::Failed,
                    Some("Compute Optimizer could not access the account"),
                )),
                (Status::Inactive, 0..=49) => {
                    Some((Status::Pending, Some("Enrollment is in progress")))
                }
                (Status::Active, 0..=4) => {
                    Some((Status::Inactive, Some("Opted out by the account owner")))
                }
                (Status::Failed, 0..=29) => {
                    Some((Status::Pending, Some("Enrollment is in progress")))
                }
                _ => None,
            };
            if let Some((status, reason)) = next {
                let a = &mut self.accounts[i].account;
                a.status = status;
                a.status_reason = reason.map(str::to_owned);
                a.last_updated = Some(now);
            }
        }
    }
}

impl PageSource for DemoSource {
    async fn fetch_org_status(&self) -> Result<Option<OrgStatus>, ApiError> {
        let org = crate::sync::lock(&self.org);
        let opted_in = org
            .accounts
            .iter()
            .filter(|a| a.account.status == Status::Active)
            .count();
        Ok(Some(OrgStatus {
            status: Some(Status::Active),
            status_reason: None,
            member_accounts_enrolled: true,
            member_accounts_opted_in: Some(opted_in as i64),
            last_updated: org.accounts.first().and_then(|a| a.account.last_updated),
        }))
    }

    async fn fetch_page(&self, req: &PageRequest) -> Result<Page<Account>, ApiError> {
        // A little latency, as a real page has.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut org = crate::sync::lock(&self.org);
        let offset = match &req.next_token {
            // A new listing starts: the organisation moves on one tick.
            None => {
                org.step();
                0
            }
            Some(t) => offset_of(t)?,
        };
        let matching: Vec<&DemoAccount> = org
            .accounts
            .iter()
            .filter(|a| req.statuses.is_empty() || req.statuses.contains(&a.account.status))
            .collect();
        let end = (offset + usize::from(req.max_results)).min(matching.len());
        let accounts = matching
            .get(offset..end)
            .unwrap_or_default()
            .iter()
            .map(|a| a.account.clone())
            .collect();
        let next_token = (end < matching.len()).then(|| format!("demo-{}:{end}", org.generation));
        Ok(Page {
            items: accounts,
            next_token,
            skipped: 0,
        })
    }
}

impl AutomationSource for DemoSource {
    async fn list_automation_accounts(
        &self,
        max_results: u16,
        token: Option<String>,
    ) -> Result<Page<AutomationAccount>, ApiError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut org = crate::sync::lock(&self.org);
        let offset = match &token {
            None => {
                org.step_automation();
                0
            }
            Some(t) => offset_of(t)?,
        };
        let end = (offset + usize::from(max_results.max(1))).min(org.automation.len());
        let items = org.automation.get(offset..end).unwrap_or_default().to_vec();
        let next_token = (end < org.automation.len())
            .then(|| format!("demo-automation-{}:{end}", org.automation_generation));
        Ok(Page {
            items,
            next_token,
            skipped: 0,
        })
    }

    async fn automation_enrollment(&self) -> Result<AutomationEnrollment, ApiError> {
        let now = unix_seconds(SystemTime::now()).floor();
        Ok(AutomationEnrollment {
            status: Status::Active,
            status_reason: None,
            rule_mode: Some(RuleMode::AnyAllowed),
            last_updated: Some(now - 40.0 * DAY),
        })
    }
}

const TEAMS: [&str; 10] = [
    "payments",
    "search",
    "data",
    "ml",
    "platform",
    "web",
    "mobile",
    "billing",
    "identity",
    "analytics",
];
const STAGES: [&str; 4] = ["prod", "staging", "dev", "sandbox"];

const DEMO_ROOT: &str = "r-demo";

/// One page of `items` at the offset the token names, 20 at most.
fn page_of<T: Clone>(items: Vec<T>, token: Option<String>) -> Page<T> {
    let offset: usize = token.and_then(|t| t.parse().ok()).unwrap_or(0);
    let size = usize::from(ORGANIZATIONS_PAGE_SIZE);
    let next = offset + size;
    Page {
        next_token: (next < items.len()).then(|| next.to_string()),
        items: items.into_iter().skip(offset).take(size).collect(),
        skipped: 0,
    }
}

/// The simulated organisation: an OU per stage under the root, each
/// account in its stage's OU (every 25th directly under the root), tagged
/// with its team (every 10th untagged) and a cost centre.
impl DemoSource {
    fn stage(i: usize) -> &'static str {
        STAGES[i / TEAMS.len() % STAGES.len()]
    }

    fn parent(i: usize) -> String {
        if i.is_multiple_of(25) {
            DEMO_ROOT.to_owned()
        } else {
            format!("ou-demo-{}", Self::stage(i))
        }
    }

    fn ids(&self) -> Vec<String> {
        let org = crate::sync::lock(&self.org);
        org.accounts
            .iter()
            .map(|a| a.account.account_id.clone())
            .collect()
    }
}

impl NameSource for DemoSource {
    async fn list_roots(&self, token: Option<String>) -> Result<Page<Root>, ApiError> {
        let root = Root {
            id: DEMO_ROOT.into(),
            name: "Root".into(),
            organization: Some(self.organization.clone()),
        };
        Ok(page_of(vec![root], token))
    }

    async fn list_ous(
        &self,
        parent: &str,
        token: Option<String>,
    ) -> Result<Page<(String, String)>, ApiError> {
        let ous = if parent == DEMO_ROOT {
            STAGES
                .iter()
                .map(|s| {
                    let mut name = s.to_string();
                    name[..1].make_ascii_uppercase();
                    (format!("ou-demo-{s}"), name)
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(page_of(ous, token))
    }

    async fn list_accounts_for_parent(
        &self,
        parent: &str,
        token: Option<String>,
    ) -> Result<Page<OrgAccount>, ApiError> {
        let accounts = self
            .ids()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| Self::parent(*i) == parent)
            .map(|(i, id)| {
                let name = format!(
                    "{}-{}-{}",
                    TEAMS[i % TEAMS.len()],
                    Self::stage(i),
                    i / 40 + 1
                );
                // One account in a hundred is on its way out.
                let state = if i % 100 == 99 { "SUSPENDED" } else { "ACTIVE" };
                OrgAccount {
                    id,
                    name,
                    state: state.into(),
                }
            })
            .collect();
        Ok(page_of(accounts, token))
    }

    async fn list_tags(
        &self,
        account: &str,
        token: Option<String>,
    ) -> Result<Page<(String, String)>, ApiError> {
        let i = self.ids().iter().position(|id| id == account);
        let tags = match i {
            Some(i) if i % 10 != 0 => vec![
                ("team".into(), TEAMS[i % TEAMS.len()].into()),
                ("cost-center".into(), format!("cc-{}", 100 + i % 7)),
            ],
            Some(i) => vec![("cost-center".into(), format!("cc-{}", 100 + i % 7))],
            None => Vec::new(),
        };
        Ok(page_of(tags, token))
    }

    /// Compute Optimizer has had trusted access for 200 days, among the
    /// organisation's other services.
    async fn list_service_access(
        &self,
        token: Option<String>,
    ) -> Result<Page<(String, Option<f64>)>, ApiError> {
        let now = unix_seconds(SystemTime::now()).floor();
        let services = vec![
            (
                "cloudtrail.amazonaws.com".to_owned(),
                Some(now - 400.0 * DAY),
            ),
            (
                COMPUTE_OPTIMIZER_PRINCIPAL.to_owned(),
                Some(now - 200.0 * DAY),
            ),
            ("sso.amazonaws.com".to_owned(), Some(now - 380.0 * DAY)),
        ];
        Ok(page_of(services, token))
    }

    /// The first account is the delegated administrator.
    async fn list_delegated_administrators(
        &self,
        token: Option<String>,
    ) -> Result<Page<(String, String)>, ApiError> {
        let admins = self
            .ids()
            .into_iter()
            .take(1)
            .map(|id| (id, "platform-finops".to_owned()))
            .collect();
        Ok(page_of(admins, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(token: Option<String>) -> PageRequest {
        PageRequest {
            max_results: 100,
            next_token: token,
            statuses: vec![],
        }
    }

    #[tokio::test]
    async fn pages_cover_every_account_once() {
        let demo = DemoSource::new(DEMO_ACCOUNTS, 42);
        let mut token = None;
        let mut ids = std::collections::HashSet::new();
        let mut pages = 0;
        loop {
            let page = demo.fetch_page(&req(token)).await.unwrap();
            pages += 1;
            for a in page.items {
                assert!(ids.insert(a.account_id));
            }
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(ids.len(), DEMO_ACCOUNTS);
        assert_eq!(pages, 3);
    }

    #[tokio::test]
    async fn statuses_move_between_polls_but_stuck_ones_stay() {
        let demo = DemoSource::new(DEMO_ACCOUNTS, 42);
        let snapshot = |d: &DemoSource| {
            let org = d.org.lock().unwrap();
            org.accounts
                .iter()
                .map(|a| (a.account.status.clone(), a.stuck))
                .collect::<Vec<_>>()
        };
        let before = snapshot(&demo);
        for _ in 0..5 {
            demo.fetch_page(&req(None)).await.unwrap();
        }
        let after = snapshot(&demo);
        assert_ne!(before, after, "nothing moved");
        for (b, a) in before.iter().zip(&after) {
            if b.1 {
                assert_eq!(b.0, a.0, "a stuck account moved");
            }
        }
        assert!(demo.count(&Status::Pending) > 0);
        assert!(demo.count(&Status::Failed) > 0);
    }
}
