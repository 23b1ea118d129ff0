package tokenserver_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"testing"
	"time"

	"golang.org/x/oauth2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// Issue 13 item 1: spec.sourceRanges, enforced at the token exchange and at every use of
// the tokens (/authz), looked up live; never active at introspection nor authenticated
// through TokenReview, which carry no client address (fail closed). Item 2: spec.tokenPolicy.lifetime in expires_in and exp.

const (
	inside  = "10.1.2.3"     // in the credential's 10.1.0.0/16
	outside = "198.51.100.7" // in none of its ranges
)

func withRanges(ranges ...string) func(*iamv1alpha1.APICredential) {
	return func(o *iamv1alpha1.APICredential) { o.Spec.SourceRanges = ranges }
}

// from sends req as the TCP peer addr (handler tests: no proxy in between).
func (f *fixture) from(addr string, req *http.Request) *http.Response {
	req.RemoteAddr = net.JoinHostPort(addr, "40000")
	return record(f.srv.Handler(), req).Result()
}

func tokenRequest(c *client) *http.Request {
	req := httpRequest(http.MethodPost, "/oauth2/token", url.Values{"grant_type": {"client_credentials"}}.Encode())
	req.SetBasicAuth(c.id, c.secret)
	return req
}

func authzRequest(authorization string) *http.Request {
	req := httpRequest(http.MethodGet, "/authz/platform-api/v1/things", "")
	req.Header.Set("Authorization", authorization)
	return req
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSourceRangesAtEveryEndpoint: from outside the ranges, the token exchange answers
// exactly what a wrong secret answers, and every use of a token issued inside is refused
// at /authz and /authz/{api} (bearer and Basic); from inside, all of it works.
// Introspection, asked by a resource server, is not range-checked; TokenReview never
// authenticates such a credential.
func TestSourceRangesAtEveryEndpoint(t *testing.T) {
	f := newFixture(t, func(o *tokenserver.Options) {
		o.TrustedProxies = []netip.Prefix{} // handler tests: the peer is the client
		o.KubernetesAudiences = []string{kubernetesAudience}
	})
	f.catalogueKubernetes()
	c := f.issue("ci", grants("platform-api:user", "kubernetes:user"), withRanges("10.1.0.0/16", "2001:db8::/32"))
	rs := f.issue("resource-server", grants("platform-api:user"))

	// The token exchange.
	resp := f.from(inside, tokenRequest(c))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token from inside: %d %s", resp.StatusCode, body(t, resp))
	}
	var issued struct {
		AccessToken string `json:"access_token"`
	}
	if err := jsonDecode(resp.Body, &issued); err != nil {
		t.Fatal(err)
	}
	token := issued.AccessToken
	if resp := f.from("2001:db8::42", tokenRequest(c)); resp.StatusCode != http.StatusOK {
		t.Errorf("token from inside the IPv6 range: %d", resp.StatusCode)
	}
	outsideResp := f.from(outside, tokenRequest(c))
	wrong := *c
	wrong.secret = rs.secret
	wrongResp := f.from("203.0.113.99", tokenRequest(&wrong)) // another address: its own budget
	if outsideResp.StatusCode != http.StatusUnauthorized || wrongResp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token from outside: %d, with a wrong secret: %d; want 401 both", outsideResp.StatusCode, wrongResp.StatusCode)
	}
	if o, w := body(t, outsideResp), body(t, wrongResp); o != w {
		t.Errorf("outside the ranges answers %s, a wrong secret %s: want the same (no oracle)", o, w)
	}
	if o, w := outsideResp.Header.Get("WWW-Authenticate"), wrongResp.Header.Get("WWW-Authenticate"); o != w || o == "" {
		t.Errorf("WWW-Authenticate outside %q, wrong secret %q: want the same, set", o, w)
	}

	// /authz: bearer and Basic, from inside and outside.
	for _, tc := range []struct {
		name, auth string
	}{{"bearer", bearer(token)}, {"basic", basic(c.id, c.secret)}} {
		if resp := f.from(inside, authzRequest(tc.auth)); resp.StatusCode != http.StatusOK {
			t.Errorf("/authz %s from inside: %d %s", tc.name, resp.StatusCode, body(t, resp))
		}
		if resp := f.from(outside, authzRequest(tc.auth)); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("/authz %s from outside: %d, want 401", tc.name, resp.StatusCode)
		}
	}
	// /authz with no sub-path (the API alone).
	req := httpRequest(http.MethodGet, "/authz/platform-api", "")
	req.Header.Set("Authorization", bearer(token))
	if resp := f.from(outside, req); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/authz/platform-api from outside: %d, want 401", resp.StatusCode)
	}

	// Introspection by a resource server: its address says nothing of the client's, so
	// the ranges cannot be checked and the token is not active, from inside the ranges too.
	introspect := func(from string) map[string]any {
		t.Helper()
		ireq := httpRequest(http.MethodPost, "/oauth2/introspect", url.Values{"token": {token}}.Encode())
		ireq.SetBasicAuth(rs.id, rs.secret)
		var intro map[string]any
		if err := jsonDecode(f.from(from, ireq).Body, &intro); err != nil {
			t.Fatal(err)
		}
		return intro
	}
	for _, from := range []string{outside, inside} {
		if intro := introspect(from); intro["active"] != false || len(intro) != 1 {
			t.Errorf("introspection from %s of a range-restricted credential's token: %v, want only active false", from, intro)
		}
	}

	// TokenReview: no client address, so never authenticated.
	if st := f.review(token, kubernetesAudience); st.Authenticated {
		t.Errorf("TokenReview of a range-restricted credential's token: %+v, want unauthenticated", st)
	}
	f.update(c, withRanges())
	if st := f.review(token, kubernetesAudience); !st.Authenticated {
		t.Errorf("TokenReview once the ranges are removed: %+v, want authenticated", st)
	}
	if intro := introspect(outside); intro["active"] != true {
		t.Errorf("introspection once the ranges are removed: %v, want active", intro)
	}
}

// TestSourceRangesCountAsFailures: a right secret from outside the ranges spends the
// address's failure budget like a wrong one.
func TestSourceRangesCountAsFailures(t *testing.T) {
	f := newFixture(t, func(o *tokenserver.Options) { o.TrustedProxies = []netip.Prefix{} })
	c := f.issue("ci", grants("platform-api:user"), withRanges("10.1.0.0/16"))
	for i := range 10 {
		if code := f.from(outside, tokenRequest(c)).StatusCode; code != http.StatusUnauthorized {
			t.Fatalf("attempt %d from outside: %d, want 401", i, code)
		}
	}
	if code := f.from(outside, tokenRequest(c)).StatusCode; code != http.StatusTooManyRequests {
		t.Errorf("after 10 attempts from outside: %d, want 429", code)
	}
	if code := f.from(inside, tokenRequest(c)).StatusCode; code != http.StatusOK {
		t.Errorf("from inside meanwhile: %d, want 200 (not locked out)", code)
	}
}

// TestSourceRangesNarrowingRevokes: the ranges are read on every request, so narrowing
// them refuses tokens already issued, and widening them back accepts them again.
func TestSourceRangesNarrowingRevokes(t *testing.T) {
	f := newFixture(t, func(o *tokenserver.Options) { o.TrustedProxies = []netip.Prefix{} })
	c := f.issue("ci", grants("platform-api:user"), withRanges("10.0.0.0/8"))
	resp := f.from(inside, tokenRequest(c))
	var issued struct {
		AccessToken string `json:"access_token"`
	}
	if err := jsonDecode(resp.Body, &issued); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	if code := f.from(inside, authzRequest(bearer(issued.AccessToken))).StatusCode; code != http.StatusOK {
		t.Fatalf("before narrowing: %d, want 200", code)
	}
	f.update(c, withRanges("10.9.0.0/16"))
	if code := f.from(inside, authzRequest(bearer(issued.AccessToken))).StatusCode; code != http.StatusUnauthorized {
		t.Errorf("after narrowing past the client's address: %d, want 401", code)
	}
	if code := f.from("10.9.1.1", authzRequest(bearer(issued.AccessToken))).StatusCode; code != http.StatusOK {
		t.Errorf("from inside the narrowed range: %d, want 200", code)
	}
}

// xffTransport adds X-Forwarded-For, as an ingress in front of the token server does.
type xffTransport struct{ addr string }

func (x xffTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", x.addr)
	return http.DefaultTransport.RoundTrip(r)
}

// TestSourceRangesBehindTrustedProxies: over loopback (a trusted proxy by default) the
// client address is the one X-Forwarded-For names, for golang.org/x/oauth2's client and
// for /authz; from an untrusted peer the header is ignored.
func TestSourceRangesBehindTrustedProxies(t *testing.T) {
	f := newFixture(t)
	c := f.issue("ci", grants("platform-api:user"), withRanges("10.1.0.0/16"))
	via := func(addr string) context.Context {
		return context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: xffTransport{addr}})
	}
	tok, err := f.config(c, oauth2.AuthStyleInHeader).Token(via(inside))
	if err != nil {
		t.Fatalf("token through the proxy for a client inside: %v", err)
	}
	_, err = f.config(c, oauth2.AuthStyleInParams).Token(via(outside))
	var re *oauth2.RetrieveError
	if !asRetrieveError(err, &re) || re.Response.StatusCode != http.StatusUnauthorized || re.ErrorCode != "invalid_client" {
		t.Fatalf("token through the proxy for a client outside: %v, want 401 invalid_client", err)
	}
	authz := func(xff string) int {
		req, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/authz/platform-api/v1/things", nil)
		req.Header.Set("Authorization", bearer(tok.AccessToken))
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := authz(inside); code != http.StatusOK {
		t.Errorf("/authz through the proxy for a client inside: %d, want 200", code)
	}
	if code := authz(outside); code != http.StatusUnauthorized {
		t.Errorf("/authz through the proxy for a client outside: %d, want 401", code)
	}
	if code := authz(outside + ", " + inside); code != http.StatusOK {
		t.Errorf("/authz with a spoofed leftmost entry: %d, want 200 (the rightmost untrusted hop counts)", code)
	}

	// An untrusted peer cannot choose its address with the header.
	g := newFixture(t, func(o *tokenserver.Options) { o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} })
	d := g.issue("ci", grants("platform-api:user"), withRanges("10.1.0.0/16"))
	req := tokenRequest(d)
	req.Header.Set("X-Forwarded-For", inside)
	if code := g.from(outside, req).StatusCode; code != http.StatusUnauthorized {
		t.Errorf("X-Forwarded-For from an untrusted peer outside: %d, want 401 (header ignored)", code)
	}
	req = tokenRequest(d)
	req.Header.Set("X-Forwarded-For", inside)
	if code := g.from("192.0.2.10", req).StatusCode; code != http.StatusOK {
		t.Errorf("X-Forwarded-For from a trusted proxy for a client inside: %d, want 200", code)
	}
}

func asRetrieveError(err error, re **oauth2.RetrieveError) bool {
	r, ok := err.(*oauth2.RetrieveError)
	if ok {
		*re = r
	}
	return ok
}

// TestTokenLifetimePolicy: expires_in and exp - iat are min(spec.tokenPolicy.lifetime,
// MaxTokenLifetime), else TokenLifetime; a token as long as MaxTokenLifetime is accepted
// at /authz; aud holds each carried API's audience.
func TestTokenLifetimePolicy(t *testing.T) {
	f := newFixture(t, func(o *tokenserver.Options) {
		o.TokenLifetime = 10 * time.Minute
		o.MaxTokenLifetime = time.Hour
	})
	f.store.SetAPI(&iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: "billing-api"},
		Spec: iamv1alpha1.APIDefinitionSpec{DisplayName: "Billing", ScopeLevel: iamv1alpha1.ScopeLevelAccount,
			Audience: "https://billing.example.com", Permissions: []iamv1alpha1.Permission{{Name: "user", Methods: []string{"GET"}}}}})
	lifetime := func(d time.Duration) func(*iamv1alpha1.APICredential) {
		return func(o *iamv1alpha1.APICredential) { o.Spec.TokenPolicy.Lifetime = &metav1.Duration{Duration: d} }
	}
	for _, tc := range []struct {
		name   string
		mutate []func(*iamv1alpha1.APICredential)
		want   time.Duration
	}{
		{"unset: --token-lifetime", nil, 10 * time.Minute},
		{"shorter", []func(*iamv1alpha1.APICredential){lifetime(90 * time.Second)}, 90 * time.Second},
		{"longer than the default", []func(*iamv1alpha1.APICredential){lifetime(45 * time.Minute)}, 45 * time.Minute},
		{"capped by --max-token-lifetime", []func(*iamv1alpha1.APICredential){lifetime(24 * time.Hour)}, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.issue("c", grants("platform-api:user", "billing-api:user"), tc.mutate...)
			tok, err := f.config(c, oauth2.AuthStyleInHeader).Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := tok.Extra("expires_in").(float64); got != tc.want.Seconds() {
				t.Errorf("expires_in = %v, want %v", tok.Extra("expires_in"), tc.want.Seconds())
			}
			std, _, _ := f.verifyWithGoJose(tok.AccessToken)
			if got := std.Expiry.Time().Sub(std.IssuedAt.Time()); got != tc.want {
				t.Errorf("exp - iat = %v, want %v", got, tc.want)
			}
			if aud := []string(std.Audience); !slices.Equal(aud, []string{"platform-api", "https://billing.example.com"}) {
				t.Errorf("aud = %q, want each API's audience once, in grant order", aud)
			}
			req, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/authz/billing-api/x", nil)
			req.Header.Set("Authorization", bearer(tok.AccessToken))
			if resp, _ := f.do(req); resp.StatusCode != http.StatusOK {
				t.Errorf("/authz with the token: %d, want 200 (a lifetime up to the max verifies)", resp.StatusCode)
			}
		})
	}
}
