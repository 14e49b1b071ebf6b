//! `portcullis reports`: keeps `wgpolicyk8s.io/v1alpha2` PolicyReports (one per namespace,
//! named `portcullis`) and a ClusterPolicyReport current for the live workloads, judged as
//! `audit` judges them, with the webhook's policy set (reloaded the same way).
//!
//! The judged kinds (the workloads, and whatever resources CEL rules name) are watched with
//! kube-rs reflectors. Every change wakes one pass: an object is judged again only when it,
//! its namespace's labels, the policy set or the day changed; the reports are built from the
//! results, compared with what was last written, and only the differences are written
//! (create, update, delete), at a bounded rate. A result keeps the time it was first found
//! while it stays the same, so an unchanged object never causes a write.
//!
//! One writer: deploy/components/reports runs this as a single-replica Deployment with the
//! Recreate strategy, and every update carries the resourceVersion it was based on, so a
//! second writer (a replica scaled by hand) gets a conflict instead of overwriting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::cli::ReportsArgs;
use crate::commands::serve;
use crate::http::{self, AppState};
use crate::metrics::{Metrics, ReportWriteLabels};
use crate::namespaces::{self, NamespaceCache};
use crate::offline::{self, OfflineError};
use crate::params::ParamCache;
use crate::policy::{self, Date, PolicySet, Snapshot};
use crate::report;
use crate::rollout::Context;
use crate::workload::WorkloadKind;

/// The label every report portcullis writes carries, and the one it lists its reports by.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "portcullis");

fn kube_error(e: impl std::fmt::Display) -> OfflineError {
    OfflineError::Kube(e.to_string())
}

pub async fn run(args: ReportsArgs) -> Result<(), OfflineError> {
    let dir = policy::configured_dir(args.policies.as_deref());
    let (set, snapshot) = match &dir {
        Some(dir) => {
            let snapshot = Snapshot::read(dir)?;
            (snapshot.parse()?, Some(snapshot))
        }
        None => (PolicySet::embedded(), None),
    };
    let client = kube::Client::try_default().await.map_err(kube_error)?;
    let namespaces = namespaces::watch(client.clone());
    let params = ParamCache::new(client.clone());
    let state = AppState::new(set)
        .with_namespaces(namespaces.clone())
        .with_params(params.clone());
    let listener = tokio::net::TcpListener::bind(args.metrics_listen).await?;
    let metrics_addr = listener.local_addr()?;
    tracing::info!(metrics_listen = %metrics_addr, "serving /metrics, /healthz and /readyz over HTTP");
    tokio::spawn(axum::serve(listener, http::metrics_router(state.clone())).into_future());

    let changed = Arc::new(Notify::new());
    let mut watched = Watched::new(client.clone(), changed.clone());
    let current = state.policies.current();
    params.watch(&current.param_kinds());
    for kind in WorkloadKind::ALL {
        let gvk = GroupVersionKind::gvk(kind.group(), "v1", kind.as_str());
        watched.watch(ApiResource::from_gvk(&gvk));
    }
    watched.watch_cel_resources(&current).await;
    if let (Some(dir), Some(snapshot)) = (dir, snapshot) {
        tokio::spawn(serve::reload_policies(
            dir,
            snapshot,
            state.policies.clone(),
            state.clone(),
            args.policy_reload_interval,
            Some(changed.clone()),
        ));
    }
    let resync = changed.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(args.resync_interval);
        loop {
            tick.tick().await;
            resync.notify_one();
        }
    });

    // Nothing is written before every watch has listed once: a half-listed cluster would
    // look like objects that vanished.
    namespaces.synced().await;
    for store in watched.stores() {
        store.wait_until_ready().await.map_err(kube_error)?;
    }
    let mut writer = ReportWriter::new(
        client.clone(),
        args.max_writes_per_second,
        state.metrics.clone(),
    );
    writer.read_written().await?;
    let mut judge = Judge::default();
    let mut generation = (state.policies.current(), 0u64);
    loop {
        let set = state.policies.current();
        if !Arc::ptr_eq(&set, &generation.0) {
            generation = (set.clone(), generation.1 + 1);
            params.watch(&set.param_kinds());
            watched.watch_cel_resources(&set).await;
        }
        let cluster_params = params.current();
        let desired = judge.pass(
            &set,
            generation.1,
            &watched,
            &namespaces,
            cluster_params.as_deref(),
            &state.metrics,
        );
        let (written, failed) = writer.converge(desired).await;
        tracing::info!(
            judged = judge.judged_last,
            written,
            failed,
            reports = writer.written.len(),
            "reports in sync"
        );
        state
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        if failed > 0 {
            // Retried after a pause, from what the API holds now.
            let retry = changed.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                retry.notify_one();
            });
            writer.read_written().await.ok();
        }
        changed.notified().await;
    }
}

/// The reflectors of every judged kind.
struct Watched {
    client: kube::Client,
    changed: Arc<Notify>,
    stores: BTreeMap<(String, String), (ApiResource, Store<DynamicObject>)>,
}

impl Watched {
    fn new(client: kube::Client, changed: Arc<Notify>) -> Self {
        Self {
            client,
            changed,
            stores: BTreeMap::new(),
        }
    }

    fn stores(&self) -> impl Iterator<Item = &Store<DynamicObject>> {
        self.stores.values().map(|(_, s)| s)
    }

    /// Starts a reflector for `resource` unless one runs; every event wakes a pass.
    fn watch(&mut self, resource: ApiResource) {
        let key = (resource.api_version.clone(), resource.plural.clone());
        if self.stores.contains_key(&key) {
            return;
        }
        let writer = Writer::new(resource.clone());
        let store = writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let stream = reflector::reflector(
            writer,
            watcher::watcher(api, watcher::Config::default()).default_backoff(),
        );
        let changed = self.changed.clone();
        let plural = resource.plural.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => changed.notify_one(),
                    Err(e) => {
                        tracing::warn!(resource = %plural, error = %e, "watch failed; retrying")
                    }
                }
            }
        });
        self.stores.insert(key, (resource, store));
    }

    /// Watches the resources CEL rules name, their kind found by discovery. One the cluster
    /// does not serve is logged: its objects cannot be reported.
    async fn watch_cel_resources(&mut self, set: &PolicySet) {
        for (group, version, plural) in offline::cel_resources(set) {
            let api_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            if self
                .stores
                .contains_key(&(api_version.clone(), plural.clone()))
            {
                continue;
            }
            let listed = if group.is_empty() {
                self.client.list_core_api_resources(&api_version).await
            } else {
                self.client.list_api_group_resources(&api_version).await
            };
            let kind = listed.ok().and_then(|list| {
                list.resources
                    .into_iter()
                    .find(|r| r.name == plural)
                    .map(|r| r.kind)
            });
            let Some(kind) = kind else {
                tracing::error!(%api_version, resource = %plural, "a CEL rule names a resource the cluster does not serve: it is not reported");
                continue;
            };
            self.watch(ApiResource {
                group,
                version,
                api_version,
                kind,
                plural,
            });
        }
    }
}

/// What an object's last judgement depended on, and what it found.
struct Cached {
    resource_version: String,
    generation: u64,
    today: Date,
    labels: Option<BTreeMap<String, String>>,
    /// A controller owns it: it is left to its owner and reported by nothing.
    owned: bool,
    /// The report results, timestamps zeroed.
    results: Vec<Value>,
    /// When these results were first found.
    found: i64,
}

#[derive(Default)]
struct Judge {
    cache: BTreeMap<(String, String, String, String), Cached>,
    judged_last: usize,
}

impl Judge {
    /// The reports every namespace should hold now, by namespace (`""`: the cluster's).
    fn pass(
        &mut self,
        set: &PolicySet,
        generation: u64,
        watched: &Watched,
        namespaces: &NamespaceCache,
        cluster_params: Option<&policy::params::Params>,
        metrics: &Metrics,
    ) -> BTreeMap<String, Value> {
        let today = Date::today();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut seen = BTreeSet::new();
        let mut by_namespace: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        self.judged_last = 0;
        for (resource, store) in watched.stores.values() {
            for object in store.state() {
                // The cache is consulted on metadata alone: an object judged before and not
                // changed since is neither serialized nor judged again.
                let meta = &object.metadata;
                let field = |f: &Option<String>| f.clone().unwrap_or_default();
                let (namespace, version) = (field(&meta.namespace), field(&meta.resource_version));
                let key = (
                    resource.api_version.clone(),
                    resource.kind.clone(),
                    namespace.clone(),
                    field(&meta.name),
                );
                let namespace_meta = namespaces.get(&namespace);
                let labels = NamespaceCache::labels(&namespace_meta);
                let current = self.cache.get(&key).is_some_and(|c| {
                    c.resource_version == version
                        && c.generation == generation
                        && c.today == today
                        && c.labels.as_ref() == labels
                });
                if !current {
                    let mut value = serde_json::to_value(&*object).unwrap_or(Value::Null);
                    // Watched objects may lack apiVersion and kind, as list items do.
                    value["apiVersion"] = json!(resource.api_version);
                    value["kind"] = json!(resource.kind);
                    // A controller's object is left to its owner, as `audit` leaves it.
                    let owned = offline::owned_by_a_controller(&value);
                    let results = if owned {
                        Vec::new()
                    } else {
                        let ctx = Context {
                            today,
                            namespace_labels: labels,
                            cluster_params,
                        };
                        self.judged_last += 1;
                        metrics.objects_judged.inc();
                        offline::judge(set, &ctx, &value, &namespace)
                            .map(|j| report::results(set, &j, 0))
                            .unwrap_or_default()
                    };
                    // A result that stays the same keeps the time it was found.
                    let found = match self.cache.get(&key) {
                        Some(old) if old.results == results => old.found,
                        _ => now,
                    };
                    self.cache.insert(
                        key.clone(),
                        Cached {
                            resource_version: version,
                            generation,
                            today,
                            labels: labels.cloned(),
                            owned,
                            results,
                            found,
                        },
                    );
                }
                let cached = &self.cache[&key];
                if !cached.owned {
                    by_namespace.entry(namespace).or_default().extend(
                        cached.results.iter().cloned().map(|mut r| {
                            r["timestamp"]["seconds"] = json!(cached.found);
                            r
                        }),
                    );
                }
                seen.insert(key);
            }
        }
        self.cache.retain(|k, _| seen.contains(k));
        by_namespace
            .into_iter()
            .map(|(namespace, results)| {
                let mut report = report::report(&namespace, results);
                report["metadata"]["labels"] = json!({MANAGED_BY.0: MANAGED_BY.1});
                (namespace, report)
            })
            .collect()
    }
}

/// The reports as last written (or found at start-up), and the writes that converge them.
struct ReportWriter {
    client: kube::Client,
    /// One write per this long at most.
    pace: tokio::time::Interval,
    metrics: Arc<Metrics>,
    written: BTreeMap<String, Value>,
}

fn report_resource(namespace: &str) -> ApiResource {
    let kind = if namespace.is_empty() {
        "ClusterPolicyReport"
    } else {
        "PolicyReport"
    };
    ApiResource::from_gvk(&GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", kind))
}

/// Whether two reports say the same: their labels, summary and results, whenever each
/// result was found (a restart finds again what the written report already holds).
fn same(a: &Value, b: &Value) -> bool {
    let results = |r: &Value| -> Vec<Value> {
        let mut results = r["results"].as_array().cloned().unwrap_or_default();
        for result in &mut results {
            if let Some(map) = result.as_object_mut() {
                map.remove("timestamp");
            }
        }
        results
    };
    a["metadata"]["labels"] == b["metadata"]["labels"]
        && a["summary"] == b["summary"]
        && results(a) == results(b)
}

impl ReportWriter {
    fn new(client: kube::Client, per_second: f64, metrics: Arc<Metrics>) -> Self {
        let period = Duration::from_secs_f64(1.0 / per_second.max(0.001));
        let mut pace = tokio::time::interval(period);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            client,
            pace,
            metrics,
            written: BTreeMap::new(),
        }
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        let resource = report_resource(namespace);
        if namespace.is_empty() {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, &resource)
        }
    }

    /// The reports portcullis wrote before, found by its label.
    async fn read_written(&mut self) -> Result<(), OfflineError> {
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let params = ListParams::default().labels(&selector);
        let mut written = BTreeMap::new();
        for namespaced in [true, false] {
            let resource = report_resource(if namespaced { "any" } else { "" });
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
            let list = api
                .list(&params)
                .await
                .map_err(|e| OfflineError::Kube(format!("listing {}: {e}", resource.plural)))?;
            for item in list.items {
                if item.metadata.name.as_deref() != Some(report::REPORT_NAME) {
                    continue;
                }
                let namespace = item.metadata.namespace.clone().unwrap_or_default();
                written.insert(namespace, serde_json::to_value(item).map_err(kube_error)?);
            }
        }
        self.written = written;
        Ok(())
    }

    /// Writes what differs between `desired` and what is written: (writes done, failed).
    async fn converge(&mut self, desired: BTreeMap<String, Value>) -> (usize, usize) {
        let (mut done, mut failed) = (0, 0);
        let stale: Vec<String> = self
            .written
            .keys()
            .filter(|ns| !desired.contains_key(*ns))
            .cloned()
            .collect();
        let pp = PostParams {
            field_manager: Some("portcullis".into()),
            ..PostParams::default()
        };
        for (namespace, mut report) in desired {
            let operation = match self.written.get(&namespace) {
                Some(old) if same(old, &report) => continue,
                Some(old) => {
                    // Based on what was read: a conflicting writer gets a 409, not a win.
                    report["metadata"]["resourceVersion"] =
                        old["metadata"]["resourceVersion"].clone();
                    "update"
                }
                None => "create",
            };
            self.pace.tick().await;
            let object: DynamicObject = match serde_json::from_value(report) {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(%namespace, error = %e, "report not representable");
                    failed += 1;
                    continue;
                }
            };
            let api = self.api(&namespace);
            let result = if operation == "create" {
                api.create(&pp, &object).await
            } else {
                api.replace(report::REPORT_NAME, &pp, &object).await
            };
            match result.and_then(|o| serde_json::to_value(o).map_err(kube::Error::SerdeError)) {
                Ok(stored) => {
                    self.count(operation, "ok");
                    self.written.insert(namespace, stored);
                    done += 1;
                }
                Err(e) => {
                    tracing::warn!(%namespace, operation, error = %e, "report write failed");
                    self.count(operation, "failed");
                    failed += 1;
                }
            }
        }
        for namespace in stale {
            self.pace.tick().await;
            match self
                .api(&namespace)
                .delete(report::REPORT_NAME, &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    self.count("delete", "ok");
                    self.written.remove(&namespace);
                    done += 1;
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    self.written.remove(&namespace);
                }
                Err(e) => {
                    tracing::warn!(%namespace, operation = "delete", error = %e, "report write failed");
                    self.count("delete", "failed");
                    failed += 1;
                }
            }
        }
        (done, failed)
    }

    fn count(&self, operation: &'static str, result: &'static str) {
        self.metrics
            .report_writes
            .get_or_create(&ReportWriteLabels { operation, result })
            .inc();
    }
}
