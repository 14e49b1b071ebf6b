# What the end-to-end benchmarks share, sourced by load.sh and instructions.sh from the
# repository's root: their rows (the captured reviews each sends in rotation, and the policy
# the audit row serves), and installing the tools they drive.
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

install_missing() { # TOOL... (each a Debian package of the same name)
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null; then
      echo "installing $tool (Debian package)" >&2
      apt-get install -y -qq "$tool" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
    fi
  done
}
