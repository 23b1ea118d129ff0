// Command load measures the token server's throughput and latency on loopback next to a
// trivial Go handler, with the same client, in the same run, and prints ratios. It is
// part of `make bench`. Traffic goes to 127.0.0.1 only and each run is bounded in time.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
	"github.com/keysmith-dev/keysmith/internal/signingkey"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

type result struct {
	name       string
	requests   int64
	errors     int64
	elapsed    time.Duration
	p50, p99   time.Duration
	throughput float64
}

func main() {
	duration := flag.Duration("duration", 2*time.Second, "how long each target is loaded in each round")
	rounds := flag.Int("rounds", 5, "rounds; each loads every target in turn, so that a noisy neighbour hits all targets alike")
	workers := flag.Int("concurrency", 32, "concurrent clients")
	credentials := flag.Int("credentials", 10000, "credentials in the token server's cache")
	flag.Parse()
	if err := run(*duration, *rounds, *workers, *credentials); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func run(duration time.Duration, rounds, workers, n int) error {
	trivial, err := serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	if err != nil {
		return err
	}
	store := tokenserver.NewStore()
	var srv *tokenserver.Server
	base, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { srv.Handler().ServeHTTP(w, r) }))
	if err != nil {
		return err
	}
	srv = tokenserver.New(store, tokenserver.Options{Issuer: base})
	now := time.Now()
	key, err := signingkey.Generate(now, now)
	if err != nil {
		return err
	}
	if err := srv.SetKeys(&signingkey.Set{Keys: []signingkey.Key{key}}); err != nil {
		return err
	}
	srv.SetReady()
	store.SetAPI(&iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: "platform-api"}, Spec: iamv1alpha1.APIDefinitionSpec{
		ScopeLevel: iamv1alpha1.ScopeLevelAccount, Permissions: []iamv1alpha1.Permission{{Name: "user", Methods: []string{"GET", "POST"}}},
	}})
	var id, secret string
	heapBefore := heapAlloc()
	for i := range n {
		cid, _ := credential.NewClientID()
		s, _ := credential.NewSecret()
		obj := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "load", Name: fmt.Sprintf("cred-%d", i)},
			Spec:   iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}}},
			Status: iamv1alpha1.APICredentialStatus{ClientID: cid, SecretHash: credential.Hash(s), Account: "acme"}}
		store.SetCredential(obj)
		id, secret = cid, s
	}
	credentialBytes := float64(heapAlloc()-heapBefore) / float64(n)
	runtime.KeepAlive(store)
	token, err := fetchToken(base, id, secret)
	if err != nil {
		return err
	}
	form := url.Values{"grant_type": {"client_credentials"}}.Encode()

	targets := []struct {
		name string
		req  func() *http.Request
	}{
		{"trivial Go handler", func() *http.Request { r, _ := http.NewRequest(http.MethodGet, trivial+"/", nil); return r }},
		{"POST /oauth2/token", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, base+"/oauth2/token", strings.NewReader(form))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.SetBasicAuth(id, secret)
			return r
		}},
		{"/authz (Bearer)", func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, base+"/authz/platform-api", nil)
			r.Header.Set("Authorization", "Bearer "+token)
			r.Header.Set("X-Forwarded-Method", "GET")
			r.Header.Set("X-Forwarded-Uri", "/v2/users")
			return r
		}},
		{"/authz (Basic)", func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, base+"/authz/platform-api", nil)
			r.SetBasicAuth(id, secret)
			r.Header.Set("X-Forwarded-Method", "GET")
			return r
		}},
	}
	fmt.Printf("load: %d concurrent clients, %d rounds of %s per target, %d credentials cached, GOMAXPROCS=%d\n", workers, rounds, duration, n, runtimeProcs())
	// Every round loads each target in turn; ratios are taken within a round and the
	// median round is reported, so drift in the machine's load cancels out.
	perTarget := make([][]result, len(targets))
	ratios := make([][]float64, len(targets))
	for range rounds {
		var round []result
		for i, t := range targets {
			r := load(t.name, t.req, duration, workers)
			round = append(round, r)
			perTarget[i] = append(perTarget[i], r)
		}
		for i := range targets {
			ratios[i] = append(ratios[i], round[i].throughput/round[0].throughput)
		}
	}
	fmt.Printf("\n%-22s %12s %10s %10s %8s %11s %17s\n", "target", "requests/s", "p50", "p99", "errors", "vs trivial", "(min-max ratio)")
	var failed []string
	for i, t := range targets {
		m := median(perTarget[i])
		rs := slices.Clone(ratios[i])
		slices.Sort(rs)
		fmt.Printf("%-22s %12.0f %10s %10s %8d %10.0f%% %8.0f%%-%3.0f%%\n", t.name, m.throughput, m.p50.Round(time.Microsecond), m.p99.Round(time.Microsecond),
			totalErrors(perTarget[i]), 100*rs[len(rs)/2], 100*rs[0], 100*rs[len(rs)-1])
		if e := totalErrors(perTarget[i]); e > 0 {
			failed = append(failed, fmt.Sprintf("%s: %d errors", t.name, e))
		}
	}
	fmt.Printf("\nmemory: %.0f bytes of heap per cached credential (%d credentials)\n", credentialBytes, n)
	if len(failed) > 0 {
		return fmt.Errorf("%s", strings.Join(failed, "; "))
	}
	return nil
}

// median returns the result with the median throughput.
func median(rs []result) result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int { return cmp.Compare(a.throughput, b.throughput) })
	return s[len(s)/2]
}

func totalErrors(rs []result) int64 {
	var n int64
	for _, r := range rs {
		n += r.errors
	}
	return n
}

func load(name string, newReq func() *http.Request, d time.Duration, workers int) result {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxIdleConns: workers}}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		latencies []time.Duration
		requests  atomic.Int64
		errs      atomic.Int64
	)
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 1<<16)
			for ctx.Err() == nil {
				t0 := time.Now()
				resp, err := client.Do(newReq())
				if err != nil {
					errs.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				local = append(local, time.Since(t0))
				requests.Add(1)
				if resp.StatusCode != http.StatusOK {
					errs.Add(1)
				}
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	client.CloseIdleConnections()
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(p*float64(len(latencies)-1))]
	}
	return result{name: name, requests: requests.Load(), errors: errs.Load(), elapsed: elapsed,
		p50: pct(0.50), p99: pct(0.99), throughput: float64(requests.Load()) / elapsed.Seconds()}
}

func serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = tokenserver.NewHTTPServer("", h).Serve(ln) }()
	return "http://" + ln.Addr().String(), nil
}

func fetchToken(base, id, secret string) (string, error) {
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.AccessToken == "" {
		return "", fmt.Errorf("token endpoint: status %d", resp.StatusCode)
	}
	return body.AccessToken, nil
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// heapAlloc returns the live heap after a full collection.
func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
