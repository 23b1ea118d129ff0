package tokenserver

import "bytes"

// Test hooks for the tokenserver_test package (compiled into tests only).

// MaxTokenBytes is maxTokenBytes, for tests.
const MaxTokenBytes = maxTokenBytes

// SignClaims signs claims with the server's current key, as the token endpoint would:
// for tests that need a correctly signed token the endpoint would never mint.
func (s *Server) SignClaims(c *Claims) (string, error) { return s.keys.sign(c) }

// TokenCacheBytes returns the bytes the verified-token cache has accounted for.
func (s *Server) TokenCacheBytes() int64 { return s.tokens.bytes.Load() }

// PooledBuffersHold reports whether any of the next n buffers the token endpoint's pool
// hands out holds sub anywhere in its capacity; the buffers go back to the pool after.
func PooledBuffersHold(n int, sub []byte) bool {
	held := make([]*[]byte, 0, n)
	defer func() {
		for _, p := range held {
			putScratch(p, (*p)[:0])
		}
	}()
	for range n {
		p := getScratch()
		held = append(held, p)
		if bytes.Contains((*p)[:cap(*p)], sub) {
			return true
		}
	}
	return false
}
