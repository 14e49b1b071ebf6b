//! `liveness-probe` and `readiness-probe`: every regular container declares the probe (or,
//! by policy, any of several). Init and ephemeral containers cannot carry them. Batch
//! workloads run to completion and are exempt by default; the exemption trusts
//! ownerReferences, which is acceptable only because probes guard reliability, not security.

use super::{Finding, Target};
use crate::policy::{ProbeCheck, ProbeField};
use crate::verdict::Text;
use crate::workload::ContainerKind;

pub fn check<'a>(
    params: &'a ProbeCheck,
    own: ProbeField,
    target: &'a Target<'a>,
) -> impl Iterator<Item = Finding> + 'a {
    let exempt = params
        .exempt_kinds
        .iter()
        .any(|&k| k == target.kind || target.workload.is_owned_by(k));
    let accepted = params.satisfied_by.as_deref().unwrap_or(own.alone());
    // An iterator, not a list: the runner appends the findings straight to the verdict. An
    // exempt workload's containers are not walked at all.
    (!exempt)
        .then(|| target.containers())
        .into_iter()
        .flatten()
        .filter(|c| c.kind == ContainerKind::Containers)
        .filter(move |c| {
            !accepted.iter().any(|p| match p {
                ProbeField::LivenessProbe => c.liveness_probe.is_some(),
                ProbeField::ReadinessProbe => c.readiness_probe.is_some(),
                ProbeField::StartupProbe => c.startup_probe.is_some(),
            })
        })
        .map(move |c| {
            // One probe accepted (the usual case): every word is the same for every object.
            let first = accepted[0].texts();
            let problem: Text = match accepted {
                [_] => first.missing.into(),
                many => {
                    let names: Vec<&str> = many.iter().map(|p| p.as_str()).collect();
                    format!("has none of {}", names.join(", ")).into()
                }
            };
            let (field, add) = target.container_fix(&c, accepted[0].as_str(), first.yaml);
            Finding {
                subject: c.subject(),
                field,
                problem,
                fix: first.fix.into(),
                add,
            }
        })
}

/// A probe's problem, fix and fix YAML, spelt out at compile time from its field name.
macro_rules! probe_texts {
    ($field:literal) => {
        ProbeTexts {
            missing: concat!("has no ", $field),
            fix: concat!("add a ", $field, " (httpGet, tcpSocket, grpc or exec)"),
            yaml: concat!(
                $field,
                ":\n  httpGet:\n    path: /healthz  # an endpoint of your app\n    port: 8080"
            ),
        }
    };
}

struct ProbeTexts {
    missing: &'static str,
    fix: &'static str,
    yaml: &'static str,
}

impl ProbeField {
    /// The probe alone, as the list of probes that satisfy the check.
    fn alone(self) -> &'static [Self] {
        match self {
            Self::LivenessProbe => &[Self::LivenessProbe],
            Self::ReadinessProbe => &[Self::ReadinessProbe],
            Self::StartupProbe => &[Self::StartupProbe],
        }
    }

    fn texts(self) -> ProbeTexts {
        match self {
            Self::LivenessProbe => probe_texts!("livenessProbe"),
            Self::ReadinessProbe => probe_texts!("readinessProbe"),
            Self::StartupProbe => probe_texts!("startupProbe"),
        }
    }
}
