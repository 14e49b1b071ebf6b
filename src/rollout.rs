//! How one policy applies to one request: each check's effective mode (namespace labels,
//! per-namespace rules, the schedule) and the exemptions that lift violations. Pure: the
//! clock and the namespace's labels come in as data, so the server, `check`, `audit` and
//! `replay` resolve them the same way and tests pin any date.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;

use crate::policy::matching::{any_glob, image_matches};
use crate::policy::params::Params;
use crate::policy::{Date, Mode, Policy, RuleId};
use crate::verdict::{Exempted, ExemptionSource, Subject, Violation};
use crate::workload::ContainerKind;
use crate::workload::Workload;

/// The namespace label that sets every rule's mode; `portcullis.dev/mode.<rule>` sets one.
pub const MODE_LABEL: &str = "portcullis.dev/mode";
/// The annotation listing the checks a workload exempts itself from, where a policy allows it.
pub const EXEMPT_ANNOTATION: &str = "portcullis.dev/exempt";

/// What a decision depends on besides the policy and the object.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub today: Date,
    /// The request namespace's labels, when known. `None` (no cache, cache not yet synced,
    /// namespace not seen) means label rules and selectors do not match: the policy's own
    /// modes apply, so an unreachable API never blocks or relaxes anything.
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
    /// Param objects read from the cluster, when serving with one; the policy directory's
    /// are in the policy set.
    pub cluster_params: Option<&'a Params>,
}

impl Context<'_> {
    /// Today, with no namespace labels known: the offline commands' context.
    pub fn now() -> Context<'static> {
        Context {
            today: Date::today(),
            namespace_labels: None,
            cluster_params: None,
        }
    }
}

/// A rule's mode for one request, and the next scheduled step when the schedule set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effective {
    pub mode: Mode,
    pub next: Option<(Mode, Date)>,
}

/// The mode of `rule` (configured as `configured`) for a request in `namespace`. The first
/// that speaks wins: the namespace's per-rule label, its policy-wide label (both only when
/// the policy honours labels), the first matching `namespaceModes` rule, and last the
/// configured mode capped by the schedule's current stage.
pub fn effective_mode(
    policy: &Policy,
    rule: &RuleId,
    configured: Mode,
    namespace: &str,
    ctx: &Context,
) -> Effective {
    let spec = &policy.spec;
    let fixed = |mode| Effective { mode, next: None };
    if spec.namespace_labels
        && let Some(labels) = ctx.namespace_labels
        && let Some(mode) = label_mode(labels, rule)
    {
        return fixed(mode);
    }
    for scope in &spec.namespace_modes {
        let named = scope.names.is_empty() || any_glob(&scope.names, namespace);
        let selected = match (&scope.selector, ctx.namespace_labels) {
            (None, _) => true,
            (Some(s), Some(labels)) => s.matches(labels),
            (Some(_), None) => false,
        };
        if named && selected {
            if let Some(&mode) = scope.checks.get(rule) {
                return fixed(mode);
            }
            if let Some(mode) = scope.mode {
                return fixed(mode);
            }
        }
    }
    scheduled(policy, configured, ctx.today)
}

fn label_mode(labels: &BTreeMap<String, String>, rule: &RuleId) -> Option<Mode> {
    // Labels are few; scanning them avoids building the per-rule key on every request.
    let per_rule = labels.iter().find_map(|(k, v)| {
        k.strip_prefix(MODE_LABEL)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|&r| *rule == *r)
            .and_then(|_| Mode::parse(v))
    });
    per_rule.or_else(|| labels.get(MODE_LABEL).and_then(|v| Mode::parse(v)))
}

/// The configured mode under the schedule's cap for `today`, with the next step up if any.
fn scheduled(policy: &Policy, configured: Mode, today: Date) -> Effective {
    let stages = &policy.spec.schedule;
    let current = stages
        .iter()
        .position(|s| s.until.is_none_or(|until| today < until));
    let Some(i) = current else {
        return Effective {
            mode: configured,
            next: None,
        };
    };
    let cap = |stage: Option<&crate::policy::Stage>| match stage {
        Some(s) if s.mode.rank() < configured.rank() => s.mode,
        _ => configured,
    };
    let mode = cap(Some(&stages[i]));
    let next = stages[i].until.and_then(|until| {
        let next_mode = cap(stages.get(i + 1));
        (next_mode.rank() > mode.rank()).then_some((next_mode, until))
    });
    Effective { mode, next }
}

/// Marks the violations in `found` (all from `policy`) that an exemption lifts: the first
/// live policy exemption that matches, else the workload's own annotation where the policy
/// allows it. Expired exemptions are ignored everywhere.
pub fn apply_exemptions(
    policy: &Policy,
    namespace: &str,
    workload: &Workload,
    pod_spec: &PodSpec,
    ctx: &Context,
    found: &mut [Violation],
) {
    let spec = &policy.spec;
    let annotation = spec
        .annotation_exemptions
        .as_ref()
        .filter(|a| any_glob(&a.namespaces, namespace))
        .and_then(|a| {
            let listed = workload.pod_annotations().get(EXEMPT_ANNOTATION)?;
            Some((a, listed))
        });
    if spec.exemptions.is_empty() && annotation.is_none() {
        return;
    }
    for v in found {
        let declared = spec.exemptions.iter().find(|e| {
            ctx.today < e.expires
                && e.checks.contains(&v.rule)
                && any_glob(&e.namespaces, namespace)
                && any_glob(&e.names, &workload.name)
                && (e.images.is_empty() || images_match(&e.images, &v.subject, pod_spec))
        });
        if let Some(e) = declared {
            v.exemption = Some(Box::new(Exempted {
                name: e.name.clone(),
                source: ExemptionSource::Policy,
                reason: e.reason.clone(),
                owner: e.owner.clone(),
                expires: Some(e.expires),
                expiring_soon: ctx.today.days_until(e.expires)
                    <= i64::from(spec.exemption_warning_days),
            }));
            continue;
        }
        if let Some((allowed, listed)) = annotation
            && allowed.checks.contains(&v.rule)
            && listed.split(',').any(|c| c.trim() == v.rule.as_str())
        {
            v.exemption = Some(Box::new(Exempted {
                name: EXEMPT_ANNOTATION.to_owned(),
                source: ExemptionSource::Annotation,
                reason: format!("annotation {EXEMPT_ANNOTATION}"),
                owner: workload.name.clone(),
                expires: None,
                expiring_soon: false,
            }));
        }
    }
}

/// A container violation is exempt when that container's image matches; a pod-level one
/// only when every container's image does.
fn images_match(patterns: &[String], subject: &Subject, spec: &PodSpec) -> bool {
    let matches = |image: Option<&str>| {
        image.is_some_and(|image| patterns.iter().any(|p| image_matches(p, image)))
    };
    match subject {
        Subject::Container { kind, index, .. } => matches(container_image(spec, *kind, *index)),
        Subject::Pod | Subject::Object => all_images(spec).all(|i| matches(Some(i))),
    }
}

fn container_image(spec: &PodSpec, kind: ContainerKind, index: usize) -> Option<&str> {
    match kind {
        ContainerKind::Containers => spec.containers.get(index)?.image.as_deref(),
        ContainerKind::InitContainers => {
            spec.init_containers.as_ref()?.get(index)?.image.as_deref()
        }
        ContainerKind::EphemeralContainers => spec
            .ephemeral_containers
            .as_ref()?
            .get(index)?
            .image
            .as_deref(),
    }
}

fn all_images(spec: &PodSpec) -> impl Iterator<Item = &str> {
    let regular = spec.containers.iter().map(|c| c.image.as_deref());
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.image.as_deref());
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| c.image.as_deref());
    regular
        .chain(init)
        .chain(ephemeral)
        .map(|i| i.unwrap_or(""))
}
