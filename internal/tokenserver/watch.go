package tokenserver

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
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

// trimCredential keeps only the fields the token server reads. The rest of the object
// metadata stays, deletionTimestamp above all: a terminating credential is refused
// (DESIGN §2 item 10).
func trimCredential(obj any) (any, error) {
	c, ok := obj.(*iamv1alpha1.APICredential)
	if !ok {
		return obj, nil
	}
	c.ManagedFields, c.Annotations, c.Labels = nil, nil, nil
	c.Spec.DisplayName, c.Spec.SecretTemplate, c.Spec.Rotation = "", iamv1alpha1.SecretTemplate{}, iamv1alpha1.Rotation{}
	c.Status.Conditions, c.Status.SecretRef, c.Status.IssuedAt = nil, nil, nil
	c.Status.LastUsedTime, c.Status.LastUsedAddress = nil, ""
	return c, nil
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
func Watch(ctx context.Context, c cache.Cache, store *Store, srv *Server) error {
	add := func(obj client.Object, h toolscache.ResourceEventHandlerFuncs) error {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", obj, err)
		}
		_, err = inf.AddEventHandler(h)
		return err
	}
	if err := add(&iamv1alpha1.APICredential{}, toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { store.SetCredential(o.(*iamv1alpha1.APICredential)) },
		UpdateFunc: func(_, o any) { store.SetCredential(o.(*iamv1alpha1.APICredential)) },
		DeleteFunc: func(o any) {
			if c, ok := deleted[*iamv1alpha1.APICredential](o); ok {
				store.DeleteCredential(client.ObjectKeyFromObject(c))
			}
		},
	}); err != nil {
		return err
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
		return err
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
	return add(keysObj, toolscache.ResourceEventHandlerFuncs{
		AddFunc:    setKeys,
		UpdateFunc: func(_, o any) { setKeys(o) },
	})
}

// deleted unwraps the object of a delete event, which may be a tombstone.
func deleted[T client.Object](o any) (T, bool) {
	if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	v, ok := o.(T)
	return v, ok
}
