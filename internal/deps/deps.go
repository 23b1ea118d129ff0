//go:build tools

// Package deps pins the modules that issue 10's packaging work imports while it is being
// built (Helm SDK, cert-controller, kustomize), so that go mod tidy keeps them meanwhile.
// It is removed once every one of them is imported by real code.
package deps

import (
	_ "github.com/open-policy-agent/cert-controller/pkg/rotator"
	_ "helm.sh/helm/v3/pkg/action"
	_ "helm.sh/helm/v3/pkg/chart/loader"
	_ "helm.sh/helm/v3/pkg/chartutil"
	_ "helm.sh/helm/v3/pkg/engine"
	_ "helm.sh/helm/v3/pkg/lint"
	_ "sigs.k8s.io/kustomize/api/krusty"
	_ "sigs.k8s.io/kustomize/kyaml/filesys"
)
