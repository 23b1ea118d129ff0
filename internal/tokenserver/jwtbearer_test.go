package tokenserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// fakeIssuer is an API server's service-account issuer discovery: a discovery document
// and a key set, with the requests counted.
type fakeIssuer struct {
	srv      *httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	keys     []jose.JSONWebKey
}

const fakeIssuerName = "https://kubernetes.default.svc.cluster.local"

func newFakeIssuer(t *testing.T) *fakeIssuer {
	f := &fakeIssuer{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			_ = json.NewEncoder(w).Encode(map[string]any{"issuer": fakeIssuerName, "jwks_uri": "https://10.0.0.1:6443/openid/v1/jwks"})
		case "/openid/v1/jwks":
			f.mu.Lock()
			defer f.mu.Unlock()
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: f.keys})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// addKey publishes a new ES256 key and returns a signer with its kid.
func (f *fakeIssuer) addKey(t *testing.T, kid string) jose.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.keys = append(f.keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"})
	f.mu.Unlock()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", kid).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func saToken(t *testing.T, s jose.Signer, c jwt.Claims) string {
	t.Helper()
	tok, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestServiceAccountIssuerCaching: the key set is read once and then served from memory;
// tokens with an unknown kid refresh it at most once per MinRefresh, which is how a new
// API server key is learnt; expiry, audience, issuer, subject and algorithm are checked.
func TestServiceAccountIssuerCaching(t *testing.T) {
	ctx := context.Background()
	f := newFakeIssuer(t)
	signer := f.addKey(t, "k1")
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	v, err := tokenserver.NewServiceAccountIssuer(&rest.Config{Host: f.srv.URL}, clk)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := v.Issuer(); got != fakeIssuerName {
		t.Fatalf("issuer %q", got)
	}
	const aud = "https://keysmith.example.com"
	now := clk.Now()
	claims := func(mutate func(*jwt.Claims)) jwt.Claims {
		c := jwt.Claims{Issuer: fakeIssuerName, Subject: "system:serviceaccount:team-a:worker", Audience: jwt.Audience{aud},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(10 * time.Minute))}
		if mutate != nil {
			mutate(&c)
		}
		return c
	}
	good := saToken(t, signer, claims(nil))
	base := f.requests.Load()
	for range 100 {
		ns, name, err := v.Verify(ctx, good, aud, now)
		if err != nil || ns != "team-a" || name != "worker" {
			t.Fatalf("Verify: %q %q %v", ns, name, err)
		}
	}
	if n := f.requests.Load() - base; n != 0 {
		t.Errorf("100 verifications made %d requests to the API server, want 0", n)
	}

	for name, tok := range map[string]string{
		"another audience":  saToken(t, signer, claims(func(c *jwt.Claims) { c.Audience = jwt.Audience{"https://other.example.com"} })),
		"another issuer":    saToken(t, signer, claims(func(c *jwt.Claims) { c.Issuer = "https://evil.example.com" })),
		"expired":           saToken(t, signer, claims(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now.Add(-time.Minute)) })),
		"no exp":            saToken(t, signer, claims(func(c *jwt.Claims) { c.Expiry = nil })),
		"issued later":      saToken(t, signer, claims(func(c *jwt.Claims) { c.IssuedAt = jwt.NewNumericDate(now.Add(time.Minute)) })),
		"not a SA subject":  saToken(t, signer, claims(func(c *jwt.Claims) { c.Subject = "system:node:n1" })),
		"a subject too far": saToken(t, signer, claims(func(c *jwt.Claims) { c.Subject = "system:serviceaccount:team-a:worker:x" })),
		"HS256":             hs256(t, claims(nil)),
	} {
		if _, _, err := v.Verify(ctx, tok, aud, now); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}

	// An unknown kid: one refresh, then none until MinRefresh has passed (also since the
	// initial read, which is why the clock moves first).
	stranger := saToken(t, mustSigner(t, "k-unknown"), claims(nil))
	if _, _, err := v.Verify(ctx, stranger, aud, now); err == nil || f.requests.Load() != base {
		t.Fatalf("an unknown kid within MinRefresh of the initial read: %v, %d requests", err, f.requests.Load()-base)
	}
	clk.Step(v.MinRefresh)
	now = clk.Now()
	base = f.requests.Load()
	for range 50 {
		if _, _, err := v.Verify(ctx, stranger, aud, now); err == nil {
			t.Fatal("a token of an unpublished key was accepted")
		}
	}
	if n := f.requests.Load() - base; n != 2 {
		t.Errorf("50 tokens with an unknown kid made %d requests, want 2 (one refresh: discovery and key set)", n)
	}
	// The API server publishes a new key: learnt at the next refresh an unknown kid may cause.
	rotated := saToken(t, f.addKey(t, "k2"), claims(nil))
	if _, _, err := v.Verify(ctx, rotated, aud, now); err == nil {
		t.Error("a new key was used before MinRefresh passed: the refresh bound did not hold")
	}
	clk.Step(v.MinRefresh)
	if _, _, err := v.Verify(ctx, rotated, aud, clk.Now()); err != nil {
		t.Errorf("a token of the API server's new key after MinRefresh: %v", err)
	}
	if _, _, err := v.Verify(ctx, good, aud, clk.Now()); err != nil {
		t.Errorf("the old key after the refresh: %v", err)
	}
}

func mustSigner(t *testing.T, kid string) jose.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hs256(t *testing.T, c jwt.Claims) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	return saToken(t, s, c)
}
