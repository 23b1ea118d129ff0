package tokenserver_test

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// revoke posts an RFC 7009 revocation of tok with Basic client authentication (extra:
// more form parameters, name then value) and returns the response and its JSON body.
func (f *fixture) revoke(c *client, tok string, extra ...string) (*http.Response, map[string]any) {
	f.t.Helper()
	form := url.Values{"token": {tok}}
	for i := 0; i+1 < len(extra); i += 2 {
		form.Set(extra[i], extra[i+1])
	}
	return f.post("/oauth2/revoke", form, c.id, c.secret)
}

// jtiOf returns the jti and exp of a token, verified with go-jose against the served JWKS.
func (f *fixture) jtiOf(t *testing.T, tok string) (string, int64) {
	jwks, _ := f.servedJWKS()
	claims := joseVerify(t, jwks, tok)
	jti, _ := claims["jti"].(string)
	exp, _ := claims["exp"].(float64)
	if jti == "" || exp == 0 {
		t.Fatalf("token without jti or exp: %v", claims)
	}
	return jti, int64(exp)
}

// TestRevoke: a client revokes its own token (Basic or client_secret_post); the token is
// then refused at /authz, inactive at introspection and unauthenticated at TokenReview,
// while its other tokens keep working.
func TestRevoke(t *testing.T) {
	f := newFixture(t)
	f.catalogueKubernetes()
	c := f.issue("api", grants("platform-api:user", "kubernetes:user"))
	rs := f.issue("resource-server", grants("profile-api:read-only"))
	tok, other := f.token(c), f.token(c)
	if got := f.authzStatus(tok); got != 200 {
		t.Fatalf("/authz before revocation: %d", got)
	}
	if st := f.review(tok, kubernetesAudience); !st.Authenticated {
		t.Fatalf("TokenReview before revocation: %+v", st)
	}

	resp, body := f.revoke(c, tok, "token_type_hint", "access_token")
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("revocation: %d %v %v", resp.StatusCode, body, resp.Header)
	}
	if got := f.authzStatus(tok); got != 401 {
		t.Errorf("/authz after revocation: %d, want 401", got)
	}
	if _, body := f.post("/oauth2/introspect", url.Values{"token": {tok}}, rs.id, rs.secret); !equalJSON(body, map[string]any{"active": false}) {
		t.Errorf("introspection after revocation: %v", body)
	}
	if st := f.review(tok, kubernetesAudience); st.Authenticated {
		t.Errorf("TokenReview after revocation authenticates: %+v", st)
	}
	if got := f.authzStatus(other); got != 200 {
		t.Errorf("another token of the client after revocation: %d, want 200", got)
	}
	// Revoking again is a no-op; client_secret_post authenticates as well.
	if resp, _ := f.post("/oauth2/revoke", url.Values{"token": {tok}, "client_id": {c.id}, "client_secret": {c.secret}}, "", ""); resp.StatusCode != 200 {
		t.Errorf("second revocation (client_secret_post): %d", resp.StatusCode)
	}
	if resp, _ := f.post("/oauth2/revoke", url.Values{"token": {other}, "client_id": {c.id}, "client_secret": {c.secret}}, "", ""); resp.StatusCode != 200 {
		t.Errorf("revocation with client_secret_post: %d", resp.StatusCode)
	}
	if got := f.authzStatus(other); got != 401 {
		t.Errorf("/authz after client_secret_post revocation: %d, want 401", got)
	}
}

// TestRevokeIsNoOracle: RFC 7009 §2.2: a token of another client, an invalid, expired or
// unknown token answers 200 and revokes nothing; every failed client authentication
// answers the token endpoint's invalid_client.
func TestRevokeIsNoOracle(t *testing.T) {
	f := newFixture(t)
	a := f.issue("a", grants("platform-api:user"))
	b := f.issue("b", grants("platform-api:user"))
	tokA := f.token(a)

	if resp, body := f.revoke(b, tokA); resp.StatusCode != 200 || len(body) != 0 {
		t.Errorf("revoking another client's token: %d %v", resp.StatusCode, body)
	}
	if got := f.authzStatus(tokA); got != 200 {
		t.Errorf("another client revoked a's token: /authz %d", got)
	}
	for name, tok := range map[string]string{"garbage": "not-a-token", "tampered": tokA[:len(tokA)-2] + "AA"} {
		if resp, body := f.revoke(a, tok); resp.StatusCode != 200 || len(body) != 0 {
			t.Errorf("%s token: %d %v", name, resp.StatusCode, body)
		}
	}
	f.clock.Step(11 * time.Minute) // past exp
	if resp, body := f.revoke(a, tokA); resp.StatusCode != 200 || len(body) != 0 {
		t.Errorf("expired token: %d %v", resp.StatusCode, body)
	}

	_, want := f.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, a.id, "ks_wrong")
	for name, tc := range map[string]struct {
		form     url.Values
		id, sec  string
		wantCode int
	}{
		"wrong secret":   {url.Values{"token": {tokA}}, a.id, b.secret, 401},
		"unknown client": {url.Values{"token": {tokA}}, "ksc_unknown", a.secret, 401},
		"no client auth": {url.Values{"token": {tokA}}, "", "", 401},
		"post, wrong":    {url.Values{"token": {tokA}, "client_id": {a.id}, "client_secret": {b.secret}}, "", "", 401},
	} {
		resp, body := f.post("/oauth2/revoke", tc.form, tc.id, tc.sec)
		if resp.StatusCode != tc.wantCode || body["error"] != "invalid_client" || (tc.id != "" && body["error_description"] != want["error_description"]) {
			t.Errorf("%s: %d %v (token endpoint: %v)", name, resp.StatusCode, body, want)
		}
	}
	if resp, body := f.post("/oauth2/revoke", url.Values{}, a.id, a.secret); resp.StatusCode != 400 || body["error"] != "invalid_request" {
		t.Errorf("no token parameter: %d %v", resp.StatusCode, body)
	}
}

// TestRevokeFailuresAreRateLimited: failed client authentications at the revocation
// endpoint spend the same budget as at the token endpoint: past it, 429.
func TestRevokeFailuresAreRateLimited(t *testing.T) {
	f := newFixture(t)
	a := f.issue("a", grants("platform-api:user"))
	b := f.issue("b", grants("platform-api:user"))
	last := 0
	for range 20 {
		resp, _ := f.post("/oauth2/revoke", url.Values{"token": {"x"}}, a.id, b.secret)
		last = resp.StatusCode
	}
	if last != 429 {
		t.Fatalf("20 failed authentications at /oauth2/revoke: last %d, want 429", last)
	}
	if resp, _ := f.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, a.id, a.secret); resp.StatusCode != 429 {
		t.Errorf("the token endpoint after failures at revoke: %d, want 429 (one budget)", resp.StatusCode)
	}
}

// TestRevokeBound: a credential holds at most MaxRevokedTokens live revocations; the next
// one is refused with 503 and Retry-After (nothing is dropped: every revoked token stays
// refused), and accepted once the earlier ones have expired.
func TestRevokeBound(t *testing.T) {
	f := newFixture(t)
	c := f.issue("api", grants("platform-api:user"))
	var revoked []string
	for range iamv1alpha1.MaxRevokedTokens {
		tok := f.token(c)
		if resp, _ := f.revoke(c, tok); resp.StatusCode != 200 {
			t.Fatalf("revocation %d: %d", len(revoked)+1, resp.StatusCode)
		}
		revoked = append(revoked, tok)
	}
	f.clock.Step(time.Minute)
	extra := f.token(c)
	resp, body := f.revoke(c, extra)
	retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != 503 || body["error"] != "temporarily_unavailable" || retry < 1 || retry > int((9*time.Minute).Seconds()) {
		t.Fatalf("revocation past the bound: %d %v Retry-After %q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	t.Logf("past the bound: %d %s (Retry-After %ds)", resp.StatusCode, body["error_description"], retry)
	for i, tok := range []string{revoked[0], revoked[len(revoked)-1]} {
		if got := f.authzStatus(tok); got != 401 {
			t.Errorf("revoked token %d after the bound was hit: %d, want 401", i, got)
		}
	}
	if resp, _ := f.revoke(c, revoked[3]); resp.StatusCode != 200 {
		t.Errorf("revoking an already revoked token at the bound: %d, want 200", resp.StatusCode)
	}
	if got := f.authzStatus(extra); got != 200 {
		t.Errorf("the refused revocation revoked anyway: %d", got)
	}
	f.clock.Step(time.Duration(retry) * time.Second)
	if resp, _ := f.revoke(c, extra); resp.StatusCode != 200 {
		t.Errorf("revocation once the earlier ones expired: %d", resp.StatusCode)
	}
	if got := f.authzStatus(extra); got != 401 {
		t.Errorf("revoked after the bound freed: %d, want 401", got)
	}
}

// TestRevokedTokensFromStatus: a jti in status.revokedTokens (another replica's
// revocation, as the cache delivers it) is refused everywhere; other tokens are not.
func TestRevokedTokensFromStatus(t *testing.T) {
	f := newFixture(t)
	c := f.issue("api", grants("platform-api:user"))
	rs := f.issue("resource-server", grants("profile-api:read-only"))
	tok, other := f.token(c), f.token(c)
	jti, exp := f.jtiOf(t, tok)
	f.update(c, func(o *iamv1alpha1.APICredential) {
		o.Status.RevokedTokens = []iamv1alpha1.RevokedToken{{JTI: jti, Exp: metav1.Unix(exp, 0)}}
	})
	if got := f.authzStatus(tok); got != 401 {
		t.Errorf("/authz of a token revoked in status: %d, want 401", got)
	}
	if _, body := f.post("/oauth2/introspect", url.Values{"token": {tok}}, rs.id, rs.secret); body["active"] != false {
		t.Errorf("introspection of a token revoked in status: %v", body)
	}
	if got := f.authzStatus(other); got != 200 {
		t.Errorf("another token: %d, want 200", got)
	}
}

// TestRevocationMetadata: RFC 8414 metadata advertises the endpoint and its client
// authentication methods.
func TestRevocationMetadata(t *testing.T) {
	f := newFixture(t)
	resp, err := http.Get(f.ts.URL + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var md map[string]any
	if err := jsonDecode(resp.Body, &md); err != nil {
		t.Fatal(err)
	}
	if md["revocation_endpoint"] != f.ts.URL+"/oauth2/revoke" ||
		!equalJSON(md["revocation_endpoint_auth_methods_supported"], []string{"client_secret_basic", "client_secret_post"}) {
		t.Errorf("metadata: %v", md)
	}
}

// TestRevokeOutsideSourceRanges: the revocation endpoint authenticates like the token
// endpoint, source ranges included: from outside them 401 invalid_client and nothing is
// revoked (a leaked secret used elsewhere cannot revoke the client's tokens); from
// inside, through a trusted proxy's X-Forwarded-For, the token is revoked.
func TestRevokeOutsideSourceRanges(t *testing.T) {
	f := newFixture(t)
	c := f.issue("ranged", grants("platform-api:user"), func(o *iamv1alpha1.APICredential) { o.Spec.SourceRanges = []string{"10.0.0.0/8"} })
	revokeFrom := func(addr, tok string) (*http.Response, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, f.ts.URL+"/oauth2/revoke", strings.NewReader(url.Values{"token": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", addr)
		req.SetBasicAuth(c.id, c.secret)
		return f.do(req)
	}
	tokReq, _ := http.NewRequest(http.MethodPost, f.ts.URL+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
	tokReq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	tokReq.Header.Set("X-Forwarded-For", "10.1.2.3")
	tokReq.SetBasicAuth(c.id, c.secret)
	_, body := f.do(tokReq)
	tok, _ := body["access_token"].(string)
	if tok == "" {
		t.Fatalf("token from inside: %v", body)
	}
	if resp, body := revokeFrom("198.51.100.7", tok); resp.StatusCode != 401 || body["error"] != "invalid_client" {
		t.Errorf("revocation from outside the ranges: %d %v", resp.StatusCode, body)
	}
	authzInside := func() int {
		req, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/authz/platform-api/v1/things", nil)
		req.Header.Set("Authorization", bearer(tok))
		req.Header.Set("X-Forwarded-For", "10.1.2.3")
		resp, _ := f.do(req)
		return resp.StatusCode
	}
	if got := authzInside(); got != 200 {
		t.Errorf("the token after a revocation from outside: %d, want 200 (nothing revoked)", got)
	}
	if resp, _ := revokeFrom("10.1.2.3", tok); resp.StatusCode != 200 {
		t.Errorf("revocation from inside: %d", resp.StatusCode)
	}
	if got := authzInside(); got != 401 {
		t.Errorf("the token after a revocation from inside: %d, want 401", got)
	}
}
