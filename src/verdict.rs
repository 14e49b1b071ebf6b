//! What the pure core concludes about a request: skipped (and why), judged with every
//! violation found, or not judgeable. The wire module turns this into an AdmissionResponse;
//! the message texts are built here so `check`, logs and the webhook all say the same thing.

use std::collections::BTreeMap;
use std::fmt;

use crate::checks::CheckId;
use crate::policy::Mode;

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Admitted without evaluation, for a reason worth logging.
    Skipped(Skip),
    /// Evaluated: every violation of every check that is not `off` (empty means clean).
    Judged(Vec<Violation>),
    /// The request should be judged but its object cannot be read: denied, never admitted.
    Unjudgeable(String),
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
    /// Violations in `enforce` mode: any one of them denies the request.
    pub fn denials(&self) -> impl Iterator<Item = &Violation> {
        self.violations().filter(|v| v.mode == Mode::Enforce)
    }

    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
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

    /// The denial shown to the user: every enforced violation, one per line, so all can be
    /// fixed in one pass. `None` when nothing is enforced.
    pub fn denial_message(&self, kind: &str, name: &str) -> Option<String> {
        let denials: Vec<&Violation> = self.denials().collect();
        if denials.is_empty() {
            return None;
        }
        let plural = if denials.len() == 1 { "" } else { "s" };
        let mut message = format!(
            "{kind} {name:?} was denied by portcullis ({} violation{plural}):",
            denials.len()
        );
        for v in denials {
            message.push_str("\n- ");
            message.push_str(&v.to_string());
        }
        Some(message)
    }

    /// One AdmissionResponse warning per violation in warn mode. The apiserver truncates
    /// warnings over 256 characters, so each is cut at a character boundary before that.
    pub fn warnings(&self) -> Vec<String> {
        self.violations()
            .filter(|v| v.mode == Mode::Warn)
            .map(|v| truncate(format!("portcullis: {v}"), MAX_WARNING_LEN))
            .collect()
    }

    /// auditAnnotations, keyed by check id (the apiserver prefixes the webhook name, and the
    /// ids are valid keys), recording every violation that is not `off` with its mode, so the
    /// audit log holds the would-be denials of audit mode as well as real ones.
    pub fn audit_annotations(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        for v in self.violations() {
            let entry = out.entry(v.check.as_str().to_owned()).or_default();
            if !entry.is_empty() {
                entry.push_str("; ");
            }
            entry.push_str(v.mode.as_str());
            entry.push_str(": ");
            entry.push_str(&v.to_string());
        }
        out
    }
}

pub const MAX_WARNING_LEN: usize = 256;

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
    Pod,
    Container {
        kind: ContainerKind,
        index: usize,
        name: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContainerKind {
    Containers,
    InitContainers,
    EphemeralContainers,
}

impl ContainerKind {
    pub fn field(self) -> &'static str {
        match self {
            Self::Containers => "containers",
            Self::InitContainers => "initContainers",
            Self::EphemeralContainers => "ephemeralContainers",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Containers => "container",
            Self::InitContainers => "init container",
            Self::EphemeralContainers => "ephemeral container",
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pod => f.write_str("pod"),
            Self::Container { kind, name, .. } => write!(f, "{} {:?}", kind.noun(), name),
        }
    }
}

/// One check failing on one subject, with what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub check: CheckId,
    pub mode: Mode,
    pub policy: String,
    pub subject: Subject,
    /// Dotted path of the offending field inside the submitted object, so the owner knows
    /// where to edit (for a controller it points into the pod template).
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Violation {
    /// `container "app" may run as root: set securityContext.runAsNonRoot: true or a non-zero runAsUser [run-as-non-root]`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} [{}]",
            self.subject,
            self.problem,
            self.fix,
            self.check.as_str()
        )
    }
}
