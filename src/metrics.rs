//! Prometheus metrics, served as text on the plain-HTTP metrics listener. The handlers record
//! every request and violation here; the certificate and policy reloaders record their
//! outcomes. Label values are bounded: endpoints, kinds and operations are closed sets, and
//! namespaces are bounded by the cluster.

use prometheus_client::encoding::EncodeLabelSet;

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};

use crate::policy::RuleId;
use crate::request::{Operation, operation_name};
use crate::workload::WorkloadKind;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicI64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub kind: &'static str,
    pub operation: &'static str,
    pub outcome: &'static str,
    /// "true" for `dryRun` requests: judged alike, but nothing was persisted.
    pub dry_run: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    pub check: RuleId,
    /// The effective mode, or `exempt` when an exemption lifted the violation.
    pub mode: &'static str,
    pub namespace: String,
    pub dry_run: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    pub check: RuleId,
    pub namespace: String,
    /// `newly-denied` or `no-longer-denied`: what switching to the candidate would change.
    pub change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExemptionLabels {
    pub check: RuleId,
    /// The exemption's namespace pattern (`*` when it names none), or the request namespace
    /// for applied exemptions.
    pub namespace: String,
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub check: RuleId,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExpiryLabels {
    pub policy: String,
    pub exemption: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReportWriteLabels {
    /// create, update or delete.
    pub operation: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// The endpoint a review arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    const ALL: [Self; 2] = [Self::Validate, Self::Mutate];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Mutate => "mutate",
        }
    }
}

/// How a review was answered: the `outcome` label of `portcullis_requests`. The first four
/// are `/validate`'s, the last two `/mutate`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Skipped,
    Unjudgeable,
    Denied,
    Allowed,
    Unchanged,
    Patched,
}

impl Outcome {
    const COUNT: usize = 6;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skipped => "skipped",
            Self::Unjudgeable => "unjudgeable",
            Self::Denied => "denied",
            Self::Allowed => "allowed",
            Self::Unchanged => "unchanged",
            Self::Patched => "patched",
        }
    }

    fn endpoint(self) -> Endpoint {
        match self {
            Self::Unchanged | Self::Patched => Endpoint::Mutate,
            _ => Endpoint::Validate,
        }
    }
}

/// A family whose label sets are all known in advance, each with a slot holding its metric
/// once the first request that needed it made it. A request then uses that handle: no label
/// hashing and no family lock, which were a measurable share of a decision (BENCHMARKS.md,
/// session 15). Label sets no request had stay out of the exposition.
struct Handles<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    slots: Box<[OnceLock<M>]>,
}

impl<L, M, C> Handles<L, M, C>
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    fn new(family: Family<L, M, C>, slots: usize) -> Self {
        let slots = (0..slots).map(|_| OnceLock::new()).collect();
        Self { family, slots }
    }

    fn get(&self, slot: usize, labels: impl FnOnce() -> L) -> &M {
        self.slots[slot].get_or_init(|| self.family.get_or_create(&labels()).clone())
    }
}

/// `portcullis_violations`'s handles, found by namespace and then by check, mode and dry run:
/// its label sets are not known in advance, and building and hashing each violation's label
/// set (a namespace copied into it) was most of counting it (BENCHMARKS.md, session 18). A
/// request takes the lock once and hashes its namespace once. Both levels are bounded as the
/// family's series are: namespaces by the cluster, entries by the rules.
struct ViolationHandles {
    family: Family<ViolationLabels, Counter>,
    by_namespace: RwLock<HashMap<String, Vec<ViolationHandle>>>,
}

struct ViolationHandle {
    check: RuleId,
    mode: &'static str,
    dry_run: bool,
    counter: Counter,
}

/// One violation to count: its check and how it was treated (`Violation::outcome`).
pub type ViolationKey<'a> = (&'a RuleId, &'static str);

impl ViolationHandles {
    fn count<'a>(
        &self,
        namespace: &str,
        dry_run: bool,
        found: impl Iterator<Item = ViolationKey<'a>>,
    ) {
        let mut found = found.peekable();
        if found.peek().is_none() {
            return;
        }
        let mut missed: Vec<ViolationKey<'a>> = Vec::new();
        {
            let map = self
                .by_namespace
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let list = map.get(namespace).map_or(&[][..], Vec::as_slice);
            for key in found {
                match find_handle(list, key.0, key.1, dry_run) {
                    Some(counter) => {
                        counter.inc();
                    }
                    None => missed.push(key),
                }
            }
        }
        if missed.is_empty() {
            return;
        }
        // Label sets this namespace had not seen (or another request is adding right now).
        let mut map = self
            .by_namespace
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let list = map.entry(namespace.to_owned()).or_default();
        for (check, mode) in missed {
            if let Some(counter) = find_handle(list, check, mode, dry_run) {
                counter.inc();
                continue;
            }
            let labels = ViolationLabels {
                check: check.clone(),
                mode,
                namespace: namespace.to_owned(),
                dry_run: if dry_run { "true" } else { "false" },
            };
            let counter = self.family.get_or_create(&labels).clone();
            counter.inc();
            list.push(ViolationHandle {
                check: check.clone(),
                mode,
                dry_run,
                counter,
            });
        }
    }
}

fn find_handle<'l>(
    list: &'l [ViolationHandle],
    check: &RuleId,
    mode: &str,
    dry_run: bool,
) -> Option<&'l Counter> {
    list.iter()
        .find(|h| h.mode == mode && h.dry_run == dry_run && h.check == *check)
        .map(|h| &h.counter)
}

const KINDS: usize = WorkloadKind::ALL.len() + 1;
const OPERATIONS: usize = 4;
/// `portcullis_requests`'s label sets: outcome × kind × operation × dry run.
const REQUEST_SLOTS: usize = Outcome::COUNT * KINDS * OPERATIONS * 2;

/// The labels of one answered review, as the handlers know them.
#[derive(Clone, Copy, Debug)]
pub struct RequestKey<'a> {
    pub outcome: Outcome,
    /// `None` for a kind portcullis does not judge: counted as `other`, so no caller can grow
    /// the label space.
    pub kind: Option<WorkloadKind>,
    pub operation: &'a Operation,
    pub dry_run: bool,
}

impl RequestKey<'_> {
    fn slot(self) -> usize {
        let kind = self.kind.map_or(0, |k| k as usize + 1);
        let operation = match self.operation {
            Operation::Create => 0,
            Operation::Update => 1,
            Operation::Delete => 2,
            Operation::Connect => 3,
        };
        ((self.outcome as usize * KINDS + kind) * OPERATIONS + operation) * 2
            + usize::from(self.dry_run)
    }

    fn labels(self) -> RequestLabels {
        RequestLabels {
            endpoint: self.outcome.endpoint().as_str(),
            kind: self.kind.map_or("other", WorkloadKind::as_str),
            operation: operation_name(self.operation),
            outcome: self.outcome.as_str(),
            dry_run: if self.dry_run { "true" } else { "false" },
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Handles<RequestLabels, Counter>,
    latency: Handles<EndpointLabels, Histogram>,
    violations: ViolationHandles,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub certificate_reloads: Family<ResultLabels, Counter>,
    pub certificate_expiry: Gauge<i64, AtomicI64>,
    pub shadow_disagreements: Family<ShadowLabels, Counter>,
    pub exemptions_live: Family<ExemptionLabels, Gauge>,
    pub exemptions_applied: Family<ExemptionLabels, Counter>,
    pub exemption_expiry: Family<ExpiryLabels, Gauge<i64, AtomicI64>>,
    pub refused: Family<EndpointLabels, Counter>,
    pub cel_errors_ignored: Family<RuleLabels, Counter>,
    pub namespace_cache_synced: Gauge,
    /// `portcullis reports` only: PolicyReport writes, and objects judged.
    pub report_writes: Family<ReportWriteLabels, Counter>,
    pub objects_judged: Counter,
}

/// Seconds: fine below a millisecond, where decisions sit, and coarse up to the 10 s budget.
const LATENCY_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
    5.0,
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Admission requests answered, by endpoint, kind, operation and outcome",
            requests.clone(),
        );
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        registry.register(
            "request_duration_seconds",
            "Time from a decoded body to an encoded answer, per endpoint",
            latency.clone(),
        );
        let violations = Family::<ViolationLabels, Counter>::default();
        registry.register(
            "violations",
            "Check violations found, by check, mode and namespace",
            violations.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy set reloads, by result (ok, failed)",
            policy_reloads.clone(),
        );
        let certificate_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads, by result (ok, failed)",
            certificate_reloads.clone(),
        );
        let certificate_expiry = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires (Unix time)",
            certificate_expiry.clone(),
        );
        let shadow_disagreements = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "shadow_disagreements",
            "Requests where the candidate policies (--candidate-policies) would decide a check differently, by check, namespace and change",
            shadow_disagreements.clone(),
        );
        let exemptions_live = Family::<ExemptionLabels, Gauge>::default();
        registry.register(
            "exemptions_live",
            "Exception debt: unexpired policy exemptions, by check and namespace pattern",
            exemptions_live.clone(),
        );
        let exemptions_applied = Family::<ExemptionLabels, Counter>::default();
        registry.register(
            "exemptions_applied",
            "Violations lifted by an exemption, by check, namespace and source (policy, annotation)",
            exemptions_applied.clone(),
        );
        let exemption_expiry = Family::<ExpiryLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "exemption_expiry_timestamp_seconds",
            "When each unexpired policy exemption stops applying (Unix time), by policy and exemption",
            exemption_expiry.clone(),
        );
        let refused = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "refused_requests",
            "Bodies on /validate or /mutate that are not an AdmissionReview (answered with an HTTP error, so the apiserver's failurePolicy decides)",
            refused.clone(),
        );
        let cel_errors_ignored = Family::<RuleLabels, Counter>::default();
        registry.register(
            "cel_errors_ignored",
            "CEL expressions that failed at runtime under failurePolicy: Ignore (the request was admitted), by rule",
            cel_errors_ignored.clone(),
        );
        let namespace_cache_synced = Gauge::default();
        registry.register(
            "namespace_cache_synced",
            "1 once the namespace label cache has listed the cluster's namespaces",
            namespace_cache_synced.clone(),
        );
        let report_writes = Family::<ReportWriteLabels, Counter>::default();
        registry.register(
            "report_writes",
            "PolicyReport and ClusterPolicyReport writes by `portcullis reports`, by operation (create, update, delete) and result (ok, failed)",
            report_writes.clone(),
        );
        let objects_judged = Counter::default();
        registry.register(
            "report_objects_judged",
            "Live objects judged by `portcullis reports` (again only when the object, its namespace labels, the policies or the day changed)",
            objects_judged.clone(),
        );
        // Known outcomes exist from the start at zero, so alerts on them work before the first event.
        for result in ["ok", "failed"] {
            let _ = policy_reloads.get_or_create(&ResultLabels { result });
            let _ = certificate_reloads.get_or_create(&ResultLabels { result });
        }
        for endpoint in Endpoint::ALL.map(Endpoint::as_str) {
            let _ = refused.get_or_create(&EndpointLabels { endpoint });
        }
        for operation in ["create", "update", "delete"] {
            for result in ["ok", "failed"] {
                let _ = report_writes.get_or_create(&ReportWriteLabels { operation, result });
            }
        }
        Self {
            registry,
            requests: Handles::new(requests, REQUEST_SLOTS),
            latency: Handles::new(latency, Endpoint::ALL.len()),
            violations: ViolationHandles {
                family: violations,
                by_namespace: RwLock::default(),
            },
            policy_reloads,
            certificate_reloads,
            certificate_expiry,
            shadow_disagreements,
            exemptions_live,
            exemptions_applied,
            exemption_expiry,
            refused,
            cel_errors_ignored,
            namespace_cache_synced,
            report_writes,
            objects_judged,
        }
    }
}

impl Metrics {
    /// Counts an answered review.
    pub fn count_request(&self, key: RequestKey<'_>) {
        self.requests.get(key.slot(), || key.labels()).inc();
    }

    /// Counts each of a request's violations in `portcullis_violations`, by check, how it
    /// was treated, the request's namespace and whether it was a dry run.
    pub fn count_violations<'a>(
        &self,
        namespace: &str,
        dry_run: bool,
        found: impl Iterator<Item = ViolationKey<'a>>,
    ) {
        self.violations.count(namespace, dry_run, found);
    }

    /// Records how long an endpoint took from a decoded body to an encoded answer.
    pub fn observe_latency(&self, endpoint: Endpoint, seconds: f64) {
        let labels = || EndpointLabels {
            endpoint: endpoint.as_str(),
        };
        self.latency.get(endpoint as usize, labels).observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Metrics {
    /// Sets the exception-debt gauge from the policies in force on `today`.
    pub fn set_exemptions(&self, set: &crate::policy::PolicySet, today: crate::policy::Date) {
        self.exemptions_live.clear();
        self.exemption_expiry.clear();
        for policy in &set.policies {
            for e in policy.spec.exemptions.iter().filter(|e| today < e.expires) {
                let expiry = ExpiryLabels {
                    policy: policy.name.to_string(),
                    exemption: e.name.clone(),
                };
                let expires = e.expires.0.midnight().assume_utc().unix_timestamp();
                self.exemption_expiry.get_or_create(&expiry).set(expires);
                let patterns: Vec<String> = if e.namespaces.is_empty() {
                    vec!["*".to_owned()]
                } else {
                    e.namespaces.clone()
                };
                for check in &e.checks {
                    for namespace in &patterns {
                        let labels = ExemptionLabels {
                            check: check.clone(),
                            namespace: namespace.clone(),
                            source: "policy",
                        };
                        self.exemptions_live.get_or_create(&labels).inc();
                    }
                }
            }
        }
    }
}

/// Rule ids are label values as they are: no copy per observation.
impl prometheus_client::encoding::EncodeLabelValue for RuleId {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Each label set has a slot of its own: two sharing one would count on each other's
    /// series.
    #[test]
    fn every_request_label_set_has_its_own_slot() {
        use Outcome::*;
        let operations = [
            Operation::Create,
            Operation::Update,
            Operation::Delete,
            Operation::Connect,
        ];
        let kinds = std::iter::once(None).chain(WorkloadKind::ALL.map(Some));
        let mut seen = HashMap::new();
        for outcome in [Skipped, Unjudgeable, Denied, Allowed, Unchanged, Patched] {
            for kind in kinds.clone() {
                for operation in &operations {
                    for dry_run in [false, true] {
                        let key = RequestKey {
                            outcome,
                            kind,
                            operation,
                            dry_run,
                        };
                        assert!(key.slot() < REQUEST_SLOTS);
                        if let Some(other) = seen.insert(key.slot(), key.labels()) {
                            panic!("{:?} and {other:?} share a slot", key.labels());
                        }
                    }
                }
            }
        }
        assert_eq!(seen.len(), REQUEST_SLOTS);
    }

    /// Every violation counts once in its own series, whether its label set was new (taken
    /// under the write lock), already known (the read lock), repeated within one request or
    /// known in another namespace only.
    #[test]
    fn violations_count_once_each_in_their_own_series() {
        let metrics = Metrics::default();
        let (probe, root) = (
            RuleId::new("liveness-probe"),
            RuleId::new("run-as-non-root"),
        );
        let request = [(&probe, "enforce"), (&probe, "enforce"), (&root, "audit")];
        metrics.count_violations("team-a", false, request.into_iter());
        metrics.count_violations("team-a", false, request.into_iter());
        metrics.count_violations("team-a", true, [(&probe, "enforce")].into_iter());
        metrics.count_violations("team-b", false, [(&root, "exempt")].into_iter());
        metrics.count_violations("team-c", false, std::iter::empty());
        let text = metrics.encode();
        let mut series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("portcullis_violations_total{"))
            .collect();
        series.sort_unstable();
        assert_eq!(
            series,
            [
                r#"portcullis_violations_total{check="liveness-probe",mode="enforce",namespace="team-a",dry_run="false"} 4"#,
                r#"portcullis_violations_total{check="liveness-probe",mode="enforce",namespace="team-a",dry_run="true"} 1"#,
                r#"portcullis_violations_total{check="run-as-non-root",mode="audit",namespace="team-a",dry_run="false"} 2"#,
                r#"portcullis_violations_total{check="run-as-non-root",mode="exempt",namespace="team-b",dry_run="false"} 1"#,
            ]
        );
    }
}
