//! Params read from the cluster, as kube-apiserver reads them for a ValidatingAdmissionPolicy:
//! one kube-rs reflector (list, then watch) per param kind the loaded policies name, started
//! with the namespace watch's client. Lookups never wait. Until a kind's first list is in, its
//! params are unknown, and a rule that needs them fails by its failurePolicy, as the
//! apiserver's does; a kind the cluster does not serve stays unknown, and is logged.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};

use futures_util::{FutureExt as _, StreamExt as _};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{self, Scope};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::Value;

use crate::policy::params::{ParamKey, ParamObjects, Params};

/// The cluster's params, by kind; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ParamCache {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    client: kube::Client,
    /// Replaced whole on every change, so a request reads one consistent set.
    current: RwLock<Arc<Params>>,
    watched: Mutex<BTreeSet<ParamKey>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl ParamCache {
    /// No cluster: params come from the policy directory alone.
    pub fn disabled() -> Self {
        Self::default()
    }

    pub fn new(client: kube::Client) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                client,
                current: RwLock::default(),
                watched: Mutex::default(),
            })),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The params read so far; `None` without a cluster. Never blocks on the API.
    pub fn current(&self) -> Option<Arc<Params>> {
        let inner = self.inner.as_ref()?;
        Some(
            inner
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Starts watching every kind in `kinds` not yet watched (needs get, list and watch on
    /// each). Called at start-up and after every reload; a watch runs until the process ends.
    pub fn watch(&self, kinds: &[&ParamKey]) {
        let Some(inner) = &self.inner else { return };
        let mut watched = inner.watched.lock().unwrap_or_else(|e| e.into_inner());
        for kind in kinds {
            if watched.insert((*kind).clone()) {
                tokio::spawn(watch_kind(inner.clone(), (*kind).clone()));
            }
        }
    }
}

async fn watch_kind(inner: Arc<Inner>, key: ParamKey) {
    let (group, version) = key.group_version();
    let gvk = GroupVersionKind::gvk(group, version, &key.kind);
    let (resource, capabilities) = match discovery::pinned_kind(&inner.client, &gvk).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(kind = %key, error = %e, "param kind not served by the cluster: rules that need it fail by their failurePolicy");
            return;
        }
    };
    let namespaced = capabilities.scope == Scope::Namespaced;
    let writer = Writer::new(resource.clone());
    let store = writer.as_reader();
    let api: kube::Api<DynamicObject> = kube::Api::all_with(inner.client.clone(), &resource);
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    let mut stream = std::pin::pin!(stream);
    tracing::info!(kind = %key, "watching params");
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            tracing::warn!(kind = %key, error = %e, "param watch failed; retrying");
            continue;
        }
        // Published only once the first list is complete: a partial list would look like
        // params that do not exist.
        if store.wait_until_ready().now_or_never().is_none() {
            continue;
        }
        let objects = store
            .state()
            .iter()
            .map(|o| as_json(o, &resource))
            .collect();
        let count = {
            let mut current = inner.current.write().unwrap_or_else(|e| e.into_inner());
            let mut next = Params::clone(&current);
            let first = next.kind(&key).is_none();
            let objects = ParamObjects {
                namespaced,
                objects,
            };
            let count = first.then_some(objects.objects.len());
            next.insert(key.clone(), objects);
            *current = Arc::new(next);
            count
        };
        if let Some(count) = count {
            tracing::info!(kind = %key, count, "params read from the cluster");
        }
    }
}

/// An object as a policy reads it in `params`, with its apiVersion and kind, which list
/// items may leave out.
fn as_json(object: &DynamicObject, resource: &ApiResource) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), resource.api_version.clone().into());
        map.insert("kind".into(), resource.kind.clone().into());
    }
    value
}
