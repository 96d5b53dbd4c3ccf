//! Tag keys (`aws.account_tags`) and the `tag_<key>` labels they become.

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
