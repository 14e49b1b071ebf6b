//! The pure core: `validate` and `mutate` take the loaded policy set and a decoded request and
//! return a `Verdict` or patch operations. No I/O, no async, no wire format: the HTTP layer
//! calls these between decoding and encoding, and the `check` command calls them on manifests.

mod cel;

pub use cel::{matched as cel_rule_matched, object_labels, selects};

use std::cell::Cell;

use crate::checks::{self, Target};
use crate::defaults::{self, JsonPatch, Overlay};

use crate::policy::{Mode, Mutation, MutationTarget, PolicySet};
use crate::request::{Decoded, Operation, Request};
use crate::rollout::{self, Context};
use crate::verdict::{Findings, Skip, Verdict, Violation};
use crate::workload::{WorkloadKind, pod_spec_field};

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

/// Judges a request against every policy: the built-in checks of those that apply to its
/// namespace, and every CEL rule that matches it.
pub fn validate(set: &PolicySet, req: &Request, ctx: &Context) -> Verdict {
    let checked = validate_checks(set, req, ctx);
    let Some(json) = req.json.as_deref().filter(|_| set.has_cel()) else {
        return checked;
    };
    let found = cel::judge(set, req, json, ctx);
    match checked {
        Verdict::Judged(mut checks) => {
            checks.violations.extend(found.violations);
            checks.annotations.extend(found.annotations);
            checks.ignored.extend(found.ignored);
            Verdict::Judged(checks)
        }
        Verdict::Skipped(_) if found != Findings::default() => Verdict::Judged(found),
        // A CEL rule that matched and passed still means the object was judged.
        other => other,
    }
}

/// The built-in checks' verdict.
fn validate_checks(set: &PolicySet, req: &Request, ctx: &Context) -> Verdict {
    let kind = match gate(req) {
        Ok(kind) => kind,
        Err(skip) => return Verdict::Skipped(skip),
    };
    if set
        .policies
        .iter()
        .all(|p| p.exempts_namespace(&req.namespace))
    {
        return Verdict::Skipped(Skip::ExemptNamespace);
    }
    let workload = match &req.object {
        Decoded::Workload(w) => w,
        Decoded::SameSpec if req.operation == Operation::Update => {
            return Verdict::Skipped(Skip::SpecUnchanged);
        }
        Decoded::Unreadable(reason) => return Verdict::Unjudgeable(reason.clone()),
        Decoded::Absent | Decoded::Skipped | Decoded::SameSpec => {
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
    let unchanged = match &req.old_object {
        Decoded::SameSpec => true,
        old => old
            .workload()
            .is_some_and(|old| old.pod_spec.as_ref() == Some(spec)),
    };
    if req.operation == Operation::Update && unchanged {
        return Verdict::Skipped(Skip::SpecUnchanged);
    }
    // A controller is judged by the pod it will create, with the pod defaults filled in. A
    // Pod reaches `/validate` already patched.
    let pod_defaults = pod_defaults(set, req);
    let template = pod_defaults
        .filter(|_| kind.is_controller())
        .map(|mutation| defaults::overlay(mutation, spec));
    let judge_with = |defaulted: Option<&Overlay>, modes: &dyn Fn(Mode) -> bool| {
        let target = Target {
            kind,
            workload,
            spec,
            defaulted,
        };
        judge(set, req, ctx, &target, modes)
    };
    let patched_on_create = kind == WorkloadKind::Pod
        && req.operation == Operation::Create
        && req.sub_resource.is_none();
    let Some(mutation) = pod_defaults.filter(|_| patched_on_create) else {
        return Verdict::Judged(judge_with(template.as_ref(), &|_| true).into());
    };
    // Audit and warn predict what enforce would deny, and the enforcing install patches a new
    // Pod before judging it. So audit and warn judge the Pod as the pod defaults would patch
    // it, even where no mutating webhook ran (the audit install has none). Enforced findings
    // are judged on the Pod as it arrived: without the mutating webhook it really is
    // unpatched. Each check runs once, on one of the two; the defaults are filled only when
    // a check is in audit or warn mode for this request.
    let predicting = Cell::new(false);
    let mut violations = judge_with(None, &|mode| {
        predicting.set(predicting.get() || mode != Mode::Enforce);
        mode == Mode::Enforce
    });
    if predicting.get() {
        let patched = defaults::overlay(mutation, spec);
        violations.extend(judge_with(Some(&patched), &|mode| mode != Mode::Enforce));
    }
    Verdict::Judged(violations.into())
}

/// Every violation of `target` under each policy that applies to the request's namespace,
/// from the checks whose effective mode `modes` accepts (a check it refuses is not run).
fn judge(
    set: &PolicySet,
    req: &Request,
    ctx: &Context,
    target: &Target,
    modes: &dyn Fn(Mode) -> bool,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    for policy in set
        .policies
        .iter()
        .filter(|p| !p.exempts_namespace(&req.namespace))
    {
        let start = violations.len();
        let mode_of = |rule: &_, configured| {
            let mut effective =
                rollout::effective_mode(policy, rule, configured, &req.namespace, ctx);
            if effective.mode != Mode::Off && !modes(effective.mode) {
                effective.mode = Mode::Off;
            }
            effective
        };
        checks::run(policy, target, mode_of, &mut violations);
        let found = &mut violations[start..];
        let (workload, spec) = (target.workload, target.spec);
        rollout::apply_exemptions(policy, &req.namespace, workload, spec, ctx, found);
    }
    violations
}

/// The pod defaults, when the mutating webhook patches pods in the request's namespace.
fn pod_defaults<'a>(set: &'a PolicySet, req: &Request) -> Option<&'a Mutation> {
    let (policy, mutation) = set.mutation()?;
    let patched = mutation.targets.contains(&MutationTarget::Pods)
        && !policy.exempts_namespace(&req.namespace);
    patched.then_some(mutation)
}

/// The JSON Patch that fills safe defaults into the request's object; empty when there is
/// nothing to change or nothing to patch. Never denies: `/validate` has the last word.
pub fn mutate(set: &PolicySet, req: &Request) -> JsonPatch {
    let Ok(kind) = gate(req) else {
        return JsonPatch::default();
    };
    let Some((policy, mutation)) = set.mutation() else {
        return JsonPatch::default();
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
        return JsonPatch::default();
    }
    let Some(spec) = req.object.workload().and_then(|w| w.pod_spec.as_ref()) else {
        return JsonPatch::default();
    };
    defaults::apply(mutation, spec, pod_spec_field(kind))
}
