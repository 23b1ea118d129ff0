package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/binding"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// FuzzCachedFacts: whatever a tenant who can write a credential Secret puts in its data
// keys, data and annotations, the cache's copy reads back exactly the strings the Secret
// holds (packed or not): the client ID and the hash of the client secret under the keys
// asked for (when they are in keysmith's formats; nothing otherwise) and the three
// annotations. Packing may never turn one value into another.
func FuzzCachedFacts(f *testing.F) {
	ring, err := binding.NewRing(time.Now())
	if err != nil {
		f.Fatal(err)
	}
	clientID, secret := mustClientID(f), mustSecret(f)
	issuedAt := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	cred := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "billing"}}
	signed := ring.Sign(bindingSubject(cred, clientID, credential.Hash(secret), 1, issuedAt))
	d, s := iamv1alpha1.DefaultClientIDKey, iamv1alpha1.DefaultClientSecretKey
	for _, seed := range [][7]string{
		{d, clientID, s, secret, "1", issuedAt.Format(time.RFC3339), signed},
		{"MY_ID", clientID, "MY_SECRET", secret, "1", issuedAt.Format(time.RFC3339), signed},
		{d, clientID, s, "hunter2", "1", "2026-12-02T05:00:00+00:00", signed[:len(signed)-1] + "B"},
		{d, "ksc_notaclientid", s, secret + "\n", "01", "1969-12-31T23:59:59Z", "v1." + signed[3:11] + "." + signed[12:] + "="},
		{s, clientID, d, secret, "", "2026-12-02T05:00:00.5Z", "V1" + signed[2:]},
		{d, clientID, d, secret, "x", "0000-01-01T00:00:00Z", ""},
		{d, clientID, s, secret, "1", "9999-12-31T23:59:59Z", "v1.ABCDEF01." + signed[12:]},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3], seed[4], seed[5], seed[6])
	}
	f.Fuzz(func(t *testing.T, idKey, idValue, secretKey, secretValue, keyVersion, issued, bindingValue string) {
		in := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "billing", ResourceVersion: "5",
				Annotations: map[string]string{
					iamv1alpha1.KeyVersionAnnotation: keyVersion, iamv1alpha1.IssuedAtAnnotation: issued,
					iamv1alpha1.BindingAnnotation: bindingValue,
				}},
			Data: map[string][]byte{idKey: []byte(idValue), secretKey: []byte(secretValue)},
		}
		out, err := trimCredentialSecret(in.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		got, ok := decodeCachedFacts(out.(*corev1.Secret).GenerateName, idKey, secretKey)
		if !ok {
			t.Fatal("the cache's own encoding did not decode")
		}
		want := cachedFacts{keyVersion: keyVersion, issuedAt: issued, bindingValue: bindingValue}
		if v := string(in.Data[idKey]); credential.ValidClientID(v) {
			want.clientID = v
		}
		if v := string(in.Data[secretKey]); credential.ParseSecret(v) == nil {
			want.secretHash = credential.Hash(v)
		}
		if got != want {
			t.Errorf("the cache read %+v, the Secret holds %+v", got, want)
		}
	})
}

// TestCachedFactsOfAnIssuedSecretFit: the cache's string for a Secret as the operator
// writes it (default keys, a binding Sign wrote, an issue time in whole seconds) is
// packed: it fits the 128-byte size class instead of the 224 its strings took.
func TestCachedFactsOfAnIssuedSecretFit(t *testing.T) {
	_, secret := issuedPair(t)
	facts := encodeCachedFacts(secret)
	if len(facts) > 128 {
		t.Errorf("the cached facts of an issued Secret take %d bytes, want at most 128", len(facts))
	}
}
