package tokenserver_test

import (
	"net/url"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// TestFinding4_TerminatingCredentialIsRefusedEverywhere: a credential with a
// deletionTimestamp (held by a finalizer, foreground deletion, a GitOps prune) is refused
// by every endpoint at once, like a deleted one (DESIGN §2 item 10), including the tokens
// it was issued before the deletion began.
func TestFinding4_TerminatingCredentialIsRefusedEverywhere(t *testing.T) {
	f := newFixture(t)
	f.catalogueKubernetes()
	c := f.issue("pruned", grants("platform-api:user", "kubernetes:user"))
	rs := f.issue("resource-server", grants("profile-api:read-only"))
	before := f.token(c) // issued before the deletionTimestamp
	authz := func(auth string) int {
		req := conventions[0].build(f.ts.URL, "platform-api", "GET", "/")
		req.Header.Set("Authorization", auth)
		resp, _ := f.do(req)
		return resp.StatusCode
	}
	if code := authz(bearer(before)); code != 200 {
		t.Fatalf("before the deletion: /authz with the token = %d, want 200", code)
	}
	if st := f.review(before, kubernetesAudience); !st.Authenticated {
		t.Fatalf("before the deletion: TokenReview %+v, want authenticated", st)
	}

	f.update(c, func(o *iamv1alpha1.APICredential) {
		now := metav1.NewTime(f.clock.Now())
		o.DeletionTimestamp, o.Finalizers = &now, []string{"example.com/hold"}
	})

	cc := url.Values{"grant_type": {"client_credentials"}}
	if resp, body := f.post("/oauth2/token", cc, c.id, c.secret); resp.StatusCode != 401 || body["error"] != "invalid_client" {
		t.Errorf("token request while terminating: %d %v, want 401 invalid_client", resp.StatusCode, body["error"])
	}
	if code := authz(basic(c.id, c.secret)); code != 401 {
		t.Errorf("/authz with the client credentials while terminating = %d, want 401", code)
	}
	if code := authz(bearer(before)); code != 401 {
		t.Errorf("/authz with a token issued before the deletionTimestamp = %d, want 401", code)
	}
	if _, body := f.post("/oauth2/introspect", url.Values{"token": {before}}, rs.id, rs.secret); !equalJSON(body, map[string]any{"active": false}) {
		t.Errorf("introspection of a token issued before the deletionTimestamp: active=%v, want only {active:false}", body["active"])
	}
	if st := f.review(before, kubernetesAudience); st.Authenticated {
		t.Errorf("TokenReview of a token issued before the deletionTimestamp: %+v, want unauthenticated", st)
	}

	// While it terminates it still holds its client ID: a second claimant is refused too.
	copyCat := c.obj.DeepCopy()
	copyCat.Name, copyCat.DeletionTimestamp, copyCat.Finalizers = "copy", nil, nil
	f.store.SetCredential(copyCat)
	if resp, _ := f.post("/oauth2/token", cc, c.id, c.secret); resp.StatusCode != 401 {
		t.Errorf("a second claimant of a terminating credential's client ID got %d, want 401", resp.StatusCode)
	}
}
