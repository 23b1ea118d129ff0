package tokenserver

import (
	"crypto/sha256"
	"strings"
	"testing"
)

// tokenDigest is SHA-256 of the token at every length around its buffer's size, and
// allocates nothing (the reason it does not convert the token to a []byte).
func TestTokenDigest(t *testing.T) {
	for _, n := range []int{0, 1, 32, 255, 256, 257, 512, 700, 4097} {
		token := strings.Repeat("eyJhbGciOiJFUzI1NiJ9.", n/21+1)[:n]
		if got, want := tokenDigest(token), sha256.Sum256([]byte(token)); got != want {
			t.Errorf("tokenDigest of %d bytes = %x, want %x", n, got, want)
		}
	}
	token := strings.Repeat("x", 700)
	if allocs := testing.AllocsPerRun(100, func() { _ = tokenDigest(token) }); allocs != 0 {
		t.Errorf("tokenDigest of a 700-byte token allocates %v times, want 0", allocs)
	}
}
