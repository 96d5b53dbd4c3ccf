//! The sources: where enrollment statuses and the organisation's structure
//! come from, and the rules every listing follows.
//!
//! * [`aws`]: the AWS edge, the only module that imports the SDK (a client
//!   per service, one call in, one plain [`crate::model::Page`] or
//!   [`error::ApiError`] out).
//! * [`demo`]: the simulated organisation of `--demo`.
//! * [`paging`]: the one paging loop (tokens, caps, retries, pace,
//!   deadlines) that every listing uses; [`error`]: what a call and a
//!   listing can fail with, and what to do about it.
//! * [`dispatch`]: the source chosen at start-up.
//!
//! The producers only know the traits below.

pub mod aws;
pub mod demo;
pub mod dispatch;
pub mod error;
pub mod paging;

use std::future::Future;

use crate::model::{
    Account, AutomationAccount, AutomationEnrollment, OrgAccount, OrgStatus, Page, PageRequest,
    Root,
};
use crate::source::error::ApiError;

/// Operation names, as the `operation` label and IAM know them.
pub const ENROLLMENTS: &str = "GetEnrollmentStatusesForOrganization";
pub const ORG_STATUS: &str = "GetEnrollmentStatus";
pub const LIST_ROOTS: &str = "ListRoots";
pub const LIST_OUS: &str = "ListOrganizationalUnitsForParent";
pub const LIST_ACCOUNTS_FOR_PARENT: &str = "ListAccountsForParent";
pub const LIST_TAGS: &str = "ListTagsForResource";
pub const LIST_SERVICE_ACCESS: &str = "ListAWSServiceAccessForOrganization";
pub const LIST_DELEGATED_ADMINISTRATORS: &str = "ListDelegatedAdministrators";
/// Compute Optimizer Automation's (`aco-automation:`).
pub const AUTOMATION_ACCOUNTS: &str = "ListAccounts";
pub const AUTOMATION_ENROLLMENT: &str = "GetEnrollmentConfiguration";

/// Compute Optimizer's service principal, as Organizations knows it.
pub const COMPUTE_OPTIMIZER_PRINCIPAL: &str = "compute-optimizer.amazonaws.com";

/// Automation's `ListAccounts` allows at most 1,000 per page.
pub const AUTOMATION_PAGE_SIZE: u16 = 1000;

/// Organizations list operations allow at most 20 per page.
pub const ORGANIZATIONS_PAGE_SIZE: u8 = 20;

/// Pages of enrollment statuses, and the caller's own enrollment.
pub trait PageSource: Send + Sync + 'static {
    fn fetch_page(
        &self,
        req: &PageRequest,
    ) -> impl Future<Output = Result<Page<Account>, ApiError>> + Send;

    /// The calling account's own enrollment (`GetEnrollmentStatus`), asked
    /// once per poll; `Ok(None)` where a source has no such thing.
    fn fetch_org_status(&self) -> impl Future<Output = Result<Option<OrgStatus>, ApiError>> + Send {
        async { Ok(None) }
    }
}

/// The organisation tree and account tags from AWS Organizations: pages of
/// roots, of `(id, name)` for OUs, of accounts, and of `(key, value)` for
/// tags.
pub trait NameSource: Send + Sync + 'static {
    fn list_roots(
        &self,
        token: Option<String>,
    ) -> impl Future<Output = Result<Page<Root>, ApiError>> + Send;

    fn list_ous(
        &self,
        parent: &str,
        token: Option<String>,
    ) -> impl Future<Output = Result<Page<(String, String)>, ApiError>> + Send;

    fn list_accounts_for_parent(
        &self,
        parent: &str,
        token: Option<String>,
    ) -> impl Future<Output = Result<Page<OrgAccount>, ApiError>> + Send;

    fn list_tags(
        &self,
        account: &str,
        token: Option<String>,
    ) -> impl Future<Output = Result<Page<(String, String)>, ApiError>> + Send;

    /// Services with trusted access: `(service principal, enabled since)`.
    fn list_service_access(
        &self,
        token: Option<String>,
    ) -> impl Future<Output = Result<Page<(String, Option<f64>)>, ApiError>> + Send;

    /// `(account ID, name)` of Compute Optimizer's delegated administrators.
    fn list_delegated_administrators(
        &self,
        token: Option<String>,
    ) -> impl Future<Output = Result<Page<(String, String)>, ApiError>> + Send;
}

/// Compute Optimizer Automation: pages of every account's enrollment
/// (`ListAccounts`), and the calling account's own.
pub trait AutomationSource: Send + Sync + 'static {
    fn list_automation_accounts(
        &self,
        max_results: u16,
        token: Option<String>,
    ) -> impl Future<Output = Result<Page<AutomationAccount>, ApiError>> + Send;

    fn automation_enrollment(
        &self,
    ) -> impl Future<Output = Result<AutomationEnrollment, ApiError>> + Send;
}
