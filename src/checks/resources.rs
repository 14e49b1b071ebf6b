//! `resource-limits`: every container of the configured types sets the configured limits
//! (and, by policy, requests). One finding per container lists everything it lacks, so the
//! owner fixes it in one edit.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{Finding, Target, containers};
use crate::policy::{ResourceLimits, ResourceName};

pub fn check<'a>(
    params: &'a ResourceLimits,
    target: &'a Target<'a>,
) -> impl Iterator<Item = Finding> + 'a {
    containers(target.spec)
        .filter(|c| params.container_types.contains(&c.kind))
        .filter_map(|c| {
            let limits = c.resources.and_then(|r| r.limits.as_ref());
            let requests = c.resources.and_then(|r| r.requests.as_ref());
            let missing: Vec<String> = lacking("limits", &params.limits, limits)
                .chain(lacking("requests", &params.requests, requests))
                .collect();
            (!missing.is_empty()).then(|| Finding {
                subject: c.subject(),
                field: target.container_field(&c, "resources"),
                problem: format!("has no {}", missing.join(", ")).into(),
                fix: format!(
                    "set {}",
                    missing
                        .iter()
                        .map(|m| format!("resources.{m}"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )
                .into(),
                add: target.add_to_container(&c, resources_yaml(&missing)),
            })
        })
}

fn lacking<'a>(
    section: &'a str,
    wanted: &'a [ResourceName],
    present: Option<&'a BTreeMap<String, Quantity>>,
) -> impl Iterator<Item = String> + 'a {
    wanted
        .iter()
        .filter(move |r| present.is_none_or(|p| !p.contains_key(r.as_str())))
        .map(move |r| format!("{section}.{}", r.as_str()))
}

/// `resources:` with each missing entry filled with an example value to adjust.
fn resources_yaml(missing: &[String]) -> String {
    let mut yaml = String::from("resources:");
    for section in ["limits", "requests"] {
        let entries: Vec<&str> = missing
            .iter()
            .filter_map(|m| m.strip_prefix(section)?.strip_prefix('.'))
            .collect();
        if entries.is_empty() {
            continue;
        }
        yaml.push_str(&format!("\n  {section}:"));
        for name in entries {
            let example = match (section, name) {
                ("limits", "cpu") => "500m",
                ("limits", "memory") | ("requests", "memory") => "256Mi",
                ("requests", "cpu") => "100m",
                _ => "1Gi",
            };
            yaml.push_str(&format!("\n    {name}: {example}"));
        }
    }
    yaml
}
