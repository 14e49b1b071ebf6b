//! `liveness-probe` and `readiness-probe`: every regular container declares the probe (or,
//! by policy, any of several). Init and ephemeral containers cannot carry them. Batch
//! workloads run to completion and are exempt by default; the exemption trusts
//! ownerReferences, which is acceptable only because probes guard reliability, not security.

use super::{Finding, Target, containers};
use crate::policy::{ProbeCheck, ProbeField};
use crate::verdict::Text;
use crate::workload::ContainerKind;

pub fn check(params: &ProbeCheck, own: ProbeField, target: &Target) -> Vec<Finding> {
    let exempt = params
        .exempt_kinds
        .iter()
        .any(|&k| k == target.kind || target.workload.is_owned_by(k));
    if exempt {
        return Vec::new();
    }
    let accepted = params
        .satisfied_by
        .as_deref()
        .unwrap_or(std::slice::from_ref(&own));
    containers(target.spec)
        .filter(|c| c.kind == ContainerKind::Containers)
        .filter(|c| {
            !accepted.iter().any(|p| match p {
                ProbeField::LivenessProbe => c.liveness_probe.is_some(),
                ProbeField::ReadinessProbe => c.readiness_probe.is_some(),
                ProbeField::StartupProbe => c.startup_probe.is_some(),
            })
        })
        .map(|c| {
            // One probe accepted (the usual case): every word is the same for every object.
            let (problem, fix, yaml): (Text, Text, Text) = match accepted {
                [one] => (one.missing().into(), one.fix().into(), one.yaml().into()),
                many => {
                    let names: Vec<&str> = many.iter().map(|p| p.as_str()).collect();
                    let problem = format!("has none of {}", names.join(", "));
                    (problem.into(), many[0].fix().into(), many[0].yaml().into())
                }
            };
            Finding {
                subject: c.subject(),
                field: target.container_field(&c, accepted[0].as_str()),
                problem,
                fix,
                add: target.add_to_container(&c, yaml),
            }
        })
        .collect()
}

impl ProbeField {
    fn missing(self) -> &'static str {
        match self {
            Self::LivenessProbe => "has no livenessProbe",
            Self::ReadinessProbe => "has no readinessProbe",
            Self::StartupProbe => "has no startupProbe",
        }
    }

    fn fix(self) -> &'static str {
        match self {
            Self::LivenessProbe => "add a livenessProbe (httpGet, tcpSocket, grpc or exec)",
            Self::ReadinessProbe => "add a readinessProbe (httpGet, tcpSocket, grpc or exec)",
            Self::StartupProbe => "add a startupProbe (httpGet, tcpSocket, grpc or exec)",
        }
    }

    fn yaml(self) -> &'static str {
        match self {
            Self::LivenessProbe => {
                "livenessProbe:\n  httpGet:\n    path: /healthz  # an endpoint of your app\n    port: 8080"
            }
            Self::ReadinessProbe => {
                "readinessProbe:\n  httpGet:\n    path: /healthz  # an endpoint of your app\n    port: 8080"
            }
            Self::StartupProbe => {
                "startupProbe:\n  httpGet:\n    path: /healthz  # an endpoint of your app\n    port: 8080"
            }
        }
    }
}
