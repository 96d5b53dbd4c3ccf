//! IAM for the stand-ins: who signed a request, and whether the policies
//! shipped in `deploy/iam/` let them do it.
//!
//! AWS refuses what IAM does not allow, so the stand-ins do too: every
//! request is evaluated against the policies of the principal whose key
//! signed it (explicit deny wins, no allow is a deny), AssumeRole also
//! against the target role's trust policy with the request's external ID,
//! and the organisation-wide calls are refused to any account but the
//! management account. Conditions other than `StringEquals` are never
//! satisfied, so a policy the stand-in cannot read denies rather than
//! allows.
//!
//! The two arrangements of `deploy/iam/README.md`:
//! * [`Install::Direct`]: the exporter's role sits in the management account
//!   with `reader-permissions.json` attached, and no hop.
//! * [`Install::Hop`]: the exporter's role sits in the tooling account with
//!   `exporter-assume-reader.json`, and assumes the reader role
//!   (`reader-trust.json`, `reader-permissions.json`) in the management
//!   account.
//!
//! Long-term keys (anything but a session key this STS issued) and web
//! identity sessions are the exporter's role of the install. A web identity
//! token's claims (`iss`, `sub`, `aud`) are checked against the role's trust
//! as IAM checks them; its signature is not (the stand-in has no provider
//! keys), nor that the provider sits in the role's account.

use serde_json::Value;

pub const MANAGEMENT_ACCOUNT: &str = "444455556666";
pub const TOOLING_ACCOUNT: &str = "111122223333";
/// The exporter's role in the direct install.
pub const EXPORTER_ROLE_IN_MANAGEMENT: &str =
    "arn:aws:iam::444455556666:role/compute-optimizer-exporter";
/// The exporter's role in the hop install.
pub const EXPORTER_ROLE: &str = "arn:aws:iam::111122223333:role/compute-optimizer-exporter";
pub const READER_ROLE: &str = "arn:aws:iam::444455556666:role/compute-optimizer-exporter-reader";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Install {
    #[default]
    Direct,
    Hop,
}

/// The policy documents the stand-ins enforce.
#[derive(Clone, Debug)]
pub struct Policies {
    pub reader_permissions: Value,
    pub exporter_assume_reader: Value,
    pub reader_trust: Value,
    pub exporter_trust_irsa: Value,
}

fn shipped(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/iam")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

impl Default for Policies {
    fn default() -> Policies {
        Policies::shipped()
    }
}

impl Policies {
    /// The files in `deploy/iam/`, as shipped.
    pub fn shipped() -> Policies {
        Policies {
            reader_permissions: shipped("reader-permissions.json"),
            exporter_assume_reader: shipped("exporter-assume-reader.json"),
            reader_trust: shipped("reader-trust.json"),
            exporter_trust_irsa: shipped("exporter-trust-irsa.json"),
        }
    }

    /// The same with `action` taken out of every statement that lists it.
    pub fn without_action(mut self, action: &str) -> Policies {
        for doc in [
            &mut self.reader_permissions,
            &mut self.exporter_assume_reader,
            &mut self.reader_trust,
            &mut self.exporter_trust_irsa,
        ] {
            for statement in statements_mut(doc) {
                match statement.get_mut("Action") {
                    Some(Value::Array(list)) => list.retain(|a| a != action),
                    Some(one @ Value::String(_)) if one == action => *one = Value::Array(vec![]),
                    _ => {}
                }
            }
        }
        self
    }

    /// Every action the permission policies allow (for tests that take
    /// them away one at a time).
    pub fn allowed_actions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for doc in [&self.reader_permissions, &self.exporter_assume_reader] {
            for statement in statements(doc) {
                out.extend(strings(statement.get("Action")));
            }
        }
        out
    }

    /// The same with the reader role's trust requiring `id` instead (an
    /// organisation of its own, whose trust policy has its own ID).
    pub fn with_external_id(mut self, id: &str) -> Policies {
        for statement in statements_mut(&mut self.reader_trust) {
            if let Some(v) = statement.pointer_mut("/Condition/StringEquals/sts:ExternalId") {
                *v = Value::String(id.to_owned());
            }
        }
        self
    }

    /// The external ID the reader role's trust policy requires.
    pub fn external_id(&self) -> String {
        statements(&self.reader_trust)
            .find_map(|s| s["Condition"]["StringEquals"]["sts:ExternalId"].as_str())
            .unwrap_or_default()
            .to_owned()
    }
}

/// Who signed a request, and what their identity policy is.
#[derive(Clone, Debug)]
pub struct Principal {
    pub arn: String,
    pub account: String,
    pub policy: Value,
}

impl Principal {
    pub fn role(arn: &str, policy: &Value) -> Principal {
        Principal {
            arn: arn.to_owned(),
            account: arn.split(':').nth(4).unwrap_or_default().to_owned(),
            policy: policy.clone(),
        }
    }

    /// The exporter's own role in `install`.
    pub fn exporter(install: Install, policies: &Policies) -> Principal {
        match install {
            Install::Direct => {
                Principal::role(EXPORTER_ROLE_IN_MANAGEMENT, &policies.reader_permissions)
            }
            Install::Hop => Principal::role(EXPORTER_ROLE, &policies.exporter_assume_reader),
        }
    }

    /// Whether the identity policy allows `action` on `resource`.
    pub fn may(&self, action: &str, resource: &str, context: &[(&str, &str)]) -> bool {
        evaluate(&self.policy, action, context, |s| {
            strings(s.get("Resource"))
                .iter()
                .any(|r| matches(r, resource, false))
        })
    }
}

/// The roles AssumeRole can hand out: (trust policy, permissions).
pub fn role<'a>(policies: &'a Policies, arn: &str) -> Option<(&'a Value, &'a Value)> {
    (arn == READER_ROLE).then_some((&policies.reader_trust, &policies.reader_permissions))
}

/// Whether a trust policy lets `caller` take the role with `action`.
pub fn trusts(
    trust: &Value,
    caller: Option<&Principal>,
    action: &str,
    context: &[(&str, &str)],
) -> bool {
    evaluate(trust, action, context, |s| {
        let principal = &s["Principal"];
        if principal == "*" {
            return true;
        }
        match caller {
            Some(caller) => strings(principal.get("AWS")).iter().any(|p| {
                p == "*"
                    || *p == caller.arn
                    || *p == format!("arn:aws:iam::{}:root", caller.account)
                    || *p == caller.account
            }),
            None => false,
        }
    })
}

/// Whether a trust policy lets the web identity of `provider` (an OIDC
/// provider's host and path, as in its ARN) take the role, with the
/// token's claims as condition keys.
pub fn trusts_federated(
    trust: &Value,
    provider: &str,
    action: &str,
    context: &[(&str, &str)],
) -> bool {
    evaluate(trust, action, context, |s| {
        strings(s["Principal"].get("Federated"))
            .iter()
            .any(|p| p.ends_with(&format!(":oidc-provider/{provider}")))
    })
}

/// The provider and the condition keys of an OIDC token, as IAM derives
/// them: `<provider>:sub` and `<provider>:aud` from the JWT's claims. The
/// signature is not checked (the stand-in has no provider keys).
pub fn web_identity_context(token: &str) -> Option<(String, Vec<(String, String)>)> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?,
    )
    .ok()?;
    let provider = claims["iss"].as_str()?.strip_prefix("https://")?.to_owned();
    let mut context = vec![(
        format!("{provider}:sub"),
        claims["sub"].as_str()?.to_owned(),
    )];
    for aud in strings(Some(&claims["aud"])) {
        context.push((format!("{provider}:aud"), aud));
    }
    Some((provider, context))
}

/// An unsigned token with the claims EKS puts in a service account's
/// projected token.
pub fn web_identity_token(issuer: &str, subject: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.signature",
        b64(&serde_json::json!({"alg": "RS256", "kid": "stand-in"})),
        b64(&serde_json::json!({"iss": issuer, "sub": subject, "aud": ["sts.amazonaws.com"]}))
    )
}

/// The token of the shipped service account, from the cluster the shipped
/// IRSA trust names.
pub fn shipped_service_account_token() -> String {
    let trust = shipped("exporter-trust-irsa.json");
    let provider = strings(trust["Statement"][0]["Principal"].get("Federated"))
        .first()
        .and_then(|p| p.split(":oidc-provider/").nth(1).map(str::to_owned))
        .unwrap_or_default();
    web_identity_token(
        &format!("https://{provider}"),
        "system:serviceaccount:monitoring:compute-optimizer-exporter",
    )
}

/// IAM's evaluation for one document: denied if a matching Deny statement
/// exists, allowed if a matching Allow does, denied otherwise.
fn evaluate(
    doc: &Value,
    action: &str,
    context: &[(&str, &str)],
    applies: impl Fn(&Value) -> bool,
) -> bool {
    let matching = |effect: &str| {
        statements(doc).any(|s| {
            s["Effect"] == effect
                && strings(s.get("Action"))
                    .iter()
                    .any(|a| matches(a, action, true))
                && applies(s)
                && conditions_hold(s.get("Condition"), context)
        })
    };
    !matching("Deny") && matching("Allow")
}

fn conditions_hold(condition: Option<&Value>, context: &[(&str, &str)]) -> bool {
    let Some(condition) = condition.and_then(Value::as_object) else {
        return true;
    };
    condition.iter().all(|(operator, keys)| {
        operator == "StringEquals"
            && keys.as_object().is_some_and(|keys| {
                keys.iter().all(|(key, want)| {
                    context
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(key))
                        .is_some_and(|(_, got)| strings(Some(want)).iter().any(|w| w == got))
                })
            })
    })
}

fn statements(doc: &Value) -> impl Iterator<Item = &Value> {
    match &doc["Statement"] {
        Value::Array(list) => list.iter().collect::<Vec<_>>(),
        one @ Value::Object(_) => vec![one],
        _ => vec![],
    }
    .into_iter()
}

fn statements_mut(doc: &mut Value) -> Vec<&mut Value> {
    match &mut doc["Statement"] {
        Value::Array(list) => list.iter_mut().collect(),
        one @ Value::Object(_) => vec![one],
        _ => vec![],
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

/// IAM's wildcard match: `*` any run, `?` one character; actions are
/// case-insensitive, resources are not.
fn matches(pattern: &str, value: &str, fold_case: bool) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = if fold_case {
        (
            pattern.to_lowercase().chars().collect(),
            value.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), value.chars().collect())
    };
    // Classic two-pointer glob with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < v.len() {
        if i < p.len() && (p[i] == '?' || p[i] == v[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policies_read_as_iam_reads_them() {
        let p = Policies::shipped();
        let direct = Principal::exporter(Install::Direct, &p);
        assert!(direct.may(
            "compute-optimizer:GetEnrollmentStatusesForOrganization",
            "*",
            &[]
        ));
        assert!(!direct.may("sts:AssumeRole", READER_ROLE, &[]));
        let hop = Principal::exporter(Install::Hop, &p);
        assert!(hop.may("sts:AssumeRole", READER_ROLE, &[]));
        assert!(!hop.may("sts:AssumeRole", EXPORTER_ROLE_IN_MANAGEMENT, &[]));
        assert!(!hop.may("compute-optimizer:GetEnrollmentStatus", "*", &[]));
        let id = p.external_id();
        let (trust, _) = role(&p, READER_ROLE).unwrap();
        assert!(trusts(
            trust,
            Some(&hop),
            "sts:AssumeRole",
            &[("sts:ExternalId", &id)]
        ));
        assert!(!trusts(
            trust,
            Some(&hop),
            "sts:AssumeRole",
            &[("sts:ExternalId", "other")]
        ));
        assert!(!trusts(trust, Some(&hop), "sts:AssumeRole", &[]));
        assert!(!trusts(
            trust,
            Some(&direct),
            "sts:AssumeRole",
            &[("sts:ExternalId", &id)]
        ));
        let gone = p.clone().without_action("organizations:ListRoots");
        assert!(!Principal::exporter(Install::Direct, &gone).may(
            "organizations:ListRoots",
            "*",
            &[]
        ));
        assert!(matches(
            "organizations:List*",
            "organizations:ListRoots",
            true
        ));
        assert!(!matches(
            "organizations:List*",
            "organizations:DescribeAccount",
            true
        ));
    }
}
