//! Safe defaults, fill-only: the pod spec is completed in place, and the RFC 6902 operations
//! that make the same change to the submitted JSON are derived from the before/after of the
//! few sub-objects touched (security contexts, resources), never by re-serializing the pod.
//! The same filling serves `/mutate` (`apply`: the operations) and `/validate` for controllers
//! (`fill`: only the filled spec, as a controller is judged by the pod it will create after
//! defaulting, so no operations are computed there).

use std::collections::BTreeMap;

use json_patch::{AddOperation, PatchOperation, jsonptr::PointerBuf};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use serde::Serialize;
use serde_json::Value;

use crate::policy::{Mutation, ResourceDefault};
use crate::quantity::Quantity;

/// Fills `spec` with the defaults of `mutation` and returns the JSON Patch operations that do
/// the same to the object whose pod spec sits at `spec_field` (e.g. `spec.template.spec`).
pub fn apply(mutation: &Mutation, spec: &mut PodSpec, spec_field: &str) -> Vec<PatchOperation> {
    let mut patch = Patch {
        recording: true,
        ops: Vec::new(),
        path: spec_field.split('.').map(str::to_owned).collect(),
    };
    run(mutation, spec, &mut patch);
    patch.ops
}

/// Fills `spec` with the defaults of `mutation`, computing no patch: how `/validate` sees the
/// pod a controller will create.
pub fn fill(mutation: &Mutation, spec: &mut PodSpec) {
    let mut patch = Patch {
        recording: false,
        ops: Vec::new(),
        path: Vec::new(),
    };
    run(mutation, spec, &mut patch);
}

fn run(mutation: &Mutation, spec: &mut PodSpec, patch: &mut Patch) {
    // Windows pods may not set seccomp, privilege escalation or capabilities: the apiserver
    // rejects them, so a default there would turn an admitted pod into a rejected one.
    let windows = spec.os.as_ref().is_some_and(|os| os.name == "windows");

    patch.fill(&mut spec.security_context, "securityContext", |sc| {
        let sc = sc.get_or_insert_with(PodSecurityContext::default);
        if mutation.run_as_non_root {
            sc.run_as_non_root.get_or_insert(true);
        }
        if mutation.seccomp_runtime_default && !windows {
            sc.seccomp_profile.get_or_insert_with(|| SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            });
        }
    });

    for (field, list) in [
        ("containers", Some(&mut spec.containers)),
        ("initContainers", spec.init_containers.as_mut()),
    ] {
        for (index, container) in list.into_iter().flatten().enumerate() {
            if patch.recording {
                patch.path.push(field.to_owned());
                patch.path.push(index.to_string());
            }
            fill_container(mutation, container, windows, patch);
            if patch.recording {
                patch.path.truncate(patch.path.len() - 2);
            }
        }
    }
}

fn fill_container(mutation: &Mutation, c: &mut Container, windows: bool, patch: &mut Patch) {
    if !windows {
        patch.fill(&mut c.security_context, "securityContext", |sc| {
            let needs_escalation = sc.as_ref().is_some_and(needs_privilege_escalation);
            if mutation.disallow_privilege_escalation && !needs_escalation {
                let sc = sc.get_or_insert_with(SecurityContext::default);
                sc.allow_privilege_escalation.get_or_insert(false);
            }
            if mutation.drop_all_capabilities {
                let sc = sc.get_or_insert_with(SecurityContext::default);
                let caps = sc.capabilities.get_or_insert_with(Capabilities::default);
                caps.drop.get_or_insert_with(|| vec!["ALL".into()]);
            }
        });
    }
    if mutation.resources.iter().next().is_some() {
        patch.fill(&mut c.resources, "resources", |r| {
            let r = r.get_or_insert_with(ResourceRequirements::default);
            for (name, default) in mutation.resources.iter() {
                fill_resource(r, name.as_str(), default);
            }
        });
    }
}

/// A copy of just the fields `apply` reads or fills: enough to compute the patch without
/// cloning images, env, probes and the rest of every container.
pub fn touched_fields(spec: &PodSpec) -> PodSpec {
    let container = |c: &Container| Container {
        security_context: c.security_context.clone(),
        resources: c.resources.clone(),
        ..Container::default()
    };
    PodSpec {
        os: spec.os.clone(),
        security_context: spec.security_context.clone(),
        containers: spec.containers.iter().map(container).collect(),
        init_containers: spec
            .init_containers
            .as_ref()
            .map(|list| list.iter().map(container).collect()),
        ..PodSpec::default()
    }
}

/// The apiserver rejects `allowPrivilegeEscalation: false` beside `privileged: true` or an
/// added CAP_SYS_ADMIN, so those containers keep escalation unset.
fn needs_privilege_escalation(sc: &SecurityContext) -> bool {
    sc.privileged == Some(true)
        || sc
            .capabilities
            .as_ref()
            .and_then(|c| c.add.as_ref())
            .is_some_and(|add| {
                add.iter().any(|cap| {
                    let cap = cap.to_ascii_uppercase();
                    cap == "SYS_ADMIN" || cap == "CAP_SYS_ADMIN"
                })
            })
}

/// Fills a missing limit and request for one resource, keeping request <= limit: an existing
/// large request raises the default limit, an existing small limit caps the default request.
/// A value that does not parse is left for the apiserver to reject and nothing is added beside it.
fn fill_resource(r: &mut ResourceRequirements, name: &str, default: &ResourceDefault) {
    let existing = |map: &Option<BTreeMap<String, KubeQuantity>>| {
        map.as_ref()
            .and_then(|m| m.get(name))
            .map(|q| Quantity::parse(&q.0))
    };
    let (limit, request) = (existing(&r.limits), existing(&r.requests));
    if matches!(limit, Some(Err(_))) || matches!(request, Some(Err(_))) {
        return;
    }
    let (limit, request) = (limit.and_then(Result::ok), request.and_then(Result::ok));
    if limit.is_none() {
        let value = match &request {
            Some(req) if *req > default.limit => req.clone(),
            _ => default.limit.clone(),
        };
        insert(&mut r.limits, name, &value);
    }
    if request.is_none() {
        let value = match &limit {
            Some(lim) if *lim < default.request => lim.clone(),
            _ => default.request.clone(),
        };
        insert(&mut r.requests, name, &value);
    }
}

fn insert(map: &mut Option<BTreeMap<String, KubeQuantity>>, name: &str, value: &Quantity) {
    map.get_or_insert_with(BTreeMap::new)
        .insert(name.to_owned(), KubeQuantity(value.as_str().to_owned()));
}

/// Patch operations under construction, with the JSON-pointer tokens of the current parent.
/// When not `recording`, fields are filled and nothing is serialized or compared.
struct Patch {
    recording: bool,
    ops: Vec<PatchOperation>,
    path: Vec<String>,
}

impl Patch {
    /// Runs `fill` on the field `name` of the current parent and records, as `add`
    /// operations, whatever it added. Only the field itself is serialized, twice.
    fn fill<T: Serialize>(
        &mut self,
        field: &mut Option<T>,
        name: &str,
        fill: impl FnOnce(&mut Option<T>),
    ) {
        if !self.recording {
            fill(field);
            return;
        }
        let before = field.as_ref().map(to_value);
        fill(field);
        let Some(after) = field.as_ref().map(to_value) else {
            return;
        };
        self.path.push(name.to_owned());
        self.diff(before.as_ref(), &after);
        self.path.pop();
    }

    /// Emits the smallest set of `add`s turning `before` into `after`, given that `after`
    /// only adds members. A missing parent is added whole, so no operation needs a parent
    /// that does not exist yet.
    fn diff(&mut self, before: Option<&Value>, after: &Value) {
        match (before, after) {
            (Some(Value::Object(old)), Value::Object(new)) => {
                for (key, value) in new {
                    if old.get(key) != Some(value) {
                        self.path.push(key.clone());
                        self.diff(old.get(key), value);
                        self.path.pop();
                    }
                }
            }
            (old, new) if old != Some(new) => self.ops.push(PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(self.path.iter().map(String::as_str)),
                value: new.clone(),
            })),
            _ => {}
        }
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("k8s-openapi types always serialize to JSON")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Keys holding `/` or `~` (extended resource names, annotation-like keys) must travel
    /// escaped as `~1` and `~0`, or the apiserver patches the wrong member.
    #[test]
    fn patch_paths_escape_json_pointer_tokens() {
        let mut patch = Patch {
            recording: true,
            ops: Vec::new(),
            path: vec!["spec".into(), "a/b".into()],
        };
        patch.diff(
            Some(&json!({"kept": 1})),
            &json!({"kept": 1, "example.com/gpu": "1", "til~de": {"x": true}}),
        );
        let paths: Vec<String> = serde_json::to_value(&patch.ops)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["path"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(paths, ["/spec/a~1b/example.com~1gpu", "/spec/a~1b/til~0de"]);
    }

    #[test]
    fn a_missing_parent_is_added_whole() {
        let mut patch = Patch {
            recording: true,
            ops: Vec::new(),
            path: vec!["spec".into()],
        };
        patch.diff(None, &json!({"runAsNonRoot": true}));
        let ops = serde_json::to_value(&patch.ops).unwrap();
        assert_eq!(
            ops,
            json!([{"op": "add", "path": "/spec", "value": {"runAsNonRoot": true}}])
        );
    }
}
