// Package e2e runs keysmith the way a newcomer does: `make dev`'s environment, driven from
// outside with its printed kubeconfig.
package e2e

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

const readyPrefix = "keysmith dev environment ready: kubeconfig="

var _ = Describe("make dev", Ordered, func() {
	var (
		dev      *exec.Cmd
		exited   chan error
		devDir   string
		c        client.Client
		cfg      *rest.Config
		tokenURL string
		readyIn  time.Duration
		// walkthrough is what make dev printed before its ready line.
		walkthrough strings.Builder
	)

	BeforeAll(func(ctx SpecContext) {
		root := testenv.RepoRoot()
		assets, err := testenv.AssetsDir()
		Expect(err).NotTo(HaveOccurred())
		bin := filepath.Join(GinkgoT().TempDir(), "keysmith-dev")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./hack/dev")
		build.Dir = root
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))

		devDir = filepath.Join("bin", "e2e-dev")
		dev = exec.Command(bin)
		dev.Dir = root
		// A free port, so that the test can run beside a developer's `make dev` on 18080.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		tsAddr := ln.Addr().String()
		Expect(ln.Close()).To(Succeed())
		dev.Env = append(os.Environ(), "KUBEBUILDER_ASSETS="+assets, "KEYSMITH_DEV_DIR="+devDir, "KEYSMITH_DEV_TOKEN_SERVER_ADDR="+tsAddr)
		dev.Stderr = GinkgoWriter
		stdout, err := dev.StdoutPipe()
		Expect(err).NotTo(HaveOccurred())
		start := time.Now()
		Expect(dev.Start()).To(Succeed())
		exited = make(chan error, 1)

		lines := make(chan string)
		go func() {
			defer GinkgoRecover()
			scanner := bufio.NewScanner(stdout)
			for scanner.Scan() {
				GinkgoWriter.Println(scanner.Text())
				lines <- scanner.Text()
			}
			close(lines)
			exited <- dev.Wait()
		}()
		var readyLine string
		Eventually(func() bool {
			for {
				select {
				case l, ok := <-lines:
					if !ok {
						Fail("make dev exited before its ready line")
					}
					walkthrough.WriteString(l + "\n")
					if strings.HasPrefix(l, readyPrefix) {
						readyLine = l
						go func() { // keep draining
							for range lines {
							}
						}()
						return true
					}
				default:
					return false
				}
			}
		}).WithTimeout(4 * time.Minute).WithPolling(100 * time.Millisecond).Should(BeTrue())
		readyIn = time.Since(start)
		GinkgoWriter.Printf("ready line after %s\n", readyIn)
		Expect(readyLine).To(Equal(readyPrefix + devDir + "/kubeconfig token-server=http://" + tsAddr))
		tokenURL = "http://" + tsAddr + "/oauth2/token"

		cfg, err = clientcmd.BuildConfigFromFlags("", filepath.Join(root, devDir, "kubeconfig"))
		Expect(err).NotTo(HaveOccurred())
		c, err = client.New(cfg, client.Options{Scheme: testenv.Scheme()})
		Expect(err).NotTo(HaveOccurred())
	})

	AfterAll(func() {
		if dev != nil && dev.ProcessState == nil {
			_ = dev.Process.Kill()
		}
	})

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
			tokenCfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(testenv.RepoRoot(), devDir, "token.kubeconfig"))
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
		Expect(walkthrough.String()).To(And(
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
		Expect(dev.Process.Signal(syscall.SIGINT)).To(Succeed())
		Eventually(exited).WithTimeout(60 * time.Second).Should(Receive(BeNil()))
		_, err := os.Stat(filepath.Join(testenv.RepoRoot(), devDir))
		Expect(os.IsNotExist(err)).To(BeTrue(), "the dev directory is removed")
		// The absolute path: the children name it in their flags, and another checkout's
		// e2e run (same relative directory) is none of this environment's processes.
		out, _ := exec.Command("pgrep", "-f", filepath.Join(testenv.RepoRoot(), devDir)).Output()
		Expect(strings.TrimSpace(string(out))).To(BeEmpty(), "no process of the environment is left")
	})
})
