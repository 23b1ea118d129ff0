package controllers

import (
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// keysmithPrefix starts the names of the labels and annotations keysmith reads.
var keysmithPrefix = iamv1alpha1.GroupVersion.Group + "/"

// CacheOptions limits what the manager caches: managedFields of nothing; of Secrets only
// those that carry the credential label, never every Secret of the cluster (a memory and
// a security problem), and of those only what the write-once decision reads
// (trimCredentialSecret); of APICredentials everything but kubectl's copy of the last
// applied spec (trimCredential). What the cache does not hold is read from the API server
// before anything is written: no decision to mint, rotate, bind or adopt rests on the cache.
func CacheOptions() cache.Options {
	managed, err := labels.NewRequirement(iamv1alpha1.CredentialLabel, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant requirement
	}
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}:             {Label: labels.NewSelector().Add(*managed), Transform: trimCredentialSecret},
			&iamv1alpha1.APICredential{}: {Transform: trimCredential},
		},
	}
}

// trimCredentialSecret keeps of a credential Secret what the write-once decision reads:
// its identity, owner references, keysmith's annotations (the key version, the issue
// time and the binding), and the data entries that hold a client ID or a keysmith client
// secret (recognised by their format, whatever the credential names their keys).
// Everything else goes: managedFields, labels (the cache's selector already says the
// credential label is there, and nothing reads it from the cache: writes start from the
// live Secret), other annotations (such as kubectl's last-applied-configuration, which
// may repeat the data) and other data. The maps are rebuilt at their new size and the
// strings every credential Secret repeats (namespace, keys, owner kind) are shared.
func trimCredentialSecret(in any) (any, error) {
	s, ok := in.(*corev1.Secret)
	if !ok {
		return in, nil
	}
	s.ManagedFields = nil
	s.Labels = nil
	s.StringData = nil
	var annotations map[string]string
	for k, v := range s.Annotations {
		if strings.HasPrefix(k, keysmithPrefix) {
			if annotations == nil {
				annotations = make(map[string]string, 3)
			}
			annotations[intern(k)] = v
		}
	}
	s.Annotations = annotations
	var data map[string][]byte
	for k, v := range s.Data {
		if value := string(v); credential.ValidClientID(value) || credential.ParseSecret(value) == nil {
			if data == nil {
				data = make(map[string][]byte, 2)
			}
			data[intern(k)] = v
		}
	}
	s.Data = data
	s.Type = corev1.SecretType(intern(string(s.Type)))
	shareMeta(&s.TypeMeta, &s.ObjectMeta)
	return s, nil
}

// trimCredential drops of a cached APICredential its managedFields and kubectl's
// last-applied-configuration annotation, a second copy of the spec that nothing in the
// manager reads (trimAsCached, also applied to live reads compared with the cache), and
// shares the strings that many credentials repeat: namespace, kind, annotation and label
// keys, condition types, statuses and reasons (and the Active condition's messages, which
// name nothing), API names and permissions. Everything the reconciler, the webhooks and
// the metrics read stays, so a status patch computed from it (a merge patch of two copies
// of one cached object, guarded by its resourceVersion) is the same as from the full one.
func trimCredential(in any) (any, error) {
	c, ok := in.(*iamv1alpha1.APICredential)
	if !ok {
		return in, nil
	}
	trimAsCached(c)
	shareMeta(&c.TypeMeta, &c.ObjectMeta)
	c.Labels = internKeys(c.Labels)
	c.Annotations = internKeys(c.Annotations)
	for i := range c.Finalizers {
		c.Finalizers[i] = intern(c.Finalizers[i])
	}
	for i := range c.Spec.APIs {
		g := &c.Spec.APIs[i]
		g.Name, g.Permission = intern(g.Name), intern(g.Permission)
	}
	st := &c.Status
	if st.SecretRef != nil && st.SecretRef.Name == c.Name {
		st.SecretRef.Name = c.Name
	}
	if st.Account == c.Namespace {
		st.Account = c.Namespace
	} else {
		st.Account = intern(st.Account)
	}
	for i := range st.Conditions {
		cond := &st.Conditions[i]
		cond.Type, cond.Reason = intern(cond.Type), intern(cond.Reason)
		cond.Status = metav1.ConditionStatus(intern(string(cond.Status)))
		if cond.Type == iamv1alpha1.ConditionActive {
			cond.Message = intern(cond.Message)
		}
	}
	return c, nil
}

// trimAsCached removes from an APICredential what the cache does not hold of it, so that
// a live copy compares equal to the cached one where that matters (the annotations).
func trimAsCached(c *iamv1alpha1.APICredential) {
	c.ManagedFields = nil
	if _, ok := c.Annotations[corev1.LastAppliedConfigAnnotation]; ok {
		delete(c.Annotations, corev1.LastAppliedConfigAnnotation)
		if len(c.Annotations) == 0 {
			c.Annotations = nil
		}
	}
}

// shareMeta shares the strings an object repeats with its kind: apiVersion and kind, the
// namespace, the owner references' kind and apiVersion, and an owner's name that is the
// object's own.
func shareMeta(t *metav1.TypeMeta, m *metav1.ObjectMeta) {
	t.APIVersion, t.Kind = intern(t.APIVersion), intern(t.Kind)
	m.Namespace = intern(m.Namespace)
	for i := range m.OwnerReferences {
		o := &m.OwnerReferences[i]
		o.APIVersion, o.Kind = intern(o.APIVersion), intern(o.Kind)
		if o.Name == m.Name {
			o.Name = m.Name
		}
	}
}

// internKeys returns m with its keys shared (a new map of the same entries), nil if empty.
func internKeys(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[intern(k)] = v
	}
	return out
}

// The intern table holds one copy of each string the cached objects of many credentials
// repeat. It is bounded (beyond maxInterned entries, or for long strings, a string is
// kept as it is) and only ever given names, keys and constant texts, never data, a
// secret, a hash or a client ID.
const (
	maxInterned    = 4096
	maxInternedLen = 128
)

// stringTable is an intern table.
type stringTable struct {
	mu sync.RWMutex
	m  map[string]string
}

// sharedStrings is the table of the manager's cache transforms.
var sharedStrings = &stringTable{m: map[string]string{}}

// intern returns the shared copy of s.
func intern(s string) string { return sharedStrings.intern(s) }

func (t *stringTable) intern(s string) string {
	if s == "" || len(s) > maxInternedLen {
		return s
	}
	t.mu.RLock()
	v, ok := t.m[s]
	t.mu.RUnlock()
	if ok {
		return v
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.m[s]; ok {
		return v
	}
	if len(t.m) >= maxInterned {
		return s
	}
	s = strings.Clone(s)
	t.m[s] = s
	return s
}

// has reports whether s is in the table (tests).
func (t *stringTable) has(s string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, ok := t.m[s]
	return ok
}
