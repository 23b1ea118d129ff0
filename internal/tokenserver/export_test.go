package tokenserver

// Test hooks for the tokenserver_test package (compiled into tests only).

// MaxTokenBytes is maxTokenBytes, for tests.
const MaxTokenBytes = maxTokenBytes

// SignClaims signs claims with the server's current key, as the token endpoint would:
// for tests that need a correctly signed token the endpoint would never mint.
func (s *Server) SignClaims(c *Claims) (string, error) { return s.keys.sign(c) }

// TokenCacheBytes returns the bytes the verified-token cache has accounted for.
func (s *Server) TokenCacheBytes() int64 { return s.tokens.bytes.Load() }
