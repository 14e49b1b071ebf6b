//! Admission semantics that depend on the request around the object: operations, UPDATEs,
//! subresources, namespaces, unreadable objects, modes, and where mutation applies. Driven
//! through the router with captured apiserver reviews or reviews framed the same way.

mod common;

use common::*;
use portcullis::policy::{self, PolicySet};
use serde_json::{Value, json};

/// The bare pod from a captured review: no security context, probes or limits.
fn violating_pod() -> Value {
    read_json(&apiserver_fixtures().join("create-pod-2.json"))["request"]["object"].clone()
}

fn policy_set(yaml: &str) -> PolicySet {
    PolicySet {
        policies: vec![policy::parse("test.yaml", yaml).unwrap()],
        ..PolicySet::default()
    }
}

const ALL_FOUR: [&str; 4] = [
    "liveness-probe",
    "readiness-probe",
    "resource-limits",
    "run-as-non-root",
];

#[tokio::test]
async fn update_that_leaves_the_pod_spec_alone_is_allowed() {
    let app = default_app();
    let old = violating_pod();
    let mut new = old.clone();
    new["metadata"]["labels"]["tier"] = json!("gold");
    new["metadata"]["finalizers"] = json!(["example.com/keep"]);
    let response = answer(
        &app,
        "/validate",
        &review("UPDATE", "team-a", Some(&new), Some(&old)),
    )
    .await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test]
async fn update_of_a_terminating_object_that_changes_its_spec_is_judged() {
    let app = default_app();
    let mut old = violating_pod();
    old["metadata"]["deletionTimestamp"] = json!("2026-11-22T07:59:57Z");
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let response = answer(
        &app,
        "/validate",
        &review("UPDATE", "team-a", Some(&new), Some(&old)),
    )
    .await;
    assert_eq!(denied_checks(&response), ALL_FOUR);
}

#[tokio::test]
async fn deployment_template_change_is_judged_but_replica_change_is_not() {
    let app = default_app();
    let captured = read_json(&apiserver_fixtures().join("create-deployment.json"));
    let old = captured["request"]["object"].clone();
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = json!(7);
    let response = answer(
        &app,
        "/validate",
        &review("UPDATE", "team-a", Some(&scaled), Some(&old)),
    )
    .await;
    assert_eq!(
        response["allowed"], true,
        "a replica change must never be blocked"
    );
    let mut changed = old.clone();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    let response = answer(
        &app,
        "/validate",
        &review("UPDATE", "team-a", Some(&changed), Some(&old)),
    )
    .await;
    assert_eq!(
        denied_checks(&response),
        ["liveness-probe", "readiness-probe"]
    );
}

#[tokio::test]
async fn labels_annotations_and_owner_references_do_not_switch_evaluation_off() {
    let app = default_app();
    let mut pod = violating_pod();
    pod["metadata"]["annotations"] = json!({"portcullis.dev/exempt": "run-as-non-root"});
    pod["metadata"]["labels"] = json!({"portcullis.dev/mode": "off"});
    pod["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "fake", "uid": "1"}]);
    let response = answer(&app, "/validate", &create(&pod)).await;
    // Claiming a Job owner relaxes probes only.
    assert_eq!(
        denied_checks(&response),
        ["resource-limits", "run-as-non-root"]
    );
}

#[tokio::test]
async fn exempt_namespaces_are_neither_judged_nor_patched() {
    let app = default_app();
    for ns in ["kube-system", "kube-public", "kube-node-lease"] {
        let r = review("CREATE", ns, Some(&violating_pod()), None);
        assert_eq!(answer(&app, "/validate", &r).await["allowed"], true, "{ns}");
        assert!(
            patch_of(&answer(&app, "/mutate", &r).await).is_empty(),
            "{ns}"
        );
    }
    let custom = app_with(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  exemptNamespaces: [legacy]\n  checks:\n    run-as-non-root: {mode: enforce}\n",
    );
    let legacy = review("CREATE", "legacy", Some(&violating_pod()), None);
    assert_eq!(answer(&custom, "/validate", &legacy).await["allowed"], true);
    let system = review("CREATE", "kube-system", Some(&violating_pod()), None);
    assert_eq!(
        denied_checks(&answer(&custom, "/validate", &system).await),
        ["run-as-non-root"],
        "an explicit list replaces the default one"
    );
}

fn app_with(yaml: &str) -> axum::Router {
    app(policy_set(yaml))
}

#[tokio::test]
async fn create_without_an_object_is_denied_not_allowed() {
    let app = default_app();
    let mut r = create(&violating_pod());
    r["request"]["object"] = Value::Null;
    let response = answer(&app, "/validate", &r).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no Pod object"),
        "{response}"
    );
    assert!(patch_of(&answer(&app, "/mutate", &r).await).is_empty());
}

#[tokio::test]
async fn an_unreadable_pod_spec_is_denied_with_the_reason() {
    let app = default_app();
    for (field, bad) in [
        ("containers", json!("not-a-list")),
        ("securityContext", json!(["positional"])),
    ] {
        let mut pod = violating_pod();
        pod["spec"][field] = bad;
        let response = answer(&app, "/validate", &create(&pod)).await;
        assert_eq!(response["allowed"], false, "{field}: {response}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.contains("cannot be read"), "{message}");
    }
    let mut unreadable_user = violating_pod();
    unreadable_user["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": "zero"});
    let response = answer(&app, "/validate", &create(&unreadable_user)).await;
    assert_eq!(
        response["allowed"], false,
        "a field that cannot be parsed is never 'absent and fine'"
    );
    let mut no_template =
        read_json(&apiserver_fixtures().join("create-deployment.json"))["request"]["object"]
            .clone();
    no_template["spec"]
        .as_object_mut()
        .unwrap()
        .remove("template");
    let response = answer(&app, "/validate", &create(&no_template)).await;
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no pod spec at spec.template.spec"),
        "{response}"
    );
}

fn with_subresource(mut r: Value, sub: &str) -> Value {
    r["request"]["subResource"] = json!(sub);
    r["request"]["requestSubResource"] = json!(sub);
    r
}

#[tokio::test]
async fn pod_subresources_follow_the_fail_safe_rule() {
    let app = default_app();
    let old = violating_pod();
    let mut new = old.clone();
    new["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "2"}});
    let update = review("UPDATE", "team-a", Some(&new), Some(&old));
    for harmless in [
        "status",
        "binding",
        "eviction",
        "exec",
        "attach",
        "log",
        "portforward",
        "proxy",
    ] {
        let response = answer(
            &app,
            "/validate",
            &with_subresource(update.clone(), harmless),
        )
        .await;
        assert_eq!(response["allowed"], true, "{harmless}");
    }
    for judged in ["resize", "ephemeralcontainers", "some-future-subresource"] {
        let response = answer(&app, "/validate", &with_subresource(update.clone(), judged)).await;
        assert_eq!(
            response["allowed"], false,
            "{judged} must be judged as the pod it produces"
        );
        let patch =
            patch_of(&answer(&app, "/mutate", &with_subresource(update.clone(), judged)).await);
        assert!(patch.is_empty(), "{judged}: subresources are never patched");
    }
}

#[tokio::test]
async fn ephemeral_root_debugger_is_denied() {
    let app = default_app();
    let captured = read_json(&apiserver_fixtures().join("update-pod-ephemeralcontainers.json"));
    let mut r = captured.clone();
    r["request"]["object"]["spec"]["ephemeralContainers"][0]["securityContext"] =
        json!({"runAsUser": 0});
    let response = answer(&app, "/validate", &r).await;
    assert_eq!(denied_checks(&response), ["run-as-non-root"]);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("ephemeral container \"debugger-")
    );
}

#[tokio::test]
async fn other_kinds_subresources_and_operations_pass_untouched() {
    let app = default_app();
    let deployment =
        read_json(&apiserver_fixtures().join("create-deployment.json"))["request"]["object"]
            .clone();
    let mut scale = review(
        "UPDATE",
        "team-a",
        Some(&deployment),
        Some(&json!({"kind": "Deployment"})),
    );
    scale = with_subresource(scale, "status");
    assert_eq!(answer(&app, "/validate", &scale).await["allowed"], true);
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}});
    let r = create(&config_map);
    assert_eq!(answer(&app, "/validate", &r).await["allowed"], true);
    assert!(patch_of(&answer(&app, "/mutate", &r).await).is_empty());
    let delete = review("DELETE", "team-a", None, Some(&violating_pod()));
    assert_eq!(answer(&app, "/validate", &delete).await["allowed"], true);
    assert!(
        patch_of(&answer(&app, "/mutate", &delete).await).is_empty(),
        "a patch on DELETE is always rejected"
    );
}

#[tokio::test]
async fn dry_run_requests_are_judged_the_same_way() {
    let app = default_app();
    let mut r = create(&violating_pod());
    r["request"]["dryRun"] = json!(true);
    assert_eq!(
        denied_checks(&answer(&app, "/validate", &r).await),
        ALL_FOUR
    );
}

#[tokio::test]
async fn pod_updates_are_never_patched() {
    let app = default_app();
    let old = violating_pod();
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:2");
    let r = review("UPDATE", "team-a", Some(&new), Some(&old));
    assert!(
        patch_of(&answer(&app, "/mutate", &r).await).is_empty(),
        "pod specs are immutable after creation"
    );
}

const MUTATE_CONTROLLERS: &str = "apiVersion: portcullis.dev/v1alpha1
kind: Policy
metadata: {name: p}
spec:
  mutation:
    targets: [pods, controllers]
    resources:
      cpu: {request: 100m, limit: 500m}
      memory: {request: 128Mi, limit: 256Mi}
";

#[tokio::test]
async fn controller_templates_are_patched_only_when_the_policy_says_so() {
    let default = default_app();
    let opted_in = app_with(MUTATE_CONTROLLERS);
    for (file, prefix) in [
        ("create-deployment.json", "/spec/template/spec"),
        ("create-statefulset.json", "/spec/template/spec"),
        (
            "create-cronjob.json",
            "/spec/jobTemplate/spec/template/spec",
        ),
    ] {
        let r = read_json(&apiserver_fixtures().join(file));
        assert!(
            patch_of(&answer(&default, "/mutate", &r).await).is_empty(),
            "{file}: pods only by default"
        );
        let ops = patch_of(&answer(&opted_in, "/mutate", &r).await);
        assert!(!ops.is_empty(), "{file}");
        for op in &ops {
            assert!(
                op["path"].as_str().unwrap().starts_with(prefix),
                "{file}: {op}"
            );
        }
        let patched = apply(&r["request"]["object"], &ops);
        let mut again = r.clone();
        again["request"]["object"] = patched;
        assert!(
            patch_of(&answer(&opted_in, "/mutate", &again).await).is_empty(),
            "{file}: idempotent"
        );
    }
}

#[tokio::test]
async fn without_mutation_controllers_are_judged_as_written() {
    let app = app_with(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  checks:\n    run-as-non-root: {}\n    resource-limits: {}\n",
    );
    let r = read_json(&apiserver_fixtures().join("create-deployment.json"));
    assert_eq!(
        denied_checks(&answer(&app, "/validate", &r).await),
        ["resource-limits", "run-as-non-root"]
    );
}

/// The resource-limits finding names everything a container lacks in one line, and its fix
/// is the `resources:` block with an example value for each missing entry, limits first.
#[tokio::test]
async fn resource_limits_denial_lists_each_missing_entry_with_one_fix() {
    let app = app_with(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  checks:\n    resource-limits: {limits: [cpu, memory], requests: [cpu, memory]}\n",
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"containers": [
            {"name": "app", "image": "nginx",
             "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "50m"}}},
            {"name": "sidecar", "image": "envoy",
             "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
    let response = answer(&app, "/validate", &create(&pod)).await;
    assert_eq!(
        response["status"]["message"],
        json!(
            "Pod \"web\" was denied by portcullis (2 violations):\n\
- container \"app\" has no limits.cpu, requests.memory: set resources.limits.cpu and resources.requests.memory [resource-limits]\n\
\x20 fix: at spec.containers[0] set:\n\
\x20   resources:\n\
\x20     limits:\n\
\x20       cpu: 500m\n\
\x20     requests:\n\
\x20       memory: 256Mi\n\
- container \"sidecar\" has no requests.cpu, requests.memory: set resources.requests.cpu and resources.requests.memory [resource-limits]\n\
\x20 fix: at spec.containers[1] set:\n\
\x20   resources:\n\
\x20     requests:\n\
\x20       cpu: 100m\n\
\x20       memory: 256Mi"
        ),
        "{response}"
    );
}

const MODES: &str = "apiVersion: portcullis.dev/v1alpha1
kind: Policy
metadata: {name: rollout}
spec:
  checks:
    run-as-non-root: {mode: warn}
    liveness-probe: {mode: audit}
    readiness-probe: {mode: off}
    resource-limits: {mode: audit}
";

#[tokio::test]
async fn warn_audit_and_off_modes_admit_and_record() {
    let app = app_with(MODES);
    let response = answer(&app, "/validate", &create(&violating_pod())).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("status").is_none());
    let warnings = response["warnings"]
        .as_array()
        .expect("warn mode returns warnings");
    assert_eq!(warnings.len(), 1);
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.contains("may run as root") && warning.ends_with("[run-as-non-root]"),
        "{warning}"
    );
    assert!(warning.len() <= 256);
    let audit = response["auditAnnotations"].as_object().unwrap();
    let keys: Vec<&str> = audit.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["liveness-probe", "resource-limits", "run-as-non-root"],
        "off records nothing"
    );
    assert!(
        audit["liveness-probe"]
            .as_str()
            .unwrap()
            .starts_with("audit: container \"bare\" has no livenessProbe")
    );
    assert!(
        audit["run-as-non-root"]
            .as_str()
            .unwrap()
            .starts_with("warn: ")
    );
}

#[tokio::test]
async fn warnings_are_cut_short_keeping_the_check_id() {
    let app = app_with(MODES);
    let mut pod = violating_pod();
    pod["spec"]["containers"][0]["name"] = json!("é".repeat(200));
    let response = answer(&app, "/validate", &create(&pod)).await;
    let warning = response["warnings"][0].as_str().unwrap();
    // Cut at a character boundary (é is two bytes) to about 120 bytes, keeping the check id.
    assert!(
        warning.len() <= 120 && warning.contains("…") && warning.ends_with(" [run-as-non-root]"),
        "{} bytes: {warning}",
        warning.len()
    );
}

#[tokio::test]
async fn names_are_escaped_in_messages() {
    let app = default_app();
    let mut pod = violating_pod();
    pod["spec"]["containers"][0]["name"] = json!("evil\"\n- forged line\u{1b}[31m");
    let response = answer(&app, "/validate", &create(&pod)).await;
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        !message.contains("\n- forged"),
        "a name must not inject message lines: {message}"
    );
    assert!(
        !message.contains('\u{1b}'),
        "control characters are escaped"
    );
}

#[tokio::test]
async fn peer_semantics_are_policy_settings() {
    // Kyverno's require-probes: any one probe satisfies it.
    let kyverno = app_with(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  checks:\n    liveness-probe:\n      satisfiedBy: [livenessProbe, readinessProbe, startupProbe]\n      exemptKinds: []\n",
    );
    let mut pod = violating_pod();
    pod["spec"]["containers"][0]["startupProbe"] = json!({"tcpSocket": {"port": 80}});
    assert_eq!(
        answer(&kyverno, "/validate", &create(&pod)).await["allowed"],
        true
    );
    let job = read_json(&apiserver_fixtures().join("create-job.json"));
    let response = answer(&kyverno, "/validate", &job).await;
    assert_eq!(
        denied_checks(&response),
        ["liveness-probe"],
        "exemptKinds: [] judges batch too"
    );
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("has none of livenessProbe, readinessProbe, startupProbe")
    );
}

#[test]
fn an_unchanged_spec_is_told_from_its_text_and_a_reordered_one_by_decoding() {
    use portcullis::request::Decoded;
    let old = violating_pod();
    let mut new = old.clone();
    new["metadata"]["labels"]["tier"] = json!("gold");
    let body = |new: &Value, old: &Value| wire(&review("UPDATE", "team-a", Some(new), Some(old)));
    // The same spec text: the old object is never decoded.
    let req = portcullis::review::decode(&body(&new, &old)).unwrap();
    assert_eq!(req.old_object, Decoded::SameSpec);
    // The same spec written otherwise (here with a space the apiserver would not send): decoded,
    // and still unchanged.
    let mut text = String::from_utf8(body(&new, &old)).unwrap();
    let at = text.rfind("\"spec\":{").unwrap();
    text.replace_range(at..at + 8, "\"spec\":{ ");
    let req = portcullis::review::decode(text.as_bytes()).unwrap();
    assert!(matches!(req.old_object, Decoded::Workload(_)));
    let verdict = portcullis::admission::validate(
        &PolicySet::embedded(),
        &req,
        &portcullis::rollout::Context::now(),
    );
    assert_eq!(
        verdict,
        portcullis::verdict::Verdict::Skipped(portcullis::verdict::Skip::SpecUnchanged)
    );
    // A changed spec is decoded and judged.
    let mut changed = old.clone();
    changed["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let req = portcullis::review::decode(&body(&changed, &old)).unwrap();
    assert!(matches!(req.old_object, Decoded::Workload(_)));
}

#[test]
fn validation_without_cel_rules_leaves_an_unchanged_updates_object_undecoded() {
    use portcullis::cel::ObjectReads;
    use portcullis::request::Decoded;
    use portcullis::review::{Reading, decode_with};
    use portcullis::verdict::{Skip, Verdict};
    let old = violating_pod();
    let mut new = old.clone();
    new["metadata"]["labels"]["tier"] = json!("gold");
    let update = |new: &Value| wire(&review("UPDATE", "team-a", Some(new), Some(&old)));
    let judge = |req: &portcullis::request::Request| {
        portcullis::admission::validate(
            &PolicySet::embedded(),
            req,
            &portcullis::rollout::Context::now(),
        )
    };
    // Only the spec is judged, and it is the old one's: neither object is decoded.
    let req = decode_with(&update(&new), Reading::Checks).unwrap();
    assert_eq!(
        (&req.object, &req.old_object),
        (&Decoded::SameSpec, &Decoded::SameSpec)
    );
    assert_eq!(judge(&req), Verdict::Skipped(Skip::SpecUnchanged));
    // Mutation and CEL rules read the new object whatever the old one was.
    for reading in [
        Reading::Full,
        Reading::Cel(ObjectReads::ALL),
        Reading::Cel(ObjectReads::default()),
    ] {
        let req = decode_with(&update(&new), reading).unwrap();
        assert!(matches!(req.object, Decoded::Workload(_)), "{reading:?}");
        assert_eq!(req.old_object, Decoded::SameSpec, "{reading:?}");
        assert_eq!(
            judge(&req),
            Verdict::Skipped(Skip::SpecUnchanged),
            "{reading:?}"
        );
    }
    // A changed spec is decoded and judged, and denied like a new pod.
    let mut changed = new.clone();
    changed["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let req = decode_with(&update(&changed), Reading::Checks).unwrap();
    assert!(matches!(req.object, Decoded::Workload(_)));
    assert!(matches!(judge(&req), Verdict::Judged(f) if !f.violations.is_empty()));
    for reading in [
        Reading::Cel(ObjectReads::ALL),
        Reading::Cel(ObjectReads::default()),
    ] {
        let req = decode_with(&update(&changed), reading).unwrap();
        assert!(
            matches!(req.old_object, Decoded::Workload(_)),
            "{reading:?}"
        );
        assert!(matches!(judge(&req), Verdict::Judged(f) if !f.violations.is_empty()));
    }
    // A CREATE is always decoded.
    let create = wire(&review("CREATE", "team-a", Some(&new), None));
    let req = decode_with(&create, Reading::Checks).unwrap();
    assert!(matches!(req.object, Decoded::Workload(_)));
}

/// A volume source newer than k8s-openapi reaches the checks by name, however the object was
/// read: from the envelope's parts (a Pod's spec, a controller's template), typed on the way
/// (the review as the apiserver orders it) or from its text (sorted, `operation` after
/// `object`), or whole for CEL.
#[test]
fn a_volume_source_this_build_does_not_know_is_named_by_every_reading() {
    use portcullis::cel::ObjectReads;
    use portcullis::review::{Reading, decode_with};
    let set = policy_set(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  checks:\n    pss-volume-types: {mode: enforce}\n",
    );
    let mut pod = violating_pod();
    pod["spec"]["volumes"] = json!([{"name": "data", "futureDisk": {"size": 1}}]);
    let mut template = pod.clone();
    template.as_object_mut().unwrap().remove("kind");
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {}, "template": {"metadata": template["metadata"], "spec": template["spec"]}}
    });
    for (object, form) in [&pod, &deployment]
        .into_iter()
        .flat_map(|o| [(o, "as sent"), (o, "sorted")])
    {
        let review = review("CREATE", "team-a", Some(object), None);
        let body = match form {
            "as sent" => wire(&review),
            _ => serde_json::to_vec(&review).unwrap(),
        };
        for reading in [
            Reading::Checks,
            Reading::Full,
            Reading::Cel(ObjectReads::ALL),
            Reading::Cel(ObjectReads::default()),
        ] {
            let req = decode_with(&body, reading).unwrap();
            let verdict =
                portcullis::admission::validate(&set, &req, &portcullis::rollout::Context::now());
            let texts: Vec<String> = verdict.violations().map(|v| v.to_string()).collect();
            let texts = texts.join("\n");
            assert!(
                texts.contains("futureDisk (a type this portcullis build does not know)"),
                "{} {form} {reading:?}: {texts}",
                object["kind"]
            );
        }
    }
}

/// With CEL rules loaded, the object is kept as JSON without what no loaded expression reads:
/// `status` and `metadata.managedFields`, most of a captured pod's JSON. Everything else is
/// as serde_json reads it, the typed object is the same, and metadata that is not a JSON
/// object is kept as sent.
#[test]
fn the_json_kept_for_cel_leaves_out_only_what_no_expression_reads() {
    use portcullis::cel::ObjectReads;
    use portcullis::request::Decoded;
    use portcullis::review::{Reading, decode_with};
    let body = std::fs::read(apiserver_fixtures().join("create-pod.json")).unwrap();
    let sent =
        read_json(&apiserver_fixtures().join("create-pod.json"))["request"]["object"].clone();
    assert!(sent["metadata"]["managedFields"].is_array() && sent.get("status").is_some());
    let object = |reads| {
        let req = decode_with(&body, Reading::Cel(reads)).unwrap();
        (req.json.unwrap().object.unwrap(), req.object)
    };
    let (whole, typed) = object(ObjectReads::ALL);
    assert_eq!(whole, sent);
    let mut without = sent.clone();
    without.as_object_mut().unwrap().remove("status");
    without["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    for (reads, expected) in [
        (ObjectReads::default(), without.clone()),
        (
            ObjectReads {
                status: true,
                managed_fields: false,
            },
            {
                let mut e = without.clone();
                e["status"] = sent["status"].clone();
                e
            },
        ),
        (
            ObjectReads {
                status: false,
                managed_fields: true,
            },
            {
                let mut e = sent.clone();
                e.as_object_mut().unwrap().remove("status");
                e
            },
        ),
    ] {
        let (json, typed_here) = object(reads);
        assert_eq!(json, expected, "{reads:?}");
        assert_eq!(typed_here, typed, "{reads:?}");
    }
    // Metadata that is no object is kept as sent, and the typed decode says why it is unreadable.
    let mut odd = read_json(&apiserver_fixtures().join("create-pod.json"));
    odd["request"]["object"]["metadata"] = json!("not an object");
    let body = serde_json::to_vec(&odd).unwrap();
    let mut odd_without = odd["request"]["object"].clone();
    odd_without.as_object_mut().unwrap().remove("status");
    for (reads, expected) in [
        (ObjectReads::ALL, &odd["request"]["object"]),
        (ObjectReads::default(), &odd_without),
    ] {
        let req = decode_with(&body, Reading::Cel(reads)).unwrap();
        assert_eq!(
            req.json.unwrap().object.as_ref(),
            Some(expected),
            "{reads:?}"
        );
        assert!(matches!(req.object, Decoded::Unreadable(_)), "{reads:?}");
    }
    // An object serde_json cannot build, nested beyond its limit or holding a number beyond
    // f64's range, is still a review: null to expressions, and read typed from its text,
    // which skips the field it does not read.
    let mut odd = read_json(&apiserver_fixtures().join("update-pod.json"));
    odd["request"]["object"]["x-odd"] = json!("ODD");
    let odd = serde_json::to_string(&odd).unwrap();
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for value in [nested.as_str(), "1e400"] {
        let body = odd.replace("\"ODD\"", value).into_bytes();
        for reads in [ObjectReads::ALL, ObjectReads::default()] {
            let req = decode_with(&body, Reading::Cel(reads)).unwrap();
            assert_eq!(req.json.unwrap().object, None, "{reads:?}");
            assert!(matches!(req.object, Decoded::Workload(_)), "{reads:?}");
            // The label-only UPDATE's spec is still found unchanged.
            assert_eq!(req.old_object, Decoded::SameSpec, "{reads:?}");
        }
    }
}
