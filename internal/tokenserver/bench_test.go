package tokenserver_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// Loopback benchmarks share one client shape so their ratios compare like with like:
// BenchmarkLoopbackTrivial is the baseline measured in the same run.

func loopbackClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 256}}
}

func runLoopback(b *testing.B, newReq func() *http.Request, want int) {
	c := loopbackClient()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Do(newReq())
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				b.Errorf("status %d, want %d", resp.StatusCode, want)
				return
			}
		}
	})
}

func BenchmarkLoopbackTrivial(b *testing.B) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer ts.Close()
	runLoopback(b, func() *http.Request { r, _ := http.NewRequest(http.MethodGet, ts.URL+"/", nil); return r }, 200)
}

func BenchmarkLoopbackToken(b *testing.B) {
	f := newFixture(b)
	c := f.issue("bench", grants("platform-api:user", "profile-api:read-only"))
	body := url.Values{"grant_type": {"client_credentials"}}.Encode()
	runLoopback(b, func() *http.Request {
		r, _ := http.NewRequest(http.MethodPost, f.ts.URL+"/oauth2/token", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.SetBasicAuth(c.id, c.secret)
		return r
	}, 200)
}

func BenchmarkLoopbackAuthzBearer(b *testing.B) {
	f := newFixture(b)
	c := f.issue("bench", grants("platform-api:user"))
	tok, err := f.config(c, oauth2.AuthStyleInHeader).Token(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	runLoopback(b, func() *http.Request {
		r, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/authz/platform-api", nil)
		r.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		r.Header.Set("X-Forwarded-Method", "GET")
		r.Header.Set("X-Forwarded-Uri", "/v2/users")
		return r
	}, 200)
}

func BenchmarkLoopbackAuthzBasic(b *testing.B) {
	f := newFixture(b)
	c := f.issue("bench", grants("platform-api:user"))
	runLoopback(b, func() *http.Request {
		r, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/authz/platform-api", nil)
		r.SetBasicAuth(c.id, c.secret)
		r.Header.Set("X-Forwarded-Method", "GET")
		return r
	}, 200)
}

// Handler benchmarks run without the network, to show the server's own cost.

func BenchmarkHandlerToken(b *testing.B) {
	f := newFixture(b)
	c := f.issue("bench", grants("platform-api:user"))
	h := f.srv.Handler()
	b.ReportAllocs()
	for b.Loop() {
		req := httpRequest(http.MethodPost, "/oauth2/token", "grant_type=client_credentials")
		req.SetBasicAuth(c.id, c.secret)
		if rec := record(h, req); rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

func BenchmarkHandlerAuthzBearerCached(b *testing.B) {
	f := newFixture(b)
	c := f.issue("bench", grants("platform-api:user"))
	tok := f.token(c)
	h := f.srv.Handler()
	req := httpRequest(http.MethodGet, "/authz/platform-api", "")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Forwarded-Method", "GET")
	b.ReportAllocs()
	for b.Loop() {
		if rec := record(h, req); rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

// BenchmarkHandlerAuthzBearerUncached verifies a new token's signature every time (the
// cache sees each token once), which is what a cache miss costs.
func BenchmarkHandlerAuthzBearerUncached(b *testing.B) {
	f := newFixture(b)
	c := f.issue("bench", grants("platform-api:user"))
	tokens := make([]string, 2048)
	for i := range tokens {
		tokens[i] = f.token(c)
	}
	h := f.srv.Handler()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req := httpRequest(http.MethodGet, "/authz/platform-api", "")
		req.Header.Set("Authorization", "Bearer "+tokens[i%len(tokens)])
		i++
		if rec := record(h, req); rec.Code != 200 {
			b.Fatal(rec.Code)
		}
		if i%len(tokens) == 0 {
			b.StopTimer()
			for j := range tokens {
				tokens[j] = f.token(c)
			}
			b.StartTimer()
		}
	}
}

// BenchmarkStoreMemory reports the heap held per cached credential at 10 000 credentials.
func BenchmarkStoreMemory(b *testing.B) {
	const n = 10_000
	objs := make([]*iamv1alpha1.APICredential, n)
	for i := range objs {
		id, _ := credential.NewClientID()
		secret, _ := credential.NewSecret()
		objs[i] = &iamv1alpha1.APICredential{}
		objs[i].Namespace, objs[i].Name = fmt.Sprintf("team-%d", i%100), fmt.Sprintf("cred-%d", i)
		objs[i].Spec.APIs = grants("platform-api:user", "profile-api:read-only")
		objs[i].Spec.Scope.Workspaces = []string{"eu-prod", "us-prod"}
		objs[i].Status.ClientID, objs[i].Status.SecretHash, objs[i].Status.Account = id, credential.Hash(secret), "acme"
	}
	var perCredential float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		store := tokenserver.NewStore()
		for _, o := range objs {
			store.SetCredential(o)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perCredential = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(store)
	}
	b.ReportMetric(perCredential, "bytes/credential")
}
