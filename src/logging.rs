//! Log setup: logfmt (the Prometheus ecosystem's default) or JSON, to stderr.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// aws-config's credential providers, whose warnings append a Debug dump
/// of the failure (a raw response, its headers included) to each line. The
/// exporter's own failure line says what failed, with the chain's report of
/// where it looked and the advice: these are shown at debug only.
const CREDENTIAL_PROVIDERS: &str = "aws_config::meta::credentials=error,\
     aws_config::profile::credentials=error,aws_config::web_identity_token=error,\
     aws_config::imds=error,aws_config::ecs=error,aws_config::sts=error";

impl LogLevel {
    fn filter(self) -> String {
        // Our own logs at the chosen level; the SDK's chatter only at debug;
        // its warnings (a malformed profile file, an invalid setting) too,
        // but not the credential providers' dumps.
        match self {
            LogLevel::Error => "error".into(),
            LogLevel::Warn => format!("warn,{CREDENTIAL_PROVIDERS}"),
            LogLevel::Info => {
                format!("warn,{CREDENTIAL_PROVIDERS},compute_optimizer_exporter=info")
            }
            LogLevel::Debug => "info,compute_optimizer_exporter=debug".into(),
        }
    }
}

pub fn init(level: LogLevel, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::new(level.filter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    // `try_init`: a second call (tests) keeps the first subscriber.
    let _ = builder
        .event_format(Promslog { format })
        .finish()
        .with(SpanFieldsLayer)
        .try_init();
}

/// The fields of a span, kept for the lines logged inside it: what
/// promslog's `logger.With(...)` gives Go exporters (each organisation's
/// producers run in a span with its `organization`).
struct SpanFields(Vec<(String, serde_json::Value)>);

/// Records every new span's fields as [`SpanFields`].
pub struct SpanFieldsLayer;

impl<S> Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields(Vec::new());
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.0));
        }
    }
}

/// promslog's layout, the Prometheus ecosystem's logger, in both formats, so
/// pipelines built for Prometheus components parse this one too:
/// `time=2026-12-02T06:50:12.345Z level=INFO source=scheduler.rs:42 msg="…" key=value …`
/// or the same keys as one JSON object per line.
pub struct Promslog {
    pub format: LogFormat,
}

impl<S, N> FormatEvent<S, N> for Promslog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let time = rfc3339_millis(std::time::SystemTime::now());
        let level = match *meta.level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARN",
            tracing::Level::INFO => "INFO",
            // promslog has no TRACE.
            _ => "DEBUG",
        };
        let file = meta.file().unwrap_or(meta.target());
        let file = file.rsplit(['/', '\\']).next().unwrap_or(file);
        let source = match meta.line() {
            Some(line) => format!("{file}:{line}"),
            None => file.to_owned(),
        };
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        // The spans' fields, outermost first, after `msg` as promslog's
        // `With` attributes come.
        let at = usize::from(fields.0.first().is_some_and(|(k, _)| k == "msg"));
        let mut inherited = Vec::new();
        for span in ctx.event_scope().into_iter().flat_map(|s| s.from_root()) {
            if let Some(SpanFields(f)) = span.extensions().get::<SpanFields>() {
                inherited.extend(f.iter().cloned());
            }
        }
        fields.0.splice(at..at, inherited);
        match self.format {
            LogFormat::Logfmt => {
                let mut out = format!("time={time} level={level} source=");
                push_value(&mut out, &source);
                for (key, value) in &fields.0 {
                    out.push(' ');
                    out.push_str(key);
                    out.push('=');
                    match value {
                        serde_json::Value::String(s) => push_value(&mut out, s),
                        other => push_value(&mut out, &other.to_string()),
                    }
                }
                writeln!(w, "{out}")
            }
            LogFormat::Json => {
                let mut object = serde_json::Map::new();
                object.insert("time".into(), time.into());
                object.insert("level".into(), level.into());
                object.insert("source".into(), source.into());
                for (key, value) in fields.0 {
                    object.insert(key, value);
                }
                writeln!(w, "{}", serde_json::Value::Object(object))
            }
        }
    }
}

/// An event's fields in order, `message` renamed `msg` (first, as
/// promslog writes it).
struct Fields(Vec<(String, serde_json::Value)>);

impl Fields {
    fn push(&mut self, field: &Field, value: serde_json::Value) {
        match field.name() {
            "message" => self.0.insert(0, ("msg".into(), value)),
            key => self.0.push((key.to_owned(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, format!("{value:?}").into());
    }
}

/// `2026-12-02T06:50:12.345Z`, as promslog writes its `time`.
fn rfc3339_millis(t: std::time::SystemTime) -> String {
    let millis = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_millis();
    let seconds = rfc3339(t);
    format!("{}.{millis:03}Z", seconds.trim_end_matches('Z'))
}

/// `2026-12-02T06:50:12Z`: UTC, whole seconds (as AWS writes timestamps).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (proleptic Gregorian), after H. Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Quotes a value when logfmt needs it, escaping quotes, backslashes and
/// every control character.
pub fn push_value(out: &mut String, value: &str) {
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c == '\\' || c.is_control());
    if !needs_quotes {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Every other control character (ESC, NUL, DEL, C1...), as
            // go-logfmt writes it: a terminal never sees it raw.
            c if c.is_control() => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What a subscriber at `level` writes for `emit`.
    fn logged(level: LogLevel, emit: impl FnOnce()) -> String {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(level.filter()))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn credential_providers_dumps_show_at_debug_only_other_sdk_warnings_always() {
        let emit = || {
            tracing::warn!(target: "aws_config::meta::credentials::chain", "provider failed: Response {{ headers: x-amz-secret }}");
            tracing::warn!(target: "aws_config::imds::credentials", "imds dump");
            tracing::warn!(target: "aws_config::provider_config", "failed to parse profile");
            tracing::info!(target: "aws_config::meta::region", "sdk chatter");
        };
        for level in [LogLevel::Info, LogLevel::Warn] {
            let out = logged(level, emit);
            assert!(
                !out.contains("x-amz-secret") && !out.contains("imds dump"),
                "{out}"
            );
            assert!(out.contains("failed to parse profile"), "{out}");
            assert!(!out.contains("sdk chatter"), "{out}");
        }
        let out = logged(LogLevel::Debug, emit);
        assert!(
            out.contains("x-amz-secret") && out.contains("imds dump"),
            "{out}"
        );
    }

    #[test]
    fn time_is_rfc3339_in_milliseconds_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_189_672_757);
        assert_eq!(rfc3339_millis(t), "2026-12-02T05:34:32.757Z");
        assert_eq!(
            rfc3339_millis(std::time::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn lines_carry_promslogs_keys_in_both_formats() {
        for format in [LogFormat::Logfmt, LogFormat::Json] {
            let buf = Buf::default();
            let writer = buf.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .event_format(Promslog { format })
                .finish()
                .with(SpanFieldsLayer);
            tracing::subscriber::with_default(subscriber, || {
                let _org = tracing::info_span!("producer", organization = "gov").entered();
                tracing::warn!(accounts = 3u64, code = "x y", "poll failed");
            });
            let line = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            match format {
                LogFormat::Logfmt => {
                    assert!(line.starts_with("time=20"), "{line}");
                    assert!(line.contains(" level=WARN source=logging.rs:"), "{line}");
                    assert!(
                        line.contains(
                            " msg=\"poll failed\" organization=gov accounts=3 code=\"x y\"\n"
                        ),
                        "{line}"
                    );
                }
                LogFormat::Json => {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    assert_eq!(v["level"], "WARN");
                    assert_eq!(v["msg"], "poll failed");
                    assert_eq!(v["accounts"], 3);
                    assert_eq!(v["organization"], "gov");
                    assert!(v["time"].as_str().unwrap().ends_with('Z'));
                    assert!(v["source"].as_str().unwrap().starts_with("logging.rs:"));
                }
            }
        }
    }

    #[test]
    fn logfmt_values() {
        let q = |v: &str| {
            let mut s = String::new();
            push_value(&mut s, v);
            s
        };
        assert_eq!(q("plain"), "plain");
        assert_eq!(q(""), "\"\"");
        assert_eq!(q("two words"), "\"two words\"");
        assert_eq!(q("a\"b\nc"), "\"a\\\"b\\nc\"");
        // An AWS-supplied reason with ESC (a terminal colour code) and NUL.
        assert_eq!(q("x\u{1b}[31my\0"), "\"x\\u001b[31my\\u0000\"");
        assert_eq!(q("del\u{7f}"), "\"del\\u007f\"");
    }
}
