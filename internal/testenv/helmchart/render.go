// Package helmchart renders charts/keysmith through the Helm SDK as `helm install
// --dry-run=client --include-crds` does, for the tests that read the render (test/chart)
// and the one that applies it to an API server (test/install): one renderer, so both test
// the same objects for the same values.
package helmchart

import (
	"fmt"
	"path/filepath"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"sigs.k8s.io/yaml"

	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// KubeVersion is the Kubernetes version the chart is rendered for (.Capabilities.KubeVersion):
// envtest's API server.
const KubeVersion = "v1.37.2"

// Dir is the chart's directory.
func Dir() string { return filepath.Join(testenv.RepoRoot(), "charts", "keysmith") }

// Render renders the chart for the release name in namespace, with the values of
// valuesFile (relative to the chart, such as ci/all-on-values.yaml; "" for the defaults)
// overridden by the YAML overrides ("" for none). values.schema.json is enforced: a value
// it rejects, or a template's fail, is the error.
func Render(name, namespace, valuesFile, overrides string) (*release.Release, error) {
	chrt, err := loader.Load(Dir())
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", Dir(), err)
	}
	vals := map[string]any{}
	if valuesFile != "" {
		v, err := chartutil.ReadValuesFile(filepath.Join(Dir(), valuesFile))
		if err != nil {
			return nil, err
		}
		vals = v.AsMap()
	}
	if overrides != "" {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(overrides), &o); err != nil {
			return nil, fmt.Errorf("overrides %q: %w", overrides, err)
		}
		vals = chartutil.CoalesceTables(o, vals)
	}
	kv, err := chartutil.ParseKubeVersion(KubeVersion)
	if err != nil {
		return nil, err
	}
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.DryRun = true
	inst.ClientOnly = true
	inst.IncludeCRDs = true
	inst.ReleaseName = name
	inst.Namespace = namespace
	inst.KubeVersion = kv
	return inst.Run(chrt, vals)
}
