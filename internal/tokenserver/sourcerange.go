package tokenserver

import (
	"net/netip"
	"time"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// credentialPolicy is what a credential's spec.sourceRanges and spec.tokenPolicy say, as
// the store holds it. A credential that sets neither has none (nil): its requests pay one
// nil check, and the store holds one pointer for it.
type credentialPolicy struct {
	sourceRanges sourceRanges
	// tokenLifetime is spec.tokenPolicy.lifetime; 0: unset (the server's default).
	tokenLifetime time.Duration
}

// policyFrom returns the policy of a credential's spec; nil when it sets none.
func policyFrom(spec *iamv1alpha1.APICredentialSpec) *credentialPolicy {
	p := credentialPolicy{sourceRanges: parseSourceRanges(spec.SourceRanges)}
	if l := spec.TokenPolicy.Lifetime; l != nil && l.Duration > 0 {
		p.tokenLifetime = l.Duration
	}
	if p.sourceRanges == nil && p.tokenLifetime == 0 {
		return nil
	}
	return &p
}

// allows reports whether the client address addr may use the credential.
func (p *credentialPolicy) allows(addr string) bool {
	return p == nil || p.sourceRanges.allows(addr)
}

// restricted reports whether the credential has source ranges: then it cannot be used
// where no client address is known (TokenReview).
func (p *credentialPolicy) restricted() bool { return p != nil && p.sourceRanges != nil }

// lifetime is spec.tokenPolicy.lifetime; 0 when unset.
func (p *credentialPolicy) lifetime() time.Duration {
	if p == nil {
		return 0
	}
	return p.tokenLifetime
}

// sourceRanges are a credential's spec.sourceRanges, parsed once when the store records
// the credential so that a request costs no parsing of them. nil means any address (the
// field is empty or unset): the check is then one nil comparison. A non-nil value allows
// only the addresses its prefixes contain; an empty non-nil value allows none.
type sourceRanges []netip.Prefix

// parseSourceRanges parses spec.sourceRanges. It fails closed: an entry the CRD's CEL
// rule would refuse (not a CIDR, bits set after the prefix, an IPv4-mapped IPv6 range),
// which an object admitted under an older schema may hold, is dropped rather than read
// generously, and a list whose entries are all dropped allows no address at all, never
// any address.
func parseSourceRanges(in []string) sourceRanges {
	if len(in) == 0 {
		return nil
	}
	out := make(sourceRanges, 0, len(in))
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil || p != p.Masked() || p.Addr().Is4In6() {
			continue
		}
		out = append(out, p)
	}
	return out
}

// allows reports whether the client address addr (clientAddr's answer: an IP address,
// without port) is in the ranges. An address that does not parse is outside every range.
// IPv4-mapped IPv6 addresses (a dual-stack listener's view of an IPv4 peer) count as
// their IPv4 address, and an IPv6 zone is ignored.
func (r sourceRanges) allows(addr string) bool {
	if r == nil {
		return true
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range r {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// tokenLifetime is how long a token issued for a credential whose spec.tokenPolicy.lifetime
// is policy (0: unset) lives: min(policy, --max-token-lifetime), else --token-lifetime.
func (o *Options) tokenLifetime(policy time.Duration) time.Duration {
	if policy <= 0 {
		return o.TokenLifetime
	}
	return min(policy, o.MaxTokenLifetime)
}
