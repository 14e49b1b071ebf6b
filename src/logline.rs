//! `--log-format json`: one JSON object per line, in tracing-subscriber's JSON shape
//! (`timestamp`, `level`, `fields` with `message`, `target`, and `span`/`spans` inside a
//! span), written straight into the line buffer. tracing-subscriber's own JSON formatter
//! builds each line through serde and a map per event; at a decision line per denial that
//! was several percent of the server's time under load (BENCHMARKS.md).

use std::fmt::{self, Write as _};
use std::rc::Rc;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::json_string::{self, Escaped};

/// The event formatter; pair it with `JsonFields` for span fields.
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A decision line with its violations fits without regrowing.
        let mut line = String::with_capacity(512);
        let metadata = event.metadata();
        line.push_str("{\"timestamp\":\"");
        timestamp(&mut line);
        line.push_str("\",\"level\":\"");
        line.push_str(metadata.level().as_str());
        line.push_str("\",\"fields\":{");
        // Taken out of the memo before the fields are written: a value's `Debug` may log
        // in turn, and that event's line must find the memo free.
        let keys = KEYS.with_borrow_mut(|known| {
            match known.iter().find(|(m, _)| std::ptr::eq(*m, metadata)) {
                Some((_, keys)) => Rc::clone(keys),
                None => {
                    let keys = keys(metadata);
                    known.push((metadata, Rc::clone(&keys)));
                    keys
                }
            }
        });
        let mut fields = Fields {
            out: &mut line,
            first: true,
            keys: (metadata.callsite(), &keys),
        };
        event.record(&mut fields);
        line.push_str("},\"target\":");
        json_string::push(&mut line, metadata.target());
        if let Some(scope) = ctx.event_scope() {
            let mut spans = Vec::new();
            for span in scope.from_root() {
                let mut one = String::from("{");
                let extensions = span.extensions();
                let fields = extensions
                    .get::<FormattedFields<JsonFields>>()
                    .map(|f| f.fields.as_str())
                    .filter(|f| f.len() > 2);
                if let Some(fields) = fields {
                    // A JSON object's members, after the name.
                    one.push_str(&fields[1..fields.len() - 1]);
                    one.push(',');
                }
                one.push_str("\"name\":");
                json_string::push(&mut one, span.name());
                one.push('}');
                spans.push(one);
            }
            if let Some(last) = spans.last() {
                line.push_str(",\"span\":");
                line.push_str(last);
                line.push_str(",\"spans\":[");
                line.push_str(&spans.join(","));
                line.push(']');
            }
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// A callsite, by its metadata, with its member keys.
type CallsiteKeys = (&'static tracing::Metadata<'static>, Rc<[Box<str>]>);

thread_local! {
    /// Each event callsite's member keys, as `keys` writes them. A callsite's field names are
    /// fixed in the program and a decision line has ten: each thread writes them once per
    /// callsite and copies them after that (the keys cost 1.5k instructions per line when
    /// each was tested and written anew). One entry per callsite that logged on the thread.
    static KEYS: std::cell::RefCell<Vec<CallsiteKeys>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `,"name":` for each field of a callsite, in the order of its field set.
fn keys(metadata: &tracing::Metadata<'_>) -> Rc<[Box<str>]> {
    metadata
        .fields()
        .iter()
        .map(|field| {
            let mut key = String::from(",");
            json_string::push(&mut key, field.name());
            key.push(':');
            key.into_boxed_str()
        })
        .collect()
}

/// Event fields as JSON members; `message` and `%`/`?` fields become strings.
struct Fields<'a> {
    out: &'a mut String,
    first: bool,
    /// The event's callsite, and its keys by field index.
    keys: (tracing::callsite::Identifier, &'a [Box<str>]),
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        let first = std::mem::take(&mut self.first);
        let (callsite, keys) = &self.keys;
        match keys
            .get(field.index())
            .filter(|_| field.callsite() == *callsite)
        {
            // The first member has no comma before it.
            Some(key) => self.out.push_str(&key[usize::from(first)..]),
            // A field of another callsite: never from `Event::record`, written anew.
            None => {
                if !first {
                    self.out.push(',');
                }
                json_string::push(self.out, field.name());
                self.out.push(':');
            }
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        json_string::push(self.out, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            self.out.push_str("null");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        // Escaped as it is formatted, with no string in between.
        self.out.push('"');
        let _ = write!(Escaped(self.out), "{value:?}");
        self.out.push('"');
    }
}

/// Now, as RFC 3339 in UTC with microseconds, as tracing-subscriber writes it.
fn timestamp(out: &mut String) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    write_timestamp(out, since_epoch);
}

/// The date and time down to the second change once a second, and a denial writes a line:
/// each thread keeps the last second it wrote and formats only the microseconds anew.
fn write_timestamp(out: &mut String, since_epoch: std::time::Duration) {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let seconds = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != seconds {
            let at = i64::try_from(seconds)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            text.clear();
            let _ = write!(
                text,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            );
            *cached = seconds;
        }
        out.push_str(text);
    });
    let mut micros = since_epoch.subsec_micros();
    let mut digits = *b".000000Z";
    for digit in digits[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.push_str(std::str::from_utf8(&digits).expect("ASCII digits"));
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Events of every field type, escapes, a message given as a field or as a format
    /// string, inside spans and outside, as `subscriber` writes them to `out`: the lines,
    /// each without its timestamp, the one member that differs by when it was written.
    fn lines(subscriber: impl Subscriber + Send + Sync + 'static, out: &Path) -> Vec<String> {
        // Twice each: the second time a callsite's keys are the ones kept from the first.
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..2 {
                tracing::info!(
                    message = "validated",
                    uid = "u-1",
                    dry_run = false,
                    outcome = "denied"
                );
                tracing::info!(
                    uid = "u-2",
                    count = 3_u64,
                    delta = -4_i64,
                    ratio = 0.5,
                    "written {}",
                    7
                );
                let span = tracing::info_span!("review", uid = %"u\"3");
                span.in_scope(|| {
                    let inner = tracing::info_span!("inner");
                    inner.in_scope(|| {
                        tracing::warn!(name = "a\tb\u{1}\"c\"", error = ?"x", "quoted \"line\"\n");
                    });
                });
                tracing::info!(
                    "odd-key" = "v",
                    "q\"key\\" = 1,
                    r#type = "t",
                    nan = f64::NAN
                );
            }
        });
        let text = std::fs::read_to_string(out).unwrap();
        text.lines()
            .map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).unwrap();
                let at = json["timestamp"].as_str().unwrap();
                assert!(at.len() == 27 && at.ends_with('Z'), "{line}");
                line.replacen(at, "", 1)
            })
            .collect()
    }

    /// The hand-written line is tracing-subscriber's own JSON line, member for member, in
    /// the same order: swapping in `JsonLine` changes the cost, not what is logged.
    #[test]
    fn lines_match_tracing_subscribers_json_format() {
        let dir = tempfile::tempdir().unwrap();
        let (theirs, ours) = (dir.path().join("theirs"), dir.path().join("ours"));
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(Arc::new(File::create(&theirs).unwrap()))
            .finish();
        let expected = lines(subscriber, &theirs);
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(JsonLine)
            .with_writer(Arc::new(File::create(&ours).unwrap()))
            .finish();
        let got = lines(subscriber, &ours);
        assert_eq!(got.len(), 8);
        // Compared as text, so the order of members counts too.
        assert_eq!(got, expected);
        assert!(
            got[0].contains(r#""fields":{"message":"validated","uid":"u-1""#),
            "{}",
            got[0]
        );
    }

    /// The per-thread second must never leak into another second's line: every instant is
    /// written as the calendar says, across second, day and year boundaries.
    #[test]
    fn timestamps_are_rfc3339_with_microseconds_whatever_second_came_before() {
        let instants = [
            (1_795_996_799, 999_999, "2026-11-29T23:59:59.999999Z"),
            (1_795_996_800, 0, "2026-11-30T00:00:00.000000Z"),
            (1_795_996_800, 42, "2026-11-30T00:00:00.000042Z"),
            (1_798_761_600, 500_000, "2027-01-01T00:00:00.500000Z"),
            (0, 1, "1970-01-01T00:00:00.000001Z"),
            (1_795_996_799, 7_000, "2026-11-29T23:59:59.007000Z"),
        ];
        for (seconds, micros, expected) in instants {
            let mut out = String::new();
            write_timestamp(&mut out, Duration::new(seconds, micros * 1000));
            assert_eq!(out, expected);
        }
    }
}
