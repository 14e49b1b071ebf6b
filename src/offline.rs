//! Judging objects outside the webhook: manifests (`check`), live objects (`audit`) and
//! audit-log events (`replay`) go through the same pure core as admission requests, with the
//! same controller logic, pod defaulting, modes and exemptions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::admission;
use crate::policy::{self, PolicyError, PolicySet};
use crate::request::{Decoded, Operation, Request, RequestJson};
use crate::rollout::Context;
use crate::verdict::Verdict;
use crate::workload::{self, WorkloadKind};

/// One object and what the policies say of it.
#[derive(Clone, Debug)]
pub struct Judged {
    /// Where it came from: `file.yaml#2`, `cluster`, `audit.log:118`.
    pub source: String,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub verdict: Verdict,
}

/// The object as an admission request for `operation`: `None` when it is not a Kubernetes
/// object at all. `namespace` applies when the object names none. With `for_cel`, the object
/// is kept as JSON for CEL rules, with the resource named as kubectl's RESTMapper guesses it.
pub fn request(
    object: &Value,
    operation: Operation,
    namespace: &str,
    for_cel: bool,
) -> Option<Request> {
    let kind_name = object.get("kind")?.as_str()?;
    let kind = WorkloadKind::from_kind(kind_name);
    let meta = object.get("metadata");
    let text = |field: &str| {
        meta.and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let decoded = match kind {
        Some(kind) => Decoded::from_result(kind, workload::decode_value(kind, object)),
        None if for_cel => Decoded::Skipped,
        None => return None,
    };
    let json = for_cel.then(|| {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("v1");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        Box::new(RequestJson {
            group: group.to_owned(),
            version: version.to_owned(),
            resource: guess_resource(kind_name),
            object: Some(object.clone()),
            old_object: None,
            user_info: Some(Default::default()),
        })
    });
    Some(Request {
        uid: String::new(),
        operation,
        kind: kind_name.to_owned(),
        workload: kind,
        sub_resource: None,
        namespace: text("namespace").unwrap_or_else(|| namespace.to_owned()),
        name: text("name")
            .or_else(|| text("generateName"))
            .unwrap_or_default(),
        user: String::new(),
        dry_run: false,
        object: decoded,
        old_object: Decoded::Absent,
        json,
    })
}

/// A Namespace object's name and labels, as the namespace watch keeps them when serving.
pub fn namespace_labels(namespace: &Value) -> Option<(String, BTreeMap<String, String>)> {
    let name = namespace.pointer("/metadata/name")?.as_str()?.to_owned();
    Some((name, admission::object_labels(Some(namespace))))
}

/// A kind's resource as Kubernetes guesses it without discovery (UnsafeGuessKindToResource):
/// lower case, `-s` → `-ses`, `-y` → `-ies`, else `+s`.
pub fn guess_resource(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower == "endpoints" {
        lower
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

/// Judges `object` as if it were created now: a Pod is first given the defaults the mutating
/// webhook would patch in, exactly as the apiserver calls `/mutate` before `/validate`.
pub fn judge(set: &PolicySet, ctx: &Context, object: &Value, namespace: &str) -> Option<Judged> {
    let for_cel = set.has_cel();
    let mut req = request(object, Operation::Create, namespace, for_cel)?;
    let ops = admission::mutate(set, &req);
    if !ops.is_empty() {
        let mut patched = object.clone();
        if json_patch::patch(&mut patched, &ops.operations()).is_ok() {
            req = request(&patched, Operation::Create, namespace, for_cel)?;
        }
    }
    let verdict = admission::validate(set, &req, ctx);
    Some(Judged {
        source: String::new(),
        api_version: object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        kind: req.kind,
        namespace: req.namespace,
        name: req.name,
        uid: object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        verdict,
    })
}

/// The objects of a document: itself, or the items of a list (`kind: List` from `kubectl get
/// -o yaml`, or a typed `PodList`, `DeploymentList`, ...), whose items may lack apiVersion and
/// kind, so a typed list's kind is given to them.
pub fn objects(doc: Value) -> Vec<Value> {
    let Value::Object(mut map) = doc else {
        return if doc.is_null() { Vec::new() } else { vec![doc] };
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(item_kind) = kind.strip_suffix("List") else {
        return vec![Value::Object(map)];
    };
    let Some(Value::Array(items)) = map.remove("items") else {
        return vec![Value::Object(map)];
    };
    items
        .into_iter()
        .flat_map(|mut item| {
            if !item_kind.is_empty() && item.get("kind").is_none() && item.is_object() {
                item["kind"] = Value::String(item_kind.to_owned());
            }
            objects(item)
        })
        .collect()
}

/// Why an offline command could not run at all (exit code 2); findings are not errors.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("kubernetes API: {0}")]
    Kube(String),
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
}

/// The policies an offline command judges with: `--policies`, else `policies/` when it
/// exists, else the embedded default, as `serve` chooses. Params are read from the policy
/// directory alone, so a policy whose params are not there is refused.
pub fn load_policies(dir: Option<&Path>) -> Result<PolicySet, OfflineError> {
    let set = match policy::configured_dir(dir) {
        Some(dir) => policy::load_dir(&dir)?,
        None => PolicySet::embedded(),
    };
    policy::require_params(&set, false)?;
    Ok(set)
}

/// Every document of every input: `-` is stdin, a directory is read recursively for
/// `*.yaml`, `*.yml` and `*.json` (sorted, dot-files skipped). Each object is paired with
/// `path#n`, its document's position.
pub fn read_inputs(paths: &[String]) -> Result<Vec<(String, Value)>, OfflineError> {
    let mut files: Vec<(String, String)> = Vec::new();
    for path in paths {
        if path == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
                OfflineError::Read {
                    path: "<stdin>".into(),
                    source,
                }
            })?;
            files.push(("<stdin>".into(), text));
            continue;
        }
        let mut found = Vec::new();
        collect(Path::new(path), true, &mut found)?;
        for file in found {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|source| OfflineError::Read {
                path: name.clone(),
                source,
            })?;
            files.push((name, text));
        }
    }
    let mut out = Vec::new();
    for (name, text) in files {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| OfflineError::Parse {
                path: name.clone(),
                reason: e.to_string(),
            })?;
        for (i, doc) in docs.into_iter().enumerate() {
            for object in objects(doc) {
                out.push((format!("{name}#{}", i + 1), object));
            }
        }
    }
    Ok(out)
}

fn collect(path: &Path, named: bool, out: &mut Vec<PathBuf>) -> Result<(), OfflineError> {
    let io = |source| OfflineError::Read {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io)? {
            entries.push(entry.map_err(io)?.path());
        }
        entries.sort();
        for entry in entries {
            let hidden = entry
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !hidden {
                collect(&entry, false, out)?;
            }
        }
    } else {
        let manifest = ["yaml", "yml", "json"]
            .iter()
            .any(|ext| path.extension().is_some_and(|e| e == *ext));
        // A file named on the command line is read whatever its name.
        if named || manifest {
            out.push(path.to_owned());
        }
    }
    Ok(())
}

/// The resources CEL rules name exactly (no wildcards, no subresources) beyond the workloads
/// audit always lists, as (group, version, plural).
pub fn cel_resources(set: &PolicySet) -> Vec<(String, String, String)> {
    let workloads: Vec<(&str, String)> = WorkloadKind::ALL
        .iter()
        .map(|k| (k.group(), k.resource()))
        .collect();
    let mut out = Vec::new();
    let rules = set.policies.iter().flat_map(|p| &p.cel);
    let resource_rules = rules
        .flat_map(|r| [Some(&r.match_constraints), r.binding_match.as_ref()])
        .flatten()
        .flat_map(|m| m.resource_rules.iter().flatten());
    for rule in resource_rules {
        for group in rule.api_groups.iter().flatten() {
            for version in rule.api_versions.iter().flatten() {
                for plural in rule.resources.iter().flatten() {
                    let exact = ![group, version, plural].iter().any(|s| s.contains('*'))
                        && !plural.contains('/');
                    let workload = workloads.iter().any(|(g, r)| g == group && r == plural);
                    let entry = (group.clone(), version.clone(), plural.clone());
                    if exact && !workload && !out.contains(&entry) {
                        out.push(entry);
                    }
                }
            }
        }
    }
    out
}

/// Whether a controller owns the object: then its owner is judged, and it is the owner's
/// manifest that needs the fix.
pub fn owned_by_a_controller(object: &Value) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("controller").and_then(Value::as_bool) == Some(true)
                    && r.get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| WorkloadKind::from_kind(k).is_some())
            })
        })
}
