//! Params: the objects a policy's `paramKind` names, which a binding's `paramRef` picks for
//! each request. They come from the policy directory (any document of a loaded paramKind)
//! and, when serving with a cluster, from the cluster (`crate::params` watches them). Finding
//! a request's params is `admission::cel`'s business; these are the data.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::{ParamKind, ParamRef};
use serde_json::Value;

/// A param kind: `apiVersion` and `kind`, as a policy's `paramKind` writes them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamKey {
    pub api_version: String,
    pub kind: String,
}

impl ParamKey {
    pub fn of(kind: &ParamKind) -> Self {
        Self {
            api_version: kind.api_version.clone().unwrap_or_default(),
            kind: kind.kind.clone().unwrap_or_default(),
        }
    }

    /// `(group, version)`: the core group is `""`.
    pub fn group_version(&self) -> (&str, &str) {
        self.api_version
            .split_once('/')
            .unwrap_or(("", &self.api_version))
    }
}

impl fmt::Display for ParamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.api_version, self.kind)
    }
}

/// How one rule finds its params: the policy's `paramKind`, and the binding's `paramRef`
/// (without one, as in Kubernetes, the rule runs once with `params` null).
#[derive(Clone, Debug)]
pub struct ParamBinding {
    pub kind: ParamKey,
    pub param_ref: Option<ParamRef>,
}

impl ParamBinding {
    /// Whether finding nothing is a denial (the default, as the apiserver defaults
    /// `parameterNotFoundAction`) rather than an admit.
    pub fn deny_when_not_found(&self) -> bool {
        self.param_ref
            .as_ref()
            .and_then(|r| r.parameter_not_found_action.as_deref())
            != Some("Allow")
    }
}

/// The objects of one param kind, and whether the kind is namespaced.
#[derive(Clone, Debug, Default)]
pub struct ParamObjects {
    pub namespaced: bool,
    pub objects: Vec<Value>,
}

impl ParamObjects {
    /// The objects in `namespace` (`None`: every one, for a cluster-scoped kind).
    pub fn in_namespace<'a>(
        &'a self,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| {
            namespace.is_none_or(|ns| {
                o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
            })
        })
    }
}

/// Param objects by kind. Each kind's objects are shared, so a new set that replaces one kind
/// (a watch event) copies references to the others, not the objects.
#[derive(Clone, Debug, Default)]
pub struct Params {
    kinds: BTreeMap<ParamKey, Arc<ParamObjects>>,
}

impl Params {
    pub fn kind(&self, key: &ParamKey) -> Option<&ParamObjects> {
        self.kinds.get(key).map(Arc::as_ref)
    }

    pub fn insert(&mut self, key: ParamKey, objects: ParamObjects) {
        self.kinds.insert(key, Arc::new(objects));
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

/// Core kinds that are namespaced, for params read from files, which say no scope: a kind
/// is namespaced if it is one of these or any of its objects names a namespace.
pub const NAMESPACED_CORE_KINDS: [&str; 2] = ["ConfigMap", "Secret"];
