package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// repoRoot is the repository root, two directories up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestGeneratedFilesAreCurrent: the committed chart files are what chartgen generates from
// config/, docs/admission.md and values.yaml now (the drift check, without git).
func TestGeneratedFilesAreCurrent(t *testing.T) {
	root := repoRoot(t)
	files, err := generate(root)
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range files {
		got, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Errorf("%s: %v (run make manifests)", rel, err)
			continue
		}
		if string(got) != string(want) {
			t.Errorf("%s is not what hack/chartgen generates (run make manifests)", rel)
		}
	}
	crds, err := filepath.Glob(filepath.Join(root, chartDir, "templates", "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range crds {
		rel, _ := filepath.Rel(root, path)
		if _, ok := files[filepath.ToSlash(rel)]; !ok {
			t.Errorf("%s is no longer generated (run make manifests)", rel)
		}
	}
}

// kustomization writes a kustomize directory holding the resources (one file) into a
// temporary directory and returns it.
func kustomization(t *testing.T, resources string) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("kustomization.yaml", "resources:\n- objects.yaml\n")
	write("objects.yaml", resources)
	return dir
}

func renderTemp(t *testing.T, resources string, copy []string) ([]object, error) {
	t.Helper()
	dir := kustomization(t, resources)
	return renderDir(filepath.Dir(dir), filepath.Base(dir), copy, kindsHandWritten)
}

const roleAndBinding = `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: r
  namespace: system
  labels:
    app.kubernetes.io/name: keysmith
    app.kubernetes.io/component: manager
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: r
  namespace: system
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}
subjects:
- kind: ServiceAccount
  name: keysmith-manager
  namespace: system
- kind: Group
  name: auditors
`

// TestSubstitutesNamespaceAndLabels: the object's and the ServiceAccount subject's
// namespace become the release's, the chart's labels are added and the object's own kept.
func TestSubstitutesNamespaceAndLabels(t *testing.T) {
	objs, err := renderTemp(t, roleAndBinding, kindsRBAC)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("%d objects, want 2", len(objs))
	}
	role, binding := objs[0].text, objs[1].text
	for _, want := range []string{
		"  namespace: {{ .Release.Namespace }}\n",
		"    {{- include \"keysmith.labels\" . | nindent 4 }}\n",
		"    app.kubernetes.io/component: manager\n",
	} {
		if !strings.Contains(role, want) {
			t.Errorf("the Role template lacks %q:\n%s", want, role)
		}
	}
	if strings.Contains(role, "app.kubernetes.io/name") {
		t.Errorf("the Role keeps config/'s app.kubernetes.io/name beside the chart's:\n%s", role)
	}
	if n := strings.Count(binding, "namespace: {{ .Release.Namespace }}"); n != 2 {
		t.Errorf("the RoleBinding has %d release namespaces, want 2 (object and subject):\n%s", n, binding)
	}
	if strings.Contains(binding, "system") {
		t.Errorf("config/'s namespace survives:\n%s", binding)
	}
}

// TestRefusesTemplateActionInSource: a source with "{{" would be executed by Helm.
func TestRefusesTemplateActionInSource(t *testing.T) {
	src := strings.Replace(roleAndBinding, "name: auditors", "name: '{{ .Release.Name }}'", 1)
	if _, err := renderTemp(t, src, kindsRBAC); err == nil || !strings.Contains(err.Error(), "{{") {
		t.Errorf("a source with {{ was copied: %v", err)
	}
}

// TestRefusesSurvivingNamespace: config/'s namespace anywhere but the substituted fields
// fails the generation.
func TestRefusesSurvivingNamespace(t *testing.T) {
	for name, src := range map[string]string{
		"user subject":     strings.Replace(roleAndBinding, "kind: Group\n  name: auditors", "kind: User\n  name: system:serviceaccount:keysmith-system:other", 1),
		"label value":      strings.Replace(roleAndBinding, "component: manager", "component: system", 1),
		"service DNS name": strings.Replace(roleAndBinding, "resources: [secrets]", "resources: [secrets]\n  resourceNames: [keysmith-token-server.system.svc]", 1),
	} {
		if _, err := renderTemp(t, src, kindsRBAC); err == nil || !strings.Contains(err.Error(), "survives") {
			t.Errorf("%s: %v, want a surviving namespace error", name, err)
		}
	}
}

// TestRefusesUnknownKind: an object of a kind chartgen does not place fails, so it cannot
// go missing from the chart.
func TestRefusesUnknownKind(t *testing.T) {
	src := roleAndBinding + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: system}\n"
	if _, err := renderTemp(t, src, kindsRBAC); err == nil || !strings.Contains(err.Error(), "ConfigMap") {
		t.Errorf("a ConfigMap in an RBAC directory: %v", err)
	}
	// Deployments and Services are the chart's own templates: skipped, not copied.
	src = roleAndBinding + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: system}\nspec: {ports: [{port: 1}]}\n"
	objs, err := renderTemp(t, src, kindsRBAC)
	if err != nil || len(objs) != 2 {
		t.Errorf("a Service beside RBAC: %d objects, %v", len(objs), err)
	}
}

const webhookConfig = `apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: w
webhooks:
- name: a.example.com
  admissionReviewVersions: [v1]
  clientConfig:
    service: {name: svc, namespace: system, path: /a}
  failurePolicy: Fail
  sideEffects: None
  timeoutSeconds: 10
`

// TestWebhookValues: the webhook's failurePolicy and timeoutSeconds come from the values,
// its service from the release namespace, and the CA injection only with cert-manager.
func TestWebhookValues(t *testing.T) {
	objs, err := renderTemp(t, webhookConfig, kindsWebhook)
	if err != nil {
		t.Fatal(err)
	}
	text := objs[0].text
	for _, want := range []string{
		"failurePolicy: {{ .Values.webhook.failurePolicy }}\n",
		"timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}\n",
		"      namespace: {{ .Release.Namespace }}\n",
		"  {{- if .Values.certManager.enabled }}\n  annotations:\n    cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/keysmith-webhook-server-cert\n  {{- end }}\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the webhook template lacks %q:\n%s", want, text)
		}
	}
}

// TestValueDocs: every value needs a `# --` description; documented maps are one row.
func TestValueDocs(t *testing.T) {
	docs, err := valueDocs([]byte(`
a:
  # -- The b.
  # Continued.
  b: 1
  # -- A documented map.
  c:
    d: x
# -- A list.
e: []
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []valueDoc{
		{"a.b", "int", "1", "The b. Continued."},
		{"a.c", "object", `{"d":"x"}`, "A documented map."},
		{"e", "list", "[]", "A list."},
	}
	if len(docs) != len(want) {
		t.Fatalf("docs %v, want %v", docs, want)
	}
	for i := range want {
		if docs[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, docs[i], want[i])
		}
	}
	if _, err := valueDocs([]byte("a:\n  # plain comment\n  b: 1\n")); err == nil || !strings.Contains(err.Error(), "a.b") {
		t.Errorf("an undocumented value: %v", err)
	}
	if _, err := valueDocs([]byte("# -- ok\na: {}\nempty: {}\n")); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("an undocumented empty map: %v", err)
	}
}

const statusPolicy = `apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: p
spec:
  variables:
  - name: manager
    expression: "'system:serviceaccount:keysmith-system:keysmith-manager'"
  validations:
  - expression: request.userInfo.username == variables.manager
`

// TestPolicyIdentities: the service account user names of the policy's variables move to
// the release namespace; the same name anywhere else fails the generation.
func TestPolicyIdentities(t *testing.T) {
	objs, err := renderTemp(t, statusPolicy, kindsPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"'system:serviceaccount:{{ .Release.Namespace }}:keysmith-manager'"`; !strings.Contains(objs[0].text, want) {
		t.Errorf("the policy template lacks %s:\n%s", want, objs[0].text)
	}
	src := strings.Replace(statusPolicy, "== variables.manager", "== 'system:serviceaccount:keysmith-system:keysmith-manager'", 1)
	if _, err := renderTemp(t, src, kindsPolicy); err == nil || !strings.Contains(err.Error(), "survives") {
		t.Errorf("a user name outside the variables: %v, want a surviving namespace error", err)
	}
}
