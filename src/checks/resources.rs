//! `resource-limits`: every container of the configured types sets the configured limits
//! (and, by policy, requests). One finding per container lists everything it lacks, so the
//! owner fixes it in one edit.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{Finding, Target};
use crate::policy::{ResourceLimits, ResourceName};

pub fn check<'a>(
    params: &'a ResourceLimits,
    target: &'a Target<'a>,
) -> impl Iterator<Item = Finding> + 'a {
    target
        .containers()
        .filter(|c| params.container_types.contains(&c.kind))
        .filter_map(|c| {
            let limits = c.resources.and_then(|r| r.limits.as_ref());
            let requests = c.resources.and_then(|r| r.requests.as_ref());
            let mut texts = Texts::default();
            texts.section("limits", lacking(&params.limits, limits));
            texts.section("requests", lacking(&params.requests, requests));
            (texts.missing > 0).then(|| {
                let (field, add) = target.container_fix(&c, "resources", texts.yaml);
                Finding {
                    subject: c.subject(),
                    field,
                    problem: texts.problem.into(),
                    fix: texts.fix.into(),
                    add,
                }
            })
        })
}

fn lacking<'a>(
    wanted: &'a [ResourceName],
    present: Option<&'a BTreeMap<String, Quantity>>,
) -> impl Iterator<Item = ResourceName> + 'a {
    wanted
        .iter()
        .copied()
        .filter(move |r| present.is_none_or(|p| !p.contains_key(r.as_str())))
}

/// A container's finding, written as each missing entry is found: the problem
/// (`has no limits.cpu, requests.memory`), the fix (`set resources.limits.cpu and …`) and
/// `resources:` YAML with each missing entry filled with an example value to adjust. A
/// denial carries these for every container it names, so they are built without
/// intermediate strings.
#[derive(Default)]
struct Texts {
    missing: usize,
    problem: String,
    fix: String,
    yaml: String,
}

impl Texts {
    fn section(&mut self, section: &'static str, names: impl Iterator<Item = ResourceName>) {
        let mut names = names.peekable();
        if names.peek().is_none() {
            return;
        }
        if self.missing == 0 {
            // Sized for all four entries, so no text regrows; allocated only for a finding.
            self.problem.reserve(64);
            self.fix.reserve(128);
            self.yaml.reserve(128);
            self.problem.push_str("has no ");
            self.fix.push_str("set ");
            self.yaml.push_str("resources:");
        }
        self.yaml.extend(["\n  ", section, ":"]);
        for name in names {
            let (problem_sep, fix_sep) = if self.missing == 0 {
                ("", "")
            } else {
                (", ", " and ")
            };
            self.missing += 1;
            let example = match (section, name) {
                ("limits", ResourceName::Cpu) => "500m",
                ("requests", ResourceName::Cpu) => "100m",
                (_, ResourceName::Memory) => "256Mi",
                _ => "1Gi",
            };
            let name = name.as_str();
            self.problem.extend([problem_sep, section, ".", name]);
            self.fix.extend([fix_sep, "resources.", section, ".", name]);
            self.yaml.extend(["\n    ", name, ": ", example]);
        }
    }
}
