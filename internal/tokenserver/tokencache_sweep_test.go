package tokenserver

import (
	"testing"
	"time"
)

// TestTokenCacheMakesRoom: a full cache drops expired entries and entries whose key left
// the key set to make room, at most once per sweepInterval, and otherwise does not cache.
func TestTokenCacheMakesRoom(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	claims := func(exp time.Time) *Claims {
		return &Claims{Issuer: "https://keysmith.example", Subject: "ksc_abc", ExpiresAt: exp.Unix(), APIs: map[string]string{}}
	}
	size := cacheEntryOverhead + claimsFootprint(claims(t0))
	c := newTokenCache(3 * size)
	live := func(verifiedBy) bool { return true }
	for i := range 3 {
		c.put([32]byte{byte(i)}, claims(t0.Add(10*time.Second)), verifiedBy{header: "old"}, t0, live)
	}
	if got := c.bytes.Load(); got != 3*size {
		t.Fatalf("three entries account for %d bytes, want %d", got, 3*size)
	}
	c.put([32]byte{3}, claims(t0.Add(time.Hour)), verifiedBy{header: "new"}, t0, live)
	if _, ok := c.get([32]byte{3}, t0); ok || c.bytes.Load() > c.maxBytes {
		t.Fatalf("a full cache of live entries took a fourth (bytes %d of %d)", c.bytes.Load(), c.maxBytes)
	}
	// Half a second later the entries are still live and no new sweep is due.
	c.put([32]byte{3}, claims(t0.Add(time.Hour)), verifiedBy{header: "new"}, t0.Add(500*time.Millisecond), live)
	if _, ok := c.get([32]byte{3}, t0); ok {
		t.Fatal("cached without room")
	}
	// Once their key is gone they make room, on the next sweep.
	gone := func(v verifiedBy) bool { return v.header != "old" }
	c.put([32]byte{3}, claims(t0.Add(time.Hour)), verifiedBy{header: "new"}, t0.Add(2*time.Second), gone)
	if _, ok := c.get([32]byte{3}, t0.Add(2*time.Second)); !ok {
		t.Fatal("entries of a removed key did not make room")
	}
	if got := c.bytes.Load(); got != size {
		t.Errorf("after the sweep the cache accounts for %d bytes, want %d", got, size)
	}
	// Expired entries make room too.
	for i := range 2 {
		c.put([32]byte{byte(10 + i)}, claims(t0.Add(5*time.Second)), verifiedBy{header: "new"}, t0.Add(2*time.Second), live)
	}
	c.put([32]byte{20}, claims(t0.Add(time.Hour)), verifiedBy{header: "new"}, t0.Add(6*time.Second), live)
	if _, ok := c.get([32]byte{20}, t0.Add(6*time.Second)); !ok || c.bytes.Load() != 2*size {
		t.Errorf("expired entries did not make room (bytes %d, want %d)", c.bytes.Load(), 2*size)
	}
}
