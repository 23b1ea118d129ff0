package tokenserver

import (
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/keysmith-dev/keysmith/internal/credential"
)

// authenticate checks client credentials against the store: known client ID, a secret
// in the right format that matches the current hash or a previous one within its grace
// period (constant-time), an active and unexpired credential, and a client address addr
// inside its spec.sourceRanges. It returns the credential and the version of the secret
// that matched. Failures are rate-limited per client and address; every failure answers
// the same invalid_client, so that an address outside the ranges cannot tell a right
// secret from a wrong one (no oracle).
func (s *Server) authenticate(ca clientAuth, addr string, now time.Time) (*Credential, string, *oauthError) {
	budget := failureBudget(ca.id)
	if wait := s.limiter.blocked(budget, addr, now); wait > 0 {
		return nil, "", tooManyFailures(wait)
	}
	c, version := s.checkSecret(ca, now)
	if c != nil && !c.policy.allows(addr) {
		c = nil // outside spec.sourceRanges: the answer, and the cost, of a wrong secret
	}
	if c == nil {
		s.authFailed(budget, addr, now)
		return nil, "", invalidClient(credentialsInvalid)
	}
	return c, version, nil
}

// failureBudget is the client ID whose failure budget an attempt naming clientID spends:
// a client ID that is not well formed names no client and counts against the address
// only (""), so that no budget is keyed by (and holds) an attacker's string of up to the
// header limit.
func failureBudget(clientID string) string {
	if !credential.ValidClientID(clientID) {
		return ""
	}
	return clientID
}

// authFailed counts a refused authentication against budget and addr, and in the metrics.
func (s *Server) authFailed(budget, addr string, now time.Time) {
	s.limiter.fail(budget, addr, now)
	s.metrics.authFailures.Inc()
}

func (s *Server) checkSecret(ca clientAuth, now time.Time) (*Credential, string) {
	if credential.ParseSecret(ca.secret) != nil { // a typo or garbage: no lookup needed
		return nil, ""
	}
	c, ok := s.store.Credential(ca.id)
	if !ok || !c.usable(now) {
		return nil, ""
	}
	for i := range c.secrets {
		v := &c.secrets[i]
		if v.live(now) && v.verify(ca.secret) {
			return c, v.version
		}
	}
	return nil, ""
}

// clientAddr returns the address of the client a request comes from: the TCP peer,
// unless the peer is a trusted proxy (Options.TrustedProxies), in which case the
// X-Forwarded-For chain is walked from the right, past every trusted proxy, to the first
// address no trusted proxy vouches for ("" when a trusted hop names something that is not
// an address). A client cannot choose its address by sending the header itself, and
// failures behind an ingress are counted per real client, not per ingress.
func (s *Server) clientAddr(r *http.Request) string {
	peer := r.RemoteAddr
	if host, _, err := net.SplitHostPort(peer); err == nil {
		peer = host
	}
	if !s.trusted(peer) {
		return peer
	}
	addr := peer
	for _, xff := range slices.Backward(r.Header.Values("X-Forwarded-For")) {
		hops := strings.Split(xff, ",")
		for i := len(hops) - 1; i >= 0; i-- {
			hop := strings.TrimSpace(hops[i])
			if _, err := netip.ParseAddr(hop); err != nil {
				// A trusted proxy says the request came from something that is not an
				// address (ip:port, [ipv6], "unknown", garbage): the client is unknown,
				// not the proxy. "" is inside no spec.sourceRanges: fail closed.
				return ""
			}
			addr = hop
			if !s.trusted(hop) {
				return addr
			}
		}
	}
	return addr
}

func (s *Server) trusted(addr string) bool {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// tokenInvalid is the description of every token that fails verification.
const tokenInvalid = "the access token is invalid or expired"

// verifyToken returns the claims of a token whose signature, issuer, lifetime and expiry
// are valid, from the token cache after the first time while the key that signed it is
// still published. A failure here is a property of the token itself (and of the key
// set), never of a credential's state. It is not rate limited: TokenReview, whose source
// is always the API server, uses it; requests from clients use verifyTokenFrom. Instead a
// token that fails is remembered in the negative cache (badTokens) against the key set it
// failed with, so a replay costs a map read, not a signature check.
func (s *Server) verifyToken(token string, now time.Time) (*Claims, *oauthError) {
	return s.verifyTokenFrom(token, "", now)
}

// verifyTokenFrom is verifyToken for a request from the client address addr (/authz,
// introspection): a token that fails verification counts against the address in the
// failure limiter, and once the address has spent its budget its tokens are answered 429
// before any signature check. Only the address is charged (a failed token names no
// client it can be trusted to belong to), so a client elsewhere is never locked out. A
// token already in the cache costs no verification and is served whatever the budget.
// An empty addr is not limited (verifyToken: the negative cache instead).
func (s *Server) verifyTokenFrom(token, addr string, now time.Time) (*Claims, *oauthError) {
	var d [32]byte
	hashed := len(token) <= maxTokenBytes // longer ones are refused below, without hashing them
	if hashed {
		d = tokenDigest(token)
		if e, ok := s.tokens.get(d, now); ok {
			if s.keys.published(e.signer) {
				s.metrics.tokenCacheHits.Inc()
				return e.claims, nil
			}
			s.tokens.remove(d, e) // its key left the key set: verify (and refuse) it again
		}
	}
	var ring *keyRing // the key set a failure without an address is remembered against
	if addr == "" && hashed {
		if ring = s.keys.ring.Load(); s.badTokens.has(d, ring, now) {
			return nil, invalidToken(tokenInvalid)
		}
	}
	s.metrics.tokenCacheMisses.Inc()
	if addr != "" {
		if wait := s.limiter.blocked("", addr, now); wait > 0 {
			return nil, tooManyFailures(wait)
		}
	}
	claims, signer, err := s.keys.verify(token)
	if err != nil || !validClaims(claims, s.opts.Issuer, s.opts.MaxTokenLifetime, now) {
		switch {
		case addr != "":
			s.limiter.fail("", addr, now)
		case hashed:
			s.badTokens.add(d, ring, now)
		}
		return nil, invalidToken(tokenInvalid)
	}
	s.tokens.put(d, claims, signer, now, s.keys.published)
	return claims, nil
}

// verifyBearerFrom returns the claims of a valid access token from the client address
// addr and the credential it belongs to: the token itself (verifyTokenFrom, rate limited
// per address), then, on every request, the credential's state and the secret version
// the token was issued under (credentialOf).
func (s *Server) verifyBearerFrom(token, addr string, now time.Time) (*Claims, *Credential, *oauthError) {
	claims, oerr := s.verifyTokenFrom(token, addr, now)
	if oerr != nil {
		return nil, nil, oerr
	}
	c, oerr := s.credentialOf(claims, now)
	if oerr != nil {
		return nil, nil, oerr
	}
	return claims, c, nil
}

// credentialOf returns the credential a verified token belongs to while it accepts the
// token: known, usable (active, unexpired, not terminating) and the secret version the
// token was issued under not yet past its grace period. Checked on every request.
func (s *Server) credentialOf(claims *Claims, now time.Time) (*Credential, *oauthError) {
	c, found := s.store.Credential(claims.ClientID)
	if !found || c.Name != claims.Credential || !c.usable(now) || !c.acceptsToken(claims.SecretVersion, claims.WorkloadServiceAccount, now) {
		return nil, invalidToken(credentialsInvalid)
	}
	if s.revokedBy(c, claims.ID) { // RFC 7009 (revoke.go)
		return nil, invalidToken(tokenInvalid)
	}
	return c, nil
}
