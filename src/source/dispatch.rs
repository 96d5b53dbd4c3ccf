//! The source chosen at start-up: AWS, or the `--demo` organisation.

use std::sync::Arc;

use crate::model::{Account, OrgAccount, OrgStatus, Page, PageRequest, Root};
use crate::source::aws::AwsSource;
use crate::source::demo::DemoSource;
use crate::source::error::ApiError;
use crate::source::{NameSource, PageSource};

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
}
