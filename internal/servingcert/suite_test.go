package servingcert_test

import (
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/keysmith-dev/keysmith/internal/testenv"
)

var (
	testEnv   *envtest.Environment
	adminCfg  *rest.Config
	k8sClient client.Client
	// managerBinary is cmd/manager, built once for the suite.
	managerBinary string
)

func TestServingCert(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Serving certificates Suite")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	// The machine is shared: a second is too short for a process's or the API server's reply.
	SetDefaultEventuallyTimeout(30 * time.Second)
	By("building the manager binary")
	dir := GinkgoT().TempDir()
	Expect(testenv.Build(ctx, dir, "./cmd/manager")).To(Succeed())
	managerBinary = testenv.Binary(dir, "./cmd/manager")

	var err error
	testEnv, err = testenv.New()
	Expect(err).NotTo(HaveOccurred())
	adminCfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(testEnv.Stop()).To(Succeed()) })
	k8sClient, err = client.New(adminCfg, client.Options{Scheme: testenv.Scheme()})
	Expect(err).NotTo(HaveOccurred())
})
