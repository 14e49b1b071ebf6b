//! Namespace labels, which AdmissionReviews do not carry: a cache of Namespace metadata kept
//! by a kube-rs reflector (list, then watch) when running in a cluster. Lookups never wait:
//! until the first list completes, for a namespace not yet seen, or while the API is
//! unreachable (the watcher retries with backoff), a lookup answers "unknown" and label rules
//! simply do not match, leaving the policy's own modes in force.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt as _, watcher};

type Meta = PartialObjectMeta<Namespace>;

/// A read handle on the namespace cache; cheap to clone.
#[derive(Clone, Debug)]
pub struct NamespaceCache {
    store: Option<Store<Meta>>,
}

impl NamespaceCache {
    /// No cache: every lookup is unknown (outside a cluster, or `--watch-namespaces never`).
    pub fn disabled() -> Self {
        Self { store: None }
    }

    /// A cache fed by `writer`: the reflector in production, the test itself in tests.
    pub fn new(writer: &Writer<Meta>) -> Self {
        Self {
            store: Some(writer.as_reader()),
        }
    }

    /// Whether a watch feeds this cache at all.
    pub fn is_enabled(&self) -> bool {
        self.store.is_some()
    }

    /// Resolves once the first complete list is in the cache; never, when there is no cache.
    pub async fn synced(&self) {
        match &self.store {
            Some(store) if store.wait_until_ready().await.is_ok() => {}
            _ => std::future::pending().await,
        }
    }

    /// The namespace's metadata, if the cache holds it (without a cache, `None` at once).
    /// Never blocks.
    pub fn get(&self, namespace: &str) -> Option<Arc<Meta>> {
        self.store.as_ref()?.get(&ObjectRef::new(namespace))
    }

    /// The labels of what `get` returned; a namespace without labels has an empty set.
    pub fn labels(meta: &Option<Arc<Meta>>) -> Option<&BTreeMap<String, String>> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        meta.as_ref()
            .map(|m| m.metadata.labels.as_ref().unwrap_or(&EMPTY))
    }
}

/// Starts watching Namespace metadata (needs get, list and watch on namespaces; nothing else)
/// and returns the cache. The watch runs until the process ends, retrying with backoff.
pub fn watch(client: kube::Client) -> NamespaceCache {
    let writer = Writer::default();
    let cache = NamespaceCache::new(&writer);
    // An Api of PartialObjectMeta makes metadata-only requests: no specs are held.
    let api: kube::Api<Meta> = kube::Api::all(client);
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "namespace watch failed; retrying (label rules use the policy's modes meanwhile)");
            }
        }
    });
    cache
}
