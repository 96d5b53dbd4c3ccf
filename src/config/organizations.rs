//! `[[organization]]` tables: each an organisation's AWS settings over
//! `[aws]`'s, and the per-organisation configurations the fleet runs.
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use super::location::{line_of_key, one_line};
use super::secret::without_values;
use super::validate::ORGANIZATION_NAME_RULE;
use super::{AwsConfig, Config, ConfigError, PollConfig, PollOptions};

/// One `[[organization]]` table: a name (the `organization` label's value)
/// and every `aws.*` key, each defaulting to `[aws]`'s.
#[derive(Debug, Clone, Serialize)]
pub struct Organization {
    pub name: String,
    #[serde(flatten)]
    pub aws: AwsConfig,
    /// The table as written, merged over `[aws]` once the file is parsed.
    #[serde(skip)]
    pub(crate) table: toml::Table,
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

impl Config {
    /// Each `[[organization]]` table merged over `[aws]`, then read as the
    /// AWS settings it stands for: a key the table sets wins, every other
    /// comes from `[aws]` (or its default). The two external ID keys go
    /// together: a table that sets one does not inherit the other.
    pub(crate) fn resolve_organizations(
        &mut self,
        path: &Path,
        text: &str,
    ) -> Result<(), ConfigError> {
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
    /// settings: its own AWS settings and `[poll]`, and nothing of `[web]`.
    pub fn organizations(&self) -> Vec<(Option<String>, OrgSettings)> {
        let one = |aws: &AwsConfig| OrgSettings {
            aws: aws.clone(),
            poll: self.poll.clone(),
        };
        if self.organization.is_empty() {
            return vec![(None, one(&self.aws))];
        }
        self.organization
            .iter()
            .map(|o| (Some(o.name.clone()), one(&o.aws)))
            .collect()
    }
}

/// One organisation's settings, all its producers and clients see: its AWS
/// settings (a table's over `[aws]`'s) and `[poll]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgSettings {
    pub aws: AwsConfig,
    pub poll: PollConfig,
}

impl OrgSettings {
    /// What one poll, and every listing, takes from them.
    pub fn poll_options(&self) -> PollOptions {
        PollOptions::new(&self.aws, &self.poll)
    }
}
