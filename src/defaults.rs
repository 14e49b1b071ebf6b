//! Safe defaults, fill-only: the pod spec is completed, and the RFC 6902 operations that make
//! the same change to the submitted JSON are recorded as each field is filled: a field that
//! was absent is added whole, a present one gets only what was filled inside it. Only added
//! values are serialized, never the pod or the fields as they were, and each is written once,
//! straight into the patch's JSON text (`JsonPatch`).
//!
//! A field the pod leaves out or sends empty (the apiserver sends `securityContext: {}` and
//! `resources: {}` for most pods) fills the same way in every pod. What the defaults make of
//! it, and the operations that do so, are worked out once per policy set (`Filled`) and
//! borrowed or copied after that; only a field holding something is filled per pod.
//!
//! The same filling serves `/mutate` (`apply`: the operations) and `/validate` (`overlay`:
//! only the filled fields, as a controller is judged by the pod it will create after
//! defaulting, and a new Pod's audit and warn findings by the Pod `/mutate` would patch, so no
//! operations are computed there).

use std::borrow::Cow;
use std::collections::BTreeMap;

use json_patch::jsonptr::Token;
use k8s_openapi::api::core::v1::{
    Container, PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use serde::Serialize;

use crate::json_string::Escaped;
use crate::policy::{Filled, FilledDefaults, Mutation, ResourceDefault, ResourceName};
use crate::quantity::Quantity;

/// The JSON Patch that fills the object whose pod spec (`spec`) sits at `spec_field` (e.g.
/// `spec.template.spec`) with the defaults of `mutation`. A field the pod leaves out or sends
/// empty gets the operations recorded once per policy set (`Filled`); only a field holding
/// something is copied and filled around what it holds.
pub fn apply(mutation: &Mutation, spec: &PodSpec, spec_field: &str) -> JsonPatch {
    let filled = filled(mutation);
    let windows = is_windows(spec);
    // Fields are filled in the order of their JSON names within each object, so the
    // operations come out in the order a diff of the serialized objects would list them.
    let mut patch = Patch::new(true, String::new());
    for token in spec_field.split('.') {
        patch.enter(token);
    }
    // What was recorded is for a pod that is not a Windows pod.
    patch.field(
        &spec.security_context,
        (!windows).then_some(&filled.pod_security_context),
        |sc, patch| fill_pod_security_context(mutation, sc, windows, patch),
    );
    for (field, list) in [
        ("containers", Some(&spec.containers)),
        ("initContainers", spec.init_containers.as_ref()),
    ] {
        for (index, c) in list.into_iter().flatten().enumerate() {
            let parent = patch.enter(field);
            patch.enter(itoa::Buffer::new().format(index));
            if !windows {
                patch.field(
                    &c.security_context,
                    Some(&filled.container_security_context),
                    |sc, patch| fill_container_security_context(mutation, sc, patch),
                );
            }
            if !complete(mutation, &c.resources) {
                patch.field(&c.resources, Some(&filled.resources), |r, patch| {
                    fill_container_resources(mutation, r, patch)
                });
            }
            patch.path.truncate(parent);
        }
    }
    patch.ops
}

/// An RFC 6902 JSON Patch of `add` operations, held as the JSON text `/mutate` answers with
/// (base64 in `patch`). Each operation is written as it is decided: building operation values
/// and serializing them afterwards cost more than deciding them (BENCHMARKS.md, session 18).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JsonPatch {
    /// The JSON array once it holds an operation (each `add` reopens it), empty before.
    json: Vec<u8>,
    count: usize,
}

impl JsonPatch {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many operations it holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The patch as a JSON array.
    pub fn as_json(&self) -> &[u8] {
        if self.json.is_empty() {
            b"[]"
        } else {
            &self.json
        }
    }

    /// The operations as values, for applying the patch in process (`check`, `replay`).
    pub fn operations(&self) -> json_patch::Patch {
        serde_json::from_slice(self.as_json()).expect("a JsonPatch is always RFC 6902 JSON")
    }

    /// Appends `{"op":"add","path":pointer,"value":value}`; `pointer` is escaped for a JSON
    /// string already.
    fn add<T: Serialize>(&mut self, pointer: &str, value: &T) {
        self.open(pointer);
        self.json.extend_from_slice(br#"","value":"#);
        serde_json::to_writer(&mut self.json, value)
            .expect("k8s-openapi types always serialize to JSON");
        self.json.push(b'}');
        self.close();
    }

    /// Appends an operation recorded under the empty pointer (`tails`) beneath `pointer`.
    fn add_tail(&mut self, pointer: &str, tail: &str) {
        self.open(pointer);
        self.json.extend_from_slice(tail.as_bytes());
        self.close();
    }

    /// Each operation of a patch recorded under the empty pointer, as its text from its path
    /// on: what `add_tail` writes under another pointer.
    fn tails(&self) -> Vec<Box<str>> {
        #[derive(serde::Deserialize)]
        struct Op<'a> {
            #[serde(borrow)]
            path: &'a serde_json::value::RawValue,
            #[serde(borrow)]
            value: &'a serde_json::value::RawValue,
        }
        let ops: Vec<Op> =
            serde_json::from_slice(self.as_json()).expect("a JsonPatch is always RFC 6902 JSON");
        ops.iter()
            .map(|op| {
                // The path as written, escaped, without its quotes.
                let path = op.path.get();
                let path = &path[1..path.len() - 1];
                format!(r#"{path}","value":{}}}"#, op.value.get()).into()
            })
            .collect()
    }

    /// Opens an operation: the array or a comma, and the operation up to the end of
    /// `pointer`.
    fn open(&mut self, pointer: &str) {
        match self.json.pop() {
            Some(_closing) => self.json.push(b','),
            None => {
                // Sized for a pod's usual patch (about 500 bytes): written without regrowing.
                self.json.reserve(512);
                self.json.push(b'[');
            }
        }
        self.count += 1;
        self.json.extend_from_slice(br#"{"op":"add","path":""#);
        self.json.extend_from_slice(pointer.as_bytes());
    }

    fn close(&mut self) {
        self.json.push(b']');
    }
}

/// Fills `spec` in place with the defaults of `mutation`, recording nothing and using no
/// recorded operations: what `apply`'s patch must make of the pod. The defaults fixtures and
/// the mutation property hold the two equal.
pub fn fill(mutation: &Mutation, spec: &mut PodSpec) {
    let mut patch = Patch::new(false, String::new());
    let windows = is_windows(spec);
    fill_pod_security_context(mutation, &mut spec.security_context, windows, &mut patch);
    let init_containers = spec.init_containers.iter_mut().flatten();
    for c in spec.containers.iter_mut().chain(init_containers) {
        if !windows {
            fill_container_security_context(mutation, &mut c.security_context, &mut patch);
        }
        fill_container_resources(mutation, &mut c.resources, &mut patch);
    }
}

/// Windows pods may not set seccomp, privilege escalation or capabilities: the apiserver
/// rejects them, so a default there would turn an admitted pod into a rejected one.
fn is_windows(spec: &PodSpec) -> bool {
    spec.os.as_ref().is_some_and(|os| os.name == "windows")
}

fn fill_pod_security_context(
    mutation: &Mutation,
    sc: &mut Option<PodSecurityContext>,
    windows: bool,
    patch: &mut Patch,
) {
    patch.object(
        sc,
        "securityContext",
        |sc: &mut PodSecurityContext, patch| {
            if mutation.run_as_non_root {
                patch.value(&mut sc.run_as_non_root, "runAsNonRoot", || true);
            }
            if mutation.seccomp_runtime_default && !windows {
                patch.value(&mut sc.seccomp_profile, "seccompProfile", || {
                    SeccompProfile {
                        type_: "RuntimeDefault".into(),
                        localhost_profile: None,
                    }
                });
            }
        },
    );
}

fn fill_container_security_context(
    mutation: &Mutation,
    sc: &mut Option<SecurityContext>,
    patch: &mut Patch,
) {
    let needs_escalation = sc.as_ref().is_some_and(needs_privilege_escalation);
    patch.object(sc, "securityContext", |sc: &mut SecurityContext, patch| {
        if mutation.disallow_privilege_escalation && !needs_escalation {
            patch.value(
                &mut sc.allow_privilege_escalation,
                "allowPrivilegeEscalation",
                || false,
            );
        }
        if mutation.drop_all_capabilities {
            patch.object(&mut sc.capabilities, "capabilities", |caps, patch| {
                patch.value(&mut caps.drop, "drop", || vec!["ALL".into()]);
            });
        }
    });
}

fn fill_container_resources(
    mutation: &Mutation,
    r: &mut Option<ResourceRequirements>,
    patch: &mut Patch,
) {
    patch.object(r, "resources", |r: &mut ResourceRequirements, patch| {
        fill_resources(r, mutation, patch)
    });
}

/// The fields the defaults of `mutation` touch, as the defaulted pod has them: what
/// `/validate` reads in place of `spec`'s own when it judges the pod as defaulted
/// (`checks::Target::defaulted`). Images, env, probes and volumes are read where they are.
/// A field the pod leaves out is filled the same way in every pod, so it borrows the value
/// filled once per policy set (`Mutation::filled`); only a field the pod sets is copied and
/// filled around what it holds.
pub fn overlay<'a>(mutation: &'a Mutation, spec: &'a PodSpec) -> Overlay<'a> {
    let windows = is_windows(spec);
    let absent = filled(mutation);
    let mut patch = Patch::new(false, String::new());
    let security_context = if windows {
        let mut sc = spec.security_context.clone();
        fill_pod_security_context(mutation, &mut sc, windows, &mut patch);
        sc.map(Cow::Owned)
    } else {
        filled_as(&spec.security_context, &absent.pod_security_context, |sc| {
            fill_pod_security_context(mutation, sc, windows, &mut patch)
        })
    };
    let mut touched = |c: &'a Container| Touched {
        security_context: if windows {
            c.security_context.as_ref().map(Cow::Borrowed)
        } else {
            filled_as(
                &c.security_context,
                &absent.container_security_context,
                |sc| fill_container_security_context(mutation, sc, &mut patch),
            )
        },
        resources: if complete(mutation, &c.resources) {
            c.resources.as_ref().map(Cow::Borrowed)
        } else {
            filled_as(&c.resources, &absent.resources, |r| {
                fill_container_resources(mutation, r, &mut patch)
            })
        },
    };
    let containers = spec.containers.iter().map(&mut touched).collect();
    let init_containers = spec.init_containers.iter().flatten().map(touched).collect();
    Overlay {
        security_context,
        containers,
        init_containers,
    }
}

/// `given` once filled by `fill`. A field left out or set empty fills the same way in every
/// pod: it borrows what the defaults make of nothing, or stays as it is when they fill
/// nothing into it. Only a field holding something is copied and filled.
fn filled_as<'a, T: Clone + Default + PartialEq>(
    given: &'a Option<T>,
    absent: &'a Filled<T>,
    fill: impl FnOnce(&mut Option<T>),
) -> Option<Cow<'a, T>> {
    match Given::of(given) {
        Given::Absent => absent.value.as_ref().map(Cow::Borrowed),
        Given::Empty(empty) => Some(Cow::Borrowed(absent.value.as_ref().unwrap_or(empty))),
        Given::Set => {
            let mut own = given.clone();
            fill(&mut own);
            own.map(Cow::Owned)
        }
    }
}

/// A field the defaults touch, as the pod gives it: left out and empty fill the same way in
/// every pod.
enum Given<'a, T> {
    Absent,
    Empty(&'a T),
    Set,
}

impl<'a, T: Default + PartialEq> Given<'a, T> {
    fn of(field: &'a Option<T>) -> Self {
        match field {
            None => Self::Absent,
            Some(empty) if *empty == T::default() => Self::Empty(empty),
            Some(_) => Self::Set,
        }
    }
}

/// What the defaults of `mutation` make of each field they touch when a pod leaves it out or
/// sends it empty, worked out on first use.
fn filled(mutation: &Mutation) -> &FilledDefaults {
    mutation.filled.get_or_init(|| FilledDefaults {
        // Not a Windows pod's: `apply` and `overlay` fill those per pod.
        pod_security_context: filled_from_nothing(|sc, patch| {
            fill_pod_security_context(mutation, sc, false, patch)
        }),
        container_security_context: filled_from_nothing(|sc, patch| {
            fill_container_security_context(mutation, sc, patch)
        }),
        resources: filled_from_nothing(|r, patch| fill_container_resources(mutation, r, patch)),
    })
}

/// One field as `fill` fills it from nothing, and the operations that do so when it is
/// absent and when it is empty, recorded under the empty pointer, so that their paths start
/// at the field's parent.
fn filled_from_nothing<T: Default>(fill: impl Fn(&mut Option<T>, &mut Patch)) -> Filled<T> {
    let record = |field: &mut Option<T>| {
        let mut patch = Patch::new(true, String::new());
        fill(field, &mut patch);
        patch.ops.tails()
    };
    let mut value = None;
    let when_absent = record(&mut value);
    let when_empty = record(&mut Some(T::default()));
    Filled {
        value,
        when_absent,
        when_empty,
    }
}

/// The fields the defaults touch, as a defaulted pod has them (`overlay`).
#[derive(Debug, PartialEq)]
pub struct Overlay<'a> {
    pub security_context: Option<Cow<'a, PodSecurityContext>>,
    pub containers: Vec<Touched<'a>>,
    pub init_containers: Vec<Touched<'a>>,
}

/// A container's fields the defaults touch, as the defaulted container has them.
#[derive(Debug, PartialEq)]
pub struct Touched<'a> {
    pub security_context: Option<Cow<'a, SecurityContext>>,
    pub resources: Option<Cow<'a, ResourceRequirements>>,
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

/// Fills a missing limit and request for each defaulted resource, keeping request <= limit:
/// an existing large request raises the default limit, an existing small limit caps the
/// default request. A value that does not parse is left for the apiserver to reject and
/// nothing is added beside it. Every resource is decided from the values as submitted, then
/// the limits are filled and then the requests.
fn fill_resources(r: &mut ResourceRequirements, mutation: &Mutation, patch: &mut Patch) {
    let decided: Vec<(ResourceName, [Option<Quantity>; 2])> = mutation
        .resources
        .iter()
        .map(|(name, default)| (name, missing(r, name.as_str(), default)))
        .collect();
    for (side, field, map) in [
        (0, "limits", &mut r.limits),
        (1, "requests", &mut r.requests),
    ] {
        patch.object(map, field, |map, patch| {
            for (name, adds) in &decided {
                if let Some(value) = &adds[side] {
                    patch.entry(map, name.as_str(), || {
                        KubeQuantity(value.as_str().to_owned())
                    });
                }
            }
        });
    }
}

/// Whether a container's resources set the limit and the request of every resource
/// `mutation` defaults, so that nothing is added to them. Such containers are common, and
/// `apply` and `overlay` take them as they are rather than copy them to find that out.
fn complete(mutation: &Mutation, resources: &Option<ResourceRequirements>) -> bool {
    resources.as_ref().is_some_and(|r| {
        mutation
            .resources
            .iter()
            .all(|(name, default)| missing(r, name.as_str(), default) == [None, None])
    })
}

/// The limit and the request to add for the resource `name`, in that order, where each is
/// missing.
fn missing(
    r: &ResourceRequirements,
    name: &str,
    default: &ResourceDefault,
) -> [Option<Quantity>; 2] {
    let limit = r.limits.as_ref().and_then(|m| m.get(name));
    let request = r.requests.as_ref().and_then(|m| m.get(name));
    if limit.is_some() && request.is_some() {
        // Nothing to add, whatever they hold: neither needs reading.
        return [None, None];
    }
    let parse = |q: Option<&KubeQuantity>| q.map(|q| Quantity::parse(&q.0));
    let (limit, request) = (parse(limit), parse(request));
    if matches!(limit, Some(Err(_))) || matches!(request, Some(Err(_))) {
        return [None, None];
    }
    let (limit, request) = (limit.and_then(Result::ok), request.and_then(Result::ok));
    let add_limit = limit.is_none().then(|| match &request {
        Some(req) if *req > default.limit => req.clone(),
        _ => default.limit.clone(),
    });
    let add_request = request.is_none().then(|| match &limit {
        Some(lim) if *lim < default.request => lim.clone(),
        _ => default.request.clone(),
    });
    [add_limit, add_request]
}

/// Patch operations under construction, with the JSON pointer of the current parent.
/// When not `recording`, fields are filled and nothing is serialized.
struct Patch {
    recording: bool,
    /// Fields filled so far, recorded or not: how `object` tells whether a new object got
    /// anything.
    filled: usize,
    ops: JsonPatch,
    /// The current parent's pointer, escaped for a JSON string as the patch holds it.
    path: String,
}

impl Patch {
    /// Nothing filled yet; operations recorded under `path` when `recording`.
    fn new(recording: bool, path: String) -> Self {
        Self {
            recording,
            filled: 0,
            ops: JsonPatch::default(),
            path,
        }
    }

    /// Makes the member `name` of the current parent the parent; returns the pointer's length
    /// before, to truncate it back to. Keys holding `/` or `~` (extended resource names)
    /// travel escaped as `~1` and `~0` (RFC 6901), or the apiserver patches the wrong member.
    fn enter(&mut self, name: &str) -> usize {
        let before = self.path.len();
        self.path.push('/');
        // Field names and resource names are plain: tested in one pass, copied as they are.
        let plain = |b: &u8| !matches!(b, b'~' | b'/' | b'"' | b'\\' | ..=0x1f);
        if name.as_bytes().iter().all(plain) {
            self.path.push_str(name);
        } else {
            // RFC 6901 as json-patch's jsonptr spells it, then escaped for the JSON string.
            Escaped(&mut self.path).push_str(Token::new(name).encoded());
        }
        before
    }

    /// Records how `fill` fills a copy of `given`, leaving `given` as it is. A field the pod
    /// leaves out or sends empty gets `memo`'s operations, recorded once for every pod; a
    /// field holding something, or one with no `memo`, is copied and filled.
    fn field<T: Clone + Default + PartialEq>(
        &mut self,
        given: &Option<T>,
        memo: Option<&Filled<T>>,
        fill: impl FnOnce(&mut Option<T>, &mut Self),
    ) {
        let tails = match (Given::of(given), memo) {
            (Given::Absent, Some(memo)) => &memo.when_absent,
            (Given::Empty(_), Some(memo)) => &memo.when_empty,
            _ => {
                fill(&mut given.clone(), self);
                return;
            }
        };
        self.filled += tails.len();
        for tail in tails {
            self.ops.add_tail(&self.path, tail);
        }
    }

    /// Fills the object field `name` of the current parent with `fill`. When the field was
    /// absent it is created, and added whole only if `fill` put something in it, so no
    /// operation needs a parent that does not exist yet. When it was present, `fill` records
    /// its own operations beneath it.
    fn object<T: Default + Serialize>(
        &mut self,
        field: &mut Option<T>,
        name: &str,
        fill: impl FnOnce(&mut T, &mut Self),
    ) {
        match field {
            Some(inner) => {
                let parent = self.enter(name);
                fill(inner, self);
                self.path.truncate(parent);
            }
            None => {
                let mut inner = T::default();
                let (recording, filled) = (self.recording, self.filled);
                self.recording = false;
                fill(&mut inner, self);
                self.recording = recording;
                if self.filled > filled {
                    self.add(name, &inner);
                    *field = Some(inner);
                }
            }
        }
    }

    /// Sets the field `name` of the current parent to `value` when it is absent.
    fn value<T: Serialize>(
        &mut self,
        field: &mut Option<T>,
        name: &str,
        value: impl FnOnce() -> T,
    ) {
        if field.is_none() {
            self.add(name, field.insert(value()));
        }
    }

    /// Sets the member `key` of a map to `value` when it is absent.
    fn entry<T: Serialize>(
        &mut self,
        map: &mut BTreeMap<String, T>,
        key: &str,
        value: impl FnOnce() -> T,
    ) {
        if !map.contains_key(key) {
            self.add(key, map.entry(key.to_owned()).or_insert_with(value));
        }
    }

    fn add<T: Serialize>(&mut self, name: &str, value: &T) {
        self.filled += 1;
        if !self.recording {
            return;
        }
        let parent = self.enter(name);
        self.ops.add(&self.path, value);
        self.path.truncate(parent);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn recording(path: &[&str]) -> Patch {
        let mut patch = Patch::new(true, String::new());
        for token in path {
            patch.enter(token);
        }
        patch
    }

    /// Keys holding `/` or `~` (extended resource names, annotation-like keys) must travel
    /// escaped as `~1` and `~0`, or the apiserver patches the wrong member.
    #[test]
    fn patch_paths_escape_json_pointer_tokens() {
        let mut patch = recording(&["spec", "a/b"]);
        let mut map = BTreeMap::from([("kept".to_owned(), 1)]);
        for key in ["kept", "example.com/gpu", "til~de"] {
            patch.entry(&mut map, key, || 2);
        }
        let ops: serde_json::Value = serde_json::from_slice(patch.ops.as_json()).unwrap();
        assert_eq!(
            ops,
            json!([
                {"op": "add", "path": "/spec/a~1b/example.com~1gpu", "value": 2},
                {"op": "add", "path": "/spec/a~1b/til~0de", "value": 2},
            ])
        );
        assert_eq!(map["kept"], 1, "a present member is left as it is");
    }

    /// The patch's JSON text is what `/mutate` sends, byte for byte: operations in the order
    /// they were decided, members in RFC 6902's order, and a path that needs JSON escaping
    /// escaped. `operations` reads the same patch back.
    #[test]
    fn the_patch_is_written_as_rfc_6902_json_text() {
        let empty = recording(&["spec"]).ops;
        assert!(empty.is_empty());
        assert_eq!(empty.as_json(), b"[]");
        let mut patch = recording(&["spec"]);
        let mut map: BTreeMap<String, bool> = BTreeMap::new();
        for key in ["plain", "quo\"te\\", "line\nbreak"] {
            patch.entry(&mut map, key, || true);
        }
        let mut sc: Option<SeccompProfile> = None;
        patch.value(&mut sc, "seccompProfile", || SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        });
        let json = r#"[{"op":"add","path":"/spec/plain","value":true},"#.to_owned()
            + r#"{"op":"add","path":"/spec/quo\"te\\","value":true},"#
            + r#"{"op":"add","path":"/spec/line\nbreak","value":true},"#
            + r#"{"op":"add","path":"/spec/seccompProfile","value":{"type":"RuntimeDefault"}}]"#;
        assert_eq!(std::str::from_utf8(patch.ops.as_json()).unwrap(), json);
        assert_eq!(patch.ops.len(), 4);
        let parsed: json_patch::Patch = serde_json::from_str(&json).unwrap();
        assert_eq!(patch.ops.operations(), parsed);
    }

    /// A missing parent is added whole, so no operation needs a parent that does not exist
    /// yet; one that would stay empty is not added at all; a present one gets only what is
    /// filled inside it.
    #[test]
    fn a_missing_parent_is_added_whole_and_an_empty_one_not_at_all() {
        let mut patch = recording(&["spec"]);
        let mut missing: Option<PodSecurityContext> = None;
        patch.object(&mut missing, "securityContext", |sc, patch| {
            patch.value(&mut sc.run_as_non_root, "runAsNonRoot", || true);
        });
        let mut untouched: Option<PodSecurityContext> = None;
        patch.object(&mut untouched, "untouched", |_, _| {});
        let mut present = Some(PodSecurityContext {
            run_as_user: Some(1000),
            ..PodSecurityContext::default()
        });
        patch.object(&mut present, "present", |sc, patch| {
            patch.value(&mut sc.run_as_user, "runAsUser", || 0);
            patch.value(&mut sc.run_as_non_root, "runAsNonRoot", || true);
        });
        let ops: serde_json::Value = serde_json::from_slice(patch.ops.as_json()).unwrap();
        assert_eq!(
            ops,
            json!([
                {"op": "add", "path": "/spec/securityContext", "value": {"runAsNonRoot": true}},
                {"op": "add", "path": "/spec/present/runAsNonRoot", "value": true},
            ])
        );
        assert_eq!(missing.unwrap().run_as_non_root, Some(true));
        assert_eq!(untouched, None);
        assert_eq!(present.unwrap().run_as_user, Some(1000));
    }
}
