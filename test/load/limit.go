package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The physical limits an endpoint is measured against, each the machine time of the work
// the endpoint cannot avoid, measured in the same run as the load (between its rounds):
//
//	token endpoint: 1 / (1/trivial + tSign)
//	/authz:         1 / (1/trivialHeaders + tCheck)
//
// trivial is the trivial handler's requests/s; trivialHeaders the same with /authz's
// request headers (the bearer token, X-Forwarded-*); tSign one standard-library signature
// of the endpoint's algorithm over a token's signing input (ES256: SHA-256 and
// ecdsa.SignASN1 on P-256 with crypto/rand; RS256: SHA-256 and rsa.SignPKCS1v15 with a
// 2048-bit key; EdDSA: ed25519.Sign), and tCheck the cached check (SHA-256 of the token, one sync.Map read), each
// as machine time: with every core busy with it, wall time over the operations done, so
// that it adds to 1/trivial (the round trip's machine time, client and server included)
// like for like. A core's time per operation is GOMAXPROCS times that.
//
// On a machine shared with other work the wall times mislead: the scheduler shares the
// cores out by runnable thread, and a load of 32 clients and a server gets a larger share
// than GOMAXPROCS signing goroutines. So the run also states each fraction by CPU time,
// which other work barely changes: the CPU per request (client and server process) of the
// trivial round trip plus the CPU of the operation, over the endpoint's CPU per request.
// On an idle machine, with every core busy, the two agree.

// machineTime runs op on GOMAXPROCS goroutines for d and returns the wall time and the
// CPU time (of this process, otherwise idle) per operation.
func machineTime(d time.Duration, op func()) (wall, cpu time.Duration) {
	var (
		n    atomic.Int64
		stop atomic.Bool
		wg   sync.WaitGroup
	)
	cpu0 := cpuNow(0).client
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				op()
				n.Add(1)
			}
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	elapsed, used := time.Since(start), cpuNow(0).client-cpu0
	return time.Duration(float64(elapsed) / float64(n.Load())), time.Duration(float64(used) / float64(n.Load()))
}

// signer measures one standard-library signature of an algorithm.
type signer struct {
	alg   string
	ec    *ecdsa.PrivateKey
	rsa   *rsa.PrivateKey
	ed    ed25519.PrivateKey
	input []byte
}

// newSigner returns the signer of alg for a token of tokenLen bytes whose signature
// segment is sigLen long.
func newSigner(alg string, tokenLen, sigLen int) (*signer, error) {
	s := &signer{alg: alg}
	var err error
	switch alg {
	case "ES256":
		s.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "RS256":
		s.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	case "EdDSA":
		_, s.ed, err = ed25519.GenerateKey(rand.Reader)
	default:
		err = fmt.Errorf("no signer for %s", alg)
	}
	if err != nil {
		return nil, err
	}
	s.input = make([]byte, max(tokenLen-sigLen-1, 1)) // the token without ".signature"
	for i := range s.input {
		s.input[i] = 'a' + byte(i%26)
	}
	return s, nil
}

func (s *signer) sign() {
	var err error
	switch {
	case s.ec != nil:
		d := sha256.Sum256(s.input)
		_, err = ecdsa.SignASN1(rand.Reader, s.ec, d[:])
	case s.rsa != nil:
		d := sha256.Sum256(s.input)
		_, err = rsa.SignPKCS1v15(rand.Reader, s.rsa, crypto.SHA256, d[:])
	default:
		_ = ed25519.Sign(s.ed, s.input)
	}
	if err != nil {
		panic(err)
	}
}

// checker measures the cached check of a bearer token: its SHA-256 and one map read.
type checker struct {
	token string
	cache sync.Map
}

func newChecker(token string) *checker {
	c := &checker{token: token}
	c.cache.Store(sha256.Sum256([]byte(token)), struct{}{})
	return c
}

func (c *checker) check() {
	if _, ok := c.cache.Load(sha256.Sum256([]byte(c.token))); !ok {
		panic("cached check: miss")
	}
}

// limit is the requests/s of a round trip of rps requests/s plus t of machine time.
func limit(rps float64, t time.Duration) float64 { return 1 / (1/rps + t.Seconds()) }
