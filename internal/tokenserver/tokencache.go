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
// It is bounded in bytes, not entries: a credential with 64 workspaces and 32 APIs gives
// claims of tens of KiB, so a count bound says nothing about memory. Each entry is
// charged an estimate of the heap it holds (claimsFootprint); a token that does not fit
// once expired entries are gone is simply not cached (it is verified again).
//
// Each entry remembers the key that signed it: a lookup whose key has left the key set is
// a miss (and the entry is dropped), so removing a key revokes its tokens at once.
//
// The cache only saves signature work: every request still checks the credential in the
// Store, so revocation needs no flush.
type tokenCache struct {
	entries  sync.Map // [32]byte -> *cachedToken
	bytes    atomic.Int64
	maxBytes int64
	sweep    sync.Mutex
	// nextSweep (Unix nanoseconds) spaces the sweeps a full cache makes for room, so that
	// a cache full of live tokens does not walk all its entries on every miss.
	nextSweep atomic.Int64
}

// sweepInterval is the least time between two sweeps for room.
const sweepInterval = time.Second

// cachedToken is a verified token: its claims and the key that signed it.
type cachedToken struct {
	claims *Claims
	signer verifiedBy
	size   int64 // bytes charged against the cache's bound
}

func newTokenCache(maxBytes int64) *tokenCache { return &tokenCache{maxBytes: maxBytes} }

// tokenDigest is the cache key of a token. sha256.Sum256([]byte(token)) copies any token
// longer than 32 bytes to the heap (the conversion does not escape, but its stack buffer
// holds only 32 bytes); the token is fed to the hash through a stack buffer instead: no
// allocation, as fast, and no unsafe aliasing of the string's bytes.
func tokenDigest(token string) [32]byte {
	h := sha256.New()
	var buf [256]byte
	for token != "" {
		n := copy(buf[:], token)
		_, _ = h.Write(buf[:n])
		token = token[n:]
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// get returns the cached entry of a token that has not expired at now.
func (c *tokenCache) get(d [32]byte, now time.Time) (*cachedToken, bool) {
	v, ok := c.entries.Load(d)
	if !ok {
		return nil, false
	}
	e := v.(*cachedToken)
	if now.Unix() >= e.claims.ExpiresAt {
		c.remove(d, e)
		return nil, false
	}
	return e, true
}

// remove drops the entry if it is still the one cached under d.
func (c *tokenCache) remove(d [32]byte, e *cachedToken) {
	if c.entries.CompareAndDelete(d, e) {
		c.bytes.Add(-e.size)
	}
}

// put caches verified claims. When the cache has no room it first drops expired entries
// and those whose key left the key set (published reports whether a key still is), at
// most once per sweepInterval; if there is still no room, the token is simply not cached.
func (c *tokenCache) put(d [32]byte, claims *Claims, signer verifiedBy, now time.Time, published func(verifiedBy) bool) {
	e := &cachedToken{claims: claims, signer: signer, size: cacheEntryOverhead + claimsFootprint(claims)}
	if e.size > c.maxBytes {
		return
	}
	if c.bytes.Load()+e.size > c.maxBytes && !c.makeRoom(now, published, e.size) {
		return
	}
	if _, loaded := c.entries.LoadOrStore(d, e); !loaded {
		c.bytes.Add(e.size)
	}
}

// makeRoom sweeps (evict) unless the last sweep for room was less than sweepInterval ago.
func (c *tokenCache) makeRoom(now time.Time, published func(verifiedBy) bool, need int64) bool {
	next := c.nextSweep.Load()
	if now.UnixNano() < next || !c.nextSweep.CompareAndSwap(next, now.Add(sweepInterval).UnixNano()) {
		return false
	}
	return c.evict(now, published, need)
}

// evict removes expired entries and, when published is not nil, entries signed by a key
// that is no longer published; it reports whether need more bytes fit afterwards. Only
// one goroutine sweeps at a time; the others do not wait.
func (c *tokenCache) evict(now time.Time, published func(verifiedBy) bool, need int64) bool {
	if !c.sweep.TryLock() {
		return false
	}
	defer c.sweep.Unlock()
	unix := now.Unix()
	c.entries.Range(func(k, v any) bool {
		e := v.(*cachedToken)
		if unix >= e.claims.ExpiresAt || (published != nil && !published(e.signer)) {
			c.remove(k.([32]byte), e)
		}
		return true
	})
	return c.bytes.Load()+need <= c.maxBytes
}

// verifiedBy names the key a token was verified with: the exact JWS header segment
// (which carries the kid) and the public key it mapped to.
type verifiedBy struct {
	header string
	pub    *verifyKey
}

// cacheEntryOverhead is the heap of one cache entry apart from its claims' contents: the
// sync.Map node and digest key, the cachedToken, the Claims struct and its map's header.
const cacheEntryOverhead = 640

// claimsFootprint estimates, from above, the heap that decoded claims hold beyond
// cacheEntryOverhead: every string's bytes with its header and size-class rounding,
// slice backing arrays at up to twice their length (append growth), and the APIs map at
// up to twice its entries (map growth). TestTokenCacheFootprintIsAnUpperBound checks it
// against the heap that decoding really takes.
func claimsFootprint(c *Claims) int64 {
	n := strBytes(c.Issuer) + strBytes(c.Subject) + strBytes(c.ID) + strBytes(c.ClientID) +
		strBytes(c.Scope) + strBytes(c.Credential) + strBytes(c.Account) + strBytes(c.SecretVersion) + strBytes(c.WorkloadServiceAccount)
	for _, s := range c.Audience {
		n += 2*16 + strBytes(s)
	}
	for _, s := range c.Workspaces {
		n += 2*16 + strBytes(s)
	}
	for k, v := range c.APIs {
		n += 2*(16+16+8) + strBytes(k) + strBytes(v)
	}
	return n
}

// strBytes is the heap of a string's contents: its length rounded up to the allocator's
// size class (at most an eighth more, and 16 bytes at least) plus an allocation header.
func strBytes(s string) int64 {
	if s == "" {
		return 0
	}
	n := int64(len(s))
	if n > 32<<10 { // a large object: whole 8 KiB pages
		return n + 8<<10
	}
	return 16 + max(16, n+n/8+8)
}
