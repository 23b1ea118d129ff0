package tokenserver

import (
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// failureLimiter rate-limits failed authentications per (client ID, source address) and
// per source address (an IPv6 address's /64, budgetAddr); bearer tokens that fail
// verification spend the address's budget only (a clientID of ""). Keying the client's budget by address as well means an attacker
// hammering one client ID does not lock the legitimate client out from elsewhere, while
// the per-address budget stops enumeration of client IDs from one place. Only failures
// spend the budget; a successful request never waits on it.
type failureLimiter struct {
	limit   rate.Limit
	burst   int
	buckets sync.Map // string -> *rate.Limiter
	// size counts the buckets, so that blocked costs one atomic load, and builds no
	// keys, while nobody has failed recently: the common case on the request path.
	size    atomic.Int64
	sweepMu sync.Mutex
}

func newFailureLimiter(limit rate.Limit, burst int) *failureLimiter {
	return &failureLimiter{limit: limit, burst: burst}
}

// budgetKeys returns the budgets a failure of clientID from addr spends: the address's, and,
// when clientID is not "" (it names a client), the pair's.
func budgetKeys(clientID, addr string) (addrKey, pairKey string) {
	b := budgetAddr(addr)
	if clientID != "" {
		pairKey = "c\x00" + clientID + "\x00" + b
	}
	return "a\x00" + b, pairKey
}

// budgetAddr is the part of a client address a failure budget belongs to: an IPv4 address
// itself, but the /64 of an IPv6 one, since a single host is routinely given a whole /64
// and could otherwise use a fresh address for every request.
func budgetAddr(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	if ip.Is4In6() {
		return ip.Unmap().String()
	}
	if !ip.Is6() {
		return addr
	}
	return netip.PrefixFrom(ip.WithZone(""), 64).Masked().String()
}

// blocked returns the seconds to wait when the client or the address has spent its
// budget of failures, or 0. A clientID of "" names no client (a malformed client ID, a
// bearer token that failed verification): only the address's budget applies. It takes
// no lock, and builds no keys, unless a failure was recorded recently.
func (l *failureLimiter) blocked(clientID, addr string, now time.Time) int {
	if l.size.Load() == 0 {
		return 0
	}
	addrKey, pairKey := budgetKeys(clientID, addr)
	wait := l.wait(addrKey, now)
	if pairKey != "" {
		wait = max(wait, l.wait(pairKey, now))
	}
	return wait
}

func (l *failureLimiter) wait(key string, now time.Time) int {
	v, ok := l.buckets.Load(key)
	if !ok {
		return 0
	}
	tokens := v.(*rate.Limiter).TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return int(math.Ceil((1 - tokens) / float64(l.limit)))
}

// fail records a failed authentication of clientID ("" names no client) from addr.
func (l *failureLimiter) fail(clientID, addr string, now time.Time) {
	addrKey, pairKey := budgetKeys(clientID, addr)
	l.spend(addrKey, now)
	if pairKey != "" {
		l.spend(pairKey, now)
	}
}

func (l *failureLimiter) spend(key string, now time.Time) {
	v, ok := l.buckets.Load(key)
	if !ok {
		var loaded bool
		if v, loaded = l.buckets.LoadOrStore(key, rate.NewLimiter(l.limit, l.burst)); !loaded {
			l.size.Add(1)
		}
	}
	v.(*rate.Limiter).AllowN(now, 1)
}

// sweep forgets buckets that have refilled, bounding memory to recent offenders.
func (l *failureLimiter) sweep(now time.Time) {
	if !l.sweepMu.TryLock() {
		return
	}
	defer l.sweepMu.Unlock()
	l.buckets.Range(func(k, v any) bool {
		if v.(*rate.Limiter).TokensAt(now) >= float64(l.burst) {
			if _, loaded := l.buckets.LoadAndDelete(k); loaded {
				l.size.Add(-1)
			}
		}
		return true
	})
}
