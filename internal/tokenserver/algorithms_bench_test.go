package tokenserver_test

import (
	"net/http"
	"testing"

	"github.com/keysmith-dev/keysmith/internal/signingkey"
	"github.com/keysmith-dev/keysmith/internal/testenv"
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
			done := testenv.CPUPerOp(b)
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
