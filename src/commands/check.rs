//! `portcullis check`: judges manifests offline, as the webhooks would judge them on create,
//! for CI pipelines (`helm template . | portcullis check -`). Exit 0 when nothing would be
//! denied, 1 when something would, 2 when the inputs or policies cannot be read.

use crate::cli::CheckArgs;
use crate::offline::{self, OfflineError};
use crate::policy::Date;
use crate::report;
use crate::rollout::Context;

/// Returns whether anything would be denied.
pub fn run(args: &CheckArgs) -> Result<bool, OfflineError> {
    let set = offline::load_policies(args.judge.policies.as_deref())?;
    let ctx = Context {
        today: args.judge.as_of.unwrap_or_else(Date::today),
        namespace_labels: None,
    };
    let mut judged = Vec::new();
    for (source, object) in offline::read_inputs(&args.paths)? {
        if let Some(mut j) = offline::judge(&set, &ctx, &object, &args.namespace) {
            j.source = source;
            judged.push(j);
        }
    }
    let mut out = std::io::stdout().lock();
    report::write(&judged, args.output, &mut out)?;
    Ok(report::any_denied(&judged))
}
