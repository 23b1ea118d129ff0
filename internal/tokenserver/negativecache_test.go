package tokenserver

import (
	"testing"
	"time"
)

func TestNegativeCacheIsBoundedAndExpires(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	ringA, ringB := &keyRing{}, &keyRing{}
	d := func(b byte) [32]byte { return [32]byte{b} }
	n := newNegativeCache(2, time.Minute)

	n.add(d(1), ringA, now)
	n.add(d(2), ringA, now)
	n.add(d(2), ringA, now) // a refresh takes no second slot
	if !n.has(d(1), ringA, now) || !n.has(d(2), ringA, now) || n.len() != 2 {
		t.Fatalf("two entries within the bound: has(1)=%v has(2)=%v len=%d", n.has(d(1), ringA, now), n.has(d(2), ringA, now), n.len())
	}
	n.add(d(3), ringA, now)
	if n.has(d(1), ringA, now) || !n.has(d(3), ringA, now) || n.len() != 2 {
		t.Errorf("a third entry must overwrite the oldest: has(1)=%v has(3)=%v len=%d", n.has(d(1), ringA, now), n.has(d(3), ringA, now), n.len())
	}
	if n.has(d(3), ringB, now) {
		t.Error("an entry checked against another key ring still counts")
	}
	if n.has(d(3), ringA, now.Add(time.Minute)) {
		t.Error("an entry outlives its ttl")
	}
}

// len returns the number of entries held, expired or not (for tests).
func (n *negativeCache) len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.fifo)
}
