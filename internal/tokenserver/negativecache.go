package tokenserver

import (
	"sync"
	"time"
)

// negativeCache remembers, for a while, the digests of tokens that failed verification
// at TokenReview, so that a replayed bad token costs a map read instead of an ECDSA
// verify. TokenReview cannot rate limit by source address as /authz does: its source is
// always the API server, and limiting it would lock out every user of the cluster.
//
// It holds at most size entries (the oldest is overwritten first) and each lives for
// ttl. An entry also names the key ring it was checked against and stops counting when
// the ring changes, so a token signed by a key this replica learns later is verified again.
// Reads take no lock; adds are serialised.
type negativeCache struct {
	entries sync.Map // [32]byte -> *negativeEntry
	ttl     time.Duration

	mu   sync.Mutex
	fifo [][32]byte // ring buffer of the digests added, oldest at next
	next int
}

type negativeEntry struct {
	ring    *keyRing
	expires time.Time
}

// Bounds of the TokenReview negative cache: about 100 bytes an entry, so at most ~1 MiB.
const (
	negativeCacheSize = 10_000
	negativeCacheTTL  = 5 * time.Minute
)

func newNegativeCache(size int, ttl time.Duration) *negativeCache {
	size = max(size, 1)
	return &negativeCache{ttl: ttl, fifo: make([][32]byte, 0, size)}
}

// has reports whether the token with digest d failed verification against ring within
// the last ttl.
func (n *negativeCache) has(d [32]byte, ring *keyRing, now time.Time) bool {
	v, ok := n.entries.Load(d)
	if !ok {
		return false
	}
	e := v.(*negativeEntry)
	return e.ring == ring && now.Before(e.expires)
}

// add remembers that the token with digest d failed verification against ring at now,
// overwriting the oldest entry when the cache is full.
func (n *negativeCache) add(d [32]byte, ring *keyRing, now time.Time) {
	e := &negativeEntry{ring: ring, expires: now.Add(n.ttl)}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, loaded := n.entries.Swap(d, e); loaded {
		return // already in the ring buffer: refreshed in place
	}
	if len(n.fifo) < cap(n.fifo) {
		n.fifo = append(n.fifo, d)
		return
	}
	n.entries.Delete(n.fifo[n.next])
	n.fifo[n.next] = d
	n.next = (n.next + 1) % len(n.fifo)
}
