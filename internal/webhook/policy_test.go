package webhook

import (
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// Issue 13 items 1-2: spec.sourceRanges and spec.tokenPolicy.lifetime. Widening either
// makes a credential more powerful and needs every grant it holds (DESIGN §2 item 8).

func TestWidensSourceRanges(t *testing.T) {
	for _, tc := range []struct {
		name     string
		was, now []string
		want     bool
	}{
		{"unset stays unset", nil, nil, false},
		{"first set: from anywhere to a range is narrowing", nil, []string{"10.0.0.0/8"}, false},
		{"removed: anywhere again", []string{"10.0.0.0/8"}, nil, true},
		{"emptied: anywhere again", []string{"10.0.0.0/8"}, []string{}, true},
		{"the same", []string{"10.0.0.0/8", "2001:db8::/32"}, []string{"2001:db8::/32", "10.0.0.0/8"}, false},
		{"a sub-range", []string{"10.0.0.0/8"}, []string{"10.1.0.0/16"}, false},
		{"one range dropped", []string{"10.0.0.0/8", "192.0.2.0/24"}, []string{"192.0.2.0/24"}, false},
		{"a wider prefix", []string{"10.1.0.0/16"}, []string{"10.0.0.0/8"}, true},
		{"a disjoint range added", []string{"10.0.0.0/8"}, []string{"10.0.0.0/8", "192.0.2.0/24"}, true},
		{"a range replaced by a disjoint one", []string{"10.0.0.0/8"}, []string{"172.16.0.0/12"}, true},
		{"IPv6 added to IPv4 only", []string{"0.0.0.0/0"}, []string{"0.0.0.0/0", "::/0"}, true},
		{"IPv6 sub-range", []string{"2001:db8::/32"}, []string{"2001:db8:1::/48"}, false},
		{"a sub-range made of two old ones is still contained in one of them", []string{"10.0.0.0/9", "10.128.0.0/9"}, []string{"10.0.0.0/9"}, false},
		{"fail closed: a new range that does not parse", []string{"10.0.0.0/8"}, []string{"garbage"}, true},
		{"fail closed: a new range with host bits", []string{"10.0.0.0/8"}, []string{"10.0.0.1/8"}, true},
		{"fail closed: an old range that does not parse contains nothing", []string{"garbage"}, []string{"10.0.0.0/8"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := widensSourceRanges(tc.was, tc.now); got != tc.want {
				t.Errorf("widensSourceRanges(%q, %q) = %v, want %v", tc.was, tc.now, got, tc.want)
			}
		})
	}
}

func TestRegrantsSourceRangesAndLifetime(t *testing.T) {
	life := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	for _, tc := range []struct {
		name     string
		was, now iamv1alpha1.APICredentialSpec
		want     []string
	}{
		{name: "narrow the ranges", was: iamv1alpha1.APICredentialSpec{SourceRanges: []string{"10.0.0.0/8"}},
			now: iamv1alpha1.APICredentialSpec{SourceRanges: []string{"10.1.0.0/16"}}},
		{name: "widen the ranges", was: iamv1alpha1.APICredentialSpec{SourceRanges: []string{"10.1.0.0/16"}},
			now: iamv1alpha1.APICredentialSpec{SourceRanges: []string{"10.0.0.0/8"}}, want: []string{"spec.sourceRanges"}},
		{name: "remove the ranges", was: iamv1alpha1.APICredentialSpec{SourceRanges: []string{"10.1.0.0/16"}},
			want: []string{"spec.sourceRanges"}},
		{name: "set a lifetime where there was none (the server's default may be shorter)", now: iamv1alpha1.APICredentialSpec{TokenPolicy: iamv1alpha1.TokenPolicy{Lifetime: life(24 * time.Hour)}},
			want: []string{"spec.tokenPolicy.lifetime"}},
		{name: "shorten the lifetime", was: iamv1alpha1.APICredentialSpec{TokenPolicy: iamv1alpha1.TokenPolicy{Lifetime: life(time.Hour)}},
			now: iamv1alpha1.APICredentialSpec{TokenPolicy: iamv1alpha1.TokenPolicy{Lifetime: life(time.Minute)}}},
		{name: "the same lifetime written differently", was: iamv1alpha1.APICredentialSpec{TokenPolicy: iamv1alpha1.TokenPolicy{Lifetime: life(time.Hour)}},
			now: iamv1alpha1.APICredentialSpec{TokenPolicy: iamv1alpha1.TokenPolicy{Lifetime: life(60 * time.Minute)}}},
		{name: "lengthen the lifetime", was: iamv1alpha1.APICredentialSpec{TokenPolicy: iamv1alpha1.TokenPolicy{Lifetime: life(time.Minute)}},
			now: iamv1alpha1.APICredentialSpec{TokenPolicy: iamv1alpha1.TokenPolicy{Lifetime: life(time.Hour)}}, want: []string{"spec.tokenPolicy.lifetime"}},
		{name: "remove the lifetime", was: iamv1alpha1.APICredentialSpec{TokenPolicy: iamv1alpha1.TokenPolicy{Lifetime: life(time.Minute)}},
			want: []string{"spec.tokenPolicy.lifetime"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := &iamv1alpha1.APICredential{Spec: tc.was}
			cred := &iamv1alpha1.APICredential{Spec: tc.now}
			var got []string
			for _, r := range regrants(old, cred) {
				got = append(got, r.field.String())
			}
			NewWithT(t).Expect(got).To(Equal(tc.want))
		})
	}
}

var _ = Describe("issue 13: widening sourceRanges or lengthening the token lifetime needs the grants", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) {
		ns = newNamespace(ctx)
		By("an admin creating a credential restricted to one range, with a short token lifetime")
		c := credential(ns, "ci", grant("platform-api", "admin"))
		c.Spec.SourceRanges = []string{"10.1.0.0/16"}
		c.Spec.TokenPolicy.Lifetime = &metav1.Duration{Duration: 5 * time.Minute}
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
	})

	refusedFor := func(user, field string) OmegaMatcher {
		return And(
			WithTransform(apierrors.IsForbidden, BeTrue()),
			MatchError(ContainSubstring(field+": Forbidden: ")),
			MatchError(ContainSubstring(`which needs every grant the credential holds: `+user+` may not grant apidefinitions/admin "platform-api" in namespace`)),
		)
	}
	get := func(ctx SpecContext) iamv1alpha1.APICredentialSpec {
		var c iamv1alpha1.APICredential
		ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ci"}, &c)).To(Succeed())
		return c.Spec
	}

	It("refuses a user without the grants when widening, admits her when narrowing", func(ctx SpecContext) {
		hana, _ := userClient("hana")
		allow(ctx, ns, "hana", manageCredentials)
		Eventually(func() error {
			return patchCred(ctx, hana, ns, "ci", `{"spec":{"displayName":"CI"}}`)
		}).Should(Succeed())

		for _, tc := range []struct{ field, body string }{
			{"spec.sourceRanges", `{"spec":{"sourceRanges":["10.0.0.0/8"]}}`},
			{"spec.sourceRanges", `{"spec":{"sourceRanges":["10.1.0.0/16","192.0.2.0/24"]}}`},
			{"spec.sourceRanges", `{"spec":{"sourceRanges":null}}`},
			{"spec.tokenPolicy.lifetime", `{"spec":{"tokenPolicy":{"lifetime":"1h"}}}`},
			{"spec.tokenPolicy.lifetime", `{"spec":{"tokenPolicy":null}}`},
		} {
			Expect(patchCred(ctx, hana, ns, "ci", tc.body)).To(refusedFor("hana", tc.field), tc.body)
		}
		Expect(get(ctx).SourceRanges).To(Equal([]string{"10.1.0.0/16"}))
		Expect(get(ctx).TokenPolicy.Lifetime.Duration).To(Equal(5 * time.Minute))

		By("admitting narrowing and shortening without any grant")
		Expect(patchCred(ctx, hana, ns, "ci", `{"spec":{"sourceRanges":["10.1.2.0/24","10.1.3.7/32"]}}`)).To(Succeed())
		Expect(patchCred(ctx, hana, ns, "ci", `{"spec":{"tokenPolicy":{"lifetime":"1m"}}}`)).To(Succeed())
		Expect(get(ctx).SourceRanges).To(ConsistOf("10.1.2.0/24", "10.1.3.7/32"))
		Expect(get(ctx).TokenPolicy.Lifetime.Duration).To(Equal(time.Minute))
	})

	It("admits widening and lengthening from a user who holds the grants", func(ctx SpecContext) {
		ivan, _ := userClient("ivan")
		allow(ctx, ns, "ivan", manageCredentials, grantRule("platform-api", "admin"))
		Eventually(func() error {
			return patchCred(ctx, ivan, ns, "ci", `{"spec":{"sourceRanges":["10.0.0.0/8","2001:db8::/32"]}}`)
		}).Should(Succeed())
		Expect(patchCred(ctx, ivan, ns, "ci", `{"spec":{"tokenPolicy":{"lifetime":"1h"}}}`)).To(Succeed())
		Expect(patchCred(ctx, ivan, ns, "ci", `{"spec":{"sourceRanges":null,"tokenPolicy":null}}`)).To(Succeed())
		Expect(get(ctx).SourceRanges).To(BeEmpty())
		Expect(get(ctx).TokenPolicy.Lifetime).To(BeNil())
	})

	DescribeTable("the CRD refuses malformed values, naming the field",
		func(ctx SpecContext, body, want string) {
			err := patchCred(ctx, k8sClient, ns, "ci", body)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			Expect(err).To(MatchError(ContainSubstring(want)))
		},
		Entry("not a CIDR", `{"spec":{"sourceRanges":["10.0.0.1"]}}`, "spec.sourceRanges[0]: Invalid value"),
		Entry("host bits set", `{"spec":{"sourceRanges":["10.1.2.3/16"]}}`, "spec.sourceRanges items must be CIDRs in canonical form"),
		Entry("IPv4-mapped IPv6", `{"spec":{"sourceRanges":["::ffff:10.0.0.0/104"]}}`, "spec.sourceRanges items must be CIDRs in canonical form"),
		Entry("a host name", `{"spec":{"sourceRanges":["example.com/32"]}}`, "spec.sourceRanges items must be CIDRs in canonical form"),
		Entry("the same range twice", `{"spec":{"sourceRanges":["10.0.0.0/8","10.0.0.0/8"]}}`, "spec.sourceRanges[1]: Duplicate value"),
		Entry("too many ranges", `{"spec":{"sourceRanges":[`+manyRanges(33)+`]}}`, "must have at most 32 items"),
		Entry("a zero lifetime", `{"spec":{"tokenPolicy":{"lifetime":"0s"}}}`, "spec.tokenPolicy.lifetime must be between 1s and 24h"),
		Entry("a lifetime over 24h", `{"spec":{"tokenPolicy":{"lifetime":"25h"}}}`, "spec.tokenPolicy.lifetime must be between 1s and 24h"),
		Entry("a lifetime in days", `{"spec":{"tokenPolicy":{"lifetime":"1d"}}}`, "spec.tokenPolicy.lifetime"),
	)

	It("accepts IPv4 and IPv6 ranges in canonical form", func(ctx SpecContext) {
		Expect(patchCred(ctx, k8sClient, ns, "ci", `{"spec":{"sourceRanges":["10.1.0.0/16","192.0.2.7/32","2001:db8::/32","::1/128"]}}`)).To(Succeed())
	})
})

func manyRanges(n int) string {
	s := ""
	for i := range n {
		if i > 0 {
			s += ","
		}
		s += `"10.0.` + strconv.Itoa(i) + `.0/24"`
	}
	return s
}

// TestRegrantsNewLifetimeCanLengthenTokens: a credential without spec.tokenPolicy.lifetime
// gets tokens of the token server's --token-lifetime (10m by default); setting 1h makes
// them six times longer-lived, so it needs every grant like lengthening a set lifetime.
func TestRegrantsNewLifetimeCanLengthenTokens(t *testing.T) {
	old := &iamv1alpha1.APICredential{}
	cred := &iamv1alpha1.APICredential{Spec: iamv1alpha1.APICredentialSpec{
		TokenPolicy: iamv1alpha1.TokenPolicy{Lifetime: &metav1.Duration{Duration: time.Hour}}}}
	var got []string
	for _, r := range regrants(old, cred) {
		got = append(got, r.field.String())
	}
	NewWithT(t).Expect(got).To(ContainElement("spec.tokenPolicy.lifetime"))
}
