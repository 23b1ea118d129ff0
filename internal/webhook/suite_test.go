package webhook

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// managerUser is the user the suite's APICredential validator takes for the manager's.
const managerUser = "system:serviceaccount:keysmith-system:keysmith-manager"

var (
	testEnv   *envtest.Environment
	adminCfg  *rest.Config
	k8sClient client.Client
)

func TestWebhooks(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(20 * time.Second) // Gomega's 1 s is one hiccup of a shared machine (see controllers/suite_test.go)
	RunSpecs(t, "Admission webhook Suite")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var err error
	testEnv, err = testenv.New()
	Expect(err).NotTo(HaveOccurred())
	// The generated webhook configuration, pointed by envtest at the local webhook server
	// with a CA it generates.
	testEnv.WebhookInstallOptions = envtest.WebhookInstallOptions{
		Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml")},
	}
	adminCfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(testEnv.Stop()).To(Succeed()) })
	k8sClient, err = client.New(adminCfg, client.Options{Scheme: testenv.Scheme()})
	Expect(err).NotTo(HaveOccurred())

	wio := &testEnv.WebhookInstallOptions
	mgr, err := ctrl.NewManager(adminCfg, ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: wio.LocalServingHost, Port: wio.LocalServingPort, CertDir: wio.LocalServingCertDir,
		}),
	})
	Expect(err).NotTo(HaveOccurred())
	credentials := &APICredentialValidator{Reader: mgr.GetClient(), Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), ManagerUsername: managerUser}
	Expect(credentials.SetupWithManager(mgr)).To(Succeed())
	Expect((&NamespaceValidator{Credentials: credentials}).SetupWithManager(mgr)).To(Succeed())
	Expect((&APIDefinitionValidator{Reader: mgr.GetClient()}).SetupWithManager(mgr)).To(Succeed())
	stop := testenv.Start(ctx, mgr)
	DeferCleanup(func() { Expect(stop()).To(Succeed()) })

	By("waiting for the webhook server")
	addr := net.JoinHostPort(wio.LocalServingHost, fmt.Sprint(wio.LocalServingPort))
	Eventually(func() error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a readiness probe
		if err != nil {
			return err
		}
		return conn.Close()
	}).WithTimeout(30 * time.Second).Should(Succeed())

	Expect(testenv.CreateFromFile(ctx, k8sClient, filepath.Join(testenv.RepoRoot(), "config", "samples", "iam_v1alpha1_apidefinitions.yaml"), "")).To(Succeed())
})

// warnings collects the admission warnings a client receives.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}

// userClient returns a client authenticated as the named user (no groups beyond
// system:authenticated) and the warnings it receives.
func userClient(name string) (client.Client, *warnings) {
	u, err := testEnv.ControlPlane.AddUser(envtest.User{Name: name}, adminCfg)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	cfg := u.Config()
	w := &warnings{}
	cfg.WarningHandlerWithContext = w
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return c, w
}
