// Package testenv starts a real control plane (etcd and kube-apiserver, built from the Go
// module proxy by hack/setup-envtest.sh) with keysmith's CRDs installed, for test suites.
package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// RepoRoot returns the root of the keysmith repository.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// AssetsDir returns the directory holding kube-apiserver and etcd: KUBEBUILDER_ASSETS
// when set, else the one hack/setup-envtest.sh builds or reuses, so that a plain
// `go test ./...` works as well as `make test`.
func AssetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "setup-envtest.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/setup-envtest.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Scheme returns a scheme with the Kubernetes and keysmith types.
func Scheme() *apiruntime.Scheme {
	s := apiruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := iamv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// New returns an envtest environment with keysmith's CRDs, not yet started.
func New() (*envtest.Environment, error) {
	dir, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	return &envtest.Environment{
		BinaryAssetsDirectory: dir,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme(),
	}, nil
}

// StartT starts a control plane for one test (New, then Start), failing the test when it
// cannot, and stops it when the test ends, reporting a failure to stop. Each configure
// runs before the start (to set the API server's flags, for one).
func StartT(t testing.TB, configure ...func(*envtest.Environment)) (*envtest.Environment, *rest.Config) {
	t.Helper()
	env, err := New()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range configure {
		c(env)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	return env, cfg
}

// Start runs the manager in the background, outliving the context of the test step that
// starts it (a BeforeEach's context ends with it), and returns a function that stops the
// manager, waits for it, and returns what Start returned.
func Start(ctx context.Context, mgr manager.Manager) (stop func() error) {
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	return func() error { cancel(); return <-done }
}

// ReadObjects decodes the objects of a multi-document YAML file. A non-empty namespace
// replaces kustomize's "namespace: system" placeholder, so that files under config/ can
// be applied as they are.
func ReadObjects(path, namespace string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if namespace != "" {
		data = bytes.ReplaceAll(data, []byte("namespace: system\n"), []byte("namespace: "+namespace+"\n"))
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(obj.Object) != 0 {
			objs = append(objs, obj)
		}
	}
}

// CreateFromFile creates every object of a YAML file (see ReadObjects).
func CreateFromFile(ctx context.Context, c client.Client, path, namespace string) error {
	objs, err := ReadObjects(path, namespace)
	if err != nil {
		return err
	}
	for _, obj := range objs {
		if err := c.Create(ctx, obj); err != nil {
			return fmt.Errorf("%s: creating %s %s: %w", path, obj.GetKind(), obj.GetName(), err)
		}
	}
	return nil
}

// APIServerIssuer returns the service-account issuer of the API server cfg reaches, read
// from its discovery document as docs/integrations/kube-apiserver.md does: the audience
// --api-audiences defaults to.
func APIServerIssuer(ctx context.Context, cfg *rest.Config) (string, error) {
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
	return discovery.Issuer, nil
}
