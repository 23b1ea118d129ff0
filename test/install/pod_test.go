package install

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/testenv/kubelet"
)

// images maps the commands of keysmith's image (Dockerfile: /manager, /token-server) to
// the packages they are built from.
var images = map[string]string{
	"/manager":      "./cmd/manager",
	"/token-server": "./cmd/token-server",
}

// bindFlags are, per command, the flags that bind a container port: an envtest has no pod
// network, so each gets a free local port instead of the rendered one. A value of true
// marks a flag that takes host:port (false: a bare port).
var bindFlags = map[string]map[string]bool{
	"/manager":      {"metrics-bind-address": true, "health-probe-bind-address": true, "webhook-port": false},
	"/token-server": {"listen": true},
}

// pod is one replica of a rendered Deployment, run as a process of the test: the
// container's command is the binary built from this repository, with the container's args
// and env exactly, except for the substitutions that a cluster without pods forces, each
// recorded in substitutions and logged.
type pod struct {
	deployment *appsv1.Deployment
	container  corev1.Container
	// ports maps the container's ports to the local ports the process binds instead.
	ports         map[int32]int
	volumes       []*kubelet.SecretVolume
	command       string
	args, env     []string
	substitutions []string
	logPath       string

	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	err    error // how the process ended
}

// fromUnstructured converts obj into the typed out.
func fromUnstructured(obj *unstructured.Unstructured, out any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, out); err != nil {
		return fmt.Errorf("%s: %w", describe(obj), err)
	}
	return nil
}

// find returns the object of kind and name among objs, converted into out.
func find(objs []*unstructured.Unstructured, kind, namespace, name string, out any) error {
	for _, obj := range objs {
		if obj.GetKind() == kind && obj.GetName() == name && obj.GetNamespace() == namespace {
			return fromUnstructured(obj, out)
		}
	}
	return fmt.Errorf("the manifest has no %s %s/%s", kind, namespace, name)
}

// newPod prepares the container named container of the Deployment deployment in objs to
// run as the rendered ServiceAccount, through a kubeconfig written into dir that
// impersonates it, reading its Secret volumes through reader. extraArgs are appended (and
// recorded as substitutions).
func newPod(objs []*unstructured.Unstructured, namespace, deployment, container string, admin *rest.Config, reader client.Client, dir string, extraArgs ...string) (*pod, error) {
	p := &pod{deployment: &appsv1.Deployment{}, ports: map[int32]int{}, exited: make(chan struct{})}
	if err := find(objs, "Deployment", namespace, deployment, p.deployment); err != nil {
		return nil, err
	}
	spec := p.deployment.Spec.Template.Spec
	found := false
	for _, c := range spec.Containers {
		if c.Name == container {
			p.container, found = c, true
		}
	}
	if !found {
		return nil, fmt.Errorf("Deployment %s has no container %s", deployment, container)
	}
	if len(p.container.Command) != 1 || images[p.container.Command[0]] == "" {
		return nil, fmt.Errorf("Deployment %s: container %s runs %q, not one of the image's commands %v", deployment, container, p.container.Command, slices.Sorted(maps.Keys(images)))
	}
	p.command = p.container.Command[0]
	p.logPath = filepath.Join(dir, deployment+".log")

	env, vars, err := p.resolveEnv()
	if err != nil {
		return nil, err
	}
	mounts, err := p.mountVolumes(reader, dir)
	if err != nil {
		return nil, err
	}
	args := make([]string, 0, len(p.container.Args)+len(extraArgs)+1)
	for _, a := range p.container.Args {
		args = append(args, expand(a, vars))
	}
	if args, err = p.bindFreePorts(args); err != nil {
		return nil, err
	}
	args = p.remapPaths(args, mounts)
	for i, e := range env {
		env[i] = p.remapPaths([]string{e}, mounts)[0]
	}

	sa := spec.ServiceAccountName
	if sa == "" {
		return nil, fmt.Errorf("Deployment %s names no serviceAccountName (it would run as %s/default)", deployment, namespace)
	}
	if err := find(objs, "ServiceAccount", namespace, sa, &corev1.ServiceAccount{}); err != nil {
		return nil, fmt.Errorf("Deployment %s runs as ServiceAccount %s: %w", deployment, sa, err)
	}
	kubeconfig, err := impersonatingKubeconfig(admin, filepath.Join(dir, deployment+".kubeconfig"), namespace, sa)
	if err != nil {
		return nil, err
	}
	extraArgs = append([]string{"--kubeconfig=" + kubeconfig}, extraArgs...)
	for _, a := range extraArgs {
		p.substitute("(added) " + a)
	}
	p.args, p.env = append(args, extraArgs...), env
	return p, nil
}

func (p *pod) substitute(what string) {
	p.substitutions = append(p.substitutions, what)
}

// resolveEnv returns the container's environment as the kubelet would set it: values
// (with $(VAR) references to earlier variables expanded) and the downward API fields a
// pod without a node can have. Anything else (Secret or ConfigMap references, envFrom)
// the test does not stand in for, and refuses.
func (p *pod) resolveEnv() (env []string, vars map[string]string, err error) {
	if len(p.container.EnvFrom) > 0 {
		return nil, nil, fmt.Errorf("Deployment %s: envFrom is not stood in for by the test", p.deployment.Name)
	}
	podName := p.deployment.Name + "-install-test"
	vars = map[string]string{}
	for _, e := range p.container.Env {
		var value string
		switch {
		case e.ValueFrom == nil:
			value = expand(e.Value, vars)
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.namespace":
				value = p.deployment.Namespace
			case "metadata.name":
				value = podName
				p.substitute(fmt.Sprintf("env %s=%s (the pod's name)", e.Name, podName))
			case "spec.serviceAccountName":
				value = p.deployment.Spec.Template.Spec.ServiceAccountName
			default:
				return nil, nil, fmt.Errorf("Deployment %s: env %s from field %s is not stood in for by the test", p.deployment.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		default:
			return nil, nil, fmt.Errorf("Deployment %s: env %s from a %v is not stood in for by the test", p.deployment.Name, e.Name, e.ValueFrom)
		}
		vars[e.Name] = value
		env = append(env, e.Name+"="+value)
	}
	return env, vars, nil
}

// expand replaces the $(VAR) references of s to defined variables, as the kubelet does in
// args and env ($$ escapes a $; an undefined reference stays as written).
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) {
			if s[i+1] == '$' {
				b.WriteByte('$')
				i++
				continue
			}
			if s[i+1] == '(' {
				if end := strings.IndexByte(s[i:], ')'); end > 0 {
					if v, ok := vars[s[i+2:i+end]]; ok {
						b.WriteString(v)
						i += end
						continue
					}
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountVolumes gives each of the container's volume mounts a directory under dir,
// stood in for by a kubelet.SecretVolume for a Secret volume and left empty for an emptyDir, and
// returns the mount paths mapped to those directories.
func (p *pod) mountVolumes(reader client.Client, dir string) (map[string]string, error) {
	volumes := map[string]corev1.Volume{}
	for _, v := range p.deployment.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]string{}
	for _, m := range p.container.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			return nil, fmt.Errorf("Deployment %s: volumeMount %s names no volume", p.deployment.Name, m.Name)
		}
		if m.SubPath != "" || m.SubPathExpr != "" {
			return nil, fmt.Errorf("Deployment %s: volumeMount %s uses subPath, which the test does not stand in for", p.deployment.Name, m.Name)
		}
		local := filepath.Join(dir, p.deployment.Name+"-"+m.Name)
		if err := os.MkdirAll(local, 0o755); err != nil {
			return nil, err
		}
		switch {
		case v.Secret != nil:
			p.volumes = append(p.volumes, &kubelet.SecretVolume{Client: reader, Namespace: p.deployment.Namespace, Source: *v.Secret, Dir: local})
		case v.EmptyDir != nil:
		default:
			return nil, fmt.Errorf("Deployment %s: volume %s is of a type the test does not stand in for", p.deployment.Name, v.Name)
		}
		mounts[m.MountPath] = local
		p.substitute(fmt.Sprintf("mount %s (volume %s) -> %s", m.MountPath, m.Name, local))
	}
	return mounts, nil
}

// remapPaths rewrites each --flag=value whose value is under a mount path to the same
// path under the mount's local directory.
func (p *pod) remapPaths(args []string, mounts map[string]string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		name, value, ok := strings.Cut(a, "=")
		if !ok {
			continue
		}
		for mountPath, local := range mounts {
			if value == mountPath || strings.HasPrefix(value, strings.TrimSuffix(mountPath, "/")+"/") {
				out[i] = name + "=" + local + strings.TrimPrefix(value, strings.TrimSuffix(mountPath, "/"))
				p.substitute(a + " -> " + out[i])
			}
		}
	}
	return out
}

// bindFreePorts replaces the port of each flag that binds one by a free local port,
// after checking that the container declares it (else the Service and probes that name
// it reach nothing). A binding flag the args do not set is refused: the binary's default
// port would be fixed, and nothing would prove it is the declared one.
func (p *pod) bindFreePorts(args []string) ([]string, error) {
	declared := map[int32]bool{}
	for _, cp := range p.container.Ports {
		declared[cp.ContainerPort] = true
	}
	out := slices.Clone(args)
	for flagName, hostPort := range bindFlags[p.command] {
		idx := -1
		for i, a := range out {
			if name, _, _ := strings.Cut(a, "="); name == "--"+flagName {
				idx = i
			}
		}
		if idx < 0 {
			return nil, fmt.Errorf("Deployment %s: container %s does not set --%s", p.deployment.Name, p.container.Name, flagName)
		}
		_, value, ok := strings.Cut(out[idx], "=")
		if !ok {
			return nil, fmt.Errorf("Deployment %s: %q is not --%s=VALUE", p.deployment.Name, out[idx], flagName)
		}
		if value == "0" && hostPort {
			continue // disabled
		}
		portText := value
		if hostPort {
			var err error
			if _, portText, err = net.SplitHostPort(value); err != nil {
				return nil, fmt.Errorf("Deployment %s: --%s=%s: %w", p.deployment.Name, flagName, value, err)
			}
		}
		port, err := strconv.Atoi(portText)
		if err != nil || !declared[int32(port)] {
			return nil, fmt.Errorf("Deployment %s: --%s=%s binds a port the container does not declare (%v)", p.deployment.Name, flagName, value, p.container.Ports)
		}
		local, err := testenv.FreePort()
		if err != nil {
			return nil, err
		}
		p.ports[int32(port)] = local
		replaced := strconv.Itoa(local)
		if hostPort {
			replaced = net.JoinHostPort("127.0.0.1", replaced)
		}
		out[idx] = "--" + flagName + "=" + replaced
		p.substitute(fmt.Sprintf("--%s=%s -> %s (no pod network: a free local port)", flagName, value, out[idx]))
	}
	return out, nil
}

// containerPort resolves a port of the container given by name or number, as probes and
// Services' targetPorts name them.
func (p *pod) containerPort(port intstr.IntOrString) (int32, error) {
	for _, cp := range p.container.Ports {
		if (port.Type == intstr.String && cp.Name == port.StrVal) || (port.Type == intstr.Int && cp.ContainerPort == port.IntVal) {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("Deployment %s: container %s has no port %s", p.deployment.Name, p.container.Name, port.String())
}

// localAddr is where the process serves the container's port (by name or number).
func (p *pod) localAddr(port intstr.IntOrString) (string, error) {
	cp, err := p.containerPort(port)
	if err != nil {
		return "", err
	}
	local, ok := p.ports[cp]
	if !ok {
		return "", fmt.Errorf("Deployment %s: no flag of %s binds container port %d", p.deployment.Name, p.command, cp)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(local)), nil
}

// impersonatingKubeconfig writes a kubeconfig to path that reaches the API server with
// the admin's credentials impersonating the ServiceAccount namespace/sa with the groups
// the API server gives a ServiceAccount token, so that the process runs under the RBAC the
// manifest binds to that ServiceAccount and nothing more.
func impersonatingKubeconfig(admin *rest.Config, path, namespace, sa string) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: admin.Host, CertificateAuthorityData: admin.CAData}
	cfg.AuthInfos["impersonator"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: admin.CertData,
		ClientKeyData:         admin.KeyData,
		Token:                 admin.BearerToken,
		Impersonate:           "system:serviceaccount:" + namespace + ":" + sa,
		ImpersonateGroups:     []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
	cfg.Contexts["sa"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "impersonator", Namespace: namespace}
	cfg.CurrentContext = "sa"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", err
	}
	return path, nil
}

// start waits, as the kubelet does, until every Secret volume is mounted (an optional
// one may be empty), then starts the process built at bin, its output going to logPath.
func (p *pod) start(ctx context.Context, bin string, timeout time.Duration) error {
	vctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	for _, v := range p.volumes {
		go v.Run(vctx)
	}
	deadline := time.Now().Add(timeout)
	for _, v := range p.volumes {
		for {
			ready, _, err := v.State()
			if ready {
				break
			}
			if time.Now().After(deadline) {
				cancel()
				return fmt.Errorf("Deployment %s would not start: volume of Secret %s not mounted within %s (%v)", p.deployment.Name, v.Source.SecretName, timeout, err)
			}
			select {
			case <-ctx.Done():
				cancel()
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		cancel()
		return err
	}
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Env = p.env // exactly the container's environment
	p.cmd.Dir = filepath.Dir(p.logPath)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		cancel()
		logFile.Close()
		return fmt.Errorf("starting %s: %w", p.command, err)
	}
	go func() {
		err := p.cmd.Wait()
		logFile.Close()
		cancel()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.exited)
	}()
	return nil
}

// exitErr reports whether the process has ended, and how.
func (p *pod) exitErr() (bool, error) {
	select {
	case <-p.exited:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// probe asks the container's readinessProbe once, as the kubelet does (an HTTPS probe
// does not verify the certificate; a status from 200 to 399 passes).
func (p *pod) probe(ctx context.Context) error {
	rp := p.container.ReadinessProbe
	if rp == nil || rp.HTTPGet == nil {
		return fmt.Errorf("Deployment %s: container %s has no HTTP readinessProbe", p.deployment.Name, p.container.Name)
	}
	addr, err := p.localAddr(rp.HTTPGet.Port)
	if err != nil {
		return err
	}
	scheme := strings.ToLower(string(rp.HTTPGet.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+rp.HTTPGet.Path, nil)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // as the kubelet probes
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("readiness probe %s: %s", req.URL, resp.Status)
	}
	return nil
}

// waitReady waits until the readinessProbe passes, failing at once if the process ends.
func (p *pod) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if done, err := p.exitErr(); done {
			return fmt.Errorf("Deployment %s: %s exited (%v) before it was ready; its log:\n%s", p.deployment.Name, p.command, err, p.logTail(40))
		}
		err := p.probe(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("Deployment %s not ready within %s: %w; its log:\n%s", p.deployment.Name, timeout, err, p.logTail(40))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop ends the process as the kubelet ends a pod: SIGTERM, then SIGKILL after the
// termination grace period. It reports an exit that was not the result of SIGTERM.
func (p *pod) stop() error {
	if p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	if done, err := p.exitErr(); done {
		return fmt.Errorf("%s had exited already: %v", p.deployment.Name, err)
	}
	grace := 30 * time.Second
	if g := p.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop within its grace period of %s", p.deployment.Name, grace)
	}
	_, err := p.exitErr()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 0) {
		return fmt.Errorf("%s stopped with %w", p.deployment.Name, err)
	}
	return nil
}

// logTail returns the last n lines of the process's output.
func (p *pod) logTail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// selects reports whether the Service selects the pods of p.
func (p *pod) selectedBy(svc *corev1.Service) bool {
	return len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(p.deployment.Spec.Template.Labels))
}
