package argocd

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	kstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// healthTests is the format of Argo CD's health_test.yaml.
type healthTests struct {
	Tests []healthTest `json:"tests"`
}

type healthTest struct {
	InputPath    string       `json:"inputPath"`
	HealthStatus HealthStatus `json:"healthStatus"`
}

// kstatusFor is the kstatus verdict that agrees with each Argo CD verdict: the same object
// must let `argocd app wait --health` and Flux's wait finish the same way.
var kstatusFor = map[string]kstatus.Status{
	StatusHealthy:     kstatus.CurrentStatus,
	StatusDegraded:    kstatus.FailedStatus,
	StatusProgressing: kstatus.InProgressStatus,
}

// kstatusDiffers lists the testdata where kstatus and the Argo CD check disagree on
// purpose, with the kstatus verdict and why. keysmith never writes these states once it has
// reconciled a credential.
var kstatusDiffers = map[string]struct {
	kstatus kstatus.Status
	why     string
}{
	"iam.keysmith.dev/APICredential/testdata/progressing_noStatus.yaml": {kstatus.CurrentStatus,
		"kstatus reads an object without a Ready condition as Current; Argo CD waits for keysmith's first status"},
	"iam.keysmith.dev/APICredential/testdata/progressing_emptyStatus.yaml": {kstatus.CurrentStatus,
		"kstatus reads an object without a Ready condition as Current; Argo CD waits for keysmith's first status"},
	"iam.keysmith.dev/APICredential/testdata/degraded_readyFalse_notStalled.yaml": {kstatus.InProgressStatus,
		"kstatus reads Ready=False without Stalled as InProgress; the Argo CD check fails safe, never Healthy or waiting forever"},
}

// verdicts is, for each Ready reason, what issue 9 requires Argo CD and kstatus (Flux) to
// read from a credential with that reason, and the testdata that shows it. It is checked
// apart from health_test.yaml, so a wrong expectation there cannot hide a wrong verdict.
var verdicts = []struct {
	reason  string
	file    string
	argo    string
	kstatus kstatus.Status
}{
	{iamv1alpha1.ReasonIssued, "testdata/healthy_issued.yaml", StatusHealthy, kstatus.CurrentStatus},
	{iamv1alpha1.ReasonInactive, "testdata/healthy_inactive.yaml", StatusHealthy, kstatus.CurrentStatus},
	{iamv1alpha1.ReasonExpired, "testdata/healthy_expired.yaml", StatusHealthy, kstatus.CurrentStatus},
	{iamv1alpha1.ReasonInvalidSpec, "testdata/degraded_invalidSpec.yaml", StatusDegraded, kstatus.FailedStatus},
	{iamv1alpha1.ReasonSecretConflict, "testdata/degraded_secretConflict.yaml", StatusDegraded, kstatus.FailedStatus},
	{iamv1alpha1.ReasonSecretModified, "testdata/degraded_secretModified.yaml", StatusDegraded, kstatus.FailedStatus},
	{iamv1alpha1.ReasonSecretMissing, "testdata/degraded_secretMissing.yaml", StatusDegraded, kstatus.FailedStatus},
	{iamv1alpha1.ReasonSecretMissing, "testdata/degraded_secretMissing_inactive.yaml", StatusDegraded, kstatus.FailedStatus},
}

// TestVerdictPerReason: Current and Healthy for Issued, Inactive and Expired; Failed and
// Degraded for every reason a person must act on, also on an inactive credential.
func TestVerdictPerReason(t *testing.T) {
	dir := filepath.Join(iamv1alpha1.GroupVersion.Group, "APICredential")
	for _, v := range verdicts {
		t.Run(v.reason+"/"+filepath.Base(v.file), func(t *testing.T) {
			obj := readObject(t, filepath.Join(dir, v.file))
			if got := readyReason(t, obj); got != v.reason {
				t.Fatalf("%s has Ready reason %q, want %q", v.file, got, v.reason)
			}
			got, err := Health(obj)
			if err != nil {
				t.Fatalf("health.lua: %v", err)
			}
			if got.Status != v.argo {
				t.Errorf("Argo CD health = %s (%s), want %s", got.Status, got.Message, v.argo)
			}
			if got.Message == "" {
				t.Errorf("Argo CD health %s has no message", got.Status)
			}
			res, err := kstatus.Compute(obj)
			if err != nil {
				t.Fatalf("kstatus: %v", err)
			}
			if res.Status != v.kstatus {
				t.Errorf("kstatus = %s (%s), want %s", res.Status, res.Message, v.kstatus)
			}
		})
	}
}

// TestHealthChecks runs every health.lua under this directory over the testdata its
// health_test.yaml lists, as Argo CD's own test of resource_customizations does, and checks
// that kstatus (Flux) agrees with each verdict.
func TestHealthChecks(t *testing.T) {
	scripts, err := filepath.Glob(filepath.Join("*", "*", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) == 0 {
		t.Fatal("no health.lua found")
	}
	for _, script := range scripts {
		dir := filepath.Dir(script)
		group, kind := filepath.Split(dir)
		t.Run(dir, func(t *testing.T) {
			tests := readHealthTests(t, dir)
			for _, tc := range tests.Tests {
				t.Run(tc.InputPath, func(t *testing.T) {
					obj := readObject(t, filepath.Join(dir, tc.InputPath))
					if g := obj.GroupVersionKind(); g.Group != filepath.Clean(group) || g.Kind != kind {
						t.Fatalf("testdata is a %s, not a %s/%s", g, group, kind)
					}

					got, err := Health(obj)
					if err != nil {
						t.Fatalf("health.lua: %v", err)
					}
					if got != tc.HealthStatus {
						t.Errorf("Argo CD health = %+v, want %+v", got, tc.HealthStatus)
					}

					res, err := kstatus.Compute(obj)
					if err != nil {
						t.Fatalf("kstatus: %v", err)
					}
					want, ok := kstatusFor[tc.HealthStatus.Status]
					if d, differs := kstatusDiffers[path.Join(filepath.ToSlash(dir), tc.InputPath)]; differs {
						want, ok = d.kstatus, true
						t.Logf("kstatus %s, Argo CD %s, on purpose: %s", want, tc.HealthStatus.Status, d.why)
					}
					if !ok {
						t.Fatalf("no kstatus verdict agrees with %s", tc.HealthStatus.Status)
					}
					if res.Status != want {
						t.Errorf("kstatus = %s (%s), want %s to agree with Argo CD's %s",
							res.Status, res.Message, want, tc.HealthStatus.Status)
					}
				})
			}
		})
	}
}

// TestHealthTestsListEveryTestdata fails when a testdata file is not in health_test.yaml,
// or health_test.yaml lists one that does not exist, so no case goes unchecked.
func TestHealthTestsListEveryTestdata(t *testing.T) {
	scripts, err := filepath.Glob(filepath.Join("*", "*", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	for _, script := range scripts {
		dir := filepath.Dir(script)
		files, err := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var onDisk, listed []string
		for _, f := range files {
			rel, err := filepath.Rel(dir, f)
			if err != nil {
				t.Fatal(err)
			}
			onDisk = append(onDisk, filepath.ToSlash(rel))
		}
		for _, tc := range readHealthTests(t, dir).Tests {
			listed = append(listed, tc.InputPath)
		}
		slices.Sort(onDisk)
		slices.Sort(listed)
		if !slices.Equal(onDisk, listed) {
			t.Errorf("%s: testdata %v, health_test.yaml lists %v", dir, onDisk, listed)
		}
	}
}

func readHealthTests(t *testing.T, dir string) healthTests {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var tests healthTests
	if err := yaml.UnmarshalStrict(b, &tests); err != nil {
		t.Fatalf("%s/health_test.yaml: %v", dir, err)
	}
	if len(tests.Tests) == 0 {
		t.Fatalf("%s/health_test.yaml lists no tests", dir)
	}
	return tests
}

// readObject reads a testdata file into the unstructured form Argo CD and Flux hold live
// objects in (integers as int64).
func readObject(t *testing.T, file string) *unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(j); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return obj
}

// readyReason returns the reason of obj's Ready condition, checking on the way that the
// testdata is a valid APICredential status.
func readyReason(t *testing.T, obj *unstructured.Unstructured) string {
	t.Helper()
	if obj.GetKind() != "APICredential" {
		return ""
	}
	var cred iamv1alpha1.APICredential
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj.Object, &cred, true); err != nil {
		t.Fatalf("testdata is not an APICredential: %v", err)
	}
	c := meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionReady)
	if c == nil {
		return ""
	}
	return c.Reason
}

// TestComponentInstallsEveryHealthCheck: the kustomize Component in this directory puts
// every health.lua into argocd-cm under the key Argo CD reads for its kind.
func TestComponentInstallsEveryHealthCheck(t *testing.T) {
	b, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Kind               string `json:"kind"`
		ConfigMapGenerator []struct {
			Name     string   `json:"name"`
			Behavior string   `json:"behavior"`
			Files    []string `json:"files"`
		} `json:"configMapGenerator"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	if k.Kind != "Component" || len(k.ConfigMapGenerator) != 1 ||
		k.ConfigMapGenerator[0].Name != "argocd-cm" || k.ConfigMapGenerator[0].Behavior != "merge" {
		t.Fatalf("kustomization.yaml is not a Component merging into argocd-cm: %s", b)
	}
	var want []string
	scripts, err := filepath.Glob(filepath.Join("*", "*", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	for _, script := range scripts {
		group, kind := filepath.Split(filepath.Dir(script))
		want = append(want, configMapKey(filepath.Clean(group), kind)+"="+filepath.ToSlash(script))
	}
	got := slices.Clone(k.ConfigMapGenerator[0].Files)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml files = %v, want %v", got, want)
	}
}

// configMapKey is the argocd-cm key of a kind's health check.
func configMapKey(group, kind string) string {
	return "resource.customizations.health." + group + "_" + kind
}

// TestDocsShowTheShippedScript: the argocd-cm example in docs/gitops.md holds health.lua
// exactly, so a user who copies it installs what this test checks.
func TestDocsShowTheShippedScript(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "gitops.md"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := Script(iamv1alpha1.GroupVersion.Group, "APICredential")
	if err != nil {
		t.Fatal(err)
	}
	key := "  " + configMapKey(iamv1alpha1.GroupVersion.Group, "APICredential") + ": |\n"
	_, rest, found := strings.Cut(string(doc), key)
	if !found {
		t.Fatalf("docs/gitops.md has no %q", strings.TrimSpace(key))
	}
	block, _, found := strings.Cut(rest, "```")
	if !found {
		t.Fatal("docs/gitops.md: the argocd-cm example does not end")
	}
	var got strings.Builder
	for line := range strings.Lines(block) {
		got.WriteString(strings.TrimPrefix(line, "    "))
	}
	if got.String() != want {
		t.Errorf("docs/gitops.md's argocd-cm script differs from health.lua:\n%s", got.String())
	}
}

// TestRunHealthScriptAsArgoCD: the runner holds scripts to Argo CD's rules, so a script
// that passes here runs in Argo CD.
func TestRunHealthScriptAsArgoCD(t *testing.T) {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"generation": int64(3)},
		"status": map[string]any{
			"conditions": []any{map[string]any{"type": "A"}, map[string]any{"type": "B"}},
			"gone":       nil,
		},
	}}
	for _, tc := range []struct {
		name, script string
		want         HealthStatus
		wantErr      bool
	}{
		{"arrays are sequences from 1, integers numbers",
			`return {status = "Healthy", message = obj.status.conditions[2].type .. #obj.status.conditions .. obj.metadata.generation + 1}`,
			HealthStatus{Status: StatusHealthy, Message: "B24"}, false},
		{"null is nil", `if obj.status.gone == nil then return {status = "Healthy"} end`,
			HealthStatus{Status: StatusHealthy}, false},
		{"an unknown status reads Unknown", `return {status = "Fine", message = "x"}`,
			HealthStatus{Status: StatusUnknown, Message: invalidStatusMessage}, false},
		{"nothing returned is no health", `return nil`, HealthStatus{}, false},
		{"an empty table is no health", `return {}`, HealthStatus{}, false},
		{"no string library", `return {status = string.format("%s", "Healthy")}`, HealthStatus{}, true},
		{"no math library", `return {status = "Healthy", message = math.floor(1)}`, HealthStatus{}, true},
		{"no io library", `io.write("x") return {}`, HealthStatus{}, true},
		{"a message must be a string", `return {status = "Healthy", message = 1}`, HealthStatus{}, true},
		{"a table must be returned", `return "Healthy"`, HealthStatus{}, true},
		{"the time limit holds", `while true do end`, HealthStatus{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RunHealthScript(tc.script, obj)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("health = %+v, want %+v", got, tc.want)
			}
		})
	}
}
