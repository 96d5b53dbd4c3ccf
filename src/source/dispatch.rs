//! The source chosen at start-up: AWS, or the `--demo` organisation.

use std::sync::Arc;

use crate::model::{
    Account, AutomationAccount, AutomationEnrollment, OrgAccount, OrgStatus, Page, PageRequest,
    Root,
};
use crate::source::aws::AwsSource;
use crate::source::demo::DemoSource;
use crate::source::error::ApiError;
use crate::source::{AutomationSource, NameSource, PageSource};

#[derive(Clone)]
pub enum Source {
    Aws(AwsSource),
    Demo(Arc<DemoSource>),
}

impl PageSource for Source {
    async fn fetch_page(&self, req: &PageRequest) -> Result<Page<Account>, ApiError> {
        match self {
            Source::Aws(s) => s.fetch_page(req).await,
            Source::Demo(s) => s.fetch_page(req).await,
        }
    }

    async fn fetch_org_status(&self) -> Result<Option<OrgStatus>, ApiError> {
        match self {
            Source::Aws(s) => s.fetch_org_status().await,
            Source::Demo(s) => s.fetch_org_status().await,
        }
    }
}

impl NameSource for Source {
    async fn list_roots(&self, token: Option<String>) -> Result<Page<Root>, ApiError> {
        match self {
            Source::Aws(s) => s.list_roots(token).await,
            Source::Demo(s) => s.list_roots(token).await,
        }
    }

    async fn list_ous(
        &self,
        parent: &str,
        token: Option<String>,
    ) -> Result<Page<(String, String)>, ApiError> {
        match self {
            Source::Aws(s) => s.list_ous(parent, token).await,
            Source::Demo(s) => s.list_ous(parent, token).await,
        }
    }

    async fn list_accounts_for_parent(
        &self,
        parent: &str,
        token: Option<String>,
    ) -> Result<Page<OrgAccount>, ApiError> {
        match self {
            Source::Aws(s) => s.list_accounts_for_parent(parent, token).await,
            Source::Demo(s) => s.list_accounts_for_parent(parent, token).await,
        }
    }

    async fn list_tags(
        &self,
        account: &str,
        token: Option<String>,
    ) -> Result<Page<(String, String)>, ApiError> {
        match self {
            Source::Aws(s) => s.list_tags(account, token).await,
            Source::Demo(s) => s.list_tags(account, token).await,
        }
    }

    async fn list_service_access(
        &self,
        token: Option<String>,
    ) -> Result<Page<(String, Option<f64>)>, ApiError> {
        match self {
            Source::Aws(s) => s.list_service_access(token).await,
            Source::Demo(s) => s.list_service_access(token).await,
        }
    }

    async fn list_delegated_administrators(
        &self,
        token: Option<String>,
    ) -> Result<Page<(String, String)>, ApiError> {
        match self {
            Source::Aws(s) => s.list_delegated_administrators(token).await,
            Source::Demo(s) => s.list_delegated_administrators(token).await,
        }
    }
}

impl AutomationSource for Source {
    async fn list_automation_accounts(
        &self,
        max_results: u16,
        token: Option<String>,
    ) -> Result<Page<AutomationAccount>, ApiError> {
        match self {
            Source::Aws(s) => s.list_automation_accounts(max_results, token).await,
            Source::Demo(s) => s.list_automation_accounts(max_results, token).await,
        }
    }

    async fn automation_enrollment(&self) -> Result<AutomationEnrollment, ApiError> {
        match self {
            Source::Aws(s) => s.automation_enrollment().await,
            Source::Demo(s) => s.automation_enrollment().await,
        }
    }
}
