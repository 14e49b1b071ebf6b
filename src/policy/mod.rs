//! Policies: which checks run, in which mode, with which parameters, and which safe defaults
//! the mutating side fills in. These types *are* the policy file format (deny_unknown_fields,
//! closed enums), so a typo fails at load with file and field instead of silently doing nothing.
//! The set is immutable once loaded; reloading builds a new one and swaps it whole.

pub mod cel;
mod load;
pub mod matching;
pub mod params;
mod rule;

pub use load::{
    DEFAULT_DIR, DEFAULT_POLICY, PolicyError, Snapshot, configured_dir, load_dir, parse,
    require_params,
};

use std::sync::{Arc, RwLock};

/// The policy set in force, replaced whole on reload. A request takes the set once and is
/// judged by it to the end, so no request ever sees a half-loaded or mixed set.
#[derive(Debug)]
pub struct SharedPolicies(RwLock<Arc<PolicySet>>);

impl SharedPolicies {
    pub fn new(set: PolicySet) -> Self {
        Self(RwLock::new(Arc::new(set)))
    }

    pub fn current(&self) -> Arc<PolicySet> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, set: PolicySet) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }
}

use std::collections::BTreeMap;

use serde::Deserialize;

pub use rule::{CheckId, RuleId};

use crate::quantity::Quantity;
use crate::workload::{ContainerKind, WorkloadKind};

/// Every policy in force, in file-name order.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
    /// The param objects found beside the policies.
    pub params: params::Params,
}

impl PolicySet {
    /// Whether any policy has CEL rules, which read requests as JSON.
    pub fn has_cel(&self) -> bool {
        self.policies.iter().any(|p| !p.cel.is_empty())
    }

    /// What of a request's object the CEL rules may read beside the rest (`cel::ObjectReads`).
    pub fn object_reads(&self) -> crate::cel::ObjectReads {
        self.policies
            .iter()
            .flat_map(|p| &p.cel)
            .fold(crate::cel::ObjectReads::default(), |reads, rule| {
                reads.union(rule.object_reads())
            })
    }

    /// The param kinds the rules read through a `paramRef`, each once.
    pub fn param_kinds(&self) -> Vec<&params::ParamKey> {
        let mut kinds: Vec<&params::ParamKey> = self
            .policies
            .iter()
            .flat_map(|p| &p.cel)
            .filter_map(|r| r.params.as_ref())
            .filter(|b| b.param_ref.is_some())
            .map(|b| &b.kind)
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// The policies whose modes depend on namespace labels (`namespaceLabels`, or a
    /// `namespaceModes` selector): without the namespace watch those never match.
    pub fn needing_namespace_labels(&self) -> Vec<&str> {
        self.policies
            .iter()
            .filter(|p| {
                p.spec.namespace_labels
                    || p.spec.namespace_modes.iter().any(|m| m.selector.is_some())
            })
            .map(|p| &*p.name)
            .collect()
    }

    /// The policy carrying the mutation defaults; loading guarantees there is at most one.
    pub fn mutation(&self) -> Option<(&Policy, &Mutation)> {
        self.policies
            .iter()
            .find_map(|p| p.spec.mutation.as_ref().map(|m| (p, m)))
    }
}

#[derive(Clone, Debug)]
pub struct Policy {
    /// Shared, not copied, into each of its violations.
    pub name: std::sync::Arc<str>,
    /// Where it was read from (a path, or `<embedded>`), for errors and logs.
    pub source: String,
    pub spec: PolicySpec,
    /// Rules written in CEL: a ValidatingAdmissionPolicy's (one per binding) or a Kyverno
    /// ValidatingPolicy's.
    pub cel: Vec<std::sync::Arc<cel::CelRule>>,
    /// What reports file the policy's results under: the `policies.kyverno.io/category` and
    /// `policies.kyverno.io/severity` annotations, which Policy Reporter reads.
    pub category: Option<String>,
    pub severity: Option<String>,
}

impl Policy {
    /// Whether `id` names one of this policy's rules.
    pub fn has_rule(&self, id: &RuleId) -> bool {
        self.spec
            .checks
            .configured()
            .any(|(c, _)| *id == *c.as_str())
            || self.cel.iter().any(|r| r.id == *id)
            || self.spec.adopt.iter().any(|name| *id == **name)
    }
}

impl Policy {
    pub fn exempts_namespace(&self, namespace: &str) -> bool {
        self.spec.exempt_namespaces.iter().any(|n| n == namespace)
    }
}

/// `apiVersion: portcullis.dev/v1alpha1`, `kind: Policy`, `metadata.name`, `spec`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PolicyDocument {
    #[allow(dead_code)]
    pub api_version: ApiVersion,
    #[allow(dead_code)]
    pub kind: DocumentKind,
    pub metadata: Metadata,
    pub spec: PolicySpec,
}

#[derive(Clone, Copy, Debug, Deserialize)]
pub(crate) enum ApiVersion {
    #[serde(rename = "portcullis.dev/v1alpha1")]
    V1Alpha1,
}

#[derive(Clone, Copy, Debug, Deserialize)]
pub(crate) enum DocumentKind {
    Policy,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Metadata {
    pub name: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The annotations a policy's report results are filed under, as Kyverno writes them.
pub(crate) const CATEGORY_ANNOTATION: &str = "policies.kyverno.io/category";
pub(crate) const SEVERITY_ANNOTATION: &str = "policies.kyverno.io/severity";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// Namespaces this policy never judges nor mutates. Omitted: the control-plane namespaces.
    #[serde(default = "default_exempt_namespaces")]
    pub exempt_namespaces: Vec<String>,
    #[serde(default)]
    pub checks: Checks,
    /// Rules written in CEL beside the checks: an id, a mode, and a ValidatingAdmissionPolicy's
    /// fields each.
    #[serde(default)]
    pub rules: Vec<cel::RuleSpec>,
    /// ValidatingAdmissionPolicies and Kyverno ValidatingPolicies of the same directory, by
    /// name, brought under this policy: its namespace modes, labels, schedule and exemptions
    /// then apply to them, each a rule whose id is its name.
    #[serde(default)]
    pub adopt: Vec<String>,
    /// At most one policy in a set may carry mutation defaults.
    #[serde(default)]
    pub mutation: Option<Mutation>,
    /// A timeline capping every check's mode: `audit` until a date, `warn` until a later
    /// one, then the checks' own modes. Each stage but the last has `until`.
    #[serde(default)]
    pub schedule: Vec<Stage>,
    /// Per-namespace modes, first match wins; they replace the check's mode and schedule.
    #[serde(default)]
    pub namespace_modes: Vec<NamespaceMode>,
    /// Honour `portcullis.dev/mode` and `portcullis.dev/mode.<check>` namespace labels, as
    /// Pod Security Admission honours its own. Off by default: whoever may label a namespace
    /// could then relax the policy for it.
    #[serde(default)]
    pub namespace_labels: bool,
    /// Time-boxed exemptions, written by whoever writes policy files.
    #[serde(default)]
    pub exemptions: Vec<Exemption>,
    /// Lets workloads exempt themselves with a `portcullis.dev/exempt` annotation from the
    /// checks listed here (and only those), in the namespaces listed (all when empty).
    #[serde(default)]
    pub annotation_exemptions: Option<AnnotationExemptions>,
    /// Admitted requests that an exemption lets through get a warning this many days before
    /// it expires.
    #[serde(default = "fourteen")]
    pub exemption_warning_days: u32,
}

fn fourteen() -> u32 {
    14
}

/// One step of a schedule: `mode` applies until `until` (a UTC date, exclusive).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub mode: Mode,
    #[serde(default)]
    pub until: Option<Date>,
}

/// A mode for the namespaces a rule selects: by name glob, by label selector, or both (then
/// both must match). `checks` sets single checks; `mode` sets the others.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceMode {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub checks: BTreeMap<RuleId, Mode>,
}

/// Which violations an exemption lifts. Every selector given must match; `checks` is required.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Exemption {
    pub name: String,
    pub checks: Vec<RuleId>,
    /// Namespace globs (`*` and `?`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Object name globs: the workload's `metadata.name` (a Pod's, or its controller's).
    #[serde(default)]
    pub names: Vec<String>,
    /// Image globs, matched on normalised references (`nginx` is `docker.io/library/nginx`);
    /// without a tag or digest a pattern matches every tag and digest.
    #[serde(default)]
    pub images: Vec<String>,
    pub reason: String,
    pub owner: String,
    /// The first UTC day the exemption no longer applies.
    pub expires: Date,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationExemptions {
    pub checks: Vec<RuleId>,
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// A label selector as Kubernetes writes one.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelRequirement>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRequirement {
    pub key: String,
    pub operator: LabelOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// A UTC calendar day, written `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub time::Date);

impl Date {
    pub fn parse(s: &str) -> Option<Self> {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(s, &format).ok().map(Self)
    }

    pub fn today() -> Self {
        Self(time::OffsetDateTime::now_utc().date())
    }

    /// Whole days from `self` to `later` (negative when `later` is earlier).
    pub fn days_until(self, later: Date) -> i64 {
        (later.0 - self.0).whole_days()
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}",
            d.year(),
            u8::from(d.month()),
            d.day()
        )
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = String::deserialize(de)?;
        Self::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not a date written YYYY-MM-DD"))
        })
    }
}

fn default_exempt_namespaces() -> Vec<String> {
    ["kube-system", "kube-public", "kube-node-lease"]
        .map(String::from)
        .to_vec()
}

/// What a check does with a violation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Deny the request.
    #[default]
    Enforce,
    /// Admit, and return an AdmissionResponse warning (kubectl prints it).
    Warn,
    /// Admit silently; record the would-be denial in auditAnnotations and the log.
    Audit,
    /// Do not evaluate.
    Off,
}

impl Mode {
    /// Stricter modes rank higher: off < audit < warn < enforce.
    pub fn rank(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Audit => 1,
            Self::Warn => 2,
            Self::Enforce => 3,
        }
    }

    /// "enforced", "warned", ...: for "enforced from 2027-01-15" and the decision log.
    pub fn participle(self) -> &'static str {
        match self {
            Self::Enforce => "enforced",
            Self::Warn => "warned",
            Self::Audit => "audited",
            Self::Off => "off",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "enforce" => Self::Enforce,
            "warn" => Self::Warn,
            "audit" => Self::Audit,
            "off" => Self::Off,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Warn => "warn",
            Self::Audit => "audit",
            Self::Off => "off",
        }
    }
}

/// The checks a policy configures, keyed by their stable ids. A check left out is off.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    #[serde(rename = "run-as-non-root")]
    pub run_as_non_root: Option<RunAsNonRoot>,
    #[serde(rename = "liveness-probe")]
    pub liveness_probe: Option<ProbeCheck>,
    #[serde(rename = "readiness-probe")]
    pub readiness_probe: Option<ProbeCheck>,
    #[serde(rename = "resource-limits")]
    pub resource_limits: Option<ResourceLimits>,
    // The Pod Security Standards controls (policies/profiles/ ships them as the two levels).
    #[serde(rename = "pss-privileged")]
    pub pss_privileged: Option<PssCheck>,
    #[serde(rename = "pss-host-namespaces")]
    pub pss_host_namespaces: Option<PssCheck>,
    #[serde(rename = "pss-host-path-volumes")]
    pub pss_host_path_volumes: Option<PssCheck>,
    #[serde(rename = "pss-host-ports")]
    pub pss_host_ports: Option<PssCheck>,
    #[serde(rename = "pss-capabilities-baseline")]
    pub pss_capabilities_baseline: Option<PssCheck>,
    #[serde(rename = "pss-capabilities-restricted")]
    pub pss_capabilities_restricted: Option<PssCheck>,
    #[serde(rename = "pss-selinux")]
    pub pss_selinux: Option<PssCheck>,
    #[serde(rename = "pss-apparmor")]
    pub pss_apparmor: Option<PssCheck>,
    #[serde(rename = "pss-sysctls")]
    pub pss_sysctls: Option<PssCheck>,
    #[serde(rename = "pss-windows-host-process")]
    pub pss_windows_host_process: Option<PssCheck>,
    #[serde(rename = "pss-host-probes")]
    pub pss_host_probes: Option<PssCheck>,
    #[serde(rename = "pss-volume-types")]
    pub pss_volume_types: Option<PssCheck>,
    #[serde(rename = "pss-privilege-escalation")]
    pub pss_privilege_escalation: Option<PssCheck>,
    #[serde(rename = "pss-run-as-non-root")]
    pub pss_run_as_non_root: Option<PssCheck>,
    #[serde(rename = "pss-run-as-user")]
    pub pss_run_as_user: Option<PssCheck>,
    #[serde(rename = "pss-seccomp")]
    pub pss_seccomp: Option<PssLeveledCheck>,
    #[serde(rename = "pss-proc-mount")]
    pub pss_proc_mount: Option<PssLeveledCheck>,
}

impl Checks {
    /// Every configured check with its configured mode.
    pub fn configured(&self) -> impl Iterator<Item = (CheckId, Mode)> + '_ {
        let own = [
            (
                CheckId::RunAsNonRoot,
                self.run_as_non_root.as_ref().map(|c| c.mode),
            ),
            (
                CheckId::LivenessProbe,
                self.liveness_probe.as_ref().map(|c| c.mode),
            ),
            (
                CheckId::ReadinessProbe,
                self.readiness_probe.as_ref().map(|c| c.mode),
            ),
            (
                CheckId::ResourceLimits,
                self.resource_limits.as_ref().map(|c| c.mode),
            ),
        ];
        own.into_iter()
            .filter_map(|(id, m)| m.map(|m| (id, m)))
            .chain(rule::pss_configured(self))
    }
}

/// A Pod Security Standards control: it has no parameters, the standard fixes them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PssCheck {
    #[serde(default)]
    pub mode: Mode,
}

/// A control whose rule differs between the standard's two levels.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PssLeveledCheck {
    #[serde(default)]
    pub mode: Mode,
    pub level: PssLevel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PssLevel {
    Baseline,
    Restricted,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunAsNonRoot {
    #[serde(default)]
    pub mode: Mode,
    /// A non-zero `runAsUser` alone proves non-root (Polaris's reading). `false` demands
    /// `runAsNonRoot: true` as the Pod Security Standards (and Kyverno) do.
    #[serde(default = "yes")]
    pub accept_non_zero_run_as_user: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeCheck {
    #[serde(default)]
    pub mode: Mode,
    /// Probe fields any one of which satisfies the check. Omitted: the check's own probe.
    /// Kyverno's require-probes is `[livenessProbe, readinessProbe, startupProbe]`.
    #[serde(default)]
    pub satisfied_by: Option<Vec<ProbeField>>,
    /// Workloads of these kinds, and Pods whose ownerReferences name one, need no probe.
    #[serde(default = "batch_kinds")]
    pub exempt_kinds: Vec<WorkloadKind>,
}

fn batch_kinds() -> Vec<WorkloadKind> {
    vec![WorkloadKind::Job, WorkloadKind::CronJob]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeField {
    LivenessProbe,
    ReadinessProbe,
    StartupProbe,
}

impl ProbeField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LivenessProbe => "livenessProbe",
            Self::ReadinessProbe => "readinessProbe",
            Self::StartupProbe => "startupProbe",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceLimits {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "cpu_and_memory")]
    pub limits: Vec<ResourceName>,
    #[serde(default)]
    pub requests: Vec<ResourceName>,
    /// Which containers must set them. Ephemeral containers cannot set resources at all.
    #[serde(default = "regular_and_init")]
    pub container_types: Vec<ContainerKind>,
}

fn cpu_and_memory() -> Vec<ResourceName> {
    vec![ResourceName::Cpu, ResourceName::Memory]
}

fn regular_and_init() -> Vec<ContainerKind> {
    vec![ContainerKind::Containers, ContainerKind::InitContainers]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceName {
    Cpu,
    Memory,
    EphemeralStorage,
}

impl ResourceName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::EphemeralStorage => "ephemeral-storage",
        }
    }
}

/// Safe defaults the mutating webhook fills in. Fill-only: a value the user set is never changed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mutation {
    /// What gets patched. Pods only by default: patching controller templates makes GitOps
    /// tools report drift, and the pods they create are patched anyway.
    #[serde(default = "pods_only")]
    pub targets: Vec<MutationTarget>,
    /// Pod `securityContext.runAsNonRoot: true`.
    #[serde(default = "yes")]
    pub run_as_non_root: bool,
    /// Pod `securityContext.seccompProfile: {type: RuntimeDefault}`.
    #[serde(default = "yes")]
    pub seccomp_runtime_default: bool,
    /// Container `securityContext.allowPrivilegeEscalation: false`, where the apiserver allows it.
    #[serde(default = "yes")]
    pub disallow_privilege_escalation: bool,
    /// Container `securityContext.capabilities.drop: [ALL]` when no drop list is set.
    #[serde(default = "yes")]
    pub drop_all_capabilities: bool,
    /// Requests and limits for containers and init containers that lack them.
    #[serde(default)]
    pub resources: ResourceDefaults,
    /// What these defaults make of the fields they touch when a pod leaves them out or sends
    /// them empty, worked out by `defaults` on first use: the same for every such pod, so
    /// `/validate` borrows the filled fields and `/mutate` copies the operations instead of
    /// filling each pod's.
    #[serde(skip)]
    pub filled: std::sync::OnceLock<FilledDefaults>,
}

/// The pod security context, a container's security context and its resources, each as the
/// pod defaults fill it from nothing; the pod security context as for a pod that is not a
/// Windows pod.
#[derive(Clone, Debug, Default)]
pub struct FilledDefaults {
    pub pod_security_context: Filled<k8s_openapi::api::core::v1::PodSecurityContext>,
    pub container_security_context: Filled<k8s_openapi::api::core::v1::SecurityContext>,
    pub resources: Filled<k8s_openapi::api::core::v1::ResourceRequirements>,
}

/// One field as the pod defaults fill it from nothing, and the JSON Patch operations that do
/// so when the field is absent and when it is empty: each operation's text after its
/// parent's pointer (`defaults::JsonPatch`).
#[derive(Clone, Debug, Default)]
pub struct Filled<T> {
    /// `None` where the defaults fill nothing into it.
    pub value: Option<T>,
    pub when_absent: Vec<Box<str>>,
    pub when_empty: Vec<Box<str>>,
}

fn pods_only() -> Vec<MutationTarget> {
    vec![MutationTarget::Pods]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MutationTarget {
    Pods,
    Controllers,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceDefaults {
    pub cpu: Option<ResourceDefault>,
    pub memory: Option<ResourceDefault>,
}

impl ResourceDefaults {
    pub fn iter(&self) -> impl Iterator<Item = (ResourceName, &ResourceDefault)> {
        [
            (ResourceName::Cpu, &self.cpu),
            (ResourceName::Memory, &self.memory),
        ]
        .into_iter()
        .filter_map(|(name, d)| d.as_ref().map(|d| (name, d)))
    }
}

/// Loading checks `request <= limit`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceDefault {
    pub request: Quantity,
    pub limit: Quantity,
}

fn yes() -> bool {
    true
}
