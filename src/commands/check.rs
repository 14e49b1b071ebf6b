//! `portcullis check`: judges manifests offline, as the webhooks would judge them on create,
//! for CI pipelines (`helm template . | portcullis check -`). Exit 0 when nothing would be
//! denied, 1 when something would, 2 when the inputs or policies cannot be read.

use std::collections::BTreeMap;

use crate::cli::CheckArgs;
use crate::offline::{self, OfflineError};
use crate::policy::Date;
use crate::report;
use crate::rollout::Context;

/// Returns whether anything would be denied.
pub fn run(args: &CheckArgs) -> Result<bool, OfflineError> {
    let set = offline::load_policies(args.judge.policies.as_deref())?;
    let today = args.judge.as_of.unwrap_or_else(Date::today);
    let inputs = offline::read_inputs(&args.paths)?;
    // Namespaces given in the input lend their labels (namespace label rules, selectors, CEL's
    // namespaceObject) to the objects in them, as the namespace watch does when serving.
    let namespaces: BTreeMap<String, BTreeMap<String, String>> = inputs
        .iter()
        .filter(|(_, o)| o["kind"] == "Namespace" && o["apiVersion"] == "v1")
        .filter_map(|(_, o)| offline::namespace_labels(o))
        .collect();
    let mut judged = Vec::new();
    for (source, object) in inputs {
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(serde_json::Value::as_str)
            .unwrap_or(&args.namespace);
        let ctx = Context {
            today,
            namespace_labels: namespaces.get(namespace),
            cluster_params: None,
        };
        if let Some(mut j) = offline::judge(&set, &ctx, &object, &args.namespace) {
            j.source = source;
            judged.push(j);
        }
    }
    let mut out = std::io::stdout().lock();
    report::write(&set, &judged, args.output, &mut out)?;
    Ok(report::any_denied(&judged))
}
