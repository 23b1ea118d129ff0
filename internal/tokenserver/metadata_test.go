package tokenserver_test

import (
	"net/http"
	"testing"
)

func TestMetadata(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(httpRequest(http.MethodGet, f.ts.URL+"/.well-known/oauth-authorization-server", ""))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for k, want := range map[string]string{
		"issuer": f.ts.URL, "token_endpoint": f.ts.URL + "/oauth2/token",
		"jwks_uri": f.ts.URL + "/.well-known/jwks.json", "introspection_endpoint": f.ts.URL + "/oauth2/introspect",
	} {
		if body[k] != want {
			t.Errorf("%s = %v, want %s", k, body[k], want)
		}
	}
	if !equalJSON(body["grant_types_supported"], []string{"client_credentials"}) ||
		!equalJSON(body["token_endpoint_auth_methods_supported"], []string{"client_secret_basic", "client_secret_post"}) {
		t.Errorf("metadata %v", body)
	}
	set := f.fetchJWKS()
	if len(set.Keys) != 1 || !set.Keys[0].IsPublic() || set.Keys[0].Algorithm != "ES256" || set.Keys[0].Use != "sig" {
		t.Errorf("JWKS %+v", set.Keys)
	}
}
