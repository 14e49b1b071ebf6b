//! `liveness-probe` and `readiness-probe`: every regular container declares the probe (or,
//! by policy, any of several). Init and ephemeral containers cannot carry them. Batch
//! workloads run to completion and are exempt by default; the exemption trusts
//! ownerReferences, which is acceptable only because probes guard reliability, not security.

use super::{Finding, Target, containers};
use crate::policy::{ProbeCheck, ProbeField};
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
            let names: Vec<&str> = accepted.iter().map(|p| p.as_str()).collect();
            let problem = match names.as_slice() {
                [one] => format!("has no {one}"),
                many => format!("has none of {}", many.join(", ")),
            };
            Finding {
                subject: c.subject(),
                field: target.container_field(&c, accepted[0].as_str()),
                problem,
                fix: format!(
                    "add a {} (httpGet, tcpSocket, grpc or exec)",
                    accepted[0].as_str()
                ),
                add: target.add_to_container(
                    &c,
                    format!(
                        "{}:\n  httpGet:\n    path: /healthz  # an endpoint of your app\n    port: 8080",
                        accepted[0].as_str()
                    ),
                ),
            }
        })
        .collect()
}
