package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
	"github.com/keysmith-dev/keysmith/internal/signingkey"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// The servers run in a process of their own, as deployed (the token server's own pod,
// or `make dev`): the load generator re-executes itself with -serve. The child serves
// the trivial handler and the token server, prints one JSON line of serverInfo, and
// exits when its standard input closes (writing its CPU profile first, with -cpuprofile).

// serverInfo is what the server process tells the load generator.
type serverInfo struct {
	Trivial, Base string
	// TokenBases are token servers, one per signing algorithm (ES256's is Base), on the
	// same credentials.
	TokenBases            map[string]string
	ClientID, Secret      string
	CredentialBytes       float64
	Credentials, MaxProcs int
}

// serverProcess is a running server child.
type serverProcess struct {
	serverInfo
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startServer starts the server process with n credentials, profiling its CPU into
// cpuprofile when that is set.
func startServer(n int, cpuprofile string) (*serverProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-serve", fmt.Sprintf("-credentials=%d", n), "-cpuprofile="+cpuprofile)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &serverProcess{cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &p.serverInfo)
	}
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("server process: %w", err)
	}
	return p, nil
}

// stop closes the child's standard input and waits for it to exit.
func (p *serverProcess) stop() error {
	_ = p.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("server process did not exit")
	}
}

// serveMain is the server process: the trivial handler and the token server with n
// credentials, wired as cmd/token-server wires it (a usage recorder included; it is
// never flushed, since there is no API server).
func serveMain(n int, cpuprofile string) error {
	// The trivial handler answers 200 and nothing else; at /token-shaped it reads the
	// body and answers a body of a token response's size with its headers, so that the
	// token endpoint's round trip can be told from its work.
	// At /token-shaped-signed it also makes one standard-library ES256 signature (the
	// limit's, signer) of a token-sized input per request: the round trip and the
	// signature the token endpoint's limit adds up, done by a real server, measured.
	tokenShaped := []byte(`{"access_token":"` + strings.Repeat("a", 700) + `","token_type":"Bearer","expires_in":600,"scope":"platform-api:user"}`)
	es256, err := newSigner(signingkey.ES256, 700, 86)
	if err != nil {
		return err
	}
	trivial, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == memStatsPath {
			_ = json.NewEncoder(w).Encode(readMemStats())
			return
		}
		if signed := r.URL.Path == "/token-shaped-signed"; signed || r.URL.Path == "/token-shaped" {
			_, _ = io.Copy(io.Discard, r.Body)
			if signed {
				es256.sign()
			}
			h := w.Header()
			h["Content-Type"], h["Cache-Control"], h["Pragma"] = []string{"application/json"}, []string{"no-store"}, []string{"no-cache"}
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(tokenShaped)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	if err != nil {
		return err
	}
	store := tokenserver.NewStore()
	info := serverInfo{Trivial: trivial, Credentials: n, MaxProcs: runtime.GOMAXPROCS(0), TokenBases: map[string]string{}}
	for _, alg := range signingkey.Algorithms {
		url, err := serveTokenServer(store, alg)
		if err != nil {
			return err
		}
		info.TokenBases[alg] = url
	}
	info.Base = info.TokenBases[signingkey.ES256]
	store.SetAPI(&iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: "platform-api"}, Spec: iamv1alpha1.APIDefinitionSpec{
		ScopeLevel: iamv1alpha1.ScopeLevelAccount, Permissions: []iamv1alpha1.Permission{{Name: "user", Methods: []string{"GET", "POST"}}},
	}})
	heapBefore := heapAlloc()
	for i := range n {
		cid, _ := credential.NewClientID()
		s, _ := credential.NewSecret()
		obj := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "load", Name: fmt.Sprintf("cred-%d", i)},
			Spec:   iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}}},
			Status: iamv1alpha1.APICredentialStatus{ClientID: cid, SecretHash: credential.Hash(s), Account: "acme"}}
		store.SetCredential(obj)
		info.ClientID, info.Secret = cid, s
	}
	info.CredentialBytes = float64(heapAlloc()-heapBefore) / float64(n)
	runtime.KeepAlive(store)
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	line, _ := json.Marshal(info)
	if _, err := fmt.Printf("%s\n", line); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until the load generator closes it
	return nil
}

// serveTokenServer serves a token server over store whose one key is of alg.
func serveTokenServer(store *tokenserver.Store, alg string) (string, error) {
	var srv *tokenserver.Server
	base, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { srv.Handler().ServeHTTP(w, r) }))
	if err != nil {
		return "", err
	}
	srv = tokenserver.New(store, tokenserver.Options{Issuer: base, Usage: tokenserver.NewUsageReporter(nil, time.Minute)})
	now := time.Now()
	key, err := signingkey.GenerateAlgorithm(alg, now, now)
	if err != nil {
		return "", err
	}
	if err := srv.SetKeys(&signingkey.Set{Keys: []signingkey.Key{key}}); err != nil {
		return "", err
	}
	srv.SetReady()
	return base, nil
}

func serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = tokenserver.NewHTTPServer("", h).Serve(ln) }()
	return "http://" + ln.Addr().String(), nil
}

// memStatsPath is where the server process's trivial listener answers its serverMem, so
// that the load generator can tell each target's allocations and GC time on the server
// from their sums (read between the targets, not during a load).
const memStatsPath = "/memstats"

// serverMem are the server process's cumulative allocation and garbage collection figures.
type serverMem struct {
	// Bytes and Objects are the heap bytes and objects allocated so far; Cycles the
	// completed GC cycles.
	Bytes, Objects uint64
	Cycles         uint32
	// GCSeconds is the CPU time the GC has spent so far (runtime/metrics'
	// /cpu/classes/gc/total: background marking, assists and pauses, an estimate
	// the runtime keeps), so that GC shows per request beside the process's CPU time.
	GCSeconds float64
}

func readMemStats() serverMem {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	var gc float64
	if s[0].Value.Kind() == metrics.KindFloat64 {
		gc = s[0].Value.Float64()
	}
	return serverMem{Bytes: m.TotalAlloc, Objects: m.Mallocs, Cycles: m.NumGC, GCSeconds: gc}
}

// heapAlloc returns the live heap after a full collection.
func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// absPath makes a profile path absolute, so that the child writes it where the caller
// meant whatever its working directory.
func absPath(p string) (string, error) { return filepath.Abs(p) }
