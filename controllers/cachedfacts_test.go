package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/binding"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// TestCachedFactsDecideNothingOnlyWhenLiveWould: the cache's copy of a credential Secret
// (trimCredentialSecret) holds a hash where the Secret holds the client secret. Whatever
// a tenant who can write the Secret changes in it, the copy may say "nothing to do" only
// when the Secret itself would; the Secret as the operator wrote it says nothing to do
// from both.
func TestCachedFactsDecideNothingOnlyWhenLiveWould(t *testing.T) {
	ring, err := binding.NewRing(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	issuedAt := now.Add(-time.Hour)
	clientID, plain := mustClientID(t), mustSecret(t)
	cred := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "billing", UID: "uid-1"}}
	cred.Spec.Rotation.KeyVersion = 1
	cred.Status = iamv1alpha1.APICredentialStatus{ClientID: clientID, SecretHash: credential.Hash(plain), KeyVersion: 1,
		IssuedAt: &metav1.Time{Time: issuedAt}}
	good := func() *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "billing", UID: "s1", ResourceVersion: "5",
				Labels: map[string]string{iamv1alpha1.CredentialLabel: "billing"},
				Annotations: map[string]string{
					iamv1alpha1.KeyVersionAnnotation: "1",
					iamv1alpha1.IssuedAtAnnotation:   issuedAt.Format(time.RFC3339),
					iamv1alpha1.BindingAnnotation:    ring.Sign(bindingSubject(cred, clientID, credential.Hash(plain), 1, issuedAt)),
				},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: iamv1alpha1.GroupVersion.String(), Kind: "APICredential",
					Name: "billing", UID: "uid-1", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			},
			Data: map[string][]byte{
				iamv1alpha1.DefaultClientIDKey: []byte(clientID), iamv1alpha1.DefaultClientSecretKey: []byte(plain),
				iamv1alpha1.DefaultTokenURLKey: []byte("https://keysmith.example.com/oauth2/token"),
			},
		}
	}
	goodEncoding := encodeCachedFacts(good())
	tests := []struct {
		name   string
		mutate func(*corev1.Secret)
	}{
		{"as the operator wrote it", func(*corev1.Secret) {}},
		{"another well-formed secret", func(s *corev1.Secret) { s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte(mustSecret(t)) }},
		{"a malformed secret", func(s *corev1.Secret) { s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte("hunter2") }},
		{"the secret removed", func(s *corev1.Secret) { delete(s.Data, iamv1alpha1.DefaultClientSecretKey) }},
		{"the secret's hash in its place", func(s *corev1.Secret) { s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte(credential.Hash(plain)) }},
		{"the secret under another key", func(s *corev1.Secret) {
			s.Data["other"] = s.Data[iamv1alpha1.DefaultClientSecretKey]
			delete(s.Data, iamv1alpha1.DefaultClientSecretKey)
		}},
		{"the secret with a trailing newline", func(s *corev1.Secret) { s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte(plain + "\n") }},
		{"another client ID", func(s *corev1.Secret) { s.Data[iamv1alpha1.DefaultClientIDKey] = []byte(mustClientID(t)) }},
		{"the client ID removed", func(s *corev1.Secret) { delete(s.Data, iamv1alpha1.DefaultClientIDKey) }},
		{"the client ID and the secret swapped", func(s *corev1.Secret) {
			s.Data[iamv1alpha1.DefaultClientIDKey], s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte(plain), []byte(clientID)
		}},
		{"no binding", func(s *corev1.Secret) { delete(s.Annotations, iamv1alpha1.BindingAnnotation) }},
		{"a binding for another secret", func(s *corev1.Secret) {
			s.Annotations[iamv1alpha1.BindingAnnotation] = ring.Sign(bindingSubject(cred, clientID, credential.Hash(mustSecret(t)), 1, issuedAt))
		}},
		{"key version raised", func(s *corev1.Secret) { s.Annotations[iamv1alpha1.KeyVersionAnnotation] = "2" }},
		{"issued-at moved", func(s *corev1.Secret) {
			s.Annotations[iamv1alpha1.IssuedAtAnnotation] = issuedAt.Add(time.Hour).Format(time.RFC3339)
		}},
		{"no owner reference", func(s *corev1.Secret) { s.OwnerReferences = nil }},
		{"owned by another UID", func(s *corev1.Secret) { s.OwnerReferences[0].UID = "uid-2" }},
		{"not the controller", func(s *corev1.Secret) { s.OwnerReferences[0].Controller = ptr.To(false) }},
		{"a generateName of the cached form over a malformed secret", func(s *corev1.Secret) {
			s.GenerateName = goodEncoding
			s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte("hunter2")
		}},
		{"an annotation named like keysmith's over another secret", func(s *corev1.Secret) {
			s.Annotations[iamv1alpha1.GroupVersion.Group+"/cached-facts"] = goodEncoding
			s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte(mustSecret(t))
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := good()
			tt.mutate(live)
			out, err := trimCredentialSecret(live.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			cached := out.(*corev1.Secret)
			fromLive := decideSecret(cred, readSecretFacts(cred, live, ring), now)
			fromCache := decideSecret(cred, cachedSecretFacts(cred, cached, ring), now)
			if fromCache == actionNone && fromLive != actionNone {
				t.Errorf("the cache says nothing to do, the Secret says %v", fromLive)
			}
			if first := i == 0; first != (fromLive == actionNone) || first != (fromCache == actionNone) {
				t.Errorf("decided %v from the Secret, %v from the cache", fromLive, fromCache)
			}
		})
	}

	t.Run("trimming the cache's copy again keeps it (client-go transforms what a resync replays)", func(t *testing.T) {
		once, _ := trimCredentialSecret(good())
		twice, _ := trimCredentialSecret(once.(*corev1.Secret).DeepCopy())
		if got := decideSecret(cred, cachedSecretFacts(cred, twice.(*corev1.Secret), ring), now); got != actionNone {
			t.Errorf("decided %v from a copy trimmed twice, want nothing to do", got)
		}
	})
	t.Run("a copy not in the cached form never decides nothing", func(t *testing.T) {
		if got := decideSecret(cred, cachedSecretFacts(cred, good(), ring), now); got == actionNone {
			t.Error("an untrimmed Secret decided nothing from the cache's reading")
		}
	})
	t.Run("every truncation of the cached form is refused", func(t *testing.T) {
		keys := cred.Spec.SecretKeyNames()
		if _, ok := decodeCachedFacts(goodEncoding, keys.ClientID, keys.ClientSecret); !ok {
			t.Fatal("the whole encoding refused")
		}
		for n := len(cachedFactsMarker); n < len(goodEncoding); n++ {
			f, ok := decodeCachedFacts(goodEncoding[:n], keys.ClientID, keys.ClientSecret)
			if ok && f.clientID == clientID && f.secretHash == credential.Hash(plain) && f.bindingValue != "" && f.issuedAt != "" && f.keyVersion != "" {
				t.Errorf("a truncation to %d of %d bytes decoded to the whole facts", n, len(goodEncoding))
			}
		}
		if _, ok := decodeCachedFacts(goodEncoding[1:], keys.ClientID, keys.ClientSecret); ok {
			t.Error("a string without the marker decoded")
		}
	})
}
