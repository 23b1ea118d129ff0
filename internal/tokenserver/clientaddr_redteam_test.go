package tokenserver

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

// TestClientAddrUnparsableHopIsNotTheProxy: a trusted proxy that forwards a client as
// something other than a bare address (Azure Application Gateway and some others append
// ip:port; "[2001:db8::1]"; "unknown") must not make the request look as if it came from
// the proxy itself. A credential whose spec.sourceRanges contain the proxy's address
// (10.0.0.0/8: "in-cluster only", the ingress being in-cluster) was usable from anywhere.
func TestClientAddrUnparsableHopIsNotTheProxy(t *testing.T) {
	s := New(NewStore(), Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	inCluster := parseSourceRanges([]string{"10.0.0.0/8"})
	for _, hop := range []string{"203.0.113.9:51234", "[2001:db8::9]", "unknown", "203.0.113.9, 10.0.0.7:80"} {
		r := httptest.NewRequest("POST", "/oauth2/token", nil)
		r.RemoteAddr = "10.1.2.3:443" // the ingress
		r.Header.Add("X-Forwarded-For", hop)
		addr := s.clientAddr(r)
		if inCluster.allows(addr) {
			t.Errorf("X-Forwarded-For %q from a trusted proxy: client address %q is inside 10.0.0.0/8", hop, addr)
		}
	}
}
