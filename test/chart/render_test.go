// Package chart holds render-only tests of charts/keysmith through the Helm SDK: the
// objects, names and args of each values file, the schema's refusals, the toggles, pod
// security, the alerts against docs/admission.md and the README's values table. No API
// server is needed; test/install applies the same renders to one.
package chart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/keysmith-dev/keysmith/internal/testenv/helmchart"
)

// The release the tests render. The namespace is deliberately not config/'s
// keysmith-system, so a namespace that was not substituted shows.
const (
	releaseName = "keysmith"
	namespace   = "ops-keysmith"
)

// valuesFiles are the values files helm lint and test/install use ("" for the defaults).
var valuesFiles = []string{"", "ci/certmanager-values.yaml", "ci/all-on-values.yaml"}

func chartDir() string { return helmchart.Dir() }

// mustRenderNotes returns the rendered NOTES.txt with the default values and overrides.
func mustRenderNotes(t *testing.T, overrides string) string {
	t.Helper()
	m, err := render("", overrides)
	if err != nil {
		t.Fatal(err)
	}
	return m.notes
}

// render renders the chart as `helm install --dry-run=client --include-crds` does, with
// the values of file (relative to the chart, "" for none) overridden by the YAML overrides.
func render(file, overrides string) (*manifest, error) {
	return renderIn(namespace, file, overrides)
}

// renderIn renders as render does, for a release in namespace ns.
func renderIn(ns, file, overrides string) (*manifest, error) {
	rel, err := helmchart.Render(releaseName, ns, file, overrides)
	if err != nil {
		return nil, err
	}
	if len(rel.Hooks) > 0 {
		return nil, fmt.Errorf("the chart has %d hooks; it should have none", len(rel.Hooks))
	}
	objs, err := decode([]byte(rel.Manifest))
	if err != nil {
		return nil, err
	}
	return &manifest{text: rel.Manifest, objs: objs, notes: rel.Info.Notes}, nil
}

// mustRender renders or fails the test.
func mustRender(t *testing.T, file, overrides string) *manifest {
	t.Helper()
	m, err := render(file, overrides)
	if err != nil {
		t.Fatalf("rendering with %q and %q: %v", file, overrides, err)
	}
	return m
}

// manifest is a render: its text, objects and NOTES.txt.
type manifest struct {
	text  string
	objs  []*unstructured.Unstructured
	notes string
}

// get returns the object of kind and name, or nil.
func (m *manifest) get(kind, name string) *unstructured.Unstructured {
	for _, o := range m.objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// mustGet returns the object of kind and name or fails the test.
func (m *manifest) mustGet(t *testing.T, kind, name string) *unstructured.Unstructured {
	t.Helper()
	o := m.get(kind, name)
	if o == nil {
		t.Fatalf("the render has no %s %s; it has %v", kind, name, m.names())
	}
	return o
}

// ofKind returns the objects of kind.
func (m *manifest) ofKind(kind string) []*unstructured.Unstructured {
	var objs []*unstructured.Unstructured
	for _, o := range m.objs {
		if o.GetKind() == kind {
			objs = append(objs, o)
		}
	}
	return objs
}

// names lists "Kind/name" of every object.
func (m *manifest) names() []string {
	var names []string
	for _, o := range m.objs {
		names = append(names, o.GetKind()+"/"+o.GetName())
	}
	return names
}

func decode(data []byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if string(js) == "null" {
			continue // a template that renders nothing
		}
		// Unstructured's JSON decoding keeps integers as int64.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(js); err != nil {
			return nil, err
		}
		objs = append(objs, obj)
	}
}

// container returns the one container of Deployment name.
func (m *manifest) container(t *testing.T, deployment string) map[string]any {
	t.Helper()
	d := m.mustGet(t, "Deployment", deployment)
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("Deployment %s has %d containers, want 1", deployment, len(containers))
	}
	return containers[0].(map[string]any)
}

// strings returns the string list at fields of obj.
func stringsAt(obj map[string]any, fields ...string) []string {
	l, _, _ := unstructured.NestedStringSlice(obj, fields...)
	return l
}
