// Package install proves keysmith's two ways of installing against a real kube-apiserver
// (envtest): the Helm chart charts/keysmith, rendered through the Helm SDK with its
// default values and with each values file of charts/keysmith/ci, and dist/install.yaml.
// Each is applied with server-side apply (every object must be accepted) and applied
// again (nothing may change). The default render and dist/install.yaml are then run: the
// manager and the token server, built from this repository, are started with exactly the
// args and env of their rendered Deployments and as their rendered ServiceAccounts, save
// for the few substitutions a cluster without pods forces (each logged), and must issue a
// credential whose token exchange succeeds over TLS at the TOKEN_URL they wrote.
//
// One API server serves every variant in turn: the chart's variants are installs of one
// release in one namespace (their cluster-scoped objects are the same objects), and
// dist/install.yaml is applied last, into its own namespace keysmith-system.
package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// variant is one installation the test applies.
type variant struct {
	name string
	// values is the chart's values file (relative to the chart), "" for the defaults;
	// manifest, when set, is a
	// file applied instead of a chart render.
	values, manifest string
	namespace        string
	// run starts the binaries of the render and issues a credential through them.
	run bool
}

var variants = []variant{
	{name: "chart-default", namespace: "keysmith", run: true},
	{name: "chart-certmanager", values: "ci/certmanager-values.yaml", namespace: "keysmith"},
	{name: "chart-all-on", values: "ci/all-on-values.yaml", namespace: "keysmith"},
	{name: "dist-install", manifest: "dist/install.yaml", namespace: "keysmith-system", run: true},
}

// Names of the contract (docs/install.md) that the run checks.
const (
	managerDeployment     = "keysmith-controller-manager"
	tokenServerDeployment = "keysmith-token-server"
	webhookCertSecret     = "keysmith-webhook-server-cert"
)

// phase logs how long a step took: defer phase(t, "step")().
func phase(t *testing.T, name string) func() {
	start := time.Now()
	return func() { t.Logf("phase %s: %s", name, time.Since(start).Round(time.Millisecond)) }
}

func TestInstall(t *testing.T) {
	defer phase(t, "TestInstall (total)")()
	ctx := t.Context()

	// The binaries build while the API server starts and the manifests are applied.
	binDir := t.TempDir()
	built := make(chan error, 1)
	go func() { built <- goBuild(ctx, binDir) }()
	var buildErr error
	buildDone := false
	binaries := func(t *testing.T) string {
		if !buildDone {
			done := phase(t, "wait for go build")
			buildErr, buildDone = <-built, true
			done()
		}
		if buildErr != nil {
			t.Fatal(buildErr)
		}
		return binDir
	}

	cfg, admin := startAPIServer(t)
	for _, v := range variants {
		if !t.Run(v.name, func(t *testing.T) { testVariant(t, ctx, v, cfg, admin, binaries) }) {
			t.Logf("%s failed; the variants after it still run on the same API server", v.name)
		}
	}
	if !buildDone {
		<-built // nothing ran the binaries; do not leave the build behind
	}
}

// startAPIServer starts etcd and kube-apiserver with the pinned cert-manager and
// Prometheus Operator CRDs installed (keysmith's own come from the manifests).
func startAPIServer(t *testing.T) (*rest.Config, client.Client) {
	defer phase(t, "start API server with the pinned CRDs")()
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	scheme := testenv.Scheme()
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join("testdata", "cert-manager"), filepath.Join("testdata", "prometheus-operator")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	admin, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, admin
}

// goBuild builds ./cmd/manager and ./cmd/token-server into dir, once for the package.
func goBuild(ctx context.Context, dir string) error {
	start := time.Now()
	if err := testenv.Build(ctx, dir, images["/manager"], images["/token-server"]); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "install test: go build of the manager and the token server took %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func testVariant(t *testing.T, ctx context.Context, v variant, cfg *rest.Config, admin client.Client, binaries func(*testing.T) string) {
	var objs []*unstructured.Unstructured
	var err error
	done := phase(t, "render "+v.name)
	if v.manifest != "" {
		objs, err = readManifest(v.manifest)
	} else {
		objs, err = renderChart(v.values, v.namespace)
		if err == nil {
			err = createNamespace(ctx, admin, v.namespace)
		}
	}
	done()
	if err != nil {
		t.Fatal(err)
	}
	crds, err := crdScopes(objs)
	if err != nil {
		t.Fatal(err)
	}
	if err := placeObjects(admin, objs, v.namespace, crds); err != nil {
		t.Fatal(err)
	}

	done = phase(t, fmt.Sprintf("server-side apply of %d objects", len(objs)))
	_, err = applyAll(ctx, admin, objs)
	done()
	if err != nil {
		t.Fatal(err)
	}

	done = phase(t, "apply again (must be a no-op)")
	changes, err := reapplyChanges(ctx, admin, objs)
	done()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range changes {
		t.Errorf("a second apply changed %s", c)
	}
	if len(changes) == 0 {
		t.Logf("a second apply of the %d objects changed none (every resourceVersion unchanged)", len(objs))
	}

	if v.run {
		runInstallation(t, ctx, objs, v.namespace, cfg, admin, binaries(t))
	}
}

// createNamespace creates the release namespace, as `helm install --create-namespace`
// would (the chart does not create it), if it does not exist.
func createNamespace(ctx context.Context, c client.Client, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// runInstallation runs the manager and the token server of the applied manifest objs and
// issues and exchanges a credential through them.
func runInstallation(t *testing.T, ctx context.Context, objs []*unstructured.Unstructured, namespace string, cfg *rest.Config, admin client.Client, binDir string) {
	dir := t.TempDir()
	mgr, err := newPod(objs, namespace, managerDeployment, "manager", cfg, admin, dir,
		// The manager's certificate must name the host the API server calls.
		"--serving-cert-dns-names=localhost")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(mgr.args, "--serving-certs=true") {
		t.Fatalf("the manager of this installation does not provision its serving certificates (no --serving-certs=true): it needs cert-manager; args %v", mgr.container.Args)
	}
	ts, err := newPod(objs, namespace, tokenServerDeployment, "token-server", cfg, admin, dir)
	if err != nil {
		t.Fatal(err)
	}
	in := &installation{objs: objs, namespace: namespace, pods: []*pod{mgr, ts}}
	for _, p := range in.pods {
		t.Logf("%s runs %s as ServiceAccount %s/%s with the rendered args and env, except:\n  %s",
			p.deployment.Name, p.command, namespace, p.deployment.Spec.Template.Spec.ServiceAccountName, strings.Join(p.substitutions, "\n  "))
	}
	// The caBundle is the manager's to keep: a manifest that set one would have every
	// sync of a GitOps tool overwrite the manager's.
	for _, obj := range objs {
		if obj.GetKind() != "ValidatingWebhookConfiguration" {
			continue
		}
		webhooks, _, _ := unstructured.NestedSlice(obj.Object, "webhooks")
		for _, raw := range webhooks {
			if wh, _ := raw.(map[string]any); wh != nil {
				if _, set, _ := unstructured.NestedFieldNoCopy(wh, "clientConfig", "caBundle"); set {
					t.Errorf("%s: webhook %v sets clientConfig.caBundle, which the manager keeps", describe(obj), wh["name"])
				}
			}
		}
	}
	subs, err := in.pointWebhooksAtPods(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the API server reaches the webhooks at the manager's local port, not through the Service:\n  %s", strings.Join(subs, "\n  "))
	t.Cleanup(func() {
		for _, p := range in.pods {
			if err := p.stop(); err != nil {
				t.Errorf("%v; its log:\n%s", err, p.logTail(40))
			}
			if t.Failed() && p.cmd != nil {
				t.Logf("%s's log (last lines):\n%s", p.deployment.Name, p.logTail(60))
			}
		}
		// The next variant applies the webhook configuration from its manifest again (the
		// URL written above and the manifest's service would make it invalid).
		for _, obj := range objs {
			if obj.GetKind() == "ValidatingWebhookConfiguration" {
				vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: obj.GetName()}}
				if err := client.IgnoreNotFound(admin.Delete(context.WithoutCancel(ctx), vwc)); err != nil {
					t.Error(err)
				}
			}
		}
	})

	done := phase(t, "start the manager and the token server, wait until ready, dial every Service")
	if err := mgr.start(ctx, filepath.Join(binDir, "manager"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The token server's certificate Secret is the manager's to create: until then its
	// pod would not start, and neither does the process.
	if err := ts.start(ctx, filepath.Join(binDir, "token-server"), 60*time.Second); err != nil {
		t.Fatalf("%v; the manager's log:\n%s", err, mgr.logTail(40))
	}
	for _, p := range in.pods {
		if err := p.waitReady(ctx, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.checkServices(ctx); err != nil {
		t.Error(err)
	}
	done()

	done = phase(t, "caBundle injected by the manager")
	if err := waitCABundle(ctx, admin, objs, namespace); err != nil {
		t.Fatal(err)
	}
	done()

	done = phase(t, "issue a credential (admission through the manager's webhook)")
	cred, err := issueSampleCredential(ctx, admin)
	done()
	if err != nil {
		t.Fatal(err)
	}
	wantURL := "https://keysmith-token-server." + namespace + ".svc/oauth2/token"
	if cred.tokenURL != wantURL {
		t.Fatalf("the credential's TOKEN_URL is %q, want %q", cred.tokenURL, wantURL)
	}
	if cred.clientID == "" || cred.clientSecret == "" {
		t.Fatalf("the credential's Secret lacks CLIENT_ID or CLIENT_SECRET")
	}

	done = phase(t, "exchange the credential at TOKEN_URL over TLS, verify the token")
	hc, err := tokenServerClient(ctx, admin, in)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := exchange(ctx, hc, cred, "https://keysmith-token-server."+namespace+".svc", "profile-api")
	done()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("token exchanged at %s: iss %s, aud %v, sub %s; signature verified with the JWKS", cred.tokenURL, claims.Issuer, claims.Audience, claims.Subject)

	if err := deleteSampleCredential(ctx, admin, cred); err != nil {
		t.Fatal(err)
	}
	for _, p := range in.pods {
		for _, v := range p.volumes {
			_, n, _ := v.State()
			t.Logf("%s: the volume of Secret %s was written %d time(s)", p.deployment.Name, v.Source.SecretName, n)
		}
	}
}

// waitCABundle waits until the manager has written the CA of its webhook certificate (the
// ca.crt of its Secret) into every webhook of the manifest's webhook configurations.
func waitCABundle(ctx context.Context, c client.Client, objs []*unstructured.Unstructured, namespace string) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		secret := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: webhookCertSecret}, secret); err != nil {
			last = err.Error()
			return false, nil
		}
		ca := secret.Data["ca.crt"]
		if len(ca) == 0 {
			last = "the webhook certificate Secret has no ca.crt"
			return false, nil
		}
		for _, obj := range objs {
			if obj.GetKind() != "ValidatingWebhookConfiguration" {
				continue
			}
			vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
			if err := c.Get(ctx, client.ObjectKey{Name: obj.GetName()}, vwc); err != nil {
				return false, err
			}
			for _, wh := range vwc.Webhooks {
				if string(wh.ClientConfig.CABundle) != string(ca) {
					last = fmt.Sprintf("webhook %s: caBundle of %d bytes, not the Secret's ca.crt", wh.Name, len(wh.ClientConfig.CABundle))
					return false, nil
				}
			}
		}
		return true, nil
	})
	if err != nil {
		return errors.Join(err, errors.New(last))
	}
	return nil
}
