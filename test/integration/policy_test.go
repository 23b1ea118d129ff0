package integration

import (
	"context"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// forwardedFor adds X-Forwarded-For, as an ingress in front of the token server does
// (the suite's token server trusts loopback, its default --trusted-proxies).
type forwardedFor string

func (x forwardedFor) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", string(x))
	return http.DefaultTransport.RoundTrip(r)
}

// Issue 13 items 1-2 through the real path: the API server's schema, the token server's
// informer (its transform must keep both fields) and kube-apiserver's TokenReview.
var _ = Describe("issue 13: source ranges and token lifetime", func() {
	const inside, outside = "10.1.2.3", "198.51.100.7"
	var ns string
	BeforeEach(func(ctx SpecContext) {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "team-", Labels: map[string]string{iamv1alpha1.AccountLabel: "acme"}}}
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		ns = n.Name
	})
	from := func(ctx context.Context, addr string) context.Context {
		return context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Transport: forwardedFor(addr)})
	}
	authzFrom := func(ctx context.Context, token, addr string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tokenServerURL+"/authz/platform-api/v1/things", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Forwarded-For", addr)
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		return resp.StatusCode
	}

	It("refuses the exchange and the tokens from outside, narrowing revokes, and TokenReview never logs it in", func(ctx SpecContext) {
		catalogueKubernetes(ctx)
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ci"},
			Spec: iamv1alpha1.APICredentialSpec{
				APIs:         []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}, {Name: kubernetesAPI, Permission: "user"}},
				SourceRanges: []string{"10.0.0.0/8"},
				TokenPolicy:  iamv1alpha1.TokenPolicy{Lifetime: &metav1.Duration{Duration: 2 * time.Minute}},
			},
		}
		Expect(k8sClient.Create(ctx, cred)).To(Succeed())
		secret := &corev1.Secret{}
		Eventually(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), secret) }).Should(Succeed())
		cc := &clientcredentials.Config{
			ClientID: string(secret.Data["CLIENT_ID"]), ClientSecret: string(secret.Data["CLIENT_SECRET"]),
			TokenURL: string(secret.Data["TOKEN_URL"]),
		}

		By("issuing from inside, for the credential's lifetime")
		var tok *oauth2.Token
		Eventually(func() (err error) { tok, err = cc.Token(from(ctx, inside)); return err }).Should(Succeed())
		Expect(tok.Extra("expires_in")).To(BeEquivalentTo(120))
		Expect(authzFrom(ctx, tok.AccessToken, inside)).To(Equal(http.StatusOK))

		By("refusing the exchange and the token from outside")
		_, err := cc.Token(from(ctx, outside))
		Expect(err).To(MatchError(ContainSubstring("invalid_client")))
		Expect(authzFrom(ctx, tok.AccessToken, outside)).To(Equal(http.StatusUnauthorized))

		By("never authenticating it at kube-apiserver: a TokenReview carries no client address")
		cs, err := kubernetes.NewForConfig(&rest.Config{Host: adminCfg.Host, BearerToken: tok.AccessToken, TLSClientConfig: rest.TLSClientConfig{CAData: adminCfg.CAData}})
		Expect(err).NotTo(HaveOccurred())
		_, err = cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
		Expect(apierrors.IsUnauthorized(err)).To(BeTrue(), "got %v", err)

		By("narrowing the ranges past the client: the token already out is refused")
		patch := client.MergeFrom(cred.DeepCopy())
		cred.Spec.SourceRanges = []string{"10.9.0.0/16"}
		start := time.Now()
		Expect(k8sClient.Patch(ctx, cred, patch)).To(Succeed())
		Eventually(func() int { return authzFrom(ctx, tok.AccessToken, inside) }).
			WithTimeout(5 * time.Second).WithPolling(5 * time.Millisecond).Should(Equal(http.StatusUnauthorized))
		GinkgoWriter.Printf("narrowing sourceRanges revoked the token %s after the patch was written\n", time.Since(start))
		AddReportEntry("sourceRanges narrowing latency", time.Since(start).String())
		Expect(authzFrom(ctx, tok.AccessToken, "10.9.1.1")).To(Equal(http.StatusOK))
	})
})
