//! The pure core: `validate` and `mutate` take the loaded policy set and a decoded request and
//! return a `Verdict` or patch operations. No I/O, no async, no wire format: the HTTP layer
//! calls these between decoding and encoding, and the `check` command calls them on manifests.

use std::borrow::Cow;

use json_patch::PatchOperation;

use crate::checks::{self, Target};
use crate::defaults;
use crate::policy::{MutationTarget, PolicySet};
use crate::request::{Decoded, Operation, Request};
use crate::rollout::{self, Context};
use crate::verdict::{Skip, Verdict};
use crate::workload::WorkloadKind;

/// Pod subresources that cannot change what runs in the pod. Any other one (`ephemeralcontainers`,
/// `resize`, and whatever a later Kubernetes adds) is judged as the pod it produces: the same
/// fail-safe rule Pod Security Admission follows, since CVE-2023-2727 came through such a gap.
const HARMLESS_POD_SUBRESOURCES: &[&str] = &[
    "attach",
    "binding",
    "eviction",
    "exec",
    "log",
    "portforward",
    "proxy",
    "status",
];

/// Decides whether a request is about a workload portcullis judges at all.
fn gate(req: &Request) -> Result<WorkloadKind, Skip> {
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return Err(Skip::Operation);
    }
    let kind = req.workload.ok_or(Skip::Kind)?;
    match req.sub_resource.as_deref() {
        None | Some("") => Ok(kind),
        Some(sub) if kind == WorkloadKind::Pod && !HARMLESS_POD_SUBRESOURCES.contains(&sub) => {
            Ok(kind)
        }
        Some(_) => Err(Skip::SubResource),
    }
}

/// Judges a request against every policy that applies to its namespace.
pub fn validate(set: &PolicySet, req: &Request, ctx: &Context) -> Verdict {
    let kind = match gate(req) {
        Ok(kind) => kind,
        Err(skip) => return Verdict::Skipped(skip),
    };
    let mut policies = set
        .policies
        .iter()
        .filter(|p| !p.exempts_namespace(&req.namespace))
        .peekable();
    if policies.peek().is_none() {
        return Verdict::Skipped(Skip::ExemptNamespace);
    }
    let workload = match &req.object {
        Decoded::Workload(w) => w,
        Decoded::Unreadable(reason) => return Verdict::Unjudgeable(reason.clone()),
        Decoded::Absent | Decoded::Skipped => {
            return Verdict::Unjudgeable(format!(
                "the review carries no {} object to judge",
                kind.as_str()
            ));
        }
    };
    let Some(spec) = &workload.pod_spec else {
        return Verdict::Unjudgeable(format!(
            "{} has no pod spec at {}",
            kind.as_str(),
            crate::workload::pod_spec_field(kind)
        ));
    };
    // Only an unchanged pod spec may skip: metadata, deletionTimestamp and ownerReferences are
    // all user-writable and must never switch evaluation off (CVE-2023-34091).
    if req.operation == Operation::Update
        && req
            .old_object
            .workload()
            .is_some_and(|old| old.pod_spec.as_ref() == Some(spec))
    {
        return Verdict::Skipped(Skip::SpecUnchanged);
    }
    let spec = defaulted_template(set, req, kind, spec);
    let target = Target {
        kind,
        workload,
        spec: &spec,
    };
    let mut violations = Vec::new();
    for policy in policies {
        let start = violations.len();
        let mode_of = |check, configured| {
            rollout::effective_mode(policy, check, configured, &req.namespace, ctx)
        };
        checks::run(policy, &target, mode_of, &mut violations);
        let found = &mut violations[start..];
        rollout::apply_exemptions(policy, &req.namespace, workload, &spec, ctx, found);
    }
    Verdict::Judged(violations)
}

/// A controller is judged by the pod it will create: with the pod defaults filled in when the
/// mutating webhook patches pods in this namespace. A Pod reaches `/validate` already patched.
fn defaulted_template<'a>(
    set: &PolicySet,
    req: &Request,
    kind: WorkloadKind,
    spec: &'a k8s_openapi::api::core::v1::PodSpec,
) -> Cow<'a, k8s_openapi::api::core::v1::PodSpec> {
    match set.mutation() {
        Some((policy, mutation))
            if kind.is_controller()
                && mutation.targets.contains(&MutationTarget::Pods)
                && !policy.exempts_namespace(&req.namespace) =>
        {
            let mut filled = spec.clone();
            defaults::fill(mutation, &mut filled);
            Cow::Owned(filled)
        }
        _ => Cow::Borrowed(spec),
    }
}

/// The JSON Patch that fills safe defaults into the request's object; empty when there is
/// nothing to change or nothing to patch. Never denies: `/validate` has the last word.
pub fn mutate(set: &PolicySet, req: &Request) -> Vec<PatchOperation> {
    let Ok(kind) = gate(req) else {
        return Vec::new();
    };
    let Some((policy, mutation)) = set.mutation() else {
        return Vec::new();
    };
    // Subresources and Pod UPDATEs are left alone: a pod's spec is immutable after creation,
    // so a patch there would turn a harmless update into a rejected one.
    let patchable = match kind {
        WorkloadKind::Pod => {
            mutation.targets.contains(&MutationTarget::Pods) && req.operation == Operation::Create
        }
        _ => mutation.targets.contains(&MutationTarget::Controllers),
    };
    if !patchable || req.sub_resource.is_some() || policy.exempts_namespace(&req.namespace) {
        return Vec::new();
    }
    let Some(spec) = req.object.workload().and_then(|w| w.pod_spec.as_ref()) else {
        return Vec::new();
    };
    let mut touched = defaults::touched_fields(spec);
    defaults::apply(mutation, &mut touched, kind.pod_spec_path())
}
