//! Every rule a parsed configuration must satisfy, each answered with the
//! key and why (the caller adds the file and the line).
use std::collections::BTreeMap;
use std::time::Duration;

use super::duration::format_duration;
use super::listen::{is_host_name, parse_listen_address};
use super::secret::{EXTERNAL_ID_RULE, valid_external_id};
use super::tags::tag_label;
use super::{AwsConfig, Config};
use crate::model::Status;

/// What an `[[organization]]` name may be: a label value that reads well in
/// a file name, a URL and a route matcher.
pub(crate) const ORGANIZATION_NAME_RULE: &str = "1-64 characters of letters, digits and _.-";

pub(crate) fn valid_organization_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

impl Config {
    /// Every rule a parsed config must satisfy; returns the key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, msg: String| Err((key.to_owned(), msg));
        let w = &self.web;
        if let Err(e) = parse_listen_address(&w.listen_address) {
            return err("web.listen_address", e);
        }
        let path_ok = w.telemetry_path.len() >= 2
            && w.telemetry_path.starts_with('/')
            && w.telemetry_path
                .chars()
                .all(|c| c.is_ascii_graphic() && !"?#%\\\"<>`{}|^".contains(c))
            && !w.telemetry_path.contains("//");
        if !path_ok {
            return err(
                "web.telemetry_path",
                format!(
                    "{:?} must be an absolute path other than \"/\", without spaces, query or escapes, such as \"/metrics\"",
                    w.telemetry_path
                ),
            );
        }
        if super::ENDPOINTS.contains(&w.telemetry_path.as_str()) {
            return err(
                "web.telemetry_path",
                format!("{:?} is taken by another endpoint", w.telemetry_path),
            );
        }
        if let Some(bad) = w.allowed_hosts.iter().find(|h| !is_host_name(h)) {
            return err(
                "web.allowed_hosts",
                format!(
                    "{bad:?} is not a host name such as \"exporter.monitoring.svc\" (no scheme, port or path)"
                ),
            );
        }
        if !(1..=100_000).contains(&w.max_connections) {
            return err(
                "web.max_connections",
                format!("{} must be between 1 and 100000", w.max_connections),
            );
        }
        if !(1..=100_000).contains(&w.max_connections_per_source) {
            return err(
                "web.max_connections_per_source",
                format!(
                    "{} must be between 1 and 100000",
                    w.max_connections_per_source
                ),
            );
        }
        for (key, value) in [
            ("web.header_read_timeout", w.header_read_timeout),
            ("web.idle_timeout", w.idle_timeout),
            ("web.write_stall_timeout", w.write_stall_timeout),
        ] {
            check_range(
                key,
                value,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )?;
        }

        if self.organization.is_empty() {
            validate_aws(&self.aws, "aws")?;
        }
        for (key, set) in [
            ("aws.external_id", self.aws.external_id.is_some()),
            ("aws.external_id_file", self.aws.external_id_file.is_some()),
        ] {
            if set && !self.organization.is_empty() {
                return err(
                    key,
                    "with [[organization]] tables an external ID is each organisation's own \
                     (one tenant's ID must never reach another's role): set it in the table \
                     of each organisation whose role requires it"
                        .into(),
                );
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, org) in self.organization.iter().enumerate() {
            let key = format!("organization[{i}].name");
            if !valid_organization_name(&org.name) {
                return err(
                    &key,
                    format!("{:?} must be {ORGANIZATION_NAME_RULE}", org.name),
                );
            }
            if !names.insert(org.name.as_str()) {
                return err(&key, format!("{:?} names two organizations", org.name));
            }
            let table = format!("organization[{i}]");
            validate_aws(&org.aws, &table).map_err(|(key, msg)| {
                // A value the table does not set came from [aws]: say so there.
                let own = key
                    .strip_prefix(&format!("{table}."))
                    .is_none_or(|k| org.table.contains_key(k));
                if own {
                    (key, msg)
                } else {
                    let key = key.replacen(&table, "aws", 1);
                    (
                        key,
                        format!("{msg} (the [aws] default of organization {:?})", org.name),
                    )
                }
            })?;
        }

        let p = &self.poll;
        check_range("poll.interval", p.interval, MIN_INTERVAL, MAX_INTERVAL)?;
        check_range("poll.timeout", p.timeout, MIN_INTERVAL, MAX_INTERVAL)?;
        if p.timeout > p.interval {
            return err(
                "poll.timeout",
                format!(
                    "{} is longer than poll.interval ({}); polls must not overlap",
                    format_duration(p.timeout),
                    format_duration(p.interval)
                ),
            );
        }
        if !(1..=100).contains(&p.page_size) {
            return err(
                "poll.page_size",
                format!("{} must be between 1 and 100", p.page_size),
            );
        }
        for s in &p.statuses {
            if Status::parse_known(s).is_none() {
                return err(
                    "poll.statuses",
                    format!("unknown status {s:?}; allowed: Active, Inactive, Pending, Failed"),
                );
            }
        }
        Ok(())
    }
}

/// The rules for one set of AWS settings: `[aws]`, or an organisation's
/// (`table` is `aws` or `organization[i]`, for the keys in errors).
pub(crate) fn validate_aws(a: &AwsConfig, table: &str) -> Result<(), (String, String)> {
    let k = |key: &str| format!("{table}.{key}");
    let err = |key: &str, msg: String| Err((key.to_owned(), msg));
    for (key, url) in [
        (&k("endpoint_url"), &a.endpoint_url),
        (&k("sts_endpoint_url"), &a.sts_endpoint_url),
        (
            &k("organizations_endpoint_url"),
            &a.organizations_endpoint_url,
        ),
        (&k("automation_endpoint_url"), &a.automation_endpoint_url),
    ] {
        let Some(url) = url else { continue };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return err(key, format!("{url:?} must be an http:// or https:// URL"));
        }
    }
    for (key, region) in [
        (k("region"), &a.region),
        (k("automation_region"), &a.automation_region),
    ] {
        if let Some(region) = region
            && (region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return err(
                &key,
                format!("{region:?} is not a region name such as \"us-east-1\""),
            );
        }
    }
    if let Some(interval) = a.automation_interval {
        check_range(
            &k("automation_interval"),
            interval,
            MIN_INTERVAL,
            Duration::from_secs(7 * 86_400),
        )?;
    }
    if let Some(arn) = &a.role_arn
        && !(arn.starts_with("arn:") && arn.contains(":role/"))
    {
        return err(
            &k("role_arn"),
            format!("{arn:?} is not a role ARN such as \"arn:aws:iam::123456789012:role/name\""),
        );
    }
    if let Some(id) = &a.external_id
        && !valid_external_id(id)
    {
        // Never quoted: it is a secret.
        return err(&k("external_id"), format!("must be {EXTERNAL_ID_RULE}"));
    }
    if a.external_id.is_some() && a.external_id_file.is_some() {
        return err(
            &k("external_id_file"),
            "set either aws.external_id or aws.external_id_file, not both".into(),
        );
    }
    for (key, set) in [
        (&k("external_id"), a.external_id.is_some()),
        (&k("external_id_file"), a.external_id_file.is_some()),
    ] {
        if set && a.role_arn.is_none() {
            return err(
                key,
                "is only used when assuming a role: set aws.role_arn too".into(),
            );
        }
    }
    let name_ok = (2..=64).contains(&a.session_name.len())
        && a.session_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c));
    if !name_ok {
        return err(
            &k("session_name"),
            format!(
                "{:?} must be 2-64 characters of letters, digits and +=,.@-_",
                a.session_name
            ),
        );
    }
    if !(1..=10).contains(&a.max_attempts) {
        return err(
            &k("max_attempts"),
            format!("{} must be between 1 and 10", a.max_attempts),
        );
    }
    check_range(
        &k("retry_backoff"),
        a.retry_backoff,
        Duration::from_millis(1),
        Duration::from_secs(60),
    )?;
    check_range(
        &k("request_timeout"),
        a.request_timeout,
        Duration::from_millis(100),
        Duration::from_secs(600),
    )?;

    check_range(
        &k("organizations_interval"),
        a.organizations_interval,
        MIN_INTERVAL,
        Duration::from_secs(7 * 86_400),
    )?;
    if let Some(age) = a.organizations_max_age {
        check_range(
            &k("organizations_max_age"),
            age,
            a.organizations_interval,
            Duration::from_secs(90 * 86_400),
        )
        .map_err(|(key, _)| {
            (
                key,
                format!(
                    "{} must be between aws.organizations_interval ({}) and 90d: younger data is \
                     always replaced by the next walk",
                    format_duration(age),
                    format_duration(a.organizations_interval)
                ),
            )
        })?;
    }
    let rps = a.organizations_requests_per_second;
    if !(rps.is_finite() && (0.1..=1000.0).contains(&rps)) {
        return err(
            &k("organizations_requests_per_second"),
            format!("{rps} must be between 0.1 and 1000"),
        );
    }
    if !a.account_tags.is_empty() && !a.organizations {
        return err(
            &k("account_tags"),
            "tags are read from AWS Organizations: set aws.organizations = true too".into(),
        );
    }
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for key in &a.account_tags {
        if key.is_empty() || key.chars().count() > 128 {
            return err(
                &k("account_tags"),
                format!("{key:?} is not a tag key (1 to 128 characters)"),
            );
        }
        if let Some(other) = seen.insert(tag_label(key), key) {
            return err(
                &k("account_tags"),
                format!(
                    "{other:?} and {key:?} would both be the label {}",
                    tag_label(key)
                ),
            );
        }
    }

    Ok(())
}

pub(crate) fn check_range(
    key: &str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), (String, String)> {
    if value < min || value > max {
        return Err((
            key.to_owned(),
            format!(
                "{} must be between {} and {}",
                format_duration(value),
                format_duration(min),
                format_duration(max)
            ),
        ));
    }
    Ok(())
}
