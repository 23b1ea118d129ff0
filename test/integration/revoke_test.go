package integration

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"golang.org/x/oauth2/clientcredentials"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// startReplica runs a second token server as the token server's service account, with
// its own manager, cache and store, and returns its URL: another replica of the suite's.
func startReplica(ctx context.Context) string {
	u, err := testEnv.ControlPlane.AddUser(envtest.User{Name: serviceAccount("keysmith-token-server")}, adminCfg)
	Expect(err).NotTo(HaveOccurred())
	var srv *tokenserver.Server
	runManager(ctx, u.Config(), tokenserver.CacheOptions(nil, systemNamespace, signingSecret, false), func(mgr ctrl.Manager) {
		srv, err = tokenserver.Setup(ctx, mgr, tokenserver.Options{Issuer: tokenServerURL, Log: logf.Log.WithName("token-server-b")}, usageInterval)
		Expect(err).NotTo(HaveOccurred())
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	hs := tokenserver.NewHTTPServer("", srv.Handler())
	go func() { _ = hs.Serve(ln) }()
	DeferCleanup(hs.Close)
	base := "http://" + ln.Addr().String()
	Eventually(func() int {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}).WithTimeout(30 * time.Second).Should(Equal(http.StatusOK))
	return base
}

var _ = Describe("issue 13 item 3: RFC 7009 revocation shared between token-server replicas", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "revoke-", Labels: map[string]string{iamv1alpha1.AccountLabel: "acme"}}}
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		ns = n.Name
	})
	issued := func(ctx context.Context, name string) (*iamv1alpha1.APICredential, *clientcredentials.Config) {
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}}},
		}
		ExpectWithOffset(1, k8sClient.Create(ctx, cred)).To(Succeed())
		secret := &corev1.Secret{}
		EventuallyWithOffset(1, func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), secret) }).Should(Succeed())
		return cred, &clientcredentials.Config{
			ClientID: string(secret.Data["CLIENT_ID"]), ClientSecret: string(secret.Data["CLIENT_SECRET"]),
			TokenURL: string(secret.Data["TOKEN_URL"]),
		}
	}
	authzAt := func(base, token string) int {
		req, _ := http.NewRequest(http.MethodGet, base+"/authz/platform-api/v1/things", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		resp.Body.Close()
		return resp.StatusCode
	}
	revokeAt := func(base string, cc *clientcredentials.Config, token string) int {
		req, _ := http.NewRequest(http.MethodPost, base+"/oauth2/revoke", strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape(cc.ClientID), url.QueryEscape(cc.ClientSecret))
		resp, err := http.DefaultClient.Do(req)
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		resp.Body.Close()
		return resp.StatusCode
	}
	revokedJTIs := func(ctx context.Context, key types.NamespacedName) func(Gomega) []string {
		return func(g Gomega) []string {
			var c iamv1alpha1.APICredential
			g.Expect(k8sClient.Get(ctx, key, &c)).To(Succeed())
			var out []string
			for _, t := range c.Status.RevokedTokens {
				g.Expect(t.Exp.Time).To(BeTemporally(">", time.Now()), "an expired entry is written")
				out = append(out, t.JTI)
			}
			return out
		}
	}

	It("refuses on replica B a token revoked on A within a second, keeps both replicas' concurrent revocations, and the manager keeps them", func(ctx SpecContext) {
		b := startReplica(ctx)
		cred, cc := issued(ctx, "revoked")
		key := client.ObjectKeyFromObject(cred)
		tok := tokenFor(ctx, cc)
		Eventually(func() int { return authzAt(b, tok) }).Should(Equal(http.StatusOK), "B knows the credential")

		By("revoking on A and measuring until B refuses")
		start := time.Now()
		Expect(revokeAt(tokenServerURL, cc, tok)).To(Equal(http.StatusOK))
		Expect(authzAt(tokenServerURL, tok)).To(Equal(http.StatusUnauthorized), "A refuses at once")
		Eventually(func() int { return authzAt(b, tok) }).WithPolling(5 * time.Millisecond).WithTimeout(10 * time.Second).
			Should(Equal(http.StatusUnauthorized))
		delay := time.Since(start)
		GinkgoWriter.Printf("FIGURE revocation on replica A refused on replica B after %v (--revocation-interval 250ms)\n", delay)
		AddReportEntry("revocation A->B delay", delay.String())
		Expect(revokedJTIs(ctx, key)(Default)).To(HaveLen(1))

		By("revoking two tokens at once, one on each replica")
		t1, t2 := tokenFor(ctx, cc), tokenFor(ctx, cc)
		var wg sync.WaitGroup
		codes := make([]int, 2)
		for i, x := range []struct{ base, tok string }{{tokenServerURL, t1}, {b, t2}} {
			wg.Go(func() { defer GinkgoRecover(); codes[i] = revokeAt(x.base, cc, x.tok) })
		}
		wg.Wait()
		Expect(codes).To(Equal([]int{200, 200}))
		Eventually(revokedJTIs(ctx, key)).WithTimeout(10*time.Second).Should(HaveLen(3), "both replicas' entries are in status")
		for _, base := range []string{tokenServerURL, b} {
			for _, t := range []string{tok, t1, t2} {
				Eventually(func() int { return authzAt(base, t) }).WithTimeout(5 * time.Second).Should(Equal(http.StatusUnauthorized))
			}
		}
		live := tokenFor(ctx, cc)
		Expect(authzAt(b, live)).To(Equal(http.StatusOK), "an unrevoked token still works")

		By("a verify-only sidecar, which writes no status, refuses them from its watch too")
		Eventually(func() int { return authzAt(sidecarURL, live) }).Should(Equal(http.StatusOK))
		for _, t := range []string{tok, t1, t2} {
			Eventually(func() int { return authzAt(sidecarURL, t) }).WithTimeout(5 * time.Second).Should(Equal(http.StatusUnauthorized))
		}
		Expect(revokeAt(sidecarURL, cc, live)).To(Equal(http.StatusNotFound), "sidecars serve no revocation endpoint")

		By("a status write of the manager (a rotation) keeps revokedTokens")
		Expect(k8sClient.Get(ctx, key, cred)).To(Succeed())
		hash := cred.Status.SecretHash
		patch := client.MergeFrom(cred.DeepCopy())
		cred.Spec.Rotation.KeyVersion++
		Expect(k8sClient.Patch(ctx, cred, patch)).To(Succeed())
		Eventually(func(g Gomega) string {
			g.Expect(k8sClient.Get(ctx, key, cred)).To(Succeed())
			return cred.Status.SecretHash
		}).ShouldNot(Equal(hash))
		Expect(revokedJTIs(ctx, key)(Default)).To(HaveLen(3))
	})

	It("lets only the token server write revokedTokens", func(ctx SpecContext) {
		cred, _ := issued(ctx, "guarded")
		Eventually(func(g Gomega) string {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())
			return cred.Status.SecretHash
		}).ShouldNot(BeEmpty())
		patch := func(c client.Client, body string, opts ...client.SubResourcePatchOption) error {
			obj := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: cred.Name}}
			return c.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(body)), opts...)
		}
		exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		add := `{"status":{"revokedTokens":[{"jti":"abc","exp":"` + exp + `"}]}}`

		By("refusing a tenant, even with RBAC on apicredentials/status, and the tenant roles grant none")
		tenant := "system:serviceaccount:" + ns + ":default"
		Expect(patch(userClient(tenant), add)).To(Satisfy(apierrors.IsForbidden), "no status RBAC")
		mallory := statusWriter(ctx, ns, "mallory-"+ns)
		Eventually(func() error { return patch(mallory, add, client.DryRunAll) }).
			Should(MatchError(ContainSubstring("may change status.revokedTokens")))
		Expect(patch(mallory, add)).To(MatchError(ContainSubstring("may change status.revokedTokens")))

		By("admitting the token server, and only for revokedTokens and usage")
		ts := userClient(serviceAccount("keysmith-token-server"))
		Expect(patch(ts, add)).To(Succeed())
		Expect(patch(mallory, `{"status":{"revokedTokens":null}}`)).To(MatchError(ContainSubstring("may change status.revokedTokens")), "nobody else un-revokes")
		Expect(patch(ts, `{"status":{"observedGeneration":42}}`)).To(MatchError(ContainSubstring("may change only status.lastUsedTime, status.lastUsedAddress and status.revokedTokens")))
		Expect(patch(userClient(serviceAccount("keysmith-manager")), `{"status":{"revokedTokens":null}}`)).To(MatchError(ContainSubstring("may change status.revokedTokens")), "nor the manager")
	})
})

// statusWriter returns a client for user, who may get, update and patch
// apicredentials/status in namespace ns (a too-broad role).
func statusWriter(ctx context.Context, ns, user string) client.Client {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "status-writer-"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{iamv1alpha1.GroupVersion.Group}, Resources: []string{"apicredentials/status"},
			Verbs: []string{"get", "update", "patch"},
		}},
	}
	Expect(k8sClient.Create(ctx, role)).To(Succeed())
	Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	})).To(Succeed())
	return userClient(user)
}
