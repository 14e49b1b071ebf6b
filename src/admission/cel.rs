//! Judging a request by CEL rules, as kube-apiserver's ValidatingAdmissionPolicy plugin does:
//! match constraints (resource rules, exclusions, namespace and object selectors), then match
//! conditions, then variables, then each validation; a runtime error is decided by the rule's
//! failurePolicy. Kyverno's autogen judges a pod controller by its pod template. Pure: the
//! namespace's labels come in through the rollout context.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{MatchResources, NamedRuleWithOperations};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use crate::cel::{self, Activation, Bindings};
use crate::policy::cel::{CelRule, FailurePolicy};
use crate::policy::params::{ParamBinding, ParamObjects, Params};
use crate::policy::{Mode, Policy, PolicySet};
use crate::request::{LazyJson, Request, RequestJson, operation_name};
use crate::rollout::{self, Context};
use crate::verdict::{FieldPath, Findings, Subject, Violation};

/// What a rule is matched against: the request's resource, or the pod an autogen rule judges
/// in a controller's place.
struct Target<'a> {
    group: &'a str,
    version: &'a str,
    resource: &'a str,
    sub_resource: &'a str,
    object: Option<&'a Value>,
    old_object: Option<&'a LazyJson>,
}

/// Every CEL rule's violations for `req`, in policy order.
pub fn judge(set: &PolicySet, req: &Request, json: &RequestJson, ctx: &Context) -> Findings {
    let mut out = Findings::default();
    let pod = OnceCell::new();
    // The object's own activation and the template pod's (autogen), each bound once per
    // request when a rule first needs it, with the scope every rule judging it starts from
    // and the variables its rules share.
    let activations: [OnceCell<Activation>; 2] = Default::default();
    let memos: [cel::Memo; 2] = Default::default();
    let scopes: [OnceCell<cel::Scope>; 2] = Default::default();
    for policy in &set.policies {
        for rule in &policy.cel {
            let (i, template) = match applying(rule, req, json, &pod, ctx) {
                None => continue,
                Some(Applies::Directly) => (0, None),
                Some(Applies::ToTemplate) => (1, template(&pod)),
            };
            let scope = scopes[i].get_or_init(|| {
                let activation =
                    activations[i].get_or_init(|| activation(req, json, template, ctx));
                activation.scope(Some(&memos[i]))
            });
            let start = out.violations.len();
            evaluate(policy, rule, req, scope, (&set.params, ctx), &mut out);
            // Exemptions name workloads, their namespaces and images.
            if let Some(workload) = req.object.workload()
                && let Some(spec) = &workload.pod_spec
            {
                let found = &mut out.violations[start..];
                rollout::apply_exemptions(policy, &req.namespace, workload, spec, ctx, found);
            }
        }
    }
    out
}

/// How a rule applies to a request: to its object, or (Kyverno's autogen) to the pod a
/// controller's template describes.
enum Applies {
    Directly,
    ToTemplate,
}

/// `pod` holds the controller's template as a pod, built the first time an autogen rule
/// needs it.
fn applying(
    rule: &CelRule,
    req: &Request,
    json: &RequestJson,
    pod: &OnceCell<Option<Value>>,
    ctx: &Context,
) -> Option<Applies> {
    let direct = Target {
        group: &json.group,
        version: &json.version,
        resource: &json.resource,
        sub_resource: req.sub_resource.as_deref().unwrap_or(""),
        object: json.object.as_ref(),
        old_object: json.old_object.as_ref(),
    };
    if applies(rule, req, &direct, ctx) {
        return Some(Applies::Directly);
    }
    if !rule.autogen.contains(&req.kind) {
        return None;
    }
    let as_pod = Target {
        group: "",
        version: "v1",
        resource: "pods",
        sub_resource: "",
        object: Some(pod.get_or_init(|| autogen_pod(req, json)).as_ref()?),
        old_object: None,
    };
    applies(rule, req, &as_pod, ctx).then_some(Applies::ToTemplate)
}

fn template(pod: &OnceCell<Option<Value>>) -> Option<&Value> {
    pod.get().and_then(Option::as_ref)
}

/// The pod a controller's template describes, for autogen rules.
fn autogen_pod(req: &Request, json: &RequestJson) -> Option<Value> {
    json.object
        .as_ref()
        .filter(|_| req.workload.is_some_and(|k| k.is_controller()))
        .and_then(|o| template_pod(o, &req.namespace))
}

/// Whether `rule` applies to `req` (its constraints, and a binding's) before any expression
/// runs. Match conditions are evaluated in `evaluate`, since they can fail.
fn applies(rule: &CelRule, req: &Request, target: &Target, ctx: &Context) -> bool {
    matches_resources(&rule.match_constraints, req, target, ctx)
        && rule
            .binding_match
            .as_ref()
            .is_none_or(|m| matches_resources(m, req, target, ctx))
}

/// Whether a rule applies to the request, match conditions included (one that fails counts
/// as applying, as do params that cannot be found): for reports, which tell a rule that
/// passed from one that does not apply.
pub fn matched(
    rule: &CelRule,
    req: &Request,
    json: &RequestJson,
    (directory, ctx): (&Params, &Context),
) -> bool {
    let pod = OnceCell::new();
    let vars = match applying(rule, req, json, &pod, ctx) {
        None => return false,
        Some(Applies::Directly) => activation(req, json, None, ctx),
        Some(Applies::ToTemplate) => activation(req, json, template(&pod), ctx),
    };
    let params = match &rule.params {
        None => vec![None],
        Some(binding) => {
            match collect_params(binding, &req.namespace, directory, ctx.cluster_params) {
                Ok(params) => params,
                Err(_) => return true,
            }
        }
    };
    let root = vars.scope(None);
    params.into_iter().any(|param| {
        let scope = root.with_params(param);
        rule.match_conditions
            .iter()
            .all(|c| boolean(scope.evaluate(&c.expression)) != Ok(false))
    })
}

fn matches_resources(m: &MatchResources, req: &Request, t: &Target, ctx: &Context) -> bool {
    let any = |rules: &Option<Vec<NamedRuleWithOperations>>| {
        rules.iter().flatten().any(|r| rule_matches(r, req, t))
    };
    if !any(&m.resource_rules) || any(&m.exclude_resource_rules) {
        return false;
    }
    if !req.namespace.is_empty()
        && let Some(selector) = &m.namespace_selector
        && !selects(selector, &namespace_labels(req, t, ctx))
    {
        return false;
    }
    if let Some(selector) = &m.object_selector {
        // As the apiserver does: the new object's labels, or the old one's on DELETE.
        if !selects(selector, &object_labels(t.object))
            && !selects(selector, &object_labels(t.old_object.map(LazyJson::get)))
        {
            return false;
        }
    }
    true
}

fn rule_matches(r: &NamedRuleWithOperations, req: &Request, t: &Target) -> bool {
    let listed = |values: &Option<Vec<String>>, value: &str| {
        values.iter().flatten().any(|v| v == value || v == "*")
    };
    // The resource first: it is what tells most rules apart (pods from the controllers).
    let resource_matches = || {
        r.resources.iter().flatten().any(|pattern| {
            let (res, sub) = pattern.split_once('/').unwrap_or((pattern, ""));
            let res_ok = res == t.resource || res == "*";
            let sub_ok = match (sub, t.sub_resource) {
                ("", "") => true,
                ("", _) => false,
                ("*", _) => true,
                (s, actual) => s == actual,
            };
            res_ok && sub_ok
        })
    };
    let scope_ok = || match r.scope.as_deref() {
        Some("Namespaced") => !req.namespace.is_empty(),
        Some("Cluster") => req.namespace.is_empty(),
        _ => true,
    };
    let names_ok = || {
        r.resource_names
            .as_ref()
            .is_none_or(|names| names.is_empty() || names.contains(&req.name))
    };
    resource_matches()
        && listed(&r.operations, operation_name(&req.operation))
        && listed(&r.api_groups, t.group)
        && listed(&r.api_versions, t.version)
        && scope_ok()
        && names_ok()
}

/// The labels of the request's namespace: the object's own for a Namespace, else the watch's
/// cache. Every namespace carries `kubernetes.io/metadata.name`, so that one is always known.
fn namespace_labels(req: &Request, t: &Target, ctx: &Context) -> BTreeMap<String, String> {
    let mut labels = if t.resource == "namespaces" {
        object_labels(t.object)
    } else {
        ctx.namespace_labels.cloned().unwrap_or_default()
    };
    labels
        .entry("kubernetes.io/metadata.name".to_owned())
        .or_insert_with(|| req.namespace.clone());
    labels
}

/// An object's `metadata.labels`; none when it has none, or when one is not a string (which
/// the API would never store).
pub fn object_labels(object: Option<&Value>) -> BTreeMap<String, String> {
    object
        .and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .and_then(|labels| {
            labels
                .iter()
                .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A Kubernetes label selector (matchLabels and matchExpressions) against `labels`, as the
/// apiserver evaluates a webhook's or a policy's namespaceSelector and objectSelector.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => !value.is_some_and(|v| values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// The pod a controller's template describes, in the controller's namespace.
fn template_pod(controller: &Value, namespace: &str) -> Option<Value> {
    let template = controller
        .pointer("/spec/template")
        .or_else(|| controller.pointer("/spec/jobTemplate/spec/template"))?;
    let mut metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if metadata.get("namespace").is_none() && metadata.is_object() {
        metadata["namespace"] = json!(namespace);
    }
    Some(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    }))
}

/// `request` as the apiserver binds it.
fn request_json(req: &Request, json: &RequestJson) -> Value {
    let operation = operation_name(&req.operation);
    json!({
        "uid": req.uid,
        "kind": {"group": json.group, "version": json.version, "kind": req.kind},
        "resource": {"group": json.group, "version": json.version, "resource": json.resource},
        "subResource": req.sub_resource.clone().unwrap_or_default(),
        "name": req.name,
        "namespace": req.namespace,
        "operation": operation,
        "userInfo": json.user_info.as_ref().map_or(Value::Null, |u| json!(u)),
        "dryRun": req.dry_run,
    })
}

/// `namespaceObject`: the request's namespace, with the labels the rollout context knows.
fn namespace_json(req: &Request, ctx: &Context) -> Value {
    let labels = ctx.namespace_labels.cloned().unwrap_or_default();
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": req.namespace, "labels": labels}})
}

/// The variables every rule of this request reads: the object (or the template's pod) read
/// in place, the others built the first time an expression reads them.
fn activation<'a>(
    req: &'a Request,
    json: &'a RequestJson,
    pod: Option<&'a Value>,
    ctx: &'a Context,
) -> Activation<'a> {
    let old_object = json.old_object.as_ref().filter(|_| pod.is_none());
    let namespace: cel::Build = Box::new(move || Cow::Owned(namespace_json(req, ctx)));
    Activation::new(Bindings {
        object: pod.or(json.object.as_ref()),
        old_object: old_object.map(|old| -> cel::Build { Box::new(|| Cow::Borrowed(old.get())) }),
        request: Some(Box::new(move || Cow::Owned(request_json(req, json)))),
        namespace_object: (!req.namespace.is_empty()).then_some(namespace),
    })
}

/// Runs one applying rule: its params are found, then for each param (once with `params`
/// null when the policy has no paramKind) match conditions, variables and validations.
fn evaluate<'a: 'v, 'v>(
    policy: &Policy,
    rule: &'a CelRule,
    req: &'a Request,
    root: &cel::Scope<'_, 'v>,
    (directory, ctx): (&'a Params, &Context<'a>),
    out: &mut Findings,
) {
    let effective = rollout::effective_mode(policy, &rule.id, rule.mode, &req.namespace, ctx);
    if effective.mode == Mode::Off {
        return;
    }
    let run = Run {
        policy,
        rule,
        effective,
    };
    let Some(binding) = &rule.params else {
        return run.once(root, out);
    };
    // As the apiserver does, before any match condition: a binding whose params cannot be
    // found fails by the failurePolicy, whatever the object.
    match collect_params(binding, &req.namespace, directory, ctx.cluster_params) {
        Ok(params) => {
            for param in params {
                run.once(&root.with_params(param), out);
            }
        }
        Err(e) => run.failed(out, format!("failed to configure binding: {e}")),
    }
}

/// One rule being judged, in the mode it has for this request.
struct Run<'a> {
    policy: &'a Policy,
    rule: &'a CelRule,
    effective: rollout::Effective,
}

impl Run<'_> {
    fn violation(&self, problem: String) -> Violation {
        Violation {
            rule: self.rule.id.clone(),
            mode: self.effective.mode,
            policy: self.policy.name.clone(),
            subject: Subject::Object,
            field: FieldPath::default(),
            problem: problem.into(),
            fix: "".into(),
            add: None,
            next: self.effective.next,
            exemption: None,
        }
    }

    /// A runtime error: a violation saying so under Fail, nothing but a count under Ignore.
    fn failed(&self, out: &mut Findings, problem: String) {
        match self.rule.failure_policy {
            FailurePolicy::Fail => out.violations.push(self.violation(problem)),
            FailurePolicy::Ignore => out.ignored.push(self.rule.id.clone()),
        }
    }

    /// An expression's runtime error. Where it stands (`what`) is spelt out only then, never
    /// for an expression that passes.
    fn expression_failed(
        &self,
        out: &mut Findings,
        what: &dyn Fn() -> String,
        source: &str,
        error: &str,
    ) {
        if self.rule.failure_policy == FailurePolicy::Fail {
            self.failed(
                out,
                format!("{} failed: {error} (expression: {source})", what()),
            );
        } else {
            self.failed(out, String::new());
        }
    }

    /// Match conditions, variables, validations and audit annotations, in one scope.
    fn once(&self, base: &cel::Scope<'_, '_>, out: &mut Findings) {
        let rule = self.rule;
        for (i, condition) in rule.match_conditions.iter().enumerate() {
            match boolean(base.evaluate(&condition.expression)) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    let what = || {
                        format!(
                            "match condition {:?} (spec.matchConditions[{i}])",
                            condition.name
                        )
                    };
                    self.expression_failed(out, &what, &condition.expression.source, &e);
                    return;
                }
            }
        }
        // Variables are evaluated in order, each seeing the earlier ones. One that fails is
        // left out, so only an expression that reads it fails (the apiserver evaluates them
        // lazily).
        let mut values = cel::Variables::default();
        for variable in &rule.variables {
            if let Ok(value) = base.variable(&variable.expression, &values) {
                values.push(&variable.name, value);
            }
        }
        let with_variables;
        let vars = if values.is_empty() {
            base
        } else {
            with_variables = base.with_variables(&values);
            &with_variables
        };
        for (i, validation) in rule.validations.iter().enumerate() {
            match boolean(vars.evaluate(&validation.expression)) {
                Ok(true) => {}
                Ok(false) => {
                    let message = validation
                        .message_expression
                        .as_ref()
                        .and_then(|m| match vars.evaluate(m) {
                            Ok(cel::Value::String(s)) if !s.trim().is_empty() => {
                                Some(s.to_string())
                            }
                            _ => None,
                        })
                        .or_else(|| validation.message.clone())
                        .unwrap_or_else(|| {
                            format!("failed expression: {}", validation.expression.source.trim())
                        });
                    out.violations.push(self.violation(message));
                }
                Err(e) => {
                    let what = || format!("spec.validations[{i}]");
                    self.expression_failed(out, &what, &validation.expression.source, &e);
                }
            }
        }
        // Recorded whatever the validations found, as the apiserver records them; a null
        // value records nothing.
        for (i, annotation) in rule.audit_annotations.iter().enumerate() {
            let error = match vars.evaluate(&annotation.value) {
                Ok(cel::Value::String(value)) => {
                    let key = format!("{}.{}", self.policy.name, annotation.key);
                    out.annotations.push((key, value.to_string()));
                    continue;
                }
                Ok(cel::Value::Null) => continue,
                Ok(other) => format!("not a string: {other:?}"),
                Err(e) => e,
            };
            let what = || format!("spec.auditAnnotations[{i}]");
            self.expression_failed(out, &what, &annotation.value.source, &error);
        }
    }
}

/// The params a binding picks for a request in `namespace`, as the apiserver's policy
/// dispatcher collects them: by name or by selector, in the paramRef's namespace or else the
/// request's for a namespaced kind. The cluster's objects come first, then the directory's;
/// `[None]` when the binding has no paramRef. An error is a misconfigured binding, or no
/// params under `parameterNotFoundAction: Deny`.
fn collect_params<'a>(
    binding: &'a ParamBinding,
    namespace: &'a str,
    directory: &'a Params,
    cluster: Option<&'a Params>,
) -> Result<Vec<Option<&'a Value>>, String> {
    let Some(param_ref) = &binding.param_ref else {
        return Ok(vec![None]);
    };
    let sources: Vec<&ParamObjects> = [
        cluster.and_then(|c| c.kind(&binding.kind)),
        directory.kind(&binding.kind),
    ]
    .into_iter()
    .flatten()
    .collect();
    let Some(first) = sources.first() else {
        return Err(format!(
            "paramKind kind `{}` not known: no object of it in the policy directory, and none read from the cluster",
            binding.kind
        ));
    };
    let wanted_namespace = param_ref.namespace.as_deref().filter(|n| !n.is_empty());
    let in_namespace = if first.namespaced {
        match wanted_namespace.or((!namespace.is_empty()).then_some(namespace)) {
            Some(ns) => Some(ns),
            None => {
                return Err("cannot use namespaced paramRef in policy binding that matches cluster-scoped resources".into());
            }
        }
    } else if wanted_namespace.is_some() {
        return Err(
            "paramRef.namespace must not be provided for a cluster-scoped `paramKind`".into(),
        );
    } else {
        None
    };
    let name_of = |o: &'a Value| o.pointer("/metadata/name").and_then(Value::as_str);
    let candidates = sources.iter().flat_map(|s| s.in_namespace(in_namespace));
    let mut params: Vec<Option<&Value>> = Vec::new();
    if let Some(name) = param_ref.name.as_deref().filter(|n| !n.is_empty()) {
        params.extend(
            candidates
                .filter(|o| name_of(o) == Some(name))
                .take(1)
                .map(Some),
        );
    } else if let Some(selector) = &param_ref.selector {
        let mut seen = std::collections::BTreeSet::new();
        for object in candidates {
            let labels = object_labels(Some(object));
            let key = (
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str),
                name_of(object),
            );
            // The cluster's copy of an object the directory also holds is the one in force.
            if selects(selector, &labels) && seen.insert(key) {
                params.push(Some(object));
            }
        }
    }
    if params.is_empty() && binding.deny_when_not_found() {
        return Err(
            "no params found for policy binding with `Deny` parameterNotFoundAction".into(),
        );
    }
    Ok(params)
}

/// A match condition's or validation's result: a bool, or why it is not one.
fn boolean(result: Result<cel::Value, String>) -> Result<bool, String> {
    match result? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("not a bool: {other:?}")),
    }
}
