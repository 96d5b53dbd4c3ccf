//! Configuration: a TOML file with `[web]`, `[aws]` and `[poll]` sections,
//! and any number of `[[organization]]` tables, each an organisation's AWS
//! settings over `[aws]`'s.
//!
//! Loading follows blackbox_exporter: unknown keys are errors, defaults are
//! filled in first, then every rule is validated, and every error is one line
//! naming the file, the key and (where the file has it) the line. This file
//! holds the schema, its defaults and the loading; each other job has a
//! file of its own:
//!
//! * [`organizations`]: `[[organization]]` tables merged over `[aws]`;
//! * [`validate`]: every rule;
//! * [`secret`]: the external ID (its file, its rule, never printed);
//! * [`duration`], [`listen`], [`tags`]: values with a syntax of their own;
//! * [`location`]: lines and keys for the one-line errors;
//! * [`options`]: what the producers take from a configuration.

mod duration;
mod listen;
mod location;
mod options;
mod organizations;
mod secret;
mod tags;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Status;

use duration::{duration_str, optional_duration_str};
pub use duration::{format_duration, parse_duration};
pub use listen::{ListenAddress, parse_listen_address};
use location::{key_prefix, line_col, line_of_key, location, one_line};
pub use options::PollOptions;
pub use organizations::{OrgSettings, Organization};
pub use secret::without_values;
use secret::{SECRET_KEYS, read_external_id_file, redacted};
pub use tags::{tag_label, tag_labels};

/// A configuration that cannot be used. Always names the file, and the key
/// and line where they are known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}{}: {}{msg}", path.display(), location(*line, *column), key_prefix(key))]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        key: Option<String>,
        msg: String,
    },
    #[error("{}{}: {key}: {msg}", path.display(), location(*line, None))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        msg: String,
    },
}

/// The endpoints besides the telemetry path, which `web.telemetry_path`
/// may therefore not be; the server routes exactly these.
pub const ENDPOINTS: [&str; 6] = [
    "/",
    "/-/healthy",
    "/-/ready",
    "/-/reload",
    "/status",
    "/status.json",
];

/// The default port: in Prometheus' exporter range (9100-9999).
pub const DEFAULT_PORT: u16 = 9746;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub web: WebConfig,
    /// The AWS settings; with `[[organization]]` tables, their defaults.
    pub aws: AwsConfig,
    pub poll: PollConfig,
    /// `[[organization]]`: each organisation watched, with its own AWS
    /// settings over `[aws]`. None: `[aws]` is the one organisation, and
    /// no series has an `organization` label.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub organization: Vec<Organization>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// `host:port`; `:port` listens on every IPv4 and IPv6 address, a host
    /// name on the first address it resolves to (IPv4 first, as Go does).
    pub listen_address: String,
    pub telemetry_path: String,
    /// Open connections at most (lowered to the open-files limit); at the
    /// cap, connections that never sent a request are closed first.
    pub max_connections: usize,
    /// Open connections from one source address at most.
    pub max_connections_per_source: usize,
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// A response the client stops reading for this long is dropped.
    #[serde(with = "duration_str")]
    pub write_stall_timeout: Duration,
    /// Host names `/-/reload`, `/`, `/status` and `/status.json` answer to,
    /// besides IP addresses and `localhost` (a defence against DNS
    /// rebinding). The scrape and health endpoints answer to any.
    pub allowed_hosts: Vec<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen_address: format!(":{DEFAULT_PORT}"),
            telemetry_path: "/metrics".into(),
            max_connections: 1024,
            max_connections_per_source: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            write_stall_timeout: Duration::from_secs(10),
            allowed_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Compute Optimizer only (e.g. a VPC interface endpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// STS, for the `role_arn` hop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sts_endpoint_url: Option<String>,
    /// AWS Organizations, for account names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organizations_endpoint_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// Treated as a secret: never printed or logged.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "redacted")]
    pub external_id: Option<String>,
    /// A file holding the external ID (e.g. a mounted Kubernetes Secret),
    /// read at every load; relative to the config file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id_file: Option<PathBuf>,
    /// What `external_id_file` held at load. Kept apart from `external_id`
    /// so the configuration stays as written: validating it again (after
    /// the `--web.*` flags, on every reload) sees one key set, not two.
    /// Part of equality, so a changed file rebuilds the clients on reload.
    #[serde(skip)]
    pub external_id_from_file: Option<String>,
    pub session_name: String,
    /// Attempts per page, the first included.
    pub max_attempts: u32,
    /// First delay between attempts; doubles each time, with full jitter.
    #[serde(with = "duration_str")]
    pub retry_backoff: Duration,
    /// Deadline of one HTTP attempt.
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    /// Also list account names from AWS Organizations.
    pub organizations: bool,
    /// How often to walk the organisation (names, OUs, tags).
    #[serde(with = "duration_str")]
    pub organizations_interval: Duration,
    /// The exporter's own ceiling on AWS Organizations requests, retries
    /// included: Organizations throttles hard and shares its quota with
    /// every other tool in the management account.
    pub organizations_requests_per_second: f64,
    /// Tag keys to read for every account (`ListTagsForResource`), each a
    /// `tag_<key>` label on `aws_compute_optimizer_account_info`.
    pub account_tags: Vec<String>,
    /// Names, OUs and tags learned longer ago than this no longer count as
    /// complete, whether restored from `--storage.path` or kept through
    /// failed walks. Unset: three times `organizations_interval`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "optional_duration_str"
    )]
    pub organizations_max_age: Option<Duration>,
    /// Also watch Compute Optimizer Automation's per-account enrollment.
    pub automation: bool,
    /// How often to list Automation's accounts. Unset: `poll.interval`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "optional_duration_str"
    )]
    pub automation_interval: Option<Duration>,
    /// Compute Optimizer Automation only (a VPC endpoint, a stand-in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automation_endpoint_url: Option<String>,
    /// Where Automation is asked; unset: `region`. Automation is regional,
    /// and not in every region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automation_region: Option<String>,
}

impl AwsConfig {
    /// `organizations_max_age`, or its default.
    pub fn organizations_max_age(&self) -> Duration {
        self.organizations_max_age
            .unwrap_or(self.organizations_interval * 3)
    }

    /// The external ID sent to STS: `external_id`, or what
    /// `external_id_file` held when the configuration was loaded.
    pub fn external_id(&self) -> Option<&str> {
        self.external_id
            .as_deref()
            .or(self.external_id_from_file.as_deref())
    }

    /// Whether `other` needs new AWS clients or retry settings: every key
    /// but the organisation walk's and the Automation producer's own.
    pub fn clients_differ(&self, other: &AwsConfig) -> bool {
        let without_walk = |c: &AwsConfig| AwsConfig {
            organizations: false,
            organizations_interval: Duration::ZERO,
            organizations_requests_per_second: 0.0,
            account_tags: Vec::new(),
            organizations_max_age: None,
            automation: false,
            automation_interval: None,
            ..c.clone()
        };
        without_walk(self) != without_walk(other)
    }

    /// Whether the Automation producer's own keys differ.
    pub fn automation_differs(&self, other: &AwsConfig) -> bool {
        self.automation != other.automation || self.automation_interval != other.automation_interval
    }

    /// Whether the organisation walk's own keys differ.
    pub fn walk_differs(&self, other: &AwsConfig) -> bool {
        self.organizations != other.organizations
            || self.organizations_interval != other.organizations_interval
            || self.organizations_requests_per_second != other.organizations_requests_per_second
            || self.account_tags != other.account_tags
            || self.organizations_max_age != other.organizations_max_age
    }
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            region: None,
            profile: None,
            endpoint_url: None,
            sts_endpoint_url: None,
            organizations_endpoint_url: None,
            role_arn: None,
            external_id: None,
            external_id_file: None,
            external_id_from_file: None,
            session_name: "compute-optimizer-exporter".into(),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(1),
            request_timeout: Duration::from_secs(20),
            organizations: false,
            organizations_interval: Duration::from_secs(3600),
            organizations_requests_per_second: 5.0,
            account_tags: Vec::new(),
            organizations_max_age: None,
            automation: false,
            automation_interval: None,
            automation_endpoint_url: None,
            automation_region: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    #[serde(with = "duration_str")]
    pub interval: Duration,
    /// Deadline of one whole poll; when not set it is `interval`.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    pub page_size: u32,
    /// Server-side filter; empty means every status.
    pub statuses: Vec<String>,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            interval: Duration::from_secs(300),
            // As long as polls may take without overlapping: 30,000 accounts
            // at 200 ms a page take 60 s, and a default must not fail them.
            timeout: Duration::from_secs(300),
            page_size: 100,
            statuses: Vec::new(),
        }
    }
}

impl PollConfig {
    /// The status filter as typed values (validated at load time).
    pub fn status_filter(&self) -> Vec<Status> {
        self.statuses
            .iter()
            .filter_map(|s| Status::parse_known(s))
            .collect()
    }
}

impl Config {
    /// `--demo` without a config file: the simulated organisation moves every
    /// poll, so poll often, and show its simulated account names.
    pub fn demo() -> Config {
        let mut c = Config::default();
        c.poll.interval = Duration::from_secs(15);
        c.poll.timeout = Duration::from_secs(10);
        c.aws.organizations = true;
        c.aws.organizations_interval = Duration::from_secs(60);
        c.aws.organizations_requests_per_second = 200.0;
        c.aws.account_tags = vec!["team".into(), "cost-center".into()];
        c.aws.automation = true;
        c
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(path, &text)?;
        config.read_external_id_files(path, &text)?;
        Ok(config)
    }

    /// Reads every `external_id_file`, for `[aws]` and every organisation, so every load (and so every reload) reads the files
    /// afresh. The value is never part of an error.
    fn read_external_id_files(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        read_external_id_file(&mut self.aws, "aws", path, text)?;
        for (i, org) in self.organization.iter_mut().enumerate() {
            read_external_id_file(&mut org.aws, &format!("organization[{i}]"), path, text)?;
        }
        Ok(())
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let parse_error = |key: Option<String>, err: &toml::de::Error| {
            let (line, column) = match err.span() {
                Some(span) => {
                    let (l, c) = line_col(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                key,
                msg: one_line(err.message()),
            }
        };
        let de = toml::Deserializer::parse(text).map_err(|e| parse_error(None, &e))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let mut err = parse_error(Some(key.clone()), e.inner());
            if SECRET_KEYS.contains(&key.as_str())
                && let ConfigError::Parse { msg, .. } = &mut err
            {
                *msg = without_values(msg);
            }
            err
        })?;
        let mut config = config;
        // Defaults, then validation: an unset timeout is the interval.
        if line_of_key(text, "poll.timeout").is_none() {
            config.poll.timeout = config.poll.interval;
        }
        config.resolve_organizations(path, text)?;
        config
            .validate()
            .map_err(|(key, msg)| ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of_key(text, &key),
                key,
                msg,
            })?;
        Ok(config)
    }

    /// The configuration as TOML, secrets redacted; loadable again (what
    /// an `external_id_file` holds is never part of it).
    pub fn effective_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (s, d) in [
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
            ("1d", Duration::from_secs(86400)),
        ] {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        for bad in ["", "5", "m", "5x", "-5s", "5 m", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn listen_address_forms() {
        assert_eq!(
            parse_listen_address(":9746").unwrap(),
            ListenAddress::Any(9746)
        );
        assert_eq!(
            parse_listen_address("[::1]:80").unwrap(),
            ListenAddress::Addr("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            parse_listen_address("localhost:9746").unwrap(),
            ListenAddress::Host("localhost".into(), 9746)
        );
        for bad in [
            "localhost",
            ":",
            ":99999",
            "http://x:80",
            "a b:80",
            "[::1:80",
        ] {
            assert!(parse_listen_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::parse(Path::new("x.toml"), "").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.poll.interval, Duration::from_secs(300));
        assert_eq!(c.poll.timeout, Duration::from_secs(300));
        assert_eq!(c.poll.page_size, 100);
        assert_eq!(c.web.listen_address, ":9746");
    }

    #[test]
    fn the_default_timeout_polls_a_large_organisation() {
        // 30,000 accounts, 300 pages at 200 ms each: 60 s of paging.
        let c = Config::parse(Path::new("x.toml"), "").unwrap();
        assert!(
            c.poll.timeout >= Duration::from_secs(60) * 5 / 4,
            "{:?} leaves no margin for a 60 s poll",
            c.poll.timeout
        );
    }

    #[test]
    fn an_unset_timeout_follows_a_short_interval() {
        let c = Config::parse(Path::new("x.toml"), "[poll]\ninterval = \"10s\"\n").unwrap();
        assert_eq!(c.poll.timeout, Duration::from_secs(10));
        let err = Config::parse(
            Path::new("x.toml"),
            "[poll]\ninterval = \"10s\"\ntimeout = \"60s\"\n",
        );
        assert!(err.is_err());
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_quoted() {
        for value in [
            "98765432109876",
            "[\"s3cr3t-list\"]",
            "{ a = \"s3cr3t-table\" }",
            "1.5e300",
        ] {
            let text =
                format!("[aws]\nrole_arn = \"arn:aws:iam::1:role/r\"\nexternal_id = {value}\n");
            let err = Config::parse(Path::new("x.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(err.contains("aws.external_id"), "{err}");
            for secret in ["98765432109876", "s3cr3t", "1.5e300"] {
                assert!(!err.contains(secret), "{value}: {err}");
            }
        }
        assert_eq!(
            without_values("invalid type: integer `12`, expected a string"),
            "invalid type: integer, expected a string"
        );
    }

    #[test]
    fn effective_config_hides_the_external_id() {
        let c = Config::parse(
            Path::new("x.toml"),
            "[aws]\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\nexternal_id = \"hunter2\"\n",
        )
        .unwrap();
        let out = c.effective_toml();
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("external_id = \"<secret>\""), "{out}");
        // The printed config is itself a valid config.
        assert!(Config::parse(Path::new("y.toml"), &out.replace("<secret>", "a-secret")).is_ok());
    }
}
