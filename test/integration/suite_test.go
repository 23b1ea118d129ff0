// Package integration runs the operator and the token server together against a real
// kube-apiserver that authenticates requests through the token server's TokenReview
// webhook. The token server runs under the RBAC shipped in config/token-server, which
// grants it no access to credential Secrets.
package integration

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/keysmith-dev/keysmith/controllers"
	"github.com/keysmith-dev/keysmith/internal/signingkey"
	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

const (
	systemNamespace = "keysmith-system"
	signingSecret   = "keysmith-signing-keys"
	// bindingKeySecret holds the keys that bind credential Secrets to their credentials.
	bindingKeySecret = "keysmith-binding-key"
	usageInterval    = time.Second
)

var (
	testEnv        *envtest.Environment
	adminCfg       *rest.Config
	k8sClient      client.Client
	tokenServerURL string
	tokenServer    *tokenserver.Server
	sidecarURL     string
)

func TestIntegration(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(20 * time.Second) // Gomega's 1 s is one hiccup of a shared machine (see controllers/suite_test.go)
	RunSpecs(t, "Integration Suite")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	tokenServerURL = "http://" + ln.Addr().String()

	By("configuring kube-apiserver with the token server as its webhook token authenticator")
	webhookConfig := filepath.Join(GinkgoT().TempDir(), "webhook.kubeconfig")
	Expect(os.WriteFile(webhookConfig, []byte(tokenserver.WebhookKubeconfig(tokenServerURL)), 0o600)).To(Succeed())
	testEnv, err = testenv.New()
	Expect(err).NotTo(HaveOccurred())
	api := testEnv.ControlPlane.GetAPIServer().Configure()
	api.Set("authentication-token-webhook-config-file", webhookConfig)
	api.Set("authentication-token-webhook-version", "v1")
	api.Set("authentication-token-webhook-cache-ttl", "1s")
	adminCfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	// Cleanups run last-in first-out: the managers and the token server registered below
	// stop before the control plane does.
	DeferCleanup(func() { Expect(testEnv.Stop()).To(Succeed()) })
	k8sClient, err = client.New(adminCfg, client.Options{Scheme: testenv.Scheme()})
	Expect(err).NotTo(HaveOccurred())

	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNamespace}})).To(Succeed())
	Expect(testenv.CreateFromFile(ctx, k8sClient, filepath.Join(testenv.RepoRoot(), "config", "samples", "iam_v1alpha1_apidefinitions.yaml"), "")).To(Succeed())
	for _, f := range []string{
		"rbac/service_account.yaml", "rbac/role.yaml", "rbac/role_binding.yaml",
		"token-server/rbac.yaml", "token-server/sidecar-rbac.yaml", "policy/apicredential-status.yaml",
	} {
		Expect(testenv.CreateFromFile(ctx, k8sClient, filepath.Join(testenv.RepoRoot(), "config", f), systemNamespace)).To(Succeed())
	}

	By("running the operator as its own service account, with the shipped RBAC")
	managerUser, err := testEnv.ControlPlane.AddUser(envtest.User{Name: serviceAccount("keysmith-manager")}, adminCfg)
	Expect(err).NotTo(HaveOccurred())
	runManager(ctx, managerUser.Config(), controllers.CacheOptions(), func(mgr ctrl.Manager) {
		bindingKeys := &controllers.BindingKeyReconciler{
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Clock: clock.RealClock{},
			Namespace: systemNamespace, Name: bindingKeySecret,
		}
		Expect(bindingKeys.SetupWithManager(mgr)).To(Succeed())
		Expect((&controllers.APICredentialReconciler{
			Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(),
			Clock: clock.RealClock{}, Recorder: mgr.GetEventRecorder("keysmith-manager"),
			DefaultTokenURL: tokenServerURL + "/oauth2/token", BindingKeys: bindingKeys,
		}).SetupWithManager(ctx, mgr)).To(Succeed())
		Expect((&controllers.SigningKeyReconciler{
			Client: mgr.GetClient(), Clock: clock.RealClock{}, Namespace: systemNamespace, Name: signingSecret,
			Policy: signingkey.Policy{RotationPeriod: 720 * time.Hour, PrePublish: time.Hour, Retention: 24 * time.Hour},
		}).SetupWithManager(mgr)).To(Succeed())
	})

	By("running the token server as its own service account, with the shipped RBAC")
	tsUser, err := testEnv.ControlPlane.AddUser(envtest.User{Name: serviceAccount("keysmith-token-server")}, adminCfg)
	Expect(err).NotTo(HaveOccurred())
	runManager(ctx, tsUser.Config(), tokenserver.CacheOptions(nil, systemNamespace, signingSecret, false), func(mgr ctrl.Manager) {
		tokenServer, err = tokenserver.Setup(ctx, mgr, tokenserver.Options{Issuer: tokenServerURL, Log: logf.Log.WithName("token-server")}, usageInterval)
		Expect(err).NotTo(HaveOccurred())
	})
	By("running a verify-only sidecar as an API's service account, with the shipped sidecar roles")
	sidecarURL = startSidecar(ctx)

	hs := tokenserver.NewHTTPServer("", tokenServer.Handler())
	go func() { _ = hs.Serve(ln) }()
	DeferCleanup(hs.Close)
	Eventually(func() int {
		resp, err := http.Get(tokenServerURL + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}).WithTimeout(30 * time.Second).Should(Equal(http.StatusOK))
})

// runManager starts a manager with the given cache options until the suite ends.
func runManager(ctx context.Context, cfg *rest.Config, cacheOpts cache.Options, setup func(ctrl.Manager)) {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cacheOpts,
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	setup(mgr)
	stop := testenv.Start(ctx, mgr)
	DeferCleanup(func() { Expect(stop()).To(Succeed()) })
}

// sidecarUser is the service account of the API Pod the verify-only sidecar runs in.
const sidecarUser = "system:serviceaccount:platform:platform-api"

// startSidecar binds the sidecar roles of config/token-server to an API's service account
// and runs a verify-only token server as that account. It returns its URL.
func startSidecar(ctx context.Context) string {
	for _, obj := range []client.Object{
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "keysmith-token-server-verifier-platform-api"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "keysmith-token-server-verifier"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "platform-api", Namespace: "platform"}},
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: systemNamespace, Name: "keysmith-signing-keys-public-platform-api"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "keysmith-signing-keys-public-reader"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "platform-api", Namespace: "platform"}},
		},
	} {
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	}
	u, err := testEnv.ControlPlane.AddUser(envtest.User{Name: sidecarUser}, adminCfg)
	Expect(err).NotTo(HaveOccurred())
	var srv *tokenserver.Server
	runManager(ctx, u.Config(), tokenserver.CacheOptions(nil, systemNamespace, signingSecret, true), func(mgr ctrl.Manager) {
		srv, err = tokenserver.Setup(ctx, mgr, tokenserver.Options{Issuer: tokenServerURL, VerifyOnly: true, Log: logf.Log.WithName("sidecar")}, 0)
		Expect(err).NotTo(HaveOccurred())
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	hs := tokenserver.NewHTTPServer("", srv.Handler())
	go func() { _ = hs.Serve(ln) }()
	DeferCleanup(hs.Close)
	return "http://" + ln.Addr().String()
}

// serviceAccount is the user name of a service account of the operator's namespace, which
// the shipped RBAC and the status policy know by name.
func serviceAccount(name string) string {
	return "system:serviceaccount:" + systemNamespace + ":" + name
}

// userClient returns a client authenticated as the named user, with no groups beyond
// system:authenticated.
func userClient(name string) client.Client {
	u, err := testEnv.ControlPlane.AddUser(envtest.User{Name: name}, adminCfg)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	c, err := client.New(u.Config(), client.Options{Scheme: testenv.Scheme()})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return c
}

// maySecret asks the API server whether user may verb the Secret name in namespace.
func maySecret(ctx context.Context, user, namespace, verb, name string) bool {
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: namespace, Verb: verb, Resource: "secrets", Name: name,
		},
	}}
	ExpectWithOffset(1, k8sClient.Create(ctx, review)).To(Succeed())
	return review.Status.Allowed
}
