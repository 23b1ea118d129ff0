package tokenserver

import (
	"testing"
	"time"

	"github.com/keysmith-dev/keysmith/internal/signingkey"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

func benchKeys(b *testing.B) (*Server, *Claims) { return benchKeysFor(b, signingkey.ES256) }

func benchKeysFor(b *testing.B, alg string) (*Server, *Claims) {
	b.Helper()
	s := New(NewStore(), Options{Issuer: "https://keysmith.example"})
	now := time.Now()
	k, err := signingkey.GenerateAlgorithm(alg, now, now)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.SetKeys(&signingkey.Set{Keys: []signingkey.Key{k}}); err != nil {
		b.Fatal(err)
	}
	return s, &Claims{
		Issuer: "https://keysmith.example", Subject: "ksc_abc", Audience: []string{"platform-api"},
		IssuedAt: now.Unix(), ExpiresAt: now.Add(10 * time.Minute).Unix(), ID: "jti-0123456789abcdef",
		ClientID: "ksc_abc", Scope: "platform-api:user", Credential: "team-a/automation", Account: "acme",
		APIs: map[string]string{"platform-api": "user"}, SecretVersion: "1",
	}
}

// BenchmarkSignToken is the ES256 signing path of the token endpoint, claims included.
func BenchmarkSignToken(b *testing.B) {
	s, c := benchKeys(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.keys.sign(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyToken is a full ES256 verification and claims decode (a token-cache miss).
func BenchmarkVerifyToken(b *testing.B) {
	s, c := benchKeys(b)
	tok, err := s.keys.sign(c)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.keys.verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignTokenAlgorithm and BenchmarkVerifyTokenAlgorithm are the two above for
// each signing algorithm (ES256 again, to compare within one run).
func BenchmarkSignTokenAlgorithm(b *testing.B) {
	for _, alg := range signingkey.Algorithms {
		b.Run(alg, func(b *testing.B) {
			s, c := benchKeysFor(b, alg)
			b.ReportAllocs()
			done := testenv.CPUPerOp(b)
			for b.Loop() {
				if _, err := s.keys.sign(c); err != nil {
					b.Fatal(err)
				}
			}
			done()
		})
	}
}

func BenchmarkVerifyTokenAlgorithm(b *testing.B) {
	for _, alg := range signingkey.Algorithms {
		b.Run(alg, func(b *testing.B) {
			s, c := benchKeysFor(b, alg)
			tok, err := s.keys.sign(c)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			done := testenv.CPUPerOp(b)
			for b.Loop() {
				if _, _, err := s.keys.verify(tok); err != nil {
					b.Fatal(err)
				}
			}
			done()
		})
	}
}
