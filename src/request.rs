//! An admission request in portcullis's own terms, as the wire module hands it to the pure core.
//! The object is already decoded (or known to be unreadable), so the core does no parsing and
//! a malformed pod spec can be denied with its reason instead of being mistaken for "absent".

pub use kube::core::admission::Operation;

use crate::workload::{Workload, WorkloadKind};

/// The operation as the review spells it (`CREATE`), for CEL's `request`, resource rules,
/// metric labels and log lines alike.
pub fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub uid: String,
    pub operation: Operation,
    /// `kind.kind` as sent, for logs; `workload` is set when it is a kind portcullis judges.
    pub kind: String,
    pub workload: Option<WorkloadKind>,
    pub sub_resource: Option<String>,
    pub namespace: String,
    pub name: String,
    pub user: String,
    pub dry_run: bool,
    pub object: Decoded,
    pub old_object: Decoded,
    /// The request as CEL rules read it; kept only when the policy set has CEL rules.
    pub json: Option<Box<RequestJson>>,
}

/// What a CEL rule reads of a request beside the typed fields: the resource it names and the
/// objects and user as JSON.
#[derive(Clone, Debug, Default)]
pub struct RequestJson {
    pub group: String,
    pub version: String,
    /// The plural resource (`pods`, `deployments`), as resourceRules name it.
    pub resource: String,
    pub object: Option<serde_json::Value>,
    /// `oldObject`, read as JSON only if an expression or an object selector reads it: most
    /// rules judge the new object alone, and an UPDATE's old one is as large.
    pub old_object: Option<LazyJson>,
    /// `userInfo` as sent: username, uid, groups, extra.
    pub user_info: Option<k8s_openapi::api::authentication::v1::UserInfo>,
}

/// JSON text, parsed the first time it is read and then shared by every reader of the
/// request.
#[derive(Clone, Debug, Default)]
pub struct LazyJson {
    text: String,
    parsed: std::sync::OnceLock<serde_json::Value>,
}

impl LazyJson {
    pub fn new(text: String) -> Self {
        Self {
            text,
            parsed: Default::default(),
        }
    }

    /// The text as JSON; null if it does not parse (nesting beyond serde_json's limit).
    pub fn get(&self) -> &serde_json::Value {
        self.parsed
            .get_or_init(|| serde_json::from_str(&self.text).unwrap_or_default())
    }
}

/// What became of `object` or `oldObject`.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// Null or missing in the review (`object` on DELETE, `oldObject` on CREATE).
    Absent,
    /// Left undecoded because nothing reads it (a kind portcullis does not judge).
    Skipped,
    Workload(Box<Workload>),
    /// Present but not a readable workload of the requested kind: the reason, for the denial.
    Unreadable(String),
    /// An UPDATE's `oldObject` whose pod spec is, byte for byte, the object's: left undecoded,
    /// since an unchanged spec is all the old object is read for. The object itself too, when
    /// read for the built-in checks alone: they skip an unchanged spec.
    SameSpec,
}

impl Decoded {
    /// The outcome of decoding an object of `kind`: the workload, or why it cannot be read.
    pub fn from_result(kind: WorkloadKind, result: Result<Workload, serde_json::Error>) -> Self {
        match result {
            Ok(w) => Self::Workload(Box::new(w)),
            Err(e) => Self::Unreadable(format!("the {} cannot be read: {e}", kind.as_str())),
        }
    }

    pub fn workload(&self) -> Option<&Workload> {
        match self {
            Self::Workload(w) => Some(w),
            _ => None,
        }
    }
}
