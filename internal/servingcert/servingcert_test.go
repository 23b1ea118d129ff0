package servingcert_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/servingcert"
	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/testenv/kubelet"
)

const (
	systemNamespace   = "keysmith-system"
	tenantNamespace   = "team-a"
	webhookSecret     = "keysmith-webhook-server-cert"
	tokenServerSecret = "keysmith-token-server-tls"
	webhookConfig     = "keysmith-validating-webhook"
	// unknownAPIRefusal is the webhook's refusal of a credential naming an API missing
	// from the catalog (internal/webhook's tests).
	unknownAPIRefusal = `spec.apis[0].name: Invalid value: "billing-api": no APIDefinition with this name exists`
)

var _ = Describe("serving certificates without cert-manager", Ordered, func() {
	var (
		port    int
		certDir string
		leader  *managerProcess
		// volume mounts the webhook Secret into certDir, once started by stopVolume's spec.
		volume     *kubelet.SecretVolume
		stopVolume func()
		// caPool trusts the CA of the webhook Secret as first issued.
		caPool *x509.CertPool
		caPEM  []byte
	)

	BeforeAll(func(ctx SpecContext) {
		for _, ns := range []string{systemNamespace, tenantNamespace} {
			Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
				Labels: map[string]string{"iam.keysmith.dev/account": "acme"}}})).To(Succeed())
		}
		root := testenv.RepoRoot()
		Expect(testenv.CreateFromFile(ctx, k8sClient, filepath.Join(root, "config", "samples", "iam_v1alpha1_apidefinitions.yaml"), "")).To(Succeed())
		By("installing the manager's shipped RBAC")
		for _, f := range []string{"service_account.yaml", "role.yaml", "role_binding.yaml", "leader_election_role.yaml", "leader_election_role_binding.yaml"} {
			Expect(testenv.CreateFromFile(ctx, k8sClient, filepath.Join(root, "config", "rbac", f), systemNamespace)).To(Succeed())
		}
		port = freePort()
		By(fmt.Sprintf("installing the webhook configuration pointed at https://localhost:%d, without a caBundle", port))
		installWebhookConfiguration(ctx, port)

		certDir = GinkgoT().TempDir()
		u, err := testEnv.ControlPlane.AddUser(envtest.User{Name: "system:serviceaccount:" + systemNamespace + ":keysmith-manager"}, adminCfg)
		Expect(err).NotTo(HaveOccurred())
		kubeconfig, err := u.KubeConfig()
		Expect(err).NotTo(HaveOccurred())
		kubeconfigPath := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(os.WriteFile(kubeconfigPath, kubeconfig, 0o600)).To(Succeed())
		By("running the manager binary as its service account with --serving-certs=true")
		leader = startManager(kubeconfigPath, certDir, port)
		// The Deployment's volume: only tls.crt and tls.key, never ca.key.
		volume = &kubelet.SecretVolume{Client: k8sClient, Namespace: systemNamespace, Dir: certDir,
			Source: corev1.SecretVolumeSource{SecretName: webhookSecret, Items: []corev1.KeyToPath{
				{Key: "tls.crt", Path: "tls.crt"}, {Key: "tls.key", Path: "tls.key"}}}}
		// Registered here, not in the spec that starts it: it runs until the last spec.
		DeferCleanup(func() {
			if stopVolume != nil {
				stopVolume()
			}
		})
	})

	It("creates the webhook Secret, issues its certificate and puts its CA in every webhook's caBundle", func(ctx SpecContext) {
		secret := &corev1.Secret{}
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: webhookSecret}, secret)).To(Succeed())
			g.Expect(secret.Data).To(HaveKey("tls.crt"))
			g.Expect(secret.Data).To(HaveKey("tls.key"))
			g.Expect(secret.Data).To(HaveKey("ca.key"))
			g.Expect(secret.Data).To(HaveKey("ca.crt"))
		}).WithTimeout(time.Minute).Should(Succeed())
		Expect(secret.Type).To(Equal(corev1.SecretTypeOpaque))
		caPEM = secret.Data["ca.crt"]
		caPool = x509.NewCertPool()
		Expect(caPool.AppendCertsFromPEM(caPEM)).To(BeTrue())

		Eventually(func(g Gomega) {
			vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: webhookConfig}, vwc)).To(Succeed())
			g.Expect(vwc.Webhooks).To(HaveLen(3))
			for _, wh := range vwc.Webhooks {
				g.Expect(wh.ClientConfig.CABundle).To(Equal(caPEM), "webhook %s", wh.Name)
			}
		}).WithTimeout(time.Minute).Should(Succeed())

		By("verifying the certificate: signed by ca.crt, for the Service and for localhost")
		leaf := parseCert(secret.Data["tls.crt"])
		for _, name := range []string{"keysmith-webhook-service.keysmith-system.svc", "keysmith-webhook-service.keysmith-system.svc.cluster.local", "localhost"} {
			_, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: caPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			Expect(err).NotTo(HaveOccurred(), name)
		}
	})

	It("starts the webhook server only once the kubelet has mounted the certificate", func(ctx SpecContext) {
		Expect(leader.readyz()).NotTo(Equal(http.StatusOK), "no certificate files yet: the webhook server has not started")
		Expect(leader.port).To(Equal(port))
		vctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() { defer close(done); volume.Run(vctx) }()
		stopVolume = func() { cancel(); <-done }
		Eventually(leader.readyz).WithTimeout(time.Minute).Should(Equal(http.StatusOK))
	})

	It("answers admission with the manager's own certificate", func(ctx SpecContext) {
		leaf := servedCert(port, caPool)
		GinkgoWriter.Printf("webhook serves certificate serial %s, DNS names %v, SHA-256 %s\n", leaf.SerialNumber, leaf.DNSNames, fingerprint(leaf))
		Expect(leaf.DNSNames).To(ContainElement("localhost"))

		err := k8sClient.Create(ctx, credential("refused", "billing-api", "user"))
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring(unknownAPIRefusal))
		Expect(k8sClient.Create(ctx, credential("accepted", "platform-api", "user"))).To(Succeed())
	})

	It("survives a renewal of the serving certificate without a failed admission, keeping the CA", func(ctx SpecContext) {
		before := servedCert(port, caPool)
		admissions := startAdmissions(ctx)

		Eventually(admissions.succeeded.Load).WithTimeout(30*time.Second).Should(BeNumerically(">=", 10), "admissions flow before the renewal")
		By("removing tls.crt from the Secret, which makes the rotator issue a new certificate")
		Eventually(func() error {
			secret := &corev1.Secret{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: webhookSecret}, secret); err != nil {
				return err
			}
			delete(secret.Data, "tls.crt")
			return k8sClient.Update(ctx, secret)
		}).Should(Succeed())
		renewedAt := time.Now()

		var after *x509.Certificate
		Eventually(func() string {
			after = servedCert(port, caPool)
			return fingerprint(after)
		}).WithTimeout(time.Minute).WithPolling(100 * time.Millisecond).ShouldNot(Equal(fingerprint(before)))
		GinkgoWriter.Printf("renewal served after %s: serial %s -> %s, SHA-256 %s -> %s, not after %s -> %s\n",
			time.Since(renewedAt).Round(time.Millisecond), before.SerialNumber, after.SerialNumber,
			fingerprint(before), fingerprint(after), before.NotAfter.Format(time.RFC3339), after.NotAfter.Format(time.RFC3339))

		served := admissions.succeeded.Load()
		Eventually(admissions.succeeded.Load).WithTimeout(30*time.Second).Should(BeNumerically(">=", served+10), "admissions flow after the renewal")
		admissions.stop()
		GinkgoWriter.Printf("admissions during the renewal: %d succeeded, %d failed (last error: %v)\n",
			admissions.succeeded.Load(), admissions.failed.Load(), admissions.lastErr())
		Expect(admissions.failed.Load()).To(BeZero(), "last error: %v", admissions.lastErr())

		By("keeping the CA: the Secret's ca.crt and every caBundle are unchanged")
		secret := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: webhookSecret}, secret)).To(Succeed())
		Expect(secret.Data["ca.crt"]).To(Equal(caPEM))
		vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: webhookConfig}, vwc)).To(Succeed())
		for _, wh := range vwc.Webhooks {
			Expect(wh.ClientConfig.CABundle).To(Equal(caPEM), "webhook %s", wh.Name)
		}
		_, projects, _ := volume.State()
		Expect(projects).To(BeNumerically(">=", 2), "the stand-in mounted the renewed certificate")
	})

	It("serves the webhook on a replica that is not the leader, with the mounted certificate", func(ctx SpecContext) {
		other := startManager(leader.kubeconfig, certDir, freePort())
		Eventually(other.readyz).WithTimeout(time.Minute).Should(Equal(http.StatusOK))
		Expect(fingerprint(servedCert(other.port, caPool))).To(Equal(fingerprint(servedCert(port, caPool))))
		lease := &coordinationv1.Lease{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: "manager.iam.keysmith.dev"}, lease)).To(Succeed())
		GinkgoWriter.Printf("lease holder: %s\n", ptr.Deref(lease.Spec.HolderIdentity, ""))
		Expect(leader.output()).To(ContainSubstring("Successfully acquired lease"))
		Eventually(other.output).Should(ContainSubstring("Attempting to acquire leader lease"))
		Expect(other.output()).NotTo(ContainSubstring("Successfully acquired lease"), "the first manager still leads")
	})

	It("issues the token server's certificate for its Service, signed by the CA in its ca.crt", func(ctx SpecContext) {
		secret := &corev1.Secret{}
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: tokenServerSecret}, secret)).To(Succeed())
			g.Expect(secret.Data).To(HaveKey("tls.crt"))
		}).WithTimeout(time.Minute).Should(Succeed())
		Expect(secret.Type).To(Equal(corev1.SecretTypeOpaque))
		pool := x509.NewCertPool()
		Expect(pool.AppendCertsFromPEM(secret.Data["ca.crt"])).To(BeTrue())
		leaf := parseCert(secret.Data["tls.crt"])
		for _, name := range []string{"keysmith-token-server.keysmith-system.svc", "keysmith-token-server.keysmith-system.svc.cluster.local"} {
			_, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			Expect(err).NotTo(HaveOccurred(), name)
		}
		_, err := tls.X509KeyPair(secret.Data["tls.crt"], secret.Data["tls.key"])
		Expect(err).NotTo(HaveOccurred(), "tls.key is the certificate's key")
		Expect(secret.Data["ca.crt"]).NotTo(Equal(caPEM), "the token server has a CA of its own")

		By("publishing ca.crt, and only ca.crt, in a ConfigMap its clients can read without the Secret's ca.key")
		caConfigMap := client.ObjectKey{Namespace: systemNamespace, Name: "keysmith-token-server-ca"}
		published := &corev1.ConfigMap{}
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, caConfigMap, published)).To(Succeed())
		}).Should(Succeed())
		Expect(published.Data).To(Equal(map[string]string{"ca.crt": string(secret.Data["ca.crt"])}))
		Expect(published.BinaryData).To(BeEmpty())

		By("leaving a valid certificate alone")
		issuer := &servingcert.TokenServerIssuer{Client: k8sClient, Secret: client.ObjectKeyFromObject(secret),
			DNSNames: []string{"keysmith-token-server.keysmith-system.svc"}, CAConfigMap: caConfigMap.Name}
		Expect(issuer.Ensure(ctx, time.Now())).To(Succeed())
		again := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(secret), again)).To(Succeed())
		Expect(again.ResourceVersion).To(Equal(secret.ResourceVersion))
		unchanged := &corev1.ConfigMap{}
		Expect(k8sClient.Get(ctx, caConfigMap, unchanged)).To(Succeed())
		Expect(unchanged.ResourceVersion).To(Equal(published.ResourceVersion))
		By("renewing it from the same CA within 90 days of its expiry")
		Expect(issuer.Ensure(ctx, leaf.NotAfter.Add(-89*24*time.Hour))).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(secret), again)).To(Succeed())
		Expect(again.Data["tls.crt"]).NotTo(Equal(secret.Data["tls.crt"]))
		Expect(again.Data["ca.crt"]).To(Equal(secret.Data["ca.crt"]))
		By("replacing the CA, and the certificate with it, within 90 days of the CA's expiry")
		at := parseCert(again.Data["ca.crt"]).NotAfter.Add(-89 * 24 * time.Hour)
		Expect(issuer.Ensure(ctx, at)).To(Succeed())
		renewed := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(secret), renewed)).To(Succeed())
		Expect(renewed.Data["ca.crt"]).NotTo(Equal(again.Data["ca.crt"]))
		newPool := x509.NewCertPool()
		Expect(newPool.AppendCertsFromPEM(renewed.Data["ca.crt"])).To(BeTrue())
		_, err = parseCert(renewed.Data["tls.crt"]).Verify(x509.VerifyOptions{DNSName: "keysmith-token-server.keysmith-system.svc", Roots: newPool, CurrentTime: at})
		Expect(err).NotTo(HaveOccurred(), "the new certificate is signed by the new CA")
		Expect(k8sClient.Get(ctx, caConfigMap, published)).To(Succeed())
		Expect(published.Data).To(Equal(map[string]string{"ca.crt": string(renewed.Data["ca.crt"])}), "the ConfigMap follows the new CA")
	})

	It("creates a deleted certificate Secret again at its next check, and the webhook's, empty for its rotator", func(ctx SpecContext) {
		// Names of their own, so that the Secrets the running manager serves stay untouched.
		own := client.ObjectKey{Namespace: systemNamespace, Name: "deleted-token-server-tls"}
		kept := client.ObjectKey{Namespace: systemNamespace, Name: "deleted-webhook-cert"}
		issuer := &servingcert.TokenServerIssuer{Client: k8sClient, Secret: own, KeepSecrets: []types.NamespacedName{kept},
			DNSNames: []string{"keysmith-token-server.keysmith-system.svc"}}
		Expect(issuer.Ensure(ctx, time.Now())).To(Succeed())
		for _, key := range []client.ObjectKey{own, kept} {
			Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}})).To(Succeed())
		}
		Expect(issuer.Ensure(ctx, time.Now())).To(Succeed())
		secret := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, own, secret)).To(Succeed())
		_, err := tls.X509KeyPair(secret.Data["tls.crt"], secret.Data["tls.key"])
		Expect(err).NotTo(HaveOccurred(), "the issuer's own Secret is filled again")
		Expect(k8sClient.Get(ctx, kept, secret)).To(Succeed())
		Expect(secret.Data).To(BeEmpty(), "the webhook's Secret is created empty: its rotator fills it")
		Expect(secret.Type).To(Equal(corev1.SecretTypeOpaque))
	})

	It("lets no namespace tenant read or write the certificate Secrets or the webhook configuration", func(ctx SpecContext) {
		Expect(k8sClient.Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: tenantNamespace, Name: "editor"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"", "iam.keysmith.dev"}, Resources: []string{"*"}, Verbs: []string{"*"}}},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: tenantNamespace, Name: "alice-editor"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "editor"},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "alice"}},
		})).To(Succeed())
		cfg := rest.CopyConfig(adminCfg)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: "alice"}
		alice, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() error {
			return alice.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: tenantNamespace, Name: "own"}})
		}).Should(Succeed(), "alice edits her own namespace")

		for _, name := range []string{webhookSecret, tokenServerSecret} {
			key := client.ObjectKey{Namespace: systemNamespace, Name: name}
			Expect(apierrors.IsForbidden(alice.Get(ctx, key, &corev1.Secret{}))).To(BeTrue(), "get %s", name)
			Expect(apierrors.IsForbidden(alice.Update(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: systemNamespace, Name: name}}))).To(BeTrue(), "update %s", name)
			Expect(apierrors.IsForbidden(alice.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: systemNamespace, Name: name}}))).To(BeTrue(), "delete %s", name)
		}
		Expect(apierrors.IsForbidden(alice.List(ctx, &corev1.SecretList{}, client.InNamespace(systemNamespace)))).To(BeTrue())
		Expect(apierrors.IsForbidden(alice.Get(ctx, client.ObjectKey{Name: webhookConfig}, &admissionregistrationv1.ValidatingWebhookConfiguration{}))).To(BeTrue())
		// The published CA is what clients trust: a tenant who could write it could make
		// them trust a CA of her own.
		caConfigMap := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: systemNamespace, Name: "keysmith-token-server-ca"},
			Data: map[string]string{"ca.crt": "a CA of alice's"}}
		Expect(apierrors.IsForbidden(alice.Update(ctx, caConfigMap.DeepCopy()))).To(BeTrue(), "update the published CA")
		Expect(apierrors.IsForbidden(alice.Delete(ctx, caConfigMap.DeepCopy()))).To(BeTrue(), "delete the published CA")
	})

	It("recovers from a CA rotation, after a short window of refused admissions (the documented limit)", func(ctx SpecContext) {
		admissions := startAdmissions(ctx)
		Eventually(admissions.succeeded.Load).Should(BeNumerically(">=", 5), "admissions flow before the CA rotation")
		By("removing ca.key from the Secret, which makes the rotator issue a new CA and certificate")
		Eventually(func() error {
			secret := &corev1.Secret{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: webhookSecret}, secret); err != nil {
				return err
			}
			delete(secret.Data, "ca.key")
			return k8sClient.Update(ctx, secret)
		}).Should(Succeed())
		rotatedAt := time.Now()
		var newCA []byte
		Eventually(func(g Gomega) {
			secret := &corev1.Secret{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: webhookSecret}, secret)).To(Succeed())
			g.Expect(secret.Data).To(HaveKey("ca.key"))
			newCA = secret.Data["ca.crt"]
			g.Expect(newCA).NotTo(Equal(caPEM))
			vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: webhookConfig}, vwc)).To(Succeed())
			for _, wh := range vwc.Webhooks {
				g.Expect(wh.ClientConfig.CABundle).To(Equal(newCA), "the caBundle holds the new CA alone")
			}
		}).Should(Succeed())
		newPool := x509.NewCertPool()
		Expect(newPool.AppendCertsFromPEM(newCA)).To(BeTrue())
		Eventually(func() *x509.Certificate { return servedCert(port, newPool) }).ShouldNot(BeNil(), "the webhook serves a certificate of the new CA")
		served := admissions.succeeded.Load()
		Eventually(admissions.succeeded.Load).Should(BeNumerically(">=", served+10), "admissions flow again")
		admissions.stop()
		GinkgoWriter.Printf("CA rotation: new certificate served after %s; admissions %d succeeded, %d refused (last error: %v)\n",
			time.Since(rotatedAt).Round(time.Millisecond), admissions.succeeded.Load(), admissions.failed.Load(), admissions.lastErr())
		caPEM, caPool = newCA, newPool
	})

	It("never logs a private key", func() {
		out := leader.output()
		Expect(out).NotTo(ContainSubstring("PRIVATE KEY"))
		for _, name := range []string{webhookSecret, tokenServerSecret} {
			secret := &corev1.Secret{}
			Expect(k8sClient.Get(context.Background(), client.ObjectKey{Namespace: systemNamespace, Name: name}, secret)).To(Succeed())
			for _, k := range []string{"tls.key", "ca.key"} {
				lines := strings.Split(string(secret.Data[k]), "\n")
				Expect(len(lines)).To(BeNumerically(">", 2), k)
				Expect(out).NotTo(ContainSubstring(lines[1][:32]), "a line of %s/%s", name, k)
				Expect(out).NotTo(ContainSubstring(base64.StdEncoding.EncodeToString(secret.Data[k])[:32]), "%s/%s base64", name, k)
			}
		}
	})
})

// credential is an APICredential in the tenant namespace granting api's permission.
func credential(name, api, permission string) *iamv1alpha1.APICredential {
	return &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: tenantNamespace, Name: name},
		Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: api, Permission: permission}}},
	}
}

// installWebhookConfiguration creates config/webhook's configuration as its kustomize
// patch names it, with every webhook's clientConfig a URL on localhost:port (envtest has
// no Services) and no caBundle.
func installWebhookConfiguration(ctx context.Context, port int) {
	objs, err := testenv.ReadObjects(filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml"), systemNamespace)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	ExpectWithOffset(1, objs).To(HaveLen(1))
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	ExpectWithOffset(1, runtime.DefaultUnstructuredConverter.FromUnstructured(objs[0].Object, vwc)).To(Succeed())
	vwc.Name = webhookConfig
	for i := range vwc.Webhooks {
		url := fmt.Sprintf("https://localhost:%d%s", port, *vwc.Webhooks[i].ClientConfig.Service.Path)
		vwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url}
	}
	ExpectWithOffset(1, k8sClient.Create(ctx, vwc)).To(Succeed())
}

// managerProcess is a running cmd/manager.
type managerProcess struct {
	kubeconfig string
	port       int
	probeAddr  string
	out        *syncBuffer
}

// startManager runs the manager binary with --serving-certs=true until the suite ends.
func startManager(kubeconfig, certDir string, port int) *managerProcess {
	m := &managerProcess{kubeconfig: kubeconfig, port: port, probeAddr: "127.0.0.1:" + strconv.Itoa(freePort()), out: &syncBuffer{}}
	cmd := exec.Command(managerBinary,
		"--kubeconfig="+kubeconfig,
		"--signing-key-namespace="+systemNamespace,
		"--leader-elect",
		"--metrics-bind-address=0",
		"--health-probe-bind-address="+m.probeAddr,
		"--token-url=https://keysmith-token-server."+systemNamespace+".svc/oauth2/token",
		"--webhook-port="+strconv.Itoa(port),
		"--webhook-cert-dir="+certDir,
		"--serving-certs=true",
		"--serving-cert-dns-names=localhost",
	)
	cmd.Stdout = io.MultiWriter(GinkgoWriter, m.out)
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	ExpectWithOffset(1, cmd.Start()).To(Succeed())
	DeferCleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	return m
}

// readyz returns the status of the manager's /readyz, 0 when it does not answer.
func (m *managerProcess) readyz() int {
	resp, err := http.Get("http://" + m.probeAddr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// output is what the manager logged so far.
func (m *managerProcess) output() string { return m.out.String() }

// servedCert returns the certificate the webhook server on localhost:port presents,
// verified against pool for the name localhost; nil when the handshake fails.
func servedCert(port int, pool *x509.CertPool) *x509.Certificate {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort("localhost", strconv.Itoa(port)),
		&tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		GinkgoWriter.Printf("TLS handshake with localhost:%d: %v\n", port, err)
		return nil
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// fingerprint is the SHA-256 of a certificate's DER, "" for nil. (cert-controller gives
// every server certificate serial number 1, so the serial does not tell a renewal.)
func fingerprint(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:8])
}

// parseCert decodes one PEM certificate.
func parseCert(data []byte) *x509.Certificate {
	b, _ := pem.Decode(data)
	ExpectWithOffset(1, b).NotTo(BeNil())
	c, err := x509.ParseCertificate(b.Bytes)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return c
}

// freePort returns a loopback port free now (testenv.FreePort).
func freePort() int {
	port, err := testenv.FreePort()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return port
}

// admissions sends server-side dry-run creates of a valid credential, one after the
// other, through the API server and so through the webhook, counting the outcomes.
type admissions struct {
	succeeded, failed atomic.Int64
	mu                sync.Mutex
	last              error
	cancel            context.CancelFunc
	done              chan struct{}
}

// startAdmissions runs admissions until stop is called.
func startAdmissions(ctx context.Context) *admissions {
	a := &admissions{done: make(chan struct{})}
	actx, cancel := context.WithCancel(ctx)
	a.cancel = cancel
	go func() {
		defer GinkgoRecover()
		defer close(a.done)
		for i := 0; actx.Err() == nil; i++ {
			err := k8sClient.Create(actx, credential(fmt.Sprintf("dry-run-%d", i), "platform-api", "user"), client.DryRunAll)
			switch {
			case actx.Err() != nil:
			case err != nil:
				a.failed.Add(1)
				a.mu.Lock()
				a.last = err
				a.mu.Unlock()
			default:
				a.succeeded.Add(1)
			}
		}
	}()
	return a
}

// stop ends the admissions and waits for the last one.
func (a *admissions) stop() { a.cancel(); <-a.done }

// lastErr is the error of the last failed admission.
func (a *admissions) lastErr() error { a.mu.Lock(); defer a.mu.Unlock(); return a.last }

// syncBuffer is a bytes.Buffer safe for a writing process and a reading test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written.
func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
