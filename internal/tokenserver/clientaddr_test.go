package tokenserver

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestClientAddr(t *testing.T) {
	s := New(NewStore(), Options{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"),
	}})
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy", "192.0.2.7:4000", nil, "192.0.2.7"},
		{"an untrusted peer cannot choose its address", "192.0.2.7:4000", []string{"198.51.100.1"}, "192.0.2.7"},
		{"a trusted proxy vouches for its client", "10.1.2.3:80", []string{"198.51.100.1"}, "198.51.100.1"},
		{"a chain of trusted proxies", "127.0.0.1:80", []string{"198.51.100.1, 10.9.9.9"}, "198.51.100.1"},
		{"a spoofed leftmost entry is ignored", "10.1.2.3:80", []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1"},
		{"several headers read as one list", "10.1.2.3:80", []string{"6.6.6.6", "198.51.100.1, 10.0.0.2"}, "198.51.100.1"},
		{"garbage stops the walk: no address", "10.1.2.3:80", []string{"198.51.100.1, not-an-ip"}, ""},
		{"all hops trusted", "10.1.2.3:80", []string{"10.0.0.9"}, "10.0.0.9"},
		{"IPv6 peer", "[2001:db8::1]:443", []string{"198.51.100.1"}, "2001:db8::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/authz/x", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := s.clientAddr(r); got != tc.want {
				t.Errorf("clientAddr = %q, want %q", got, tc.want)
			}
		})
	}
}
