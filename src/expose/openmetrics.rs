//! OpenMetrics 1.0 beside the Prometheus text format 0.0.4.
//!
//! Prometheus (2.x and 3.x) asks for `application/openmetrics-text` first;
//! other scrapers, curl and browsers get the text format. The two differ
//! only in metadata and in the end of the body, never in a sample line:
//!
//! * a counter's family is named without `_total` (its samples keep it);
//! * a gauge named `*_info` (always the constant 1 here) is an `info`
//!   family named without `_info`;
//! * `# UNIT` follows when the family's name ends in a unit (`_seconds`,
//!   `_bytes`);
//! * `"` is escaped in `# HELP` as in label values;
//! * the body ends with `# EOF`.
//!
//! So the cached series keep one copy of every sample, and only the
//! metadata lines exist in both forms (see [`crate::expose::exposition`]).

use std::fmt::Write as _;

use prometheus::proto::{MetricFamily, MetricType};

/// Exact Content-Type of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Exact Content-Types of OpenMetrics, by the version asked for.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const OPENMETRICS_0_0_1_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=0.0.1; charset=utf-8";

/// The line that ends an OpenMetrics body.
pub const EOF: &str = "# EOF\n";

/// Which exposition a scrape gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

/// The format to serve for an `Accept` header, and its exact Content-Type:
/// the acceptable type with the highest `q` (the first listed among
/// equals), as client_golang negotiates. OpenMetrics versions 1.0.0 and
/// 0.0.1 (the same body here) are served; anything else, or no header,
/// gets the text format 0.0.4.
pub fn negotiate(accept: Option<&str>) -> (Format, &'static str) {
    let text = (Format::Text, TEXT_CONTENT_TYPE);
    let Some(accept) = accept else {
        return text;
    };
    let mut best: Option<(f32, (Format, &'static str))> = None;
    for media in accept.split(',') {
        let mut params = media.split(';');
        let kind = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let (mut q, mut version) = (1.0f32, None);
        for p in params {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                // An unreadable weight makes the type unacceptable.
                "q" => {
                    q = v
                        .parse()
                        .ok()
                        .filter(|q: &f32| q.is_finite())
                        .unwrap_or(0.0)
                }
                "version" => version = Some(v.to_owned()),
                _ => {}
            }
        }
        let served = match (kind.as_str(), version.as_deref()) {
            ("application/openmetrics-text", None | Some("1.0.0")) => {
                (Format::OpenMetrics, OPENMETRICS_CONTENT_TYPE)
            }
            ("application/openmetrics-text", Some("0.0.1")) => {
                (Format::OpenMetrics, OPENMETRICS_0_0_1_CONTENT_TYPE)
            }
            ("text/plain", _) => text,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, served));
        }
    }
    best.map_or(text, |(_, served)| served)
}

/// The kinds of family the exporter writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

/// A family's `# HELP` and `# TYPE` lines in the text format 0.0.4, as
/// the `prometheus` crate writes them.
pub fn text_header(out: &mut String, name: &str, help: &str, kind: Kind) {
    let _ = write!(out, "# HELP {name} ");
    escape(out, help, false);
    let _ = writeln!(out, "\n# TYPE {name} {}", text_type(kind));
}

/// The same family's metadata in OpenMetrics (see the module comment).
pub fn openmetrics_header(out: &mut String, name: &str, help: &str, kind: Kind) {
    let (family, kind) = match kind {
        Kind::Counter => (name.strip_suffix("_total").unwrap_or(name), "counter"),
        Kind::Gauge => match name.strip_suffix("_info") {
            Some(base) => (base, "info"),
            None => (name, "gauge"),
        },
        Kind::Histogram => (name, "histogram"),
    };
    let _ = write!(out, "# HELP {family} ");
    escape(out, help, true);
    let _ = writeln!(out, "\n# TYPE {family} {kind}");
    if kind != "info"
        && let Some(unit) = ["seconds", "bytes"]
            .into_iter()
            .find(|u| family.strip_suffix(u).is_some_and(|b| b.ends_with('_')))
    {
        let _ = writeln!(out, "# UNIT {family} {unit}");
    }
}

fn text_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Gauge => "gauge",
        Kind::Counter => "counter",
        Kind::Histogram => "histogram",
    }
}

/// Escapes `\` and newlines, and `"` when asked (label values; OpenMetrics
/// help text).
pub fn escape(out: &mut String, value: &str, quote: bool) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// The exporter's own metrics (a `prometheus` registry's families) in
/// OpenMetrics, without the closing `# EOF` (it ends the whole body).
pub fn encode(families: &[MetricFamily]) -> Vec<u8> {
    let mut out = String::with_capacity(8 * 1024);
    for family in families {
        let name = family.name();
        let kind = match family.get_field_type() {
            MetricType::COUNTER => Kind::Counter,
            MetricType::GAUGE => Kind::Gauge,
            MetricType::HISTOGRAM => Kind::Histogram,
            // The exporter registers neither.
            MetricType::SUMMARY | MetricType::UNTYPED => continue,
        };
        openmetrics_header(&mut out, name, family.help(), kind);
        for m in family.get_metric() {
            let labels = m.get_label();
            let sample = |out: &mut String, suffix: &str, extra: Option<(&str, &str)>, v: f64| {
                out.push_str(name);
                out.push_str(suffix);
                let mut sep = '{';
                for l in labels {
                    out.push(sep);
                    out.push_str(l.name());
                    out.push_str("=\"");
                    escape(out, l.value(), true);
                    out.push('"');
                    sep = ',';
                }
                if let Some((k, v)) = extra {
                    let _ = write!(out, "{sep}{k}=\"{v}\"");
                    sep = ',';
                }
                if sep == ',' {
                    out.push('}');
                }
                out.push(' ');
                number(out, v);
                out.push('\n');
            };
            match kind {
                Kind::Counter => {
                    let suffix = if name.ends_with("_total") {
                        ""
                    } else {
                        "_total"
                    };
                    sample(&mut out, suffix, None, m.get_counter().get_value());
                }
                Kind::Gauge => sample(&mut out, "", None, m.get_gauge().get_value()),
                Kind::Histogram => {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        if b.upper_bound().is_infinite() {
                            continue;
                        }
                        let mut le = String::new();
                        float(&mut le, b.upper_bound());
                        sample(
                            &mut out,
                            "_bucket",
                            Some(("le", &le)),
                            b.cumulative_count() as f64,
                        );
                    }
                    let count = h.get_sample_count() as f64;
                    sample(&mut out, "_bucket", Some(("le", "+Inf")), count);
                    sample(&mut out, "_sum", None, h.get_sample_sum());
                    sample(&mut out, "_count", None, count);
                }
            }
        }
    }
    out.into_bytes()
}

/// A sample value: integers as integers, other numbers as Rust writes them
/// (shortest round-trip), and OpenMetrics' spellings of the special values.
fn number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A float as OpenMetrics writes bucket bounds: always with a fraction
/// (`1.0`, as client_golang).
fn float(out: &mut String, v: f64) {
    number(out, v);
    if v.is_finite() && v.fract() == 0.0 && !out.contains(['.', 'e']) {
        out.push_str(".0");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS_3: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn openmetrics_only_when_preferred() {
        let om = (Format::OpenMetrics, OPENMETRICS_CONTENT_TYPE);
        let text = (Format::Text, TEXT_CONTENT_TYPE);
        for (accept, want) in [
            (Some(PROMETHEUS_3), om),
            (Some(PROMETHEUS_2), om),
            (None, text),
            (Some("*/*"), text),
            (Some("text/html,application/xhtml+xml,*/*;q=0.8"), text),
            (Some("text/plain;version=0.0.4"), text),
            (
                Some("application/openmetrics-text;version=0.0.1"),
                (Format::OpenMetrics, OPENMETRICS_0_0_1_CONTENT_TYPE),
            ),
            (
                Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
                text,
            ),
            (
                Some("text/plain;q=0.5, Application/OpenMetrics-Text; Version=\"1.0.0\""),
                om,
            ),
            // An unknown version, a refused type, an unreadable weight.
            (Some("application/openmetrics-text;version=2.0.0"), text),
            (Some("application/openmetrics-text;q=0"), text),
            (Some("application/openmetrics-text;q=high"), text),
            (Some(""), text),
        ] {
            assert_eq!(negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn metadata_follows_the_openmetrics_naming_rules() {
        let header = |name: &str, kind: Kind| {
            let mut s = String::new();
            openmetrics_header(&mut s, name, "say \"hi\"\\", kind);
            s
        };
        assert_eq!(
            header("a_requests_total", Kind::Counter),
            "# HELP a_requests say \\\"hi\\\"\\\\\n# TYPE a_requests counter\n"
        );
        assert_eq!(
            header("process_cpu_seconds_total", Kind::Counter),
            "# HELP process_cpu_seconds say \\\"hi\\\"\\\\\n# TYPE process_cpu_seconds counter\n# UNIT process_cpu_seconds seconds\n"
        );
        assert!(header("x_build_info", Kind::Gauge).contains("# TYPE x_build info\n"));
        assert!(!header("x_build_info", Kind::Gauge).contains("UNIT"));
        assert!(header("x_memory_bytes", Kind::Gauge).ends_with("# UNIT x_memory_bytes bytes\n"));
        assert!(!header("x_nanoseconds", Kind::Gauge).contains("UNIT"));
        let mut text = String::new();
        text_header(&mut text, "a_total", "say \"hi\"\n", Kind::Counter);
        assert_eq!(
            text,
            "# HELP a_total say \"hi\"\\n\n# TYPE a_total counter\n"
        );
    }

    #[test]
    fn the_registry_encodes_with_family_names_units_and_canonical_bounds() {
        let r = prometheus::Registry::new();
        let c = prometheus::IntCounterVec::new(
            prometheus::Opts::new("x_requests_total", "Requests."),
            &["code"],
        )
        .unwrap();
        c.with_label_values(&["a\"b"]).inc_by(3);
        let h = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("x_duration_seconds", "Took.").buckets(vec![0.5, 1.0]),
        )
        .unwrap();
        h.observe(0.7);
        let g = prometheus::Gauge::new("x_up", "Up.").unwrap();
        g.set(f64::INFINITY);
        r.register(Box::new(c)).unwrap();
        r.register(Box::new(h)).unwrap();
        r.register(Box::new(g)).unwrap();
        let got = String::from_utf8(encode(&r.gather())).unwrap();
        assert_eq!(
            got,
            "# HELP x_duration_seconds Took.\n# TYPE x_duration_seconds histogram\n# UNIT x_duration_seconds seconds\n\
             x_duration_seconds_bucket{le=\"0.5\"} 0\nx_duration_seconds_bucket{le=\"1.0\"} 1\n\
             x_duration_seconds_bucket{le=\"+Inf\"} 1\nx_duration_seconds_sum 0.7\nx_duration_seconds_count 1\n\
             # HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{code=\"a\\\"b\"} 3\n\
             # HELP x_up Up.\n# TYPE x_up gauge\nx_up +Inf\n"
        );
    }
}
