// Command dev runs keysmith's local development environment (`make dev`): a control plane
// built from the Go module proxy (etcd, kube-apiserver, and kube-controller-manager for
// garbage collection), keysmith's CRDs, the manager, and config/samples. It prints a
// walk-through and one ready line, then stays up until interrupted and cleans up after itself.
//
// One environment per dev directory: a second one is refused at once, naming the pid of
// the first (or what holds the token server's port). Any component that exits on its own
// ends make dev with a non-zero exit naming it and its log; every process is stopped on
// the way out, and a make dev killed with SIGKILL has its leftovers stopped by the next.
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
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

var (
	// tokenServerAddr is where the token server listens (--token-server-addr, or
	// KEYSMITH_DEV_TOKEN_SERVER_ADDR), so that tests can run beside a developer's make dev.
	tokenServerAddr string
	tokenServerURL  string
	// devDir holds the environment's state, logs, pid files, lock and kubeconfig (--dir,
	// or KEYSMITH_DEV_DIR, relative to the repository root).
	devDir         string
	kubeconfigPath string
	// tokenKubeconfigPath names the cluster but no user: kubectl --token uses it to
	// authenticate with an access token alone.
	tokenKubeconfigPath string
)

func main() {
	flag.StringVar(&devDir, "dir", cmp.Or(os.Getenv("KEYSMITH_DEV_DIR"), "bin/dev"),
		"the environment's directory, relative to the repository root (env KEYSMITH_DEV_DIR); one environment per directory")
	flag.StringVar(&tokenServerAddr, "token-server-addr", cmp.Or(os.Getenv("KEYSMITH_DEV_TOKEN_SERVER_ADDR"), "127.0.0.1:18080"),
		"where the token server listens (env KEYSMITH_DEV_TOKEN_SERVER_ADDR)")
	flag.Parse()
	devDir = filepath.Clean(devDir)
	tokenServerURL = "http://" + tokenServerAddr
	kubeconfigPath = devDir + "/kubeconfig"
	tokenKubeconfigPath = devDir + "/token.kubeconfig"
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "keysmith dev:", err)
		os.Exit(1)
	}
}

// run takes the dev directory, stops what an earlier make dev killed with SIGKILL left
// there, checks the token server's port, brings the environment up and keeps it until a
// signal or a component's exit, then stops everything. A signal ends it with nil, a
// component's exit with a diedError.
func run() (retErr error) {
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stopSignals()
	if err := os.Chdir(testenv.RepoRoot()); err != nil {
		return err
	}
	if err := os.MkdirAll(devDir, 0o755); err != nil {
		return err
	}
	// Nothing in the directory is touched before its lock is held: it may be another
	// make dev's.
	lock, err := lockDir(devDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	// A component's exit ends ctx, with a diedError as its cause.
	ctx, end := context.WithCancelCause(sigCtx)
	defer end(nil)
	sup := &supervisor{dir: devDir, died: end}
	var env *envtest.Environment
	defer func() {
		var stopControlPlane func() error
		if env != nil {
			stopControlPlane = env.Stop
		}
		retErr = errors.Join(retErr, sup.stopAll(stopControlPlane))
		// After a failure the logs stay, for the error names one of them.
		failed := retErr != nil
		retErr = errors.Join(retErr, cleanDir(devDir, func(name string) bool { return failed && strings.HasSuffix(name, ".log") }))
		if err := os.Remove(devDir); err != nil && !failed {
			retErr = errors.Join(retErr, err)
		}
	}()

	stopped, err := stopLeftovers(devDir)
	if len(stopped) > 0 {
		step("stopped what an earlier make dev left running: " + strings.Join(stopped, ", "))
	}
	if err != nil {
		return err
	}
	// Bound now and held until the token server starts, so that nothing else can take it
	// meanwhile; readiness is then proved on the token server's own listener.
	tsListener, err := listen(tokenServerAddr, "the token server's address")
	if err != nil {
		return err
	}
	defer tsListener.Close()
	if err := cleanDir(devDir, func(name string) bool { return name == "lock" }); err != nil {
		return err
	}

	err = up(ctx, sup, &env, tsListener)
	if err == nil {
		<-ctx.Done()
	}
	if died := (*diedError)(nil); errors.As(context.Cause(ctx), &died) {
		return died
	}
	if sigCtx.Err() != nil {
		step("shutting down")
		return nil
	}
	return err
}

// up brings the environment up, prints the walk-through and the ready line. *env is set
// as soon as the control plane starts, so that the caller stops what did start.
func up(ctx context.Context, sup *supervisor, envp **envtest.Environment, tsListener net.Listener) error {
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
	env.ControlPlaneStopTimeout = stopGrace
	// The admission webhooks of config/webhook, pointed at the manager on loopback with a
	// serving certificate envtest provisions.
	env.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{"config/webhook/manifests.yaml"}}
	webhookConfig := abs(devDir + "/token-webhook.kubeconfig")
	if err := os.WriteFile(webhookConfig, []byte(tokenserver.WebhookKubeconfig(tokenServerURL)), 0o600); err != nil {
		return err
	}
	// etcd's data and the API server's certificates in the dev directory, so that both
	// name it on their command lines as the other components do, and their output in
	// logs of their own.
	etcdLog, err := os.Create(devDir + "/etcd.log")
	if err != nil {
		return err
	}
	defer etcdLog.Close()
	apiLog, err := os.Create(devDir + "/kube-apiserver.log")
	if err != nil {
		return err
	}
	defer apiLog.Close()
	if err := os.MkdirAll(devDir+"/kube-apiserver", 0o700); err != nil {
		return err
	}
	env.ControlPlane.Etcd = &envtest.Etcd{
		Path: filepath.Join(env.BinaryAssetsDirectory, "etcd"), DataDir: abs(devDir + "/etcd"), Out: etcdLog, Err: etcdLog,
	}
	api := env.ControlPlane.GetAPIServer()
	api.Path = filepath.Join(env.BinaryAssetsDirectory, "kube-apiserver")
	api.CertDir = abs(devDir + "/kube-apiserver")
	api.Out, api.Err = apiLog, apiLog
	args := api.Configure()
	args.Set("authentication-token-webhook-config-file", webhookConfig)
	args.Set("authentication-token-webhook-version", "v1")
	args.Set("authentication-token-webhook-cache-ttl", "5s")
	*envp = env
	if err := startControlPlane(ctx, sup, env); err != nil {
		return err
	}
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
	if _, err := sup.start("kube-controller-manager", "kube-controller-manager", filepath.Join(env.BinaryAssetsDirectory, "kube-controller-manager"),
		"--kubeconfig="+abs(kubeconfigPath), "--controllers=garbagecollector,namespace",
		"--secure-port=0", "--leader-elect=false", "--use-service-account-credentials=false"); err != nil {
		return err
	}

	step("starting the keysmith manager")
	webhookPort := env.WebhookInstallOptions.LocalServingPort
	mgr, err := sup.start("manager", "the manager", abs(devDir+"/manager"),
		"--kubeconfig="+abs(devDir+"/keysmith-manager.kubeconfig"), "--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--token-url="+tokenServerURL+"/oauth2/token", "--signing-key-namespace="+systemNamespace,
		"--webhook-host="+env.WebhookInstallOptions.LocalServingHost,
		fmt.Sprintf("--webhook-port=%d", webhookPort),
		"--webhook-cert-dir="+env.WebhookInstallOptions.LocalServingCertDir)
	if err != nil {
		return err
	}
	webhookAddr := net.JoinHostPort(env.WebhookInstallOptions.LocalServingHost, strconv.Itoa(webhookPort))
	if err := waitTLS(ctx, webhookAddr, mgr); err != nil {
		return err
	}
	if err := ownListener(mgr, webhookAddr); err != nil {
		return err
	}

	step("starting the token server at " + tokenServerURL + ", as its own service account")
	// The port is handed over: released here, bound by the token server at once, and
	// proved to be the token server's own once it answers.
	_ = tsListener.Close()
	ts, err := sup.start("token-server", "the token server", abs(devDir+"/token-server"),
		"--kubeconfig="+abs(devDir+"/keysmith-token-server.kubeconfig"), "--listen="+tokenServerAddr, "--issuer="+tokenServerURL,
		"--signing-key-namespace="+systemNamespace, "--usage-interval=5s")
	if err != nil {
		return err
	}
	if err := waitReady(ctx, tokenServerURL+"/readyz", ts); err != nil {
		return err
	}
	if err := ownListener(ts, tokenServerAddr); err != nil {
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
	// Once more, now that everything is up: a component that exited during the last
	// steps ends make dev here instead of after a ready line.
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	printWalkthrough(audience)
	fmt.Printf("keysmith dev environment ready: kubeconfig=%s token-server=%s\n", kubeconfigPath, tokenServerURL)
	return nil
}

// startControlPlane starts envtest's etcd and kube-apiserver and, while they start, finds
// them among this program's children, so that they are watched and recorded in pid files
// from their first moments. Should ctx end meanwhile (a signal, a component's exit),
// what has started is stopped so that envtest gives up at once.
func startControlPlane(ctx context.Context, sup *supervisor, env *envtest.Environment) error {
	etcd, api := env.ControlPlane.Etcd, env.ControlPlane.GetAPIServer()
	// envtest also runs each binary with --help to learn its flags: the servers are
	// the children given the dev directory's etcd data and certificates.
	wanted := map[string]child{
		"etcd":           {exe: realPath(etcd.Path), arg: "--data-dir=" + etcd.DataDir},
		"kube-apiserver": {exe: realPath(api.Path), arg: "--cert-dir=" + api.CertDir},
	}
	logs := map[string]string{"etcd": devDir + "/etcd.log", "kube-apiserver": devDir + "/kube-apiserver.log"}
	var adoptErr error
	adopt := func() {
		found := children(wanted["etcd"], wanted["kube-apiserver"])
		for _, name := range []string{"etcd", "kube-apiserver"} {
			for _, pid := range found[wanted[name]] {
				adoptErr = cmp.Or(adoptErr, sup.adopt(name, name, pid, logs[name]))
			}
		}
	}
	started := make(chan error, 1)
	go func() {
		_, err := env.Start()
		started <- err
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-started:
			adopt()
			switch {
			case ctx.Err() != nil:
				return context.Cause(ctx)
			case err != nil:
				return fmt.Errorf("starting the control plane: %w (see %s and %s)", err, logs["etcd"], logs["kube-apiserver"])
			case adoptErr != nil:
				return adoptErr
			case sup.get("etcd") == nil || sup.get("kube-apiserver") == nil:
				return errors.New("etcd and kube-apiserver started, but not as children of make dev: cannot supervise them")
			}
			u, err := url.Parse(env.Config.Host)
			if err != nil {
				return err
			}
			return ownListener(sup.get("kube-apiserver"), u.Host)
		case <-tick.C:
			adopt()
			if ctx.Err() != nil {
				sup.signalAdopted(syscall.SIGTERM)
			}
		}
	}
}

// listen binds addr, or says what holds it.
func listen(addr, what string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	holder := ""
	if _, p, splitErr := net.SplitHostPort(addr); splitErr == nil {
		if port, convErr := strconv.Atoi(p); convErr == nil {
			holder = portHolder(port)
		}
	}
	if holder != "" {
		return nil, fmt.Errorf("%s %s is in use by %s: stop it, or give this environment another port (KEYSMITH_DEV_TOKEN_SERVER_ADDR)", what, addr, holder)
	}
	return nil, fmt.Errorf("%s %s: %w: give this environment another port (KEYSMITH_DEV_TOKEN_SERVER_ADDR)", what, addr, err)
}

// ownListener makes sure that what listens on addr is the component: an answer on a port
// it does not hold is another program's, and no sign that the component is ready.
func ownListener(c *component, addr string) error {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return err
	}
	if !listensOn(c.pid, port) {
		holder := cmp.Or(portHolder(port), "another process")
		return fmt.Errorf("%s answers, but from %s, not from %s (pid %d) this make dev started; its log: %s", addr, holder, c.what, c.pid, c.logPath)
	}
	return nil
}

// cleanDir removes the entries of dir that keep does not keep.
func cleanDir(dir string, keep func(name string) bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !keep(e.Name()) {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
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

// waitTLS waits until the manager's webhook server accepts TLS connections, for up to a
// minute or until ctx ends.
func waitTLS(ctx context.Context, addr string, p *component) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // a readiness probe on loopback
		if conn, err := d.DialContext(ctx, "tcp", addr); err == nil {
			return conn.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the webhook server at %s did not come up (see %s)", addr, p.logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitReady polls a readiness URL until it answers 200, for up to a minute or until ctx
// ends.
func waitReady(ctx context.Context, url string, p *component) error {
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
	issuer, err := testenv.APIServerIssuer(ctx, cfg)
	if err != nil {
		return "", err
	}
	def := &iamv1alpha1.APIDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: kubernetesAPI},
		Spec: iamv1alpha1.APIDefinitionSpec{
			DisplayName: "Kubernetes API (make dev)", ScopeLevel: iamv1alpha1.ScopeLevelAccount,
			Audience: issuer,
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
	// The admission webhook checks grants against the catalog in the manager's cache,
	// which learns of the APIDefinition just created a moment later: until then it
	// refuses the grant as naming no API.
	retryCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		err := c.Create(retryCtx, login.DeepCopy())
		if err == nil || apierrors.IsAlreadyExists(err) {
			return issuer, nil
		}
		if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
			return "", fmt.Errorf("creating APICredential %s: %w", devLogin, err)
		}
		select {
		case <-retryCtx.Done():
			return "", fmt.Errorf("creating APICredential %s: %w", devLogin, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
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
