//! Where in the file: lines, columns and keys for the one-line errors, and
//! messages kept to one line.

pub(crate) fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

pub(crate) fn key_prefix(key: &Option<String>) -> String {
    match key {
        Some(k) if !k.is_empty() && k != "." => format!("{k}: "),
        _ => String::new(),
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The line where a dotted key such as `poll.page_size` is set, if it is.
pub(crate) fn line_of_key(text: &str, key: &str) -> Option<usize> {
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

/// Keeps messages to one line (toml's own messages sometimes wrap).
pub(crate) fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    // serde names our Rust types; users know sections as tables.
    ["WebConfig", "AwsConfig", "PollConfig", "Config"]
        .iter()
        .fold(s, |s, t| s.replace(&format!("struct {t}"), "a table"))
}
