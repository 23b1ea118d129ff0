package tokenserver_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// TestEveryErrorIsAnOAuthJSONError: whatever endpoint refuses a request, and whatever
// for, the answer is one RFC 6749 §5.2 JSON error with Cache-Control: no-store — never a
// text body — from a server that has its keys and from one that has none yet.
func TestEveryErrorIsAnOAuthJSONError(t *testing.T) {
	f := newFixture(t)
	keyless := httptest.NewServer(tokenserver.New(tokenserver.NewStore(), tokenserver.Options{Issuer: "https://keysmith.example"}).Handler())
	defer keyless.Close()

	for _, tc := range []struct {
		name, method, url, contentType, body string
		status                               int
		code                                 string
	}{
		{"token: not a form", http.MethodPost, f.ts.URL + "/oauth2/token", "text/plain", "grant_type=client_credentials", 400, "invalid_request"},
		{"token: no client", http.MethodPost, f.ts.URL + "/oauth2/token", "application/x-www-form-urlencoded", "grant_type=client_credentials", 401, "invalid_client"},
		{"introspect: no client", http.MethodPost, f.ts.URL + "/oauth2/introspect", "application/x-www-form-urlencoded", "token=x", 401, "invalid_client"},
		{"tokenreview: not a TokenReview", http.MethodPost, f.ts.URL + "/apis/authentication.k8s.io/v1/tokenreviews", "application/json", "{not json", 400, "invalid_request"},
		{"authz: no API", http.MethodGet, f.ts.URL + "/authz/", "", "", 400, "invalid_request"},
		{"authz: no credentials", http.MethodGet, f.ts.URL + "/authz/platform-api/v2/users", "", "", 401, "invalid_request"},
		{"jwks: no keys yet", http.MethodGet, keyless.URL + "/.well-known/jwks.json", "", "", 503, "temporarily_unavailable"},
		{"readyz: not ready", http.MethodGet, keyless.URL + "/readyz", "", "", 503, "temporarily_unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tc.url, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			var body struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if err := json.Unmarshal(raw, &body); err != nil {
				t.Fatalf("the body is not JSON: %q", raw)
			}
			if resp.StatusCode != tc.status || body.Error != tc.code || body.Description == "" {
				t.Errorf("got %d %q, want %d with error %q and a description", resp.StatusCode, raw, tc.status, tc.code)
			}
			if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != "application/json" || cc != "no-store" {
				t.Errorf("Content-Type %q, Cache-Control %q: want application/json, no-store", ct, cc)
			}
		})
	}
}

// TestProbes: /healthz answers ok at once; /readyz answers ok once the server is ready
// and has keys.
func TestProbes(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(f.ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(raw) != "ok" || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("%s: %d %q %q", path, resp.StatusCode, raw, resp.Header.Get("Content-Type"))
		}
	}
}
