package install

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
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

func TestSecretVolumeFiles(t *testing.T) {
	secret := &corev1.Secret{Data: map[string][]byte{"tls.crt": []byte("crt"), "tls.key": []byte("key"), "ca.key": []byte("ca key")}}
	items := []corev1.KeyToPath{{Key: "tls.crt", Path: "tls.crt"}, {Key: "tls.key", Path: "tls.key", Mode: ptr.To[int32](0o600)}}

	v := &secretVolume{source: corev1.SecretVolumeSource{SecretName: "s", Items: items}}
	files, err := v.files(secret, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := files["ca.key"]; ok || len(files) != 2 {
		t.Errorf("projected %v: want only the listed items, never ca.key", slices.Sorted(maps.Keys(files)))
	}
	if files["tls.key"].mode != 0o600 || files["tls.crt"].mode != 0o644 {
		t.Errorf("modes tls.key %o tls.crt %o, want 600 (item) and 644 (default)", files["tls.key"].mode, files["tls.crt"].mode)
	}

	v.source.Items = append(items, corev1.KeyToPath{Key: "missing", Path: "missing"})
	if _, err := v.files(secret, false); err == nil {
		t.Error("a listed key missing from a non-optional volume's Secret was projected; the kubelet refuses the pod")
	}
	if files, err := v.files(secret, true); err != nil || len(files) != 2 {
		t.Errorf("optional volume with a missing key: %v %v, want the two present keys", files, err)
	}

	v.source.Items = nil
	if files, _ := v.files(secret, false); len(files) != 3 {
		t.Errorf("a volume without items projects every key, got %d", len(files))
	}

	v.source.Items = []corev1.KeyToPath{{Key: "tls.crt", Path: "../escape"}}
	if _, err := v.files(secret, false); err == nil {
		t.Error("an item path out of the volume was accepted")
	}
}

func TestWriteAtomically(t *testing.T) {
	dir := t.TempDir()
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(data)
	}
	if err := writeAtomically(dir, map[string]projectedFile{"tls.crt": {[]byte("one"), 0o644}, "old": {[]byte("x"), 0o644}}); err != nil {
		t.Fatal(err)
	}
	if err := writeAtomically(dir, map[string]projectedFile{"tls.crt": {[]byte("two"), 0o644}, "tls.key": {[]byte("k"), 0o600}}); err != nil {
		t.Fatal(err)
	}
	if got := read("tls.crt"); got != "two" {
		t.Errorf("tls.crt = %q after the second write, want two", got)
	}
	if got := read("tls.key"); got != "k" {
		t.Errorf("tls.key = %q, want k", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "old")); !os.IsNotExist(err) {
		t.Errorf("a file no longer projected is still visible (%v)", err)
	}
	if link, err := os.Readlink(filepath.Join(dir, "tls.crt")); err != nil || link != filepath.Join("..data", "tls.crt") {
		t.Errorf("tls.crt is not a symlink through ..data (%q, %v), as the kubelet writes it", link, err)
	}
	entries, _ := os.ReadDir(dir)
	var hidden []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") && e.Name() != "..data" {
			hidden = append(hidden, e.Name())
		}
	}
	if len(hidden) != 1 {
		t.Errorf("data directories %v: want only the current one", hidden)
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
