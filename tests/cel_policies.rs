//! Policies written in CEL, as a team brings them: a ValidatingAdmissionPolicy with its
//! binding, and a Kyverno ValidatingPolicy. Broken ones are refused at load naming file, field
//! and expression; loaded ones judge through the real router and a real server on loopback.

mod common;

use common::*;
use portcullis::policy;
use serde_json::{Value, json};

/// A ValidatingAdmissionPolicy requiring a `team` label on pods, bound with `actions`.
fn require_team(actions: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: require-team}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {{apiGroups: [''], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}}
  validations:
  - expression: \"has(object.metadata.labels) && 'team' in object.metadata.labels\"
    message: every pod needs a team label
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: require-team}}
spec:
  policyName: require-team
  validationActions: [{actions}]
"
    )
}

/// A Kyverno ValidatingPolicy on pods: images from our registry only. Autogen applies it to
/// pod controllers through their templates.
const OUR_REGISTRY: &str = "apiVersion: policies.kyverno.io/v1alpha1
kind: ValidatingPolicy
metadata: {name: our-registry}
spec:
  validationActions: [Deny]
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}
  validations:
  - expression: \"object.spec.containers.all(c, c.image.startsWith('registry.example.com/'))\"
    messageExpression: \"'images must come from registry.example.com, not ' + object.spec.containers[0].image\"
";

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// The /validate answer of a router loaded with `files`.
async fn validate_with(files: &[(&str, &str)], review: &Value) -> Value {
    let dir = dir_with(files);
    answer(&app_of(dir.path()), "/validate", review).await
}

fn load_error(files: &[(&str, &str)]) -> String {
    let dir = dir_with(files);
    policy::load_dir(dir.path()).unwrap_err().to_string()
}

#[test]
fn broken_cel_policies_are_refused_naming_file_field_and_expression() {
    // (file, its text, what the error must say). Every case also names its file.
    let cases: [(&str, String, &str); 8] = [
        (
            "team.yaml",
            require_team("Deny").replace("&& 'team' in", "&& 'team' inn"),
            "team.yaml#1 (policy require-team): spec.validations[0].expression: syntax:",
        ),
        (
            "registry.yaml",
            OUR_REGISTRY.replace(
                "c.image.startsWith('registry.example.com/')",
                "c.image.hasPrefix('registry.example.com/')",
            ),
            "registry.yaml (policy our-registry): spec.validations[0].expression: calls hasPrefix(), which portcullis does not provide",
        ),
        (
            "authz.yaml",
            OUR_REGISTRY.replace(
                "object.spec.containers.all(c, c.image.startsWith('registry.example.com/'))",
                "authorizer.group('').resource('pods').check('create').allowed()",
            ),
            "reads the variable \"authorizer\"",
        ),
        (
            "orphan.yaml",
            require_team("Deny").replace("policyName: require-team", "policyName: requires-team"),
            "orphan.yaml#2: spec.policyName: no ValidatingAdmissionPolicy named \"requires-team\"",
        ),
        (
            "params.yaml",
            require_team("Deny").replace(
                "  failurePolicy: Fail\n",
                "  failurePolicy: Fail\n  paramKind: {kind: ConfigMap}\n",
            ),
            "spec.paramKind: needs both apiVersion and kind",
        ),
        (
            "action.yaml",
            OUR_REGISTRY.replace("[Deny]", "[Block]"),
            "spec.validationActions: \"Block\" is not one of Deny, Warn, Audit",
        ),
        // An empty file (or one caught mid-write) is an error, never an empty set.
        (
            "empty.yaml",
            "# nothing here yet\n".to_owned(),
            "empty.yaml: holds no policy document",
        ),
        (
            "typo.yaml",
            OUR_REGISTRY.replace("validationActions", "validationAction"),
            "typo.yaml: spec: unknown field `validationAction`",
        ),
    ];
    for (file, text, expected) in &cases {
        let err = load_error(&[(file, text)]);
        assert!(
            err.contains(expected) && err.contains(file),
            "{file}: {err}"
        );
    }
    // The syntax error also quotes the expression.
    let err = load_error(&[("team.yaml", &cases[0].1)]);
    assert!(err.contains("'team' inn object.metadata.labels"), "{err}");
}

/// A Kyverno ValidatingPolicy on pods whose `named` variable reads its own `prefix`, and
/// whose validation holds only if `named` was computed from this policy's `prefix`.
fn prefixed(name: &str, prefix: &str) -> String {
    pod_policy(
        name,
        &format!(
            "  variables:
  - {{name: prefix, expression: \"'{prefix}'\"}}
  - {{name: named, expression: \"variables.prefix + object.metadata.name\"}}
  - {{name: count, expression: \"size(object.spec.containers)\"}}
  validations:
  - expression: \"variables.named == '{prefix}' + object.metadata.name && variables.count == size(object.spec.containers)\"
    message: {name} saw another policy's variables
"
        ),
    )
}

/// A Kyverno ValidatingPolicy in Deny mode on pod CREATEs, with `rest` (its variables and
/// validations) after its match constraints.
fn pod_policy(name: &str, rest: &str) -> String {
    format!(
        "apiVersion: policies.kyverno.io/v1alpha1
kind: ValidatingPolicy
metadata: {{name: {name}}}
spec:
  validationActions: [Deny]
  matchConstraints:
    resourceRules:
    - {{apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [pods]}}
{rest}"
    )
}

#[tokio::test]
async fn policies_share_a_variable_only_when_it_reads_nothing_but_the_request() {
    // Both policies spell `named` and `count` alike. `count` reads only the request, so the
    // request evaluates it once for both; `named` reads each policy's own `prefix`, so it is
    // evaluated per policy: were it shared, one would see the other's prefix and deny.
    let both = [prefixed("first", "x"), prefixed("second", "y")].join("---\n");
    let review = read_json(&apiserver_fixtures().join("create-pod-2.json"));
    let response = validate_with(&[("both.yaml", &both)], &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    // Each policy does judge: a wrong expectation in one is a denial naming it.
    let wrong = [
        prefixed("first", "x"),
        prefixed("second", "y").replace("'y' +", "'x' +"),
    ];
    let response = validate_with(&[("both.yaml", &wrong.join("---\n"))], &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(
        denial(&response).contains("second saw another policy's variables"),
        "{response}"
    );
}

/// Kyverno ValidatingPolicy on pod UPDATEs reading `oldObject` and `request.userInfo`.
const OLD_AND_USER: &str = "apiVersion: policies.kyverno.io/v1alpha1
kind: ValidatingPolicy
metadata: {name: old-and-user}
spec:
  validationActions: [Deny]
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [UPDATE, DELETE], resources: [pods]}
  validations:
  - expression: \"oldObject.metadata.uid == object.metadata.uid\"
    message: the uid changed
  - expression: \"request.userInfo.username == 'admin' && 'system:masters' in request.userInfo.groups\"
    message: not the admin
";

#[tokio::test]
async fn the_old_object_and_the_user_are_bound_as_the_apiserver_sends_them() {
    // A captured UPDATE by `admin`: the old pod has the new one's uid.
    let review = read_json(&apiserver_fixtures().join("update-pod.json"));
    let files = [("old.yaml", OLD_AND_USER)];
    let response = validate_with(&files, &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    let mut changed = review.clone();
    changed["request"]["oldObject"]["metadata"]["uid"] = json!("another");
    let message = denial(&validate_with(&files, &changed).await);
    assert!(
        message.contains("- the uid changed [old-and-user]"),
        "{message}"
    );
    assert!(!message.contains("not the admin"), "{message}");
    let mut someone = review.clone();
    someone["request"]["userInfo"]["groups"] = json!(["system:authenticated"]);
    let message = denial(&validate_with(&files, &someone).await);
    assert!(
        message.contains("- not the admin [old-and-user]"),
        "{message}"
    );
    // On DELETE the object is null and the old one is the pod: `object.metadata` fails.
    let delete = read_json(&apiserver_fixtures().join("delete-pod.json"));
    let message = denial(&validate_with(&files, &delete).await);
    assert!(message.contains("spec.validations[0] failed"), "{message}");
}

/// A ValidatingAdmissionPolicy guarding pods labelled `run: bare` from deletion: its object
/// selector must read the old object, since a DELETE has no new one.
const GUARD_DELETE: &str = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: guard}
spec:
  matchConstraints:
    objectSelector: {matchLabels: {run: bare}}
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [DELETE], resources: [pods]}
  validations:
  - expression: 'false'
    message: guarded pods stay
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: guard}
spec: {policyName: guard, validationActions: [Deny]}
";

#[tokio::test]
async fn an_object_selector_reads_the_old_object_on_delete() {
    // The captured DELETE's old pod is labelled `run: bare`.
    let delete = read_json(&apiserver_fixtures().join("delete-pod.json"));
    let files = [("guard.yaml", GUARD_DELETE)];
    let message = denial(&validate_with(&files, &delete).await);
    assert!(message.contains("guarded pods stay"), "{message}");
    let mut other = delete.clone();
    other["request"]["oldObject"]["metadata"]["labels"] = json!({"run": "other"});
    let response = validate_with(&files, &other).await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test]
async fn a_policy_without_a_binding_is_not_in_force() {
    let unbound = require_team("Deny");
    let unbound = unbound.split("---").next().unwrap();
    let dir = dir_with(&[("team.yaml", unbound)]);
    let set = policy::load_dir(dir.path()).unwrap();
    assert!(set.policies.is_empty(), "{:?}", set.policies);
}

#[tokio::test]
async fn a_warn_binding_gives_kubectl_warnings_and_a_deny_binding_denies() {
    let review = read_json(&apiserver_fixtures().join("create-pod-2.json"));
    let response = validate_with(&[("team.yaml", &require_team("Warn"))], &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        response["warnings"],
        json!(["portcullis: every pod needs a team label [require-team]"])
    );
    let response = validate_with(&[("team.yaml", &require_team("Deny, Audit"))], &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("- every pod needs a team label [require-team]"),
        "{message}"
    );
    assert!(
        response["auditAnnotations"]["require-team"]
            .as_str()
            .unwrap()
            .starts_with("enforce: every pod needs a team label"),
        "{response}"
    );
    // A labelled pod passes; a Deployment is not a pod, and a VAP has no autogen.
    let mut labelled = review.clone();
    labelled["request"]["object"]["metadata"]["labels"] = json!({"team": "a"});
    let response = validate_with(&[("team.yaml", &require_team("Deny, Audit"))], &labelled).await;
    assert_eq!(response["allowed"], true, "{response}");
}

/// A Kyverno ValidatingPolicy on pods, denying unless `expression` holds.
fn pod_rule(name: &str, expression: &str) -> String {
    pod_policy(
        name,
        &format!("  validations:\n  - expression: \"{expression}\"\n"),
    )
}

/// The JSON kept for expressions leaves out a pod's status and managedFields only when no
/// loaded expression can read them: a rule that reads them sees them as the apiserver sent
/// them, beside rules that do not.
#[tokio::test]
async fn a_rule_that_reads_status_or_managed_fields_sees_them() {
    let review = read_json(&apiserver_fixtures().join("create-pod.json"));
    let managers = review["request"]["object"]["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .len();
    assert!(managers > 0);
    let spec_only = pod_rule("spec-only", "object.spec.containers.size() > 0");
    let reads = pod_rule(
        "reads-them",
        &format!(
            "object.metadata.managedFields.size() == {managers} && has(object.status) && has(object.metadata.labels)"
        ),
    );
    let response = validate_with(&[("a.yaml", &spec_only), ("b.yaml", &reads)], &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    // The rule is judged, and would deny without them.
    let without = pod_rule(
        "without-them",
        "!has(object.metadata.managedFields) || !has(object.status)",
    );
    let response = validate_with(&[("a.yaml", &spec_only), ("b.yaml", &without)], &review).await;
    assert_eq!(response["allowed"], false, "{response}");
}

#[tokio::test]
async fn audit_annotations_are_recorded_in_the_response() {
    let annotated = require_team("Warn").replace(
        "    message: every pod needs a team label\n",
        "    message: every pod needs a team label\n  auditAnnotations:\n  - key: image\n    valueExpression: \"object.spec.containers[0].image\"\n  - key: nothing\n    valueExpression: \"null\"\n",
    );
    let review = read_json(&apiserver_fixtures().join("create-pod-2.json"));
    let response = validate_with(&[("team.yaml", &annotated)], &review).await;
    // Keyed `<policy>.<key>`; a null value records nothing.
    assert_eq!(
        response["auditAnnotations"]["require-team.image"], "nginx",
        "{response}"
    );
    assert!(
        response["auditAnnotations"]
            .get("require-team.nothing")
            .is_none()
    );
}

#[tokio::test]
async fn runtime_errors_follow_the_failure_policy() {
    // `object.spec.hostNetwork` is absent on the captured pod: a runtime error.
    let erring = require_team("Deny").replace(
        "\"has(object.metadata.labels) && 'team' in object.metadata.labels\"",
        "\"object.spec.hostNetwork == false\"",
    );
    let review = read_json(&apiserver_fixtures().join("create-pod-2.json"));
    let response = validate_with(&[("team.yaml", &erring)], &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.validations[0] failed:")
            && message.contains("hostNetwork")
            && message.contains("(expression: object.spec.hostNetwork == false)"),
        "{message}"
    );
    let ignoring = erring.replace("failurePolicy: Fail", "failurePolicy: Ignore");
    let response = validate_with(&[("team.yaml", &ignoring)], &review).await;
    assert_eq!(response["allowed"], true, "{response}");
}

/// `serve` with `dir` as its policy directory, reloading every 100 ms.
fn serve(dir: &std::path::Path, policies: &std::path::Path) -> Portcullis {
    Portcullis::spawn(
        portcullis_serve(dir)
            .args(["--policies", policies.to_str().unwrap()])
            .args(["--policy-reload-interval", "100ms"]),
    )
}

fn review_body(review: &Value) -> Vec<u8> {
    serde_json::to_vec(review).unwrap()
}

fn response_of(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str::<Value>(body).unwrap()["response"].clone()
}

#[tokio::test]
async fn a_real_server_denies_a_deployment_through_autogen_and_warns_on_a_warn_binding() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("registry.yaml"), OUR_REGISTRY).unwrap();
    std::fs::write(policies.join("team.yaml"), require_team("Warn")).unwrap();
    let mut server = serve(dir.path(), &policies);
    let addr = server.address("listen").await;
    let ca = std::fs::read_to_string(dir.path().join("certs/ca.crt")).unwrap();

    // The Deployment's template runs nginx: denied by the pod rule, through autogen.
    let deployment = read_json(&apiserver_fixtures().join("create-deployment.json"));
    let response = response_of(&post_review(addr, &ca, &review_body(&deployment)).await);
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("images must come from registry.example.com, not nginx [our-registry]"),
        "{message}"
    );

    // A pod from our registry passes the Deny policy and gets the Warn policy's warning.
    let mut pod = read_json(&apiserver_fixtures().join("create-pod-2.json"));
    pod["request"]["object"]["spec"]["containers"][0]["image"] =
        json!("registry.example.com/app:1");
    let response = response_of(&post_review(addr, &ca, &review_body(&pod)).await);
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        response["warnings"],
        json!(["portcullis: every pod needs a team label [require-team]"])
    );
    server.child.kill().await.unwrap();
}

#[tokio::test]
async fn a_reload_with_a_broken_expression_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("registry.yaml"), OUR_REGISTRY).unwrap();
    let mut server = serve(dir.path(), &policies);
    let addr = server.address("listen").await;
    let ca = std::fs::read_to_string(dir.path().join("certs/ca.crt")).unwrap();
    let pod = read_json(&apiserver_fixtures().join("create-pod-2.json"));
    let denied = |answer: &str| response_of(answer)["allowed"] == false;
    assert!(denied(&post_review(addr, &ca, &review_body(&pod)).await));

    // A broken expression: refused, naming file, field and expression; the rule stays.
    let broken = OUR_REGISTRY.replace("c.image.startsWith(", "c.image.startsWith((");
    replace_file(&policies.join("registry.yaml"), &broken);
    let rejected = server
        .wait_for("policy reload rejected; the last good policies stay in force")
        .await;
    let error = rejected["fields"]["error"].as_str().unwrap();
    assert!(
        error.contains(
            "registry.yaml (policy our-registry): spec.validations[0].expression: syntax:"
        ) && error.contains("c.image.startsWith(("),
        "{error}"
    );
    assert!(denied(&post_review(addr, &ca, &review_body(&pod)).await));

    // A good change then takes over: the same rule in Audit admits.
    replace_file(
        &policies.join("registry.yaml"),
        &OUR_REGISTRY.replace("[Deny]", "[Audit]"),
    );
    server.wait_for("policies reloaded").await;
    let response = response_of(&post_review(addr, &ca, &review_body(&pod)).await);
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response["auditAnnotations"]["our-registry"]
            .as_str()
            .unwrap()
            .starts_with("audit: images must come from registry.example.com"),
        "{response}"
    );
    server.child.kill().await.unwrap();
}

/// A portcullis policy adopting the VAP: per-namespace modes and exemptions apply to it.
const ADOPTING: &str = "apiVersion: portcullis.dev/v1alpha1
kind: Policy
metadata: {name: rollout}
spec:
  exemptNamespaces: []
  adopt: [require-team]
  namespaceModes:
  - {names: [team-a], checks: {require-team: warn}}
  exemptions:
  - {name: legacy-web, checks: [require-team], names: [web], reason: migrating, owner: team-b, expires: 2099-01-01}
";

#[tokio::test]
async fn an_adopted_policy_follows_the_adopters_rollout() {
    let dir = dir_with(&[
        ("team.yaml", &require_team("Deny")),
        ("rollout.yaml", ADOPTING),
    ]);
    let set = policy::load_dir(dir.path()).unwrap();
    // Adopted, so judged once, under the adopter's name.
    let names: Vec<&str> = set.policies.iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["rollout"]);
    let app = app(set);
    let review = read_json(&apiserver_fixtures().join("create-pod-2.json"));
    // team-a: warn.
    let response = answer(&app, "/validate", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        response["warnings"],
        json!(["portcullis: every pod needs a team label [require-team]"])
    );
    // team-b: the binding's Deny.
    let mut team_b = review.clone();
    team_b["request"]["namespace"] = json!("team-b");
    let response = answer(&app, "/validate", &team_b).await;
    assert_eq!(response["allowed"], false, "{response}");
    // An exempt workload in team-b: admitted, recorded as exempt.
    let mut web = team_b.clone();
    web["request"]["object"]["metadata"]["name"] = json!("web");
    let response = answer(&app, "/validate", &web).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response["auditAnnotations"]["require-team"]
            .as_str()
            .unwrap()
            .starts_with("exempt (\"legacy-web\""),
        "{response}"
    );

    // Adopting something that is not loaded is refused.
    let err = load_error(&[("rollout.yaml", ADOPTING)]);
    assert!(
        err.contains("spec.adopt[0]: no ValidatingAdmissionPolicy (with a binding) or ValidatingPolicy named \"require-team\""),
        "{err}"
    );
}

/// CEL rules written in a portcullis policy, beside its checks.
const OWN_RULES: &str = "apiVersion: portcullis.dev/v1alpha1
kind: Policy
metadata: {name: images}
spec:
  rules:
  - id: image-tag-required
    mode: enforce
    matchConstraints:
      resourceRules:
      - {apiGroups: [''], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}
    validations:
    - expression: \"object.spec.containers.all(c, c.image.contains(':'))\"
      message: an image tag is required
";

#[tokio::test]
async fn rules_written_in_a_portcullis_policy_judge_pods_and_their_controllers() {
    let deployment = read_json(&apiserver_fixtures().join("create-deployment.json"));
    let response = validate_with(&[("images.yaml", OWN_RULES)], &deployment).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("- an image tag is required [image-tag-required]"),
        "{response}"
    );
    // `autogen: []` judges pods alone, as a ValidatingAdmissionPolicy does.
    let pods_only = OWN_RULES.replace(
        "    mode: enforce\n",
        "    mode: enforce\n    autogen: []\n",
    );
    let response = validate_with(&[("images.yaml", &pods_only)], &deployment).await;
    assert_eq!(response["allowed"], true, "{response}");

    // A rule id that is a check's is refused.
    let clash = OWN_RULES.replace("id: image-tag-required", "id: run-as-non-root");
    let err = load_error(&[("images.yaml", &clash)]);
    assert!(
        err.contains("spec.rules[0].id: \"run-as-non-root\" is already the id"),
        "{err}"
    );
}

fn app_of(dir: &std::path::Path) -> axum::Router {
    app(policy::load_dir(dir).unwrap())
}

/// The Kubernetes documentation's parameterised policy: a Deployment's replicas capped by a
/// `ReplicaLimit` param, bound with `param_ref` (YAML flow mapping).
fn replica_limit(failure_policy: &str, param_ref: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: replicalimit-policy.example.com}}
spec:
  failurePolicy: {failure_policy}
  paramKind: {{apiVersion: rules.example.com/v1, kind: ReplicaLimit}}
  matchConstraints:
    resourceRules:
    - {{apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}}
  validations:
  - expression: object.spec.replicas <= params.maxReplicas
    messageExpression: \"'at most ' + string(params.maxReplicas) + ' replicas (' + params.metadata.name + ')'\"
    reason: Invalid
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: replicalimit-binding}}
spec:
  policyName: replicalimit-policy.example.com
  validationActions: [Deny]
  paramRef: {param_ref}
"
    )
}

/// A `ReplicaLimit` param.
fn limit(name: &str, namespace: &str, max: u32, tier: &str) -> String {
    format!(
        "apiVersion: rules.example.com/v1
kind: ReplicaLimit
metadata: {{name: {name}, namespace: {namespace}, labels: {{tier: {tier}}}}}
maxReplicas: {max}
"
    )
}

/// The status message of a denial, or "" when allowed.
fn denial(response: &Value) -> String {
    assert!(response["allowed"].is_boolean(), "{response}");
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn params_from_the_policy_directory_are_found_as_the_apiserver_finds_them() {
    // The captured Deployment has 1 replica, in team-a.
    let review = read_json(&apiserver_fixtures().join("create-deployment.json"));
    let judge = |policy: String, params: Vec<String>| {
        let review = review.clone();
        async move {
            let mut files = vec![("policy.yaml", policy)];
            files.extend(params.into_iter().map(|p| ("params.yaml", p)));
            let joined = files
                .iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join("---\n");
            denial(&validate_with(&[("all.yaml", &joined)], &review).await)
        }
    };
    let by_name = "{name: small, namespace: team-a, parameterNotFoundAction: Deny}";
    // By name, in the named namespace: the param's own values decide.
    let message = judge(
        replica_limit("Fail", by_name),
        vec![limit("small", "team-a", 0, "a")],
    )
    .await;
    assert!(message.contains("at most 0 replicas (small)"), "{message}");
    assert_eq!(
        judge(
            replica_limit("Fail", by_name),
            vec![limit("small", "team-a", 3, "a")]
        )
        .await,
        ""
    );
    // No namespace in the paramRef: a namespaced kind is looked up in the request's.
    let here = "{name: small, parameterNotFoundAction: Deny}";
    let message = judge(
        replica_limit("Fail", here),
        vec![limit("small", "team-a", 0, "a")],
    )
    .await;
    assert!(message.contains("at most 0"), "{message}");
    // Elsewhere it is not found, and `Deny` makes that a denial, by the failurePolicy.
    let message = judge(
        replica_limit("Fail", here),
        vec![limit("small", "team-b", 0, "a")],
    )
    .await;
    assert!(
        message.contains("failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{message}"
    );
    assert_eq!(
        judge(
            replica_limit("Ignore", here),
            vec![limit("small", "team-b", 0, "a")]
        )
        .await,
        ""
    );
    // `Allow` admits when nothing is found.
    let allow = "{name: small, parameterNotFoundAction: Allow}";
    assert_eq!(
        judge(
            replica_limit("Fail", allow),
            vec![limit("small", "team-b", 0, "a")]
        )
        .await,
        ""
    );
    // A selector judges with every param it selects: one that denies is enough.
    let selected = "{selector: {matchLabels: {tier: a}}, parameterNotFoundAction: Deny}";
    let message = judge(
        replica_limit("Fail", selected),
        vec![
            limit("big", "team-a", 5, "a"),
            limit("small", "team-a", 0, "a"),
            limit("tiny", "team-a", 0, "b"),
        ],
    )
    .await;
    assert!(
        message.contains("(small)") && !message.contains("(tiny)") && !message.contains("(big)"),
        "{message}"
    );
    // A namespace on a cluster-scoped kind is a misconfigured binding.
    let cluster_scoped = |name: &str, max: u32| {
        format!(
            "apiVersion: rules.example.com/v1\nkind: ReplicaLimit\nmetadata: {{name: {name}}}\nmaxReplicas: {max}\n"
        )
    };
    let message = judge(
        replica_limit("Fail", by_name),
        vec![cluster_scoped("small", 3)],
    )
    .await;
    assert!(
        message
            .contains("paramRef.namespace must not be provided for a cluster-scoped `paramKind`"),
        "{message}"
    );
    let global = "{name: small, parameterNotFoundAction: Deny}";
    let message = judge(
        replica_limit("Fail", global),
        vec![cluster_scoped("small", 0)],
    )
    .await;
    assert!(message.contains("at most 0 replicas (small)"), "{message}");
}

#[test]
fn params_that_cannot_be_found_offline_are_refused_at_load() {
    let dir = dir_with(&[(
        "policy.yaml",
        &replica_limit("Fail", "{name: small, parameterNotFoundAction: Deny}"),
    )]);
    let err = portcullis::offline::load_policies(Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("policy.yaml#1")
            && err.contains("paramKind (replicalimit-policy.example.com)")
            && err
                .contains("no rules.example.com/v1 ReplicaLimit object is in the policy directory"),
        "{err}"
    );
    // A paramRef naming both a name and a selector is refused wherever it is loaded.
    let both = replica_limit(
        "Fail",
        "{name: small, selector: {}, parameterNotFoundAction: Deny}",
    );
    let err = load_error(&[("both.yaml", &both)]);
    assert!(
        err.contains("binding spec.paramRef: set exactly one of name and selector"),
        "{err}"
    );
    // A document that is neither a policy nor a loaded policy's param is a mistake.
    let stray = format!(
        "{}---\n{}",
        require_team("Deny"),
        limit("small", "team-a", 1, "a")
    );
    let err = load_error(&[("stray.yaml", &stray)]);
    assert!(
        err.contains("stray.yaml#3: kind: rules.example.com/v1 ReplicaLimit is not a policy"),
        "{err}"
    );
}

/// A loopback API server that serves Namespaces and `rules.example.com/v1` ReplicaLimits (one,
/// `small` in team-a, capping at 0), lists them, and holds every watch open.
async fn param_api() -> std::net::SocketAddr {
    use axum::body::Body;
    use axum::extract::Request;
    async fn api(req: Request) -> axum::response::Response {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("");
        let json = |body: Value| {
            axum::response::Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        if query.contains("watch=true") || query.contains("watch=1") {
            return quiet_watch();
        }
        match path.as_str() {
            "/apis/rules.example.com/v1" => json(json!({
                "kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "rules.example.com/v1",
                "resources": [{"name": "replicalimits", "singularName": "replicalimit",
                    "namespaced": true, "kind": "ReplicaLimit",
                    "verbs": ["get", "list", "watch"]}]
            })),
            "/apis/rules.example.com/v1/replicalimits" => json(json!({
                "kind": "ReplicaLimitList", "apiVersion": "rules.example.com/v1",
                "metadata": {"resourceVersion": "9"},
                "items": [{"apiVersion": "rules.example.com/v1", "kind": "ReplicaLimit",
                    "metadata": {"name": "small", "namespace": "team-a", "resourceVersion": "8"},
                    "maxReplicas": 0}]
            })),
            "/api/v1/namespaces" => json(json!({
                "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": "7"}, "items": []
            })),
            _ => axum::response::Response::builder()
                .status(404)
                .body(Body::from(format!("no {path}")))
                .unwrap(),
        }
    }
    api_server(axum::Router::new().fallback(api)).await
}

#[tokio::test]
async fn a_served_policy_reads_its_params_from_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let policy = replica_limit("Fail", "{name: small, parameterNotFoundAction: Deny}");
    std::fs::write(policies.join("limit.yaml"), &policy).unwrap();

    // Without a cluster, params the directory lacks stop start-up, naming the policy.
    let out = portcullis_serve(dir.path())
        .args(["--policies", policies.to_str().unwrap()])
        .args(["--watch-namespaces", "never"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("limit.yaml#1")
            && stderr
                .contains("no rules.example.com/v1 ReplicaLimit object is in the policy directory"),
        "{stderr}"
    );

    // With one (`auto` connects because a policy needs params), the cluster's param decides.
    let api = param_api().await;
    let mut server = Portcullis::spawn(
        portcullis_serve(dir.path())
            .args(["--policies", policies.to_str().unwrap()])
            .env("KUBECONFIG", kubeconfig(dir.path(), api)),
    );
    let [listen, _, read] = server
        .wait_for_all(["listen", "metrics_listen", "params read from the cluster"])
        .await;
    assert_eq!(read["fields"]["count"], 1, "{read}");
    let listen = listen["fields"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ca = std::fs::read_to_string(dir.path().join("certs/ca.crt")).unwrap();
    let review = read_json(&apiserver_fixtures().join("create-deployment.json"));
    let response = response_of(&post_review(listen, &ca, &review_body(&review)).await);
    assert!(
        denial(&response).contains("at most 0 replicas (small)"),
        "{response}"
    );
    server.child.kill().await.unwrap();
}
