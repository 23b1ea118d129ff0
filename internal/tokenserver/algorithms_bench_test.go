package tokenserver_test

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/keysmith-dev/keysmith/internal/signingkey"
)

// BenchmarkHandlerTokenAlgorithm is BenchmarkHandlerToken once per signing algorithm
// (ES256 is BenchmarkHandlerToken's key; RS256 and EdDSA are what --signing-algorithm
// costs per token).
func BenchmarkHandlerTokenAlgorithm(b *testing.B) {
	for _, alg := range signingkey.Algorithms {
		b.Run(alg, func(b *testing.B) {
			f := newFixture(b)
			f.useKeys(generate(b, alg, f.clock.Now()))
			c := f.issue("bench", grants("platform-api:user"))
			h := f.srv.Handler()
			b.ReportAllocs()
			done := cpuPerOp(b)
			for b.Loop() {
				req := httpRequest(http.MethodPost, "/oauth2/token", "grant_type=client_credentials")
				req.SetBasicAuth(c.id, c.secret)
				if rec := record(h, req); rec.Code != 200 {
					b.Fatal(rec.Code)
				}
			}
			done()
		})
	}
}

// cpuPerOp reports the process's CPU time (user and system) per operation beside ns/op:
// on a machine shared with other work, wall time per operation inflates, CPU time much
// less. Call it before the loop; call the returned func after it.
func cpuPerOp(b *testing.B) func() {
	start := processCPU()
	return func() { b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op") }
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
