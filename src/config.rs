//! Configuration: a TOML file with `[web]`, `[aws]` and `[poll]` sections,
//! and any number of `[[organization]]` tables, each an organisation's AWS
//! settings over `[aws]`'s.
//!
//! Loading follows blackbox_exporter: unknown keys are errors, defaults are
//! filled in first, then every rule is validated, and every error is one line
//! naming the file, the key and (where the file has it) the line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::Status;

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

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn key_prefix(key: &Option<String>) -> String {
    match key {
        Some(k) if !k.is_empty() && k != "." => format!("{k}: "),
        _ => String::new(),
    }
}

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

/// One `[[organization]]` table: a name (the `organization` label's value)
/// and every `aws.*` key, each defaulting to `[aws]`'s.
#[derive(Debug, Clone, Serialize)]
pub struct Organization {
    pub name: String,
    #[serde(flatten)]
    pub aws: AwsConfig,
    /// The table as written, merged over `[aws]` once the file is parsed.
    #[serde(skip)]
    table: toml::Table,
}

impl PartialEq for Organization {
    fn eq(&self, other: &Organization) -> bool {
        self.name == other.name && self.aws == other.aws
    }
}

impl<'de> Deserialize<'de> for Organization {
    /// Only the table: its keys fall back to `[aws]`, which serde cannot
    /// see from here ([`Config::parse`] resolves them).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Organization, D::Error> {
        Ok(Organization {
            name: String::new(),
            aws: AwsConfig::default(),
            table: toml::Table::deserialize(d)?,
        })
    }
}

/// What an `[[organization]]` name may be: a label value that reads well in
/// a file name, a URL and a route matcher.
const ORGANIZATION_NAME_RULE: &str = "1-64 characters of letters, digits and _.-";

fn valid_organization_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
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
    /// but the organisation walk's own.
    pub fn clients_differ(&self, other: &AwsConfig) -> bool {
        let without_walk = |c: &AwsConfig| AwsConfig {
            organizations: false,
            organizations_interval: Duration::ZERO,
            organizations_requests_per_second: 0.0,
            account_tags: Vec::new(),
            organizations_max_age: None,
            ..c.clone()
        };
        without_walk(self) != without_walk(other)
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

/// Reads `aws.external_id_file` into `external_id_from_file` (`table`
/// names where the key is: `aws` or `organization[i]`).
fn read_external_id_file(
    aws: &mut AwsConfig,
    table: &str,
    path: &Path,
    text: &str,
) -> Result<(), ConfigError> {
    let Some(file) = &aws.external_id_file else {
        return Ok(());
    };
    let file = path.parent().unwrap_or(Path::new(".")).join(file);
    let key = format!("{table}.external_id_file");
    let invalid = |msg: String| ConfigError::Invalid {
        path: path.to_owned(),
        line: line_of_key(text, &key),
        key: key.clone(),
        msg,
    };
    let id = std::fs::read_to_string(&file).map_err(|e| {
        invalid(match e.kind() {
            // Most often a Secret that was never created, which
            // Kubernetes mounts as an empty folder when optional.
            std::io::ErrorKind::NotFound if in_kubernetes() => format!(
                "{} does not exist: create the Secret mounted at {} \
                 (kubectl create secret generic ... --from-literal=external-id=...), \
                 or remove {key}",
                file.display(),
                folder_of(&file).display()
            ),
            std::io::ErrorKind::NotFound => format!(
                "{} does not exist: create it in {} holding the external ID, or remove {key}",
                file.display(),
                folder_of(&file).display()
            ),
            _ => format!("cannot read {}: {e}", file.display()),
        })
    })?;
    // A Secret created with `--from-file` often ends in a newline.
    let id = id.trim_end_matches(['\n', '\r']);
    if !valid_external_id(id) {
        return Err(invalid(format!(
            "{} must hold one external ID: {EXTERNAL_ID_RULE}",
            file.display()
        )));
    }
    aws.external_id_from_file = Some(id.to_owned());
    Ok(())
}

/// The folder a file is in, `.` for a bare name (never an empty string).
fn folder_of(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether this process runs in a Kubernetes pod (the variable every pod
/// gets), where a missing file is most often a Secret never created.
fn in_kubernetes() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// What STS accepts as an external ID (`[\w+=,.@:/-]{2,1224}`).
const EXTERNAL_ID_RULE: &str = "2-1224 characters of letters, digits and +=,.@:/-_";

fn valid_external_id(id: &str) -> bool {
    (2..=1224).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c))
}

/// The label name for a tag key: `tag_` and the key with every character
/// outside `[a-zA-Z0-9_]` replaced by `_` (`cost-center` → `tag_cost_center`).
pub fn tag_label(key: &str) -> String {
    let mut label = String::from("tag_");
    label.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    label
}

/// `(label, key)` for each of `aws.account_tags`, sorted by label (the order
/// the exposition writes them in). Validation has refused collisions.
pub fn tag_labels(keys: &[String]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> =
        keys.iter().map(|k| (tag_label(k), k.clone())).collect();
    labels.sort();
    labels
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

/// What one poll needs to know, taken from the configuration.
#[derive(Debug, Clone)]
pub struct PollOptions {
    pub interval: Duration,
    pub timeout: Duration,
    pub page_size: u8,
    pub statuses: Vec<Status>,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub request_timeout: Duration,
    /// Only for the advice in error logs.
    pub role_arn: Option<String>,
    pub endpoint_url: Option<String>,
}

impl PollOptions {
    pub fn from_config(c: &Config) -> PollOptions {
        PollOptions {
            interval: c.poll.interval,
            timeout: c.poll.timeout,
            // Validated to 1..=100 at load time.
            page_size: c.poll.page_size.clamp(1, 100) as u8,
            statuses: c.poll.status_filter(),
            max_attempts: c.aws.max_attempts.max(1),
            retry_backoff: c.aws.retry_backoff,
            request_timeout: c.aws.request_timeout,
            role_arn: c.aws.role_arn.clone(),
            endpoint_url: c.aws.endpoint_url.clone(),
        }
    }
}

const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

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

    /// Each `[[organization]]` table merged over `[aws]`, then read as the
    /// AWS settings it stands for: a key the table sets wins, every other
    /// comes from `[aws]` (or its default). The two external ID keys go
    /// together: a table that sets one does not inherit the other.
    fn resolve_organizations(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        if self.organization.is_empty() {
            return Ok(());
        }
        let defaults = toml::from_str::<toml::Table>(text)
            .ok()
            .and_then(|mut root| match root.remove("aws") {
                Some(toml::Value::Table(t)) => Some(t),
                _ => None,
            })
            .unwrap_or_default();
        for (i, org) in self.organization.iter_mut().enumerate() {
            let invalid = |key: String, msg: String| ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of_key(text, &key)
                    .or_else(|| line_of_key(text, &format!("organization[{i}]"))),
                key,
                msg,
            };
            let mut table = org.table.clone();
            org.name = match table.remove("name") {
                Some(toml::Value::String(name)) => name,
                Some(_) => {
                    return Err(invalid(
                        format!("organization[{i}].name"),
                        format!("must be a string: {ORGANIZATION_NAME_RULE}"),
                    ));
                }
                None => {
                    return Err(invalid(
                        format!("organization[{i}].name"),
                        format!(
                            "every [[organization]] needs a name, its organization label: {ORGANIZATION_NAME_RULE}"
                        ),
                    ));
                }
            };
            let mut merged = defaults.clone();
            // An external ID is one tenant's: never inherited (validation
            // refuses one in [aws] when there are tables).
            merged.remove("external_id");
            merged.remove("external_id_file");
            merged.extend(table);
            org.aws =
                serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
                    let key = format!("organization[{i}].{}", e.path());
                    let msg = one_line(&e.inner().to_string());
                    let msg = if e.path().to_string() == "external_id" {
                        without_values(&msg)
                    } else {
                        msg
                    };
                    invalid(key, msg)
                })?;
        }
        Ok(())
    }

    /// Each organisation's name (`None`: the only one, unlabelled) and its
    /// configuration as the producers see it: `[web]` and `[poll]`, and its
    /// own AWS settings as `[aws]`.
    pub fn organizations(&self) -> Vec<(Option<String>, Config)> {
        let one = |aws: &AwsConfig| Config {
            web: self.web.clone(),
            aws: aws.clone(),
            poll: self.poll.clone(),
            organization: Vec::new(),
        };
        if self.organization.is_empty() {
            return vec![(None, one(&self.aws))];
        }
        self.organization
            .iter()
            .map(|o| (Some(o.name.clone()), one(&o.aws)))
            .collect()
    }

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
        if [
            "/-/healthy",
            "/-/ready",
            "/-/reload",
            "/status",
            "/status.json",
        ]
        .contains(&w.telemetry_path.as_str())
        {
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

    /// The configuration as TOML, secrets redacted; loadable again (what
    /// an `external_id_file` holds is never part of it).
    pub fn effective_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// The rules for one set of AWS settings: `[aws]`, or an organisation's
/// (`table` is `aws` or `organization[i]`, for the keys in errors).
fn validate_aws(a: &AwsConfig, table: &str) -> Result<(), (String, String)> {
    let k = |key: &str| format!("{table}.{key}");
    let err = |key: &str, msg: String| Err((key.to_owned(), msg));
    for (key, url) in [
        (&k("endpoint_url"), &a.endpoint_url),
        (&k("sts_endpoint_url"), &a.sts_endpoint_url),
        (
            &k("organizations_endpoint_url"),
            &a.organizations_endpoint_url,
        ),
    ] {
        let Some(url) = url else { continue };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return err(key, format!("{url:?} must be an http:// or https:// URL"));
        }
    }
    if let Some(region) = &a.region
        && (region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        return err(
            &k("region"),
            format!("{region:?} is not a region name such as \"us-east-1\""),
        );
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

fn check_range(
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

/// Parses `host:port`, `[v6]:port` or Prometheus-style `:port`.
pub fn parse_listen_address(s: &str) -> Result<ListenAddress, String> {
    let bad = || {
        format!(
            "{s:?} is not a listen address such as \":{DEFAULT_PORT}\", \"127.0.0.1:{DEFAULT_PORT}\", \"[::1]:{DEFAULT_PORT}\" or \"localhost:{DEFAULT_PORT}\""
        )
    };
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(ListenAddress::Addr(addr));
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Ok(ListenAddress::Any(port));
    }
    if is_host_name(host) && host.parse::<std::net::IpAddr>().is_err() {
        return Ok(ListenAddress::Host(host.to_owned(), port));
    }
    Err(bad())
}

/// Where the server listens, as `web.listen_address` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// `:port`: every address, IPv4 and IPv6 (as Go's `:port`).
    Any(u16),
    Addr(SocketAddr),
    /// A host name, resolved when the server binds.
    Host(String, u16),
}

/// A DNS host name: dot-separated labels of letters, digits and hyphens.
fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Parses a Prometheus-style duration: `90s`, `5m`, `1h30m`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as \"30s\", \"5m\" or \"1h30m\"");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis_per = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let add = n.checked_mul(millis_per).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_millis(add))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Formats a duration the way `parse_duration` reads it.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

mod duration_str {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

mod optional_duration_str {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

fn redacted<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<secret>"),
        None => s.serialize_none(),
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The line where a dotted key such as `poll.page_size` is set, if it is.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        // `organization[2]`: the third table of an array of tables.
        let (part, index) = match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
            Some((name, i)) => (name, Some(i.parse::<usize>().ok()?)),
            None => (part, None),
        };
        let (_, mut value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
        if let Some(i) = index {
            match value.get_ref() {
                DeValue::Array(items) => value = items.get(i)?,
                _ => return None,
            }
        }
        if parts.peek().is_none() {
            return Some(line_col(text, value.span().start).0);
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return None,
        }
    }
    None
}

/// Keys whose values are secrets: never printed, not even in an error.
const SECRET_KEYS: &[&str] = &["aws.external_id"];

/// A serde message without the value it quotes: "invalid type: integer
/// `123`, expected a string" becomes "invalid type: integer, expected a
/// string" (and likewise `string "..."`). For errors about secrets, whatever
/// their type or shape; other messages (field names) are left as they are.
pub fn without_values(msg: &str) -> String {
    let Some(at) = ["invalid type: ", "invalid value: "]
        .iter()
        .find_map(|p| msg.find(p).map(|i| i + p.len()))
    else {
        return msg.to_owned();
    };
    let rest = &msg[at..];
    let kind_end = rest.find([' ', ',']).unwrap_or(rest.len());
    let tail = rest.find(", expected").map_or("", |i| &rest[i..]);
    format!("{}{}{tail}", &msg[..at], &rest[..kind_end])
}

/// Keeps messages to one line (toml's own messages sometimes wrap).
fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    // serde names our Rust types; users know sections as tables.
    ["WebConfig", "AwsConfig", "PollConfig", "Config"]
        .iter()
        .fold(s, |s, t| s.replace(&format!("struct {t}"), "a table"))
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
