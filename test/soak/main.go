// Command soak runs keysmith under mixed load for a while in the make dev shape: a real API
// server (envtest), the manager and the token server each in a process of their own, built
// from ./cmd/manager and ./cmd/token-server and run as their service accounts with the
// shipped RBAC. Over -n credentials it keeps token exchanges (client credentials), /authz
// with bearer tokens, rotations (keyVersion bumps), deactivations and reactivations, and
// deletes and re-creates going, and prints one line every -report: requests by kind,
// errors by kind, p99 per kind, and the heap of both processes. Errors the scenario causes
// (a deactivated or deleted credential refused, a rotated-away secret refused after its
// grace period, anything while a change settles) are counted as expected. It exits 1 when
// an unexpected error appears or a process's heap grows by more than 10 % between the
// report at minute 2 and the last (the first and the last when -duration is under 3 m).
// Issue 11; make soak; docs/benchmarks.md "Soak". Not a Go test: it never runs in CI.
// Traffic goes to 127.0.0.1 only; no secret or token is printed.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/testenv/proc"
)

const (
	systemNamespace = "keysmith-system"
	managerUser     = "system:serviceaccount:" + systemNamespace + ":keysmith-manager"
	tokenServerUser = "system:serviceaccount:" + systemNamespace + ":keysmith-token-server"
	namespace       = "soak"

	// grace is every credential's spec.rotation.gracePeriod; settle is how long after a
	// change (or a grace period's end) any answer is expected: the token server's watch
	// catching up.
	grace  = 20 * time.Second
	settle = 5 * time.Second
)

type options struct {
	n, clients     int
	duration, tick time.Duration
	changeEvery    time.Duration
	rate           float64
	keep           bool
	// managerArgs are appended to the manager's arguments, e.g.
	// --pprof-bind-address=127.0.0.1:6060 to take heap profiles while it runs.
	managerArgs []string
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 100, "credentials")
	flag.IntVar(&o.clients, "clients", 4, "goroutines each for token exchanges and /authz")
	flag.DurationVar(&o.duration, "duration", 10*time.Minute, "how long the load runs")
	flag.DurationVar(&o.tick, "report", time.Minute, "how often a summary line is printed")
	flag.DurationVar(&o.changeEvery, "change-every", 500*time.Millisecond, "how often a lifecycle change (rotate, deactivate, delete) starts")
	flag.Float64Var(&o.rate, "rate", 200, "token exchanges per second, and as many /authz requests (a steady load, not a benchmark)")
	flag.BoolVar(&o.keep, "keep", false, "keep the run's directory (the processes' logs)")
	mArgs := flag.String("manager-args", "", "space-separated extra arguments of the manager, e.g. --pprof-bind-address=127.0.0.1:6060")
	flag.Parse()
	o.managerArgs = strings.Fields(*mArgs)
	ok, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// phase is where a credential is in the scenario.
type phase int

const (
	stable   phase = iota // issued and settled: everything must succeed
	changing              // a change is under way or settling: any answer is expected
	inactive              // deactivated (or deleted) and settled: refusals are expected, acceptance is an error
)

// cred is the client's view of one credential. Guarded by the soak's mutex.
type cred struct {
	name       string
	phase      phase
	since      time.Time // when phase was entered (for changing: when it may turn stable)
	id, secret string
	old        string    // the rotated-away secret, if any
	oldUntil   time.Time // end of old's grace period
	token      string
	busy       bool // a lifecycle change owns it
	// epoch counts its changes: each gets a client address of its own (X-Forwarded-For
	// through the trusted loopback proxy), so that the refusals one change causes, which
	// spend the token server's per-address failure budget, do not spill into the next
	// phase or onto other credentials, as for separate clients behind a proxy.
	epoch   int
	index   int
	version int64
}

type soak struct {
	o                  options
	c                  client.Client
	tokenURL, authzURL string

	mu    sync.Mutex
	creds []*cred
	st    *stats

	tokenRate, authzRate *rate.Limiter
}

func run(o options) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.duration+15*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "keysmith-soak-")
	if err != nil {
		return false, err
	}
	if o.keep {
		fmt.Println("soak: logs in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	built := make(chan error, 1)
	go func() { built <- testenv.Build(ctx, dir, "./cmd/manager", "./cmd/token-server") }()

	env, err := testenv.New()
	if err != nil {
		return false, err
	}
	cfg, err := env.Start()
	if err != nil {
		return false, err
	}
	defer func() { _ = env.Stop() }()
	cfg.QPS = -1
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return false, err
	}
	if err := testenv.InstallShipped(ctx, c, systemNamespace); err != nil {
		return false, err
	}
	kubeconfigs := map[string]string{}
	for _, user := range []string{managerUser, tokenServerUser} {
		path, _, err := testenv.UserKubeconfig(env, cfg, user, dir)
		if err != nil {
			return false, err
		}
		kubeconfigs[user] = path
	}
	if err := <-built; err != nil {
		return false, err
	}
	addrs, err := testenv.FreeAddrs(3)
	if err != nil {
		return false, err
	}
	probeAddr, metricsAddr, tokenAddr := addrs[0], addrs[1], addrs[2]
	mgr, err := startProc(dir, "manager", testenv.Binary(dir, "./cmd/manager"), kubeconfigs[managerUser],
		append([]string{"--enable-webhooks=false",
			"--signing-key-namespace=" + systemNamespace,
			"--health-probe-bind-address=" + probeAddr,
			"--metrics-bind-address=" + metricsAddr}, o.managerArgs...)...)
	if err != nil {
		return false, err
	}
	defer mgr.Kill()
	if err := mgr.WaitOK(ctx, "http://"+probeAddr+"/readyz", time.Minute); err != nil {
		return false, err
	}
	ts, err := startProc(dir, "token-server", testenv.Binary(dir, "./cmd/token-server"), kubeconfigs[tokenServerUser],
		"--listen="+tokenAddr, "--issuer=http://"+tokenAddr, "--signing-key-namespace="+systemNamespace,
		// Tokens live a minute and the verified-token cache holds 4 MiB (64 by default,
		// which 200 tokens/s take minutes to fill), so that the cache is at its steady
		// state well before minute 2 and any growth after it is something else.
		"--token-lifetime=1m", "--token-cache-bytes=4194304")
	if err != nil {
		return false, err
	}
	defer ts.Kill()
	if err := ts.WaitOK(ctx, "http://"+tokenAddr+"/readyz", 5*time.Minute); err != nil {
		return false, err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return false, err
	}

	s := &soak{o: o, c: c, tokenURL: "http://" + tokenAddr + "/oauth2/token",
		authzURL: "http://" + tokenAddr + "/authz/platform-api", st: newStats(),
		tokenRate: rate.NewLimiter(rate.Limit(o.rate), 1), authzRate: rate.NewLimiter(rate.Limit(o.rate), 1)}
	for i := range o.n {
		cr := &cred{name: fmt.Sprintf("cred-%03d", i), index: i}
		if err := c.Create(ctx, newCredential(cr.name)); err != nil {
			return false, err
		}
		s.creds = append(s.creds, cr)
	}
	for _, cr := range s.creds {
		if err := s.waitIssued(ctx, cr, 0, 2*time.Minute); err != nil {
			return false, err
		}
		cr.phase, cr.since = changing, time.Now().Add(settle)
	}
	fmt.Printf("soak: %d credentials Ready; %s of load, a summary every %s; %.0f token exchanges/s and %.0f /authz/s from %d goroutines each, a lifecycle change every %s; API server, etcd, manager, token server and this process share %d cores\n",
		o.n, o.duration, o.tick, o.rate, o.rate, o.clients, o.changeEvery, runtime.NumCPU())

	loadCtx, stopLoad := context.WithTimeout(ctx, o.duration)
	defer stopLoad()
	var wg sync.WaitGroup
	for range o.clients {
		wg.Go(func() { s.tokenLoop(loadCtx) })
		wg.Go(func() { s.authzLoop(loadCtx) })
	}
	wg.Go(func() { s.lifecycleLoop(loadCtx, &wg) })

	heaps := &heapSampler{procs: []heapSource{
		{name: "manager", url: "http://" + metricsAddr + "/metrics", p: mgr},
		{name: "token-server", url: "http://" + tokenAddr + "/metrics", p: ts},
	}}
	var reports []map[string]float64
	var reportAt []time.Duration
	began := time.Now()
	sample := time.NewTicker(2 * time.Second)
	defer sample.Stop()
	report := time.NewTicker(o.tick)
	defer report.Stop()
	procErr := error(nil)
loop:
	for {
		select {
		case <-sample.C:
			heaps.sample(ctx)
		case <-report.C:
			heaps.sample(ctx)
			h := heaps.take()
			reports = append(reports, h)
			reportAt = append(reportAt, time.Since(began))
			fmt.Println(s.st.line(time.Since(began), h, heaps.kind))
			if time.Since(began) >= o.duration-time.Second {
				break loop
			}
		case <-mgr.Exited:
			procErr = fmt.Errorf("manager exited; its log: %s", mgr.LogPath)
			break loop
		case <-ts.Exited:
			procErr = fmt.Errorf("token server exited; its log: %s", ts.LogPath)
			break loop
		}
	}
	stopLoad()
	wg.Wait()
	if procErr != nil {
		return false, procErr
	}

	ok := true
	tot := s.st.total()
	fmt.Printf("soak: total %s\n", tot)
	if n := s.st.unexpectedTotal(); n > 0 {
		fmt.Printf("soak: FAIL: %d unexpected errors\n", n)
		ok = false
	}
	if len(reports) < 2 {
		fmt.Println("soak: FAIL: fewer than two reports; make -duration a few -report long")
		return false, nil
	}
	from := 0
	for i, at := range reportAt {
		if at >= 2*time.Minute-time.Second {
			from = i
			break
		}
	}
	how := "from the report at minute 2"
	if o.duration < 3*time.Minute || from >= len(reports)-1 {
		from = 0
		how = "from the first report (-duration under 3 m)"
	}
	last := len(reports) - 1
	for _, h := range heaps.procs {
		a, b := reports[from][h.name], reports[last][h.name]
		growth := (b - a) / a * 100
		verdict := "ok"
		if a <= 0 || growth > 10 {
			verdict = "FAIL: more than 10 %"
			ok = false
		}
		fmt.Printf("soak: %s %s %s %.1f MiB (%s) → %.1f MiB (%s): %+.1f %% %s\n", h.name, heaps.kind[h.name], how,
			a/(1<<20), reportAt[from].Round(time.Second), b/(1<<20), reportAt[last].Round(time.Second), growth, verdict)
	}
	if ok {
		fmt.Println("soak: PASS")
	}
	return ok, nil
}

func newCredential(name string) *iamv1alpha1.APICredential {
	return &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: iamv1alpha1.APICredentialSpec{
			DisplayName: "soak " + name,
			APIs:        []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}},
			Rotation:    iamv1alpha1.Rotation{GracePeriod: &metav1.Duration{Duration: grace}},
		},
	}
}

// waitIssued waits until cr's credential is Ready and Active (Issued) at keyVersion version
// (any, when version is -1) and its Secret holds that version's data, then records its
// client ID and secret.
func (s *soak) waitIssued(ctx context.Context, cr *cred, version int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := "not found"
	for time.Now().Before(deadline) {
		var obj iamv1alpha1.APICredential
		err := s.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: cr.name}, &obj)
		if err == nil && version < 0 {
			version = obj.Status.KeyVersion // any: what the credential reports
		}
		if err == nil && issued(&obj) && obj.Status.KeyVersion == version && obj.Status.SecretRef != nil {
			var sec corev1.Secret
			err = s.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: obj.Status.SecretRef.Name}, &sec)
			if err == nil && sec.Annotations[iamv1alpha1.KeyVersionAnnotation] == fmt.Sprint(version) {
				s.mu.Lock()
				cr.id = string(sec.Data[iamv1alpha1.DefaultClientIDKey])
				cr.secret = string(sec.Data[iamv1alpha1.DefaultClientSecretKey])
				cr.version = version
				s.mu.Unlock()
				return nil
			}
		}
		if err == nil {
			if r := meta.FindStatusCondition(obj.Status.Conditions, iamv1alpha1.ConditionReady); r != nil {
				last = fmt.Sprintf("Ready=%s %s: %s, status key version %d", r.Status, r.Reason, r.Message, obj.Status.KeyVersion)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not issued at key version %d within %s (last: %s)", cr.name, version, timeout, last)
}

func issued(obj *iamv1alpha1.APICredential) bool {
	r := meta.FindStatusCondition(obj.Status.Conditions, iamv1alpha1.ConditionReady)
	a := meta.FindStatusCondition(obj.Status.Conditions, iamv1alpha1.ConditionActive)
	return r != nil && a != nil && r.ObservedGeneration == obj.Generation &&
		r.Status == metav1.ConditionTrue && r.Reason == iamv1alpha1.ReasonIssued && a.Status == metav1.ConditionTrue
}

func inactiveNow(obj *iamv1alpha1.APICredential) bool {
	a := meta.FindStatusCondition(obj.Status.Conditions, iamv1alpha1.ConditionActive)
	return a != nil && a.ObservedGeneration == obj.Generation && a.Status == metav1.ConditionFalse && a.Reason == iamv1alpha1.ReasonInactive
}

// expectation is what an answer of the token server should be.
type expectation int

const (
	expectOK     expectation = iota
	expectAny                // a change settling: any answer is expected
	expectRefuse             // refusal expected, acceptance is an error
)

func expect(ph phase, since, now time.Time) expectation {
	switch {
	case ph == stable:
		return expectOK
	case ph == changing || now.Before(since.Add(settle)):
		return expectAny
	default:
		return expectRefuse
	}
}

// classify records the answer code of a request of kind made under e.
func (s *soak) classify(kind string, e expectation, code int, took time.Duration) {
	ok := code == http.StatusOK
	refused := code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusTooManyRequests || code == http.StatusBadRequest
	switch {
	case e == expectOK && ok, e == expectRefuse && refused:
		s.st.add(kind, took, "")
	case e == expectAny && (ok || refused):
		s.st.add(kind, took, "")
		if !ok {
			s.st.expected(kind)
		}
	case e == expectRefuse && ok:
		s.st.add(kind, took, "accepted-while-refused")
	default:
		s.st.add(kind, took, fmt.Sprintf("status-%d", code))
	}
	if e == expectRefuse && refused {
		s.st.expected(kind)
	}
}

func (s *soak) pick(want func(*cred) bool) (int, *cred) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 20 {
		i := rand.IntN(len(s.creds))
		if want(s.creds[i]) {
			cp := *s.creds[i]
			return i, &cp
		}
	}
	return -1, nil
}

func (s *soak) tokenLoop(ctx context.Context) {
	for s.tokenRate.Wait(ctx) == nil {
		i, cr := s.pick(func(c *cred) bool { return c.id != "" })
		if cr == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := time.Now()
		if s.promote(i, now) {
			cr.phase = stable
		}
		secret, e, kind, addr := cr.secret, expect(cr.phase, cr.since, now), "token", cr.addr(0)
		if cr.old != "" && rand.IntN(10) == 0 {
			// The rotated-away secret: accepted within its grace period, refused after it.
			secret, kind, addr = cr.old, "token-old", cr.addr(1)
			switch {
			case now.Before(cr.oldUntil.Add(-settle)) && e == expectOK:
			case now.After(cr.oldUntil.Add(settle)) && cr.phase != changing:
				e = expectRefuse
			default:
				e = expectAny
			}
		}
		began := time.Now()
		code, token := s.token(ctx, cr.id, secret, addr)
		if ctx.Err() != nil {
			return
		}
		s.classify(kind, e, code, time.Since(began))
		if code == http.StatusOK && kind == "token" {
			s.mu.Lock()
			if s.creds[i].secret == secret {
				s.creds[i].token = token
			}
			s.mu.Unlock()
		}
	}
}

// promote turns a changing credential stable once its settle time has passed and no
// change owns it.
func (s *soak) promote(i int, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.creds[i]
	if c.phase == changing && !c.busy && now.After(c.since) {
		c.phase = stable
		return true
	}
	return c.phase == stable
}

func (s *soak) authzLoop(ctx context.Context) {
	for s.authzRate.Wait(ctx) == nil {
		i, cr := s.pick(func(c *cred) bool { return c.token != "" })
		if cr == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := time.Now()
		if s.promote(i, now) {
			cr.phase = stable
		}
		e := expect(cr.phase, cr.since, now)
		began := time.Now()
		code := s.authz(ctx, cr.token, cr.addr(0))
		if ctx.Err() != nil {
			return
		}
		s.classify("authz", e, code, time.Since(began))
	}
}

// addr is the client address of cr's requests in its current epoch; old (1) for those
// with the rotated-away secret.
func (c *cred) addr(old int) string {
	return fmt.Sprintf("10.%d.%d.%d", (2*c.epoch+old)%250, c.index/250, c.index%250+1)
}

func (s *soak) token(ctx context.Context, id, secret, addr string) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURL,
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	if err != nil {
		return 0, ""
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	req.Header.Set("X-Forwarded-For", addr)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, ""
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.AccessToken == "" {
		return -1, ""
	}
	return resp.StatusCode, body.AccessToken
}

func (s *soak) authz(ctx context.Context, token, addr string) int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.authzURL, nil)
	if err != nil {
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Forwarded-Method", "GET")
	req.Header.Set("X-Forwarded-Uri", "/v2/users")
	req.Header.Set("X-Forwarded-For", addr)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// lifecycleLoop starts a change every o.changeEvery on a stable credential no change owns:
// a rotation, a deactivation (reactivated later) or a delete (re-created), each in a
// goroutine of its own that waits for the outcome.
func (s *soak) lifecycleLoop(ctx context.Context, wg *sync.WaitGroup) {
	t := time.NewTicker(s.o.changeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		var cr *cred
		for range 20 {
			c := s.creds[rand.IntN(len(s.creds))]
			if !c.busy && c.phase == stable {
				cr = c
				break
			}
		}
		if cr != nil {
			cr.busy = true
			cr.epoch++
		}
		s.mu.Unlock()
		if cr == nil {
			continue
		}
		switch rand.IntN(3) {
		case 0:
			wg.Go(func() { s.rotate(ctx, cr) })
		case 1:
			wg.Go(func() { s.deactivate(ctx, cr) })
		default:
			wg.Go(func() { s.recreate(ctx, cr) })
		}
	}
}

func (s *soak) set(cr *cred, f func(*cred)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(cr)
}

// done ends a change: cr turns stable settle after now.
func (s *soak) done(cr *cred) {
	s.set(cr, func(c *cred) { c.phase, c.since, c.busy, c.epoch = changing, time.Now().Add(settle), false, c.epoch+1 })
}

// failed records an unexpected error of a change; cr stays changing, owned, out of play.
func (s *soak) failed(ctx context.Context, kind string, took time.Duration, err error) {
	if ctx.Err() != nil { // the load's end
		s.st.add(kind, took, "")
		return
	}
	s.st.add(kind, took, "failed")
	fmt.Fprintf(os.Stderr, "soak: %s: %v\n", kind, err)
}

func (s *soak) update(ctx context.Context, name string, f func(*iamv1alpha1.APICredential)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var obj iamv1alpha1.APICredential
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &obj); err != nil {
			return err
		}
		f(&obj)
		return s.c.Update(ctx, &obj)
	})
}

func (s *soak) rotate(ctx context.Context, cr *cred) {
	began := time.Now()
	s.mu.Lock()
	version, oldSecret := cr.version+1, cr.secret
	cr.phase, cr.since = changing, time.Now()
	s.mu.Unlock()
	if err := s.update(ctx, cr.name, func(o *iamv1alpha1.APICredential) { o.Spec.Rotation.KeyVersion = version }); err != nil {
		s.failed(ctx, "rotate", time.Since(began), err)
		return
	}
	if err := s.waitIssued(ctx, cr, version, time.Minute); err != nil {
		s.failed(ctx, "rotate", time.Since(began), err)
		return
	}
	s.set(cr, func(c *cred) { c.old, c.oldUntil, c.token = oldSecret, began.Add(grace), "" })
	s.st.add("rotate", time.Since(began), "")
	s.done(cr)
}

func (s *soak) deactivate(ctx context.Context, cr *cred) {
	began := time.Now()
	s.set(cr, func(c *cred) { c.phase, c.since = inactive, time.Now() })
	if err := s.update(ctx, cr.name, func(o *iamv1alpha1.APICredential) { o.Spec.Active = ptr.To(false) }); err != nil {
		s.failed(ctx, "deactivate", time.Since(began), err)
		return
	}
	if err := s.waitFor(ctx, cr.name, inactiveNow, time.Minute); err != nil {
		s.failed(ctx, "deactivate", time.Since(began), err)
		return
	}
	s.st.add("deactivate", time.Since(began), "")
	if !sleep(ctx, 10*time.Second+rand.N(10*time.Second)) {
		return
	}
	began = time.Now()
	s.mu.Lock()
	cr.phase, cr.since = changing, time.Now()
	cr.epoch++
	version := cr.version
	s.mu.Unlock()
	if err := s.update(ctx, cr.name, func(o *iamv1alpha1.APICredential) { o.Spec.Active = nil }); err != nil {
		s.failed(ctx, "reactivate", time.Since(began), err)
		return
	}
	if err := s.waitIssued(ctx, cr, version, time.Minute); err != nil {
		s.failed(ctx, "reactivate", time.Since(began), err)
		return
	}
	s.st.add("reactivate", time.Since(began), "")
	s.done(cr)
}

func (s *soak) recreate(ctx context.Context, cr *cred) {
	began := time.Now()
	s.set(cr, func(c *cred) { c.phase, c.since = inactive, time.Now() })
	obj := newCredential(cr.name)
	if err := s.c.Delete(ctx, obj); err != nil {
		s.failed(ctx, "delete", time.Since(began), err)
		return
	}
	deadline := time.Now().Add(time.Minute)
	for {
		err := s.c.Get(ctx, client.ObjectKeyFromObject(obj), &iamv1alpha1.APICredential{})
		if apierrors.IsNotFound(err) {
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			s.failed(ctx, "delete", time.Since(began), cmp.Or(ctx.Err(), fmt.Errorf("%s not gone within a minute", cr.name)))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	// envtest runs no garbage collector: delete the Secret the credential owned, as the
	// cluster's would (Background propagation).
	if err := s.c.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: cr.name}}); err != nil && !apierrors.IsNotFound(err) {
		s.failed(ctx, "delete", time.Since(began), err)
		return
	}
	s.st.add("delete", time.Since(began), "")
	if !sleep(ctx, 5*time.Second+rand.N(5*time.Second)) {
		return
	}
	began = time.Now()
	s.set(cr, func(c *cred) { c.phase, c.since, c.epoch = changing, time.Now(), c.epoch+1 })
	if err := s.c.Create(ctx, newCredential(cr.name)); err != nil {
		s.failed(ctx, "create", time.Since(began), err)
		return
	}
	if err := s.waitIssued(ctx, cr, -1, time.Minute); err != nil {
		s.failed(ctx, "create", time.Since(began), err)
		return
	}
	s.set(cr, func(c *cred) { c.old, c.token = "", "" })
	s.st.add("create", time.Since(began), "")
	s.done(cr)
}

func (s *soak) waitFor(ctx context.Context, name string, cond func(*iamv1alpha1.APICredential) bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var obj iamv1alpha1.APICredential
		if err := s.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &obj); err == nil && cond(&obj) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s: condition not reached within %s", name, timeout)
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// stats counts requests, errors and latencies by kind, per report interval and in total.
type stats struct {
	mu          sync.Mutex
	requests    map[string]int
	errs        map[string]int // "kind:what"
	exp         map[string]int
	lat         map[string][]time.Duration
	totRequests map[string]int
	totErrs     map[string]int
	totExp      map[string]int
}

func newStats() *stats {
	s := &stats{totRequests: map[string]int{}, totErrs: map[string]int{}, totExp: map[string]int{}}
	s.reset()
	return s
}

func (s *stats) reset() {
	s.requests, s.errs, s.exp, s.lat = map[string]int{}, map[string]int{}, map[string]int{}, map[string][]time.Duration{}
}

func (s *stats) add(kind string, took time.Duration, err string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[kind]++
	s.totRequests[kind]++
	s.lat[kind] = append(s.lat[kind], took)
	if err != "" {
		s.errs[kind+":"+err]++
		s.totErrs[kind+":"+err]++
	}
}

func (s *stats) expected(kind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exp[kind]++
	s.totExp[kind]++
}

func (s *stats) unexpectedTotal() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.totErrs {
		n += v
	}
	return n
}

var kinds = []string{"token", "token-old", "authz", "rotate", "deactivate", "reactivate", "delete", "create"}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

func ordered(m map[string]int) string {
	var b strings.Builder
	for _, k := range kinds {
		if m[k] > 0 {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%s=%d", k, m[k])
		}
	}
	return b.String()
}

// line is one report: this interval's figures, then resets them.
func (s *stats) line(at time.Duration, heap map[string]float64, kind map[string]string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var p99 strings.Builder
	for _, k := range kinds {
		l := s.lat[k]
		if len(l) == 0 {
			continue
		}
		slices.Sort(l)
		if p99.Len() > 0 {
			p99.WriteByte(' ')
		}
		fmt.Fprintf(&p99, "%s=%s", k, fmtDur(l[int(0.99*float64(len(l)-1))]))
	}
	out := fmt.Sprintf("soak: t=%s requests: %s | unexpected errors: %s | expected refusals: %s | p99: %s | heap: manager %.1f MiB, token-server %.1f MiB (%s)",
		at.Round(time.Second), ordered(s.requests), counts(s.errs), ordered(s.exp), p99.String(),
		heap["manager"]/(1<<20), heap["token-server"]/(1<<20), kind["token-server"])
	s.reset()
	return out
}

func (s *stats) total() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("requests: %s | unexpected errors: %s | expected refusals: %s", ordered(s.totRequests), counts(s.totErrs), ordered(s.totExp))
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// heapSource is a process whose heap is sampled from its /metrics
// (go_memstats_heap_alloc_bytes), or from its VmRSS when its /metrics has no Go collector.
type heapSource struct {
	name, url string
	p         *proc.Proc
}

// heapSampler keeps, per process, the smallest sample of the current report interval: the
// heap right after a collection, the live heap, which is what a leak grows (a single
// sample of heap_alloc swings with the collector's cycle).
type heapSampler struct {
	procs []heapSource
	min   map[string]float64
	kind  map[string]string
}

func (h *heapSampler) sample(ctx context.Context) {
	if h.min == nil {
		h.min, h.kind = map[string]float64{}, map[string]string{}
	}
	for _, p := range h.procs {
		v, err := proc.Metric(ctx, p.url, "go_memstats_heap_alloc_bytes", "")
		kind := "heap_alloc, smallest 2 s sample"
		if err != nil {
			kib, err := p.p.RSSKiB()
			if err != nil {
				continue
			}
			v, kind = float64(kib)*1024, "VmRSS, smallest 2 s sample: its /metrics has no go_memstats"
		}
		h.kind[p.name] = kind
		if old, ok := h.min[p.name]; !ok || v < old {
			h.min[p.name] = v
		}
	}
}

func (h *heapSampler) take() map[string]float64 {
	m := h.min
	h.min = map[string]float64{}
	return m
}

// startProc runs bin with args as the user of kubeconfig, in the operator's namespace.
func startProc(dir, name, bin, kubeconfig string, args ...string) (*proc.Proc, error) {
	return proc.Start(dir, name, bin, []string{"KUBECONFIG=" + kubeconfig, "POD_NAMESPACE=" + systemNamespace}, args...)
}
