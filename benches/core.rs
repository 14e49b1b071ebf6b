//! The pure core, timed and allocation-counted per review: decode + judge + encode on reviews
//! captured from a real kube-apiserver, the mutating path, and the Pod Security Standards
//! restricted profile on a typical pod (PSA in-process: about 4.8 µs). Run: `cargo bench`.

use std::path::{Path, PathBuf};

use divan::{Bencher, black_box};
use portcullis::policy::{self, PolicySet};
use portcullis::rollout::Context;
use portcullis::{admission, review};

// The server's allocator, so that per-review times are the server's: serde_json's many small
// allocations cost far more under the system allocator (BENCHMARKS.md, session 9).
#[global_allocator]
static ALLOC: divan::AllocProfiler<mimalloc::MiMalloc> =
    divan::AllocProfiler::new(mimalloc::MiMalloc);

fn main() {
    divan::main();
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A captured review as stored: the recording webhook re-indented each body.
fn stored(name: &str) -> Vec<u8> {
    let path = repo().join("tests/data/apiserver").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A captured review as kube-apiserver sends it: compact JSON on one line ending in a newline
/// (checked against v1.36.3, BENCHMARKS.md session 22). The stored bodies hold no character
/// Go's encoder escapes differently, so dropping the indentation gives the bytes it sent.
fn captured(name: &str) -> Vec<u8> {
    let body = stored(name);
    let mut out = Vec::with_capacity(body.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in &body {
        if in_string {
            out.push(b);
            (in_string, escaped) = (escaped || b != b'"', !escaped && b == b'\\');
        } else if !b.is_ascii_whitespace() {
            out.push(b);
            in_string = b == b'"';
        }
    }
    out.push(b'\n');
    let value = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
    assert_eq!(
        value(&out),
        value(&body),
        "{name}: compacting changed the review"
    );
    out
}

/// A pod with `n` containers, each compliant with the default policy, framed as a review.
fn pod_with_containers(n: usize) -> Vec<u8> {
    let container = |i: usize| {
        serde_json::json!({
            "name": format!("c{i}"), "image": "registry.example/app:1.0",
            "ports": [{"containerPort": 8080 + i}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
        })
    };
    let mut review: serde_json::Value =
        serde_json::from_slice(&captured("create-pod.json")).unwrap();
    review["request"]["object"]["spec"]["containers"] = (0..n).map(container).collect();
    serde_json::to_vec(&review).unwrap()
}

fn default_policy() -> PolicySet {
    PolicySet::embedded()
}

fn profile(name: &str) -> PolicySet {
    policy::load_dir(&repo().join("policies/profiles").join(name)).unwrap()
}

fn validate_review(bencher: Bencher, set: &PolicySet, body: &[u8]) {
    bencher
        .counter(divan::counter::BytesCount::new(body.len()))
        .bench(|| {
            // Read as /validate reads it without CEL rules.
            let req = review::decode_with(black_box(body), review::Reading::Checks).unwrap();
            let verdict = admission::validate(set, &req, &Context::now());
            review::encode_validation(&req, &verdict)
        });
}

/// decode + validate + encode on captured reviews under the default policy.
#[divan::bench(args = ["create-pod.json", "create-pod-by-replicaset-controller.json", "create-deployment.json", "update-pod.json"])]
fn validate(bencher: Bencher, file: &str) {
    validate_review(bencher, &default_policy(), &captured(file));
}

/// decode + validate + encode on the reviews as stored, indented, for comparison with the
/// figures of sessions before 22.
#[divan::bench(args = ["create-pod.json", "update-pod.json"])]
fn validate_as_stored(bencher: Bencher, file: &str) {
    validate_review(bencher, &default_policy(), &stored(file));
}

/// The wire decoder alone (envelope and object), the part the no-op server shares.
#[divan::bench(args = ["create-pod.json", "create-pod-by-replicaset-controller.json", "create-deployment.json", "update-pod.json"])]
fn decode(bencher: Bencher, file: &str) {
    let body = captured(file);
    bencher.bench(|| review::decode(black_box(&body)).unwrap());
}

/// decode + mutate (patch computation) + encode.
#[divan::bench(args = ["create-pod.json", "create-pod-2.json", "create-pod-by-replicaset-controller.json"])]
fn mutate(bencher: Bencher, file: &str) {
    let set = default_policy();
    let body = captured(file);
    bencher.bench(|| {
        let req = review::decode(black_box(&body)).unwrap();
        let ops = admission::mutate(&set, &req);
        review::encode_mutation(&req, &ops)
    });
}

/// Growth with the number of containers: cost should grow linearly.
#[divan::bench(args = [1, 5, 20, 100])]
fn validate_containers(bencher: Bencher, n: usize) {
    validate_review(bencher, &default_policy(), &pod_with_containers(n));
}

#[divan::bench(args = [1, 5, 20, 100])]
fn mutate_containers(bencher: Bencher, n: usize) {
    let set = default_policy();
    let body = pod_with_containers(n);
    bencher.bench(|| {
        let req = review::decode(black_box(&body)).unwrap();
        let ops = admission::mutate(&set, &req);
        review::encode_mutation(&req, &ops)
    });
}

/// Evaluation alone (the review already decoded), as PSA's in-process figure is measured.
#[divan::bench(args = ["pss-baseline", "pss-restricted"])]
fn evaluate_profile(bencher: Bencher, name: &str) {
    let set = profile(name);
    let body = restricted_pod_review();
    let req = review::decode(&body).unwrap();
    bencher.bench(|| admission::validate(&set, black_box(&req), &Context::now()));
}

/// The PSA restricted `base` fixture's pod (one container, one init container), as a review.
fn restricted_pod_review() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/conformance/pss/restricted/pass/base.yaml");
    let pod: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut review: serde_json::Value =
        serde_json::from_slice(&captured("create-pod.json")).unwrap();
    review["request"]["object"] = pod;
    serde_json::to_vec(&review).unwrap()
}

/// A CEL policy set: one Kyverno ValidatingPolicy of the conformance suite, or all 12 of its
/// pod-security policies (the load bench's CEL set).
fn cel_set(paths: &[&str]) -> PolicySet {
    let dir = tempfile::tempdir().unwrap();
    for (i, path) in paths.iter().enumerate() {
        let from = repo()
            .join("tests/data/conformance/kyverno-vpol")
            .join(path);
        std::fs::copy(&from, dir.path().join(format!("{i}.yaml"))).unwrap();
    }
    policy::load_dir(dir.path()).unwrap()
}

/// The 12 pod-security ValidatingPolicies of the Kyverno CEL suite.
pub fn pod_security_vpol() -> Vec<String> {
    let mut out = Vec::new();
    for level in ["baseline", "restricted"] {
        let dir = repo()
            .join("tests/data/conformance/kyverno-vpol/pod-security-vpol")
            .join(level);
        for policy in std::fs::read_dir(&dir).unwrap() {
            let policy = policy.unwrap().path();
            let name = policy.file_name().unwrap().to_str().unwrap().to_owned();
            out.push(format!("pod-security-vpol/{level}/{name}/{name}.yaml"));
        }
    }
    out.sort();
    out
}

/// One typical CEL rule (disallow-latest-tag) on a kubectl pod: evaluation alone, the review
/// decoded with its object kept as JSON, as the server decodes it when CEL rules are loaded.
#[divan::bench]
fn evaluate_cel_disallow_latest_tag(bencher: Bencher) {
    let set = cel_set(&["best-practices-vpol/disallow-latest-tag/disallow-latest-tag.yaml"]);
    let reading = review::Reading::Cel(set.object_reads());
    let req = review::decode_with(&captured("create-pod.json"), reading).unwrap();
    bencher.bench(|| admission::validate(&set, black_box(&req), &Context::now()));
}

/// decode (keeping JSON) + the 12 pod-security ValidatingPolicies + encode, per review.
#[divan::bench(args = ["create-pod.json", "create-pod-by-replicaset-controller.json", "create-deployment.json"])]
fn validate_cel_pod_security(bencher: Bencher, file: &str) {
    let paths = pod_security_vpol();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let set = cel_set(&paths);
    assert_eq!(set.policies.len(), 12);
    let body = captured(file);
    let reading = review::Reading::Cel(set.object_reads());
    bencher.bench(|| {
        let req = review::decode_with(black_box(&body), reading).unwrap();
        let verdict = admission::validate(&set, &req, &Context::now());
        review::encode_validation(&req, &verdict)
    });
}
