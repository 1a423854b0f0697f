//go:build tools

// Package tools pins the Kubernetes and etcd commands that the project's
// tests and `make run` start as a real control plane. It is its own module,
// outside go.work, so these large dependency graphs never touch the services.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
