package tokenserver

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func TestSourceRangesAllows(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ranges []string
		addr   string
		want   bool
	}{
		{"no ranges: anywhere", nil, "203.0.113.9", true},
		{"an empty list: anywhere", []string{}, "203.0.113.9", true},
		{"no ranges: even an address that does not parse", nil, "", true},
		{"inside an IPv4 range", []string{"10.1.0.0/16"}, "10.1.200.3", true},
		{"outside an IPv4 range", []string{"10.1.0.0/16"}, "10.2.0.1", false},
		{"one address, /32", []string{"192.0.2.7/32"}, "192.0.2.7", true},
		{"one address, /32, another", []string{"192.0.2.7/32"}, "192.0.2.8", false},
		{"the second range matches", []string{"10.1.0.0/16", "2001:db8::/32"}, "2001:db8:1::5", true},
		{"inside an IPv6 range", []string{"2001:db8::/32"}, "2001:db8::1", true},
		{"outside an IPv6 range", []string{"2001:db8::/32"}, "2001:db9::1", false},
		{"IPv6 range in upper case", []string{"2001:DB8::/32"}, "2001:db8::1", true},
		{"an IPv4-mapped client address counts as IPv4", []string{"10.1.0.0/16"}, "::ffff:10.1.2.3", true},
		{"an IPv4 range does not hold IPv6 addresses", []string{"0.0.0.0/0"}, "2001:db8::1", false},
		{"an IPv6 range does not hold IPv4 addresses", []string{"::/0"}, "10.1.2.3", false},
		{"a zone is ignored", []string{"fe80::/10"}, "fe80::1%eth0", true},
		{"an address that does not parse is outside", []string{"10.0.0.0/8"}, "not-an-ip", false},
		{"an empty address is outside", []string{"10.0.0.0/8"}, "", false},
		{"fail closed: a non-CIDR entry allows nothing", []string{"10.0.0.1"}, "10.0.0.1", false},
		{"fail closed: host bits set allow nothing (not the whole network)", []string{"10.0.0.1/8"}, "10.9.9.9", false},
		{"fail closed: an IPv4-mapped range allows nothing", []string{"::ffff:10.0.0.0/104"}, "10.0.0.1", false},
		{"fail closed: a bad entry does not hide a good one", []string{"garbage", "10.0.0.0/8"}, "10.0.0.1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseSourceRanges(tc.ranges).allows(tc.addr); got != tc.want {
				t.Errorf("ranges %q allow %q = %v, want %v", tc.ranges, tc.addr, got, tc.want)
			}
		})
	}
}

func TestParseSourceRangesNilOnlyWhenEmpty(t *testing.T) {
	if parseSourceRanges(nil) != nil || parseSourceRanges([]string{}) != nil {
		t.Error("an empty list must be nil: the hot path's one nil check")
	}
	if r := parseSourceRanges([]string{"garbage"}); r == nil {
		t.Error("a list whose entries all fail must not read as anywhere (nil)")
	}
}

func TestTokenLifetime(t *testing.T) {
	o := Options{TokenLifetime: 10 * time.Minute, MaxTokenLifetime: time.Hour}
	for _, tc := range []struct {
		policy, want time.Duration
	}{
		{0, 10 * time.Minute},              // unset: --token-lifetime
		{5 * time.Minute, 5 * time.Minute}, // shorter than the default
		{30 * time.Minute, 30 * time.Minute},
		{time.Hour, time.Hour},
		{24 * time.Hour, time.Hour}, // capped by --max-token-lifetime
	} {
		if got := o.tokenLifetime(tc.policy); got != tc.want {
			t.Errorf("tokenLifetime(%v) = %v, want %v", tc.policy, got, tc.want)
		}
	}
}

// BenchmarkSourceRangesAllows is the cost /authz pays per request for a credential with
// ranges (the address is parsed once per request) and without (one nil check).
func BenchmarkSourceRangesAllows(b *testing.B) {
	for _, bc := range []struct {
		name   string
		ranges []string
	}{
		{"none", nil},
		{"one", []string{"10.0.0.0/8"}},
		{"eight-last-matches", []string{"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "172.16.0.0/12", "100.64.0.0/10", "fd00::/8", "10.0.0.0/8"}},
	} {
		r := parseSourceRanges(bc.ranges)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !r.allows("10.20.30.40") {
					b.Fatal("refused")
				}
			}
		})
	}
}

func TestPolicyFrom(t *testing.T) {
	if p := policyFrom(&iamv1alpha1.APICredentialSpec{}); p != nil {
		t.Errorf("a spec without ranges or lifetime: %+v, want nil (one nil check per request)", p)
	}
	if p := policyFrom(&iamv1alpha1.APICredentialSpec{SourceRanges: []string{}}); p != nil {
		t.Errorf("an empty range list: %+v, want nil", p)
	}
	var none *credentialPolicy
	if !none.allows("203.0.113.1") || none.restricted() || none.lifetime() != 0 {
		t.Error("a nil policy must allow any address, be unrestricted and set no lifetime")
	}
	p := policyFrom(&iamv1alpha1.APICredentialSpec{
		SourceRanges: []string{"10.0.0.0/8"},
		TokenPolicy:  iamv1alpha1.TokenPolicy{Lifetime: &metav1.Duration{Duration: time.Minute}},
	})
	if p == nil || !p.restricted() || !p.allows("10.1.1.1") || p.allows("11.0.0.1") || p.lifetime() != time.Minute {
		t.Errorf("ranges and lifetime: %+v", p)
	}
	if p := policyFrom(&iamv1alpha1.APICredentialSpec{TokenPolicy: iamv1alpha1.TokenPolicy{Lifetime: &metav1.Duration{Duration: time.Hour}}}); p == nil || p.restricted() || !p.allows("203.0.113.1") {
		t.Errorf("a lifetime alone must not restrict addresses: %+v", p)
	}
}

// TestInformerKeepsPolicy: the APICredential informer's transform converts the whole
// object, so the store's view has the ranges and the lifetime.
func TestInformerKeepsPolicy(t *testing.T) {
	obj := &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "ci"},
		Spec: iamv1alpha1.APICredentialSpec{
			APIs:         []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}},
			SourceRanges: []string{"10.0.0.0/8"},
			TokenPolicy:  iamv1alpha1.TokenPolicy{Lifetime: &metav1.Duration{Duration: time.Minute}},
		},
		Status: iamv1alpha1.APICredentialStatus{ClientID: "ksc_x", SecretHash: "sha256:00"},
	}
	out, err := trimCredential(obj)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := out.(*credentialObject)
	if !ok || o.cred == nil {
		t.Fatalf("trimCredential = %T %+v", out, out)
	}
	if p := o.cred.policy; !p.restricted() || p.allows("11.0.0.1") || !p.allows("10.0.0.1") || p.lifetime() != time.Minute {
		t.Errorf("the informer's credential lost its policy: %+v", p)
	}
}
