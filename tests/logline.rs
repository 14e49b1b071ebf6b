//! The JSON log line under a process-wide subscriber, as the server runs it. There, unlike
//! under a scoped one, tracing lets an event be logged while another event's fields are
//! being written (a value whose `Debug` logs), and both lines must come out whole.

use std::sync::Arc;

use portcullis::logline::JsonLine;
use serde_json::json;
use tracing_subscriber::fmt::format::JsonFields;

/// A value that logs an event of its own each time it is formatted.
struct LogsWhenFormatted;

impl std::fmt::Debug for LogsWhenFormatted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        tracing::info!(inner = "yes", "logged while formatting");
        f.write_str("outer value")
    }
}

#[test]
fn an_event_logged_while_another_is_written_gets_a_whole_line_of_its_own() {
    // The lines go to a file, read back once they are written.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lines");
    let out = Arc::new(std::fs::File::create(&path).unwrap());
    let subscriber = tracing_subscriber::fmt()
        .fmt_fields(JsonFields::new())
        .event_format(JsonLine)
        .with_writer(out)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    // Twice: the second time both callsites' keys come from what the first time kept.
    for _ in 0..2 {
        tracing::info!(value = ?LogsWhenFormatted, "outer");
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    // The inner line is complete first; the outer one is written after its fields.
    for pair in lines.chunks(2) {
        assert_eq!(
            pair[0]["fields"],
            json!({"message": "logged while formatting", "inner": "yes"})
        );
        assert_eq!(
            pair[1]["fields"],
            json!({"message": "outer", "value": "outer value"})
        );
    }
}
