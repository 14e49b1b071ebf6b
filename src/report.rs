//! What `check` and `audit` print: plain text for people, JSON for scripts, and the
//! `wgpolicyk8s.io/v1alpha2` PolicyReport / ClusterPolicyReport format that Policy Reporter
//! and other tools read.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::{Value, json};

use crate::offline::Judged;
use crate::policy::{CheckId, Mode, PolicySet};
use crate::verdict::{Subject, Verdict};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Policyreport,
}

/// True when anything would be denied: an enforced violation, or an object that cannot be read.
pub fn any_denied(judged: &[Judged]) -> bool {
    judged.iter().any(|j| !j.verdict.is_allowed())
}

pub fn write(
    set: &PolicySet,
    judged: &[Judged],
    format: Format,
    out: &mut impl Write,
) -> io::Result<()> {
    match format {
        Format::Text => text(judged, out),
        Format::Json => {
            let items: Vec<Value> = judged.iter().map(to_json).collect();
            serde_json::to_writer_pretty(&mut *out, &items)?;
            writeln!(out)
        }
        Format::Policyreport => {
            serde_json::to_writer_pretty(&mut *out, &policy_reports(set, judged, now_seconds()))?;
            writeln!(out)
        }
    }
}

fn text(judged: &[Judged], out: &mut impl Write) -> io::Result<()> {
    let (mut denied, mut findings, mut clean) = (0, 0, 0);
    for j in judged {
        let object = format!("{} {}/{}", j.kind, j.namespace, j.name);
        match &j.verdict {
            Verdict::Skipped(skip) => {
                clean += 1;
                writeln!(out, "{} {object}: skipped ({})", j.source, skip.as_str())?;
            }
            Verdict::Unjudgeable(reason) => {
                denied += 1;
                writeln!(out, "{} {object}: DENIED: {reason}", j.source)?;
            }
            Verdict::Judged(violations) if violations.is_empty() => {
                clean += 1;
                writeln!(out, "{} {object}: ok", j.source)?;
            }
            Verdict::Judged(violations) => {
                if j.verdict.is_allowed() {
                    findings += 1;
                } else {
                    denied += 1;
                }
                for v in violations {
                    writeln!(out, "{} {object}: {}: {v}", j.source, v.outcome())?;
                    if let Some(e) = &v.exemption {
                        writeln!(out, "    exempted by {e}")?;
                    } else if let Some(add) = v.add.as_ref().filter(|_| v.mode != Mode::Audit) {
                        writeln!(out, "    fix: at {} set:", add.at)?;
                        for line in add.yaml.lines() {
                            writeln!(out, "      {line}")?;
                        }
                    }
                    if let Some((mode, date)) = v.next.filter(|_| v.exemption.is_none()) {
                        writeln!(out, "    {} from {date}", mode.participle())?;
                    }
                }
            }
        }
    }
    writeln!(
        out,
        "{} objects: {denied} denied, {findings} admitted with findings, {clean} clean",
        judged.len()
    )
}

fn to_json(j: &Judged) -> Value {
    let violations: Vec<Value> = j
        .verdict
        .violations()
        .map(|v| {
            let container = match &v.subject {
                Subject::Pod | Subject::Object => Value::Null,
                Subject::Container { kind, index, name } => {
                    json!({"type": kind.field(), "index": index, "name": name})
                }
            };
            json!({
                "policy": &*v.policy,
                "check": v.rule.as_str(),
                "mode": v.mode.as_str(),
                "outcome": v.outcome(),
                "container": container,
                "field": v.field.to_string(),
                "message": v.to_string(),
                "fix": v.add.as_ref().map(|a| json!({"at": a.at.to_string(), "yaml": a.yaml})),
                "next": v.next.map(|(mode, date)| json!({"mode": mode.as_str(), "from": date.to_string()})),
                "exemption": v.exemption.as_ref().map(|e| json!({
                    "name": e.name, "source": e.source.as_str(), "reason": e.reason,
                    "owner": e.owner, "expires": e.expires.map(|d| d.to_string()),
                })),
            })
        })
        .collect();
    let error = match &j.verdict {
        Verdict::Unjudgeable(reason) => Value::String(reason.clone()),
        _ => Value::Null,
    };
    json!({
        "source": j.source,
        "apiVersion": j.api_version,
        "kind": j.kind,
        "namespace": j.namespace,
        "name": j.name,
        "allowed": j.verdict.is_allowed(),
        "error": error,
        "violations": violations,
    })
}

fn now_seconds() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// One PolicyReport per namespace (a ClusterPolicyReport for objects without one), in a
/// `v1` List so `kubectl apply -f` takes the output as is.
pub fn policy_reports(set: &PolicySet, judged: &[Judged], timestamp: i64) -> Value {
    let mut by_namespace: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for j in judged {
        by_namespace
            .entry(j.namespace.as_str())
            .or_default()
            .extend(results(set, j, timestamp));
    }
    let items: Vec<Value> = by_namespace
        .into_iter()
        .map(|(namespace, results)| report(namespace, results))
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// The report results for one judged object: one per violation, else one pass or skip. A
/// violation's category and severity are its policy's, or for a built-in check its own
/// category.
pub fn results(set: &PolicySet, j: &Judged, timestamp: i64) -> Vec<Value> {
    // An ObjectReference: fields that are unknown are left out, not null (the CRD's
    // schema types them as strings).
    let mut resource = json!({"apiVersion": j.api_version, "kind": j.kind, "name": j.name});
    if !j.namespace.is_empty() {
        resource["namespace"] = json!(j.namespace);
    }
    if let Some(uid) = &j.uid {
        resource["uid"] = json!(uid);
    }
    let result = |policy: &str, rule: &str, result: &str, message: String, props: Value| {
        json!({
            "source": "portcullis",
            "policy": policy,
            "rule": rule,
            "result": result,
            "scored": true,
            "message": message,
            "properties": props,
            "resources": [resource],
            "timestamp": {"seconds": timestamp, "nanos": 0},
        })
    };
    match &j.verdict {
        Verdict::Skipped(skip) => vec![result(
            "portcullis",
            "all-checks",
            "skip",
            skip.as_str().to_owned(),
            json!({}),
        )],
        Verdict::Unjudgeable(reason) => vec![result(
            "portcullis",
            "readable-object",
            "error",
            reason.clone(),
            json!({}),
        )],
        Verdict::Judged(violations) if violations.is_empty() => vec![result(
            "portcullis",
            "all-checks",
            "pass",
            "every check passed".to_owned(),
            json!({}),
        )],
        Verdict::Judged(violations) => violations
            .iter()
            .map(|v| {
                let status = match (&v.exemption, v.mode) {
                    (Some(_), _) => "skip",
                    (None, Mode::Warn) => "warn",
                    (None, _) => "fail",
                };
                let mut props = json!({"mode": v.mode.as_str(), "field": v.field.to_string()});
                if let Some(e) = &v.exemption {
                    props["exemption"] = Value::String(e.to_string());
                }
                let mut r = result(&v.policy, v.rule.as_str(), status, v.to_string(), props);
                let policy = set.policies.iter().find(|p| p.name == v.policy);
                let category = policy
                    .and_then(|p| p.category.as_deref())
                    .or_else(|| CheckId::parse(v.rule.as_str()).map(CheckId::category));
                if let Some(category) = category {
                    r["category"] = json!(category);
                }
                if let Some(severity) = policy.and_then(|p| p.severity.as_deref()) {
                    r["severity"] = json!(severity);
                }
                r
            })
            .collect(),
    }
}

/// The PolicyReport of `namespace` (the ClusterPolicyReport for `""`) holding `results`,
/// with their summary.
pub fn report(namespace: &str, results: Vec<Value>) -> Value {
    let mut summary = json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0});
    for r in &results {
        let key = r["result"].as_str().unwrap_or("error").to_owned();
        summary[&key] = json!(summary[&key].as_i64().unwrap_or(0) + 1);
    }
    let (kind, metadata) = if namespace.is_empty() {
        ("ClusterPolicyReport", json!({"name": REPORT_NAME}))
    } else {
        (
            "PolicyReport",
            json!({"name": REPORT_NAME, "namespace": namespace}),
        )
    };
    json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": kind,
        "metadata": metadata,
        "summary": summary,
        "results": results,
    })
}

/// The name of every report portcullis writes, one per namespace.
pub const REPORT_NAME: &str = "portcullis";
