//! The checks: pure functions from a pod spec (and the workload it belongs to) to findings.
//! The runner here wraps each finding into a `Violation` carrying the check id, the mode and
//! the policy, so the check modules only say what is wrong, where, and how to fix it.

mod probes;
mod pss;
mod resources;
mod run_as_non_root;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Lifecycle, PodSecurityContext, PodSpec, Probe, ResourceRequirements,
    SecurityContext,
};

use crate::defaults::Overlay;
use crate::policy::{CheckId, Mode, Policy, RuleId};
use crate::rollout::Effective;
use crate::verdict::{FieldPath, Fix, Subject, Text, Violation};
use crate::workload::{ContainerKind, Workload, WorkloadKind, pod_spec_field};

/// What a check is judging.
pub struct Target<'a> {
    pub kind: WorkloadKind,
    pub workload: &'a Workload,
    /// The pod spec as submitted. Read the pod's security context with
    /// `pod_security_context` and containers with `containers`: those see the defaults.
    pub spec: &'a PodSpec,
    /// When the pod is judged as the pod defaults would patch it, the fields they touch,
    /// filled (`defaults::overlay`): its pod security context, and its containers' and init
    /// containers' security contexts and resources, stand in for `spec`'s own.
    pub defaulted: Option<&'a Overlay<'a>>,
}

impl<'a> Target<'a> {
    pub fn pod_security_context(&self) -> Option<&'a PodSecurityContext> {
        match self.defaulted {
            Some(overlay) => overlay.security_context.as_deref(),
            None => self.spec.security_context.as_ref(),
        }
    }

    /// Containers, then init containers, then ephemeral containers, each with its index.
    pub fn containers(&self) -> impl Iterator<Item = ContainerRef<'a>> + use<'a> {
        let (spec, defaulted) = (self.spec, self.defaulted);
        // The overlay's container at the same place, whose touched fields are read instead.
        let touched = move |kind: ContainerKind, index: usize| {
            let overlay = defaulted?;
            match kind {
                ContainerKind::Containers => overlay.containers.get(index),
                ContainerKind::InitContainers => overlay.init_containers.get(index),
                ContainerKind::EphemeralContainers => None,
            }
        };
        let regular = move |kind: ContainerKind, (index, c): (usize, &'a Container)| {
            let (security_context, resources) = match touched(kind, index) {
                Some(t) => (t.security_context.as_deref(), t.resources.as_deref()),
                None => (c.security_context.as_ref(), c.resources.as_ref()),
            };
            ContainerRef {
                kind,
                index,
                name: &c.name,
                security_context,
                resources,
                liveness_probe: c.liveness_probe.as_ref(),
                readiness_probe: c.readiness_probe.as_ref(),
                startup_probe: c.startup_probe.as_ref(),
                ports: c.ports.as_deref().unwrap_or_default(),
                lifecycle: c.lifecycle.as_ref(),
            }
        };
        let ephemeral = spec
            .ephemeral_containers
            .iter()
            .flatten()
            .enumerate()
            .map(|(index, c)| ContainerRef {
                kind: ContainerKind::EphemeralContainers,
                index,
                name: &c.name,
                security_context: c.security_context.as_ref(),
                resources: c.resources.as_ref(),
                liveness_probe: c.liveness_probe.as_ref(),
                readiness_probe: c.readiness_probe.as_ref(),
                startup_probe: c.startup_probe.as_ref(),
                ports: c.ports.as_deref().unwrap_or_default(),
                lifecycle: c.lifecycle.as_ref(),
            });
        let init = spec.init_containers.iter().flatten().enumerate();
        spec.containers
            .iter()
            .enumerate()
            .map(move |c| regular(ContainerKind::Containers, c))
            .chain(init.map(move |c| regular(ContainerKind::InitContainers, c)))
            .chain(ephemeral)
    }

    /// Path of a field in a container, as written in the submitted manifest.
    fn container_field(&self, c: &ContainerRef, suffix: impl Into<Text>) -> FieldPath {
        FieldPath {
            leaf: suffix.into(),
            ..self.container_path(c)
        }
    }

    /// Path of a container itself: where a fix's YAML goes.
    fn container_path(&self, c: &ContainerRef) -> FieldPath {
        FieldPath {
            base: pod_spec_field(self.kind),
            container: Some((c.kind, c.index)),
            leaf: Text::Borrowed(""),
        }
    }

    /// A fix that adds `yaml` to the container.
    fn add_to_container(&self, c: &ContainerRef, yaml: impl Into<Text>) -> Option<Fix> {
        Some(Fix {
            at: self.container_path(c),
            yaml: yaml.into(),
        })
    }

    /// The path of `suffix` in the container, and a fix that adds `yaml` to the container:
    /// what most findings carry.
    fn container_fix(
        &self,
        c: &ContainerRef,
        suffix: impl Into<Text>,
        yaml: impl Into<Text>,
    ) -> (FieldPath, Option<Fix>) {
        (
            self.container_field(c, suffix),
            self.add_to_container(c, yaml),
        )
    }

    fn pod_field(&self, suffix: impl Into<Text>) -> FieldPath {
        FieldPath {
            base: pod_spec_field(self.kind),
            container: None,
            leaf: suffix.into(),
        }
    }
}

/// One thing wrong, before the runner attaches check, mode and policy.
pub struct Finding {
    pub subject: Subject,
    pub field: FieldPath,
    pub problem: Text,
    pub fix: Text,
    pub add: Option<Fix>,
}

/// Runs every check of `policy` whose effective mode (as `mode_of` resolves the configured
/// one) is not off, appending its violations to `out`.
pub fn run(
    policy: &Policy,
    target: &Target,
    mode_of: impl Fn(&RuleId, Mode) -> Effective,
    out: &mut Vec<Violation>,
) {
    let checks = &policy.spec.checks;
    for (id, configured) in checks.configured() {
        let rule = id.rule();
        let effective = mode_of(&rule, configured);
        if effective.mode == Mode::Off {
            continue;
        }
        let wrap = |f: Finding| Violation {
            rule: rule.clone(),
            mode: effective.mode,
            policy: policy.name.clone(),
            subject: f.subject,
            field: f.field,
            problem: f.problem,
            fix: f.fix,
            add: f.add,
            next: effective.next,
            exemption: None,
        };
        match id {
            CheckId::RunAsNonRoot => {
                if let Some(c) = &checks.run_as_non_root {
                    out.extend(run_as_non_root::check(c, target).map(wrap));
                }
            }
            CheckId::LivenessProbe => {
                if let Some(c) = &checks.liveness_probe {
                    let own = crate::policy::ProbeField::LivenessProbe;
                    out.extend(probes::check(c, own, target).map(wrap));
                }
            }
            CheckId::ReadinessProbe => {
                if let Some(c) = &checks.readiness_probe {
                    let own = crate::policy::ProbeField::ReadinessProbe;
                    out.extend(probes::check(c, own, target).map(wrap));
                }
            }
            CheckId::ResourceLimits => {
                if let Some(c) = &checks.resource_limits {
                    out.extend(resources::check(c, target).map(wrap));
                }
            }
            pss_control => {
                out.extend(
                    pss::check(pss_control, checks, target)
                        .into_iter()
                        .map(wrap),
                );
            }
        }
    }
}

/// A container of any of the three kinds, seen through the fields checks read.
pub struct ContainerRef<'a> {
    pub kind: ContainerKind,
    pub index: usize,
    pub name: &'a str,
    pub security_context: Option<&'a SecurityContext>,
    pub resources: Option<&'a ResourceRequirements>,
    pub liveness_probe: Option<&'a Probe>,
    pub readiness_probe: Option<&'a Probe>,
    pub startup_probe: Option<&'a Probe>,
    pub ports: &'a [ContainerPort],
    pub lifecycle: Option<&'a Lifecycle>,
}

impl<'a> ContainerRef<'a> {
    pub fn subject(&self) -> Subject {
        Subject::Container {
            kind: self.kind,
            index: self.index,
            name: self.name.to_owned(),
        }
    }
}
