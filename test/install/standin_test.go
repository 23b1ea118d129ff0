package install

import (
	"slices"
	"testing"
)

// The stand-ins for the kubelet and kube-proxy decide what the binaries are run with, so
// they are specified here on their own, without an API server.

func TestExpand(t *testing.T) {
	vars := map[string]string{"POD_NAMESPACE": "keysmith", "A": "x"}
	for in, want := range map[string]string{
		"--signing-key-namespace=$(POD_NAMESPACE)": "--signing-key-namespace=keysmith",
		"$(A)$(A)":                   "xx",
		"$$(A)":                      "$(A)",
		"$(UNDEFINED)":               "$(UNDEFINED)",
		"$(A":                        "$(A",
		"cost: $5":                   "cost: $5",
		"--token-url=https://h/path": "--token-url=https://h/path",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDiffPaths(t *testing.T) {
	a := map[string]any{"metadata": map[string]any{"resourceVersion": "1", "name": "x"}, "spec": map[string]any{"replicas": int64(2), "keep": "same"}}
	b := map[string]any{"metadata": map[string]any{"resourceVersion": "2", "name": "x"}, "spec": map[string]any{"replicas": int64(1), "keep": "same", "added": true}}
	got := diffPaths(a, b, true)
	want := []string{".spec.added (null -> true)", ".spec.replicas (2 -> 1)"}
	if !slices.Equal(got, want) {
		t.Errorf("diffPaths = %q, want %q", got, want)
	}
	if got := diffPaths(a, b, false); !slices.Equal(got, []string{".spec.added", ".spec.replicas"}) {
		t.Errorf("diffPaths without values = %q: a Secret's values must not be printed", got)
	}
}
