//! What the pure core concludes about a request: skipped (and why), judged with every
//! violation found, or not judgeable. The wire module turns this into an AdmissionResponse;
//! the message texts are built here so `check`, logs and the webhook all say the same thing.

use std::borrow::Cow;
use std::fmt;

/// A violation's words: most are the same for every object (a check's problem and fix), so
/// they are borrowed from the program, not built per request.
pub type Text = Cow<'static, str>;

use crate::policy::{Date, Mode, RuleId};
use crate::workload::ContainerKind;

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Admitted without evaluation, for a reason worth logging.
    Skipped(Skip),
    /// Evaluated: every violation of every rule that is not `off` (empty means clean).
    Judged(Findings),
    /// The request should be judged but its object cannot be read: denied, never admitted.
    Unjudgeable(String),
}

/// What judging found: the violations, and the values CEL rules' `auditAnnotations` asked
/// to record (keyed `<policy>.<key>`). Reads as the list of violations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    pub violations: Vec<Violation>,
    pub annotations: Vec<(String, String)>,
    /// Rules whose expression failed at runtime under `failurePolicy: Ignore`: admitted, and
    /// counted, never silent.
    pub ignored: Vec<RuleId>,
}

impl From<Vec<Violation>> for Findings {
    fn from(violations: Vec<Violation>) -> Self {
        Self {
            violations,
            ..Self::default()
        }
    }
}

impl<'a> IntoIterator for &'a Findings {
    type Item = &'a Violation;
    type IntoIter = std::slice::Iter<'a, Violation>;
    fn into_iter(self) -> Self::IntoIter {
        self.violations.iter()
    }
}

impl std::ops::Deref for Findings {
    type Target = Vec<Violation>;
    fn deref(&self) -> &Vec<Violation> {
        &self.violations
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    Operation,
    Kind,
    SubResource,
    ExemptNamespace,
    SpecUnchanged,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operation => "operation-not-judged",
            Self::Kind => "kind-not-judged",
            Self::SubResource => "subresource-not-judged",
            Self::ExemptNamespace => "exempt-namespace",
            Self::SpecUnchanged => "pod-spec-unchanged",
        }
    }
}

impl Verdict {
    /// Violations in `enforce` mode that no exemption lifts: any one of them denies.
    pub fn denials(&self) -> impl Iterator<Item = &Violation> {
        self.violations().filter(|v| v.denies())
    }

    pub fn violations(&self) -> std::slice::Iter<'_, Violation> {
        let all: &[Violation] = match self {
            Self::Judged(v) => v,
            _ => &[],
        };
        all.iter()
    }

    pub fn is_allowed(&self) -> bool {
        match self {
            Self::Skipped(_) => true,
            Self::Judged(_) => self.denials().next().is_none(),
            Self::Unjudgeable(_) => false,
        }
    }

    /// The denial shown to the user: every enforced violation with the YAML that fixes it,
    /// so all can be fixed in one pass, appended to `out` in the encoding of `texts`. Writes
    /// nothing when nothing is enforced.
    pub fn write_denial_message(
        &self,
        kind: &str,
        name: &str,
        texts: &Texts<impl Encoding>,
        out: &mut String,
    ) {
        let denials = || self.violations().enumerate().filter(|(_, v)| v.denies());
        let count = denials().count();
        if count == 0 {
            return;
        }
        // The message's head is gathered plain and encoded at once: encoding each of its
        // pieces on its own cost more than the copy.
        let mut plain = String::with_capacity(64);
        plain.push_str(kind);
        plain.push(' ');
        // Writing into a string cannot fail.
        let _ = write_quoted(&mut plain, name);
        plain.push_str(" was denied by portcullis (");
        plain.push_str(itoa::Buffer::new().format(count));
        plain.push_str(if count == 1 {
            " violation):"
        } else {
            " violations):"
        });
        texts.encoding.encode(out, &plain);
        // The words around each violation are fixed in the program and hold line breaks to
        // escape: the encoding keeps what it made of them, as of static fix YAML.
        let word = |out: &mut String, text| texts.encoding.encode_static_indented(out, text, "");
        for (i, v) in denials() {
            word(out, "\n- ");
            out.push_str(texts.get(i));
            if let Some(add) = &v.add {
                word(out, "\n  fix: at ");
                plain.clear();
                // Writing into a string cannot fail.
                let _ = add.at.write_to(&mut plain);
                texts.encoding.encode(out, &plain);
                word(out, " set:\n    ");
                // Each line of the YAML indented under the fix's line, as it is encoded:
                // splitting it into lines first cost more than escaping it. Most fixes'
                // YAML is fixed in the program, and its encoding is kept.
                let len = add.yaml.trim_end_matches(['\n', '\r']).len();
                match &add.yaml {
                    Text::Borrowed(yaml) => {
                        texts
                            .encoding
                            .encode_static_indented(out, &yaml[..len], "    ");
                    }
                    Text::Owned(yaml) => texts.encoding.encode_indented(out, &yaml[..len], "    "),
                }
            }
        }
    }

    /// Each violation as its one line of text (what `Display` writes), encoded in
    /// `encoding` (the answer's own: JSON string escaping) once for the denial message and
    /// the audit annotations alike, which encode their other words in it too.
    pub fn texts<E: Encoding>(&self, encoding: E) -> Texts<E> {
        let mut texts = Texts {
            all: String::with_capacity(160 * self.violations().len()),
            ends: Vec::with_capacity(self.violations().len()),
            encoding,
        };
        let mut plain = String::with_capacity(160);
        for v in self.violations() {
            plain.clear();
            // Writing into a string cannot fail.
            let _ = v.write_text(&mut plain);
            texts.encoding.encode(&mut texts.all, &plain);
            texts.ends.push(texts.all.len());
        }
        texts
    }

    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut exemptions: Vec<&str> = Vec::new();
        for v in self.violations() {
            match &v.exemption {
                Some(e) if e.expiring_soon && !exemptions.contains(&e.name.as_str()) => {
                    exemptions.push(&e.name);
                    let expires = e.expires.map(|d| d.to_string()).unwrap_or_default();
                    let tail = format!(" for [{}] expires {expires}", v.rule.as_str());
                    let head = format!("portcullis: exemption {:?} ({})", e.name, e.owner);
                    out.push(shorten(head, &tail));
                }
                None if v.mode == Mode::Warn => {
                    let mut tail = format!(" [{}]", v.rule.as_str());
                    if let Some((mode, date)) = v.next {
                        tail.push_str(&format!(" ({} from {date})", mode.participle()));
                    }
                    let head = match v.subject {
                        Subject::Object => format!("portcullis: {}", v.problem),
                        _ => format!("portcullis: {} {}", v.subject, v.problem),
                    };
                    out.push(shorten(head, &tail));
                }
                _ => {}
            }
        }
        let mut total = 0;
        let mut kept = Vec::with_capacity(out.len());
        let count = out.len();
        for w in out {
            if total + w.len() > MAX_WARNINGS_BYTES - 64 {
                kept.push(format!(
                    "portcullis: {} more warnings; see the audit annotations",
                    count - kept.len()
                ));
                break;
            }
            total += w.len();
            kept.push(w);
        }
        kept
    }

    /// auditAnnotations, keyed by check id (the apiserver prefixes the webhook name, and the
    /// ids are valid keys), recording every violation that is not `off` with its mode, or
    /// `exempt` and the exemption, so the audit log holds would-be denials and exceptions too.
    /// An object that cannot be read is recorded under `unjudgeable`. Values come in the
    /// encoding of `texts`; mode names and separators are plain ASCII words that no encoding
    /// changes, so they are appended as they are.
    pub fn audit_annotations<'a>(&'a self, texts: &'a Texts<impl Encoding>) -> Annotations<'a> {
        let encoding = &texts.encoding;
        let encoded = |text: &str| {
            let mut value = String::with_capacity(text.len());
            encoding.encode(&mut value, text);
            value
        };
        let mut entries: Vec<Entry> = Vec::with_capacity(self.violations().len() + 1);
        if let Self::Unjudgeable(reason) = self {
            entries.push(Entry::whole("unjudgeable", encoded(reason)));
        }
        if let Self::Judged(found) = self {
            for (key, value) in &found.annotations {
                // A key given twice keeps its last value.
                entries.retain(|e| e.key != key.as_str());
                entries.push(Entry::whole(key, encoded(value)));
            }
        }
        for (i, v) in self.violations().enumerate() {
            let head = match &v.exemption {
                Some(e) => Head::Encoded(encoded(&format!("exempt ({e}): "))),
                None => Head::Mode(v.mode.as_str()),
            };
            entries.push(Entry {
                key: v.rule.as_str(),
                head,
                text: Cow::Borrowed(texts.get(i)),
            });
        }
        // In key order, the wire's order before these were entries; the sort is stable, so a
        // check's violations keep theirs, after any CEL value of the same key.
        entries.sort_by(|a, b| a.key.cmp(b.key));
        Annotations { entries }
    }
}

/// A verdict's auditAnnotations, in key order: each a key and its value's parts, already
/// in the encoding of the texts they borrow, so the answer copies each text once.
pub struct Annotations<'a> {
    /// Sorted by key; the entries of one key make one annotation.
    entries: Vec<Entry<'a>>,
}

struct Entry<'a> {
    key: &'a str,
    head: Head,
    text: Cow<'a, str>,
}

impl<'a> Entry<'a> {
    /// A value of its own, encoded: a CEL rule's, or why the object cannot be read.
    fn whole(key: &'a str, encoded: String) -> Self {
        Self {
            key,
            head: Head::None,
            text: Cow::Owned(encoded),
        }
    }
}

/// What a value says before its text: a violation's mode, or its exemption, encoded.
enum Head {
    None,
    /// A mode name: plain ASCII, which no encoding changes.
    Mode(&'static str),
    Encoded(String),
}

impl<'a> Annotations<'a> {
    pub fn iter(&self) -> impl Iterator<Item = Annotation<'_, 'a>> {
        self.entries
            .chunk_by(|a, b| a.key == b.key)
            .map(|entries| Annotation { entries })
    }
}

/// One auditAnnotation: a check's violations, `; ` between them, or one value of its own.
pub struct Annotation<'e, 'a> {
    entries: &'e [Entry<'a>],
}

impl Annotation<'_, '_> {
    pub fn key(&self) -> &str {
        self.entries[0].key
    }

    /// Appends the value, in the texts' encoding (`; ` and the mode names are plain ASCII,
    /// which no encoding changes).
    pub fn write_value(&self, out: &mut String) {
        let start = out.len();
        for entry in self.entries {
            if out.len() > start {
                out.push_str("; ");
            }
            match &entry.head {
                Head::None => {}
                Head::Mode(mode) => {
                    out.push_str(mode);
                    out.push_str(": ");
                }
                Head::Encoded(head) => out.push_str(head),
            }
            out.push_str(&entry.text);
        }
    }
}

/// How an answer carries text: `review` writes JSON string escaping. The verdict lays out
/// the words; the encoding says how they are written.
pub trait Encoding {
    /// Appends `text`, encoded.
    fn encode(&self, out: &mut String, text: &str);

    /// Appends `text`, encoded, with `indent` (plain spaces) after each of its line breaks.
    fn encode_indented(&self, out: &mut String, text: &str, indent: &str);

    /// As `encode_indented`, for text fixed in the program: an encoding may keep what it
    /// made of it.
    fn encode_static_indented(&self, out: &mut String, text: &'static str, indent: &'static str) {
        self.encode_indented(out, text, indent);
    }
}

/// Every violation's text in a verdict, in the order of its violations, each encoded once
/// for the answer that carries it, with the encoding, so whatever is written around them is
/// encoded alike.
pub struct Texts<E> {
    all: String,
    /// Where each text ends in `all`.
    ends: Vec<usize>,
    encoding: E,
}

impl<E> Texts<E> {
    /// Their bytes, all together.
    pub fn byte_len(&self) -> usize {
        self.all.len()
    }

    /// The `i`th violation's text.
    pub fn get(&self, i: usize) -> &str {
        let start = i.checked_sub(1).map_or(0, |j| self.ends[j]);
        &self.all[start..self.ends[i]]
    }
}

pub const WARNING_TARGET_LEN: usize = 120;
/// The apiserver cuts a warning longer than this.
pub const MAX_WARNING_LEN: usize = 256;
/// The apiserver keeps at most 4 KiB of warnings per response.
pub const MAX_WARNINGS_BYTES: usize = 4096;

/// `head` cut so that `head + tail` fits `WARNING_TARGET_LEN`; the tail (check id, deadline)
/// is what must survive. Never longer than `MAX_WARNING_LEN`, whatever the tail.
fn shorten(head: String, tail: &str) -> String {
    let room = WARNING_TARGET_LEN.saturating_sub(tail.len()).max(40);
    let mut w = truncate(head, room);
    w.push_str(tail);
    truncate(w, MAX_WARNING_LEN)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max - '…'.len_utf8();
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Which part of the pod a violation is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The object as a whole: what a CEL rule judges.
    Object,
    Pod,
    Container {
        kind: ContainerKind,
        index: usize,
        name: String,
    },
}

impl Subject {
    /// What `Display` writes, into any writer: a `String` gets it without `fmt`'s dispatch.
    fn write_to(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match self {
            Self::Object => out.write_str("object"),
            Self::Pod => out.write_str("pod"),
            Self::Container { kind, name, .. } => {
                out.write_str(kind.noun())?;
                out.write_str(" ")?;
                write_quoted(out, name)
            }
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// `text` as `{:?}` writes it. Names are nearly always plain printable ASCII, which `{:?}`
/// only quotes: that is written directly, and anything else goes through `Debug`.
fn write_quoted(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    let plain = |b: &u8| (b' '..=b'~').contains(b) && *b != b'"' && *b != b'\\';
    if text.bytes().all(|b| plain(&b)) {
        out.write_str("\"")?;
        out.write_str(text)?;
        out.write_str("\"")
    } else {
        write!(out, "{text:?}")
    }
}

/// One rule failing on one subject, with what is wrong and how to fix it. Built-in checks and
/// CEL rules produce the same value: everything downstream works on the rule id.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub rule: RuleId,
    pub mode: Mode,
    pub policy: std::sync::Arc<str>,
    pub subject: Subject,
    /// Dotted path of the offending field inside the submitted object, so the owner knows
    /// where to edit (for a controller it points into the pod template).
    pub field: FieldPath,
    pub problem: Text,
    pub fix: Text,
    /// The YAML that fixes it, where one snippet does.
    pub add: Option<Fix>,
    /// The schedule's next step for this check, when it will be stricter.
    pub next: Option<(Mode, Date)>,
    /// Set when an exemption lifts the violation: it is recorded, never denied or warned.
    pub exemption: Option<Box<Exempted>>,
}

impl Violation {
    pub fn denies(&self) -> bool {
        self.mode == Mode::Enforce && self.exemption.is_none()
    }

    /// How the violation was treated, for logs, metrics and reports: its mode, or `exempt`.
    pub fn outcome(&self) -> &'static str {
        match self.exemption {
            Some(_) => "exempt",
            None => self.mode.as_str(),
        }
    }
}

/// YAML to add under a path of the submitted object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fix {
    /// Dotted path of the mapping the snippet goes into, e.g. `spec.containers[0]`.
    pub at: FieldPath,
    pub yaml: Text,
}

/// A dotted path in the submitted object, e.g. `spec.template.spec.containers[0].resources`,
/// kept as its parts and spelt out (`write_to`, `Display`) only where it is shown: reports,
/// and a denial's fix lines. Every violation has one, and the webhook's answer shows few of
/// them, so building each as text cost more than all the ones shown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath {
    /// Where the pod spec is in the object (`spec`, `spec.template.spec`, …); empty when
    /// `leaf` is the whole path.
    pub base: &'static str,
    /// The container the path is in, by kind and index.
    pub container: Option<(ContainerKind, usize)>,
    /// The rest, below the container or the base; empty for the container or base itself.
    pub leaf: Text,
}

impl FieldPath {
    /// What `Display` writes, into any writer: a `String` gets it without `fmt`'s dispatch
    /// (as `Subject::write_to`).
    pub fn write_to(&self, out: &mut impl fmt::Write) -> fmt::Result {
        out.write_str(self.base)?;
        // A dot before each part after the first one present.
        let mut dot = if self.base.is_empty() { "" } else { "." };
        if let Some((kind, index)) = self.container {
            out.write_str(dot)?;
            out.write_str(kind.field())?;
            out.write_str("[")?;
            out.write_str(itoa::Buffer::new().format(index))?;
            out.write_str("]")?;
            dot = ".";
        }
        if !self.leaf.is_empty() {
            out.write_str(dot)?;
            out.write_str(&self.leaf)?;
        }
        Ok(())
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExemptionSource {
    Policy,
    Annotation,
}

impl ExemptionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Annotation => "annotation",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exempted {
    pub name: String,
    pub source: ExemptionSource,
    pub reason: String,
    pub owner: String,
    pub expires: Option<Date>,
    pub expiring_soon: bool,
}

impl fmt::Display for Exempted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}, owner {}: {}", self.name, self.owner, self.reason)?;
        if let Some(expires) = self.expires {
            write!(f, ", expires {expires}")?;
        }
        Ok(())
    }
}

impl Violation {
    /// The violation's one line, into any writer: a `String` gets it without `fmt`'s
    /// dispatch, which every denied review would pay for each violation.
    fn write_text(&self, out: &mut impl fmt::Write) -> fmt::Result {
        // A CEL rule's message speaks for itself, and it offers no fix of its own.
        if self.subject != Subject::Object {
            self.subject.write_to(out)?;
            out.write_str(" ")?;
        }
        out.write_str(&self.problem)?;
        if !self.fix.is_empty() {
            out.write_str(": ")?;
            out.write_str(&self.fix)?;
        }
        out.write_str(" [")?;
        out.write_str(self.rule.as_str())?;
        out.write_str("]")
    }
}

impl fmt::Display for Violation {
    /// `container "app" may run as root: set securityContext.runAsNonRoot: true or a non-zero runAsUser [run-as-non-root]`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_text(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks what went through it, so a test sees each text encoded once and the plain
    /// words not at all.
    struct Marked;

    impl Encoding for Marked {
        fn encode(&self, out: &mut String, text: &str) {
            out.push('<');
            out.push_str(text);
            out.push('>');
        }
        fn encode_indented(&self, out: &mut String, text: &str, indent: &str) {
            self.encode(out, &text.replace('\n', &format!("\n{indent}")));
        }
    }

    fn violation(rule: &str, mode: Mode, container: &str) -> Violation {
        Violation {
            rule: RuleId::new(rule),
            mode,
            policy: "default".into(),
            subject: Subject::Container {
                kind: ContainerKind::Containers,
                index: 0,
                name: container.into(),
            },
            field: FieldPath::default(),
            problem: "has a problem".into(),
            fix: "fix it".into(),
            add: None,
            next: None,
            exemption: None,
        }
    }

    /// Annotations come in key order, a check's violations joined by `; ` in their order,
    /// a CEL value given twice keeps the last, and a violation whose key a CEL value already
    /// holds is appended to it: as a map of keys to growing values would have it.
    #[test]
    fn audit_annotations_are_sorted_joined_and_encoded_once() {
        let mut exempted = violation("run-as-non-root", Mode::Enforce, "b");
        exempted.exemption = Some(Box::new(Exempted {
            name: "legacy".into(),
            source: ExemptionSource::Policy,
            reason: "r".into(),
            owner: "o".into(),
            expires: None,
            expiring_soon: false,
        }));
        let verdict = Verdict::Judged(Findings {
            violations: vec![
                violation("run-as-non-root", Mode::Enforce, "a"),
                violation("liveness-probe", Mode::Audit, "a"),
                exempted,
                violation("p.k", Mode::Warn, "a"),
            ],
            annotations: vec![
                ("p.k".into(), "first".into()),
                ("a.b".into(), "x".into()),
                ("p.k".into(), "last".into()),
            ],
            ignored: Vec::new(),
        });
        let texts = verdict.texts(Marked);
        let annotations: Vec<(String, String)> = verdict
            .audit_annotations(&texts)
            .iter()
            .map(|a| {
                let mut value = String::new();
                a.write_value(&mut value);
                (a.key().to_owned(), value)
            })
            .collect();
        let text = |mode: &str, name: &str, rule: &str| {
            format!("{mode}: <container \"{name}\" has a problem: fix it [{rule}]>")
        };
        assert_eq!(
            annotations,
            [
                ("a.b".to_owned(), "<x>".to_owned()),
                (
                    "liveness-probe".into(),
                    text("audit", "a", "liveness-probe")
                ),
                (
                    "p.k".into(),
                    format!("<last>; {}", text("warn", "a", "p.k"))
                ),
                (
                    "run-as-non-root".into(),
                    format!(
                        "{}; <exempt (\"legacy\", owner o: r): ><container \"b\" has a problem: fix it [run-as-non-root]>",
                        text("enforce", "a", "run-as-non-root")
                    )
                ),
            ]
        );
    }

    /// Each shape of path is spelt out with a dot between parts that are there and none
    /// around parts that are not, whatever the text written before it.
    #[test]
    fn field_paths_are_dotted_between_the_parts_present() {
        let container = Some((ContainerKind::InitContainers, 12));
        let cases = [
            (FieldPath::default(), ""),
            (
                FieldPath {
                    base: "spec",
                    ..FieldPath::default()
                },
                "spec",
            ),
            (
                FieldPath {
                    base: "spec.template.spec",
                    container,
                    ..FieldPath::default()
                },
                "spec.template.spec.initContainers[12]",
            ),
            (
                FieldPath {
                    base: "spec",
                    container,
                    leaf: "securityContext.runAsNonRoot".into(),
                },
                "spec.initContainers[12].securityContext.runAsNonRoot",
            ),
            (
                FieldPath {
                    container,
                    leaf: "name".into(),
                    ..FieldPath::default()
                },
                "initContainers[12].name",
            ),
            (
                FieldPath {
                    base: "spec",
                    leaf: "volumes[0].hostPath".into(),
                    ..FieldPath::default()
                },
                "spec.volumes[0].hostPath",
            ),
            (
                FieldPath {
                    leaf: "metadata.annotations[\"a\"]".into(),
                    ..FieldPath::default()
                },
                "metadata.annotations[\"a\"]",
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(path.to_string(), expected);
            let mut after = String::from("at ");
            path.write_to(&mut after).unwrap();
            assert_eq!(after, format!("at {expected}"));
        }
    }

    /// Names are written as `{:?}` writes them, whatever they hold: the fast path for plain
    /// names must not change a byte.
    #[test]
    fn quoted_names_are_what_debug_writes() {
        let names = [
            "app",
            "",
            "web-1.example",
            "with space ~",
            "quote\"inside",
            "back\\slash",
            "tab\there",
            "line\nbreak",
            "é-unicode",
            "zero\u{200b}width",
            "\u{7f}del",
            "emoji🚀",
        ];
        for name in names {
            let mut ours = String::new();
            write_quoted(&mut ours, name).unwrap();
            assert_eq!(ours, format!("{name:?}"), "{name:?}");
        }
    }
}
