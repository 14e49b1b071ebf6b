# The rows of the end-to-end benchmarks, sourced by load.sh and instructions.sh from the
# repository's root: the captured reviews each row sends in rotation, and the policy the
# audit row serves.
fixtures=$(cd tests/data/apiserver && pwd)
validate_bodies=("$fixtures/create-pod.json" "$fixtures/create-pod-by-replicaset-controller.json"
                 "$fixtures/create-deployment.json" "$fixtures/update-pod.json")
# Every review denied with several violations (4, 4, 2, 3 and 4 under the default policy).
denied_bodies=("$fixtures/create-pod-by-replicaset-controller.json" "$fixtures/create-pod-2.json"
               "$fixtures/create-deployment.json" "$fixtures/create-daemonset.json"
               "$fixtures/create-pod-by-statefulset-controller.json")
mutate_bodies=("$fixtures/create-pod.json" "$fixtures/create-pod-2.json"
               "$fixtures/create-pod-by-replicaset-controller.json")
# The same denials with every check in audit mode: the default policy as the audit overlay
# ships it.
audit_policies=$(cd deploy/overlays/audit/policies && pwd)
