//! Local stand-ins for the three AWS services the exporter calls, each on its
//! own address and each refusing what is not its own, as AWS does:
//!
//! * Compute Optimizer: Smithy RPCv2 CBOR (`POST
//!   /service/ComputeOptimizerService/operation/<Op>`, `smithy-protocol:
//!   rpc-v2-cbor`, CBOR bodies, timestamps as CBOR tag 1, error codes in
//!   `__type`), signed for `compute-optimizer`. A status filter is applied
//!   after the page is cut, so filtered listings hand out empty pages that
//!   carry a token, as AWS list APIs do.
//! * STS: awsQuery (form-encoded `Action=AssumeRole…`, XML answers).
//! * Organizations: awsJson1_1 (`X-Amz-Target: AWSOrganizationsV20161128.<Op>`).
//! * Compute Optimizer Automation: Smithy RPCv2 CBOR (`POST
//!   /service/ComputeOptimizerAutomationService/operation/<Op>`), signed for
//!   `aco-automation`: `ListAccounts` (1 to 1,000 a page, the management
//!   account only) and `GetEnrollmentConfiguration`.
//!
//! A request that reaches the wrong service is answered with that service's
//! own "unknown operation" error and recorded in [`Standin::misrouted`].
//! Every request is authorised as IAM would, against the policies shipped
//! in `deploy/iam/` ([`iam`]): the exporter's role as installed
//! ([`Standin::set_install`]), the sessions this STS hands out, trust
//! policies and external IDs, and organisation calls only from the
//! management account. Tests script faults per page; every request is
//! recorded.
#![allow(dead_code)]

#[path = "iam.rs"]
pub mod iam;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ciborium::Value;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub const OPERATION_PATH: &str =
    "/service/ComputeOptimizerService/operation/GetEnrollmentStatusesForOrganization";

#[derive(Debug, Clone, PartialEq)]
pub struct OrgAccount {
    pub id: String,
    pub status: String,
    pub reason: Option<String>,
    pub last_updated: f64,
}

/// One account's enrollment in Compute Optimizer Automation.
#[derive(Debug, Clone, PartialEq)]
pub struct AutomationAccount {
    pub id: String,
    pub status: String,
    pub mode: String,
    pub reason: Option<String>,
    pub last_updated: f64,
}

/// Automation's view of `accounts`: the same IDs and statuses, rule mode
/// `AnyAllowed` but for every third account.
pub fn automation_of(accounts: &[OrgAccount]) -> Vec<AutomationAccount> {
    accounts
        .iter()
        .enumerate()
        .map(|(i, a)| AutomationAccount {
            id: a.id.clone(),
            status: a.status.clone(),
            mode: if i % 3 == 2 {
                "NoneAllowed"
            } else {
                "AnyAllowed"
            }
            .into(),
            reason: a.reason.clone(),
            last_updated: a.last_updated + 0.5,
        })
        .collect()
}

/// What a scripted page does instead of answering normally. Faults for a
/// page are consumed one per request, so a queue such as `[Pass, Error]`
/// scripts "the first poll succeeds, the second fails" with no race against
/// the poll interval.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer normally (a placeholder in a page's queue).
    Pass,
    /// Replace the organisation, then answer normally.
    Replace(Vec<OrgAccount>),
    /// An AWS error: HTTP status and error code (`__type`).
    Error(u16, &'static str),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Close the connection without answering.
    Reset,
    /// A 200 whose body is not CBOR.
    Garbage,
    /// A 200 whose CBOR body stops half-way.
    Truncated,
    /// Answer normally but hand out this page's own token again.
    RepeatToken,
}

/// Which AWS service a listener plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    ComputeOptimizer,
    Sts,
    Organizations,
    Automation,
}

impl Service {
    /// The SigV4 signing name, which is also the IAM action prefix.
    pub fn signing_name(self) -> &'static str {
        match self {
            Service::ComputeOptimizer => "compute-optimizer",
            Service::Sts => "sts",
            Service::Organizations => "organizations",
            Service::Automation => "aco-automation",
        }
    }
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub service: Service,
    pub path: String,
    pub content_type: Option<String>,
    pub smithy_protocol: Option<String>,
    pub authorization: Option<String>,
    pub max_results: Option<i128>,
    pub next_token: Option<String>,
    pub status_filter: Vec<String>,
}

#[derive(Default)]
struct Inner {
    accounts: Vec<OrgAccount>,
    /// Faults by page index (0-based), consumed one per request.
    faults: HashMap<usize, VecDeque<Fault>>,
    seen: Vec<Seen>,
    requests: usize,
    /// AssumeRole calls answered; session credentials last this long.
    assume_role_calls: usize,
    /// The region Organizations signatures must be scoped to (us-east-1).
    organizations_home: Option<String>,
    /// The next this many AssumeRole calls answer this STS error.
    assume_role_throttle: usize,
    assume_role_error: Option<(u16, String)>,
    assume_role_throttled: usize,
    session_seconds: u64,
    /// GetEnrollmentStatus: calls answered, and whether to deny them.
    org_status_calls: usize,
    org_status_denied: bool,
    /// Organizations: calls answered, names by account ID, whether to deny
    /// every call, the tree (OU ID to parent and name, account to parent;
    /// unlisted accounts sit under the root), tags by account, and a rate
    /// above which it answers TooManyRequestsException, as AWS does.
    organizations_calls: HashMap<String, usize>,
    names: HashMap<String, String>,
    states: HashMap<String, String>,
    organizations_denied: bool,
    ous: BTreeMap<String, (String, String)>,
    parents: HashMap<String, String>,
    tags: HashMap<String, Vec<(String, String)>>,
    organizations_limit: Option<(f64, std::time::Instant, f64)>,
    organizations_throttled: usize,
    /// Requests still to throttle whatever their pace.
    organizations_throttle: usize,
    /// Accounts that leave the organisation when their tags are asked for
    /// (after the walk listed them).
    leaving: BTreeSet<String>,
    /// ListTagsForResource answers this many more, then AccessDeniedException.
    tags_left: Option<usize>,
    /// Off for long runs (soak, load), where keeping every request would grow.
    forget: bool,
    /// Every page takes this long to answer.
    latency: Duration,
    /// GetEnrollmentStatus answers without a `status` field.
    org_status_without_status: bool,
    org_status_delegated: bool,
    /// `service:Operation` of every request a service answered as its own.
    operations: BTreeSet<String>,
    /// Requests that reached a service they were not meant for.
    misrouted: Vec<String>,
    /// `service region` of every signed request answered.
    signed_regions: BTreeSet<String>,
    /// IAM: the install, the policies in force, the sessions STS issued
    /// (by access key ID), and every refusal ("arn action").
    install: iam::Install,
    policies: iam::Policies,
    sessions: HashMap<String, iam::Principal>,
    denied: Vec<String>,
    /// Compute Optimizer Automation: every account's enrollment, whether
    /// the organisation is enrolled at all, faults by page, and the
    /// requests answered by operation.
    automation: Vec<AutomationAccount>,
    automation_off: bool,
    automation_faults: HashMap<usize, VecDeque<Fault>>,
    automation_calls: HashMap<String, usize>,
    /// Organizations: services with trusted access `(principal, since)`,
    /// and delegated administrators `(id, name, service principal)`.
    service_access: Vec<(String, f64)>,
    delegated: Vec<(String, String, String)>,
}

impl Inner {
    fn record(&mut self, seen: Seen) {
        self.requests += 1;
        if !self.forget {
            self.seen.push(seen);
        }
    }
}

/// The three services, sharing one organisation.
#[derive(Clone)]
pub struct Standin {
    /// Compute Optimizer.
    pub addr: SocketAddr,
    pub sts_addr: SocketAddr,
    pub organizations_addr: SocketAddr,
    pub automation_addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Standin {
    /// Starts each service on its own 127.0.0.1 port with the given organisation.
    pub async fn start(accounts: Vec<OrgAccount>) -> Standin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Standin::serve(listener, accounts).await
    }

    /// Compute Optimizer on `listener`; STS and Organizations on ports of their own.
    pub async fn serve(listener: TcpListener, accounts: Vec<OrgAccount>) -> Standin {
        let inner = Arc::new(Mutex::new(Inner {
            automation: automation_of(&accounts),
            accounts,
            service_access: vec![
                ("compute-optimizer.amazonaws.com".into(), 1_650_000_000.0),
                ("sso.amazonaws.com".into(), 1_600_000_000.0),
            ],
            ..Default::default()
        }));
        let sts = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let organizations = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let automation = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Standin {
            addr: listen(listener, Service::ComputeOptimizer, inner.clone()),
            sts_addr: listen(sts, Service::Sts, inner.clone()),
            organizations_addr: listen(organizations, Service::Organizations, inner.clone()),
            automation_addr: listen(automation, Service::Automation, inner.clone()),
            inner,
        }
    }

    /// Compute Optimizer's endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn sts_url(&self) -> String {
        format!("http://{}", self.sts_addr)
    }

    pub fn organizations_url(&self) -> String {
        format!("http://{}", self.organizations_addr)
    }

    pub fn automation_url(&self) -> String {
        format!("http://{}", self.automation_addr)
    }

    /// `[aws]` keys that send each service to its own stand-in.
    pub fn endpoint_keys(&self) -> String {
        format!(
            "endpoint_url = \"{}\"\nsts_endpoint_url = \"{}\"\norganizations_endpoint_url = \"{}\"\nautomation_endpoint_url = \"{}\"\n",
            self.url(),
            self.sts_url(),
            self.organizations_url(),
            self.automation_url()
        )
    }

    /// Automation's accounts from now on.
    pub fn set_automation(&self, accounts: Vec<AutomationAccount>) {
        self.inner.lock().unwrap().automation = accounts;
    }

    /// The organisation is not enrolled in Automation: `ListAccounts` is
    /// refused with OptInRequiredException, and the calling account's own
    /// status is Inactive.
    pub fn automation_off(&self, off: bool) {
        self.inner.lock().unwrap().automation_off = off;
    }

    /// Scripts `times` faults on Automation's `ListAccounts` page `page`.
    pub fn automation_fault(&self, page: usize, fault: Fault, times: usize) {
        let mut inner = self.inner.lock().unwrap();
        let q = inner.automation_faults.entry(page).or_default();
        for _ in 0..times {
            q.push_back(fault.clone());
        }
    }

    /// Automation requests answered (IAM allowed them), by operation.
    pub fn automation_calls(&self, operation: &str) -> usize {
        let inner = self.inner.lock().unwrap();
        inner.automation_calls.get(operation).copied().unwrap_or(0)
    }

    /// Services with trusted access in Organizations, `(principal, since)`.
    pub fn set_service_access(&self, services: Vec<(&str, f64)>) {
        self.inner.lock().unwrap().service_access = services
            .into_iter()
            .map(|(p, t)| (p.to_owned(), t))
            .collect();
    }

    /// Delegated administrators, `(id, name, service principal)`.
    pub fn set_delegated_administrators(&self, admins: Vec<(&str, &str, &str)>) {
        self.inner.lock().unwrap().delegated = admins
            .into_iter()
            .map(|(i, n, p)| (i.to_owned(), n.to_owned(), p.to_owned()))
            .collect();
    }

    /// Where the exporter's role sits (see [`iam`]); `Direct` until set.
    pub fn set_install(&self, install: iam::Install) {
        self.inner.lock().unwrap().install = install;
    }

    /// The policies enforced from now on (the shipped ones until set).
    pub fn set_policies(&self, policies: iam::Policies) {
        self.inner.lock().unwrap().policies = policies;
    }

    /// Every request IAM refused, as "principal action" (or "key action"
    /// for a key nobody issued).
    pub fn denied(&self) -> Vec<String> {
        self.inner.lock().unwrap().denied.clone()
    }

    /// Requests that reached the wrong service (each as "service got what").
    pub fn misrouted(&self) -> Vec<String> {
        self.inner.lock().unwrap().misrouted.clone()
    }

    /// `service:Operation` of every request answered, as IAM names actions.
    pub fn operations(&self) -> BTreeSet<String> {
        self.inner.lock().unwrap().operations.clone()
    }

    /// `service region` of every signed request answered, e.g. "sts eu-west-1".
    pub fn signed_regions(&self) -> BTreeSet<String> {
        self.inner.lock().unwrap().signed_regions.clone()
    }

    /// Every Compute Optimizer page takes `d` to answer.
    pub fn set_latency(&self, d: Duration) {
        self.inner.lock().unwrap().latency = d;
    }

    /// GetEnrollmentStatus answers without a `status` field while set.
    pub fn org_status_without_status(&self, on: bool) {
        self.inner.lock().unwrap().org_status_without_status = on;
    }

    /// GetEnrollmentStatus as a delegated administrator gets it: no
    /// `numberOfMemberAccountsOptedIn`, and `memberAccountsEnrolled` false.
    pub fn org_status_as_delegated_administrator(&self, on: bool) {
        self.inner.lock().unwrap().org_status_delegated = on;
    }

    pub fn set_accounts(&self, accounts: Vec<OrgAccount>) {
        self.inner.lock().unwrap().accounts = accounts;
    }

    /// The next `times` requests for page `page` (0-based) get `fault`.
    pub fn fault(&self, page: usize, fault: Fault, times: usize) {
        let mut inner = self.inner.lock().unwrap();
        let q = inner.faults.entry(page).or_default();
        for _ in 0..times {
            q.push_back(fault.clone());
        }
    }

    /// Session credentials handed out by the STS stand-in expire after this.
    pub fn set_session_seconds(&self, secs: u64) {
        self.inner.lock().unwrap().session_seconds = secs;
    }

    pub fn org_status_calls(&self) -> usize {
        self.inner.lock().unwrap().org_status_calls
    }

    /// GetEnrollmentStatus answers AccessDeniedException while set.
    pub fn deny_org_status(&self, deny: bool) {
        self.inner.lock().unwrap().org_status_denied = deny;
    }

    /// Every Organizations call answers AccessDeniedException while set.
    pub fn deny_organizations(&self, deny: bool) {
        self.inner.lock().unwrap().organizations_denied = deny;
    }

    /// Organizations calls answered, by operation.
    pub fn organizations_calls(&self, operation: &str) -> usize {
        let inner = self.inner.lock().unwrap();
        inner
            .organizations_calls
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Moves an account under the OU at `path` below the root
    /// (`"Prod/Payments"`; `""` for the root itself), making the OUs.
    pub fn set_ou(&self, account: &str, path: &str) {
        let mut inner = self.inner.lock().unwrap();
        let mut parent = ROOT_ID.to_owned();
        for name in path.split('/').filter(|n| !n.is_empty()) {
            let existing = inner
                .ous
                .iter()
                .find(|(_, (p, n))| *p == parent && n == name)
                .map(|(id, _)| id.clone());
            parent = existing.unwrap_or_else(|| {
                let id = format!("ou-1a2b-{:08x}", inner.ous.len() + 1);
                inner
                    .ous
                    .insert(id.clone(), (parent.clone(), name.to_owned()));
                id
            });
        }
        inner.parents.insert(account.to_owned(), parent);
    }

    /// The ID of the OU at `path` (after `set_ou` made it).
    pub fn ou_id(&self, path: &str) -> String {
        let inner = self.inner.lock().unwrap();
        let mut parent = ROOT_ID.to_owned();
        for name in path.split('/').filter(|n| !n.is_empty()) {
            parent = inner
                .ous
                .iter()
                .find(|(_, (p, n))| *p == parent && n == name)
                .map(|(id, _)| id.clone())
                .unwrap_or_else(|| panic!("no OU {path}"));
        }
        parent
    }

    pub fn set_tag(&self, account: &str, key: &str, value: &str) {
        let mut inner = self.inner.lock().unwrap();
        let tags = inner.tags.entry(account.to_owned()).or_default();
        tags.retain(|(k, _)| k != key);
        tags.push((key.to_owned(), value.to_owned()));
    }

    /// Organizations answers TooManyRequestsException to requests beyond
    /// `per_second` (a token bucket holding one second's worth).
    pub fn limit_organizations(&self, per_second: f64) {
        self.inner.lock().unwrap().organizations_limit =
            Some((per_second, std::time::Instant::now(), per_second));
    }

    /// ListTagsForResource answers `n` more calls, then AccessDeniedException
    /// (a refresh failing part-way); `None` lifts it.
    pub fn fail_tags_after(&self, n: Option<usize>) {
        self.inner.lock().unwrap().tags_left = n;
    }

    /// Each of `ids` leaves the organisation the moment its tags are asked
    /// for: listed by the walk, gone by the tag pass.
    pub fn leave_on_tags(&self, ids: &[&str]) {
        let mut inner = self.inner.lock().unwrap();
        inner.leaving.extend(ids.iter().map(|id| id.to_string()));
    }

    /// Organizations answers TooManyRequestsException to the next `n`
    /// requests, whatever their pace.
    pub fn throttle_organizations(&self, n: usize) {
        self.inner.lock().unwrap().organizations_throttle = n;
    }

    pub fn organizations_throttled(&self) -> usize {
        self.inner.lock().unwrap().organizations_throttled
    }

    /// Organizations' `State` of an account (others are ACTIVE).
    pub fn set_state(&self, id: &str, state: &str) {
        self.inner
            .lock()
            .unwrap()
            .states
            .insert(id.to_owned(), state.to_owned());
    }

    /// Names Organizations gives (others are named "account-<id>"); an
    /// empty name is sent as no `Name` at all, as the model allows.
    pub fn set_name(&self, id: &str, name: &str) {
        self.inner
            .lock()
            .unwrap()
            .names
            .insert(id.to_owned(), name.to_owned());
    }

    /// Serves Organizations as the partition whose home region is `region`
    /// does (cn-northwest-1 in China, us-gov-west-1 in GovCloud).
    pub fn organizations_home(&self, region: &str) {
        self.inner.lock().unwrap().organizations_home = Some(region.to_owned());
    }

    /// The next `n` AssumeRole calls answer `Throttling`.
    pub fn throttle_assume_role(&self, n: usize) {
        self.inner.lock().unwrap().assume_role_throttle = n;
    }

    /// The next `n` AssumeRole calls answer STS error `code` with `status`.
    pub fn fail_assume_role(&self, n: usize, status: u16, code: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.assume_role_throttle = n;
        inner.assume_role_error = Some((status, code.to_owned()));
    }

    pub fn assume_role_throttled(&self) -> usize {
        self.inner.lock().unwrap().assume_role_throttled
    }

    pub fn assume_role_calls(&self) -> usize {
        self.inner.lock().unwrap().assume_role_calls
    }

    pub fn clear_faults(&self) {
        self.inner.lock().unwrap().faults.clear();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    pub fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests
    }

    /// Stops keeping each request (counting goes on).
    pub fn forget_requests(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.forget = true;
        inner.seen = Vec::new();
    }
}

/// `n` accounts with IDs 100000000000.. and statuses cycling through the four.
pub fn org(n: usize) -> Vec<OrgAccount> {
    const STATUSES: [&str; 4] = ["Active", "Inactive", "Pending", "Failed"];
    (0..n)
        .map(|i| OrgAccount {
            id: format!("{}", 100_000_000_000u64 + i as u64),
            status: STATUSES[i % 4].to_owned(),
            reason: (i % 4 >= 2).then(|| format!("reason {i}")),
            last_updated: 1_700_000_000.0 + i as f64,
        })
        .collect()
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn reply(status: u16, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/cbor")
        .header("smithy-protocol", "rpc-v2-cbor")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    cbor_error("computeoptimizer", status, code, message)
}

/// An RPCv2 CBOR error: the code in `__type`, after the service's namespace.
fn cbor_error(namespace: &str, status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = Value::Map(vec![
        (
            text("__type"),
            text(&format!("com.amazonaws.{namespace}#{code}")),
        ),
        (text("message"), text(message)),
    ]);
    reply(status, cbor(&body))
}

fn field<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn listen(listener: TcpListener, service: Service, inner: Arc<Mutex<Inner>>) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let inner = inner.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let inner = inner.clone();
                    async move { handle(service, req, inner).await }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The SigV4 credential scope's region and service, if the request is signed.
fn scope(authorization: Option<&str>) -> Option<(String, String)> {
    let credential = authorization?.split("Credential=").nth(1)?;
    let mut parts = credential.split(',').next()?.split('/');
    let (_key, _date) = (parts.next()?, parts.next()?);
    Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
}

/// What a request asks for: `Some(operation)` when it is this service's own.
fn operation_of(service: Service, path: &str, target: Option<&str>, body: &[u8]) -> Option<String> {
    match service {
        Service::ComputeOptimizer => {
            let op = path.strip_prefix("/service/ComputeOptimizerService/operation/")?;
            [
                "GetEnrollmentStatusesForOrganization",
                "GetEnrollmentStatus",
            ]
            .contains(&op)
            .then(|| op.to_owned())
        }
        Service::Sts => {
            let form = String::from_utf8_lossy(body);
            let action = form.split('&').find_map(|kv| kv.strip_prefix("Action="))?;
            (path == "/" && ["AssumeRole", "AssumeRoleWithWebIdentity"].contains(&action))
                .then(|| action.to_owned())
        }
        Service::Organizations => {
            let op = target?.strip_prefix("AWSOrganizationsV20161128.")?;
            ORGANIZATIONS_OPERATIONS
                .contains(&op)
                .then(|| op.to_owned())
        }
        Service::Automation => {
            let op = path.strip_prefix("/service/ComputeOptimizerAutomationService/operation/")?;
            ["ListAccounts", "GetEnrollmentConfiguration"]
                .contains(&op)
                .then(|| op.to_owned())
        }
    }
}

const ORGANIZATIONS_OPERATIONS: &[&str] = &[
    "ListAccounts",
    "ListRoots",
    "ListOrganizationalUnitsForParent",
    "ListAccountsForParent",
    "ListTagsForResource",
    "ListAWSServiceAccessForOrganization",
    "ListDelegatedAdministrators",
];

/// The stand-in organisation's one root.
pub const ROOT_ID: &str = "r-1a2b";

/// The service's own answer to a request it does not serve.
fn unknown_operation(service: Service) -> Response<Full<Bytes>> {
    match service {
        Service::ComputeOptimizer => error(404, "UnknownOperationException", "unknown operation"),
        Service::Sts => Response::builder()
            .status(400)
            .header("content-type", "text/xml")
            .body(Full::new(Bytes::from_static(
                b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidAction</Code><Message>Could not find operation</Message></Error></ErrorResponse>",
            )))
            .unwrap(),
        Service::Organizations => json_reply(
            400,
            serde_json::json!({"__type": "UnknownOperationException", "message": "unknown operation"}),
        ),
        Service::Automation => automation_error(404, "UnknownOperationException", "unknown operation"),
    }
}

/// Automation's errors: RPCv2 CBOR, the code in `__type`.
fn automation_error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    cbor_error("computeoptimizerautomation", status, code, message)
}

fn json_reply(status: u16, v: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

async fn handle(
    service: Service,
    req: Request<Incoming>,
    inner: Arc<Mutex<Inner>>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let target = header("x-amz-target");
    let mut seen = Seen {
        service,
        path: req.uri().path().to_owned(),
        content_type: header("content-type"),
        smithy_protocol: header("smithy-protocol"),
        authorization: header("authorization"),
        max_results: None,
        next_token: None,
        status_filter: vec![],
    };
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Some(operation) = operation_of(service, &seen.path, target.as_deref(), &body) else {
        let what = target.unwrap_or_else(|| {
            format!(
                "{} {}",
                seen.path,
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(40)
                    .collect::<String>()
            )
        });
        let mut inner = inner.lock().unwrap();
        inner
            .misrouted
            .push(format!("{} got {what}", service.signing_name()));
        inner.record(seen);
        return Ok(unknown_operation(service));
    };
    // Signed for this service, as AWS checks (the web identity exchange is unsigned).
    let signed_for = scope(seen.authorization.as_deref()).map(|(_, s)| s);
    if operation != "AssumeRoleWithWebIdentity"
        && signed_for.as_deref() != Some(service.signing_name())
    {
        let mut inner = inner.lock().unwrap();
        inner.misrouted.push(format!(
            "{} got {operation} signed for {signed_for:?}",
            service.signing_name()
        ));
        inner.record(seen);
        return Ok(unknown_operation(service));
    }
    // Organizations is global: AWS accepts only signatures scoped to its
    // partition's home region (us-east-1 in `aws`).
    let home = {
        let inner = inner.lock().unwrap();
        inner
            .organizations_home
            .clone()
            .unwrap_or_else(|| "us-east-1".into())
    };
    if service == Service::Organizations
        && scope(seen.authorization.as_deref()).is_some_and(|(region, _)| region != home)
    {
        return Ok(json_reply(
            400,
            serde_json::json!({"__type": "InvalidSignatureException", "message": "Credential should be scoped to a valid region."}),
        ));
    }
    let authorised = authorise(
        &mut inner.lock().unwrap(),
        service,
        &operation,
        seen.authorization.as_deref(),
        &body,
    );
    if let Some(refused) = authorised {
        inner.lock().unwrap().record(seen);
        return Ok(refused);
    }
    {
        let mut inner = inner.lock().unwrap();
        inner
            .operations
            .insert(format!("{}:{operation}", service.signing_name()));
        if let Some((region, signed)) = scope(seen.authorization.as_deref()) {
            inner.signed_regions.insert(format!("{signed} {region}"));
        }
    }
    match operation.as_str() {
        "AssumeRole" | "AssumeRoleWithWebIdentity" => {
            let mut i = inner.lock().unwrap();
            if i.assume_role_throttle > 0 {
                i.assume_role_throttle -= 1;
                i.assume_role_throttled += 1;
                // STS's awsQuery error (throttling is HTTP 400).
                let (status, code) = i
                    .assume_role_error
                    .clone()
                    .unwrap_or((400, "Throttling".into()));
                let xml = format!(
                    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{code} from the stand-in</Message></Error><RequestId>failed</RequestId></ErrorResponse>"
                );
                return Ok(Response::builder()
                    .status(status)
                    .header("content-type", "text/xml")
                    .body(Full::new(Bytes::from(xml)))
                    .unwrap());
            }
            drop(i);
            return Ok(assume_role(&inner, &body));
        }
        op if service == Service::Organizations => {
            return Ok(organizations(&inner, op, &body));
        }
        "GetEnrollmentStatus" => return Ok(org_status(&inner)),
        op if service == Service::Automation => {
            return Ok(automation(&inner, op, &mut seen, &body).await);
        }
        _ => {}
    }
    if seen.smithy_protocol.as_deref() != Some("rpc-v2-cbor") {
        return Ok(error(
            400,
            "SerializationException",
            "smithy-protocol must be rpc-v2-cbor",
        ));
    }
    let input: Value = match ciborium::from_reader(&body[..]) {
        Ok(v) => v,
        Err(_) => return Ok(error(400, "SerializationException", "body is not CBOR")),
    };
    let map = input.as_map().cloned().unwrap_or_default();
    seen.max_results = field(&map, "maxResults")
        .and_then(|v| v.as_integer())
        .map(i128::from);
    seen.next_token = field(&map, "nextToken")
        .and_then(|v| v.as_text())
        .map(str::to_owned);
    if let Some(filters) = field(&map, "filters").and_then(|v| v.as_array()) {
        for f in filters {
            let f = f.as_map().cloned().unwrap_or_default();
            if field(&f, "name").and_then(|v| v.as_text()) == Some("Status") {
                for v in field(&f, "values")
                    .and_then(|v| v.as_array())
                    .cloned()
                    .unwrap_or_default()
                {
                    if let Some(s) = v.as_text() {
                        seen.status_filter.push(s.to_owned());
                    }
                }
            }
        }
    }
    let page_size = seen.max_results.unwrap_or(100).clamp(1, 100) as usize;
    let offset: usize = match &seen.next_token {
        None => 0,
        Some(t) => match t.strip_prefix("tok-").and_then(|o| o.parse().ok()) {
            Some(o) => o,
            None => {
                inner.lock().unwrap().record(seen);
                return Ok(error(
                    400,
                    "InvalidParameterValueException",
                    "invalid nextToken",
                ));
            }
        },
    };
    let page_index = offset / page_size;
    let (fault, items, total, latency) = {
        let mut inner = inner.lock().unwrap();
        let filter = seen.status_filter.clone();
        inner.record(seen.clone());
        let fault = inner
            .faults
            .get_mut(&page_index)
            .and_then(|q| q.pop_front());
        if let Some(Fault::Replace(accounts)) = &fault {
            inner.accounts = accounts.clone();
        }
        // AWS cuts the page first and filters it after: a filtered page can
        // be empty and still carry a token. Only this page's items are
        // cloned, so large organisations stay cheap.
        let items: Vec<OrgAccount> = inner
            .accounts
            .iter()
            .skip(offset)
            .take(page_size)
            .filter(|a| filter.is_empty() || filter.contains(&a.status))
            .cloned()
            .collect();
        (fault, items, inner.accounts.len(), inner.latency)
    };
    let end = (offset + page_size).min(total);
    let mut next = (end < total).then(|| format!("tok-{end}"));
    let items: Vec<&OrgAccount> = items.iter().collect();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(Fault::Error(status, code)) => return Ok(error(status, code, "scripted fault")),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        // An error from the service makes hyper drop the connection unanswered.
        Some(Fault::Reset) => return Err(std::io::Error::other("scripted reset")),
        Some(Fault::Garbage) => {
            return Ok(reply(200, b"<html>not cbor</html>".to_vec()));
        }
        Some(Fault::Truncated) => {
            let full = page_body(&items, next.as_deref());
            return Ok(reply(200, full[..full.len() / 2].to_vec()));
        }
        // Script it on a page after the first: that page's own token comes back.
        Some(Fault::RepeatToken) => next = seen.next_token.clone().or(next),
        Some(Fault::Pass | Fault::Replace(_)) | None => {}
    }
    Ok(reply(200, page_body(&items, next.as_deref())))
}

fn page_body(items: &[&OrgAccount], next: Option<&str>) -> Vec<u8> {
    let list = items
        .iter()
        .map(|a| account_item(&a.id, &a.status, None, a.reason.as_deref(), a.last_updated))
        .collect();
    cbor_page("accountEnrollmentStatuses", list, next)
}

/// One account of a page as both Compute Optimizer services write it
/// (Automation adds its rule mode); the timestamp is CBOR tag 1.
fn account_item(
    id: &str,
    status: &str,
    rule_mode: Option<&str>,
    reason: Option<&str>,
    last_updated: f64,
) -> Value {
    let mut m = vec![
        (text("accountId"), text(id)),
        (text("status"), text(status)),
    ];
    if let Some(mode) = rule_mode {
        m.push((text("organizationRuleMode"), text(mode)));
    }
    m.push((
        text("lastUpdatedTimestamp"),
        Value::Tag(1, Box::new(Value::Float(last_updated))),
    ));
    if let Some(r) = reason {
        m.push((text("statusReason"), text(r)));
    }
    Value::Map(m)
}

/// A page: its items under `key`, and the token when there is one.
fn cbor_page(key: &str, items: Vec<Value>, next: Option<&str>) -> Vec<u8> {
    let mut out = vec![(text(key), Value::Array(items))];
    if let Some(t) = next {
        out.push((text("nextToken"), text(t)));
    }
    cbor(&Value::Map(out))
}

/// STS AssumeRole (awsQuery protocol, XML): numbered session credentials,
/// each the role asked for (authorised by [`authorise`]).
fn assume_role(inner: &Mutex<Inner>, body: &[u8]) -> Response<Full<Bytes>> {
    let form = String::from_utf8_lossy(body);
    let (n, secs) = {
        let mut inner = inner.lock().unwrap();
        inner.assume_role_calls += 1;
        let secs = if inner.session_seconds == 0 {
            3600
        } else {
            inner.session_seconds
        };
        let n = inner.assume_role_calls;
        let principal = if form.contains("Action=AssumeRoleWithWebIdentity") {
            iam::Principal::exporter(inner.install, &inner.policies)
        } else {
            let arn = form_value(body, "RoleArn").unwrap_or_default();
            let permissions = iam::role(&inner.policies, &arn)
                .map(|(_, p)| p.clone())
                .unwrap_or_default();
            iam::Principal::role(&arn, &permissions)
        };
        inner.sessions.insert(format!("ASIASESSION{n}"), principal);
        (n, secs)
    };
    let session = form_value(body, "RoleSessionName").unwrap_or_else(|| "session".into());
    let action = if form.contains("Action=AssumeRoleWithWebIdentity") {
        "AssumeRoleWithWebIdentity"
    } else {
        "AssumeRole"
    };
    let expires = std::time::SystemTime::now() + Duration::from_secs(secs);
    let xml = format!(
        "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><{action}Result>\
<Credentials><AccessKeyId>ASIASESSION{n}</AccessKeyId><SecretAccessKey>session-secret-{n}</SecretAccessKey>\
<SessionToken>session-token-{n}</SessionToken><Expiration>{}</Expiration></Credentials>\
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/exporter/{session}</Arn><AssumedRoleId>AROAEXAMPLE:{session}</AssumedRoleId></AssumedRoleUser>\
</{action}Result><ResponseMetadata><RequestId>req-{n}</RequestId></ResponseMetadata></{action}Response>",
        rfc3339(expires)
    );
    Response::builder()
        .status(200)
        .header("content-type", "text/xml")
        .body(Full::new(Bytes::from(xml)))
        .unwrap()
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as STS writes `Expiration`.
fn rfc3339(t: std::time::SystemTime) -> String {
    compute_optimizer_exporter::logging::rfc3339(t)
}

/// Compute Optimizer GetEnrollmentStatus for the calling account.
fn org_status(inner: &Mutex<Inner>) -> Response<Full<Bytes>> {
    let (denied, active, without_status, delegated) = {
        let mut inner = inner.lock().unwrap();
        inner.org_status_calls += 1;
        let active = inner
            .accounts
            .iter()
            .filter(|a| a.status == "Active")
            .count();
        (
            inner.org_status_denied,
            active,
            inner.org_status_without_status,
            inner.org_status_delegated,
        )
    };
    if denied {
        return error(
            403,
            "AccessDeniedException",
            "not authorized to GetEnrollmentStatus",
        );
    }
    let mut fields = vec![
        (text("memberAccountsEnrolled"), Value::Bool(!delegated)),
        (
            text("lastUpdatedTimestamp"),
            Value::Tag(1, Box::new(Value::Float(1_690_000_000.0))),
        ),
    ];
    if !delegated {
        fields.push((
            text("numberOfMemberAccountsOptedIn"),
            Value::Integer((active as i64).into()),
        ));
    }
    if !without_status {
        fields.push((text("status"), text("Active")));
    }
    reply(200, cbor(&Value::Map(fields)))
}

/// Compute Optimizer Automation (RPCv2 CBOR): `ListAccounts`, 1 to 1,000 a
/// page (more is InvalidParameterValueException), refused with
/// OptInRequiredException to an organisation not enrolled; and the
/// calling account's own `GetEnrollmentConfiguration`.
async fn automation(
    inner: &Mutex<Inner>,
    op: &str,
    seen: &mut Seen,
    body: &[u8],
) -> Response<Full<Bytes>> {
    if seen.smithy_protocol.as_deref() != Some("rpc-v2-cbor") {
        return automation_error(
            400,
            "SerializationException",
            "smithy-protocol must be rpc-v2-cbor",
        );
    }
    let Ok(input) = ciborium::from_reader::<Value, _>(body) else {
        return automation_error(400, "SerializationException", "body is not CBOR");
    };
    let map = input.as_map().cloned().unwrap_or_default();
    seen.max_results = field(&map, "maxResults")
        .and_then(|v| v.as_integer())
        .map(i128::from);
    seen.next_token = field(&map, "nextToken")
        .and_then(|v| v.as_text())
        .map(str::to_owned);
    let (fault, items, total, offset, size) = {
        let mut i = inner.lock().unwrap();
        i.record(seen.clone());
        *i.automation_calls.entry(op.to_owned()).or_default() += 1;
        if op == "GetEnrollmentConfiguration" {
            let mut fields = vec![(
                text("status"),
                text(if i.automation_off {
                    "Inactive"
                } else {
                    "Active"
                }),
            )];
            if !i.automation_off {
                fields.push((text("organizationRuleMode"), text("AnyAllowed")));
                fields.push((
                    text("lastUpdatedTimestamp"),
                    Value::Tag(1, Box::new(Value::Float(1_690_000_000.0))),
                ));
            }
            return reply(200, cbor(&Value::Map(fields)));
        }
        let size = seen.max_results.unwrap_or(1000);
        if !(1..=1000).contains(&size) {
            return automation_error(
                400,
                "InvalidParameterValueException",
                "maxResults must be between 1 and 1000",
            );
        }
        let size = size as usize;
        let offset = match &seen.next_token {
            None => 0,
            Some(t) => match t
                .strip_prefix("auto-")
                .and_then(|o| o.parse::<usize>().ok())
            {
                Some(o) => o,
                None => {
                    return automation_error(
                        400,
                        "InvalidParameterValueException",
                        "invalid nextToken",
                    );
                }
            },
        };
        if i.automation_off {
            return automation_error(
                403,
                "OptInRequiredException",
                "The organization is not enrolled in Compute Optimizer Automation.",
            );
        }
        let fault = i
            .automation_faults
            .get_mut(&(offset / size))
            .and_then(|q| q.pop_front());
        let total = i.automation.len();
        let items: Vec<AutomationAccount> = i
            .automation
            .iter()
            .skip(offset)
            .take(size)
            .cloned()
            .collect();
        (fault, items, total, offset, size)
    };
    let end = (offset + size).min(total);
    let mut next = (end < total).then(|| format!("auto-{end}"));
    match fault {
        Some(Fault::Error(status, code)) => {
            return automation_error(status, code, "scripted fault");
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Garbage) => return reply(200, b"<html>not cbor</html>".to_vec()),
        Some(Fault::RepeatToken) => next = seen.next_token.clone().or(next),
        _ => {}
    }
    let list = items
        .iter()
        .map(|a| {
            account_item(
                &a.id,
                &a.status,
                Some(&a.mode),
                a.reason.as_deref(),
                a.last_updated,
            )
        })
        .collect();
    reply(200, cbor_page("accounts", list, next.as_deref()))
}

/// AWS Organizations (awsJson1_1): the listings the exporter uses, 20 a
/// page at most (more is InvalidInputException, as AWS answers), unknown
/// parents and resources refused, throttled above its rate if one is set.
fn organizations(inner: &Mutex<Inner>, op: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let json = json_reply;
    let req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let max = req["MaxResults"].as_u64().unwrap_or(20) as usize;
    if !(1..=20).contains(&max) {
        return json(
            400,
            serde_json::json!({"__type": "InvalidInputException", "Message": "MaxResults must be 1-20"}),
        );
    }
    let offset: usize = req["NextToken"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut inner = inner.lock().unwrap();
    let throttled = || {
        json(
            400,
            serde_json::json!({"__type": "TooManyRequestsException", "Message": "AWS Organizations can't complete your request because another request is already in progress or the rate is exceeded"}),
        )
    };
    if inner.organizations_throttle > 0 {
        inner.organizations_throttle -= 1;
        inner.organizations_throttled += 1;
        return throttled();
    }
    if let Some((rate, at, tokens)) = inner.organizations_limit {
        let now = std::time::Instant::now();
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * rate).min(rate.max(1.0));
        if tokens < 1.0 {
            inner.organizations_limit = Some((rate, now, tokens));
            inner.organizations_throttled += 1;
            return throttled();
        }
        inner.organizations_limit = Some((rate, now, tokens - 1.0));
    }
    *inner.organizations_calls.entry(op.to_owned()).or_default() += 1;
    if inner.organizations_denied {
        return json(
            400,
            serde_json::json!({"__type": "AccessDeniedException", "Message": format!("not authorized to {op}")}),
        );
    }
    let name_of = |inner: &Inner, id: &str| {
        inner
            .names
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("account-{id}"))
    };
    let parent_of = |inner: &Inner, id: &str| {
        inner
            .parents
            .get(id)
            .cloned()
            .unwrap_or_else(|| ROOT_ID.to_owned())
    };
    let parent = req["ParentId"].as_str().unwrap_or("");
    let known_parent = parent == ROOT_ID || inner.ous.contains_key(parent);
    let (key, items): (&str, Vec<serde_json::Value>) = match op {
        "ListRoots" => (
            "Roots",
            vec![serde_json::json!({"Id": ROOT_ID, "Name": "Root",
                "Arn": format!("arn:aws:organizations::111111111111:root/o-example/{ROOT_ID}"), "PolicyTypes": []})],
        ),
        "ListOrganizationalUnitsForParent" | "ListAccountsForParent" if !known_parent => {
            return json(
                400,
                serde_json::json!({"__type": "ParentNotFoundException", "Message": "parent not found"}),
            );
        }
        "ListOrganizationalUnitsForParent" => (
            "OrganizationalUnits",
            inner
                .ous
                .iter()
                .filter(|(_, (p, _))| p == parent)
                .map(|(id, (_, name))| serde_json::json!({"Id": id, "Name": name,
                    "Arn": format!("arn:aws:organizations::111111111111:ou/o-example/{id}")}))
                .collect(),
        ),
        "ListAWSServiceAccessForOrganization" => (
            "EnabledServicePrincipals",
            inner
                .service_access
                .iter()
                .map(|(p, t)| serde_json::json!({"ServicePrincipal": p, "DateEnabled": t}))
                .collect(),
        ),
        "ListDelegatedAdministrators" => {
            let principal = req["ServicePrincipal"].as_str();
            if principal.is_some_and(|p| !p.ends_with(".amazonaws.com")) {
                return json(
                    400,
                    serde_json::json!({"__type": "InvalidInputException", "Message": "invalid service principal"}),
                );
            }
            (
                "DelegatedAdministrators",
                inner
                    .delegated
                    .iter()
                    .filter(|(_, _, p)| principal.is_none_or(|want| want == p))
                    .map(|(id, name, _)| serde_json::json!({
                        "Id": id, "Name": name, "Email": format!("admin+{id}@example.com"),
                        "Arn": format!("arn:aws:organizations::111111111111:account/o-example/{id}"),
                        "Status": "ACTIVE", "State": "ACTIVE", "JoinedMethod": "INVITED",
                        "JoinedTimestamp": 1_600_000_000.0, "DelegationEnabledDate": 1_650_000_000.0,
                    }))
                    .collect(),
            )
        }
        "ListAccountsForParent" | "ListAccounts" => (
            "Accounts",
            inner
                .accounts
                .iter()
                .filter(|a| op == "ListAccounts" || parent_of(&inner, &a.id) == parent)
                .map(|a| {
                    let id = &a.id;
                    let state = inner.states.get(id).map_or("ACTIVE", String::as_str);
                    // `Status` is being retired: it only knows ACTIVE and SUSPENDED.
                    let status = if state == "ACTIVE" { "ACTIVE" } else { "SUSPENDED" };
                    let mut account = serde_json::json!({
                        "Id": id, "Email": format!("owner+{id}@example.com"),
                        "Arn": format!("arn:aws:organizations::111111111111:account/o-example/{id}"),
                        "Status": status, "State": state, "JoinedMethod": "CREATED",
                    });
                    let name = name_of(&inner, id);
                    if !name.is_empty() {
                        account["Name"] = serde_json::Value::String(name);
                    }
                    account
                })
                .collect(),
        ),
        _ => {
            match &mut inner.tags_left {
                Some(0) => {
                    return json(
                        400,
                        serde_json::json!({"__type": "AccessDeniedException", "Message": "not authorized to ListTagsForResource"}),
                    );
                }
                Some(n) => *n -= 1,
                None => {}
            }
            let id = req["ResourceId"].as_str().unwrap_or("");
            if inner.leaving.remove(id) {
                inner.accounts.retain(|a| a.id != id);
            }
            if !inner.accounts.iter().any(|a| a.id == id) {
                return json(
                    400,
                    serde_json::json!({"__type": "TargetNotFoundException", "Message": "resource not found"}),
                );
            }
            (
                "Tags",
                inner
                    .tags
                    .get(id)
                    .map(|t| {
                        t.iter()
                            .map(|(k, v)| serde_json::json!({"Key": k, "Value": v}))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        }
    };
    let total = items.len();
    let page: Vec<serde_json::Value> = items.into_iter().skip(offset).take(max).collect();
    let mut out = serde_json::json!({ key: page });
    if offset + max < total {
        out["NextToken"] = serde_json::Value::String((offset + max).to_string());
    }
    json(200, out)
}

/// A form field of an awsQuery body, percent-decoded.
fn form_value(body: &[u8], key: &str) -> Option<String> {
    let form = String::from_utf8_lossy(body);
    let raw = form
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// IAM, as AWS applies it before a service does anything: who signed the
/// request (an unknown session key is refused), whether their policy allows
/// the action, for AssumeRole whether the role's trust policy lets them in
/// with this external ID, and for organisation-wide calls whether they are
/// in the management account. The refusal, if any, is the service's own.
fn authorise(
    inner: &mut Inner,
    service: Service,
    operation: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Option<Response<Full<Bytes>>> {
    let sts_error = |status: u16, code: &str, message: &str| {
        let xml = format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>denied</RequestId></ErrorResponse>"
        );
        Response::builder()
            .status(status)
            .header("content-type", "text/xml")
            .body(Full::new(Bytes::from(xml)))
            .unwrap()
    };
    let denied = |service: Service, message: &str| match service {
        Service::ComputeOptimizer => error(403, "AccessDeniedException", message),
        Service::Organizations => json_reply(
            400,
            serde_json::json!({"__type": "AccessDeniedException", "Message": message}),
        ),
        Service::Sts => sts_error(403, "AccessDenied", message),
        Service::Automation => automation_error(403, "AccessDeniedException", message),
    };
    if operation == "AssumeRoleWithWebIdentity" {
        let arn = form_value(body, "RoleArn").unwrap_or_default();
        let exporter = iam::Principal::exporter(inner.install, &inner.policies);
        let action = "sts:AssumeRoleWithWebIdentity";
        let token = form_value(body, "WebIdentityToken").unwrap_or_default();
        let trusted = iam::web_identity_context(&token).is_some_and(|(provider, context)| {
            let context: Vec<(&str, &str)> = context
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            iam::trusts_federated(
                &inner.policies.exporter_trust_irsa,
                &provider,
                action,
                &context,
            )
        });
        if arn != exporter.arn || !trusted {
            inner.denied.push(format!("web-identity {action} {arn}"));
            return Some(sts_error(
                403,
                "AccessDenied",
                &format!("Not authorized to perform {action}"),
            ));
        }
        return None;
    }
    let key = authorization
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .unwrap_or_default();
    let caller = if key.starts_with("ASIA") {
        match inner.sessions.get(key) {
            Some(p) => p.clone(),
            None => {
                inner.denied.push(format!("{key} {operation}"));
                return Some(match service {
                    Service::Sts => sts_error(
                        403,
                        "InvalidClientTokenId",
                        "The security token included in the request is invalid.",
                    ),
                    Service::ComputeOptimizer => error(
                        403,
                        "UnrecognizedClientException",
                        "The security token included in the request is invalid.",
                    ),
                    Service::Organizations => json_reply(
                        400,
                        serde_json::json!({"__type": "UnrecognizedClientException", "Message": "The security token included in the request is invalid."}),
                    ),
                    Service::Automation => automation_error(
                        403,
                        "UnrecognizedClientException",
                        "The security token included in the request is invalid.",
                    ),
                });
            }
        }
    } else {
        iam::Principal::exporter(inner.install, &inner.policies)
    };
    let action = format!("{}:{operation}", service.signing_name());
    if operation == "AssumeRole" {
        let arn = form_value(body, "RoleArn").unwrap_or_default();
        let external_id = form_value(body, "ExternalId");
        let mut context = Vec::new();
        if let Some(id) = &external_id {
            context.push(("sts:ExternalId", id.as_str()));
        }
        let allowed = caller.may(&action, &arn, &[])
            && iam::role(&inner.policies, &arn)
                .is_some_and(|(trust, _)| iam::trusts(trust, Some(&caller), &action, &context));
        if !allowed {
            inner.denied.push(format!("{} {action} {arn}", caller.arn));
            return Some(denied(
                service,
                &format!(
                    "User: {} is not authorized to perform: sts:AssumeRole on resource: {arn}",
                    caller.arn
                ),
            ));
        }
        return None;
    }
    if !caller.may(&action, "*", &[]) {
        inner.denied.push(format!("{} {action}", caller.arn));
        return Some(denied(
            service,
            &format!(
                "User: {} is not authorized to perform: {action}",
                caller.arn
            ),
        ));
    }
    let organisation_wide = service == Service::Organizations
        || operation == "GetEnrollmentStatusesForOrganization"
        || (service == Service::Automation && operation == "ListAccounts");
    if organisation_wide && caller.account != iam::MANAGEMENT_ACCOUNT {
        inner.denied.push(format!(
            "{} {action} (not the management account)",
            caller.arn
        ));
        return Some(denied(
            service,
            if service == Service::Organizations {
                "You don't have permissions to access this resource."
            } else {
                "The account is not the management account or a delegated administrator of an organization."
            },
        ));
    }
    None
}
