// Command dev runs keysmith's local development environment (`make dev`): a control plane
// built from the Go module proxy (etcd, kube-apiserver, and kube-controller-manager for
// garbage collection), keysmith's CRDs, the manager, and config/samples. It prints a
// walk-through and one ready line, then stays up until interrupted and cleans up after itself.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

const tokenServerURL = "http://127.0.0.1:18080"

// devDir holds the environment's state, logs and kubeconfig; KEYSMITH_DEV_DIR overrides it
// (relative to the repository root) so that tests can run beside a developer's `make dev`.
var devDir = cmp.Or(os.Getenv("KEYSMITH_DEV_DIR"), "bin/dev")

var kubeconfigPath = devDir + "/kubeconfig"

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

	step("building the manager")
	if err := goBuild(ctx, devDir+"/manager", "./cmd/manager"); err != nil {
		return err
	}

	step("starting etcd and kube-apiserver")
	env, err := testenv.New()
	if err != nil {
		return err
	}
	env.ControlPlaneStartTimeout = 2 * time.Minute
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
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }

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
		"--kubeconfig="+abs(kubeconfigPath), "--metrics-bind-address=0", "--health-probe-bind-address=0",
		"--token-url="+tokenServerURL+"/oauth2/token")
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, mgr.stop()) }()

	c, err := client.New(admin.Config(), client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return err
	}
	step("applying config/samples")
	creds, err := applySamples(ctx, c, "config/samples")
	if err != nil {
		return err
	}
	if err := waitSettled(ctx, c, creds); err != nil {
		return err
	}

	printWalkthrough()
	fmt.Printf("keysmith dev environment ready: kubeconfig=%s token-server=%s\n", kubeconfigPath, tokenServerURL)
	select {
	case <-ctx.Done():
	case err := <-kcm.exited:
		return fmt.Errorf("kube-controller-manager exited: %w (see %s)", err, kcm.logPath)
	case err := <-mgr.exited:
		return fmt.Errorf("the manager exited: %w (see %s)", err, mgr.logPath)
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

// applySamples creates every object of the YAML files in dir (kustomization.yaml aside)
// and returns the keys of the APICredentials among them.
func applySamples(ctx context.Context, c client.Client, dir string) ([]client.ObjectKey, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	var creds []client.ObjectKey
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			obj := &unstructured.Unstructured{}
			if err := dec.Decode(&obj.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			if err := c.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
				return nil, fmt.Errorf("%s: creating %s %s: %w", f, obj.GetKind(), obj.GetName(), err)
			}
			if obj.GetKind() == "APICredential" {
				creds = append(creds, client.ObjectKeyFromObject(obj))
			}
		}
	}
	return creds, nil
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

func printWalkthrough() {
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

Logs: `+devDir+`/manager.log, `+devDir+`/kube-controller-manager.log. Ctrl-C stops everything.

`, "\n"))
}
