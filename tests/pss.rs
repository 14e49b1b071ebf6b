//! The Pod Security Standards fixtures kube-apiserver's own Pod Security Admission is tested
//! with, against the shipped profiles: every `pass` fixture admitted, every `fail` fixture
//! denied, and denied by the control its file name names. 100%: a mismatch is a bug.

mod common;

use common::*;
use portcullis::policy;

/// PSA fixture file prefix → the portcullis check that must deny it.
const CONTROLS: &[(&str, &str)] = &[
    ("allowprivilegeescalation", "pss-privilege-escalation"),
    ("apparmorprofile", "pss-apparmor"),
    ("capabilities_baseline", "pss-capabilities-baseline"),
    ("capabilities_restricted", "pss-capabilities-restricted"),
    ("hostnamespaces", "pss-host-namespaces"),
    ("hostpathvolumes", "pss-host-path-volumes"),
    ("hostports", "pss-host-ports"),
    ("hostprobesandhostlifecycle", "pss-host-probes"),
    ("privileged", "pss-privileged"),
    ("procmount_restricted", "pss-proc-mount"),
    ("procmount", "pss-proc-mount"),
    ("restrictedvolumes", "pss-volume-types"),
    ("runasnonroot", "pss-run-as-non-root"),
    ("runasuser", "pss-run-as-user"),
    ("seccompprofile_baseline", "pss-seccomp"),
    ("seccompprofile_restricted", "pss-seccomp"),
    ("selinuxoptions", "pss-selinux"),
    ("sysctls", "pss-sysctls"),
    ("windowshostprocess", "pss-windows-host-process"),
];

async fn run_level(level: &str) -> (usize, Vec<String>) {
    let profile = policy::load_dir(&repo().join(format!("policies/profiles/pss-{level}"))).unwrap();
    let app = app(profile);
    let mut failures = Vec::new();
    let mut count = 0;
    for outcome in ["pass", "fail"] {
        let dir = data().join(format!("conformance/pss/{level}/{outcome}"));
        for file in sorted_files(&dir) {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let [pod] = yaml_docs(&file).try_into().expect("one pod per fixture");
            let response = answer(&app, "/validate", &create(&pod)).await;
            count += 1;
            let denied = denied_checks(&response);
            if outcome == "pass" && !denied.is_empty() {
                failures.push(format!(
                    "{level}/pass/{name}: denied by {denied:?}: {}",
                    response["status"]["message"]
                ));
            }
            if outcome == "fail" {
                let (_, control) = CONTROLS
                    .iter()
                    .find(|(prefix, _)| name.starts_with(prefix))
                    .unwrap_or_else(|| panic!("{name}: no control mapped"));
                if !denied.iter().any(|d| d == control) {
                    failures.push(format!(
                        "{level}/fail/{name}: expected {control}, denied by {denied:?}"
                    ));
                }
            }
        }
    }
    (count, failures)
}

#[tokio::test]
async fn baseline_profile_passes_psa_fixtures() {
    let (count, failures) = run_level("baseline").await;
    assert_eq!(count, 49, "the PSA baseline fixture set changed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn restricted_profile_passes_psa_fixtures() {
    let (count, failures) = run_level("restricted").await;
    assert_eq!(count, 99, "the PSA restricted fixture set changed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn restricted_app() -> axum::Router {
    app(policy::load_dir(&repo().join("policies/profiles/pss-restricted")).unwrap())
}

/// A compliant restricted pod, to which each test adds one thing.
fn compliant_pod() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "app",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        }
    })
}

#[tokio::test]
async fn a_volume_type_newer_than_this_build_is_denied() {
    let app = restricted_app();
    let mut pod = compliant_pod();
    pod["spec"]["volumes"] =
        serde_json::json!([{"name": "future", "quantumDisk": {"size": "1Qi"}}]);
    let response = answer(&app, "/validate", &create(&pod)).await;
    assert_eq!(denied_checks(&response), ["pss-volume-types"]);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("quantumDisk"),
        "{response}"
    );
    // Offline (`check`, `audit`, `replay`) decodes from a parsed value: the same finding.
    let profile = policy::load_dir(&repo().join("policies/profiles/pss-restricted")).unwrap();
    let ctx = portcullis::rollout::Context::now();
    let judged = portcullis::offline::judge(&profile, &ctx, &pod, "team-a").unwrap();
    let offline: Vec<String> = judged.verdict.denials().map(|v| v.to_string()).collect();
    assert!(
        offline.len() == 1 && offline[0].contains("quantumDisk"),
        "{offline:?}"
    );

    // With no source at all the apiserver defaults it to emptyDir before admission.
    pod["spec"]["volumes"] = serde_json::json!([{"name": "scratch"}]);
    assert_eq!(
        answer(&app, "/validate", &create(&pod)).await["allowed"],
        true
    );
}

#[tokio::test]
async fn controllers_are_judged_by_their_template_including_its_annotations() {
    let app = restricted_app();
    let pod = compliant_pod();
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"},
                "annotations": {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}},
            "spec": pod["spec"].clone()}}
    });
    let response = answer(&app, "/validate", &create(&deployment)).await;
    assert_eq!(denied_checks(&response), ["pss-apparmor"]);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("container.apparmor.security.beta.kubernetes.io/app"),
        "{message}"
    );
}

/// A Pod's own annotations are read from the review's text when a check asks for them: here
/// beside the escaped manifest `kubectl apply` records, with the key itself escaped on the wire.
/// Escaped as `\/`, the text is kept and typed when the AppArmor check asks; escaped as
/// `\u002e`, it is typed at once (a `\u` may be half a surrogate pair, which typing refuses).
#[tokio::test]
async fn a_pods_own_annotations_are_read_beside_kubectl_s_last_applied_manifest() {
    let app = restricted_app();
    let mut pod = compliant_pod();
    let manifest = serde_json::to_string(&pod).unwrap();
    pod["metadata"]["annotations"] = serde_json::json!({
        "kubectl.kubernetes.io/last-applied-configuration": format!("{manifest}\n"),
        "container.apparmor.security.beta.kubernetes.io/app": "unconfined",
    });
    let sent = String::from_utf8(wire(&create(&pod))).unwrap();
    for (plain, escaped) in [
        ("kubernetes.io/app", "kubernetes.io\\/app"),
        ("container.apparmor", "container\\u002eapparmor"),
    ] {
        let body = sent.replace(plain, escaped);
        assert!(body.contains(escaped) && body.contains("\\\"containers\\\""));
        let (status, answered) = post(&app, "/validate", body.into_bytes()).await;
        assert_eq!(status, axum::http::StatusCode::OK, "{escaped}: {answered}");
        let response = &answered["response"];
        assert_eq!(denied_checks(response), ["pss-apparmor"], "{escaped}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("sets AppArmor annotation container.apparmor.security.beta.kubernetes.io/app: \"unconfined\""),
            "{escaped}: {message}"
        );
    }
}

#[tokio::test]
async fn messages_name_the_control_the_subject_and_the_compliant_value() {
    let app = restricted_app();
    let mut pod = compliant_pod();
    pod["spec"]["hostNetwork"] = serde_json::json!(true);
    pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] =
        serde_json::json!(["SYS_ADMIN"]);
    let response = answer(&app, "/validate", &create(&pod)).await;
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("pod shares a host namespace (hostNetwork: true): remove hostNetwork or set it to false [pss-host-namespaces]"), "{message}");
    assert!(message.contains("container \"app\" adds capabilities SYS_ADMIN: add only NET_BIND_SERVICE [pss-capabilities-restricted]"), "{message}");
}
