package tokenserver_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// The token endpoint renders into pooled buffers: concurrent requests of credentials
// whose tokens differ in length each get a response that is whole JSON, names their own
// client and scope, and carries a token that verifies (its signature covers exactly its
// own bytes). A buffer returned to the pool while a response still used it, or bytes of
// an earlier, longer token left in a reused one, fail this (and -race sees the former).
func TestConcurrentTokenResponsesDoNotShareBuffers(t *testing.T) {
	f := newFixture(t)
	short := f.issue("short", grants("profile-api:read-only"))
	long := f.issue("long", grants("profile-api:read-only", "platform-api:admin", "dataplanning-api:admin"), func(o *iamv1alpha1.APICredential) {
		o.Spec.Scope.Workspaces = []string{"eu-1", "us-2", "ap-3", "sa-4", "af-5", "me-6"}
	})
	type want struct {
		c     *client
		scope string
	}
	wants := []want{
		{short, "profile-api:read-only"},
		{long, "profile-api:read-only platform-api:admin dataplanning-api:admin"},
	}
	var mu sync.Mutex
	jtis := map[string]bool{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				w := wants[(g+i)%2]
				req, _ := http.NewRequest(http.MethodPost, f.ts.URL+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.SetBasicAuth(w.c.id, w.c.secret)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				var body bytes.Buffer
				_, _ = body.ReadFrom(resp.Body)
				_ = resp.Body.Close()
				var tok struct {
					AccessToken string `json:"access_token"`
					Scope       string `json:"scope"`
				}
				dec := json.NewDecoder(&body)
				if err := dec.Decode(&tok); err != nil || dec.More() {
					t.Errorf("response is not one JSON object (%v): %q", err, body.String())
					return
				}
				if tok.Scope != w.scope {
					t.Errorf("%s got scope %q, want %q", w.c.obj.Name, tok.Scope, w.scope)
				}
				parts := strings.Split(tok.AccessToken, ".")
				if len(parts) != 3 {
					t.Errorf("not a compact JWS: %q", tok.AccessToken)
					return
				}
				payload, err := base64.RawURLEncoding.DecodeString(parts[1])
				var claims struct {
					ClientID string `json:"client_id"`
					JTI      string `json:"jti"`
				}
				if err != nil || json.Unmarshal(payload, &claims) != nil || claims.ClientID != w.c.id {
					t.Errorf("%s got claims %q (%v), want client_id %s", w.c.obj.Name, payload, err, w.c.id)
				}
				authz, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/authz/profile-api", nil)
				authz.Header.Set("Authorization", "Bearer "+tok.AccessToken)
				authz.Header.Set("X-Forwarded-Method", http.MethodGet)
				authz.Header.Set("X-Forwarded-Uri", "/")
				authz.Header.Set("X-Keysmith-Workspace", "eu-1")
				ar, err := http.DefaultClient.Do(authz)
				if err != nil {
					t.Error(err)
					return
				}
				_ = ar.Body.Close()
				if ar.StatusCode != http.StatusOK {
					t.Errorf("%s's token is refused by /authz: %s", w.c.obj.Name, ar.Status)
				}
				mu.Lock()
				if jtis[claims.JTI] {
					t.Errorf("jti %q issued twice", claims.JTI)
				}
				jtis[claims.JTI] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
