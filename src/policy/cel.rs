//! Policies written in CEL, loaded as they are: Kyverno's `ValidatingPolicy`
//! (`policies.kyverno.io/v1alpha1`, `v1beta1`, `v1`) and Kubernetes'
//! `ValidatingAdmissionPolicy` with its `ValidatingAdmissionPolicyBinding`s. Each becomes a
//! `Policy` whose rule is a `CelRule`, compiled here once, so rollout, verdicts and reports
//! treat it as they treat a built-in check.

use k8s_openapi::api::admissionregistration::v1::{
    AuditAnnotation, MatchCondition, MatchResources, ParamKind, ParamRef,
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, Validation, Variable,
};
use serde::Deserialize;

use super::params::{ParamBinding, ParamKey};
use super::{Mode, RuleId};
use crate::cel::{self, CompileError, Expression, ObjectReads};

/// `spec` of a Kyverno ValidatingPolicy: a ValidatingAdmissionPolicy's fields, plus its
/// actions inline, `autogen` and `evaluation`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ValidatingPolicySpec {
    #[serde(default)]
    pub match_constraints: Option<MatchResources>,
    #[serde(default)]
    pub match_conditions: Option<Vec<MatchCondition>>,
    #[serde(default)]
    pub variables: Option<Vec<Variable>>,
    #[serde(default)]
    pub validations: Option<Vec<Validation>>,
    #[serde(default)]
    pub audit_annotations: Option<Vec<AuditAnnotation>>,
    #[serde(default)]
    pub validation_actions: Option<Vec<String>>,
    #[serde(default)]
    pub failure_policy: Option<String>,
    #[serde(default)]
    pub param_kind: Option<ParamKind>,
    #[serde(default)]
    pub param_ref: Option<ParamRef>,
    #[serde(default)]
    pub autogen: Option<Autogen>,
    /// Kyverno's background and admission switches: portcullis judges at admission and in
    /// `audit` alike, so they change nothing here.
    #[serde(default)]
    #[allow(dead_code)]
    pub evaluation: Option<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    pub webhook_configuration: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Autogen {
    #[serde(default)]
    pub pod_controllers: Option<PodControllers>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PodControllers {
    #[serde(default)]
    pub controllers: Option<Vec<String>>,
}

/// What a runtime error in an expression does: `Fail` (the default) makes it a violation,
/// `Ignore` admits and counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    Fail,
    Ignore,
}

/// A named expression: a match condition or a variable.
#[derive(Debug)]
pub struct Named {
    pub name: String,
    pub expression: Expression,
}

#[derive(Debug)]
pub struct CelValidation {
    pub expression: Expression,
    pub message: Option<String>,
    pub message_expression: Option<Expression>,
    pub reason: Option<String>,
}

#[derive(Debug)]
pub struct CelAuditAnnotation {
    pub key: String,
    pub value: Expression,
}

/// One CEL rule, compiled: what it matches, what it checks, and in which mode.
#[derive(Debug)]
pub struct CelRule {
    pub id: RuleId,
    pub mode: Mode,
    /// `Deny` with `Audit`: enforced, and the failure recorded in the audit annotations too.
    pub also_audit: bool,
    pub failure_policy: FailurePolicy,
    pub match_constraints: MatchResources,
    /// A binding's `matchResources`, which narrows the policy's own constraints.
    pub binding_match: Option<MatchResources>,
    pub match_conditions: Vec<Named>,
    pub variables: Vec<Named>,
    pub validations: Vec<CelValidation>,
    pub audit_annotations: Vec<CelAuditAnnotation>,
    /// Pod controllers judged through their pod template (Kyverno's autogen), by kind.
    pub autogen: Vec<String>,
    /// Where `params` come from, when the policy has a `paramKind`.
    pub params: Option<ParamBinding>,
    /// What its expressions may read of the object, folded once here because every request
    /// asks it of every rule.
    object_reads: ObjectReads,
}

impl CelRule {
    /// What the rule's expressions may read of a request's object (`cel::ObjectReads`).
    pub fn object_reads(&self) -> ObjectReads {
        self.object_reads
    }

    /// Every expression of the rule, in no particular order.
    pub fn expressions(&self) -> impl Iterator<Item = &Expression> {
        self.match_conditions
            .iter()
            .chain(&self.variables)
            .map(|n| &n.expression)
            .chain(
                self.validations
                    .iter()
                    .flat_map(|v| std::iter::once(&v.expression).chain(&v.message_expression)),
            )
            .chain(self.audit_annotations.iter().map(|a| &a.value))
    }
}

/// Why a CEL policy cannot be loaded: the field, and what is wrong there.
#[derive(Debug)]
pub(crate) struct CelError {
    pub field: String,
    pub reason: String,
}

impl CelError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The pod controllers Kyverno's autogen covers when a policy names none.
pub const DEFAULT_AUTOGEN: [&str; 7] = [
    "DaemonSet",
    "Deployment",
    "Job",
    "StatefulSet",
    "ReplicaSet",
    "ReplicationController",
    "CronJob",
];

fn compile(field: &str, source: &str) -> Result<Expression, CelError> {
    cel::compile(source)
        .map_err(|e: CompileError| CelError::new(field, format!("{e}: {}", source.trim())))
}

/// The mode `validationActions` give: Deny → enforce, Warn → warn, Audit → audit; Deny with
/// Audit is enforced and also recorded.
fn mode_of(field: &str, actions: &[String]) -> Result<(Mode, bool), CelError> {
    let has = |a: &str| actions.iter().any(|x| x == a);
    if let Some(unknown) = actions
        .iter()
        .find(|a| !["Deny", "Warn", "Audit"].contains(&a.as_str()))
    {
        return Err(CelError::new(
            field,
            format!("{unknown:?} is not one of Deny, Warn, Audit"),
        ));
    }
    Ok(match (has("Deny"), has("Warn"), has("Audit")) {
        (true, _, audit) => (Mode::Enforce, audit),
        (false, true, audit) => (Mode::Warn, audit),
        (false, false, true) => (Mode::Audit, false),
        (false, false, false) => {
            return Err(CelError::new(
                field,
                "names no action: set Deny, Warn or Audit",
            ));
        }
    })
}

fn failure_policy(field: &str, value: Option<&str>) -> Result<FailurePolicy, CelError> {
    match value {
        None | Some("Fail") => Ok(FailurePolicy::Fail),
        Some("Ignore") => Ok(FailurePolicy::Ignore),
        Some(other) => Err(CelError::new(
            field,
            format!("{other:?} is not Fail or Ignore"),
        )),
    }
}

/// The fields a ValidatingAdmissionPolicy and a ValidatingPolicy share, compiled.
struct Shared<'a> {
    match_constraints: Option<&'a MatchResources>,
    match_conditions: &'a [MatchCondition],
    variables: &'a [Variable],
    validations: &'a [Validation],
    audit_annotations: &'a [AuditAnnotation],
    failure_policy: Option<&'a str>,
    param_kind: Option<&'a ParamKind>,
}

/// The shared fields of a ValidatingAdmissionPolicy's spec or a ValidatingPolicy's, which are
/// two types with the same field names.
macro_rules! shared {
    ($spec:expr) => {
        Shared {
            match_constraints: $spec.match_constraints.as_ref(),
            match_conditions: $spec.match_conditions.as_deref().unwrap_or_default(),
            variables: $spec.variables.as_deref().unwrap_or_default(),
            validations: $spec.validations.as_deref().unwrap_or_default(),
            audit_annotations: $spec.audit_annotations.as_deref().unwrap_or_default(),
            failure_policy: $spec.failure_policy.as_deref(),
            param_kind: $spec.param_kind.as_ref(),
        }
    };
}

/// Where a rule's params come from: the policy's `paramKind` and the `paramRef` at
/// `ref_at`, checked as the apiserver validates them. A `paramRef` without a `paramKind` is
/// ignored, as Kubernetes ignores it.
fn param_binding(
    at: &str,
    kind: Option<&ParamKind>,
    (ref_at, param_ref): (&str, Option<&ParamRef>),
) -> Result<Option<ParamBinding>, CelError> {
    let Some(kind) = kind else {
        return Ok(None);
    };
    let key = ParamKey::of(kind);
    if key.api_version.is_empty() || key.kind.is_empty() {
        return Err(CelError::new(
            format!("{at}paramKind"),
            "needs both apiVersion and kind",
        ));
    }
    if let Some(r) = param_ref {
        let named = r.name.as_deref().is_some_and(|n| !n.is_empty());
        if named == r.selector.is_some() {
            return Err(CelError::new(
                ref_at,
                "set exactly one of name and selector",
            ));
        }
        if let Some(action) = r.parameter_not_found_action.as_deref()
            && !["Allow", "Deny"].contains(&action)
        {
            return Err(CelError::new(
                format!("{ref_at}.parameterNotFoundAction"),
                format!("{action:?} is not Allow or Deny"),
            ));
        }
    }
    Ok(Some(ParamBinding {
        kind: key,
        param_ref: param_ref.cloned(),
    }))
}

fn compile_rule(
    name: &str,
    at: &str,
    shared: Shared,
    (mode, also_audit): (Mode, bool),
    binding: (Option<MatchResources>, (&str, Option<&ParamRef>)),
    autogen: Vec<String>,
) -> Result<CelRule, CelError> {
    let (binding_match, param_ref) = binding;
    let params = param_binding(at, shared.param_kind, param_ref)?;
    let match_constraints = shared
        .match_constraints
        .cloned()
        .ok_or_else(|| CelError::new(format!("{at}matchConstraints"), "is required"))?;
    if shared.validations.is_empty() && shared.audit_annotations.is_empty() {
        return Err(CelError::new(
            format!("{at}validations"),
            "set validations or auditAnnotations",
        ));
    }
    let named = |field: &str, items: Vec<(&String, &String)>| -> Result<Vec<Named>, CelError> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (name, expression))| {
                Ok(Named {
                    name: name.clone(),
                    expression: compile(&format!("{field}[{i}].expression"), expression)?,
                })
            })
            .collect()
    };
    let match_conditions = named(
        &format!("{at}matchConditions"),
        shared
            .match_conditions
            .iter()
            .map(|c| (&c.name, &c.expression))
            .collect(),
    )?;
    let variables = named(
        &format!("{at}variables"),
        shared
            .variables
            .iter()
            .map(|v| (&v.name, &v.expression))
            .collect(),
    )?;
    let validations = shared
        .validations
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = format!("{at}validations[{i}]");
            Ok(CelValidation {
                expression: compile(&format!("{at}.expression"), &v.expression)?,
                message: v.message.clone(),
                message_expression: v
                    .message_expression
                    .as_deref()
                    .map(|m| compile(&format!("{at}.messageExpression"), m))
                    .transpose()?,
                reason: v.reason.clone(),
            })
        })
        .collect::<Result<_, CelError>>()?;
    let audit_annotations = shared
        .audit_annotations
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Ok(CelAuditAnnotation {
                key: a.key.clone(),
                value: compile(
                    &format!("{at}auditAnnotations[{i}].valueExpression"),
                    &a.value_expression,
                )?,
            })
        })
        .collect::<Result<_, CelError>>()?;
    let mut rule = CelRule {
        id: RuleId::new(name),
        mode,
        also_audit,
        failure_policy: failure_policy(&format!("{at}failurePolicy"), shared.failure_policy)?,
        match_constraints,
        binding_match,
        match_conditions,
        variables,
        validations,
        audit_annotations,
        autogen,
        params,
        object_reads: ObjectReads::default(),
    };
    rule.object_reads = rule.expressions().fold(ObjectReads::default(), |reads, e| {
        reads.union(e.object_reads())
    });
    Ok(rule)
}

/// A Kyverno ValidatingPolicy's spec, compiled.
pub(crate) fn validating_policy(
    name: &str,
    spec: &ValidatingPolicySpec,
) -> Result<CelRule, CelError> {
    let actions = spec
        .validation_actions
        .clone()
        .unwrap_or_else(|| vec!["Deny".to_owned()]);
    let mode = mode_of("spec.validationActions", &actions)?;
    let autogen = autogen_kinds(
        "spec.autogen.podControllers.controllers",
        spec.autogen
            .as_ref()
            .and_then(|a| a.pod_controllers.as_ref())
            .and_then(|p| p.controllers.as_deref()),
    )?;
    compile_rule(
        name,
        "spec.",
        shared!(spec),
        mode,
        (None, ("spec.paramRef", spec.param_ref.as_ref())),
        autogen,
    )
}

/// The controller kinds named (`deployments` or `Deployment`), or all of them when none is.
fn autogen_kinds(field: &str, named: Option<&[String]>) -> Result<Vec<String>, CelError> {
    let Some(named) = named else {
        return Ok(DEFAULT_AUTOGEN.map(String::from).to_vec());
    };
    named
        .iter()
        .map(|name| {
            DEFAULT_AUTOGEN
                .iter()
                .find(|k| k.eq_ignore_ascii_case(name) || format!("{}s", k.to_lowercase()) == *name)
                .map(|k| (*k).to_owned())
                .ok_or_else(|| {
                    CelError::new(field, format!("{name:?} is not a pod controller kind"))
                })
        })
        .collect()
}

/// A CEL rule inside a portcullis policy: an id, a mode, and the fields of a
/// ValidatingAdmissionPolicy's spec.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleSpec {
    pub id: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub failure_policy: Option<String>,
    pub match_constraints: MatchResources,
    #[serde(default)]
    pub match_conditions: Vec<MatchCondition>,
    #[serde(default)]
    pub variables: Vec<Variable>,
    #[serde(default)]
    pub validations: Vec<Validation>,
    #[serde(default)]
    pub audit_annotations: Vec<AuditAnnotation>,
    #[serde(default)]
    pub param_kind: Option<ParamKind>,
    #[serde(default)]
    pub param_ref: Option<ParamRef>,
    /// Pod controllers judged through their pod template, as the built-in checks judge them;
    /// omitted: every pod controller, `[]`: none (a ValidatingAdmissionPolicy's behaviour).
    #[serde(default)]
    pub autogen: Option<Vec<String>>,
}

/// The `index`th rule of a portcullis policy, compiled.
pub(crate) fn policy_rule(index: usize, spec: &RuleSpec) -> Result<CelRule, CelError> {
    let at = format!("spec.rules[{index}].");
    let autogen = autogen_kinds(&format!("{at}autogen"), spec.autogen.as_deref())?;
    compile_rule(
        &spec.id,
        &at,
        Shared {
            match_constraints: Some(&spec.match_constraints),
            match_conditions: &spec.match_conditions,
            variables: &spec.variables,
            validations: &spec.validations,
            audit_annotations: &spec.audit_annotations,
            failure_policy: spec.failure_policy.as_deref(),
            param_kind: spec.param_kind.as_ref(),
        },
        (spec.mode, false),
        (None, (&format!("{at}paramRef"), spec.param_ref.as_ref())),
        autogen,
    )
}

/// A ValidatingAdmissionPolicy under one binding, compiled. A VAP is judged on the object as
/// written: Kubernetes has no autogen.
pub(crate) fn admission_policy(
    policy: &ValidatingAdmissionPolicy,
    binding: &ValidatingAdmissionPolicyBinding,
) -> Result<CelRule, CelError> {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let spec = policy
        .spec
        .as_ref()
        .ok_or_else(|| CelError::new("spec", "is required"))?;
    let bspec = &binding.spec;
    let actions = bspec.validation_actions.clone();
    let mode = mode_of("binding spec.validationActions", &actions)?;
    compile_rule(
        name,
        "spec.",
        shared!(spec),
        mode,
        (
            bspec.match_resources.clone(),
            ("binding spec.paramRef", bspec.param_ref.as_ref()),
        ),
        Vec::new(),
    )
}
