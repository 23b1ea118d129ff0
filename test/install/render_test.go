package install

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"helm.sh/helm/v3/pkg/release"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/testenv/helmchart"
)

// releaseName is the Helm release the chart is rendered as: `helm install keysmith
// charts/keysmith`.
const releaseName = "keysmith"

// renderChart renders charts/keysmith (helmchart.Render: `helm install --dry-run=client
// --include-crds`, the schema enforced) with the values of valuesFile (relative to the
// chart, "" for the defaults) for a release in namespace. Hooks other than tests are
// returned with the manifest, since an install applies them too.
func renderChart(valuesFile, namespace string) ([]*unstructured.Unstructured, error) {
	rel, err := helmchart.Render(releaseName, namespace, valuesFile, "")
	if err != nil {
		return nil, fmt.Errorf("rendering charts/keysmith with %s: %w", cmp.Or(valuesFile, "default values"), err)
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
