//! The external ID, the configuration's one secret: read from its file,
//! checked against what STS accepts, and never printed, not even in an
//! error.
use std::path::Path;

use serde::Serializer;

use super::location::line_of_key;
use super::{AwsConfig, ConfigError};

/// Reads `aws.external_id_file` into `external_id_from_file` (`table`
/// names where the key is: `aws` or `organization[i]`).
pub(crate) fn read_external_id_file(
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
pub(crate) fn folder_of(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether this process runs in a Kubernetes pod (the variable every pod
/// gets), where a missing file is most often a Secret never created.
pub(crate) fn in_kubernetes() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// What STS accepts as an external ID (`[\w+=,.@:/-]{2,1224}`).
pub(crate) const EXTERNAL_ID_RULE: &str = "2-1224 characters of letters, digits and +=,.@:/-_";

pub(crate) fn valid_external_id(id: &str) -> bool {
    (2..=1224).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c))
}

pub(crate) fn redacted<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<secret>"),
        None => s.serialize_none(),
    }
}

/// Keys whose values are secrets: never printed, not even in an error.
pub(crate) const SECRET_KEYS: &[&str] = &["aws.external_id"];

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
