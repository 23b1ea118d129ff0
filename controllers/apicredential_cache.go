package controllers

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
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
// (trimCredentialSecret). What the cache does not hold is read from the API server before
// anything is written: no decision to mint, rotate, bind or adopt rests on the cache.
func CacheOptions() cache.Options {
	managed, err := labels.NewRequirement(iamv1alpha1.CredentialLabel, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant requirement
	}
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: labels.NewSelector().Add(*managed), Transform: trimCredentialSecret},
		},
	}
}

// trimCredentialSecret keeps of a credential Secret what the write-once decision reads:
// its identity, owner references, keysmith's labels and annotations (the key version,
// the issue time and the binding), and the data entries that hold a client ID or a
// keysmith client secret (recognised by their format, whatever the credential names
// their keys). Everything else goes: managedFields, other annotations (such as kubectl's
// last-applied-configuration, which may repeat the data), other labels and data.
func trimCredentialSecret(in any) (any, error) {
	s, ok := in.(*corev1.Secret)
	if !ok {
		return in, nil
	}
	s.ManagedFields = nil
	s.Annotations = keepKeysmith(s.Annotations)
	s.Labels = keepKeysmith(s.Labels)
	s.StringData = nil
	for k, v := range s.Data {
		if value := string(v); !credential.ValidClientID(value) && credential.ParseSecret(value) != nil {
			delete(s.Data, k)
		}
	}
	return s, nil
}

// keepKeysmith drops the entries whose key is not keysmith's.
func keepKeysmith(m map[string]string) map[string]string {
	for k := range m {
		if !strings.HasPrefix(k, keysmithPrefix) {
			delete(m, k)
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}
