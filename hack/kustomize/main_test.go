package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// The two installations in config/: the default (the manager issues the serving
// certificates) and the cert-manager overlay.
var overlays = []string{"config/default", "config/certmanager"}

// inRepo makes the repository root, where `make build-installer` runs, the test's working
// directory.
func inRepo(t *testing.T) { t.Chdir("../..") }

// render is build of a directory of the repository (the test must be inRepo).
func render(t *testing.T, dir string) []byte {
	t.Helper()
	out, err := build(dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return out
}

// object is one document of a render: the decoded object and its YAML.
type object struct {
	*unstructured.Unstructured
	raw []byte
}

// decode splits a render into its objects.
func decode(t *testing.T, data []byte) []object {
	t.Helper()
	var objs []object
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatal(err)
		}
		if len(u.Object) == 0 {
			continue
		}
		raw, err := yaml.Marshal(u.Object)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, object{u, raw})
	}
}

// typed decodes o strictly into out: a misspelled or misplaced field fails the test
// rather than vanish (the API server would drop or refuse it).
func typed(t *testing.T, o object, out any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(o.raw, out); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
}

// find returns the object of that kind and name; if there is none, an empty object and false.
func find(objs []object, kind, name string) (object, bool) {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o, true
		}
	}
	return object{Unstructured: &unstructured.Unstructured{}}, false
}

func deployment(t *testing.T, objs []object, name string) *appsv1.Deployment {
	t.Helper()
	o, ok := find(objs, "Deployment", name)
	if !ok {
		t.Fatalf("no Deployment %s", name)
	}
	d := &appsv1.Deployment{}
	typed(t, o, d)
	return d
}

// TestInstallerIsCurrent: dist/install.yaml is the render of config/default as it is now,
// so a change to config/ without `make build-installer` fails here, before CI's drift
// check.
func TestInstallerIsCurrent(t *testing.T) {
	inRepo(t)
	committed, err := os.ReadFile("dist/install.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := render(t, "config/default"); !bytes.Equal(committed, want) {
		t.Fatalf("dist/install.yaml is not the render of config/default: run make build-installer (committed %d bytes, render %d)", len(committed), len(want))
	}
}

// TestHeader: the first line says the file is generated and from what, whatever way the
// directory is spelled.
func TestHeader(t *testing.T) {
	inRepo(t)
	for _, dir := range []string{"config/default", "./config/default", "config/default/"} {
		out := render(t, dir)
		first, _, _ := bytes.Cut(out, []byte("\n"))
		if want := "# Rendered from config/default by hack/kustomize (make build-installer); do not edit."; string(first) != want {
			t.Errorf("build(%q) starts with %q, want %q", dir, first, want)
		}
	}
}

// TestBuildFails: a directory without a kustomization is an error, not an empty file.
func TestBuildFails(t *testing.T) {
	if out, err := build(t.TempDir()); err == nil {
		t.Fatalf("build of an empty directory succeeded: %q", out)
	}
}

// TestPodSecurity: every Deployment of both installations meets the restricted Pod
// Security Standard as the contract spells it, and mounts from a Secret only the serving
// certificate and its key (never ca.key, which the manager's CA Secret also holds).
func TestPodSecurity(t *testing.T) {
	inRepo(t)
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			objs := decode(t, render(t, dir))
			n := 0
			for _, o := range objs {
				if o.GetKind() != "Deployment" {
					continue
				}
				n++
				d := &appsv1.Deployment{}
				typed(t, o, d)
				checkRestricted(t, d)
				checkSecretVolumes(t, d)
			}
			if n != 2 {
				t.Errorf("%d Deployments, want 2 (manager and token server)", n)
			}
			ns, ok := find(objs, "Namespace", "keysmith-system")
			if !ok {
				t.Fatal("no Namespace keysmith-system")
			}
			if got := ns.GetLabels()["pod-security.kubernetes.io/enforce"]; got != "restricted" {
				t.Errorf("namespace pod-security.kubernetes.io/enforce = %q, want restricted", got)
			}
		})
	}
}

func checkRestricted(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	pod := d.Spec.Template.Spec
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("Deployment %s: pod securityContext %+v, want runAsNonRoot and seccompProfile RuntimeDefault", d.Name, sc)
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("Deployment %s shares a host namespace", d.Name)
	}
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("Deployment %s container %s: no securityContext", d.Name, c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("Deployment %s container %s: allowPrivilegeEscalation not false", d.Name, c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("Deployment %s container %s: readOnlyRootFilesystem not true", d.Name, c.Name)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("Deployment %s container %s: privileged", d.Name, c.Name)
		case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
			t.Errorf("Deployment %s container %s: capabilities %+v, want drop [ALL] and nothing added", d.Name, c.Name, sc.Capabilities)
		}
	}
}

func checkSecretVolumes(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Projected != nil {
			t.Errorf("Deployment %s volume %s: a projected volume (check its Secret sources like a secret volume)", d.Name, v.Name)
		}
		if v.Secret == nil {
			continue
		}
		var keys []string
		for _, it := range v.Secret.Items {
			if it.Key != it.Path {
				t.Errorf("Deployment %s volume %s: key %s mounted as %s", d.Name, v.Name, it.Key, it.Path)
			}
			keys = append(keys, it.Key)
		}
		if !slices.Equal(keys, []string{"tls.crt", "tls.key"}) {
			t.Errorf("Deployment %s volume %s (Secret %s) mounts %v, want exactly [tls.crt tls.key]", d.Name, v.Name, v.Secret.SecretName, keys)
		}
	}
}

// The args of the contract, exactly (ns keysmith-system).
var (
	managerArgs = []string{
		"--leader-elect",
		"--health-probe-bind-address=:8081",
		"--metrics-bind-address=:8080",
		"--token-url=https://keysmith-token-server.keysmith-system.svc/oauth2/token",
		"--webhook-port=9443",
		"--webhook-cert-dir=/etc/keysmith/webhook-certs",
		"--serving-certs=true",
	}
	tokenServerArgs = []string{
		"--listen=:8443",
		"--issuer=https://keysmith-token-server.keysmith-system.svc",
		"--signing-key-secret=keysmith-signing-keys",
		"--token-lifetime=10m",
		"--max-token-lifetime=1h",
		"--usage-interval=30s",
		"--tls-cert-file=/etc/keysmith/tls/tls.crt",
		"--tls-key-file=/etc/keysmith/tls/tls.key",
	}
)

// TestDeployments: the two Deployments run the contract's args with two replicas, the
// volumes where the args say, and the token server is probed over HTTPS; in the
// cert-manager overlay the manager provisions no certificate and waits for cert-manager's
// Secret.
func TestDeployments(t *testing.T) {
	inRepo(t)
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			objs := decode(t, render(t, dir))
			certManager := dir == "config/certmanager"

			m := deployment(t, objs, "keysmith-controller-manager")
			want := slices.Clone(managerArgs)
			if certManager {
				want[len(want)-1] = "--serving-certs=false"
			}
			mc := m.Spec.Template.Spec.Containers[0]
			if !slices.Equal(mc.Args, want) {
				t.Errorf("manager args\n%s\nwant\n%s", strings.Join(mc.Args, "\n"), strings.Join(want, "\n"))
			}
			checkReplicas(t, m)
			checkPodNamespaceEnv(t, m)
			v := mountedSecret(t, m, "/etc/keysmith/webhook-certs")
			if v.SecretName != "keysmith-webhook-server-cert" {
				t.Errorf("manager mounts Secret %s, want keysmith-webhook-server-cert", v.SecretName)
			}
			// The manager creates its own Secret, so its pod must start without it; a pod
			// waiting for cert-manager's Secret should wait.
			if optional := v.Optional != nil && *v.Optional; optional == certManager {
				t.Errorf("manager's certificate volume optional = %v with cert-manager = %v", optional, certManager)
			}

			ts := deployment(t, objs, "keysmith-token-server")
			tc := ts.Spec.Template.Spec.Containers[0]
			if !slices.Equal(tc.Args, tokenServerArgs) {
				t.Errorf("token server args\n%s\nwant\n%s", strings.Join(tc.Args, "\n"), strings.Join(tokenServerArgs, "\n"))
			}
			checkReplicas(t, ts)
			checkPodNamespaceEnv(t, ts)
			if v := mountedSecret(t, ts, "/etc/keysmith/tls"); v.SecretName != "keysmith-token-server-tls" || (v.Optional != nil && *v.Optional) {
				t.Errorf("token server mounts Secret %s (optional %v), want keysmith-token-server-tls, not optional", v.SecretName, v.Optional)
			}
			for name, p := range map[string]*corev1.Probe{"readiness": tc.ReadinessProbe, "liveness": tc.LivenessProbe} {
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Port.String() != "https" {
					t.Errorf("token server %s probe %+v, want HTTPS on port https", name, p)
				}
			}
			spread := ts.Spec.Template.Spec.TopologySpreadConstraints
			if len(spread) != 1 || spread[0].TopologyKey != "kubernetes.io/hostname" || spread[0].WhenUnsatisfiable != corev1.ScheduleAnyway ||
				!selects(spread[0].LabelSelector.MatchLabels, ts) {
				t.Errorf("token server topology spread %+v, want one by kubernetes.io/hostname, ScheduleAnyway, over its own pods", spread)
			}
		})
	}
}

func checkReplicas(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("Deployment %s: replicas %v, want 2", d.Name, d.Spec.Replicas)
	}
}

func checkPodNamespaceEnv(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "POD_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace" {
			return
		}
	}
	t.Errorf("Deployment %s: no POD_NAMESPACE from metadata.namespace", d.Name)
}

// mountedSecret is the secret volume the first container mounts at path.
func mountedSecret(t *testing.T, d *appsv1.Deployment, path string) *corev1.SecretVolumeSource {
	t.Helper()
	pod := d.Spec.Template.Spec
	for _, m := range pod.Containers[0].VolumeMounts {
		if m.MountPath != path {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil {
				if !m.ReadOnly {
					t.Errorf("Deployment %s mounts %s read-write", d.Name, path)
				}
				return v.Secret
			}
		}
	}
	t.Fatalf("Deployment %s mounts no Secret at %s", d.Name, path)
	return nil
}

// selects reports whether matchLabels select d's pods, and only pods its selector selects.
func selects(matchLabels map[string]string, d *appsv1.Deployment) bool {
	pods := labels.Set(d.Spec.Template.Labels)
	return len(matchLabels) > 0 && labels.SelectorFromSet(matchLabels).Matches(pods)
}

// TestServicesAndBudgets: each Service and PodDisruptionBudget of the contract selects the
// pods of its Deployment, and each Service port targets a port the container declares.
func TestServicesAndBudgets(t *testing.T) {
	inRepo(t)
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			objs := decode(t, render(t, dir))
			manager := deployment(t, objs, "keysmith-controller-manager")
			tokenServer := deployment(t, objs, "keysmith-token-server")
			services := []struct {
				name       string
				deployment *appsv1.Deployment
				port       int32
				targetPort string
			}{
				{"keysmith-webhook-service", manager, 443, "webhook"},
				{"keysmith-manager-metrics", manager, 8080, "metrics"},
				{"keysmith-token-server", tokenServer, 443, "https"},
			}
			for _, s := range services {
				o, ok := find(objs, "Service", s.name)
				if !ok {
					t.Errorf("no Service %s", s.name)
					continue
				}
				svc := &corev1.Service{}
				typed(t, o, svc)
				if !selects(svc.Spec.Selector, s.deployment) {
					t.Errorf("Service %s selector %v does not select Deployment %s's pods", s.name, svc.Spec.Selector, s.deployment.Name)
				}
				if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != s.port || svc.Spec.Ports[0].TargetPort.String() != s.targetPort {
					t.Errorf("Service %s ports %+v, want %d -> %s", s.name, svc.Spec.Ports, s.port, s.targetPort)
				}
				if !slices.ContainsFunc(s.deployment.Spec.Template.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == s.targetPort }) {
					t.Errorf("Service %s targets port %s, which Deployment %s does not declare", s.name, s.targetPort, s.deployment.Name)
				}
			}
			for _, d := range []*appsv1.Deployment{manager, tokenServer} {
				o, ok := find(objs, "PodDisruptionBudget", d.Name)
				if !ok {
					t.Errorf("no PodDisruptionBudget %s", d.Name)
					continue
				}
				pdb := &policyv1.PodDisruptionBudget{}
				typed(t, o, pdb)
				if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.MaxUnavailable != nil {
					t.Errorf("PodDisruptionBudget %s: minAvailable %v, maxUnavailable %v, want minAvailable 1", d.Name, pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
				}
				if pdb.Spec.Selector == nil || len(pdb.Spec.Selector.MatchExpressions) != 0 || !selects(pdb.Spec.Selector.MatchLabels, d) {
					t.Errorf("PodDisruptionBudget %s selector %v does not select Deployment %s's pods", d.Name, pdb.Spec.Selector, d.Name)
				}
			}
		})
	}
}

// TestCertificates: neither installation ships a Secret (the manager or cert-manager
// writes the serving certificates; an applier would fight them over the data), only the
// cert-manager overlay has cert-manager objects and the CA injection annotation, and its
// Certificates are the contract's chain with the Services' DNS names.
func TestCertificates(t *testing.T) {
	inRepo(t)
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			objs := decode(t, render(t, dir))
			certManager := dir == "config/certmanager"
			for _, o := range objs {
				if o.GetKind() == "Secret" {
					t.Errorf("the render has Secret %s", o.GetName())
				}
				if !certManager && strings.HasPrefix(o.GetAPIVersion(), "cert-manager.io/") {
					t.Errorf("%s %s without cert-manager", o.GetKind(), o.GetName())
				}
			}
			hook, ok := find(objs, "ValidatingWebhookConfiguration", "keysmith-validating-webhook")
			if !ok {
				t.Fatal("no ValidatingWebhookConfiguration keysmith-validating-webhook")
			}
			inject, injected := hook.GetAnnotations()["cert-manager.io/inject-ca-from"]
			if injected != certManager || (certManager && inject != "keysmith-system/keysmith-webhook-server-cert") {
				t.Errorf("cert-manager.io/inject-ca-from = %q (set %v) with cert-manager = %v", inject, injected, certManager)
			}
			if !certManager {
				return
			}

			issuers := map[string]string{
				"keysmith-ca":                  "keysmith-selfsigned",
				"keysmith-webhook-server-cert": "keysmith-ca",
				"keysmith-token-server-tls":    "keysmith-ca",
			}
			dnsNames := map[string][]string{
				"keysmith-webhook-server-cert": {"keysmith-webhook-service.keysmith-system.svc", "keysmith-webhook-service.keysmith-system.svc.cluster.local"},
				"keysmith-token-server-tls":    {"keysmith-token-server.keysmith-system.svc", "keysmith-token-server.keysmith-system.svc.cluster.local"},
			}
			for name, issuer := range issuers {
				o, ok := find(objs, "Certificate", name)
				if !ok {
					t.Errorf("no Certificate %s", name)
					continue
				}
				ref, _, _ := unstructured.NestedString(o.Object, "spec", "issuerRef", "name")
				secret, _, _ := unstructured.NestedString(o.Object, "spec", "secretName")
				isCA, _, _ := unstructured.NestedBool(o.Object, "spec", "isCA")
				names, _, _ := unstructured.NestedStringSlice(o.Object, "spec", "dnsNames")
				if ref != issuer || secret != name || isCA != (name == "keysmith-ca") || !slices.Equal(names, dnsNames[name]) {
					t.Errorf("Certificate %s: issuer %s, secret %s, isCA %v, dnsNames %v; want issuer %s, secret %s, dnsNames %v",
						name, ref, secret, isCA, names, issuer, name, dnsNames[name])
				}
				if o.GetNamespace() != "keysmith-system" {
					t.Errorf("Certificate %s in namespace %q", name, o.GetNamespace())
				}
			}
			for issuer, field := range map[string]string{"keysmith-selfsigned": "selfSigned", "keysmith-ca": "ca"} {
				o, ok := find(objs, "Issuer", issuer)
				if _, has, _ := unstructured.NestedFieldNoCopy(o.Object, "spec", field); !ok || !has {
					t.Errorf("Issuer %s: no spec.%s", issuer, field)
				}
			}
			ca, _ := find(objs, "Issuer", "keysmith-ca")
			if s, _, _ := unstructured.NestedString(ca.Object, "spec", "ca", "secretName"); s != "keysmith-ca" {
				t.Errorf("Issuer keysmith-ca signs with Secret %q, want keysmith-ca", s)
			}
		})
	}
}

// TestUninstallKeeps: the objects an uninstall keeps (docs/install.md#uninstall: `kubectl
// delete -f dist/install.yaml -l 'iam.keysmith.dev/keep-on-uninstall!=true'`) are the two
// CRDs, whose deletion deletes every credential and its Secret, and the namespace, which
// holds the binding and signing keys; everything else goes.
func TestUninstallKeeps(t *testing.T) {
	inRepo(t)
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			var kept []string
			for _, o := range decode(t, render(t, dir)) {
				if v, ok := o.GetLabels()["iam.keysmith.dev/keep-on-uninstall"]; ok {
					if v != "true" {
						t.Errorf("%s %s: keep-on-uninstall %q", o.GetKind(), o.GetName(), v)
					}
					kept = append(kept, o.GetKind()+"/"+o.GetName())
				}
			}
			want := []string{
				"Namespace/keysmith-system",
				"CustomResourceDefinition/apicredentials.iam.keysmith.dev",
				"CustomResourceDefinition/apidefinitions.iam.keysmith.dev",
			}
			slices.Sort(kept)
			slices.Sort(want)
			if !slices.Equal(kept, want) {
				t.Errorf("kept on uninstall: %v, want %v", kept, want)
			}
		})
	}
}
