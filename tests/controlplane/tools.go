//go:build tools

// Keeps the control-plane commands in go.mod's requirements, so `go build` of them resolves.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)
