package integration

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// Issue 13 item 5 end to end: the operator issues a credential without a secret, a token
// server running as its own ServiceAccount (the shipped RBAC, plus the groups every
// ServiceAccount has) learns it through its informer and the API server's issuer keys,
// and a projected ServiceAccount token minted by TokenRequest is exchanged for an access
// token that /authz accepts: no client secret anywhere.
var _ = Describe("A workload without a secret (spec.workloadIdentity, spec.issueSecret: false)", func() {
	It("exchanges a TokenRequest token for an access token through the operator and the token server", func(ctx SpecContext) {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "team-", Labels: map[string]string{iamv1alpha1.AccountLabel: "acme"}}}
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		ns := n.Name
		Expect(k8sClient.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "worker"}})).To(Succeed())

		By("running a token server with the JWT-bearer grant as the token server's ServiceAccount")
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		issuerURL := "http://" + ln.Addr().String()
		u, err := testEnv.ControlPlane.AddUser(envtest.User{Name: serviceAccount("keysmith-token-server"),
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + systemNamespace, "system:authenticated"}}, adminCfg)
		Expect(err).NotTo(HaveOccurred())
		saIssuer, err := tokenserver.NewServiceAccountIssuer(u.Config(), nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(saIssuer.Refresh(ctx)).To(Succeed())
		var srv *tokenserver.Server
		runManager(ctx, u.Config(), tokenserver.CacheOptions(nil, systemNamespace, signingSecret, false), func(mgr ctrl.Manager) {
			srv, err = tokenserver.Setup(ctx, mgr, tokenserver.Options{Issuer: issuerURL, WorkloadIdentity: saIssuer,
				Log: logf.Log.WithName("token-server-wi")}, 0)
			Expect(err).NotTo(HaveOccurred())
		})
		hs := tokenserver.NewHTTPServer("", srv.Handler())
		go func() { _ = hs.Serve(ln) }()
		DeferCleanup(hs.Close)

		By("creating the credential; the operator issues a client ID and nothing else")
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "wi"},
			Spec: iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "admin"}},
				Scope:            iamv1alpha1.CredentialScope{Workspaces: []string{"eu-prod"}},
				IssueSecret:      ptr.To(false),
				WorkloadIdentity: &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"worker"}}},
		}
		Expect(k8sClient.Create(ctx, cred)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())
			g.Expect(cred.Status.ClientID).NotTo(BeEmpty())
			g.Expect(conditionReason(cred, iamv1alpha1.ConditionReady)).To(Equal(iamv1alpha1.ReasonIssued))
		}).Should(Succeed())
		Expect(cred.Status.SecretHash).To(BeEmpty())
		err = k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "wi"}, &corev1.Secret{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "no Secret: %v", err)

		By("exchanging the worker's TokenRequest token, audience the token server's issuer")
		cs := kubernetes.NewForConfigOrDie(adminCfg)
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "worker", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{issuerURL}, ExpirationSeconds: ptr.To[int64](600)},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		exchange := func(assertion string) (int, map[string]any) {
			resp, err := http.PostForm(issuerURL+"/oauth2/token", url.Values{
				"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "client_id": {cred.Status.ClientID}, "assertion": {assertion}})
			Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			body := map[string]any{}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			return resp.StatusCode, body
		}
		var access string
		Eventually(func(g Gomega) {
			code, body := exchange(tr.Status.Token)
			g.Expect(code).To(Equal(http.StatusOK), "%v", body)
			access, _ = body["access_token"].(string)
		}).Should(Succeed())

		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, issuerURL+"/authz/platform-api", nil)
		req.Header.Set("Authorization", "Bearer "+access)
		req.Header.Set("X-Forwarded-Method", "DELETE")
		req.Header.Set("X-Forwarded-Uri", "/")
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusOK), string(b))

		By("refusing a secret of any kind for the credential, and a token of another audience")
		resp, err = http.PostForm(issuerURL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"},
			"client_id": {cred.Status.ClientID}, "client_secret": {""}})
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))
		other, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "worker", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{tokenServerURL + "/other"}, ExpirationSeconds: ptr.To[int64](600)},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		code, body := exchange(other.Status.Token)
		Expect(code).To(Equal(http.StatusBadRequest))
		Expect(body["error"]).To(Equal("invalid_grant"))
	})
})

// conditionReason returns the reason of the credential's condition t ("" without one).
func conditionReason(cred *iamv1alpha1.APICredential, t string) string {
	for _, c := range cred.Status.Conditions {
		if c.Type == t {
			return c.Reason
		}
	}
	return ""
}
