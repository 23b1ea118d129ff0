// Package e2e runs keysmith the way a newcomer does: `make dev`'s environment, driven from
// outside with its printed kubeconfig.
package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/oauth2/clientcredentials"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "e2e Suite")
}

var _ = Describe("make dev", Ordered, func() {
	var (
		dev      *devInstance
		c        client.Client
		cfg      *rest.Config
		tokenURL string
		// walkthrough is what make dev printed before its ready line.
		walkthrough string
	)

	BeforeAll(func() {
		// A dev directory and a free port of its own, so that the test runs beside a
		// developer's make dev (bin/dev, 18080) and the other specs.
		dev = startDev(filepath.Join("bin", "e2e-dev"), freeAddr())
		readyLine := dev.waitReady()
		walkthrough = dev.stdout.String()
		Expect(readyLine).To(Equal(readyPrefix + dev.dir + "/kubeconfig token-server=http://" + dev.addr))
		tokenURL = "http://" + dev.addr + "/oauth2/token"

		var err error
		cfg, err = clientcmd.BuildConfigFromFlags("", filepath.Join(dev.absDir(), "kubeconfig"))
		Expect(err).NotTo(HaveOccurred())
		c, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
		Expect(err).NotTo(HaveOccurred())
	})

	AfterAll(func() { dev.cleanUp() })

	It("has issued the samples and the dev login", func(ctx SpecContext) {
		var creds iamv1alpha1.APICredentialList
		Expect(c.List(ctx, &creds, client.InNamespace("team-checkout"))).To(Succeed())
		Expect(creds.Items).To(ConsistOf(HaveField("Name", "profile-reader"), HaveField("Name", "platform-automation"),
			HaveField("Name", "legacy-exporter"), HaveField("Name", "kubectl-login")))
		for _, cred := range creds.Items {
			Expect(cred.Status.SecretHash).NotTo(BeEmpty(), cred.Name)
		}
	})

	It("issues an applied credential within 10 s and garbage-collects its Secret on delete", func(ctx SpecContext) {
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "e2e"},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}}},
		}
		start := time.Now()
		Expect(c.Create(ctx, cred)).To(Succeed())
		secret := &corev1.Secret{}
		Eventually(func(g Gomega) {
			g.Expect(c.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())
			g.Expect(cred.Status.Conditions).To(ContainElement(And(
				HaveField("Type", iamv1alpha1.ConditionReady), HaveField("Status", metav1.ConditionTrue))))
			g.Expect(c.Get(ctx, client.ObjectKeyFromObject(cred), secret)).To(Succeed())
		}).WithTimeout(10 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
		GinkgoWriter.Printf("credential Ready with its Secret after %s\n", time.Since(start))
		Expect(credential.Verify(string(secret.Data["CLIENT_SECRET"]), cred.Status.SecretHash)).To(BeTrue())

		Expect(c.Delete(ctx, cred)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(c.Get(ctx, client.ObjectKeyFromObject(secret), &corev1.Secret{}))
		}).WithTimeout(60*time.Second).Should(BeTrue(), "kube-controller-manager's garbage collector removes the Secret")
	})

	It("exchanges credentials for tokens the API server authenticates only when meant for it (finding 7)", func(ctx SpecContext) {
		tokenOf := func(secretName string) string {
			secret := &corev1.Secret{}
			ExpectWithOffset(1, c.Get(ctx, client.ObjectKey{Namespace: "team-checkout", Name: secretName}, secret)).To(Succeed())
			ExpectWithOffset(1, string(secret.Data["TOKEN_URL"])).To(Equal(tokenURL), "the Secret tells the workload where to trade its credentials")
			cc := clientcredentials.Config{
				ClientID:     string(secret.Data["CLIENT_ID"]),
				ClientSecret: string(secret.Data["CLIENT_SECRET"]),
				TokenURL:     string(secret.Data["TOKEN_URL"]),
			}
			tok, err := cc.Token(ctx)
			ExpectWithOffset(1, err).NotTo(HaveOccurred())
			return tok.AccessToken
		}
		// whoami is what the walk-through's `kubectl --kubeconfig token.kubeconfig --token … auth whoami` asks.
		whoami := func(token string) (*authnv1.SelfSubjectReview, error) {
			tokenCfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dev.absDir(), "token.kubeconfig"))
			ExpectWithOffset(1, err).NotTo(HaveOccurred())
			ExpectWithOffset(1, tokenCfg.CertData).To(BeEmpty(), "no client certificate may win over the token")
			tokenCfg.BearerToken = token
			cs, err := kubernetes.NewForConfig(tokenCfg)
			ExpectWithOffset(1, err).NotTo(HaveOccurred())
			return cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
		}

		By("cataloguing the API server with its own audience, its service-account issuer")
		cs, err := kubernetes.NewForConfig(cfg)
		Expect(err).NotTo(HaveOccurred())
		raw, err := cs.RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
		Expect(err).NotTo(HaveOccurred())
		var discovery struct {
			Issuer string `json:"issuer"`
		}
		Expect(json.Unmarshal(raw, &discovery)).To(Succeed())
		def := &iamv1alpha1.APIDefinition{}
		Expect(c.Get(ctx, client.ObjectKey{Name: "kubernetes"}, def)).To(Succeed())
		Expect(def.Spec.Audience).To(Equal(discovery.Issuer))

		By("logging in with the dev login, as the walk-through does")
		Expect(walkthrough).To(And(
			ContainSubstring("get secret kubectl-login -o jsonpath='{.data.CLIENT_ID}'"),
			ContainSubstring(`--token "$LOGIN_TOKEN" auth whoami`)))
		review, err := whoami(tokenOf("kubectl-login"))
		Expect(err).NotTo(HaveOccurred())
		Expect(review.Status.UserInfo.Username).To(Equal("keysmith:credential:team-checkout:kubectl-login"))
		Expect(review.Status.UserInfo.Groups).To(ContainElements("keysmith:api:kubernetes:user", "keysmith:account:acme"))

		By("refusing the Platform API's token, which is no login to the cluster")
		_, err = whoami(tokenOf("platform-automation-credentials"))
		Expect(apierrors.IsUnauthorized(err)).To(BeTrue(), "got %v", err)
	})

	It("enforces admission: catalog, no escalation, deletion protection, status policy", func(ctx SpecContext) {
		bad := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-checkout", Name: "typo"},
			Spec: iamv1alpha1.APICredentialSpec{
				APIs:  []iamv1alpha1.APIGrant{{Name: "profile-api", Permission: "admin"}},
				Scope: iamv1alpha1.CredentialScope{Workspaces: []string{"eu-prod"}},
			},
		}
		Expect(c.Create(ctx, bad)).To(MatchError(ContainSubstring(`spec.apis[0].permission: Unsupported value: "admin": supported values: "read-only"`)))

		By("refusing eve what she may not grant, admitting what she may")
		eveCfg := rest.CopyConfig(cfg)
		eveCfg.Impersonate = rest.ImpersonationConfig{UserName: "eve"}
		eve, err := client.New(eveCfg, client.Options{Scheme: testenv.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		sneaky := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-checkout", Name: "sneaky"},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "admin"}}},
		}
		Expect(eve.Create(ctx, sneaky)).To(MatchError(ContainSubstring(`missing grant apidefinitions/admin "platform-api"`)))
		fine := bad.DeepCopy()
		fine.Name, fine.Spec.APIs[0].Permission = "eve-reader", "read-only"
		Expect(eve.Create(ctx, fine)).To(Succeed())

		By("protecting a credential from deletion")
		patch := client.MergeFrom(fine.DeepCopy())
		fine.Spec.DeletionProtection = true
		Expect(c.Patch(ctx, fine, patch)).To(Succeed())
		Expect(c.Delete(ctx, fine, client.DryRunAll)).To(MatchError(ContainSubstring("spec.deletionProtection is true")))

		By("refusing identity changes in status from anyone but the manager")
		Eventually(func(g Gomega) string {
			g.Expect(c.Get(ctx, client.ObjectKeyFromObject(fine), fine)).To(Succeed())
			return fine.Status.SecretHash
		}).ShouldNot(BeEmpty())
		err = c.Status().Patch(ctx, fine, client.RawPatch(types.MergePatchType,
			[]byte(`{"status":{"secretHash":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}}`)))
		Expect(err).To(MatchError(ContainSubstring("only the keysmith manager")))
	})

	It("stops everything on Ctrl-C and leaves nothing behind", func() {
		procs := dev.running()
		Expect(dev.cmd.Process.Signal(syscall.SIGINT)).To(Succeed())
		Expect(dev.exitCode(60 * time.Second)).To(Equal(0))
		_, err := os.Stat(dev.absDir())
		Expect(os.IsNotExist(err)).To(BeTrue(), "the dev directory is removed")
		expectNothingLeft(dev.dir, procs)
	})
})
