package tokenserver_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// kubernetesAudience is the audience of the fixture's API server: its service-account
// issuer, as kube-apiserver defaults --api-audiences to.
const kubernetesAudience = "https://kubernetes.default.svc.cluster.local"

// review posts a TokenReview of token for audiences (none: the review names none) and
// returns its status.
func (f *fixture) review(token string, audiences ...string) authnv1.TokenReviewStatus {
	f.t.Helper()
	body, _ := json.Marshal(authnv1.TokenReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview"},
		Spec:     authnv1.TokenReviewSpec{Token: token, Audiences: audiences},
	})
	resp, err := http.Post(f.ts.URL+"/apis/authentication.k8s.io/v1/tokenreviews", "application/json", bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		f.t.Fatalf("TokenReview answered %d", resp.StatusCode)
	}
	var out authnv1.TokenReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		f.t.Fatal(err)
	}
	if !out.Status.Authenticated && (out.Status.User.Username != "" || len(out.Status.Audiences) > 0) {
		f.t.Errorf("an unauthenticated review names a user or audiences: %+v", out.Status)
	}
	return out.Status
}

// catalogueKubernetes catalogues the API server as the APIDefinition "kubernetes" whose
// audience is kubernetesAudience, as make dev does at start-up.
func (f *fixture) catalogueKubernetes() {
	f.store.SetAPI(&iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"},
		Spec: iamv1alpha1.APIDefinitionSpec{DisplayName: "Kubernetes API", ScopeLevel: iamv1alpha1.ScopeLevelAccount,
			Audience:    kubernetesAudience,
			Permissions: []iamv1alpha1.Permission{{Name: "user", Methods: []string{"*"}}}}})
}

// TestFinding7_TokenReviewAuthenticatesOnlyForTheTokensAudiences: tokens are bound to
// the audiences of their APIs. A token for a billing API is no login to a cluster; a
// token that carries the catalogued Kubernetes API is, with status.audiences set and only
// the API groups of the APIs whose audience matched (DESIGN §3).
func TestFinding7_TokenReviewAuthenticatesOnlyForTheTokensAudiences(t *testing.T) {
	f := newFixture(t)
	f.catalogueKubernetes()
	billing := f.issue("billing", grants("platform-api:user"))
	ops := f.issue("ops", grants("platform-api:user", "kubernetes:user"))
	billingToken, opsToken := f.token(billing), f.token(ops)
	narrowed := f.token(ops, "platform-api")

	if st := f.review(billingToken, kubernetesAudience); st.Authenticated {
		t.Errorf("a billing-API token at the API server: %+v, want unauthenticated", st)
	}
	if st := f.review(narrowed, kubernetesAudience); st.Authenticated {
		t.Errorf("a token narrowed to the billing API at the API server: %+v, want unauthenticated", st)
	}
	st := f.review(opsToken, "https://other.example", kubernetesAudience)
	if !st.Authenticated || st.User.Username != "keysmith:credential:team-a:ops" {
		t.Fatalf("a token carrying the Kubernetes API: %+v, want authenticated as the credential", st)
	}
	if !slices.Equal(st.Audiences, []string{kubernetesAudience}) {
		t.Errorf("status.audiences = %q, want the intersection [%s]", st.Audiences, kubernetesAudience)
	}
	want := []string{"keysmith:credentials", "keysmith:account:acme", "keysmith:api:kubernetes:user"}
	if !slices.Equal(st.User.Groups, want) {
		t.Errorf("groups = %q, want %q (no group for an API whose audience was not asked for)", st.User.Groups, want)
	}
	if st := f.review(opsToken, "platform-api"); !st.Authenticated || !slices.Equal(st.Audiences, []string{"platform-api"}) ||
		!slices.Contains(st.User.Groups, "keysmith:api:platform-api:user") || slices.Contains(st.User.Groups, "keysmith:api:kubernetes:user") {
		t.Errorf("for the billing API's audience: %+v, want only its group", st)
	}
	if st := f.review(opsToken); st.Authenticated {
		t.Errorf("a review without audiences and no --kubernetes-audiences: %+v, want unauthenticated", st)
	}

	// The API's audience changes: tokens minted for the old one log in nowhere.
	f.store.SetAPI(&iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"},
		Spec: iamv1alpha1.APIDefinitionSpec{DisplayName: "Kubernetes API", ScopeLevel: iamv1alpha1.ScopeLevelAccount,
			Audience: "https://new.example", Permissions: []iamv1alpha1.Permission{{Name: "user", Methods: []string{"*"}}}}})
	for _, aud := range []string{kubernetesAudience, "https://new.example"} {
		if st := f.review(opsToken, aud); st.Authenticated {
			t.Errorf("a token minted before the audience changed, reviewed for %q: %+v, want unauthenticated", aud, st)
		}
	}
	if st := f.review(f.token(ops), "https://new.example"); !st.Authenticated {
		t.Errorf("a token minted after the audience changed: %+v, want authenticated", st)
	}
}

// TestFinding7_KubernetesAudiencesFlag: an API server that sends no audiences gets the
// token server's --kubernetes-audiences.
func TestFinding7_KubernetesAudiencesFlag(t *testing.T) {
	f := newFixture(t, func(o *tokenserver.Options) { o.KubernetesAudiences = []string{kubernetesAudience} })
	f.catalogueKubernetes()
	billing := f.issue("billing", grants("platform-api:user"))
	ops := f.issue("ops", grants("kubernetes:user"))
	if st := f.review(f.token(billing)); st.Authenticated {
		t.Errorf("a billing-API token: %+v, want unauthenticated", st)
	}
	if st := f.review(f.token(ops)); !st.Authenticated || !slices.Equal(st.Audiences, []string{kubernetesAudience}) {
		t.Errorf("a Kubernetes-API token: %+v, want authenticated for %s", st, kubernetesAudience)
	}
}

// TestFinding7_TokensCarryTheirAPIsAudiences: aud lists spec.audience of each API the
// token carries (the API's name without one), each once, as an independent JWT library reads it.
func TestFinding7_TokensCarryTheirAPIsAudiences(t *testing.T) {
	f := newFixture(t)
	f.catalogueKubernetes()
	for _, name := range []string{"reports-api", "exports-api"} {
		f.store.SetAPI(&iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: iamv1alpha1.APIDefinitionSpec{DisplayName: name, ScopeLevel: iamv1alpha1.ScopeLevelAccount,
				Audience: "https://apis.example.com", Permissions: []iamv1alpha1.Permission{{Name: "read-only", Methods: []string{"GET"}}}}})
	}
	c := f.issue("ops", grants("platform-api:user", "kubernetes:user", "reports-api:read-only", "exports-api:read-only"))
	std, ks, _ := f.verifyWithGoJose(f.token(c))
	if want := []string{"platform-api", kubernetesAudience, "https://apis.example.com"}; !slices.Equal(std.Audience, want) {
		t.Errorf("aud = %q, want %q", std.Audience, want)
	}
	if len(ks.APIs) != 4 {
		t.Errorf("ks_apis = %v, want the four APIs", ks.APIs)
	}
	std, _, _ = f.verifyWithGoJose(f.token(c, "kubernetes"))
	if !slices.Equal(std.Audience, []string{kubernetesAudience}) {
		t.Errorf("aud of a token narrowed to the Kubernetes API = %q", std.Audience)
	}
}

// TestFinding7_AuthzChecksTheTokensAudience: /authz/{api} accepts a bearer token only
// when its aud holds the API's audience.
func TestFinding7_AuthzChecksTheTokensAudience(t *testing.T) {
	f := newFixture(t)
	c := f.issue("billing", grants("platform-api:user"))
	old := f.token(c)
	authz := func(token string) (int, map[string]any) {
		req := conventions[0].build(f.ts.URL, "platform-api", "GET", "/")
		req.Header.Set("Authorization", bearer(token))
		resp, body := f.do(req)
		return resp.StatusCode, body
	}
	if code, body := authz(old); code != 200 {
		t.Fatalf("token for platform-api: %d %v", code, body)
	}
	def := catalog()[1]
	def.Spec.Audience = "https://billing.example.com"
	f.store.SetAPI(def)
	if code, body := authz(old); code != 401 || body["error"] != "invalid_token" {
		t.Errorf("a token whose aud lacks the API's audience: %d %v, want 401 invalid_token", code, body)
	}
	if code, body := authz(f.token(c)); code != 200 {
		t.Errorf("a token minted for the new audience: %d %v, want 200", code, body)
	}
}

// TestTokenReviewNegativeCache: a token that fails verification at TokenReview is
// remembered by its digest, so a replay costs no signature check; a refusal that depends
// on the credential's state is not remembered (reactivation works at once).
func TestTokenReviewNegativeCache(t *testing.T) {
	f := newFixture(t)
	f.catalogueKubernetes()
	c := f.issue("ops", grants("kubernetes:user"))
	good := f.token(c)
	parts := strings.Split(good, ".")
	p := []byte(parts[1])
	p[len(p)/2] = map[bool]byte{true: 'B', false: 'A'}[p[len(p)/2] == 'A']
	forged := parts[0] + "." + string(p) + "." + parts[2]

	before := f.verifications()
	for range 5 {
		if st := f.review(forged, kubernetesAudience); st.Authenticated {
			t.Fatalf("a forged token authenticated: %+v", st)
		}
	}
	if n := f.verifications() - before; n != 1 {
		t.Errorf("five reviews of one forged token cost %d signature checks, want 1", n)
	}

	f.update(c, func(o *iamv1alpha1.APICredential) { o.Spec.Active = ptrTo(false) })
	if st := f.review(good, kubernetesAudience); st.Authenticated {
		t.Errorf("a token of an inactive credential authenticated: %+v", st)
	}
	f.update(c, func(o *iamv1alpha1.APICredential) { o.Spec.Active = ptrTo(true) })
	if st := f.review(good, kubernetesAudience); !st.Authenticated {
		t.Errorf("after reactivation: %+v, want authenticated at once", st)
	}
}

// verifications reads how many bearer tokens had their signature checked from /metrics.
func (f *fixture) verifications() int {
	f.t.Helper()
	const name = "keysmith_tokenserver_token_cache_misses_total"
	lines := f.metricSamples(name)
	if len(lines) != 1 {
		f.t.Fatalf("/metrics has %d samples of %s, want 1", len(lines), name)
	}
	n, err := strconv.Atoi(strings.TrimPrefix(lines[0], name+" "))
	if err != nil {
		f.t.Fatalf("%s: %v", lines[0], err)
	}
	return n
}
