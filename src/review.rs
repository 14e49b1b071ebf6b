//! The wire format, and the only module that knows AdmissionReview JSON. `decode` turns a
//! request body into a `Request` (or says why it is not a v1 review: HTTP 400); `encode_*`
//! turn a `Verdict` or patch operations back into the `admission.k8s.io/v1` response.
//!
//! Decoding uses the ecosystem's field types (kube's `Operation` and `GroupVersionKind`,
//! k8s-openapi's `UserInfo` and `PodSpec`) inside a thin envelope of our own, rather than
//! kube's `AdmissionReview<DynamicObject>`: that type flattens twice, which makes serde buffer
//! the whole review before reading it, and its response serializes `patch` as an array of
//! numbers where the apiserver requires a base64 string (kube-rs issue 1781). The objects are
//! taken as raw JSON and decoded only when their kind is judged. Tests pin every response
//! field and cross-check decoding against kube's own type on the captured reviews.

use std::collections::BTreeMap;

use base64::Engine as _;
use json_patch::PatchOperation;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::gvk::GroupVersionKind;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::request::{Decoded, Operation, Request, RequestJson};
use crate::verdict::Verdict;
use crate::workload::{self, WorkloadKind};

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body is not a review portcullis can answer. Each becomes an HTTP 400 with this text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("body is not a JSON AdmissionReview: {0}")]
    Json(String),
    #[error("apiVersion is {0:?}; portcullis answers admission.k8s.io/v1 reviews only")]
    ApiVersion(String),
    #[error("kind is {0:?}, not AdmissionReview")]
    Kind(String),
    #[error("the review has no request")]
    NoRequest,
    #[error("request.uid is empty")]
    EmptyUid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    api_version: String,
    kind: String,
    #[serde(borrow, default)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default)]
    resource: Option<ResourceIn>,
    #[serde(default)]
    user_info: Option<UserInfo>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    old_object: Option<&'a RawValue>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Deserialize, Default)]
struct ResourceIn {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    resource: String,
}

/// Reads a request body. Any error here means the body is not a v1 AdmissionReview at all;
/// an object that cannot be read is not an error but `Decoded::Unreadable`, to be denied.
pub fn decode(body: &[u8]) -> Result<Request, ReviewError> {
    decode_with(body, false)
}

/// `decode`, keeping the objects as JSON too when `for_cel` (the policy set has CEL rules).
pub fn decode_with(body: &[u8], for_cel: bool) -> Result<Request, ReviewError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| ReviewError::Json(e.to_string()))?;
    if envelope.api_version != API_VERSION {
        return Err(ReviewError::ApiVersion(envelope.api_version));
    }
    if envelope.kind != KIND {
        return Err(ReviewError::Kind(envelope.kind));
    }
    let mut r = envelope.request.ok_or(ReviewError::NoRequest)?;
    if r.uid.is_empty() {
        return Err(ReviewError::EmptyUid);
    }
    let judged = WorkloadKind::from_group_kind(&r.kind.group, &r.kind.kind);
    let json = for_cel.then(|| {
        let parse = |raw: Option<&RawValue>| {
            raw.and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok())
                .filter(|v| !v.is_null())
        };
        let resource = r.resource.take().unwrap_or_default();
        Box::new(RequestJson {
            group: resource.group,
            version: resource.version,
            resource: resource.resource,
            object: parse(r.object),
            old_object: parse(r.old_object),
            user_info: serde_json::to_value(&r.user_info).unwrap_or_default(),
        })
    });
    let object = decode_object(judged, r.object);
    // The old object only matters to tell whether an UPDATE changed the pod spec: when its
    // spec's text is the object's, that is told without decoding it.
    let old_object = match (&r.operation, judged, r.object, r.old_object) {
        (Operation::Update, Some(kind), Some(new), Some(old))
            if workload::same_pod_spec_text(kind, new.get(), old.get()) =>
        {
            Decoded::SameSpec
        }
        (Operation::Update, ..) => decode_object(judged, r.old_object),
        _ => Decoded::Skipped,
    };
    Ok(Request {
        uid: r.uid,
        operation: r.operation,
        kind: r.kind.kind,
        workload: judged,
        sub_resource: r.sub_resource.filter(|s| !s.is_empty()),
        namespace: r.namespace.unwrap_or_default(),
        name: r.name.unwrap_or_default(),
        user: r.user_info.and_then(|u| u.username).unwrap_or_default(),
        dry_run: r.dry_run.unwrap_or(false),
        object,
        old_object,
        json,
    })
}

fn decode_object(kind: Option<WorkloadKind>, raw: Option<&RawValue>) -> Decoded {
    let (Some(kind), Some(raw)) = (kind, raw) else {
        return if raw.is_none() {
            Decoded::Absent
        } else {
            Decoded::Skipped
        };
    };
    Decoded::from_result(kind, workload::decode_json(kind, raw.get()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

/// `admission.k8s.io/v1` AdmissionResponse, field for field as the apiserver reads it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    /// Base64 of the RFC 6902 JSON array: the JSON form of Go's `[]byte`.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<&'a str, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// The metav1.Status of a denial; kubectl shows `reason` in parentheses and then `message`.
#[derive(Serialize)]
struct StatusOut {
    code: u16,
    reason: &'static str,
    message: String,
}

/// The `/validate` answer. It never carries a patch: the apiserver fails a validating webhook
/// that returns one.
pub fn encode_validation(req: &Request, verdict: &Verdict) -> Vec<u8> {
    let texts = verdict.texts();
    let status = match verdict {
        Verdict::Unjudgeable(reason) => Some(StatusOut {
            code: 400,
            reason: "BadRequest",
            message: format!("portcullis cannot judge this {}: {reason}", req.kind),
        }),
        _ => verdict
            .denial_message(&req.kind, &subject_name(req), &texts)
            .map(|message| StatusOut {
                code: 403,
                reason: "Forbidden",
                message,
            }),
    };
    encode(ResponseOut {
        uid: &req.uid,
        allowed: verdict.is_allowed(),
        status,
        patch: None,
        patch_type: None,
        audit_annotations: verdict.audit_annotations(&texts),
        warnings: verdict.warnings(),
    })
}

/// The `/mutate` answer: always allowed, with a patch only when there is something to change.
pub fn encode_mutation(req: &Request, ops: &[PatchOperation]) -> Vec<u8> {
    let patch = (!ops.is_empty()).then(|| {
        let json = serde_json::to_vec(ops).expect("patch operations always serialize");
        base64::engine::general_purpose::STANDARD.encode(json)
    });
    encode(ResponseOut {
        uid: &req.uid,
        allowed: true,
        status: None,
        patch_type: patch.as_ref().map(|_| "JSONPatch"),
        patch,
        audit_annotations: BTreeMap::new(),
        warnings: Vec::new(),
    })
}

fn encode(response: ResponseOut) -> Vec<u8> {
    serde_json::to_vec(&ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response,
    })
    .expect("responses always serialize")
}

/// The name users know the object by: its name, or generateName for pods a controller creates.
fn subject_name(req: &Request) -> String {
    match req.object.workload() {
        Some(w) if !w.name.is_empty() => w.name.clone(),
        _ => req.name.clone(),
    }
}
