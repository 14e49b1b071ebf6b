#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager, at the versions go.mod pins, into
# the tools cache outside the clone (tests/e2e.rs looks there), once: a second run finds them
# and returns at once.
set -euo pipefail
cd "$(dirname "$0")"
out="${XDG_CACHE_HOME:-$HOME/.cache}/portcullis-tools/controlplane-v1.36.3-etcd-v3.6.8"
if [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && [ -x "$out/etcd" ]; then
  echo "control plane already built in $out"
  exit 0
fi
mkdir -p "$out"
start=$(date +%s)
go build -trimpath -o "$out/" k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager ./etcd
echo "control plane built in $(( $(date +%s) - start )) s into $out"
