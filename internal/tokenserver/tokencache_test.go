package tokenserver_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/signingkey"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// TestFinding8_TokenCacheIsBoundedInBytes (issue 8, finding 8: "the verified-token cache
// is bounded by count, not bytes"): filling the cache with tokens of large claims (64
// workspaces of 63 characters, three APIs) keeps the bytes it accounts for under
// --token-cache-bytes, while every request is still answered.
func TestFinding8_TokenCacheIsBoundedInBytes(t *testing.T) {
	const bound = 256 << 10
	f := newFixture(t, func(o *tokenserver.Options) { o.TokenCacheBytes = bound })
	c := f.issue("wide", grants("platform-api:user", "profile-api:read-only", "dataplanning-api:admin"), func(o *iamv1alpha1.APICredential) {
		o.Spec.Scope.Workspaces = nil
		for i := range 64 {
			o.Spec.Scope.Workspaces = append(o.Spec.Scope.Workspaces, string(rune('a'+i/26))+string(rune('a'+i%26))+strings.Repeat("w", 61))
		}
	})
	var peak int64
	for i := range 200 {
		tok := f.token(c)
		for range 2 { // the second request is a cache hit while there is room
			if code := f.authzStatus(tok); code != 200 {
				t.Fatalf("token %d: got %d, want 200", i, code)
			}
		}
		used := f.srv.TokenCacheBytes()
		if used > bound {
			t.Fatalf("after %d tokens the cache accounts for %d bytes, above its bound of %d", i+1, used, bound)
		}
		peak = max(peak, used)
	}
	if peak < bound/2 {
		t.Errorf("the cache never held more than %d bytes of its %d: it caches too little to be tested", peak, bound)
	}
}

// TestFinding8_KeyRemovalRevokesCachedTokens (issue 8, finding 8: "cached entries outlive
// the removal of their signing key"): a token served from the cache is refused on the
// next request once its key leaves the key set, for SetKeys (the signing Secret) and for
// SetVerifyKeys (a verify-only sidecar's JWKS) alike; a key set that keeps the key keeps
// the token.
func TestFinding8_KeyRemovalRevokesCachedTokens(t *testing.T) {
	for _, mode := range []string{"SetKeys", "SetVerifyKeys"} {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t)
			c := f.issue("cached", grants("platform-api:user"))
			tok := f.token(c)
			for range 2 {
				if code := f.authzStatus(tok); code != 200 {
					t.Fatalf("before: got %d, want 200", code)
				}
			}
			next, err := signingkey.Generate(f.clock.Now(), f.clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			set := func(keys ...signingkey.Key) {
				t.Helper()
				s := &signingkey.Set{Keys: keys}
				if mode == "SetKeys" {
					err = f.srv.SetKeys(s)
				} else {
					var jwks []byte
					if jwks, err = s.JWKS(); err == nil {
						err = f.srv.SetVerifyKeys(jwks)
					}
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			set(f.keys.Keys[0], next) // a rotation that keeps the old key published
			if code := f.authzStatus(tok); code != 200 {
				t.Errorf("with its key still published: got %d, want 200", code)
			}
			set(next) // the old key is gone
			if code := f.authzStatus(tok); code != 401 {
				t.Errorf("after its key left the key set: got %d, want 401", code)
			}
			if used := f.srv.TokenCacheBytes(); used != 0 {
				t.Errorf("the cache still accounts for %d bytes of tokens signed by a removed key", used)
			}
		})
	}
}

// TestFinding8_FailedBearerTokensAreRateLimitedPerAddress (issue 8, finding 8: "bearer
// tokens that fail verification are not rate limited"): after the burst of bad tokens
// from one address, /authz answers it 429 with Retry-After — for a good token not yet
// verified too, before any signature check — while another address is unaffected;
// introspection counts the bad tokens it is asked about against its caller's address.
func TestFinding8_FailedBearerTokensAreRateLimitedPerAddress(t *testing.T) {
	f := newFixture(t)
	c := f.issue("victim", grants("platform-api:user"))
	good := f.token(c)
	forged := good[:len(good)-4] + "AAAA"
	from := func(addr, tok string) *http.Response {
		req := httpRequest(http.MethodGet, "/authz/platform-api", "")
		req.RemoteAddr = addr + ":40000"
		req.Header.Set("Authorization", bearer(tok))
		req.Header.Set("X-Forwarded-Method", "GET")
		return record(f.srv.Handler(), req).Result()
	}
	for i := range 10 {
		if resp := from("203.0.113.7", forged); resp.StatusCode != 401 {
			t.Fatalf("bad token %d: got %d, want 401", i+1, resp.StatusCode)
		}
	}
	resp := from("203.0.113.7", forged)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after 10 bad tokens: got %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := from("203.0.113.7", f.token(c)); resp.StatusCode != 429 {
		t.Errorf("a good but unverified token from the blocked address: got %d, want 429", resp.StatusCode)
	}
	if resp := from("198.51.100.9", good); resp.StatusCode != 200 {
		t.Errorf("the good token from another address: got %d, want 200", resp.StatusCode)
	}
	if resp := from("203.0.113.7", good); resp.StatusCode != 200 {
		t.Errorf("the good token, verified and cached, from the blocked address: got %d, want 200 (it costs no verification)", resp.StatusCode)
	}
	f.clock.Step(30 * time.Second)
	if resp := from("203.0.113.7", forged); resp.StatusCode != 401 {
		t.Errorf("once the budget refilled: got %d, want 401", resp.StatusCode)
	}

	// Introspection: the resource server's address pays for the bad tokens it submits.
	rs := f.issue("resource-server", grants("profile-api:read-only"))
	introspect := func(addr, tok string) int {
		req := httpRequest(http.MethodPost, "/oauth2/introspect", "token="+tok)
		req.RemoteAddr = addr + ":40000"
		req.SetBasicAuth(rs.id, rs.secret)
		return record(f.srv.Handler(), req).Code
	}
	for i := range 10 {
		if code := introspect("192.0.2.50", forged); code != 200 {
			t.Fatalf("introspection of bad token %d: got %d, want 200 {active:false}", i+1, code)
		}
	}
	if code := introspect("192.0.2.50", forged); code != 429 {
		t.Errorf("introspection after 10 bad tokens: got %d, want 429", code)
	}
	if code := introspect("192.0.2.51", good); code != 200 {
		t.Errorf("introspection from another address: got %d, want 200", code)
	}
}
