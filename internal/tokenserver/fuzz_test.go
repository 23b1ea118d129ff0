package tokenserver_test

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzTokenRequest sends arbitrary bodies and Authorization headers to the token endpoint:
// it must never panic and must answer with one of the statuses RFC 6749 allows.
func FuzzTokenRequest(f *testing.F) {
	fx := newFixture(f)
	c := fx.issue("fuzz", grants("platform-api:user"))
	f.Add("grant_type=client_credentials", basic(c.id, c.secret))
	f.Add("grant_type=client_credentials&client_id="+c.id+"&client_secret="+c.secret, "")
	f.Add("grant_type=client_credentials&scope=platform-api%3Auser", basic(c.id, c.secret))
	f.Add("grant_type=password&grant_type=x", "Basic !!!")
	f.Add("%zz&&==", "Bearer x.y.z")
	f.Fuzz(func(t *testing.T, body, authz string) {
		req := httpRequest(http.MethodPost, "/oauth2/token", body)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if authz != "" && !strings.ContainsAny(authz, "\r\n") {
			req.Header.Set("Authorization", authz)
		}
		rec := record(fx.srv.Handler(), req)
		switch rec.Code {
		case 200, 400, 401, 429, 503:
		default:
			t.Fatalf("status %d for body %q", rec.Code, body)
		}
		if rec.Code == 200 && !strings.Contains(rec.Body.String(), `"access_token"`) {
			t.Fatalf("200 without a token: %s", rec.Body)
		}
	})
}

// FuzzAuthorizationHeader sends arbitrary Authorization headers and paths to /authz.
func FuzzAuthorizationHeader(f *testing.F) {
	fx := newFixture(f)
	c := fx.issue("fuzz", grants("platform-api:admin"))
	tok := fx.token(c)
	f.Add(bearer(tok), "platform-api/v2")
	f.Add(basic(c.id, c.secret), "platform-api")
	f.Add("Bearer "+tok[:20]+"..", "x")
	f.Add("Basic Og==", "")
	f.Add("bearer", "platform-api/../../etc")
	f.Fuzz(func(t *testing.T, authz, path string) {
		req := httpRequest(http.MethodGet, "/authz/platform-api", "")
		req.URL.Path = "/authz/" + path
		if !strings.ContainsAny(authz, "\r\n") {
			req.Header.Set("Authorization", authz)
		}
		rec := record(fx.srv.Handler(), req)
		switch rec.Code {
		case 200, 400, 401, 403, 429:
		default:
			t.Fatalf("status %d", rec.Code)
		}
		if rec.Code == 200 && rec.Header().Get("X-Keysmith-Client-Id") != c.id {
			t.Fatalf("200 for another client: %v", rec.Header())
		}
	})
}
