package tokenserver

import (
	"context"
	"fmt"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/signingkey"
)

// CacheOptions limits the token server's informer cache to what it serves from: the
// identity, hashes, grants and state of APICredentials (in namespaces, or all when
// empty), the APIDefinitions, and either the one Secret of signing keys or, when
// verifyOnly, the ConfigMap of public keys beside it. It never sees credential Secrets.
func CacheOptions(namespaces []string, signingNamespace, signingSecret string, verifyOnly bool) cache.Options {
	opts := cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&iamv1alpha1.APICredential{}: {Transform: trimCredential},
			&iamv1alpha1.APIDefinition{}: {Transform: trimDefinition},
		},
	}
	if verifyOnly {
		opts.ByObject[&corev1.ConfigMap{}] = cache.ByObject{
			Namespaces: map[string]cache.Config{signingNamespace: {}},
			Field:      fields.OneTermEqualSelector("metadata.name", signingkey.PublicName(signingSecret)),
		}
	} else {
		opts.ByObject[&corev1.Secret{}] = cache.ByObject{
			Namespaces: map[string]cache.Config{signingNamespace: {}},
			Field:      fields.OneTermEqualSelector("metadata.name", signingSecret),
		}
	}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// credentialObject is all the APICredential informer holds of a credential: the
// metadata the informer itself reads (name and namespace for its key and namespace index,
// uid, resourceVersion, deletionTimestamp) and the store's view, converted once from the
// full object as it arrived (credentialFrom), which holds nothing of it. The rest of the
// object is garbage as soon as it is converted.
type credentialObject struct {
	credentialMeta
}

func (o *credentialObject) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject copies the metadata; the credential is immutable and shared.
func (o *credentialObject) DeepCopyObject() apiruntime.Object {
	c := *o
	c.deletionTimestamp = o.deletionTimestamp.DeepCopy()
	if o.ident != nil {
		id := *o.ident
		c.ident = &id
	}
	return &c
}

// credentialMeta is the metav1.Object of a credentialObject: the five fields it keeps,
// in 48 bytes, a sixth of a metav1.ObjectMeta. The others read as empty and are not kept
// when set. Name, namespace and uid are read from the credential, which has them,
// unless there is none (not issued) or one was set: then from ident.
type credentialMeta struct {
	// cred is the store's view; nil while the credential has no issued secret.
	cred              *Credential
	ident             *credentialIdent
	resourceVersion   string
	deletionTimestamp *metav1.Time
}

// credentialIdent is the name, namespace and uid of a credentialObject without a
// credential to read them from.
type credentialIdent struct {
	name, namespace string
	uid             types.UID
}

// own returns ident, first made from the credential's: a setter changes the object's
// copy, never the credential the store shares.
func (m *credentialMeta) own() *credentialIdent {
	if m.ident == nil {
		m.ident = &credentialIdent{}
		if c := m.cred; c != nil {
			m.ident.name, m.ident.namespace, m.ident.uid = c.Key.Name, c.Key.Namespace, c.UID
		}
	}
	return m.ident
}

var _ metav1.Object = &credentialMeta{}

func (m *credentialMeta) GetNamespace() string {
	switch {
	case m.ident != nil:
		return m.ident.namespace
	case m.cred != nil:
		return m.cred.Key.Namespace
	}
	return ""
}

func (m *credentialMeta) GetName() string {
	switch {
	case m.ident != nil:
		return m.ident.name
	case m.cred != nil:
		return m.cred.Key.Name
	}
	return ""
}

func (m *credentialMeta) GetUID() types.UID {
	switch {
	case m.ident != nil:
		return m.ident.uid
	case m.cred != nil:
		return m.cred.UID
	}
	return ""
}

func (m *credentialMeta) SetNamespace(v string)                         { m.own().namespace = v }
func (m *credentialMeta) SetName(v string)                              { m.own().name = v }
func (m *credentialMeta) SetUID(v types.UID)                            { m.own().uid = v }
func (m *credentialMeta) GetResourceVersion() string                    { return m.resourceVersion }
func (m *credentialMeta) SetResourceVersion(v string)                   { m.resourceVersion = v }
func (m *credentialMeta) GetDeletionTimestamp() *metav1.Time            { return m.deletionTimestamp }
func (m *credentialMeta) SetDeletionTimestamp(v *metav1.Time)           { m.deletionTimestamp = v }
func (m *credentialMeta) GetGenerateName() string                       { return "" }
func (m *credentialMeta) SetGenerateName(string)                        {}
func (m *credentialMeta) GetGeneration() int64                          { return 0 }
func (m *credentialMeta) SetGeneration(int64)                           {}
func (m *credentialMeta) GetSelfLink() string                           { return "" }
func (m *credentialMeta) SetSelfLink(string)                            {}
func (m *credentialMeta) GetCreationTimestamp() metav1.Time             { return metav1.Time{} }
func (m *credentialMeta) SetCreationTimestamp(metav1.Time)              {}
func (m *credentialMeta) GetDeletionGracePeriodSeconds() *int64         { return nil }
func (m *credentialMeta) SetDeletionGracePeriodSeconds(*int64)          {}
func (m *credentialMeta) GetLabels() map[string]string                  { return nil }
func (m *credentialMeta) SetLabels(map[string]string)                   {}
func (m *credentialMeta) GetAnnotations() map[string]string             { return nil }
func (m *credentialMeta) SetAnnotations(map[string]string)              {}
func (m *credentialMeta) GetFinalizers() []string                       { return nil }
func (m *credentialMeta) SetFinalizers([]string)                        {}
func (m *credentialMeta) GetOwnerReferences() []metav1.OwnerReference   { return nil }
func (m *credentialMeta) SetOwnerReferences([]metav1.OwnerReference)    {}
func (m *credentialMeta) GetManagedFields() []metav1.ManagedFieldsEntry { return nil }
func (m *credentialMeta) SetManagedFields([]metav1.ManagedFieldsEntry)  {}

// trimCredential turns an APICredential into its credentialObject. Everything the
// token server decides by (DESIGN §2 item 10: a deletionTimestamp refuses it) is in the
// credential, converted from the whole object; the object's metadata shares the
// credential's strings where it has one. A credentialObject passes unchanged.
func trimCredential(obj any) (any, error) {
	c, ok := obj.(*iamv1alpha1.APICredential)
	if !ok {
		return obj, nil
	}
	o := &credentialObject{credentialMeta{resourceVersion: c.ResourceVersion, deletionTimestamp: c.DeletionTimestamp}}
	if o.cred, _ = credentialFrom(c); o.cred == nil {
		o.ident = &credentialIdent{name: c.Name, namespace: intern(c.Namespace), uid: c.UID}
	}
	return o, nil
}

func trimDefinition(obj any) (any, error) {
	d, ok := obj.(*iamv1alpha1.APIDefinition)
	if !ok {
		return obj, nil
	}
	d.ManagedFields, d.Annotations, d.Labels = nil, nil, nil
	d.Spec.TokenURL, d.Spec.Endpoint = "", ""
	for i := range d.Spec.Permissions {
		d.Spec.Permissions[i].Description = ""
	}
	return d, nil
}

// Watch feeds the store and the server's signing keys from the cache's informers.
// synced reports whether the handlers have been given every object of the informers'
// initial lists: the cache's own sync does not wait for its handlers, so a server ready
// at cache sync alone would, for a moment after a start, refuse credentials it has not
// yet loaded.
func Watch(ctx context.Context, c cache.Cache, store *Store, srv *Server) (synced func() bool, err error) {
	var regs []toolscache.ResourceEventHandlerRegistration
	synced = func() bool {
		for _, r := range regs {
			if !r.HasSynced() {
				return false
			}
		}
		return true
	}
	add := func(obj client.Object, h toolscache.ResourceEventHandlerFuncs) error {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", obj, err)
		}
		reg, err := inf.AddEventHandler(h)
		if err == nil {
			regs = append(regs, reg)
		}
		return err
	}
	if err := add(&iamv1alpha1.APICredential{}, credentialHandlers(store)); err != nil {
		return nil, err
	}
	if err := add(&iamv1alpha1.APIDefinition{}, toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { store.SetAPI(o.(*iamv1alpha1.APIDefinition)) },
		UpdateFunc: func(_, o any) { store.SetAPI(o.(*iamv1alpha1.APIDefinition)) },
		DeleteFunc: func(o any) {
			if d, ok := deleted[*iamv1alpha1.APIDefinition](o); ok {
				store.DeleteAPI(d.Name)
			}
		},
	}); err != nil {
		return nil, err
	}
	setKeys := func(o any) {
		var err error
		switch obj := o.(type) {
		case *corev1.Secret:
			err = srv.SetKeysFromSecret(obj)
		case *corev1.ConfigMap:
			err = srv.SetVerifyKeysFromConfigMap(obj)
		}
		if err != nil {
			srv.opts.Log.Error(err, "ignoring unusable signing keys; keeping the previous ones")
		}
	}
	var keysObj client.Object = &corev1.Secret{}
	if srv.opts.VerifyOnly {
		keysObj = &corev1.ConfigMap{}
	}
	if err := add(keysObj, toolscache.ResourceEventHandlerFuncs{
		AddFunc:    setKeys,
		UpdateFunc: func(_, o any) { setKeys(o) },
	}); err != nil {
		return nil, err
	}
	return synced, nil
}

// intern returns the canonical copy of s (the same bytes, shared).
func intern(s string) string { return unique.Make(s).Value() }

// credentialHandlers feed the store from the APICredential informer, whose objects are
// credentialObjects (trimCredential).
func credentialHandlers(store *Store) toolscache.ResourceEventHandlerFuncs {
	set := func(o any) {
		if c, ok := o.(*credentialObject); ok {
			store.set(types.NamespacedName{Namespace: c.GetNamespace(), Name: c.GetName()}, c.cred)
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, o any) { set(o) },
		DeleteFunc: func(o any) {
			if c, ok := deleted[*credentialObject](o); ok {
				store.DeleteCredential(types.NamespacedName{Namespace: c.GetNamespace(), Name: c.GetName()})
			}
		},
	}
}

// deleted unwraps the object of a delete event, which may be a tombstone.
func deleted[T client.Object](o any) (T, bool) {
	if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	v, ok := o.(T)
	return v, ok
}
