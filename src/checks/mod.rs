//! The checks: pure functions from a pod spec (and the workload it belongs to) to findings.
//! The runner here wraps each finding into a `Violation` carrying the check id, the mode and
//! the policy, so the check modules only say what is wrong, where, and how to fix it.

mod probes;
mod pss;
mod resources;
mod run_as_non_root;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Lifecycle, PodSpec, Probe, ResourceRequirements, SecurityContext,
};

use crate::policy::{Mode, Policy};
use crate::verdict::{ContainerKind, Subject, Violation};
use crate::workload::{Workload, WorkloadKind, pod_spec_field};

/// Stable check ids: they appear in messages, metrics, logs and policy files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckId {
    RunAsNonRoot,
    LivenessProbe,
    ReadinessProbe,
    ResourceLimits,
    PssPrivileged,
    PssHostNamespaces,
    PssHostPathVolumes,
    PssHostPorts,
    PssCapabilitiesBaseline,
    PssCapabilitiesRestricted,
    PssSeccomp,
    PssProcMount,
    PssSelinux,
    PssApparmor,
    PssSysctls,
    PssWindowsHostProcess,
    PssHostProbes,
    PssVolumeTypes,
    PssPrivilegeEscalation,
    PssRunAsNonRoot,
    PssRunAsUser,
}

impl CheckId {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunAsNonRoot => "run-as-non-root",
            Self::LivenessProbe => "liveness-probe",
            Self::ReadinessProbe => "readiness-probe",
            Self::ResourceLimits => "resource-limits",
            Self::PssPrivileged => "pss-privileged",
            Self::PssHostNamespaces => "pss-host-namespaces",
            Self::PssHostPathVolumes => "pss-host-path-volumes",
            Self::PssHostPorts => "pss-host-ports",
            Self::PssCapabilitiesBaseline => "pss-capabilities-baseline",
            Self::PssCapabilitiesRestricted => "pss-capabilities-restricted",
            Self::PssSeccomp => "pss-seccomp",
            Self::PssProcMount => "pss-proc-mount",
            Self::PssSelinux => "pss-selinux",
            Self::PssApparmor => "pss-apparmor",
            Self::PssSysctls => "pss-sysctls",
            Self::PssWindowsHostProcess => "pss-windows-host-process",
            Self::PssHostProbes => "pss-host-probes",
            Self::PssVolumeTypes => "pss-volume-types",
            Self::PssPrivilegeEscalation => "pss-privilege-escalation",
            Self::PssRunAsNonRoot => "pss-run-as-non-root",
            Self::PssRunAsUser => "pss-run-as-user",
        }
    }
}

/// What a check is judging.
pub struct Target<'a> {
    pub kind: WorkloadKind,
    pub workload: &'a Workload,
    pub spec: &'a PodSpec,
}

impl Target<'_> {
    /// Dotted path of a field in a container, as written in the submitted manifest.
    fn container_field(&self, c: &ContainerRef, suffix: &str) -> String {
        format!(
            "{}.{}[{}].{suffix}",
            pod_spec_field(self.kind),
            c.kind.field(),
            c.index
        )
    }

    fn pod_field(&self, suffix: &str) -> String {
        format!("{}.{suffix}", pod_spec_field(self.kind))
    }
}

/// One thing wrong, before the runner attaches check, mode and policy.
pub struct Finding {
    pub subject: Subject,
    pub field: String,
    pub problem: String,
    pub fix: String,
}

/// Runs every check of `policy` that is not off, appending its violations to `out`.
pub fn run(policy: &Policy, target: &Target, out: &mut Vec<Violation>) {
    let checks = &policy.spec.checks;
    let emit = |check: CheckId, mode: Mode| {
        let name = &policy.name;
        move |f: Finding| Violation {
            check,
            mode,
            policy: name.clone(),
            subject: f.subject,
            field: f.field,
            problem: f.problem,
            fix: f.fix,
        }
    };
    if let Some(c) = active(&checks.run_as_non_root, |c| c.mode) {
        let wrap = emit(CheckId::RunAsNonRoot, c.mode);
        out.extend(run_as_non_root::check(c, target).map(wrap));
    }
    if let Some(c) = active(&checks.liveness_probe, |c| c.mode) {
        let wrap = emit(CheckId::LivenessProbe, c.mode);
        let own = crate::policy::ProbeField::LivenessProbe;
        out.extend(probes::check(c, own, target).into_iter().map(wrap));
    }
    if let Some(c) = active(&checks.readiness_probe, |c| c.mode) {
        let wrap = emit(CheckId::ReadinessProbe, c.mode);
        let own = crate::policy::ProbeField::ReadinessProbe;
        out.extend(probes::check(c, own, target).into_iter().map(wrap));
    }
    if let Some(c) = active(&checks.resource_limits, |c| c.mode) {
        let wrap = emit(CheckId::ResourceLimits, c.mode);
        out.extend(resources::check(c, target).map(wrap));
    }
    for (id, mode, level) in pss::configured(checks) {
        if mode != Mode::Off {
            out.extend(
                pss::check(id, level, target)
                    .into_iter()
                    .map(emit(id, mode)),
            );
        }
    }
}

fn active<T>(check: &Option<T>, mode: impl Fn(&T) -> Mode) -> Option<&T> {
    check.as_ref().filter(|c| mode(c) != Mode::Off)
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

/// Containers, then init containers, then ephemeral containers, each with its index.
pub fn containers(spec: &PodSpec) -> impl Iterator<Item = ContainerRef<'_>> {
    let init = spec.init_containers.iter().flatten().enumerate();
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
    spec.containers
        .iter()
        .enumerate()
        .map(|(i, c)| regular(ContainerKind::Containers, i, c))
        .chain(init.map(|(i, c)| regular(ContainerKind::InitContainers, i, c)))
        .chain(ephemeral)
}

fn regular(kind: ContainerKind, index: usize, c: &Container) -> ContainerRef<'_> {
    ContainerRef {
        kind,
        index,
        name: &c.name,
        security_context: c.security_context.as_ref(),
        resources: c.resources.as_ref(),
        liveness_probe: c.liveness_probe.as_ref(),
        readiness_probe: c.readiness_probe.as_ref(),
        startup_probe: c.startup_probe.as_ref(),
        ports: c.ports.as_deref().unwrap_or_default(),
        lifecycle: c.lifecycle.as_ref(),
    }
}
