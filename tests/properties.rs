//! Properties over generated pods, through the pure core and the wire module: every patch
//! applies (RFC 6902, json-patch crate) to the object it was made for and makes it what the
//! in-memory defaults make it; applying mutation again changes nothing; no value the user set
//! is altered or removed; after mutation the checks that defaults can satisfy are satisfied; a
//! review reads the same whatever the order of its fields; and nothing panics.

mod common;

use common::*;
use k8s_openapi::api::core::v1::PodSpec;
use portcullis::policy::PolicySet;
use portcullis::{admission, review};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn maybe<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![Just(None), s.prop_map(Some)].boxed()
}

fn quantity(resource: &'static str) -> BoxedStrategy<String> {
    let values: &[&str] = if resource == "cpu" {
        &["10m", "50m", "100m", "250m", "500m", "1", "2", "1500m"]
    } else {
        &["16Mi", "64Mi", "128Mi", "256Mi", "1Gi", "2G", "100M"]
    };
    prop::sample::select(values.to_vec())
        .prop_map(String::from)
        .boxed()
}

fn resources() -> BoxedStrategy<Option<Value>> {
    let map = (maybe(quantity("cpu")), maybe(quantity("memory"))).prop_map(|(cpu, memory)| {
        let mut m = Map::new();
        if let Some(c) = cpu {
            m.insert("cpu".into(), json!(c));
        }
        if let Some(mem) = memory {
            m.insert("memory".into(), json!(mem));
        }
        Value::Object(m)
    });
    maybe(
        (maybe(map.clone()), maybe(map)).prop_map(|(limits, requests)| {
            let mut r = Map::new();
            if let Some(l) = limits {
                r.insert("limits".into(), l);
            }
            if let Some(q) = requests {
                r.insert("requests".into(), q);
            }
            Value::Object(r)
        }),
    )
}

fn security_context() -> BoxedStrategy<Option<Value>> {
    let caps = prop::sample::subsequence(
        vec!["NET_BIND_SERVICE", "SYS_ADMIN", "CAP_SYS_ADMIN", "NET_RAW"],
        0..=2,
    );
    maybe(
        (
            maybe(prop::sample::select(vec![0i64, 1000, 65532])),
            maybe(any::<bool>()),
            maybe(any::<bool>()),
            maybe(any::<bool>()),
            maybe((maybe(caps.clone()), maybe(caps))),
        )
            .prop_map(|(user, non_root, privileged, escalation, capabilities)| {
                let mut sc = Map::new();
                if let Some(u) = user {
                    sc.insert("runAsUser".into(), json!(u));
                }
                if let Some(n) = non_root {
                    sc.insert("runAsNonRoot".into(), json!(n));
                }
                if let Some(p) = privileged {
                    sc.insert("privileged".into(), json!(p));
                }
                if let Some(e) = escalation {
                    sc.insert("allowPrivilegeEscalation".into(), json!(e));
                }
                if let Some((add, drop)) = capabilities {
                    let mut c = Map::new();
                    if let Some(a) = add {
                        c.insert("add".into(), json!(a));
                    }
                    if let Some(d) = drop {
                        c.insert("drop".into(), json!(d));
                    }
                    sc.insert("capabilities".into(), Value::Object(c));
                }
                Value::Object(sc)
            }),
    )
}

fn container(prefix: &'static str) -> impl Strategy<Value = Value> {
    (0u8..100, security_context(), resources(), any::<bool>()).prop_map(
        move |(n, sc, res, probes)| {
            let mut c = json!({"name": format!("{prefix}{n}"), "image": "registry.example/app:1"});
            if let Some(sc) = sc {
                c["securityContext"] = sc;
            }
            if let Some(r) = res {
                c["resources"] = r;
            }
            if probes {
                c["livenessProbe"] = json!({"httpGet": {"path": "/healthz", "port": 8080}});
                c["readinessProbe"] = json!({"tcpSocket": {"port": 8080}});
            }
            c
        },
    )
}

fn pod() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(container("c"), 1..4),
        prop::collection::vec(container("i"), 0..3),
        maybe((maybe(prop::sample::select(vec![0i64, 1000])), maybe(any::<bool>()), maybe(prop::sample::select(vec!["RuntimeDefault", "Unconfined", "Localhost"])))),
        any::<bool>(),
    ).prop_map(|(containers, init, pod_sc, windows)| {
        let mut spec = json!({"containers": containers});
        if !init.is_empty() { spec["initContainers"] = json!(init); }
        if let Some((user, non_root, seccomp)) = pod_sc {
            let mut sc = Map::new();
            if let Some(u) = user { sc.insert("runAsUser".into(), json!(u)); }
            if let Some(n) = non_root { sc.insert("runAsNonRoot".into(), json!(n)); }
            if let Some(t) = seccomp { sc.insert("seccompProfile".into(), json!({"type": t})); }
            spec["securityContext"] = Value::Object(sc);
        }
        if windows { spec["os"] = json!({"name": "windows"}); }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team-a"}, "spec": spec})
    })
}

fn mutate(set: &PolicySet, object: &Value) -> Vec<Value> {
    let req = review::decode(&wire(&create(object))).unwrap();
    let patch = admission::mutate(set, &req);
    serde_json::from_slice(patch.as_json()).unwrap()
}

fn denied(set: &PolicySet, object: &Value) -> Vec<String> {
    let req = review::decode(&wire(&create(object))).unwrap();
    let verdict = admission::validate(set, &req, &portcullis::rollout::Context::now());
    verdict.denials().map(|v| v.rule.to_string()).collect()
}

/// Every non-null leaf of `before` is still there, unchanged, in `after`.
fn user_values_kept(before: &Value, after: &Value, path: &str) -> Result<(), String> {
    match before {
        Value::Object(m) => m.iter().try_for_each(|(k, v)| {
            let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
            if v.is_null() {
                Ok(())
            } else {
                user_values_kept(v, after, &p)
            }
        }),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| user_values_kept(v, after, &format!("{path}/{i}"))),
        leaf => match after.pointer(path) {
            Some(v) if v == leaf => Ok(()),
            other => Err(format!("{path}: {leaf} became {other:?}")),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutation_is_sound(object in pod()) {
        let set = PolicySet::embedded();
        let ops = mutate(&set, &object);
        // Applies to the object it was made for.
        let patched = apply(&object, &ops);
        // Idempotent: nothing left to fill.
        let again = mutate(&set, &patched);
        prop_assert!(again.is_empty(), "second patch {:?}", again);
        // The patch makes the pod what filling it in memory makes it. `/mutate` copies the
        // operations for a field left out or sent empty, recorded once per policy set;
        // `defaults::fill` fills every field itself.
        let spec = |pod: &Value| -> PodSpec { serde_json::from_value(pod["spec"].clone()).unwrap() };
        let mut filled = spec(&object);
        portcullis::defaults::fill(set.mutation().unwrap().1, &mut filled);
        prop_assert_eq!(spec(&patched), filled);
        // Fill-only.
        if let Err(e) = user_values_kept(&object, &patched, "") {
            return Err(TestCaseError::fail(e));
        }
        // What defaults can satisfy, they satisfy.
        let after = denied(&set, &patched);
        prop_assert!(!after.iter().any(|c| c == "resource-limits"), "limits still missing: {}", patched);
        let explicit_root = serde_json::to_string(&object).unwrap();
        let chose_root = explicit_root.contains("\"runAsUser\":0") || explicit_root.contains("\"runAsNonRoot\":false");
        if !chose_root {
            prop_assert!(!after.iter().any(|c| c == "run-as-non-root"), "root not fixed: {}", patched);
        }
    }

    /// As the apiserver orders a review, its kind and operation come before the object, and a
    /// new object's spec is typed as it passes; sorted, `operation` follows `object`, and the
    /// spec is taken as text and typed after. Both read the same object.
    #[test]
    fn a_review_reads_the_same_in_either_order(object in pod()) {
        let review = create(&object);
        let sorted = serde_json::to_vec(&review).unwrap();
        for reading in [review::Reading::Checks, review::Reading::Full] {
            let as_sent = review::decode_with(&wire(&review), reading).unwrap();
            let sorted = review::decode_with(&sorted, reading).unwrap();
            prop_assert!(as_sent.object.workload().is_some(), "{:?}", as_sent.object);
            prop_assert_eq!(&as_sent.object, &sorted.object);
            prop_assert_eq!(format!("{as_sent:?}"), format!("{sorted:?}"));
        }
    }

    #[test]
    fn evaluation_never_panics_on_any_profile(object in pod()) {
        for dir in ["policies/profiles/pss-baseline", "policies/profiles/pss-restricted"] {
            let set = portcullis::policy::load_dir(&repo().join(dir)).unwrap();
            let _ = denied(&set, &object);
        }
    }
}
