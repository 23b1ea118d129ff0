package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

var (
	cfg       *rest.Config
	k8sClient client.Client
	scheme    *runtime.Scheme
	testEnv   *envtest.Environment
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	// Gomega's default of 1 s is one scheduler hiccup on a shared 2-core machine: an
	// Eventually waits only as long as its condition is false, so a longer bound costs a
	// passing test nothing and keeps a loaded machine from failing a correct one.
	SetDefaultEventuallyTimeout(20 * time.Second)
	RunSpecs(t, "Controllers Suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var err error
	testEnv, err = testenv.New()
	Expect(err).NotTo(HaveOccurred())
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	scheme = testenv.Scheme()
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	for _, def := range seedCatalog() {
		Expect(k8sClient.Create(context.Background(), def)).To(Succeed())
	}
})

var _ = AfterSuite(func() {
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// seedCatalog returns the APIDefinitions of the seeds: the Profile API (Workspace level,
// read-only), the Platform API (Account level, user and admin) and the Data Planning API.
func seedCatalog() []*iamv1alpha1.APIDefinition {
	return []*iamv1alpha1.APIDefinition{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "profile-api"},
			Spec: iamv1alpha1.APIDefinitionSpec{
				DisplayName: "Profile API", ScopeLevel: iamv1alpha1.ScopeLevelWorkspace,
				Permissions: []iamv1alpha1.Permission{{Name: "read-only", Methods: []string{"GET", "HEAD"}}},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "platform-api"},
			Spec: iamv1alpha1.APIDefinitionSpec{
				DisplayName: "Platform API", ScopeLevel: iamv1alpha1.ScopeLevelAccount,
				TokenURL: "https://platform.example.com/oauth2/token",
				Permissions: []iamv1alpha1.Permission{
					{Name: "user", Methods: []string{"GET", "HEAD", "POST"}},
					{Name: "admin", Methods: []string{"*"}},
				},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "dataplanning-api"},
			Spec: iamv1alpha1.APIDefinitionSpec{
				DisplayName: "Data Planning API", ScopeLevel: iamv1alpha1.ScopeLevelWorkspace,
				Permissions: []iamv1alpha1.Permission{
					{Name: "read-only", Methods: []string{"GET", "HEAD"}},
					{Name: "admin", Methods: []string{"*"}},
				},
			},
		},
	}
}

// newNamespace creates a namespace with a generated name and optional labels.
func newNamespace(ctx context.Context, labels map[string]string) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "keysmith-test-", Labels: labels}}
	ExpectWithOffset(1, k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}
