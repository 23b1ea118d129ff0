// Command dev runs keysmith's local development environment (`make dev`): a control plane
// built from the Go module proxy (etcd, kube-apiserver, and kube-controller-manager for
// garbage collection), keysmith's CRDs, the manager, and config/samples. It prints a
// walk-through and one ready line, then stays up until interrupted and cleans up after itself.
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// systemNamespace is the operator's namespace: the signing keys and the token server's
// service account live there.
const systemNamespace = "keysmith-system"

// tokenServerAddr is where the token server listens; KEYSMITH_DEV_TOKEN_SERVER_ADDR
// overrides it so that tests can run beside a developer's `make dev`.
var tokenServerAddr = cmp.Or(os.Getenv("KEYSMITH_DEV_TOKEN_SERVER_ADDR"), "127.0.0.1:18080")

var tokenServerURL = "http://" + tokenServerAddr

// devDir holds the environment's state, logs and kubeconfig; KEYSMITH_DEV_DIR overrides it
// (relative to the repository root) so that tests can run beside a developer's `make dev`.
var devDir = cmp.Or(os.Getenv("KEYSMITH_DEV_DIR"), "bin/dev")

var (
	kubeconfigPath = devDir + "/kubeconfig"
	// tokenKubeconfigPath names the cluster but no user: kubectl --token uses it to
	// authenticate with an access token alone.
	tokenKubeconfigPath = devDir + "/token.kubeconfig"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "keysmith dev:", err)
		os.Exit(1)
	}
}

func run() (retErr error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.Chdir(testenv.RepoRoot()); err != nil {
		return err
	}
	if err := os.RemoveAll(devDir); err != nil {
		return err
	}
	if err := os.MkdirAll(devDir, 0o755); err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, os.RemoveAll(devDir)) }()

	step("building the manager and the token server")
	if err := goBuild(ctx, devDir+"/manager", "./cmd/manager"); err != nil {
		return err
	}
	if err := goBuild(ctx, devDir+"/token-server", "./cmd/token-server"); err != nil {
		return err
	}

	step("starting etcd and kube-apiserver (token server as webhook token authenticator)")
	env, err := testenv.New()
	if err != nil {
		return err
	}
	env.ControlPlaneStartTimeout = 2 * time.Minute
	// The admission webhooks of config/webhook, pointed at the manager on loopback with a
	// serving certificate envtest provisions.
	env.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{"config/webhook/manifests.yaml"}}
	webhookConfig, err := filepath.Abs(devDir + "/token-webhook.kubeconfig")
	if err != nil {
		return err
	}
	if err := os.WriteFile(webhookConfig, []byte(tokenserver.WebhookKubeconfig(tokenServerURL)), 0o600); err != nil {
		return err
	}
	api := env.ControlPlane.GetAPIServer().Configure()
	api.Set("authentication-token-webhook-config-file", webhookConfig)
	api.Set("authentication-token-webhook-version", "v1")
	api.Set("authentication-token-webhook-cache-ttl", "5s")
	if _, err := env.Start(); err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	defer func() { retErr = errors.Join(retErr, env.Stop()) }()
	admin, err := env.ControlPlane.AddUser(envtest.User{Name: "keysmith-dev-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return err
	}
	if err := writeTokenKubeconfig(kubeconfig); err != nil {
		return err
	}
	c, err := client.New(admin.Config(), client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return err
	}
	step("creating namespace " + systemNamespace + ", the shipped RBAC and the status policy")
	for _, f := range []string{
		"config/rbac/service_account.yaml", "config/rbac/role.yaml", "config/rbac/role_binding.yaml",
		"config/token-server/rbac.yaml", "config/policy/apicredential-status.yaml",
	} {
		if _, err := applyFile(ctx, c, f, systemNamespace); err != nil {
			return err
		}
	}
	// The manager and the token server run as the service accounts of config/, so that
	// their RBAC and the status policy hold here as they do in a cluster.
	for _, sa := range []string{"keysmith-manager", "keysmith-token-server"} {
		u, err := env.ControlPlane.AddUser(envtest.User{Name: "system:serviceaccount:" + systemNamespace + ":" + sa}, nil)
		if err != nil {
			return err
		}
		kc, err := u.KubeConfig()
		if err != nil {
			return err
		}
		if err := os.WriteFile(devDir+"/"+sa+".kubeconfig", kc, 0o600); err != nil {
			return err
		}
	}

	step("starting kube-controller-manager (garbage collection)")
	kcm, err := startProcess(ctx, "kube-controller-manager", filepath.Join(env.BinaryAssetsDirectory, "kube-controller-manager"),
		"--kubeconfig="+abs(kubeconfigPath), "--controllers=garbagecollector,namespace",
		"--secure-port=0", "--leader-elect=false", "--use-service-account-credentials=false")
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, kcm.stop()) }()

	step("starting the keysmith manager")
	mgr, err := startProcess(ctx, "manager", abs(devDir+"/manager"),
		"--kubeconfig="+abs(devDir+"/keysmith-manager.kubeconfig"), "--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--token-url="+tokenServerURL+"/oauth2/token", "--signing-key-namespace="+systemNamespace,
		"--webhook-host="+env.WebhookInstallOptions.LocalServingHost,
		fmt.Sprintf("--webhook-port=%d", env.WebhookInstallOptions.LocalServingPort),
		"--webhook-cert-dir="+env.WebhookInstallOptions.LocalServingCertDir)
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, mgr.stop()) }()
	if err := waitTLS(ctx, net.JoinHostPort(env.WebhookInstallOptions.LocalServingHost, strconv.Itoa(env.WebhookInstallOptions.LocalServingPort)), mgr); err != nil {
		return err
	}

	step("starting the token server at " + tokenServerURL + ", as its own service account")
	ts, err := startProcess(ctx, "token-server", abs(devDir+"/token-server"),
		"--kubeconfig="+abs(devDir+"/keysmith-token-server.kubeconfig"), "--listen="+tokenServerAddr, "--issuer="+tokenServerURL,
		"--signing-key-namespace="+systemNamespace, "--usage-interval=5s")
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, ts.stop()) }()
	if err := waitReady(ctx, tokenServerURL+"/readyz", ts); err != nil {
		return err
	}

	step("applying config/samples")
	creds, err := applySamples(ctx, c, "config/samples")
	if err != nil {
		return err
	}
	step("cataloguing this API server as the APIDefinition " + kubernetesAPI + " and issuing " + devLogin.String() + ", which grants it")
	audience, err := catalogueAPIServer(ctx, c, admin.Config())
	if err != nil {
		return err
	}
	if err := waitSettled(ctx, c, append(creds, devLogin)); err != nil {
		return err
	}

	printWalkthrough(audience)
	fmt.Printf("keysmith dev environment ready: kubeconfig=%s token-server=%s\n", kubeconfigPath, tokenServerURL)
	select {
	case <-ctx.Done():
	case err := <-kcm.exited:
		return fmt.Errorf("kube-controller-manager exited: %w (see %s)", err, kcm.logPath)
	case err := <-mgr.exited:
		return fmt.Errorf("the manager exited: %w (see %s)", err, mgr.logPath)
	case err := <-ts.exited:
		return fmt.Errorf("the token server exited: %w (see %s)", err, ts.logPath)
	}
	step("shutting down")
	return nil
}

func step(msg string) { fmt.Fprintf(os.Stderr, "==> %s\n", msg) }

func goBuild(ctx context.Context, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

// process is a child process whose output goes to bin/dev/<name>.log.
type process struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan error
}

// startProcess starts a child in its own process group, so that Ctrl-C reaches this
// program first and the children are stopped in order; Pdeathsig kills them should this
// program die without cleaning up.
func startProcess(ctx context.Context, name, path string, args ...string) (*process, error) {
	logPath := filepath.Join(devDir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{cmd: cmd, logPath: logPath, exited: make(chan error, 1)}
	go func() {
		err := cmd.Wait()
		logFile.Close()
		p.exited <- err
	}()
	_ = ctx
	return p, nil
}

// stop sends SIGTERM and waits up to 15 s before killing the process.
func (p *process) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return nil
	}
}

// applySamples creates every object of the YAML files in dir (kustomization.yaml aside),
// namespaces and the catalog first, as a GitOps tool orders them, and returns the keys of
// the APICredentials among them.
func applySamples(ctx context.Context, c client.Client, dir string) ([]client.ObjectKey, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		fileObjs, err := testenv.ReadObjects(f, "")
		if err != nil {
			return nil, err
		}
		objs = append(objs, fileObjs...)
	}
	rank := func(o *unstructured.Unstructured) int {
		switch o.GetKind() {
		case "Namespace":
			return 0
		case "APIDefinition":
			return 1
		}
		return 2
	}
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int { return cmp.Compare(rank(a), rank(b)) })
	var creds []client.ObjectKey
	for _, obj := range objs {
		if err := create(ctx, c, obj); err != nil {
			return nil, err
		}
		if obj.GetKind() == "APICredential" {
			creds = append(creds, client.ObjectKeyFromObject(obj))
		}
	}
	return creds, nil
}

// applyFile creates the namespace, when given, and every object of a YAML file, with
// "namespace: system" (kustomize's placeholder) replaced by it.
func applyFile(ctx context.Context, c client.Client, path, namespace string) ([]*unstructured.Unstructured, error) {
	if namespace != "" {
		ns := &unstructured.Unstructured{}
		ns.SetAPIVersion("v1")
		ns.SetKind("Namespace")
		ns.SetName(namespace)
		if err := create(ctx, c, ns); err != nil {
			return nil, err
		}
	}
	objs, err := testenv.ReadObjects(path, namespace)
	if err != nil {
		return nil, err
	}
	for _, obj := range objs {
		if err := create(ctx, c, obj); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return objs, nil
}

func create(ctx context.Context, c client.Client, obj *unstructured.Unstructured) error {
	if err := c.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating %s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	return nil
}

// writeTokenKubeconfig writes a kubeconfig with the admin kubeconfig's cluster and no
// user, so that `kubectl --token` authenticates with the access token alone (a client
// certificate would otherwise win).
func writeTokenKubeconfig(admin []byte) error {
	cfg, err := clientcmd.Load(admin)
	if err != nil {
		return err
	}
	out := clientcmdapi.NewConfig()
	for name, cluster := range cfg.Clusters {
		out.Clusters[name] = cluster
		out.Contexts["keysmith-dev"] = &clientcmdapi.Context{Cluster: name, AuthInfo: "token"}
	}
	out.AuthInfos["token"] = clientcmdapi.NewAuthInfo()
	out.CurrentContext = "keysmith-dev"
	return clientcmd.WriteToFile(*out, tokenKubeconfigPath)
}

// waitTLS waits until the manager's webhook server accepts TLS connections.
func waitTLS(ctx context.Context, addr string, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // a readiness probe on loopback
		if conn, err := d.DialContext(ctx, "tcp", addr); err == nil {
			return conn.Close()
		}
		select {
		case err := <-p.exited:
			return fmt.Errorf("the manager exited: %w (see %s)", err, p.logPath)
		case <-ctx.Done():
			return fmt.Errorf("the webhook server at %s did not come up (see %s)", addr, p.logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitReady polls a readiness URL until it answers 200, the process exits or a minute passes.
func waitReady(ctx context.Context, url string, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-p.exited:
			return fmt.Errorf("the token server exited: %w (see %s)", err, p.logPath)
		case <-ctx.Done():
			return fmt.Errorf("%s did not become ready (see %s)", url, p.logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitSettled waits until the manager has reconciled every sample credential.
func waitSettled(ctx context.Context, c client.Client, creds []client.ObjectKey) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, key := range creds {
		for {
			cred := &iamv1alpha1.APICredential{}
			if err := c.Get(ctx, key, cred); err == nil && cred.Status.SecretHash != "" && cred.Status.ObservedGeneration == cred.Generation {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("sample credential %s was not issued in time (see %s/manager.log)", key, devDir)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// kubernetesAPI is the APIDefinition that catalogues this environment's API server.
const kubernetesAPI = "kubernetes"

// devLogin is the dev-only credential that grants the catalogued API server, so that the
// walk-through's `kubectl --token … auth whoami` logs in: tokens are audience-bound, and
// a token for the Platform API is no login to the cluster.
var devLogin = client.ObjectKey{Namespace: "team-checkout", Name: "kubectl-login"}

// catalogueAPIServer catalogues this environment's API server as the APIDefinition
// kubernetesAPI, whose audience is the API server's own: its service-account issuer,
// which --api-audiences defaults to, read from its discovery document (it names the
// random port envtest chose, so it cannot be a static sample). It then creates devLogin,
// which grants it, and returns the audience.
func catalogueAPIServer(ctx context.Context, c client.Client, cfg *rest.Config) (string, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	raw, err := cs.RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("reading the API server's issuer: %w", err)
	}
	var discovery struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(raw, &discovery); err != nil || discovery.Issuer == "" {
		return "", fmt.Errorf("the API server's /.well-known/openid-configuration names no issuer (%v)", err)
	}
	def := &iamv1alpha1.APIDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: kubernetesAPI},
		Spec: iamv1alpha1.APIDefinitionSpec{
			DisplayName: "Kubernetes API (make dev)", ScopeLevel: iamv1alpha1.ScopeLevelAccount,
			Audience: discovery.Issuer,
			Permissions: []iamv1alpha1.Permission{{Name: "user", Methods: []string{iamv1alpha1.MethodAny},
				Description: "Log in to the API server; its RBAC decides what the credential may do."}},
		},
	}
	if err := c.Create(ctx, def); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating APIDefinition %s: %w", kubernetesAPI, err)
	}
	login := &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: devLogin.Namespace, Name: devLogin.Name},
		Spec: iamv1alpha1.APICredentialSpec{
			DisplayName: "kubectl login (make dev)",
			APIs:        []iamv1alpha1.APIGrant{{Name: kubernetesAPI, Permission: "user"}},
		},
	}
	if err := c.Create(ctx, login); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating APICredential %s: %w", devLogin, err)
	}
	return discovery.Issuer, nil
}

// printWalkthrough prints the walk-through; audience is the catalogued API server's.
func printWalkthrough(audience string) {
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprint(w, strings.TrimLeft(`
keysmith is running. In another terminal:

  export KUBECONFIG=$PWD/`+kubeconfigPath+`
  kubectl get apidefinitions
  kubectl get apicred -A -o wide

  # the Secret the workloads mount (the status holds only a hash)
  kubectl -n team-checkout get secret profile-reader -o jsonpath='{.data.CLIENT_ID}' | base64 -d; echo
  kubectl -n team-checkout get apicred profile-reader -o jsonpath='{.status}'; echo

  # rotate: new secret in the same Secret, the old one works for the grace period
  kubectl -n team-checkout patch apicred profile-reader --type=merge -p '{"spec":{"rotation":{"keyVersion":1}}}'
  # deactivate, and back
  kubectl -n team-checkout patch apicred profile-reader --type=merge -p '{"spec":{"active":false}}'
  kubectl -n team-checkout patch apicred profile-reader --type=merge -p '{"spec":{"active":true}}'
  # delete: the Secret goes with it (garbage collection)
  kubectl -n team-checkout delete apicred profile-reader

Admission (webhooks and the status policy run here as in a cluster):

  # a permission the API does not offer is refused at the door, naming what is allowed
  echo '{"apiVersion":"iam.keysmith.dev/v1alpha1","kind":"APICredential","metadata":{"name":"typo"},"spec":{"apis":[{"name":"profile-api","permission":"admin"}],"scope":{"workspaces":["eu-prod"]}}}' \
    | kubectl -n team-checkout create -f -
  # nobody grants more than they may: eve (config/samples/rbac_team_checkout.yaml) may
  # grant profile-api read-only, but not platform-api admin
  echo '{"apiVersion":"iam.keysmith.dev/v1alpha1","kind":"APICredential","metadata":{"name":"sneaky"},"spec":{"apis":[{"name":"platform-api","permission":"admin"}]}}' \
    | kubectl --as=eve -n team-checkout create -f -
  # deletion protection: two deliberate steps
  kubectl -n team-checkout patch apicred platform-automation --type=merge -p '{"spec":{"deletionProtection":true}}'
  kubectl -n team-checkout delete apicred platform-automation --dry-run=server

Trade client credentials for an access token (OAuth 2.0 client credentials):

  ID=$(kubectl -n team-checkout get secret platform-automation-credentials -o jsonpath='{.data.CLIENT_ID}' | base64 -d)
  SECRET=$(kubectl -n team-checkout get secret platform-automation-credentials -o jsonpath='{.data.CLIENT_SECRET}' | base64 -d)
  TOKEN=$(curl -s -u "$ID:$SECRET" -d grant_type=client_credentials `+tokenServerURL+`/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  curl -s `+tokenServerURL+`/.well-known/jwks.json; echo
  # forward auth, as nginx, Envoy or Traefik ask it
  curl -si -H "Authorization: Bearer $TOKEN" -H "X-Forwarded-Method: DELETE" `+tokenServerURL+`/authz/platform-api/v1/users/42

Log in to the Kubernetes API server (webhook token authentication). Tokens are bound to
the audiences of their APIs, so make dev catalogued this API server as the APIDefinition
`+kubernetesAPI+` (audience `+audience+`, its service-account issuer)
and issued `+devLogin.String()+`, which grants it:

  LOGIN_ID=$(kubectl -n `+devLogin.Namespace+` get secret `+devLogin.Name+` -o jsonpath='{.data.CLIENT_ID}' | base64 -d)
  LOGIN_SECRET=$(kubectl -n `+devLogin.Namespace+` get secret `+devLogin.Name+` -o jsonpath='{.data.CLIENT_SECRET}' | base64 -d)
  LOGIN_TOKEN=$(curl -s -u "$LOGIN_ID:$LOGIN_SECRET" -d grant_type=client_credentials `+tokenServerURL+`/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  kubectl --kubeconfig `+tokenKubeconfigPath+` --token "$LOGIN_TOKEN" auth whoami
  # the Platform API's token is no login to the cluster: Unauthorized
  kubectl --kubeconfig `+tokenKubeconfigPath+` --token "$TOKEN" auth whoami

Logs: `+devDir+`/manager.log, `+devDir+`/token-server.log, `+devDir+`/kube-controller-manager.log. Ctrl-C stops everything.

`, "\n"))
}

// abs returns the absolute form of a path relative to the repository root.
func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}
