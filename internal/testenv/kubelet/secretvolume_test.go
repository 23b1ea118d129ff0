package kubelet

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

// What the stand-in projects decides what the binaries are run with, so it is specified
// here on its own, without an API server.

func TestSecretVolumeFiles(t *testing.T) {
	secret := &corev1.Secret{Data: map[string][]byte{"tls.crt": []byte("crt"), "tls.key": []byte("key"), "ca.key": []byte("ca key")}}
	items := []corev1.KeyToPath{{Key: "tls.crt", Path: "tls.crt"}, {Key: "tls.key", Path: "tls.key", Mode: ptr.To[int32](0o600)}}

	v := &SecretVolume{Source: corev1.SecretVolumeSource{SecretName: "s", Items: items}}
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

	v.Source.Items = append(items, corev1.KeyToPath{Key: "missing", Path: "missing"})
	if _, err := v.files(secret, false); err == nil {
		t.Error("a listed key missing from a non-optional volume's Secret was projected; the kubelet refuses the pod")
	}
	if files, err := v.files(secret, true); err != nil || len(files) != 2 {
		t.Errorf("optional volume with a missing key: %v %v, want the two present keys", files, err)
	}

	v.Source.Items = nil
	if files, _ := v.files(secret, false); len(files) != 3 {
		t.Errorf("a volume without items projects every key, got %d", len(files))
	}

	v.Source.Items = []corev1.KeyToPath{{Key: "tls.crt", Path: "../escape"}}
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
