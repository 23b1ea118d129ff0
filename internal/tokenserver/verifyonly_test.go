package tokenserver_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// TestVerifyOnlyServerHoldsNoPrivateKey: a sidecar in verify-only mode, fed only the
// public JWKS, accepts tokens the shared server issued, serves the same JWKS, refuses
// forged tokens, and has no token endpoint.
func TestVerifyOnlyServerHoldsNoPrivateKey(t *testing.T) {
	shared := newFixture(t)
	c := shared.issue("sidecar-user", grants("platform-api:user"))
	tok := shared.token(c)
	jwks, err := shared.keys.JWKS()
	if err != nil {
		t.Fatal(err)
	}

	sidecar := tokenserver.New(shared.store, tokenserver.Options{Issuer: shared.ts.URL, Clock: shared.clock, VerifyOnly: true})
	if err := sidecar.SetVerifyKeys(jwks); err != nil {
		t.Fatal(err)
	}
	sidecar.SetReady()
	ts := httptest.NewServer(sidecar.Handler())
	defer ts.Close()

	get := func(path, authz string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/authz/platform-api/v2/users", bearer(tok)); code != http.StatusOK {
		t.Fatalf("a token of the shared server: %d %s", code, body)
	}
	if code, _ := get("/authz/platform-api/v2/users", bearer(tok[:len(tok)-4]+"AAAA")); code != http.StatusUnauthorized {
		t.Fatalf("a forged token: %d, want 401", code)
	}
	if code, body := get("/.well-known/jwks.json", ""); code != http.StatusOK || !strings.Contains(body, shared.keys.Keys[0].ID) || strings.Contains(body, `"d"`) {
		t.Fatalf("JWKS: %d %s", code, body)
	}
	if code, _ := get("/readyz", ""); code != http.StatusOK {
		t.Fatalf("readyz: %d", code)
	}
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(c.id, c.secret)
	if resp, _ := shared.do(req); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("token endpoint of a verify-only server: %d, want 404", resp.StatusCode)
	}
	if err := sidecar.SetVerifyKeys([]byte(`{"keys":[]}`)); err == nil {
		t.Fatal("an empty public key set must be refused")
	}
}
