// Package cli drives the built kubectl-keysmith binary as a user would, through its
// command line and output only, against a real kube-apiserver (envtest) with keysmith's
// CRDs, the manager's controllers and admission webhooks, the status policy, the token
// server, the samples' catalog and kube-controller-manager's garbage collector running.
//
// Two users reach the cluster through kubeconfig files of their own: an admin
// (system:masters, who may grant anything) and an editor with edit-like rights in one
// namespace (keysmith-aggregate-to-edit and Secret reads, as the built-in edit role has
// them) but without keysmith's grant verb.
package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
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
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/keysmith-dev/keysmith/controllers"
	kscredential "github.com/keysmith-dev/keysmith/internal/credential"
	"github.com/keysmith-dev/keysmith/internal/signingkey"
	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
	kswebhook "github.com/keysmith-dev/keysmith/internal/webhook"
)

const (
	systemNamespace  = "keysmith-system"
	signingSecret    = "keysmith-signing-keys"
	bindingKeySecret = "keysmith-binding-key"
	// editorNamespace is the one namespace the editor may manage credentials in.
	editorNamespace = "team-edit"
	// editorUser has edit-like rights in editorNamespace and no grant.
	editorUser = "dev@example.com"
	// complianceNamespace is where complianceUser may manage and grant, but read no Secret.
	complianceNamespace = "team-compliance"
	// complianceUser is bound to keysmith-compliance-admin in complianceNamespace.
	complianceUser = "auditor@example.com"
	// account is the account label of the test namespaces.
	account = "acme"
)

var (
	testEnv   *envtest.Environment
	adminCfg  *rest.Config
	k8sClient client.Client
	// editorClient is the editor's own client, for the admission message a direct create gets.
	editorClient client.Client
	// tokenServerURL is the token server's origin; credential Secrets' TOKEN_URL is its
	// /oauth2/token.
	tokenServerURL string
	// tlsTokenServerURL is the same token server over HTTPS, with a certificate of the CA
	// in the PEM file tokenServerCA, for token's and check's TLS flags.
	tlsTokenServerURL, tokenServerCA string
	// plugin is the built kubectl-keysmith binary, completeHelper kubectl_complete-keysmith.
	plugin, completeHelper string
	// adminKubeconfig, editorKubeconfig and complianceKubeconfig are the users' kubeconfig files.
	adminKubeconfig, editorKubeconfig, complianceKubeconfig string
	// home is an empty HOME for the plugin, so that no ~/.kube/config of the machine counts.
	home string
)

func TestCLI(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "kubectl-keysmith Suite")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	// What waits for the operator, the token server's cache or the garbage collector gets
	// time on a shared machine; the one timing assertion (401 within 1 s) sets its own.
	SetDefaultEventuallyTimeout(30 * time.Second)

	By("building the plugin and its completion helper while the control plane starts")
	binDir := GinkgoT().TempDir()
	plugin = testenv.Binary(binDir, "./cmd/kubectl-keysmith")
	completeHelper = testenv.Binary(binDir, "./cmd/kubectl_complete-keysmith")
	built := make(chan error, 1)
	go func() {
		built <- testenv.Build(ctx, binDir, "./cmd/kubectl-keysmith", "./cmd/kubectl_complete-keysmith")
	}()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	tokenServerURL = "http://" + ln.Addr().String()

	testEnv, err = testenv.New()
	Expect(err).NotTo(HaveOccurred())
	// The build runs meanwhile, on a machine that other suites may share.
	testEnv.ControlPlaneStartTimeout = 2 * time.Minute
	testEnv.WebhookInstallOptions = envtest.WebhookInstallOptions{
		Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml")},
	}
	adminCfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	// Cleanups run last-in first-out: everything registered below stops before the
	// control plane does.
	DeferCleanup(func() { Expect(testEnv.Stop()).To(Succeed()) })
	k8sClient, err = client.New(adminCfg, client.Options{Scheme: testenv.Scheme()})
	Expect(err).NotTo(HaveOccurred())

	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNamespace}})).To(Succeed())
	Expect(testenv.CreateFromFile(ctx, k8sClient, filepath.Join(testenv.RepoRoot(), "config", "samples", "iam_v1alpha1_apidefinitions.yaml"), "")).To(Succeed())
	for _, f := range []string{
		"rbac/service_account.yaml", "rbac/role.yaml", "rbac/role_binding.yaml", "rbac/roles.yaml",
		"token-server/rbac.yaml", "policy/apicredential-status.yaml",
	} {
		Expect(testenv.CreateFromFile(ctx, k8sClient, filepath.Join(testenv.RepoRoot(), "config", f), systemNamespace)).To(Succeed())
	}

	By("running the manager (controllers and admission webhooks) as its own service account")
	wio := &testEnv.WebhookInstallOptions
	managerUser, err := testEnv.ControlPlane.AddUser(envtest.User{Name: serviceAccount("keysmith-manager")}, adminCfg)
	Expect(err).NotTo(HaveOccurred())
	runManager(ctx, managerUser.Config(), controllers.CacheOptions(),
		webhook.NewServer(webhook.Options{Host: wio.LocalServingHost, Port: wio.LocalServingPort, CertDir: wio.LocalServingCertDir}),
		func(mgr ctrl.Manager) {
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
			Expect((&kswebhook.APICredentialValidator{Reader: mgr.GetClient(), Client: mgr.GetClient()}).SetupWithManager(mgr)).To(Succeed())
			Expect((&kswebhook.APIDefinitionValidator{Reader: mgr.GetClient()}).SetupWithManager(mgr)).To(Succeed())
		})

	By("running the token server as its own service account")
	tsUser, err := testEnv.ControlPlane.AddUser(envtest.User{Name: serviceAccount("keysmith-token-server")}, adminCfg)
	Expect(err).NotTo(HaveOccurred())
	var tokenServer *tokenserver.Server
	runManager(ctx, tsUser.Config(), tokenserver.CacheOptions(nil, systemNamespace, signingSecret, false), nil, func(mgr ctrl.Manager) {
		tokenServer, err = tokenserver.Setup(ctx, mgr, tokenserver.Options{Issuer: tokenServerURL, Log: logf.Log.WithName("token-server")}, time.Second)
		Expect(err).NotTo(HaveOccurred())
	})
	hs := tokenserver.NewHTTPServer("", tokenServer.Handler())
	go func() { _ = hs.Serve(ln) }()
	DeferCleanup(hs.Close)
	tlsServer := httptest.NewTLSServer(tokenServer.Handler())
	DeferCleanup(tlsServer.Close)
	tlsTokenServerURL = tlsServer.URL
	tokenServerCA = filepath.Join(GinkgoT().TempDir(), "token-server-ca.crt")
	Expect(os.WriteFile(tokenServerCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsServer.Certificate().Raw}), 0o600)).To(Succeed())

	By("running kube-controller-manager's garbage collector, which deletes a deleted credential's Secret")
	startGarbageCollector()

	By("writing the admin's and the editor's kubeconfig files")
	dir := GinkgoT().TempDir()
	home = filepath.Join(dir, "home")
	Expect(os.Mkdir(home, 0o700)).To(Succeed())
	adminKubeconfig = writeKubeconfig(dir, envtest.User{Name: "platform-admin", Groups: []string{"system:masters"}})
	setUpEditor(ctx)
	editorKubeconfig = writeKubeconfig(dir, envtest.User{Name: editorUser})
	setUpCompliance(ctx)
	complianceKubeconfig = writeKubeconfig(dir, envtest.User{Name: complianceUser})
	u, err := testEnv.ControlPlane.AddUser(envtest.User{Name: editorUser}, adminCfg)
	Expect(err).NotTo(HaveOccurred())
	editorClient, err = client.New(u.Config(), client.Options{Scheme: testenv.Scheme()})
	Expect(err).NotTo(HaveOccurred())

	By("waiting for the webhook server, the token server and the build")
	addr := net.JoinHostPort(wio.LocalServingHost, fmt.Sprint(wio.LocalServingPort))
	Eventually(func() error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a readiness probe
		if err != nil {
			return err
		}
		return conn.Close()
	}).WithTimeout(30 * time.Second).Should(Succeed())
	Eventually(func() int {
		resp, err := http.Get(tokenServerURL + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}).WithTimeout(30 * time.Second).Should(Equal(http.StatusOK))
	Eventually(built).WithTimeout(5 * time.Minute).Should(Receive(Succeed()))
})

// runManager starts a manager until the suite ends; a nil webhook server serves no webhooks.
func runManager(ctx context.Context, cfg *rest.Config, cacheOpts cache.Options, hooks webhook.Server, setup func(ctrl.Manager)) {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cacheOpts,
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
		WebhookServer:          hooks,
	})
	Expect(err).NotTo(HaveOccurred())
	setup(mgr)
	stop := testenv.Start(ctx, mgr)
	DeferCleanup(func() { Expect(stop()).To(Succeed()) })
}

// startGarbageCollector runs kube-controller-manager with only the garbage collector until
// the suite ends, as make dev does: envtest has none, and `delete` must take the Secret
// with the credential through its owner reference, as a cluster does.
func startGarbageCollector() {
	u, err := testEnv.ControlPlane.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	kubeconfig, err := u.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	dir := GinkgoT().TempDir()
	kubeconfigPath := filepath.Join(dir, "kubeconfig")
	Expect(os.WriteFile(kubeconfigPath, kubeconfig, 0o600)).To(Succeed())
	logFile, err := os.Create(filepath.Join(dir, "kube-controller-manager.log"))
	Expect(err).NotTo(HaveOccurred())
	binary := filepath.Join(testEnv.BinaryAssetsDirectory, "kube-controller-manager")
	Expect(binary).To(BeAnExistingFile(), "hack/setup-envtest.sh builds it")
	cmd := exec.Command(binary, "--kubeconfig="+kubeconfigPath, "--controllers=garbagecollector",
		"--secure-port=0", "--leader-elect=false", "--use-service-account-credentials=false")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Expect(cmd.Start()).To(Succeed())
	DeferCleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = logFile.Close()
	})
}

// setUpEditor creates the editor's namespace and binds them there as the built-in edit
// role would once kube-controller-manager aggregated keysmith into it: credentials managed,
// Secrets and events read, no grant.
func setUpEditor(ctx context.Context) {
	subjects := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: editorUser}}
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: editorNamespace, Labels: map[string]string{"iam.keysmith.dev/account": account}}},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: editorNamespace, Name: "edit-keysmith"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "keysmith-aggregate-to-edit"},
			Subjects:   subjects,
		},
		&rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: editorNamespace, Name: "edit-core"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
				{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"get", "list", "watch"}},
			},
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: editorNamespace, Name: "edit-core"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "edit-core"},
			Subjects:   subjects,
		},
	} {
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	}
}

// setUpCompliance binds complianceUser to keysmith-compliance-admin in complianceNamespace:
// credentials managed and every permission granted, but no Secret read.
func setUpCompliance(ctx context.Context) {
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: complianceNamespace, Labels: map[string]string{"iam.keysmith.dev/account": account}}},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: complianceNamespace, Name: "compliance"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "keysmith-compliance-admin"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: complianceUser}},
		},
	} {
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	}
}

// writeKubeconfig writes a kubeconfig file for a client-certificate user of envtest.
func writeKubeconfig(dir string, user envtest.User) string {
	u, err := testEnv.ControlPlane.AddUser(user, nil)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	data, err := u.KubeConfig()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	path := filepath.Join(dir, strings.NewReplacer("@", "-", ".", "-").Replace(user.Name)+".kubeconfig")
	ExpectWithOffset(1, os.WriteFile(path, data, 0o600)).To(Succeed())
	return path
}

// serviceAccount is the user name of a service account of the operator's namespace.
func serviceAccount(name string) string {
	return "system:serviceaccount:" + systemNamespace + ":" + name
}

// result is what a run of the plugin printed and how it exited.
type result struct {
	stdout, stderr string
	code           int
}

// String shows a run in a failure message.
func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// pluginCommand returns the plugin's command line for the user of kubeconfig (see command).
func pluginCommand(ctx context.Context, kubeconfig string, args ...string) *exec.Cmd {
	return command(ctx, plugin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
}

// command returns a command line of one of the built binaries with an empty HOME and no
// KUBECONFIG from the environment; stdin is /dev/null, which is no terminal.
func command(ctx context.Context, binary string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8"}
	return cmd
}

// run runs the plugin as the user of kubeconfig and returns what it printed.
func run(ctx context.Context, kubeconfig string, args ...string) result {
	return runBinary(ctx, plugin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
}

// runBinary runs one of the built binaries with args as they are.
func runBinary(ctx context.Context, binary string, args ...string) result {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := command(ctx, binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
		code = exit.ExitCode()
	} else {
		ExpectWithOffset(1, err).NotTo(HaveOccurred(), "running %s %v", binary, args)
	}
	r := result{stdout: stdout.String(), stderr: stderr.String(), code: code}
	// Shown with a failed spec: the transcript of the runs that led to it.
	GinkgoWriter.Printf("$ %s %s\n%s%s[exit %d]\n", filepath.Base(binary), strings.Join(args, " "), r.stdout, r.stderr, r.code)
	expectNoSecretPrinted(args, r)
	return r
}

// expectNoSecretPrinted holds every run to DESIGN §6: a client secret is printed only by
// create's one-time display and rotate --show-secret, on stdout, and never in an error.
func expectNoSecretPrinted(args []string, r result) {
	ExpectWithOffset(2, r.stderr).NotTo(ContainSubstring(kscredential.SecretPrefix), "no secret on stderr: %s", r)
	switch sub := subcommand(args); {
	case sub == "create" && r.code == 0:
	case sub == "rotate" && slices.Contains(args, "--show-secret") && r.code == 0:
	default:
		ExpectWithOffset(2, r.stdout).NotTo(ContainSubstring(kscredential.SecretPrefix), "%v prints no secret: %s", args, r)
	}
}

// subcommand returns the first word of args that is neither a flag nor the value of
// --kubeconfig or -n.
func subcommand(args []string) string {
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--kubeconfig" || a == "-n" || a == "--namespace":
			i++
		case !strings.HasPrefix(a, "-"):
			return a
		}
	}
	return ""
}

// admin runs the plugin as the admin.
func admin(ctx context.Context, args ...string) result { return run(ctx, adminKubeconfig, args...) }

// expectOK asserts that a run succeeded.
func expectOK(r result) {
	ExpectWithOffset(1, r.code).To(Equal(0), "%s", r)
}

// expectOneLineError asserts that a run failed as the CLI's errors must: exit code 1 and
// one line on stderr, "error: …", with no Go stack and no raw JSON.
func expectOneLineError(r result) string {
	ExpectWithOffset(1, r.code).To(Equal(1), "%s", r)
	msg := strings.TrimRight(r.stderr, "\n")
	ExpectWithOffset(1, msg).NotTo(ContainSubstring("\n"), "one line: %s", r)
	ExpectWithOffset(1, msg).To(HavePrefix("error: "), "%s", r)
	ExpectWithOffset(1, msg).NotTo(ContainSubstring("goroutine"), "%s", r)
	ExpectWithOffset(1, msg).NotTo(ContainSubstring("{"), "no raw JSON: %s", r)
	return msg
}

// newNamespace creates a namespace of the test account for one spec.
func newNamespace(ctx context.Context) string {
	n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "team-", Labels: map[string]string{"iam.keysmith.dev/account": account}}}
	ExpectWithOffset(1, k8sClient.Create(ctx, n)).To(Succeed())
	return n.Name
}
