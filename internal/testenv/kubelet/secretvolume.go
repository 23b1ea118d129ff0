// Package kubelet stands in, in tests, for the part of the kubelet that projects Secret
// volumes into a pod: envtest schedules no pod, so tests that run keysmith's binaries as
// their Deployments would (test/install, internal/servingcert) mount the Secrets with it.
package kubelet

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SecretVolume stands in for the kubelet for one secret volume of a pod that envtest never
// schedules: it projects the Secret into dir as the kubelet does — only the keys the
// volume's items list (every key when it lists none), at their paths and modes, as
// symlinks into a ..data directory that is swapped atomically — and again whenever the
// Secret changes, so that a renewed certificate reaches the process as it would reach a
// pod. A Secret that does not exist yet leaves a non-optional volume unready, as the
// kubelet keeps such a pod from starting; an optional one is mounted empty.
type SecretVolume struct {
	// Client reads the Secret (as the pod's node would, or as its ServiceAccount).
	Client client.Reader
	// Namespace is the pod's namespace, where the Secret is.
	Namespace string
	// Source is the pod's secret volume.
	Source corev1.SecretVolumeSource
	// Dir is the directory the volume is mounted at.
	Dir string

	mu       sync.Mutex
	rv       string // resourceVersion of the Secret last projected
	written  map[string]projectedFile
	ready    bool  // projected once (or optional and absent)
	err      error // why the last projection failed
	projects int   // how many times the data was written
}

// Sync projects the Secret's current data when it changed since the last call.
func (v *SecretVolume) Sync(ctx context.Context) error {
	secret := &corev1.Secret{}
	err := v.Client.Get(ctx, client.ObjectKey{Namespace: v.Namespace, Name: v.Source.SecretName}, secret)
	v.mu.Lock()
	defer v.mu.Unlock()
	optional := v.Source.Optional != nil && *v.Source.Optional
	switch {
	case apierrors.IsNotFound(err) && optional && !v.ready:
		v.ready, v.err = true, nil
		return nil
	case apierrors.IsNotFound(err) && v.ready:
		return nil // the kubelet keeps the last data of a deleted Secret
	case err != nil:
		v.err = fmt.Errorf("secret %s/%s: %w", v.Namespace, v.Source.SecretName, err)
		return v.err
	case secret.ResourceVersion == v.rv:
		return nil
	}
	files, err := v.files(secret, optional)
	if err != nil {
		v.err = err
		return err
	}
	if v.ready && maps.EqualFunc(files, v.written, func(a, b projectedFile) bool { return a.mode == b.mode && bytes.Equal(a.data, b.data) }) {
		// The kubelet's atomic writer leaves the files alone when the projection is
		// unchanged (a write of ca.key, or of a label, changes nothing a pod sees).
		v.rv = secret.ResourceVersion
		return nil
	}
	if err := writeAtomically(v.Dir, files); err != nil {
		v.err = err
		return err
	}
	v.rv, v.ready, v.err, v.written = secret.ResourceVersion, true, nil, files
	v.projects++
	return nil
}

// projectedFile is one file of a projection.
type projectedFile struct {
	data []byte
	mode os.FileMode
}

// files returns the files the kubelet would write for secret: the listed items, a
// missing key failing a non-optional volume.
func (v *SecretVolume) files(secret *corev1.Secret, optional bool) (map[string]projectedFile, error) {
	mode := os.FileMode(0o644)
	if v.Source.DefaultMode != nil {
		mode = os.FileMode(*v.Source.DefaultMode)
	}
	files := map[string]projectedFile{}
	if len(v.Source.Items) == 0 {
		for k, data := range secret.Data {
			files[k] = projectedFile{data, mode}
		}
		return files, nil
	}
	for _, item := range v.Source.Items {
		data, ok := secret.Data[item.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("secret %s/%s has no key %q that the volume lists", v.Namespace, v.Source.SecretName, item.Key)
		}
		m := mode
		if item.Mode != nil {
			m = os.FileMode(*item.Mode)
		}
		if item.Path == "" || filepath.IsAbs(item.Path) || strings.Contains(item.Path, "..") {
			return nil, fmt.Errorf("volume item path %q is not a relative path", item.Path)
		}
		files[item.Path] = projectedFile{data, m}
	}
	return files, nil
}

// State reports whether the volume is ready, how many times its files were written, and
// why the last projection failed.
func (v *SecretVolume) State() (ready bool, projects int, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ready, v.projects, v.err
}

// Run keeps the volume in sync until ctx ends (the kubelet resyncs mounted Secrets
// periodically; this does so every 200ms, so that tests do not wait a minute).
func (v *SecretVolume) Run(ctx context.Context) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		_ = v.Sync(ctx) // the error is kept for State
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// writeAtomically replaces the files of dir as the kubelet's atomic writer does: the data
// goes into a new hidden directory, the ..data symlink is swapped to it by a rename, and
// each visible name is a symlink through ..data, so that a reader sees the old set or the
// new set of files, never a mix (a certificate with the previous key).
func writeAtomically(dir string, files map[string]projectedFile) error {
	tsDir, err := os.MkdirTemp(dir, ".."+time.Now().UTC().Format("2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	for path, f := range files {
		full := filepath.Join(tsDir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(full, f.mode); err != nil { // WriteFile's mode is masked by umask
			return err
		}
	}
	dataLink := filepath.Join(dir, "..data")
	old, _ := os.Readlink(dataLink)
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, dataLink); err != nil {
		return err
	}
	visible := map[string]bool{}
	for path := range files {
		top := strings.Split(path, "/")[0]
		visible[top] = true
		link := filepath.Join(dir, top)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", top), link); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "..") && !visible[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if old != "" {
		return os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}
