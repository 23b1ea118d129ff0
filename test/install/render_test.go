package install

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// kubeVersion is the version of the envtest API server, the cluster the chart is rendered
// for (its templates may ask .Capabilities.KubeVersion).
const kubeVersion = "v1.37.2"

// releaseName is the Helm release the chart is rendered as: `helm install keysmith
// charts/keysmith`.
const releaseName = "keysmith"

// renderChart renders charts/keysmith as `helm install --dry-run=client --include-crds`
// does, through the Helm SDK, with the values of valuesFile ("" for the defaults) for a
// release in namespace. The chart's values.schema.json is enforced: a value it rejects
// fails the render. Hooks other than tests are returned with the manifest, since an
// install applies them too.
func renderChart(valuesFile, namespace string) ([]*unstructured.Unstructured, error) {
	chartDir := filepath.Join(testenv.RepoRoot(), "charts", "keysmith")
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", chartDir, err)
	}
	vals := map[string]any{}
	if valuesFile != "" {
		v, err := chartutil.ReadValuesFile(filepath.Join(testenv.RepoRoot(), valuesFile))
		if err != nil {
			return nil, err
		}
		vals = v.AsMap()
	}
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.DryRun = true
	inst.ClientOnly = true
	inst.Replace = true
	inst.IncludeCRDs = true
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	inst.KubeVersion = kv
	rel, err := inst.Run(chrt, vals)
	if err != nil {
		return nil, fmt.Errorf("rendering %s with %s: %w", chartDir, cmp.Or(valuesFile, "default values"), err)
	}
	manifest := rel.Manifest
	for _, h := range rel.Hooks {
		if isTestHook(h) {
			continue
		}
		manifest += "\n---\n" + h.Manifest
	}
	return splitManifest([]byte(manifest), valuesFile)
}

func isTestHook(h *release.Hook) bool {
	for _, e := range h.Events {
		if e == release.HookTest {
			return true
		}
	}
	return false
}

// readManifest reads a multi-document YAML file of the repository, such as
// dist/install.yaml.
func readManifest(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), path))
	if err != nil {
		return nil, err
	}
	return splitManifest(data, path)
}

// splitManifest decodes the objects of a multi-document YAML stream, skipping empty
// documents (a template that renders nothing).
func splitManifest(data []byte, source string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if obj.GetKind() == "" || obj.GetAPIVersion() == "" || obj.GetName() == "" {
			return nil, fmt.Errorf("%s: an object without apiVersion, kind or name: %v", source, obj.Object)
		}
		objs = append(objs, obj)
	}
}
