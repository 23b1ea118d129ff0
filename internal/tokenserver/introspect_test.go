package tokenserver_test

import (
	"testing"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func TestIntrospection(t *testing.T) {
	f := newFixture(t)
	c := f.issue("api", grants("platform-api:user"))
	rs := f.issue("resource-server", grants("profile-api:read-only"))
	tok := f.token(c)
	resp, body := f.post("/oauth2/introspect", map[string][]string{"token": {tok}}, rs.id, rs.secret)
	if resp.StatusCode != 200 || body["active"] != true || body["client_id"] != c.id || body["scope"] != "platform-api:user" || body["ks_cred"] != "team-a/api" {
		t.Errorf("active token: %d %v", resp.StatusCode, body)
	}
	f.update(c, func(o *iamv1alpha1.APICredential) { o.Spec.Active = ptrTo(false) })
	if _, body := f.post("/oauth2/introspect", map[string][]string{"token": {tok}}, rs.id, rs.secret); !equalJSON(body, map[string]any{"active": false}) {
		t.Errorf("token of an inactive credential: %v", body)
	}
	if resp, body := f.post("/oauth2/introspect", map[string][]string{"token": {tok}}, "", ""); resp.StatusCode != 401 || body["error"] != "invalid_client" {
		t.Errorf("unauthenticated introspection: %d %v", resp.StatusCode, body)
	}
}
