package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/oauth2/clientcredentials"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

var _ = Describe("The token server beside the operator", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "team-", Labels: map[string]string{iamv1alpha1.AccountLabel: "acme"}}}
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		ns = n.Name
	})

	// issued applies a credential, waits for the operator, and reads its Secret as a
	// workload would.
	issued := func(ctx context.Context, name string, apis ...iamv1alpha1.APIGrant) (*iamv1alpha1.APICredential, *clientcredentials.Config) {
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: apis, Scope: iamv1alpha1.CredentialScope{Workspaces: []string{"eu-prod"}}},
		}
		ExpectWithOffset(1, k8sClient.Create(ctx, cred)).To(Succeed())
		secret := &corev1.Secret{}
		EventuallyWithOffset(1, func() error {
			return k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), secret)
		}).Should(Succeed())
		return cred, &clientcredentials.Config{
			ClientID: string(secret.Data["CLIENT_ID"]), ClientSecret: string(secret.Data["CLIENT_SECRET"]),
			TokenURL: string(secret.Data["TOKEN_URL"]),
		}
	}
	authz := func(ctx context.Context, token, api, method string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tokenServerURL+"/authz/"+api, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Forwarded-Method", method)
		req.Header.Set("X-Forwarded-Uri", "/")
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	// kubeClient is a clientset that authenticates to kube-apiserver with a bearer token.
	kubeClient := func(token string) *kubernetes.Clientset {
		cs, err := kubernetes.NewForConfig(&rest.Config{Host: adminCfg.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: adminCfg.CAData}})
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		return cs
	}

	Describe("finding 7: tokens are bound to their audience", func() {
		It("refuses a billing-API token at kube-apiserver and logs in a credential that grants the catalogued Kubernetes API", func(ctx SpecContext) {
			audience := catalogueKubernetes(ctx)
			_, billingCC := issued(ctx, "billing", iamv1alpha1.APIGrant{Name: "platform-api", Permission: "user"})
			cred, kubeCC := issued(ctx, "kubectl-user",
				iamv1alpha1.APIGrant{Name: kubernetesAPI, Permission: "user"}, iamv1alpha1.APIGrant{Name: "platform-api", Permission: "user"})
			billingToken, kubeToken := tokenFor(ctx, billingCC), tokenFor(ctx, kubeCC)

			By("logging in with a token that carries the Kubernetes API")
			review, err := kubeClient(kubeToken).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())
			user := review.Status.UserInfo
			Expect(user.Username).To(Equal(tokenserver.UsernamePrefix + ns + ":kubectl-user"))
			Expect(user.UID).To(Equal(string(cred.UID)))
			Expect(user.Groups).To(ContainElements(tokenserver.GroupAll, "keysmith:account:acme", "keysmith:api:kubernetes:user", "system:authenticated"))
			Expect(user.Groups).NotTo(ContainElement("keysmith:api:platform-api:user"), "no group for an API whose audience is not the API server's")

			By("refusing a billing-API token, which is good at its own API")
			Expect(authz(ctx, billingToken, "platform-api", "GET")).To(Equal(http.StatusOK))
			_, err = kubeClient(billingToken).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
			Expect(apierrors.IsUnauthorized(err)).To(BeTrue(), "a token for audience platform-api at an API server of audience %s: got %v", audience, err)

			By("refusing a token of the same credential narrowed to the billing API")
			narrowed := *kubeCC
			narrowed.Scopes = []string{"platform-api"}
			_, err = kubeClient(tokenFor(ctx, &narrowed)).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
			Expect(apierrors.IsUnauthorized(err)).To(BeTrue(), "got %v", err)

			By("refusing a forged token")
			_, err = kubeClient(kubeToken[:len(kubeToken)-6]+"AAAAAA").AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
			Expect(apierrors.IsUnauthorized(err)).To(BeTrue(), "got %v", err)
		})
	})

	Describe("finding 4: terminating is deleted", func() {
		It("refuses a credential held by a finalizer at once, including tokens issued before its deletion began", func(ctx SpecContext) {
			catalogueKubernetes(ctx)
			cred, cc := issued(ctx, "pruned",
				iamv1alpha1.APIGrant{Name: "platform-api", Permission: "user"}, iamv1alpha1.APIGrant{Name: kubernetesAPI, Permission: "user"})
			token := tokenFor(ctx, cc)
			Expect(authz(ctx, token, "platform-api", "GET")).To(Equal(http.StatusOK))
			_, err := kubeClient(token).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())

			By("deleting it while a finalizer holds it, as a GitOps prune or foreground deletion would")
			patch := client.MergeFrom(cred.DeepCopy())
			cred.Finalizers = append(cred.Finalizers, "example.com/hold")
			Expect(k8sClient.Patch(ctx, cred, patch)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) {
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())
				patch := client.MergeFrom(cred.DeepCopy())
				cred.Finalizers = nil
				Expect(k8sClient.Patch(ctx, cred, patch)).To(Succeed())
			})
			Expect(k8sClient.Delete(ctx, cred)).To(Succeed())
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())
				g.Expect(cred.DeletionTimestamp).NotTo(BeNil())
			}).Should(Succeed())

			Eventually(func() int { code, _ := authz(ctx, token, "platform-api", "GET"); return code }).Should(Equal(http.StatusUnauthorized))
			_, err = cc.Token(ctx)
			Expect(err).To(MatchError(ContainSubstring("invalid_client")))
			// kube-apiserver caches a review for --authentication-token-webhook-cache-ttl (1s
			// here) and every successful token authentication for a fixed 10 s on top.
			Eventually(func() bool {
				_, err := kubeClient(token).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
				return apierrors.IsUnauthorized(err)
			}).WithTimeout(15 * time.Second).WithPolling(250 * time.Millisecond).Should(BeTrue())
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed(), "it is still there, terminating")
		})
	})

	It("lets a verify-only sidecar accept the shared server's tokens without any access to private keys", func(ctx SpecContext) {
		_, cc := issued(ctx, "via-sidecar", iamv1alpha1.APIGrant{Name: "platform-api", Permission: "user"})
		token := tokenFor(ctx, cc)
		Eventually(func() int {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sidecarURL+"/authz/platform-api/v2/users", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return 0
			}
			resp.Body.Close()
			return resp.StatusCode
		}).Should(Equal(http.StatusOK))

		By("the sidecar's service account cannot read the signing key Secret")
		Expect(maySecret(ctx, sidecarUser, systemNamespace, "get", signingSecret)).To(BeFalse())
	})

	It("refuses a deactivated credential within a second, including tokens issued before", func(ctx SpecContext) {
		cred, cc := issued(ctx, "revoked", iamv1alpha1.APIGrant{Name: "platform-api", Permission: "admin"})
		token := tokenFor(ctx, cc)
		Expect(authz(ctx, token, "platform-api", "DELETE")).To(Equal(http.StatusOK))

		patch := client.MergeFrom(cred.DeepCopy())
		cred.Spec.Active = ptr.To(false)
		start := time.Now()
		Expect(k8sClient.Patch(ctx, cred, patch)).To(Succeed())
		Eventually(func() int { code, _ := authz(ctx, token, "platform-api", "GET"); return code }).
			WithTimeout(5 * time.Second).WithPolling(5 * time.Millisecond).Should(Equal(http.StatusUnauthorized))
		revokedIn := time.Since(start)
		GinkgoWriter.Printf("revocation observed %s after the deactivation was written\n", revokedIn)
		AddReportEntry("revocation latency", revokedIn.String())
		Expect(revokedIn).To(BeNumerically("<", time.Second), "DESIGN §2.6: within a second")
	})

	It("answers 401 with a JSON body once the credential is deleted", func(ctx SpecContext) {
		cred, cc := issued(ctx, "deleted", iamv1alpha1.APIGrant{Name: "platform-api", Permission: "user"})
		token := tokenFor(ctx, cc)
		Expect(k8sClient.Delete(ctx, cred)).To(Succeed())
		Eventually(func() int { code, _ := authz(ctx, token, "platform-api", "GET"); return code }).Should(Equal(http.StatusUnauthorized))
		_, body := authz(ctx, token, "platform-api", "GET")
		Expect(body).To(MatchJSON(`{"error":"invalid_token","error_description":"the credentials are invalid"}`))
		_, err := cc.Token(ctx)
		Expect(err).To(MatchError(ContainSubstring("invalid_client")))
	})

	It("writes usage into status with bounded writes", func(ctx SpecContext) {
		cred, cc := issued(ctx, "busy", iamv1alpha1.APIGrant{Name: "platform-api", Permission: "user"})
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())
			g.Expect(cred.Status.SecretHash).NotTo(BeEmpty())
		}).Should(Succeed())

		By("counting every write of this credential's usage fields through a watch")
		wc, err := client.NewWithWatch(adminCfg, client.Options{Scheme: testenv.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		w, err := wc.Watch(ctx, &iamv1alpha1.APICredentialList{}, client.InNamespace(ns),
			client.MatchingFields{"metadata.name": cred.Name}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: cred.ResourceVersion}})
		Expect(err).NotTo(HaveOccurred())
		writes := make(chan int, 1)
		go func() {
			n, last := 0, cred.Status.LastUsedTime
			for ev := range w.ResultChan() {
				c, ok := ev.Object.(*iamv1alpha1.APICredential)
				if !ok {
					continue
				}
				if lt := c.Status.LastUsedTime; lt != nil && (last == nil || !lt.Equal(last)) {
					n++
					last = lt
				}
			}
			writes <- n
		}()

		start := time.Now()
		token := tokenFor(ctx, cc)
		requests := 0
		for time.Since(start) < 3*time.Second {
			Expect(authz(ctx, token, "platform-api", "GET")).To(Equal(http.StatusOK))
			requests++
		}
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())
			g.Expect(cred.Status.LastUsedTime).NotTo(BeNil())
			g.Expect(cred.Status.LastUsedTime.Time).To(BeTemporally(">=", start.Add(2*time.Second).Truncate(time.Second)))
			g.Expect(cred.Status.LastUsedAddress).To(Equal("127.0.0.1"))
		}).Should(Succeed())
		elapsed := time.Since(start)
		w.Stop()
		n := <-writes
		AddReportEntry("usage writes", fmt.Sprintf("%d status writes for %d requests in %s (interval %s)", n, requests, elapsed.Round(time.Millisecond), usageInterval))
		Expect(n).To(BeNumerically(">=", 1))
		// One flush per tick, and a tick may fall on each edge of the window; the bound
		// would be in the thousands if every request wrote.
		Expect(n).To(BeNumerically("<=", int(elapsed/usageInterval)+2), "at most one status write per interval")
		Expect(cred.Status.SecretHash).NotTo(BeEmpty(), "the usage patch leaves the operator's fields alone")
	})
})

// kubernetesAPI is the APIDefinition that catalogues the suite's kube-apiserver.
const kubernetesAPI = "kubernetes"

// catalogueKubernetes catalogues the suite's kube-apiserver as the APIDefinition
// "kubernetes" whose audience is the API server's: its service-account issuer, which
// --api-audiences defaults to, read from its discovery document as
// docs/integrations/kube-apiserver.md does. It returns the audience.
func catalogueKubernetes(ctx context.Context) string {
	issuer, err := testenv.APIServerIssuer(ctx, adminCfg)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	def := &iamv1alpha1.APIDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: kubernetesAPI},
		Spec: iamv1alpha1.APIDefinitionSpec{
			DisplayName: "Kubernetes API", ScopeLevel: iamv1alpha1.ScopeLevelAccount, Audience: issuer,
			Permissions: []iamv1alpha1.Permission{{Name: "user", Methods: []string{iamv1alpha1.MethodAny}}},
		},
	}
	if err := k8sClient.Create(ctx, def); !apierrors.IsAlreadyExists(err) {
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
	}
	return issuer
}

// tokenFor waits until the token server has seen the credential, then gets a token.
func tokenFor(ctx context.Context, cc *clientcredentials.Config) string {
	var token string
	EventuallyWithOffset(1, func() error {
		tok, err := cc.Token(ctx)
		if err == nil {
			token = tok.AccessToken
		}
		return err
	}).Should(Succeed())
	return token
}
