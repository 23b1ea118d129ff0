package tokenserver

import (
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"
)

// tokenCache holds the claims of bearer tokens whose signature was verified, keyed by a
// SHA-256 digest of the token, until the token expires. ES256 verification costs about
// twice a loopback round trip; a hit costs a hash and a map read, with no lock shared by
// all requests (sync.Map reads are lock-free for keys that are present).
//
// The cache only saves signature work: every request still checks the credential in the
// Store, so revocation needs no flush.
type tokenCache struct {
	entries sync.Map // [32]byte -> *Claims
	size    atomic.Int64
	max     int64
	sweep   sync.Mutex
}

func newTokenCache(max int) *tokenCache { return &tokenCache{max: int64(max)} }

func tokenDigest(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// get returns the cached claims of a token that has not expired at now.
func (c *tokenCache) get(d [32]byte, now time.Time) (*Claims, bool) {
	v, ok := c.entries.Load(d)
	if !ok {
		return nil, false
	}
	claims := v.(*Claims)
	if now.Unix() >= claims.ExpiresAt {
		if _, loaded := c.entries.LoadAndDelete(d); loaded {
			c.size.Add(-1)
		}
		return nil, false
	}
	return claims, true
}

// put caches verified claims. When the cache is full it first drops expired entries;
// if none expired, the token is simply not cached (it will be verified again).
func (c *tokenCache) put(d [32]byte, claims *Claims, now time.Time) {
	if c.size.Load() >= c.max && !c.evictExpired(now) {
		return
	}
	if _, loaded := c.entries.LoadOrStore(d, claims); !loaded {
		c.size.Add(1)
	}
}

// evictExpired removes expired entries; it reports whether there is room afterwards.
// Only one goroutine sweeps at a time; the others do not wait.
func (c *tokenCache) evictExpired(now time.Time) bool {
	if !c.sweep.TryLock() {
		return false
	}
	defer c.sweep.Unlock()
	unix := now.Unix()
	c.entries.Range(func(k, v any) bool {
		if unix >= v.(*Claims).ExpiresAt {
			if _, loaded := c.entries.LoadAndDelete(k); loaded {
				c.size.Add(-1)
			}
		}
		return true
	})
	return c.size.Load() < c.max
}
