//! Account names from AWS Organizations `ListAccounts`, on their own slower
//! interval. Optional (`aws.organizations`), and never able to fail or delay
//! the enrollment poll: a failure is counted, logged, and the last names kept.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until, timeout_at};

use crate::error::ApiError;
use crate::model::AccountNames;
use crate::shutdown::Shutdown;
use crate::state::State;

pub const OPERATION: &str = "ListAccounts";

/// ListAccounts allows at most 20 per page.
pub const PAGE_SIZE: i32 = 20;

/// An organisation with more accounts than this is not real.
const MAX_PAGES: usize = 1_000_000 / PAGE_SIZE as usize;

/// One page of account IDs and names.
#[derive(Debug, Default)]
pub struct NamesPage {
    pub names: Vec<(String, String)>,
    pub next_token: Option<String>,
}

pub trait NameSource: Send + Sync + 'static {
    fn list_accounts(
        &self,
        token: Option<String>,
    ) -> impl Future<Output = Result<NamesPage, ApiError>> + Send;
}

/// Lists every account under one deadline; stops on a repeated token.
pub async fn list_all<S: NameSource>(
    source: &S,
    state: &State,
    timeout: Duration,
) -> Result<AccountNames, ApiError> {
    let deadline = Instant::now() + timeout;
    let mut names = AccountNames::new();
    let mut seen = HashSet::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let page = match timeout_at(deadline, source.list_accounts(token.clone())).await {
            Ok(Ok(page)) => {
                state.count_request(OPERATION, "success");
                page
            }
            Ok(Err(e)) => {
                state.count_request(OPERATION, &e.code);
                return Err(e);
            }
            Err(_) => {
                state.count_request(OPERATION, "timeout");
                return Err(ApiError::new(
                    "timeout",
                    "ListAccounts did not finish in time",
                    true,
                ));
            }
        };
        names.extend(page.names);
        match page.next_token {
            Some(t) if !t.is_empty() => {
                if !seen.insert(t.clone()) {
                    return Err(ApiError::new(
                        "repeated_token",
                        "ListAccounts repeated a NextToken",
                        false,
                    ));
                }
                token = Some(t);
            }
            _ => return Ok(names),
        }
    }
    Err(ApiError::new(
        "too_many_pages",
        "ListAccounts returned too many pages",
        false,
    ))
}

/// Refreshes names now, then every `interval`, until shutdown.
pub async fn run<S: NameSource>(
    source: S,
    interval: Duration,
    state: Arc<State>,
    shutdown: Shutdown,
) {
    loop {
        let started = Instant::now();
        let timeout = interval.min(Duration::from_secs(300));
        let result = tokio::select! {
            r = list_all(&source, &state, timeout) => r,
            _ = shutdown.wait() => return,
        };
        match result {
            Ok(names) => {
                let count = names.len();
                let st = state.clone();
                let _ = tokio::task::spawn_blocking(move || st.set_names(names)).await;
                tracing::info!(accounts = count, "account names refreshed");
            }
            Err(e) => tracing::warn!(
                code = %e.code,
                error = %e,
                advice = "grant organizations:ListAccounts (management or delegated administrator account); enrollment data is unaffected",
                "listing account names failed; keeping the last names"
            ),
        }
        tokio::select! {
            _ = sleep_until(started + interval) => {}
            _ = shutdown.wait() => return,
        }
    }
}
