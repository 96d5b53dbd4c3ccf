//! Account names from AWS Organizations `ListAccounts`, on their own slower
//! interval. Optional (`aws.organizations`), and never able to fail or delay
//! the enrollment poll: a failure is counted, logged, and the last names kept.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::config::PollOptions;
use crate::error::PollError;
use crate::model::AccountNames;
use crate::paging::{self, Listing};
use crate::shutdown::Shutdown;
use crate::source::{LIST_ACCOUNTS, NameSource, ORGANIZATIONS_PAGE_SIZE};
use crate::state::State;

/// Lists every account under one deadline, by the paging loop's rules.
pub async fn list_all<S: NameSource>(
    source: &S,
    state: &State,
    timeout: Duration,
    opts: &PollOptions,
) -> Result<AccountNames, PollError> {
    let listing = Listing::new(
        LIST_ACCOUNTS,
        usize::from(ORGANIZATIONS_PAGE_SIZE),
        timeout,
        opts,
        state,
    );
    let listed = paging::list_all(&listing, |token| source.list_accounts(token)).await?;
    Ok(listed.items.into_iter().collect())
}

/// Refreshes names now, then every `interval`, until shutdown.
pub async fn run<S: NameSource>(
    source: S,
    interval: Duration,
    opts: PollOptions,
    state: Arc<State>,
    shutdown: Shutdown,
) {
    loop {
        let started = Instant::now();
        let timeout = interval.min(Duration::from_secs(300));
        let result = tokio::select! {
            r = list_all(&source, &state, timeout, &opts) => r,
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
                code = e.code(),
                error = %e,
                advice = "grant organizations:ListAccounts (management or delegated administrator account), and check aws.organizations_endpoint_url; enrollment data is unaffected",
                "listing account names failed; keeping the last names"
            ),
        }
        tokio::select! {
            _ = sleep_until(started + interval) => {}
            _ = shutdown.wait() => return,
        }
    }
}
