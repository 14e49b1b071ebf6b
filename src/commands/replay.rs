//! `portcullis replay`: reads a kube-apiserver audit log (JSON lines, as the log backend
//! writes them) and answers "what would these policies have denied?", per namespace, check
//! and user, with the worst offenders. Events stream through one reused line buffer, so
//! memory grows with the number of distinct namespaces, users and workloads, not with the log.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::UserInfo;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::{ReplayArgs, ReplayFormat};
use crate::offline::{self, OfflineError};
use crate::policy::{Date, RuleId};
use crate::rollout::Context;
use crate::verdict::Verdict;
use crate::workload::WorkloadKind;

/// The fields of an `audit.k8s.io/v1` Event that replay reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    user: Option<UserInfo>,
    #[serde(default)]
    impersonated_user: Option<UserInfo>,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    request_object: Option<Value>,
    #[serde(default)]
    response_object: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    api_group: Option<String>,
    #[serde(default)]
    subresource: Option<String>,
}

/// Per namespace, check and user: requests the check would deny, warn on, audit, and exempt.
#[derive(Clone, Copy, Default)]
struct Counts {
    denied: u64,
    warned: u64,
    audited: u64,
    exempted: u64,
}

/// Where a controller's creation traces back to: the user whose request created the root
/// workload, that workload, and whether a request along the way would have been denied.
#[derive(Clone)]
struct Origin {
    user: String,
    workload: String,
    denied: bool,
}

#[derive(Default)]
struct Tally {
    lines: u64,
    judged: u64,
    denied: u64,
    /// Requests Kubernetes' controllers made for an object whose own creation would have been
    /// denied: under enforce they never happen, so they are counted apart.
    downstream_of_denied: u64,
    /// Controllers created in the log, by namespace, kind and name, so the objects they make
    /// are attributed to the request that created the root (logs are in time order).
    origins: HashMap<(String, &'static str, String), Origin>,
    skipped: BTreeMap<&'static str, u64>,
    unparseable: Vec<u64>,
    by_scope: BTreeMap<(String, RuleId, String), Counts>,
    users: HashMap<String, u64>,
    workloads: HashMap<String, u64>,
}

impl Tally {
    fn skip(&mut self, why: &'static str) {
        *self.skipped.entry(why).or_default() += 1;
    }
}

pub fn run(args: &ReplayArgs) -> Result<bool, OfflineError> {
    let set = offline::load_policies(args.judge.policies.as_deref())?;
    let today = args.judge.as_of.unwrap_or_else(Date::today);
    let ctx = Context {
        today,
        namespace_labels: None,
        cluster_params: None,
    };
    let name = args.audit_log.display().to_string();
    let io = |source| OfflineError::Read {
        path: name.clone(),
        source,
    };
    let (input, total): (Box<dyn Read>, Option<u64>) = if name == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let file = std::fs::File::open(&args.audit_log).map_err(io)?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let progress = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let mut tally = Tally::default();
    let mut line = String::new();
    let mut bytes = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        tally.lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(&line) {
            Ok(event) => judge_event(&set, &ctx, event, &mut tally),
            Err(_) => {
                tally.skip("unparseable line");
                if tally.unparseable.len() < 5 {
                    tally.unparseable.push(tally.lines);
                }
            }
        }
        if progress
            && tally.lines % 1024 == 0
            && last_progress.elapsed() > Duration::from_millis(500)
        {
            last_progress = Instant::now();
            let share = total.map_or(String::new(), |t| format!(" ({}%)", bytes * 100 / t.max(1)));
            eprint!(
                "\rreplay: {} events read{share}, {} judged",
                tally.lines, tally.judged
            );
        }
    }
    if progress {
        eprintln!(
            "\rreplay: {} events read, {} judged",
            tally.lines, tally.judged
        );
    }
    let mut out = std::io::stdout().lock();
    match args.output {
        ReplayFormat::Text => text(&name, today, &tally, args.top, &mut out)?,
        ReplayFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &to_json(today, &tally, args.top))
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
    }
    Ok(false)
}

fn judge_event(set: &crate::policy::PolicySet, ctx: &Context, event: Event, tally: &mut Tally) {
    // Each request is logged once per stage; only the final stage is counted.
    if event
        .stage
        .as_deref()
        .is_some_and(|s| s != "ResponseComplete" && s != "Panic")
    {
        return tally.skip("not the ResponseComplete stage");
    }
    let Some(r) = event.object_ref else {
        return tally.skip("no objectRef");
    };
    let group = r.api_group.as_deref().unwrap_or("");
    // Workloads, and with CEL rules loaded any object: those rules may match any kind.
    let kind = WorkloadKind::from_group_resource(group, &r.resource);
    if kind.is_none() && !set.has_cel() {
        return tally.skip("not a workload");
    }
    let verb = event.verb.as_str();
    if !matches!(verb, "create" | "update" | "patch") {
        return tally.skip("verb not judged");
    }
    let pod = kind == Some(WorkloadKind::Pod);
    match r.subresource.as_deref() {
        None | Some("") if pod && verb != "create" => {
            // A pod's spec is immutable after creation (the webhook skips such updates).
            return tally.skip("pod update");
        }
        None | Some("") => {}
        Some("ephemeralcontainers") if pod => {}
        Some(_) => return tally.skip("subresource not judged"),
    }
    // A patch body is not the object; RequestResponse-level events carry the result.
    let object = if verb == "patch" {
        event.response_object
    } else {
        event.request_object.or(event.response_object)
    };
    let Some(mut object) = object else {
        return tally.skip("no object (Metadata-level event)");
    };
    if object.get("kind").is_none() {
        match kind {
            Some(kind) => object["kind"] = json!(kind.as_str()),
            None => return tally.skip("no kind in the object"),
        }
    }
    let namespace = r.namespace.unwrap_or_default();
    let Some(judged) = offline::judge(set, ctx, &object, &namespace) else {
        return tally.skip("not a workload");
    };
    tally.judged += 1;
    // The user the request acted as: the impersonated one, not the impersonator.
    let requester = event
        .impersonated_user
        .or(event.user)
        .and_then(|u| u.username)
        .unwrap_or_else(|| "<unknown>".into());
    let denied = !judged.verdict.is_allowed();
    let origin = attribute(tally, &object, &judged.namespace, requester, || {
        format!("{}/{} {}", judged.namespace, judged.kind, judged.name)
    });
    if verb == "create" && kind.is_some_and(WorkloadKind::is_controller) {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .or(r.name.as_deref())
            .unwrap_or_default();
        let key = (
            judged.namespace.clone(),
            kind.map_or("", WorkloadKind::as_str),
            name.to_owned(),
        );
        let own = Origin {
            denied: origin.denied || denied,
            ..origin.clone()
        };
        tally.origins.insert(key, own);
    }
    if origin.denied {
        tally.downstream_of_denied += 1;
        return;
    }
    let user = origin.user;
    if denied {
        tally.denied += 1;
        *tally.users.entry(user.clone()).or_default() += 1;
        *tally.workloads.entry(origin.workload).or_default() += 1;
    }
    if let Verdict::Unjudgeable(_) = judged.verdict {
        let key = (
            judged.namespace.clone(),
            RuleId::new("unreadable-object"),
            user.clone(),
        );
        tally.by_scope.entry(key).or_default().denied += 1;
    }
    // One count per check per request, whatever the number of containers.
    let mut seen: Vec<(&RuleId, &'static str)> = Vec::new();
    for v in judged.verdict.violations() {
        let key = (&v.rule, v.outcome());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let counts = tally
            .by_scope
            .entry((judged.namespace.clone(), key.0.clone(), user.clone()))
            .or_default();
        match key.1 {
            "enforce" => counts.denied += 1,
            "warn" => counts.warned += 1,
            "exempt" => counts.exempted += 1,
            _ => counts.audited += 1,
        }
    }
}

/// Who is accountable for a request. An object a controller made for an owner whose creation
/// is in the log traces back to the request that created the root workload, so offender
/// lists name people and workloads, not `replicaset-controller`. An owner created before the
/// log began is named as the workload, with no person to name.
fn attribute(
    tally: &Tally,
    object: &Value,
    namespace: &str,
    requester: String,
    this_workload: impl FnOnce() -> String,
) -> Origin {
    let owners = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array);
    let owner = owners.and_then(|all| {
        all.iter()
            .find(|o| o["controller"] == true)
            .or_else(|| all.first())
    });
    let Some(owner) = owner else {
        return Origin {
            user: requester,
            workload: this_workload(),
            denied: false,
        };
    };
    let kind = owner["kind"].as_str().unwrap_or_default();
    let name = owner["name"].as_str().unwrap_or_default();
    let known = WorkloadKind::from_kind(kind).and_then(|k| {
        tally
            .origins
            .get(&(namespace.to_owned(), k.as_str(), name.to_owned()))
    });
    match known {
        Some(origin) => origin.clone(),
        None => Origin {
            user: format!("(controller of {namespace}/{kind} {name}, created before this log)"),
            workload: format!("{namespace}/{kind} {name}"),
            denied: false,
        },
    }
}

fn top(map: &HashMap<String, u64>, n: usize) -> Vec<(&str, u64)> {
    let mut all: Vec<(&str, u64)> = map.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    all.truncate(n);
    all
}

fn text(name: &str, today: Date, t: &Tally, n: usize, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{name}: {} events, {} workload requests judged as of {today}, {} would have been denied",
        t.lines, t.judged, t.denied
    )?;
    if t.downstream_of_denied > 0 {
        writeln!(
            out,
            "{} more were made by controllers for workloads that would have been denied (downstream, not counted)",
            t.downstream_of_denied
        )?;
    }
    if !t.by_scope.is_empty() {
        writeln!(
            out,
            "\nby namespace, check and user (requests denied / warned / audited / exempted):"
        )?;
        let mut rows: Vec<_> = t.by_scope.iter().collect();
        rows.sort_by(|a, b| b.1.denied.cmp(&a.1.denied).then(a.0.cmp(b.0)));
        for ((ns, check, user), c) in rows {
            writeln!(
                out,
                "  {ns:<20} {check:<28} {user:<40} {} / {} / {} / {}",
                c.denied, c.warned, c.audited, c.exempted
            )?;
        }
    }
    for (title, map) in [("users", &t.users), ("workloads", &t.workloads)] {
        let worst = top(map, n);
        if !worst.is_empty() {
            writeln!(
                out,
                "\nworst offenders ({title}, by requests that would have been denied):"
            )?;
            for (who, count) in worst {
                writeln!(out, "  {count:>6}  {who}")?;
            }
        }
    }
    if !t.skipped.is_empty() {
        writeln!(out, "\nnot judged:")?;
        for (why, count) in &t.skipped {
            writeln!(out, "  {count:>6}  {why}")?;
        }
        if !t.unparseable.is_empty() {
            writeln!(out, "  (unparseable lines include {:?})", t.unparseable)?;
        }
    }
    Ok(())
}

fn to_json(today: Date, t: &Tally, n: usize) -> Value {
    let scopes: Vec<Value> = t
        .by_scope
        .iter()
        .map(|((ns, check, user), c)| {
            json!({"namespace": ns, "check": check.as_str(), "user": user, "denied": c.denied,
                   "warned": c.warned, "audited": c.audited, "exempted": c.exempted})
        })
        .collect();
    let worst = |map| -> Vec<Value> {
        top(map, n)
            .into_iter()
            .map(|(who, count)| json!({"name": who, "denied": count}))
            .collect()
    };
    json!({
        "asOf": today.to_string(),
        "events": t.lines,
        "judged": t.judged,
        "denied": t.denied,
        "downstreamOfDenied": t.downstream_of_denied,
        "skipped": t.skipped,
        "byNamespaceCheckUser": scopes,
        "worstUsers": worst(&t.users),
        "worstWorkloads": worst(&t.workloads),
    })
}
