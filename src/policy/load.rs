//! Reading policy files: every `*.yaml`/`*.yml` directly in a directory (not below it, so
//! `policies/profiles/` stays opt-in), or the default compiled into the binary. A set is
//! returned only when every file parses and validates; the error names the file and field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};

use super::cel::{self, CelError, ValidatingPolicySpec};
use super::params::{NAMESPACED_CORE_KINDS, ParamKey, ParamObjects, Params};
use super::{CheckId, Date, LabelOperator, Policy, PolicyDocument, PolicySet, RuleId};

/// The shipped default policy, compiled in so `portcullis serve` works from anywhere.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.yaml");

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policies from {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no policy files (*.yaml, *.yml) in {0}")]
    Empty(PathBuf),
    #[error("{file}: {reason}")]
    Parse { file: String, reason: String },
    #[error("{file}: {field}: {reason}")]
    Invalid {
        file: String,
        field: String,
        reason: String,
    },
}

/// Parses one portcullis policy document; `source` names it in errors.
pub fn parse(source: &str, text: &str) -> Result<Policy, PolicyError> {
    let doc: PolicyDocument = serde_saphyr::from_str(text).map_err(|e| PolicyError::Parse {
        file: source.to_owned(),
        reason: e.to_string(),
    })?;
    let cel = doc
        .spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| cel::policy_rule(i, rule).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cel_invalid(source, &doc.metadata.name, e))?;
    let (category, severity) = report_hints(&doc.metadata.annotations);
    let policy = Policy {
        name: doc.metadata.name.into(),
        source: source.to_owned(),
        spec: doc.spec,
        cel,
        category,
        severity,
    };
    validate(&policy)?;
    Ok(policy)
}

/// Moves each adopted CEL policy's rules into the portcullis policy that adopts it, so the
/// adopter's rollout applies to them and they are judged once.
fn adopt(policies: &mut Vec<Policy>) -> Result<(), PolicyError> {
    let adopters: Vec<(Arc<str>, Vec<String>)> = policies
        .iter()
        .filter(|p| !p.spec.adopt.is_empty())
        .map(|p| (p.name.clone(), p.spec.adopt.clone()))
        .collect();
    for (adopter, names) in adopters {
        for (j, name) in names.iter().enumerate() {
            // A CEL document, not yet adopted (adopting removes it from the set).
            let found = policies.iter().position(|p| {
                *p.name == **name
                    && p.spec.rules.is_empty()
                    && p.spec.adopt.is_empty()
                    && !p.cel.is_empty()
            });
            let at = policies
                .iter()
                .position(|p| p.name == adopter)
                .expect("present");
            let Some(k) = found else {
                return Err(invalid(
                    &policies[at],
                    &format!("spec.adopt[{j}]"),
                    format!(
                        "no ValidatingAdmissionPolicy (with a binding) or ValidatingPolicy named \
                         {name:?} is loaded, or another policy adopted it already"
                    ),
                ));
            };
            let adopted = policies.remove(k);
            let at = policies
                .iter()
                .position(|p| p.name == adopter)
                .expect("present");
            policies[at].cel.extend(adopted.cel);
        }
    }
    Ok(())
}

/// What one file holds: portcullis policies and Kyverno ValidatingPolicies, ready; and
/// ValidatingAdmissionPolicies and their bindings, which are paired across the whole set.
#[derive(Default)]
struct Documents {
    policies: Vec<Policy>,
    admission_policies: Vec<(String, ValidatingAdmissionPolicy)>,
    bindings: Vec<(String, ValidatingAdmissionPolicyBinding)>,
    /// Documents of any other kind: params, if a loaded policy's paramKind names their kind.
    others: Vec<(String, serde_json::Value)>,
}

/// Reads every document of a file, by apiVersion and kind.
fn parse_file(source: &str, text: &str, into: &mut Documents) -> Result<(), PolicyError> {
    let parse_error = |reason: String| PolicyError::Parse {
        file: source.to_owned(),
        reason,
    };
    // Each document is parsed from its own text, so errors keep their line numbers (counted
    // from the document's start in a file of several).
    let chunks: Vec<&str> = split_documents(text)
        .into_iter()
        .filter(|c| {
            c.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect();
    // An empty file is a mistake (or a file caught mid-write), never "no policy".
    if chunks.is_empty() {
        return Err(parse_error("holds no policy document".into()));
    }
    let several = chunks.len() > 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let at = if several {
            format!("{source}#{}", i + 1)
        } else {
            source.to_owned()
        };
        let doc: serde_json::Value =
            serde_saphyr::from_str(chunk).map_err(|e| parse_error(e.to_string()))?;
        let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let group = api_version.split('/').next().unwrap_or_default();
        match (group, kind.as_str()) {
            ("portcullis.dev", _) => into.policies.push(parse(&at, chunk)?),
            ("policies.kyverno.io", "ValidatingPolicy") => {
                into.policies.push(kyverno_policy(&at, doc)?);
            }
            ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
                let vap = serde_json::from_value(doc).map_err(|e| parse_error(e.to_string()))?;
                into.admission_policies.push((at, vap));
            }
            ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
                let binding =
                    serde_json::from_value(doc).map_err(|e| parse_error(e.to_string()))?;
                into.bindings.push((at, binding));
            }
            _ => into.others.push((at, doc)),
        }
    }
    Ok(())
}

/// A file's YAML documents, split at `---` lines.
fn split_documents(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") {
            out.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    out.push(&text[start..]);
    out
}

/// The spec a CEL policy runs under: Kubernetes exempts no namespace from a policy, and the
/// rollout fields come from a portcullis policy, if at all.
fn cel_spec() -> super::PolicySpec {
    serde_saphyr::from_str("exemptNamespaces: []").expect("an empty spec parses")
}

/// A CEL policy's error names the file and the policy in it.
fn cel_invalid(source: &str, policy: &str, e: CelError) -> PolicyError {
    PolicyError::Invalid {
        file: format!("{source} (policy {policy})"),
        field: e.field,
        reason: e.reason,
    }
}

fn kyverno_policy(source: &str, doc: serde_json::Value) -> Result<Policy, PolicyError> {
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let spec: ValidatingPolicySpec =
        serde_json::from_value(doc["spec"].clone()).map_err(|e| PolicyError::Invalid {
            file: source.to_owned(),
            field: "spec".into(),
            reason: e.to_string(),
        })?;
    let rule = cel::validating_policy(&name, &spec).map_err(|e| cel_invalid(source, &name, e))?;
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(doc["metadata"]["annotations"].clone()).unwrap_or_default();
    let (category, severity) = report_hints(&annotations);
    let policy = Policy {
        name: name.into(),
        source: source.to_owned(),
        spec: cel_spec(),
        cel: vec![Arc::new(rule)],
        category,
        severity,
    };
    validate(&policy)?;
    Ok(policy)
}

/// A policy's report category and severity, from its annotations. A severity outside the
/// report schema's values is left out rather than written invalid.
fn report_hints(annotations: &BTreeMap<String, String>) -> (Option<String>, Option<String>) {
    let category = annotations.get(super::CATEGORY_ANNOTATION).cloned();
    let severity = annotations
        .get(super::SEVERITY_ANNOTATION)
        .map(|s| s.to_lowercase())
        .filter(|s| ["critical", "high", "medium", "low", "info"].contains(&s.as_str()));
    (category, severity)
}

/// Each ValidatingAdmissionPolicy with its bindings. As in Kubernetes, a policy no binding
/// names is not in force; a binding whose policy is missing is refused.
fn pair_bindings(docs: &mut Documents) -> Result<(), PolicyError> {
    for (source, binding) in &docs.bindings {
        let target = binding.spec.policy_name.clone();
        if !docs
            .admission_policies
            .iter()
            .any(|(_, p)| p.metadata.name.as_deref() == Some(target.as_str()))
        {
            return Err(PolicyError::Invalid {
                file: source.clone(),
                field: "spec.policyName".into(),
                reason: format!("no ValidatingAdmissionPolicy named {target:?} is loaded"),
            });
        }
    }
    for (source, vap) in &docs.admission_policies {
        let name = vap.metadata.name.clone().unwrap_or_default();
        let rules = docs
            .bindings
            .iter()
            .filter(|(_, b)| b.spec.policy_name == name)
            .map(|(_, b)| cel::admission_policy(vap, b).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cel_invalid(source, &name, e))?;
        if rules.is_empty() {
            tracing::info!(policy = %name, %source, "ValidatingAdmissionPolicy has no binding: not in force");
            continue;
        }
        let (category, severity) = report_hints(
            vap.metadata
                .annotations
                .as_ref()
                .unwrap_or(&BTreeMap::new()),
        );
        let policy = Policy {
            name: name.into(),
            source: source.clone(),
            spec: cel_spec(),
            cel: rules,
            category,
            severity,
        };
        validate(&policy)?;
        docs.policies.push(policy);
    }
    Ok(())
}

/// Where policies come from when a command is not told: `policies/` if it exists, else
/// `None`, meaning the embedded default.
pub fn configured_dir(dir: Option<&Path>) -> Option<PathBuf> {
    match dir {
        Some(dir) => Some(dir.to_owned()),
        None if Path::new(DEFAULT_DIR).is_dir() => Some(PathBuf::from(DEFAULT_DIR)),
        None => None,
    }
}

/// The directory read when no `--policies` is given.
pub const DEFAULT_DIR: &str = "policies";

/// Loads every policy file in `dir` as one set.
pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
    Snapshot::read(dir)?.parse()
}

/// The policy files of a directory as read at one moment: parsed from memory, so a file that
/// changes while a set is being built cannot mix two versions, and compared with the last
/// snapshot to tell whether anything changed at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    dir: PathBuf,
    files: Vec<(PathBuf, String)>,
}

impl Snapshot {
    pub fn read(dir: &Path) -> Result<Self, PolicyError> {
        let io = |source| PolicyError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Dot-files include a mounted ConfigMap's `..data` symlink farm: the real files
            // are reached through the top-level symlinks, which `is_file` follows.
            let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
            if yaml && !name.starts_with('.') && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Io {
                path: path.clone(),
                source,
            })?;
            files.push((path, text));
        }
        Ok(Self {
            dir: dir.to_owned(),
            files,
        })
    }

    pub fn parse(&self) -> Result<PolicySet, PolicyError> {
        if self.files.is_empty() {
            return Err(PolicyError::Empty(self.dir.clone()));
        }
        let mut docs = Documents::default();
        for (path, text) in &self.files {
            parse_file(&path.display().to_string(), text, &mut docs)?;
        }
        pair_bindings(&mut docs)?;
        adopt(&mut docs.policies)?;
        let params = params(&docs.policies, docs.others)?;
        let mut set = assemble(docs.policies)?;
        set.params = params;
        Ok(set)
    }
}

/// Checks that hold across files: unique names, one mutation section.
pub(crate) fn assemble(policies: Vec<Policy>) -> Result<PolicySet, PolicyError> {
    for (i, p) in policies.iter().enumerate() {
        if let Some(first) = policies[..i].iter().find(|q| q.name == p.name) {
            return Err(invalid(
                p,
                "metadata.name",
                format!("{:?} is already used by {}", p.name, first.source),
            ));
        }
    }
    let mut mutating = policies.iter().filter(|p| p.spec.mutation.is_some());
    if let (Some(first), Some(second)) = (mutating.next(), mutating.next()) {
        return Err(invalid(
            second,
            "spec.mutation",
            format!(
                "only one policy may set mutation defaults, and {} already does",
                first.source
            ),
        ));
    }
    Ok(PolicySet {
        policies,
        params: Params::default(),
    })
}

/// The documents that are not policies, as params of the kinds loaded policies name. Any
/// other document is a mistake (a typo in a kind, a manifest in the wrong directory).
fn params(
    policies: &[Policy],
    others: Vec<(String, serde_json::Value)>,
) -> Result<Params, PolicyError> {
    let kinds: BTreeSet<&ParamKey> = policies
        .iter()
        .flat_map(|p| &p.cel)
        .filter_map(|r| r.params.as_ref().map(|b| &b.kind))
        .collect();
    let mut by_kind: BTreeMap<ParamKey, ParamObjects> = BTreeMap::new();
    let mut sources: BTreeMap<ParamKey, Vec<String>> = BTreeMap::new();
    for (at, doc) in others {
        let key = ParamKey {
            api_version: doc["apiVersion"].as_str().unwrap_or_default().to_owned(),
            kind: doc["kind"].as_str().unwrap_or_default().to_owned(),
        };
        if !kinds.contains(&key) {
            return Err(PolicyError::Invalid {
                file: at,
                field: "kind".into(),
                reason: format!(
                    "{key} is not a policy (portcullis.dev/v1alpha1 Policy, policies.kyverno.io \
                     ValidatingPolicy, or admissionregistration.k8s.io/v1 \
                     ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding), nor the \
                     paramKind of a loaded policy"
                ),
            });
        }
        if doc["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            return Err(PolicyError::Invalid {
                file: at,
                field: "metadata.name".into(),
                reason: "a param needs a name".into(),
            });
        }
        let objects = by_kind.entry(key.clone()).or_default();
        objects.namespaced |= doc["metadata"]["namespace"].is_string()
            || (key.api_version == "v1" && NAMESPACED_CORE_KINDS.contains(&key.kind.as_str()));
        objects.objects.push(doc);
        sources.entry(key).or_default().push(at);
    }
    let mut params = Params::default();
    for (key, objects) in by_kind {
        // A namespaced param without a namespace could be found by no paramRef.
        if objects.namespaced
            && let Some(i) = objects
                .objects
                .iter()
                .position(|o| !o["metadata"]["namespace"].is_string())
        {
            return Err(PolicyError::Invalid {
                file: sources[&key][i].clone(),
                field: "metadata.namespace".into(),
                reason: format!("{key} is namespaced: a param of this kind needs its namespace"),
            });
        }
        params.insert(key, objects);
    }
    Ok(params)
}

/// Rules whose params no object in the policy directory provides. Offline, and when serving
/// without a cluster to read params from, such a policy is refused: it could only ever fail.
pub fn require_params(set: &PolicySet, cluster: bool) -> Result<(), PolicyError> {
    if cluster {
        return Ok(());
    }
    for policy in &set.policies {
        for rule in &policy.cel {
            if let Some(binding) = &rule.params
                && binding.param_ref.is_some()
                && set.params.kind(&binding.kind).is_none()
            {
                return Err(invalid(
                    policy,
                    &format!("paramKind ({})", rule.id),
                    format!(
                        "no {} object is in the policy directory, and there is no cluster to \
                         read params from (serve with the namespace watch's client, or add the \
                         params beside the policy)",
                        binding.kind
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl PolicySet {
    /// The compiled-in default policy.
    pub fn embedded() -> Self {
        let policy = parse("<embedded default policy>", DEFAULT_POLICY)
            .expect("the embedded default policy is tested to parse");
        PolicySet {
            policies: vec![policy],
            params: Params::default(),
        }
    }
}

fn invalid(policy: &Policy, field: &str, reason: String) -> PolicyError {
    PolicyError::Invalid {
        file: policy.source.clone(),
        field: field.to_owned(),
        reason,
    }
}

/// Rules serde cannot express.
fn validate(policy: &Policy) -> Result<(), PolicyError> {
    if policy.name.trim().is_empty() {
        return Err(invalid(policy, "metadata.name", "must not be empty".into()));
    }
    for (i, ns) in policy.spec.exempt_namespaces.iter().enumerate() {
        if !is_dns_label(ns) {
            return Err(invalid(
                policy,
                &format!("spec.exemptNamespaces[{i}]"),
                format!("{ns:?} is not a namespace name (a DNS label)"),
            ));
        }
    }
    if let Some(mutation) = &policy.spec.mutation {
        if mutation.targets.is_empty() {
            return Err(invalid(
                policy,
                "spec.mutation.targets",
                "must name at least one of pods, controllers (drop `mutation` to disable it)"
                    .into(),
            ));
        }
        for (name, default) in mutation.resources.iter() {
            if default.request > default.limit {
                return Err(invalid(
                    policy,
                    &format!("spec.mutation.resources.{}", name.as_str()),
                    format!(
                        "request {} is above limit {}: the apiserver rejects such a pod",
                        default.request, default.limit
                    ),
                ));
            }
        }
    }
    for (i, rule) in policy.spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}].id");
        if !is_dns_label(&rule.id) {
            return Err(invalid(
                policy,
                &field,
                format!(
                    "{:?} is not a rule id (lower case, digits and '-')",
                    rule.id
                ),
            ));
        }
        let clash = CheckId::parse(&rule.id).is_some()
            || policy.spec.rules[..i].iter().any(|r| r.id == rule.id);
        if clash {
            return Err(invalid(
                policy,
                &field,
                format!("{:?} is already the id of a check or rule", rule.id),
            ));
        }
    }
    validate_rollout(policy)?;
    let checks = &policy.spec.checks;
    for (id, probe) in [
        ("liveness-probe", &checks.liveness_probe),
        ("readiness-probe", &checks.readiness_probe),
    ] {
        if probe
            .as_ref()
            .and_then(|p| p.satisfied_by.as_ref())
            .is_some_and(|s| s.is_empty())
        {
            return Err(invalid(
                policy,
                &format!("spec.checks.{id}.satisfiedBy"),
                "must name at least one probe (set mode: off to disable the check)".into(),
            ));
        }
    }
    if let Some(limits) = &checks.resource_limits
        && limits.limits.is_empty()
        && limits.requests.is_empty()
    {
        return Err(invalid(
            policy,
            "spec.checks.resource-limits",
            "limits and requests are both empty (set mode: off to disable the check)".into(),
        ));
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Schedules in order, rules that say something, exemptions that are accountable and name
/// only checks the policy configures (anything else would silently do nothing).
fn validate_rollout(policy: &Policy) -> Result<(), PolicyError> {
    let spec = &policy.spec;
    let configured = |id: &RuleId| policy.has_rule(id);
    let mut previous: Option<Date> = None;
    for (i, stage) in spec.schedule.iter().enumerate() {
        let field = format!("spec.schedule[{i}].until");
        match stage.until {
            None if i + 1 < spec.schedule.len() => {
                return Err(invalid(
                    policy,
                    &field,
                    "only the last stage may leave out `until`".into(),
                ));
            }
            Some(until) if previous.is_some_and(|p| until <= p) => {
                return Err(invalid(
                    policy,
                    &field,
                    format!("{until} is not after the previous stage's date"),
                ));
            }
            until => previous = until,
        }
    }
    for (i, rule) in spec.namespace_modes.iter().enumerate() {
        let at = format!("spec.namespaceModes[{i}]");
        if rule.names.is_empty() && rule.selector.is_none() {
            return Err(invalid(
                policy,
                &at,
                "set names, selector or both: a rule for every namespace is the check's own mode"
                    .into(),
            ));
        }
        if rule.mode.is_none() && rule.checks.is_empty() {
            return Err(invalid(policy, &at, "set mode, checks or both".into()));
        }
        if let Some(selector) = &rule.selector {
            for (j, r) in selector.match_expressions.iter().enumerate() {
                let needs_values = matches!(r.operator, LabelOperator::In | LabelOperator::NotIn);
                if needs_values == r.values.is_empty() {
                    return Err(invalid(
                        policy,
                        &format!("{at}.selector.matchExpressions[{j}].values"),
                        "In and NotIn need values; Exists and DoesNotExist take none".into(),
                    ));
                }
            }
        }
        if let Some(id) = rule.checks.keys().find(|id| !configured(id)) {
            return Err(not_configured(policy, &format!("{at}.checks"), id));
        }
    }
    for (i, e) in spec.exemptions.iter().enumerate() {
        let at = format!("spec.exemptions[{i}]");
        for (field, value) in [
            ("name", &e.name),
            ("reason", &e.reason),
            ("owner", &e.owner),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(
                    policy,
                    &format!("{at}.{field}"),
                    "must not be empty".into(),
                ));
            }
        }
        if e.checks.is_empty() {
            return Err(invalid(
                policy,
                &format!("{at}.checks"),
                "must name at least one check".into(),
            ));
        }
        if let Some(id) = e.checks.iter().find(|id| !configured(id)) {
            return Err(not_configured(policy, &format!("{at}.checks"), id));
        }
    }
    if let Some(a) = &spec.annotation_exemptions
        && let Some(id) = a.checks.iter().find(|id| !configured(id))
    {
        return Err(not_configured(
            policy,
            "spec.annotationExemptions.checks",
            id,
        ));
    }
    Ok(())
}

fn not_configured(policy: &Policy, field: &str, id: &RuleId) -> PolicyError {
    invalid(
        policy,
        field,
        format!("{id} is not a rule of this policy (spec.checks), so this would do nothing"),
    )
}
