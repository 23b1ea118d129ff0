package controllers

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/binding"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// CacheOptions limits what the manager caches: managedFields of nothing; of Secrets only
// those that carry the credential label, never every Secret of the cluster (a memory and
// a security problem), and of those only what the write-once decision reads
// (trimCredentialSecret: no data, no plaintext secret, no map); of APICredentials
// everything but kubectl's copy of the last applied spec (trimCredential), indexed by
// cluster-wide keys only (newInformer). What the cache does not hold is read from the API
// server before anything is written: no decision to mint, rotate, bind or adopt rests on
// the cache.
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
		NewInformer: newInformer,
	}
}

// clusterWideIndexes name the field indexes of APICredentials (as controller-runtime
// names them, "field:" and the field) that are only ever looked up across all
// namespaces: a client ID must be held by one credential in the whole cluster, and an
// APIDefinition is granted from any namespace. controller-runtime stores every value of
// a field index twice, under the object's namespace and under every namespace, each key
// with a set of its own: for the client ID two sets per credential. The APICredential
// informer keeps only the cluster-wide keys of these indexes, and refuses a lookup of
// them in one namespace (an error, never an empty answer: "no other credential holds
// this client ID" must never come from an index that was not asked the question).
var clusterWideIndexes = map[string]bool{
	"field:" + iamv1alpha1.ClientIDField: true,
	"field:" + apiNameIndex:              true,
}

// allNamespacesKey starts controller-runtime's cluster-wide key of a field index value.
const allNamespacesKey = "__all_namespaces/"

// newInformer is client-go's shared index informer; that of APICredentials keeps only
// the cluster-wide keys of clusterWideIndexes (clusterWideIndexInformer).
func newInformer(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
	if _, ok := obj.(*iamv1alpha1.APICredential); !ok {
		return toolscache.NewSharedIndexInformer(lw, obj, resync, indexers)
	}
	ix := &clusterWideIndexSet{full: toolscache.Indexers{}}
	inf := toolscache.NewSharedIndexInformer(lw, obj, resync, ix.lean(indexers))
	return &clusterWideIndexInformer{SharedIndexInformer: inf, indexes: ix}
}

// trimCredentialSecret keeps of a credential Secret its name, namespace, resourceVersion,
// creation and deletion timestamps, its owner references and, in place of its data
// and annotations, one string of what the write-once decision reads (encodeCachedFacts):
// the data entries that hold a client ID (recognised by their format, whatever the
// credential names their keys) and the hash of those that hold a keysmith client secret,
// and keysmith's key-version, issue-time and binding annotations. Nothing else is kept:
// no labels (the cache's selector already says the credential label is there), no other
// annotations (such as kubectl's last-applied-configuration, which may repeat the data),
// no other data, and no plaintext secret. The string sits in the copy's GenerateName,
// which nothing reads of a Secret that exists, so that the copy holds no map at all; it
// starts with a byte that a generateName the API server accepted never holds, and it is
// rebuilt from the Secret's data on every event, whatever the Secret's own generateName.
//
// The cache's copy can therefore only say that nothing is to be done (cachedSecretFacts):
// every write, and every decision other than nothing, starts from a live read. Nor does
// it keep the Secret's UID (36 bytes), which nothing reads of the copy: ownership is the
// owner reference's UID, and an echo is known by its resourceVersion.
func trimCredentialSecret(in any) (any, error) {
	s, ok := in.(*corev1.Secret)
	if !ok || trimmed(s) {
		return in, nil
	}
	facts := encodeCachedFacts(s)
	owners := s.OwnerReferences
	for i := range owners {
		o := &owners[i]
		o.Controller, o.BlockOwnerDeletion = sharedBool(o.Controller), sharedBool(o.BlockOwnerDeletion)
	}
	*s = corev1.Secret{
		TypeMeta: s.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: s.Name, Namespace: s.Namespace, ResourceVersion: s.ResourceVersion,
			GenerateName:      facts,
			CreationTimestamp: s.CreationTimestamp, DeletionTimestamp: s.DeletionTimestamp,
			OwnerReferences: owners,
		},
		Type: corev1.SecretType(intern(string(s.Type))),
	}
	shareMeta(&s.TypeMeta, &s.ObjectMeta)
	return s, nil
}

// trimmed reports whether s is already the cache's copy of a credential Secret: client-go
// applies the transform again to objects its store already holds (a resync replays
// them), and trimming the copy again would lose the facts. No Secret from the API server
// looks like one: its generateName cannot hold the marker's NUL byte, and a Secret in
// this cache carries the credential label.
func trimmed(s *corev1.Secret) bool {
	return strings.HasPrefix(s.GenerateName, cachedFactsMarker) && s.Labels == nil && s.Annotations == nil &&
		s.Data == nil && s.StringData == nil
}

// sharedBool returns a shared pointer to *b's value (nil for nil): owner references'
// flags are the same two values in every credential Secret.
func sharedBool(b *bool) *bool {
	switch {
	case b == nil:
		return nil
	case *b:
		return &sharedTrue
	default:
		return &sharedFalse
	}
}

// sharedTrue and sharedFalse are what sharedBool points at; nothing writes them.
var sharedTrue, sharedFalse = true, false

// cachedFactsMarker starts the string in which the cache keeps a credential Secret's
// facts. A NUL byte is in no generateName the API server accepts (a DNS subdomain prefix).
const cachedFactsMarker = "\x00ks1"

// The kinds of field in the cached facts. A data entry is its key, then the client ID it
// holds or the 32-byte digest of the client secret it holds (credential.Digest); the
// capital kinds are entries under the default keys, whose names are not repeated. An
// annotation is its value; the capital kinds hold it packed, as an issue time in
// seconds since the epoch (a varint) or a binding's 36 bytes (binding.Pack), and only
// when the value is exactly what unpacking gives back, so the facts read the same string
// either way.
const (
	factClientID        = 'i'
	factDefaultClientID = 'I'
	factSecretDigest    = 's'
	factDefaultSecret   = 'S'
	factKeyVersion      = 'v'
	factIssuedAt        = 't'
	factIssuedAtUnix    = 'T'
	factBinding         = 'b'
	factBindingPacked   = 'B'
)

// cachedDigestSize is the size of a client secret's digest in the cached facts.
const cachedDigestSize = sha256.Size

// encodeCachedFacts is the cached form of what readSecretFacts reads of s: after
// cachedFactsMarker, fields of one kind byte and their values (the kinds above), strings
// length-prefixed.
func encodeCachedFacts(s *corev1.Secret) string {
	b := make([]byte, 0, 128)
	b = append(b, cachedFactsMarker...)
	str := func(v string) {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	for k, v := range s.Data {
		switch value := string(v); {
		case credential.ValidClientID(value):
			if k == iamv1alpha1.DefaultClientIDKey {
				b = append(b, factDefaultClientID)
			} else {
				b = append(b, factClientID)
				str(k)
			}
			str(value)
		case credential.ParseSecret(value) == nil:
			if k == iamv1alpha1.DefaultClientSecretKey {
				b = append(b, factDefaultSecret)
			} else {
				b = append(b, factSecretDigest)
				str(k)
			}
			d := credential.Digest(value)
			b = append(b, d[:]...)
		}
	}
	if v, ok := s.Annotations[iamv1alpha1.KeyVersionAnnotation]; ok {
		b = append(b, factKeyVersion)
		str(v)
	}
	if v, ok := s.Annotations[iamv1alpha1.IssuedAtAnnotation]; ok {
		if t, err := time.Parse(time.RFC3339, v); err == nil && issuedAtAnnotation(t) == v {
			b = append(b, factIssuedAtUnix)
			b = binary.AppendVarint(b, t.Unix())
		} else {
			b = append(b, factIssuedAt)
			str(v)
		}
	}
	if v, ok := s.Annotations[iamv1alpha1.BindingAnnotation]; ok {
		if p, packed := binding.Pack(v); packed {
			b = append(b, factBindingPacked)
			b = append(b, p[:]...)
		} else {
			b = append(b, factBinding)
			str(v)
		}
	}
	return string(b)
}

// cachedFacts is a credential Secret's facts as the cache keeps them, unpacked.
type cachedFacts struct {
	// clientID and secretHash are the entries under the data keys asked for, if the
	// Secret held a client ID or a well-formed client secret there.
	clientID, secretHash               string
	keyVersion, issuedAt, bindingValue string
}

// decodeCachedFacts reads the facts that encodeCachedFacts wrote of the data keys
// clientIDKey and secretKey, unpacked to the strings the Secret held (the secret's as its
// hash, credential.Hash). ok is false when enc is not such a string (a Secret that did
// not pass through trimCredentialSecret, or a malformed one).
func decodeCachedFacts(enc, clientIDKey, secretKey string) (f cachedFacts, ok bool) {
	rest, found := strings.CutPrefix(enc, cachedFactsMarker)
	if !found {
		return cachedFacts{}, false
	}
	fixed := func(n int) (string, bool) {
		if n < 0 || len(rest) < n {
			return "", false
		}
		v := rest[:n]
		rest = rest[n:]
		return v, true
	}
	str := func() (string, bool) {
		n, w := binary.Uvarint([]byte(rest[:min(len(rest), binary.MaxVarintLen64)]))
		if w <= 0 || n > uint64(len(rest)-w) {
			return "", false
		}
		rest = rest[w:]
		return fixed(int(n))
	}
	// key is a data entry's key: its own string, or the default key the kind stands for.
	key := func(explicit bool, defaultKey string) (string, bool) {
		if explicit {
			return str()
		}
		return defaultKey, true
	}
	for rest != "" {
		kind := rest[0]
		rest = rest[1:]
		switch kind {
		case factClientID, factDefaultClientID:
			k, ok1 := key(kind == factClientID, iamv1alpha1.DefaultClientIDKey)
			v, ok2 := str()
			if !ok1 || !ok2 {
				return cachedFacts{}, false
			}
			if k == clientIDKey {
				f.clientID = v
			}
		case factSecretDigest, factDefaultSecret:
			k, ok1 := key(kind == factSecretDigest, iamv1alpha1.DefaultClientSecretKey)
			v, ok2 := fixed(cachedDigestSize)
			if !ok1 || !ok2 {
				return cachedFacts{}, false
			}
			if k == secretKey {
				f.secretHash = credential.FormatHash([cachedDigestSize]byte([]byte(v)))
			}
		case factKeyVersion, factIssuedAt, factBinding:
			v, ok := str()
			if !ok {
				return cachedFacts{}, false
			}
			switch kind {
			case factKeyVersion:
				f.keyVersion = v
			case factIssuedAt:
				f.issuedAt = v
			default:
				f.bindingValue = v
			}
		case factIssuedAtUnix:
			unix, w := binary.Varint([]byte(rest[:min(len(rest), binary.MaxVarintLen64)]))
			if w <= 0 {
				return cachedFacts{}, false
			}
			rest = rest[w:]
			f.issuedAt = issuedAtAnnotation(time.Unix(unix, 0))
		case factBindingPacked:
			v, ok := fixed(binding.PackedSize)
			if !ok {
				return cachedFacts{}, false
			}
			f.bindingValue = binding.Unpack([binding.PackedSize]byte([]byte(v)))
		default:
			return cachedFacts{}, false
		}
	}
	return f, true
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

// clusterWideIndexSet remembers the index functions as they were given (which also give
// the namespaced keys), for filtering by a second field (GetIndexers).
type clusterWideIndexSet struct {
	mu   sync.RWMutex
	full toolscache.Indexers
}

// lean returns indexers with the functions of clusterWideIndexes reduced to their
// cluster-wide keys, and remembers the functions as given.
func (x *clusterWideIndexSet) lean(indexers toolscache.Indexers) toolscache.Indexers {
	out := make(toolscache.Indexers, len(indexers))
	x.mu.Lock()
	defer x.mu.Unlock()
	for name, fn := range indexers {
		if !clusterWideIndexes[name] {
			out[name] = fn
			continue
		}
		x.full[name] = fn
		out[name] = func(obj any) ([]string, error) {
			keys, err := fn(obj)
			kept := keys[:0]
			for _, k := range keys {
				if strings.HasPrefix(k, allNamespacesKey) {
					kept = append(kept, k)
				}
			}
			return kept, err
		}
	}
	return out
}

// clusterWideIndexInformer is the APICredential informer: indexes added through it keep
// only their cluster-wide keys, and its indexer refuses namespaced lookups of them.
type clusterWideIndexInformer struct {
	toolscache.SharedIndexInformer
	indexes *clusterWideIndexSet
}

// AddIndexers adds indexers, those of clusterWideIndexes with their cluster-wide keys only.
func (i *clusterWideIndexInformer) AddIndexers(indexers toolscache.Indexers) error {
	return i.SharedIndexInformer.AddIndexers(i.indexes.lean(indexers))
}

// GetIndexer returns the informer's indexer, which refuses namespaced lookups of
// clusterWideIndexes (clusterWideIndexer).
func (i *clusterWideIndexInformer) GetIndexer() toolscache.Indexer {
	return &clusterWideIndexer{Indexer: i.SharedIndexInformer.GetIndexer(), indexes: i.indexes}
}

// clusterWideIndexer is an informer's indexer whose clusterWideIndexes hold cluster-wide
// keys only: a lookup of another key in them is an error.
type clusterWideIndexer struct {
	toolscache.Indexer
	indexes *clusterWideIndexSet
}

// errNamespacedLookup is the answer to a lookup of a cluster-wide index in one namespace.
var errNamespacedLookup = errors.New("this index holds no namespaced keys: look the value up across all namespaces")

// check refuses a lookup of value in a cluster-wide index other than across namespaces.
func (x *clusterWideIndexer) check(indexName, value string) error {
	if clusterWideIndexes[indexName] && !strings.HasPrefix(value, allNamespacesKey) {
		return fmt.Errorf("index %s, value %q: %w", indexName, value, errNamespacedLookup)
	}
	return nil
}

// ByIndex is the indexer's ByIndex, refusing namespaced lookups of cluster-wide indexes.
func (x *clusterWideIndexer) ByIndex(indexName, value string) ([]any, error) {
	if err := x.check(indexName, value); err != nil {
		return nil, err
	}
	return x.Indexer.ByIndex(indexName, value)
}

// IndexKeys is the indexer's IndexKeys, refusing namespaced lookups of cluster-wide indexes.
func (x *clusterWideIndexer) IndexKeys(indexName, value string) ([]string, error) {
	if err := x.check(indexName, value); err != nil {
		return nil, err
	}
	return x.Indexer.IndexKeys(indexName, value)
}

// GetIndexers returns the index functions as they were given, namespaced keys included:
// controller-runtime filters by a second field of a selector with them (a namespaced key
// it looks for is then found, where the stored function would silently miss it).
//
// The answer is a new map: the store's GetIndexers returns its own, which the store
// reads under its lock, so writing to it would race with every lookup and put the full
// functions, namespaced keys and all, into the store.
func (x *clusterWideIndexer) GetIndexers() toolscache.Indexers {
	stored := x.Indexer.GetIndexers()
	out := make(toolscache.Indexers, len(stored))
	x.indexes.mu.RLock()
	defer x.indexes.mu.RUnlock()
	for name, fn := range stored {
		if full, ok := x.indexes.full[name]; ok {
			fn = full
		}
		out[name] = fn
	}
	return out
}

// AddIndexers adds indexers, those of clusterWideIndexes with their cluster-wide keys only.
func (x *clusterWideIndexer) AddIndexers(indexers toolscache.Indexers) error {
	return x.Indexer.AddIndexers(x.indexes.lean(indexers))
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
