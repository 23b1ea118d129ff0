package tokenserver_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// fetchJWKS reads the published keys with go-jose, an independent JOSE implementation.
func (f *fixture) fetchJWKS() jose.JSONWebKeySet {
	f.t.Helper()
	resp, err := http.Get(f.ts.URL + "/.well-known/jwks.json")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/jwk-set+json" {
		f.t.Errorf("JWKS Content-Type = %q", ct)
	}
	var set jose.JSONWebKeySet
	if err := jsonDecode(resp.Body, &set); err != nil {
		f.t.Fatal(err)
	}
	return set
}

type keysmithClaims struct {
	ClientID   string            `json:"client_id"`
	Scope      string            `json:"scope"`
	Credential string            `json:"ks_cred"`
	Account    string            `json:"ks_account"`
	Workspaces []string          `json:"ks_workspaces"`
	APIs       map[string]string `json:"ks_apis"`
}

// verifyWithGoJose checks a token's signature against the served JWKS and returns its claims.
func (f *fixture) verifyWithGoJose(token string) (jwt.Claims, keysmithClaims, jose.Header) {
	f.t.Helper()
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		f.t.Fatalf("go-jose cannot parse the token: %v", err)
	}
	hdr := parsed.Headers[0]
	jwks := f.fetchJWKS()
	keys := jwks.Key(hdr.KeyID)
	if len(keys) != 1 {
		f.t.Fatalf("kid %q is not in the JWKS", hdr.KeyID)
	}
	var std jwt.Claims
	var ks keysmithClaims
	if err := parsed.Claims(keys[0].Public().Key, &std, &ks); err != nil {
		f.t.Fatalf("signature does not verify against the JWKS: %v", err)
	}
	return std, ks, hdr
}

func TestTokenWithBothClientAuthStyles(t *testing.T) {
	for _, style := range []struct {
		name  string
		style oauth2.AuthStyle
	}{{"client_secret_basic", oauth2.AuthStyleInHeader}, {"client_secret_post", oauth2.AuthStyleInParams}} {
		t.Run(style.name, func(t *testing.T) {
			f := newFixture(t)
			c := f.issue("billing", grants("platform-api:admin", "profile-api:read-only"))
			tok, err := f.config(c, style.style).Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tok.TokenType != "Bearer" || tok.Expiry.IsZero() {
				t.Errorf("token type %q, expiry %v", tok.TokenType, tok.Expiry)
			}
			std, ks, hdr := f.verifyWithGoJose(tok.AccessToken)
			if typ := hdr.ExtraHeaders["typ"]; typ != "at+jwt" {
				t.Errorf("typ header = %v, want at+jwt (RFC 9068)", typ)
			}
			if err := std.Validate(jwt.Expected{Issuer: f.ts.URL, Subject: c.id, AnyAudience: jwt.Audience{"platform-api"}, Time: f.clock.Now()}); err != nil {
				t.Errorf("RFC 9068 claims: %v", err)
			}
			if std.ID == "" || std.IssuedAt == nil || std.Expiry.Time().Sub(std.IssuedAt.Time()) != 10*time.Minute {
				t.Errorf("jti %q, iat %v, exp %v", std.ID, std.IssuedAt, std.Expiry)
			}
			want := keysmithClaims{ClientID: c.id, Scope: "platform-api:admin profile-api:read-only", Credential: "team-a/billing",
				Account: "acme", Workspaces: []string{"eu-1", "us-2"}, APIs: map[string]string{"platform-api": "admin", "profile-api": "read-only"}}
			if !equalJSON(ks, want) {
				t.Errorf("keysmith claims = %+v, want %+v", ks, want)
			}
		})
	}
}

func TestTokenScopeNarrowsTheGrant(t *testing.T) {
	f := newFixture(t)
	c := f.issue("billing", grants("platform-api:admin", "profile-api:read-only"))
	for _, scope := range []string{"profile-api", "profile-api:read-only"} {
		_, ks, _ := f.verifyWithGoJose(f.token(c, scope))
		if ks.Scope != "profile-api:read-only" || len(ks.APIs) != 1 {
			t.Errorf("scope %q gave scope %q and APIs %v", scope, ks.Scope, ks.APIs)
		}
	}
	for _, scope := range []string{"platform-api:user", "billing-api", "platform-api:superuser"} {
		_, err := f.config(c, oauth2.AuthStyleInHeader, scope).Token(context.Background())
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_scope" || re.Response.StatusCode != http.StatusBadRequest {
			t.Errorf("scope %q: want invalid_scope, got %v", scope, err)
		}
	}
}

// TestBlankScopeIsInvalidScope: a scope of only whitespace names no API; it is
// invalid_scope, never a token without APIs. An empty scope parameter counts as omitted
// (RFC 6749 §3.1) and gets every granted API.
func TestBlankScopeIsInvalidScope(t *testing.T) {
	f := newFixture(t)
	c := f.issue("billing", grants("platform-api:admin", "profile-api:read-only"))
	for _, scopes := range [][]string{{" "}, {"  ", "\t"}, {"\t\n"}} {
		for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams} {
			tok, err := f.config(c, style, scopes...).Token(context.Background())
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != "invalid_scope" || re.Response.StatusCode != http.StatusBadRequest {
				t.Errorf("scope %q: want invalid_scope, got token %v, error %v", strings.Join(scopes, " "), tok, err)
			}
		}
	}
	resp, body := f.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {""}}, c.id, c.secret)
	if resp.StatusCode != 200 || body["scope"] != "platform-api:admin profile-api:read-only" {
		t.Errorf("an empty scope parameter: %d %v, want every granted API", resp.StatusCode, body)
	}
}

// TestTokenErrors is the error matrix of RFC 6749 §5.2.
func TestTokenErrors(t *testing.T) {
	f := newFixture(t)
	c := f.issue("billing", grants("platform-api:user"))
	inactive := f.issue("paused", grants("platform-api:user"), func(o *iamv1alpha1.APICredential) { o.Spec.Active = ptrTo(false) })
	expired := f.issue("old", grants("platform-api:user"), func(o *iamv1alpha1.APICredential) {
		o.Spec.ExpiresAt = timePtr(f.clock.Now().Add(-time.Second))
	})
	orphan := f.issue("orphan", grants("billing-api:admin"))
	typo := []byte(c.secret)
	typo[10] ^= 1
	cc := url.Values{"grant_type": {"client_credentials"}}
	with := func(extra url.Values) url.Values {
		v := url.Values{}
		for k, vs := range cc {
			v[k] = vs
		}
		for k, vs := range extra {
			v[k] = vs
		}
		return v
	}

	tests := []struct {
		name               string
		form               url.Values
		basicID, basicPass string
		wantStatus         int
		wantError          string
	}{
		{"no client authentication", cc, "", "", 401, "invalid_client"},
		{"unknown client", cc, "ksc_aaaaaaaaaaaaaaaaaaaaaaaaaa", c.secret, 401, "invalid_client"},
		{"wrong secret", cc, c.id, inactive.secret, 401, "invalid_client"},
		{"a typo in the secret", cc, c.id, string(typo), 401, "invalid_client"},
		{"not a keysmith secret", cc, c.id, "hunter2", 401, "invalid_client"},
		{"inactive credential", cc, inactive.id, inactive.secret, 401, "invalid_client"},
		{"expired credential", cc, expired.id, expired.secret, 401, "invalid_client"},
		{"wrong secret in the body", with(url.Values{"client_id": {c.id}, "client_secret": {"kss_nope"}}), "", "", 401, "invalid_client"},
		{"two authentication methods", with(url.Values{"client_id": {c.id}, "client_secret": {c.secret}}), c.id, c.secret, 400, "invalid_request"},
		{"no grant type", url.Values{}, c.id, c.secret, 400, "invalid_request"},
		{"another grant type", url.Values{"grant_type": {"password"}}, c.id, c.secret, 400, "unsupported_grant_type"},
		{"a repeated parameter", url.Values{"grant_type": {"client_credentials", "client_credentials"}}, c.id, c.secret, 400, "invalid_request"},
		{"a scope that is not granted", with(url.Values{"scope": {"profile-api"}}), c.id, c.secret, 400, "invalid_scope"},
		{"no API of the credential in the catalog", cc, orphan.id, orphan.secret, 400, "invalid_scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := f.post("/oauth2/token", tt.form, tt.basicID, tt.basicPass)
			if resp.StatusCode != tt.wantStatus || body["error"] != tt.wantError {
				t.Fatalf("got %d %v, want %d %s", resp.StatusCode, body, tt.wantStatus, tt.wantError)
			}
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", resp.Header.Get("Cache-Control"))
			}
			if tt.wantStatus == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("401 without a Basic WWW-Authenticate challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
			if s, _ := body["error_description"].(string); strings.Contains(s, c.secret) || strings.Contains(s, c.secret[4:14]) {
				t.Error("the error description leaks the secret")
			}
		})
	}

	t.Run("a body that is not a form", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, f.ts.URL+"/oauth2/token", strings.NewReader(`{"grant_type":"client_credentials"}`))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth(c.id, c.secret)
		if resp, body := f.do(req); resp.StatusCode != 400 || body["error"] != "invalid_request" {
			t.Errorf("got %d %v", resp.StatusCode, body)
		}
	})
	t.Run("a body over 64 KiB", func(t *testing.T) {
		resp, body := f.post("/oauth2/token", with(url.Values{"padding": {strings.Repeat("x", 70<<10)}}), c.id, c.secret)
		if resp.StatusCode != 400 || body["error"] != "invalid_request" {
			t.Errorf("got %d %v", resp.StatusCode, body)
		}
	})
	t.Run("GET", func(t *testing.T) {
		resp, err := http.Get(f.ts.URL + "/oauth2/token")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /oauth2/token = %d, want 405", resp.StatusCode)
		}
	})
	t.Run("a success is not cached either", func(t *testing.T) {
		resp, body := f.post("/oauth2/token", cc, c.id, c.secret)
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Pragma") != "no-cache" {
			t.Errorf("got %d, Cache-Control %q, Pragma %q", resp.StatusCode, resp.Header.Get("Cache-Control"), resp.Header.Get("Pragma"))
		}
		if body["token_type"] != "Bearer" || body["expires_in"] != float64(600) || body["scope"] != "platform-api:user" {
			t.Errorf("body %v", body)
		}
	})
}

func TestTokenRotationGracePeriod(t *testing.T) {
	f := newFixture(t)
	c := f.issue("rotating", grants("platform-api:user"))
	old := f.rotate(c, time.Hour)
	f.token(c) // the new secret works
	oldClient := *c
	oldClient.secret = old
	f.token(&oldClient) // so does the old one, within the grace period

	f.clock.Step(time.Hour)
	_, err := f.config(&oldClient, oauth2.AuthStyleInHeader).Token(context.Background())
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Errorf("old secret after the grace period: want invalid_client, got %v", err)
	}
	f.token(c)
}

func TestFailedAuthenticationIsRateLimitedPerClientAndAddress(t *testing.T) {
	f := newFixture(t)
	c := f.issue("target", grants("platform-api:user"))
	form := url.Values{"grant_type": {"client_credentials"}}
	attempt := func(addr, secret string) *http.Response {
		req := httpRequest(http.MethodPost, "/oauth2/token", form.Encode())
		req.RemoteAddr = addr + ":40000"
		req.SetBasicAuth(c.id, secret)
		rec := record(f.srv.Handler(), req)
		return rec.Result()
	}
	wrong := f.issue("other", grants("platform-api:user")).secret
	for i := range 10 {
		if code := attempt("198.51.100.7", wrong).StatusCode; code != http.StatusUnauthorized {
			t.Fatalf("failure %d: got %d, want 401", i, code)
		}
	}
	resp := attempt("198.51.100.7", wrong)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after 10 failures: got %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code := attempt("198.51.100.7", c.secret).StatusCode; code != http.StatusTooManyRequests {
		t.Errorf("the right secret from the attacking address: got %d, want 429 until the budget refills", code)
	}
	if code := attempt("203.0.113.20", c.secret).StatusCode; code != http.StatusOK {
		t.Errorf("the legitimate client elsewhere: got %d, want 200 (not locked out)", code)
	}
	f.clock.Step(2 * time.Second)
	if code := attempt("198.51.100.7", c.secret).StatusCode; code != http.StatusOK {
		t.Errorf("after the budget refilled: got %d, want 200", code)
	}
}
