package ha

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// TestWorkspaceDefault runs the built manager as its service account with the shipped
// RBAC and webhook configuration (issue 13 item 6): it finds out who it is by itself (no
// --manager-username), creates the default credential of a workspace namespace through
// its own admission webhook, which admits that create although the service account holds
// no grant, once; and admission refuses deleting the workspace's last credential.
func TestWorkspaceDefault(t *testing.T) {
	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	g := NewWithT(t)
	dir := t.TempDir()
	build := make(chan error, 1)
	go func() { build <- testenv.Build(ctx, dir, "./cmd/manager") }()

	env, cfg := testenv.StartT(t)
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(testenv.InstallShipped(ctx, c, systemNamespace)).To(Succeed())
	kubeconfig, _, err := testenv.UserKubeconfig(env, cfg, managerUser, dir)
	g.Expect(err).NotTo(HaveOccurred())
	ca, err := newTestCA()
	g.Expect(err).NotTo(HaveOccurred())
	certDir := filepath.Join(dir, "webhook-certs")
	g.Expect(ca.writeServing(certDir, 2)).To(Succeed())
	g.Expect(<-build).To(Succeed())

	addrs, err := testenv.FreeAddrs(3)
	g.Expect(err).NotTo(HaveOccurred())
	m, err := startManager(t, testenv.Binary(dir, "./cmd/manager"), dir, "manager", kubeconfig, certDir, addrs)
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(func() bool { m.mustRun(); return m.ready(ctx) }).
		WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(BeTrue(), "the manager is ready")
	g.Expect(installWebhook(ctx, c, ca.pem, m.webhookAddr)).To(Succeed())
	t.Logf("%6.2fs manager ready, webhook installed", time.Since(started).Seconds())

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:        "team-workspace",
		Labels:      map[string]string{iamv1alpha1.WorkspaceLabel: "eu-prod"},
		Annotations: map[string]string{iamv1alpha1.DefaultAPIsAnnotation: "platform-api:user"},
	}}
	// Eventually: until the API server reaches the namespaces webhook it was just told of.
	g.Eventually(func() error { return c.Create(ctx, ns.DeepCopy()) }).WithTimeout(20 * time.Second).Should(Succeed())
	key := client.ObjectKey{Namespace: ns.Name, Name: iamv1alpha1.DefaultCredentialName}
	primary := &iamv1alpha1.APICredential{}
	g.Eventually(func() error { m.mustRun(); return c.Get(ctx, key, primary) }).WithTimeout(30*time.Second).Should(Succeed(),
		"the manager creates primary through its own webhook")
	t.Logf("%6.2fs primary created by the manager: %v", time.Since(started).Seconds(), primary.Spec.APIs)
	g.Expect(primary.Spec.APIs).To(Equal([]iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}}))
	creators := map[string]bool{}
	for _, f := range primary.ManagedFields {
		creators[f.Manager] = true
	}
	g.Expect(creators).To(HaveKey("manager"), "written by the manager binary")
	g.Eventually(func(g Gomega) {
		got := &iamv1alpha1.APICredential{}
		g.Expect(c.Get(ctx, key, got)).To(Succeed())
		g.Expect(got.Status.ClientID).NotTo(BeEmpty(), "and issues it")
	}).WithTimeout(30 * time.Second).Should(Succeed())

	err = c.Delete(ctx, primary)
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "deleting the last credential: %v", err)
	g.Expect(err).To(MatchError(ContainSubstring("it is the last APICredential of workspace namespace")))

	var list iamv1alpha1.APICredentialList
	g.Expect(c.List(ctx, &list, client.InNamespace(ns.Name))).To(Succeed())
	g.Expect(list.Items).To(HaveLen(1), "created once")
	g.Expect(m.logged(`"msg":"created the default credential"`)).To(Equal(1))
}
