package tokenserver

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// A credential without a secret (spec.issueSecret: false) reaches the store through the
// token server's informer path (transform, handlers) with its workload ServiceAccounts and
// no secret version, so that no client secret, "" included, authenticates it; one with
// neither a secret hash nor workloadIdentity is not served at all.
func TestSecretlessCredentialThroughInformer(t *testing.T) {
	id, err := credential.NewClientID()
	if err != nil {
		t.Fatal(err)
	}
	other, err := credential.NewClientID()
	if err != nil {
		t.Fatal(err)
	}
	secretless := &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "wi", UID: "uid-wi", ResourceVersion: "1"},
		Spec: iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "profile-api", Permission: "read-only"}},
			IssueSecret: new(bool), WorkloadIdentity: &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"worker"}}},
		Status: iamv1alpha1.APICredentialStatus{ClientID: id},
	}
	notIssued := &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "plain", UID: "uid-plain", ResourceVersion: "1"},
		Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "profile-api", Permission: "read-only"}}},
		Status:     iamv1alpha1.APICredentialStatus{ClientID: other},
	}
	store := NewStore()
	ci := newCredentialInformer(t, store, func() []*iamv1alpha1.APICredential { return []*iamv1alpha1.APICredential{secretless, notIssued} })
	ci.start(t)

	c, ok := store.Credential(id)
	if !ok {
		t.Fatal("the secretless credential is not in the store")
	}
	if !slices.Equal(c.serviceAccounts, []string{"worker"}) || len(c.secrets) != 0 {
		t.Errorf("serviceAccounts %v, %d secret versions; want [worker], 0", c.serviceAccounts, len(c.secrets))
	}
	for _, tc := range []struct {
		version, sa string
		want        bool
	}{
		{workloadVersion, "worker", true},
		{workloadVersion, "", true}, // an older token server's token, naming no ServiceAccount
		{workloadVersion, "other", false},
		{workloadVersion, "worker ", false},
		{workloadVersion, "team-a/worker", false},
		{"", "", false},
		{"", "worker", false},
		{"worker", "", false},
		{"wi:worker", "", false},
	} {
		if got := c.acceptsToken(tc.version, tc.sa, time.Now()); got != tc.want {
			t.Errorf("acceptsToken(%q, %q) = %v, want %v", tc.version, tc.sa, got, tc.want)
		}
	}
	srv := New(store, Options{Issuer: "https://keysmith.example.com"})
	wellFormed, err := credential.NewSecret() // passes the format check: the lookup decides
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"", wellFormed} {
		if got, _ := srv.checkSecret(clientAuth{id: id, secret: secret}, time.Now()); got != nil {
			t.Errorf("a %d-byte secret authenticated a credential without one", len(secret))
		}
	}
	if _, ok := store.Credential(other); ok {
		t.Error("a credential with a client ID, no secret hash and no workloadIdentity is served")
	}
}
