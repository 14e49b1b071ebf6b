//! `portcullis audit`: lists a cluster's workloads, and whatever other resources CEL rules
//! name (paginated, read-only), and judges each as
//! if it were created now, with the namespace labels the server would see: the report a team
//! reads before switching a check to enforce. Objects a controller owns are left out: their
//! owner is judged, and it is the owner's manifest that needs the fix.

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

use crate::cli::AuditArgs;
use crate::offline::{self, OfflineError};
use crate::policy::Date;
use crate::report;
use crate::rollout::Context;
use crate::workload::WorkloadKind;

/// Page size: small enough to keep each response modest on large clusters.
const PAGE: u32 = 250;

fn kube_error(e: impl std::fmt::Display) -> OfflineError {
    OfflineError::Kube(e.to_string())
}

pub async fn run(args: &AuditArgs) -> Result<bool, OfflineError> {
    let set = offline::load_policies(args.judge.policies.as_deref())?;
    let today = args.judge.as_of.unwrap_or_else(Date::today);
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(kube_error)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(kube_error)?
        }
        None => kube::Config::infer().await.map_err(kube_error)?,
    };
    let client = kube::Client::try_from(config).map_err(kube_error)?;

    let labels = namespace_labels(&client).await?;
    let mut judged = Vec::new();
    let mut judge = |mut object: Value, api_version: &str, kind: &str| {
        if offline::owned_by_a_controller(&object) {
            return;
        }
        // List items carry no apiVersion and kind.
        object["apiVersion"] = Value::String(api_version.to_owned());
        object["kind"] = Value::String(kind.to_owned());
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let ctx = Context {
            today,
            namespace_labels: labels.get(&namespace),
            cluster_params: None,
        };
        if let Some(mut j) = offline::judge(&set, &ctx, &object, &namespace) {
            j.source = "cluster".into();
            judged.push(j);
        }
    };
    // Beyond the workloads, whatever resources CEL rules name (listed cluster-wide, then
    // narrowed to --namespace: some are cluster-scoped).
    for (group, version, plural) in offline::cel_resources(&set) {
        let api_version = if group.is_empty() {
            version.clone()
        } else {
            format!("{group}/{version}")
        };
        let resource = ApiResource {
            group,
            version,
            api_version: api_version.clone(),
            kind: String::new(),
            plural: plural.clone(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let (kind, objects) = list_all(&api)
            .await
            .map_err(|e| OfflineError::Kube(format!("listing {plural}: {e}")))?;
        for object in objects {
            let namespace = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str);
            let wanted = args.namespaces.is_empty()
                || namespace.is_some_and(|ns| args.namespaces.iter().any(|n| n == ns));
            if wanted {
                judge(object, &api_version, &kind);
            }
        }
    }
    for kind in WorkloadKind::ALL {
        let gvk = GroupVersionKind::gvk(kind.group(), "v1", kind.as_str());
        let resource = ApiResource::from_gvk(&gvk);
        let apis: Vec<Api<DynamicObject>> = if args.namespaces.is_empty() {
            vec![Api::all_with(client.clone(), &resource)]
        } else {
            args.namespaces
                .iter()
                .map(|ns| Api::namespaced_with(client.clone(), ns, &resource))
                .collect()
        };
        for api in apis {
            let (_, objects) = list_all(&api)
                .await
                .map_err(|e| OfflineError::Kube(format!("listing {}: {e}", resource.plural)))?;
            for object in objects {
                judge(object, &resource.api_version, kind.as_str());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    report::write(&set, &judged, args.output, &mut out)?;
    Ok(report::any_denied(&judged))
}

/// Every object of a list, page by page (`limit` and `continue`), and the kind of its items
/// (the list's kind without `List`).
async fn list_all(api: &Api<DynamicObject>) -> Result<(String, Vec<Value>), kube::Error> {
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        let kind = page
            .types
            .kind
            .strip_suffix("List")
            .unwrap_or_default()
            .to_owned();
        for item in page.items {
            out.push(serde_json::to_value(item).map_err(kube::Error::SerdeError)?);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok((kind, out)),
        }
    }
}

/// Namespace labels for `namespaceLabels` and selectors. Without permission to list
/// namespaces (403) the audit goes on with the policies' own modes, as the server would;
/// any other failure stops it.
async fn namespace_labels(
    client: &kube::Client,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, OfflineError> {
    let gvk = GroupVersionKind::gvk("", "v1", "Namespace");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    match list_all(&api).await {
        Ok((_, namespaces)) => Ok(namespaces
            .into_iter()
            .filter_map(|ns| offline::namespace_labels(&ns))
            .collect()),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            eprintln!(
                "portcullis audit: may not list namespaces ({}); namespace label rules will not match",
                status.message
            );
            Ok(BTreeMap::new())
        }
        Err(e) => Err(OfflineError::Kube(format!("listing namespaces: {e}"))),
    }
}
