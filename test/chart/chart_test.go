package chart

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// The args the contract of issue 10 fixes for the default render (namespace ops-keysmith).
var (
	wantManagerArgs = []string{
		"--leader-elect",
		"--health-probe-bind-address=:8081",
		"--metrics-bind-address=:8080",
		"--token-url=https://keysmith-token-server." + namespace + ".svc/oauth2/token",
		"--webhook-port=9443",
		"--webhook-cert-dir=/etc/keysmith/webhook-certs",
		"--serving-certs=true",
		"--leader-elect-lease-duration=15s",
		"--leader-elect-renew-deadline=10s",
		"--leader-elect-retry-period=2s",
		"--max-concurrent-reconciles=4",
	}
	wantTokenServerArgs = []string{
		"--listen=:8443",
		"--issuer=https://keysmith-token-server." + namespace + ".svc",
		"--signing-key-secret=keysmith-signing-keys",
		"--token-lifetime=10m",
		"--max-token-lifetime=1h",
		"--usage-interval=30s",
		"--tls-cert-file=/etc/keysmith/tls/tls.crt",
		"--tls-key-file=/etc/keysmith/tls/tls.key",
	}
)

// TestDefaultRender: the default values render every object of the contract, by name, and
// the Deployments with exactly the contract's args, env, ports and volumes.
func TestDefaultRender(t *testing.T) {
	m := mustRender(t, "", "")
	for _, want := range []string{
		"CustomResourceDefinition/apicredentials.iam.keysmith.dev",
		"CustomResourceDefinition/apidefinitions.iam.keysmith.dev",
		"ServiceAccount/keysmith-manager",
		"ServiceAccount/keysmith-token-server",
		"ClusterRole/keysmith-manager",
		"ClusterRoleBinding/keysmith-manager",
		"Role/keysmith-manager",
		"RoleBinding/keysmith-manager",
		"Role/keysmith-leader-election",
		"RoleBinding/keysmith-leader-election",
		"ClusterRole/keysmith-admin",
		"ClusterRole/keysmith-compliance-admin",
		"ClusterRole/keysmith-viewer",
		"ClusterRole/keysmith-aggregate-to-admin",
		"ClusterRole/keysmith-aggregate-to-edit",
		"ClusterRole/keysmith-aggregate-to-view",
		"ClusterRole/keysmith-token-server",
		"ClusterRoleBinding/keysmith-token-server",
		"Role/keysmith-token-server-signing-keys",
		"RoleBinding/keysmith-token-server-signing-keys",
		"ClusterRole/keysmith-token-server-verifier",
		"Role/keysmith-signing-keys-public-reader",
		"ValidatingAdmissionPolicy/keysmith-apicredential-status",
		"ValidatingAdmissionPolicyBinding/keysmith-apicredential-status",
		"ValidatingWebhookConfiguration/keysmith-validating-webhook",
		"Deployment/keysmith-controller-manager",
		"Deployment/keysmith-token-server",
		"Service/keysmith-webhook-service",
		"Service/keysmith-token-server",
		"Service/keysmith-manager-metrics",
		"PodDisruptionBudget/keysmith-controller-manager",
		"PodDisruptionBudget/keysmith-token-server",
	} {
		kind, name, _ := strings.Cut(want, "/")
		m.mustGet(t, kind, name)
	}
	for _, kind := range []string{"Secret", "Namespace", "Issuer", "Certificate", "ServiceMonitor", "PrometheusRule", "NetworkPolicy"} {
		if objs := m.ofKind(kind); len(objs) > 0 {
			t.Errorf("the default render has a %s (%s); it should have none", kind, objs[0].GetName())
		}
	}

	manager := m.mustGet(t, "Deployment", "keysmith-controller-manager")
	if r, _, _ := unstructured.NestedInt64(manager.Object, "spec", "replicas"); r != 2 {
		t.Errorf("manager replicas = %d, want 2", r)
	}
	for k, v := range map[string]string{"control-plane": "controller-manager", "app.kubernetes.io/name": "keysmith", "app.kubernetes.io/component": "manager"} {
		if got := manager.GetLabels()[k]; got != v {
			t.Errorf("manager Deployment label %s = %q, want %q", k, got, v)
		}
	}
	c := m.container(t, "keysmith-controller-manager")
	if got := stringsAt(c, "args"); !slices.Equal(got, wantManagerArgs) {
		t.Errorf("manager args:\n got %q\nwant %q", got, wantManagerArgs)
	}
	if got := stringsAt(c, "command"); !slices.Equal(got, []string{"/manager"}) {
		t.Errorf("manager command = %q", got)
	}
	checkPodNamespaceEnv(t, c)
	checkPorts(t, c, map[string]int64{"metrics": 8080, "health": 8081, "webhook": 9443})

	ts := m.mustGet(t, "Deployment", "keysmith-token-server")
	if r, _, _ := unstructured.NestedInt64(ts.Object, "spec", "replicas"); r != 2 {
		t.Errorf("token server replicas = %d, want 2", r)
	}
	tc := m.container(t, "keysmith-token-server")
	if got := stringsAt(tc, "args"); !slices.Equal(got, wantTokenServerArgs) {
		t.Errorf("token server args:\n got %q\nwant %q", got, wantTokenServerArgs)
	}
	checkPodNamespaceEnv(t, tc)
	checkPorts(t, tc, map[string]int64{"https": 8443})
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		if s, _, _ := unstructured.NestedString(tc, probe, "httpGet", "scheme"); s != "HTTPS" {
			t.Errorf("token server %s scheme = %q, want HTTPS", probe, s)
		}
	}
	spread, _, _ := unstructured.NestedSlice(ts.Object, "spec", "template", "spec", "topologySpreadConstraints")
	if len(spread) != 1 {
		t.Fatalf("token server topologySpreadConstraints = %v, want one", spread)
	}
	sc := spread[0].(map[string]any)
	sel, _, _ := unstructured.NestedStringMap(sc, "labelSelector", "matchLabels")
	if sc["topologyKey"] != "kubernetes.io/hostname" || sc["whenUnsatisfiable"] != "ScheduleAnyway" ||
		sel["app.kubernetes.io/component"] != "token-server" || sel["app.kubernetes.io/instance"] != releaseName {
		t.Errorf("token server topology spread = %v", sc)
	}

	checkService(t, m, "keysmith-webhook-service", "manager", 443, "webhook")
	checkService(t, m, "keysmith-token-server", "token-server", 443, "https")
	checkService(t, m, "keysmith-manager-metrics", "manager", 8080, "metrics")
	for _, name := range []string{"keysmith-controller-manager", "keysmith-token-server"} {
		pdb := m.mustGet(t, "PodDisruptionBudget", name)
		if v, _, _ := unstructured.NestedInt64(pdb.Object, "spec", "minAvailable"); v != 1 {
			t.Errorf("PDB %s minAvailable = %d, want 1", name, v)
		}
		// As config/ has it (docs/install.md, High availability): a replica that is not
		// ready, crash-looping, must not block a node drain.
		if p, _, _ := unstructured.NestedString(pdb.Object, "spec", "unhealthyPodEvictionPolicy"); p != "AlwaysAllow" {
			t.Errorf("PDB %s unhealthyPodEvictionPolicy = %q, want AlwaysAllow", name, p)
		}
		d := m.mustGet(t, "Deployment", name)
		surge, _, _ := unstructured.NestedFieldNoCopy(d.Object, "spec", "strategy", "rollingUpdate", "maxSurge")
		unavailable, _, _ := unstructured.NestedFieldNoCopy(d.Object, "spec", "strategy", "rollingUpdate", "maxUnavailable")
		if surge != int64(1) || unavailable != int64(0) {
			t.Errorf("Deployment %s rolls with maxSurge %v, maxUnavailable %v; want 1, 0", name, surge, unavailable)
		}
		dsel, _, _ := unstructured.NestedStringMap(d.Object, "spec", "selector", "matchLabels")
		psel, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels")
		if !reflect.DeepEqual(dsel, psel) {
			t.Errorf("PDB %s selects %v, its Deployment's pods are %v", name, psel, dsel)
		}
	}

	vwc := m.mustGet(t, "ValidatingWebhookConfiguration", "keysmith-validating-webhook")
	if _, ok := vwc.GetAnnotations()["cert-manager.io/inject-ca-from"]; ok {
		t.Error("without cert-manager the webhook configuration has the inject-ca-from annotation")
	}
	hooks, _, _ := unstructured.NestedSlice(vwc.Object, "webhooks")
	if len(hooks) != 3 {
		t.Fatalf("webhook configuration has %d webhooks, want 3 (apicredentials, apidefinitions, namespaces)", len(hooks))
	}
	for _, h := range hooks {
		h := h.(map[string]any)
		svc, _, _ := unstructured.NestedStringMap(h, "clientConfig", "service")
		if svc["name"] != "keysmith-webhook-service" || svc["namespace"] != namespace {
			t.Errorf("webhook %v calls service %v", h["name"], svc)
		}
		if h["failurePolicy"] != "Fail" || h["timeoutSeconds"] != int64(10) {
			t.Errorf("webhook %v: failurePolicy %v, timeoutSeconds %v; want Fail, 10", h["name"], h["failurePolicy"], h["timeoutSeconds"])
		}
	}

	vap := m.mustGet(t, "ValidatingAdmissionPolicy", "keysmith-apicredential-status")
	vars, _, _ := unstructured.NestedSlice(vap.Object, "spec", "variables")
	users := map[string]string{}
	for _, v := range vars {
		v := v.(map[string]any)
		users[v["name"].(string)] = v["expression"].(string)
	}
	if users["manager"] != "'system:serviceaccount:"+namespace+":keysmith-manager'" ||
		users["tokenServer"] != "'system:serviceaccount:"+namespace+":keysmith-token-server'" {
		t.Errorf("status policy identities = %q, %q", users["manager"], users["tokenServer"])
	}
}

func checkPodNamespaceEnv(t *testing.T, c map[string]any) {
	t.Helper()
	env, _, _ := unstructured.NestedSlice(c, "env")
	for _, e := range env {
		e := e.(map[string]any)
		if e["name"] == "POD_NAMESPACE" {
			if p, _, _ := unstructured.NestedString(e, "valueFrom", "fieldRef", "fieldPath"); p != "metadata.namespace" {
				t.Errorf("%s: POD_NAMESPACE from %q, want the downward API's metadata.namespace", c["name"], p)
			}
			return
		}
	}
	t.Errorf("%s: no POD_NAMESPACE in env %v", c["name"], env)
}

func checkPorts(t *testing.T, c map[string]any, want map[string]int64) {
	t.Helper()
	ports, _, _ := unstructured.NestedSlice(c, "ports")
	got := map[string]int64{}
	for _, p := range ports {
		p := p.(map[string]any)
		got[p["name"].(string)] = p["containerPort"].(int64)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: ports %v, want %v", c["name"], got, want)
	}
}

// checkService: the Service name selects the pods of component, on port with targetPort.
func checkService(t *testing.T, m *manifest, name, component string, port int64, target string) {
	t.Helper()
	svc := m.mustGet(t, "Service", name)
	sel, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
	if sel["app.kubernetes.io/component"] != component || sel["app.kubernetes.io/instance"] != releaseName {
		t.Errorf("Service %s selects %v, want the %s pods", name, sel, component)
	}
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	if len(ports) != 1 {
		t.Fatalf("Service %s has ports %v", name, ports)
	}
	p := ports[0].(map[string]any)
	if p["port"] != port || p["targetPort"] != target || p["name"] != target {
		t.Errorf("Service %s port %v, want %d -> %s named %s", name, p, port, target, target)
	}
}

// TestNamespaceEverywhere: every namespaced object is in the release namespace, every
// ServiceAccount subject names it, and config/'s namespaces appear nowhere in any render.
func TestNamespaceEverywhere(t *testing.T) {
	clusterScoped := map[string]bool{
		"CustomResourceDefinition": true, "ClusterRole": true, "ClusterRoleBinding": true,
		"ValidatingWebhookConfiguration": true, "ValidatingAdmissionPolicy": true,
		"ValidatingAdmissionPolicyBinding": true,
	}
	for _, file := range valuesFiles {
		m := mustRender(t, file, "")
		if strings.Contains(m.text, "keysmith-system") || strings.Contains(m.text, "namespace: system") {
			t.Errorf("%q: the render names config/'s namespace", file)
		}
		for _, o := range m.objs {
			if clusterScoped[o.GetKind()] != (o.GetNamespace() == "") || (o.GetNamespace() != "" && o.GetNamespace() != namespace) {
				t.Errorf("%q: %s %s is in namespace %q", file, o.GetKind(), o.GetName(), o.GetNamespace())
			}
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			for _, s := range subjects {
				s := s.(map[string]any)
				if s["kind"] == "ServiceAccount" && s["namespace"] != namespace {
					t.Errorf("%q: %s %s binds %v", file, o.GetKind(), o.GetName(), s)
				}
			}
			labels := o.GetLabels()
			if labels["app.kubernetes.io/instance"] != releaseName || labels["helm.sh/chart"] != "keysmith-0.1.0" || labels["app.kubernetes.io/managed-by"] != "Helm" {
				t.Errorf("%q: %s %s lacks the chart's labels: %v", file, o.GetKind(), o.GetName(), labels)
			}
		}
	}
}

// TestCRDToggles: crds.enabled=false drops the CRDs; crds.keep decides the resource policy.
func TestCRDToggles(t *testing.T) {
	if crds := mustRender(t, "", "crds: {enabled: false}").ofKind("CustomResourceDefinition"); len(crds) != 0 {
		t.Errorf("crds.enabled=false renders %d CRDs", len(crds))
	}
	for _, keep := range []bool{true, false} {
		crds := mustRender(t, "", fmt.Sprintf("crds: {keep: %t}", keep)).ofKind("CustomResourceDefinition")
		if len(crds) != 2 {
			t.Fatalf("crds.keep=%t renders %d CRDs, want 2", keep, len(crds))
		}
		for _, crd := range crds {
			policy, ok := crd.GetAnnotations()["helm.sh/resource-policy"]
			if keep != (ok && policy == "keep") {
				t.Errorf("crds.keep=%t: CRD %s has resource policy %q", keep, crd.GetName(), policy)
			}
			if crd.GetAnnotations()["controller-gen.kubebuilder.io/version"] == "" {
				t.Errorf("CRD %s lost its own annotations: %v", crd.GetName(), crd.GetAnnotations())
			}
		}
	}
}

// TestSchemaRejects: values.schema.json refuses unknown and mistyped values, naming the
// field.
func TestSchemaRejects(t *testing.T) {
	for _, tc := range []struct{ values, field string }{
		{"manager: {replica: 3}", "replica"},
		{`manager: {replicas: "two"}`, "/manager/replicas"},
		{"manager: {replicas: 0}", "/manager/replicas"},
		{"unknownTopLevel: true", "unknownTopLevel"},
		{"tokenServer: {pdb: {minAvaliable: 1}}", "minAvaliable"},
		{"image: {pullPolicy: Sometimes}", "/image/pullPolicy"},
		{"webhook: {failurePolicy: Maybe}", "/webhook/failurePolicy"},
		{"webhook: {timeoutSeconds: 60}", "/webhook/timeoutSeconds"},
		{`webhook: {timeoutSeconds: "10"}`, "/webhook/timeoutSeconds"},
		{"manager: {leaderElection: {leaseDuration: 15 seconds}}", "/manager/leaderElection/leaseDuration"},
		{"tokenServer: {tokenLifetime: 10}", "/tokenServer/tokenLifetime"},
		{"tokenServer: {tokenReviewClientCA: {configMap: Not_A_Name}}", "/tokenServer/tokenReviewClientCA/configMap"},
		{"tokenServer: {tokenReviewClientCA: {configMap: ca, key: a/b}}", "/tokenServer/tokenReviewClientCA/key"},
		{"manager: {maxConcurrentReconciles: 0}", "/manager/maxConcurrentReconciles"},
		{`manager: {maxConcurrentReconciles: "4"}`, "/manager/maxConcurrentReconciles"},
		{"crds: {enabled: yes please}", "/crds/enabled"},
		{"manager: {extraArgs: [--zap-log-level=debug, oops]}", "/manager/extraArgs/1"},
		{"manager: {resources: {request: {cpu: 1}}}", "request"},
		{"tokenServer: {tolerations: [{key: a, operater: Exists}]}", "operater"},
		{"networkPolicy: {metricsFrom: [{namespaceSelector: {}, podSelektor: {}}]}", "podSelektor"},
		{"global: {commonLabels: {team: 3}}", "/global/commonLabels/team"},
		{"manager: {affinity: {podAntiAffinity: {requiredDuringScheduling: []}}}", "requiredDuringScheduling"},
		{"manager: {extraEnv: [{name: A, valueFrom: {fieldRefs: {fieldPath: x}}}]}", "fieldRefs"},
		{"tokenServer: {topologySpreadConstraints: [{maxSkew: 1, topologyKey: k, whenUnsatisfiable: Sometimes}]}", "whenUnsatisfiable"},
		{"networkPolicy: {egress: [{too: []}]}", "too"},
	} {
		wantRenderError(t, tc.values, tc.field)
	}
	// And the values files themselves pass, as do these edge values.
	wantRenders(t,
		"manager: {replicas: 1, pdb: {minAvailable: 50%}}",
		"manager: {leaderElection: {leaseDuration: 1m30s}}",
		"webhook: {failurePolicy: Ignore, timeoutSeconds: 30}",
	)
}

// wantRenderError checks that rendering values fails with an error that contains want.
func wantRenderError(t *testing.T, values, want string) {
	t.Helper()
	_, err := render("", values)
	if err == nil {
		t.Errorf("%s: rendered; it should fail", values)
		return
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s: error does not say %q: %v", values, want, err)
	}
}

// wantRenders checks that each of values renders.
func wantRenders(t *testing.T, values ...string) {
	t.Helper()
	for _, v := range values {
		if _, err := render("", v); err != nil {
			t.Errorf("%s: %v", v, err)
		}
	}
}

// TestRenderGuards: values the schema cannot relate to each other fail the render with a
// message naming them: leader election timings client-go would refuse at start (every
// manager replica exiting, the fail-closed webhook refusing every write), and a
// PodDisruptionBudget that no node drain could ever satisfy.
func TestRenderGuards(t *testing.T) {
	for _, tc := range []struct{ values, want string }{
		{"manager: {leaderElection: {renewDeadline: 15s}}", "manager.leaderElection.renewDeadline (15s) must be less than manager.leaderElection.leaseDuration (15s)"},
		{"manager: {leaderElection: {leaseDuration: 1m, renewDeadline: 1m30s}}", "must be less than manager.leaderElection.leaseDuration (1m)"},
		{"manager: {leaderElection: {renewDeadline: 2400ms}}", "renewDeadline (2400ms) must be more than 1.2 × manager.leaderElection.retryPeriod (2s)"},
		{"manager: {replicas: 1}", "manager.pdb.minAvailable (1) must be less than manager.replicas (1)"},
		{"tokenServer: {replicas: 2, pdb: {minAvailable: 2}}", "tokenServer.pdb.minAvailable (2) must be less than tokenServer.replicas (2)"},
		{"tokenServer: {tokenLifetime: 2h}", "tokenServer.maxTokenLifetime (1h) must be at least tokenServer.tokenLifetime (2h)"},
		{"tokenServer: {maxTokenLifetime: 25h}", "tokenServer.maxTokenLifetime (25h) must be at most 24h"},
	} {
		wantRenderError(t, tc.values, tc.want)
	}
	wantRenders(t,
		"manager: {leaderElection: {leaseDuration: 1m, renewDeadline: 59s500ms, retryPeriod: 5s}}",
		"manager: {leaderElection: {renewDeadline: 2401ms}}",
		"manager: {replicas: 1, pdb: {enabled: false}}",
		"manager: {replicas: 3, pdb: {minAvailable: 2}}",
		"tokenServer: {enabled: false, replicas: 1}",
		"tokenServer: {tokenLifetime: 1h, maxTokenLifetime: 1h}",
		"tokenServer: {maxTokenLifetime: 24h}",
	)
}

// TestCertManager: certManager.enabled renders the Issuers and Certificates of the contract,
// the CA injection and --serving-certs=false.
func TestCertManager(t *testing.T) {
	m := mustRender(t, "ci/certmanager-values.yaml", "")
	m.mustGet(t, "Issuer", "keysmith-selfsigned")
	ca := m.mustGet(t, "Certificate", "keysmith-ca")
	if isCA, _, _ := unstructured.NestedBool(ca.Object, "spec", "isCA"); !isCA {
		t.Error("Certificate keysmith-ca is not a CA")
	}
	if ref, _, _ := unstructured.NestedString(ca.Object, "spec", "issuerRef", "name"); ref != "keysmith-selfsigned" {
		t.Errorf("keysmith-ca issued by %q", ref)
	}
	caIssuer := m.mustGet(t, "Issuer", "keysmith-ca")
	if s, _, _ := unstructured.NestedString(caIssuer.Object, "spec", "ca", "secretName"); s == "" {
		t.Error("Issuer keysmith-ca has no CA secret")
	}
	for name, svc := range map[string]string{"keysmith-webhook-server-cert": "keysmith-webhook-service", "keysmith-token-server-tls": "keysmith-token-server"} {
		c := m.mustGet(t, "Certificate", name)
		if s, _, _ := unstructured.NestedString(c.Object, "spec", "secretName"); s != name {
			t.Errorf("Certificate %s writes Secret %q", name, s)
		}
		if ref, _, _ := unstructured.NestedString(c.Object, "spec", "issuerRef", "name"); ref != "keysmith-ca" {
			t.Errorf("Certificate %s issued by %q", name, ref)
		}
		want := []string{svc + "." + namespace + ".svc", svc + "." + namespace + ".svc.cluster.local"}
		if got := stringsAt(c.Object, "spec", "dnsNames"); !slices.Equal(got, want) {
			t.Errorf("Certificate %s dnsNames %q, want %q", name, got, want)
		}
	}
	vwc := m.mustGet(t, "ValidatingWebhookConfiguration", "keysmith-validating-webhook")
	if got := vwc.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != namespace+"/keysmith-webhook-server-cert" {
		t.Errorf("inject-ca-from = %q", got)
	}
	args := stringsAt(m.container(t, "keysmith-controller-manager"), "args")
	want := slices.Clone(wantManagerArgs)
	want[slices.Index(want, "--serving-certs=true")] = "--serving-certs=false"
	if !slices.Equal(args, want) {
		t.Errorf("manager args with cert-manager:\n got %q\nwant %q", args, want)
	}
}

// TestPodSecurity: in every values file, every pod and container of every Deployment is
// restricted, and no pod runs as root or with the host's namespaces.
func TestPodSecurity(t *testing.T) {
	for _, file := range valuesFiles {
		m := mustRender(t, file, "")
		deployments := m.ofKind("Deployment")
		if len(deployments) != 2 {
			t.Fatalf("%q: %d Deployments, want 2", file, len(deployments))
		}
		for _, d := range deployments {
			pod, _, _ := unstructured.NestedMap(d.Object, "spec", "template", "spec")
			where := fmt.Sprintf("%q: Deployment %s", file, d.GetName())
			for _, host := range []string{"hostNetwork", "hostPID", "hostIPC"} {
				if pod[host] == true {
					t.Errorf("%s: %s", where, host)
				}
			}
			if v, _, _ := unstructured.NestedBool(pod, "securityContext", "runAsNonRoot"); !v {
				t.Errorf("%s: pod securityContext.runAsNonRoot is not true", where)
			}
			if v, _, _ := unstructured.NestedString(pod, "securityContext", "seccompProfile", "type"); v != "RuntimeDefault" {
				t.Errorf("%s: pod seccompProfile %q", where, v)
			}
			if uid, ok, _ := unstructured.NestedInt64(pod, "securityContext", "runAsUser"); ok && uid == 0 {
				t.Errorf("%s: pod runs as root", where)
			}
			var containers []any
			for _, field := range []string{"initContainers", "containers", "ephemeralContainers"} {
				cs, _, _ := unstructured.NestedSlice(pod, field)
				containers = append(containers, cs...)
			}
			for _, c := range containers {
				c := c.(map[string]any)
				where := fmt.Sprintf("%s container %s", where, c["name"])
				sc, _, _ := unstructured.NestedMap(c, "securityContext")
				if sc["allowPrivilegeEscalation"] != false || sc["readOnlyRootFilesystem"] != true || sc["runAsNonRoot"] != true || sc["privileged"] == true {
					t.Errorf("%s: securityContext %v", where, sc)
				}
				if uid, ok, _ := unstructured.NestedInt64(sc, "runAsUser"); ok && uid == 0 {
					t.Errorf("%s: runs as root", where)
				}
				if drop := stringsAt(sc, "capabilities", "drop"); !slices.Equal(drop, []string{"ALL"}) {
					t.Errorf("%s: drops capabilities %q, want [ALL]", where, drop)
				}
				if add := stringsAt(sc, "capabilities", "add"); len(add) > 0 {
					t.Errorf("%s: adds capabilities %q", where, add)
				}
				if p, _, _ := unstructured.NestedString(sc, "seccompProfile", "type"); p != "" && p != "RuntimeDefault" {
					t.Errorf("%s: seccompProfile %q", where, p)
				}
			}
		}
	}
}

// TestSecretVolumes: every Secret volume of every pod maps only tls.crt and tls.key, so no
// pod sees the CA's key the manager keeps in the same Secret.
func TestSecretVolumes(t *testing.T) {
	want := map[string]string{
		"keysmith-controller-manager": "keysmith-webhook-server-cert",
		"keysmith-token-server":       "keysmith-token-server-tls",
	}
	for _, file := range valuesFiles {
		m := mustRender(t, file, "")
		for _, d := range m.ofKind("Deployment") {
			vols, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "volumes")
			var secrets []string
			for _, v := range vols {
				v := v.(map[string]any)
				secret, ok, _ := unstructured.NestedMap(v, "secret")
				if !ok {
					continue
				}
				secrets = append(secrets, secret["secretName"].(string))
				// The manager creates its own serving certificate Secret: a required volume
				// would keep its first pod from starting, and so the Secret from existing.
				// With cert-manager it is required: the pod waits for cert-manager's Secret
				// (as config/certmanager's does) rather than start without a certificate.
				certManager := m.get("Certificate", "keysmith-webhook-server-cert") != nil
				if d.GetName() == "keysmith-controller-manager" && secret["optional"] != !certManager {
					t.Errorf("%q: the manager's Secret volume %s has optional %v, want %v (cert-manager %v)", file, secret["secretName"], secret["optional"], !certManager, certManager)
				}
				items, _, _ := unstructured.NestedSlice(secret, "items")
				var got []string
				for _, it := range items {
					it := it.(map[string]any)
					if it["key"] != it["path"] {
						t.Errorf("%q: %s maps %v to %v", file, d.GetName(), it["key"], it["path"])
					}
					got = append(got, it["key"].(string))
				}
				if !slices.Equal(got, []string{"tls.crt", "tls.key"}) {
					t.Errorf("%q: %s mounts keys %q of Secret %s, want only tls.crt and tls.key", file, d.GetName(), got, secret["secretName"])
				}
			}
			if !slices.Equal(secrets, []string{want[d.GetName()]}) {
				t.Errorf("%q: %s mounts Secrets %q, want %s", file, d.GetName(), secrets, want[d.GetName()])
			}
		}
	}
}

// TestToggles: the optional objects come and go with their values.
func TestToggles(t *testing.T) {
	off := mustRender(t, "", "tokenServer: {enabled: false}")
	for _, kind := range []string{"Deployment", "Service", "PodDisruptionBudget"} {
		if off.get(kind, "keysmith-token-server") != nil {
			t.Errorf("tokenServer.enabled=false renders %s keysmith-token-server", kind)
		}
	}
	for _, a := range stringsAt(off.container(t, "keysmith-controller-manager"), "args") {
		if strings.HasPrefix(a, "--token-url") {
			t.Errorf("without a token server the manager gets %s", a)
		}
	}
	// The token server's RBAC stays: sidecars and an external token server use it.
	off.mustGet(t, "ClusterRole", "keysmith-token-server")

	noPDB := mustRender(t, "", "manager: {pdb: {enabled: false}}\ntokenServer: {pdb: {enabled: false}}")
	if pdbs := noPDB.ofKind("PodDisruptionBudget"); len(pdbs) != 0 {
		t.Errorf("pdb.enabled=false renders %d PDBs", len(pdbs))
	}

	tuned := mustRender(t, "", `
image: {repository: registry.example.com/keysmith, tag: v9.9.9, pullPolicy: Always}
manager:
  replicas: 3
  leaderElection: {leaseDuration: 30s, renewDeadline: 20s, retryPeriod: 4s}
  extraArgs: [--zap-log-level=debug]
tokenServer: {replicas: 4, tokenLifetime: 5m, usageInterval: 1m, extraArgs: [--trusted-proxies=10.0.0.0/8]}
webhook: {failurePolicy: Ignore, timeoutSeconds: 5}
`)
	mc := tuned.container(t, "keysmith-controller-manager")
	if mc["image"] != "registry.example.com/keysmith:v9.9.9" || mc["imagePullPolicy"] != "Always" {
		t.Errorf("manager image %v %v", mc["image"], mc["imagePullPolicy"])
	}
	margs := stringsAt(mc, "args")
	for _, want := range []string{"--leader-elect-lease-duration=30s", "--leader-elect-renew-deadline=20s", "--leader-elect-retry-period=4s"} {
		if !slices.Contains(margs, want) {
			t.Errorf("manager args %q lack %s", margs, want)
		}
	}
	if margs[len(margs)-1] != "--zap-log-level=debug" {
		t.Errorf("manager extraArgs not last: %q", margs)
	}
	targs := stringsAt(tuned.container(t, "keysmith-token-server"), "args")
	for _, want := range []string{"--token-lifetime=5m", "--usage-interval=1m", "--trusted-proxies=10.0.0.0/8"} {
		if !slices.Contains(targs, want) {
			t.Errorf("token server args %q lack %s", targs, want)
		}
	}
	if r, _, _ := unstructured.NestedInt64(tuned.mustGet(t, "Deployment", "keysmith-token-server").Object, "spec", "replicas"); r != 4 {
		t.Errorf("token server replicas %d, want 4", r)
	}
	hooks, _, _ := unstructured.NestedSlice(tuned.mustGet(t, "ValidatingWebhookConfiguration", "keysmith-validating-webhook").Object, "webhooks")
	for _, h := range hooks {
		h := h.(map[string]any)
		if h["failurePolicy"] != "Ignore" || h["timeoutSeconds"] != int64(5) {
			t.Errorf("webhook %v: %v %v", h["name"], h["failurePolicy"], h["timeoutSeconds"])
		}
	}

	// The TokenReview callers' CA: the flag, the mount and the ConfigMap's key, or none.
	withCA := mustRender(t, "", "tokenServer: {tokenReviewClientCA: {configMap: apiserver-webhook-ca, key: bundle.pem}}")
	tc := withCA.container(t, "keysmith-token-server")
	if !slices.Contains(stringsAt(tc, "args"), "--tokenreview-client-ca-file=/etc/keysmith/tokenreview-ca/ca.crt") {
		t.Errorf("token server args %q lack --tokenreview-client-ca-file", stringsAt(tc, "args"))
	}
	mounts, _, _ := unstructured.NestedSlice(tc, "volumeMounts")
	if !slices.ContainsFunc(mounts, func(m any) bool {
		m0 := m.(map[string]any)
		return m0["name"] == "tokenreview-ca" && m0["mountPath"] == "/etc/keysmith/tokenreview-ca" && m0["readOnly"] == true
	}) {
		t.Errorf("token server mounts %v, want tokenreview-ca read-only at /etc/keysmith/tokenreview-ca", mounts)
	}
	vols, _, _ := unstructured.NestedSlice(withCA.mustGet(t, "Deployment", "keysmith-token-server").Object, "spec", "template", "spec", "volumes")
	if !slices.ContainsFunc(vols, func(v any) bool {
		cm, _, _ := unstructured.NestedMap(v.(map[string]any), "configMap")
		items, _, _ := unstructured.NestedSlice(cm, "items")
		return cm["name"] == "apiserver-webhook-ca" && len(items) == 1 &&
			items[0].(map[string]any)["key"] == "bundle.pem" && items[0].(map[string]any)["path"] == "ca.crt"
	}) {
		t.Errorf("token server volumes %v, want ConfigMap apiserver-webhook-ca's bundle.pem as ca.crt", vols)
	}
	if args := stringsAt(mustRender(t, "", "tokenServer: {workloadIdentityReview: true}").container(t, "keysmith-token-server"), "args"); !slices.Contains(args, "--workload-identity-review") {
		t.Errorf("tokenServer.workloadIdentityReview=true: token server args %q lack --workload-identity-review", args)
	}
	// Values of an older chart (helm upgrade --reuse-values) have no tokenReviewClientCA
	// and no workloadIdentityReview.
	for _, overrides := range []string{"", "tokenServer: {tokenReviewClientCA: null, workloadIdentityReview: null}"} {
		for _, a := range stringsAt(mustRender(t, "", overrides).container(t, "keysmith-token-server"), "args") {
			if strings.HasPrefix(a, "--tokenreview-client-ca-file") || a == "--workload-identity-review" {
				t.Errorf("with values %q the token server gets %s", overrides, a)
			}
		}
	}

	def := mustRender(t, "", "")
	if c := def.container(t, "keysmith-controller-manager"); c["image"] != "keysmith:0.1.0" {
		t.Errorf("default image %v, want keysmith:<appVersion>", c["image"])
	}
}

// TestAllOn: the all-on values render the monitoring objects and network policies as
// documented in the chart's README.
func TestAllOn(t *testing.T) {
	m := mustRender(t, "ci/all-on-values.yaml", "")
	mgrSM := m.mustGet(t, "ServiceMonitor", "keysmith-controller-manager")
	eps, _, _ := unstructured.NestedSlice(mgrSM.Object, "spec", "endpoints")
	if len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" {
		t.Errorf("manager ServiceMonitor endpoints %v", eps)
	}
	checkSelects(t, m, mgrSM, "keysmith-manager-metrics")

	tsSM := m.mustGet(t, "ServiceMonitor", "keysmith-token-server")
	eps, _, _ = unstructured.NestedSlice(tsSM.Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("token server ServiceMonitor endpoints %v", eps)
	}
	ep := eps[0].(map[string]any)
	// The manager's CA comes from its public ConfigMap: the Secret also holds ca.key, which
	// neither Prometheus nor its operator needs to read.
	ca, _, _ := unstructured.NestedMap(ep, "tlsConfig", "ca")
	server, _, _ := unstructured.NestedString(ep, "tlsConfig", "serverName")
	wantCA := map[string]any{"configMap": map[string]any{"name": "keysmith-token-server-ca", "key": "ca.crt"}}
	if ep["port"] != "https" || ep["scheme"] != "https" || ep["path"] != "/metrics" ||
		!reflect.DeepEqual(ca, wantCA) || server != "keysmith-token-server."+namespace+".svc" {
		t.Errorf("token server ServiceMonitor endpoint %v", ep)
	}
	// cert-manager's Secret holds no CA key (that is keysmith-ca's), and no ConfigMap exists.
	cm := mustRender(t, "ci/all-on-values.yaml", "certManager: {enabled: true}")
	cmEps, _, _ := unstructured.NestedSlice(cm.mustGet(t, "ServiceMonitor", "keysmith-token-server").Object, "spec", "endpoints")
	if ca, _, _ := unstructured.NestedMap(cmEps[0].(map[string]any), "tlsConfig", "ca"); !reflect.DeepEqual(ca,
		map[string]any{"secret": map[string]any{"name": "keysmith-token-server-tls", "key": "ca.crt"}}) {
		t.Errorf("with cert-manager, token server ServiceMonitor CA %v, want the Secret's ca.crt", ca)
	}
	if skip, _, _ := unstructured.NestedBool(ep, "tlsConfig", "insecureSkipVerify"); skip {
		t.Error("token server ServiceMonitor skips certificate verification")
	}
	checkSelects(t, m, tsSM, "keysmith-token-server")
	for _, sm := range []*unstructured.Unstructured{mgrSM, tsSM} {
		if sm.GetLabels()["release"] != "prometheus" {
			t.Errorf("ServiceMonitor %s lacks serviceMonitor.labels: %v", sm.GetName(), sm.GetLabels())
		}
	}

	mgrNP := m.mustGet(t, "NetworkPolicy", "keysmith-controller-manager")
	ingress, _, _ := unstructured.NestedSlice(mgrNP.Object, "spec", "ingress")
	rules := map[string][]any{}
	for _, r := range ingress {
		r := r.(map[string]any)
		ports, _, _ := unstructured.NestedSlice(r, "ports")
		from, _, _ := unstructured.NestedSlice(r, "from")
		rules[fmt.Sprint(ports[0].(map[string]any)["port"])] = from
	}
	if from, ok := rules["webhook"]; !ok || len(from) != 0 {
		t.Errorf("manager NetworkPolicy: the webhook port is not open to all: %v", rules)
	}
	if from := rules["metrics"]; len(from) != 1 {
		t.Errorf("manager NetworkPolicy: metrics from %v, want networkPolicy.metricsFrom", from)
	}
	if types := stringsAt(mgrNP.Object, "spec", "policyTypes"); !slices.Equal(types, []string{"Ingress", "Egress"}) {
		t.Errorf("with networkPolicy.egress set, policyTypes %q", types)
	}
	tsNP := m.mustGet(t, "NetworkPolicy", "keysmith-token-server")
	ingress, _, _ = unstructured.NestedSlice(tsNP.Object, "spec", "ingress")
	if len(ingress) != 2 {
		t.Errorf("token server NetworkPolicy ingress %v, want clients and metrics", ingress)
	}

	// Enabled without egress rules: ingress only, egress unrestricted.
	open := mustRender(t, "", "networkPolicy: {enabled: true}")
	for _, np := range open.ofKind("NetworkPolicy") {
		if types := stringsAt(np.Object, "spec", "policyTypes"); !slices.Equal(types, []string{"Ingress"}) {
			t.Errorf("NetworkPolicy %s without egress rules restricts %q", np.GetName(), types)
		}
		ingress, _, _ := unstructured.NestedSlice(np.Object, "spec", "ingress")
		for _, r := range ingress {
			if _, ok := r.(map[string]any)["from"]; ok {
				t.Errorf("NetworkPolicy %s: empty peer lists should allow all, got %v", np.GetName(), r)
			}
		}
	}
}

// checkSelects: the ServiceMonitor sm selects exactly the Service name among the render's
// Services.
func checkSelects(t *testing.T, m *manifest, sm *unstructured.Unstructured, name string) {
	t.Helper()
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	var selected []string
	for _, svc := range m.ofKind("Service") {
		labels := svc.GetLabels()
		match := true
		for k, v := range sel {
			if labels[k] != v {
				match = false
			}
		}
		if match {
			selected = append(selected, svc.GetName())
		}
	}
	// The manager's webhook Service carries the same labels; it has no metrics port, so
	// the ServiceMonitor's port name picks only the metrics Service.
	if !slices.Contains(selected, name) {
		t.Errorf("ServiceMonitor %s selects Services %q, not %s", sm.GetName(), selected, name)
	}
}

// TestSameObjectsAsInstaller: the objects the chart copies from config/ are, but for
// metadata, the ones of dist/install.yaml (config/default) for a release in its namespace:
// one source of truth, whichever way keysmith is installed.
func TestSameObjectsAsInstaller(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "dist", "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	installer, err := decode(data)
	if err != nil {
		t.Fatal(err)
	}
	m, err := renderIn("keysmith-system", "", "")
	if err != nil {
		t.Fatal(err)
	}
	copied := map[string]bool{
		"CustomResourceDefinition": true, "ServiceAccount": true, "ClusterRole": true,
		"ClusterRoleBinding": true, "Role": true, "RoleBinding": true,
		"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true,
		"ValidatingWebhookConfiguration": true,
	}
	compared := 0
	for _, want := range installer {
		if !copied[want.GetKind()] {
			continue
		}
		got := m.get(want.GetKind(), want.GetName())
		if got == nil {
			t.Errorf("the chart lacks %s %s of dist/install.yaml", want.GetKind(), want.GetName())
			continue
		}
		compared++
		a, b := withoutMetadata(want), withoutMetadata(got)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s %s differs from dist/install.yaml:\nchart:     %v\ninstaller: %v", want.GetKind(), want.GetName(), b, a)
		}
		if want.GetNamespace() != got.GetNamespace() {
			t.Errorf("%s %s: namespace %q, dist/install.yaml %q", want.GetKind(), want.GetName(), got.GetNamespace(), want.GetNamespace())
		}
	}
	for _, o := range m.objs {
		if copied[o.GetKind()] && !slices.ContainsFunc(installer, func(u *unstructured.Unstructured) bool {
			return u.GetKind() == o.GetKind() && u.GetName() == o.GetName()
		}) {
			t.Errorf("the chart has %s %s, dist/install.yaml does not", o.GetKind(), o.GetName())
		}
	}
	t.Logf("%d objects compared with dist/install.yaml", compared)
}

// withoutMetadata returns obj's content but its metadata (the chart's labels and
// annotations differ by design).
// TestSameWorkloadsAsInstaller: the objects the chart writes itself, not copies, agree
// with config/'s in what decides behaviour: the PodDisruptionBudgets' specs (but the
// selector's labels), the Services' ports, and each Deployment container's command,
// env, volumes and mounts. (The args differ on purpose: the chart also passes the leader
// election timings, with the same defaults; TestDefaultRender checks them.)
func TestSameWorkloadsAsInstaller(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "dist", "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	installer, err := decode(data)
	if err != nil {
		t.Fatal(err)
	}
	m, err := renderIn("keysmith-system", "", "")
	if err != nil {
		t.Fatal(err)
	}
	same := func(kind, name, what string, want, got any) {
		t.Helper()
		if !reflect.DeepEqual(want, got) {
			t.Errorf("%s %s: %s differ from dist/install.yaml:\nchart:     %v\ninstaller: %v", kind, name, what, got, want)
		}
	}
	compared := 0
	for _, want := range installer {
		got := m.get(want.GetKind(), want.GetName())
		switch want.GetKind() {
		case "PodDisruptionBudget", "Service", "Deployment":
			if got == nil {
				t.Errorf("the chart lacks %s %s of dist/install.yaml", want.GetKind(), want.GetName())
				continue
			}
			compared++
		}
		switch want.GetKind() {
		case "PodDisruptionBudget":
			w, _, _ := unstructured.NestedMap(want.Object, "spec")
			g, _, _ := unstructured.NestedMap(got.Object, "spec")
			delete(w, "selector")
			delete(g, "selector")
			same(want.GetKind(), want.GetName(), "specs", w, g)
		case "Service":
			ports := func(o *unstructured.Unstructured) []any {
				ps, _, _ := unstructured.NestedSlice(o.Object, "spec", "ports")
				for _, p := range ps {
					if p := p.(map[string]any); p["protocol"] == nil {
						p["protocol"] = "TCP" // the API server's default
					}
				}
				return ps
			}
			same(want.GetKind(), want.GetName(), "ports", ports(want), ports(got))
		case "Deployment":
			for _, field := range []string{"command", "env", "volumeMounts"} {
				w, _, _ := unstructured.NestedFieldNoCopy(firstContainer(want), field)
				g, _, _ := unstructured.NestedFieldNoCopy(firstContainer(got), field)
				same(want.GetKind(), want.GetName(), "containers' "+field, w, g)
			}
			w, _, _ := unstructured.NestedFieldNoCopy(want.Object, "spec", "template", "spec", "volumes")
			g, _, _ := unstructured.NestedFieldNoCopy(got.Object, "spec", "template", "spec", "volumes")
			same(want.GetKind(), want.GetName(), "volumes", w, g)
		}
	}
	if compared != 7 {
		t.Errorf("compared %d Deployments, Services and PDBs with dist/install.yaml, want 7", compared)
	}
}

// firstContainer is the first container of a Deployment's pod template.
func firstContainer(d *unstructured.Unstructured) map[string]any {
	cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if len(cs) == 0 {
		return nil
	}
	return cs[0].(map[string]any)
}

func withoutMetadata(obj *unstructured.Unstructured) map[string]any {
	c := obj.DeepCopy().Object
	delete(c, "metadata")
	return c
}
