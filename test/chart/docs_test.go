package chart

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/testenv/helmchart"
)

// TestLint: `helm lint --strict` (warnings fail) through the SDK's lint package, for each
// values file.
func TestLint(t *testing.T) {
	kv, err := chartutil.ParseKubeVersion(helmchart.KubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range valuesFiles {
		vals := map[string]any{}
		if file != "" {
			v, err := chartutil.ReadValuesFile(filepath.Join(chartDir(), file))
			if err != nil {
				t.Fatal(err)
			}
			vals = v.AsMap()
		}
		linter := lint.AllWithKubeVersion(chartDir(), vals, namespace, kv)
		for _, msg := range linter.Messages {
			t.Logf("%q: %s", file, msg)
			if msg.Severity >= support.WarningSev {
				t.Errorf("%q: helm lint --strict fails: %s", file, msg)
			}
		}
	}
}

// TestPrometheusRuleMatchesDocs: the PrometheusRule's groups are exactly the YAML block of
// docs/admission.md's "Example alerts", so the chart's alerts cannot drift from the docs.
func TestPrometheusRuleMatchesDocs(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "admission.md"))
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)### Example alerts\\s*\n```yaml\n(.*?)\n```").FindSubmatch(doc)
	if block == nil {
		t.Fatal("docs/admission.md has no ```yaml block under ### Example alerts")
	}
	var documented map[string]any
	if err := yaml.Unmarshal(block[1], &documented); err != nil {
		t.Fatal(err)
	}
	docGroups, _, _ := unstructured.NestedSlice(documented, "spec", "groups")
	if len(docGroups) == 0 {
		t.Fatal("the documented PrometheusRule has no groups")
	}

	rule := mustRender(t, "", "prometheusRule: {enabled: true}").mustGet(t, "PrometheusRule", "keysmith")
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	// Compare as JSON values: the render decodes integers as int64, the doc as float64.
	if !reflect.DeepEqual(jsonValue(t, groups), jsonValue(t, docGroups)) {
		t.Errorf("the chart's alerts differ from docs/admission.md:\nchart: %s\n docs: %s", jsonText(t, groups), jsonText(t, docGroups))
	}
	alerts := 0
	for _, g := range groups {
		rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range rules {
			r := r.(map[string]any)
			t.Logf("alert %v: %v", r["alert"], strings.TrimSpace(r["expr"].(string)))
			alerts++
		}
	}
	if alerts == 0 {
		t.Error("the PrometheusRule has no alerts")
	}
}

func jsonText(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func jsonValue(t *testing.T, v any) any {
	t.Helper()
	var out any
	if err := json.Unmarshal([]byte(jsonText(t, v)), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// tableRow matches a row of the README's values table: | `key` | type | `default` | description |
var tableRow = regexp.MustCompile("^\\| `([^`]+)` \\| ([a-z]+) \\| `(.*)` \\| (.*) \\|$")

// TestReadmeListsEveryValue: every value of values.yaml is in the chart README's table
// with its default and a description, and the table lists no value that does not exist.
func TestReadmeListsEveryValue(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(chartDir(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][2]string{} // key -> default, description
	for _, line := range strings.Split(string(readme), "\n") {
		if m := tableRow.FindStringSubmatch(line); m != nil {
			rows[m[1]] = [2]string{strings.ReplaceAll(m[3], `\|`, "|"), m[4]}
		}
	}
	if len(rows) == 0 {
		t.Fatal("README.md has no values table")
	}
	vals, err := chartutil.ReadValuesFile(filepath.Join(chartDir(), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, leaf := range leaves(vals.AsMap(), "") {
		key := leaf
		for {
			if _, ok := rows[key]; ok {
				break
			}
			i := strings.LastIndex(key, ".")
			if i < 0 {
				t.Errorf("value %s is not in the README's values table", leaf)
				break
			}
			key = key[:i]
		}
	}
	for key, row := range rows {
		v, err := vals.PathValue(key)
		if err != nil {
			// PathValue does not return tables; look them up by hand.
			v, err = lookup(vals.AsMap(), key)
		}
		if err != nil {
			t.Errorf("the README lists %s, which values.yaml does not have", key)
			continue
		}
		if got := jsonText(t, v); got != row[0] {
			t.Errorf("the README's default of %s is %s; values.yaml has %s", key, row[0], got)
		}
		if strings.TrimSpace(row[1]) == "" {
			t.Errorf("the README's %s has no description", key)
		}
	}
}

// leaves lists the paths of the values that are not non-empty maps.
func leaves(m map[string]any, prefix string) []string {
	var out []string
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
			out = append(out, leaves(sub, prefix+k+".")...)
			continue
		}
		out = append(out, prefix+k)
	}
	return out
}

func lookup(m map[string]any, key string) (any, error) {
	var v any = m
	for _, part := range strings.Split(key, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil, os.ErrNotExist
		}
		if v, ok = mm[part]; !ok {
			return nil, os.ErrNotExist
		}
	}
	return v, nil
}

// TestNotes: NOTES.txt tells how to read a credential's secret and names the token URL,
// or says there is no shared token server.
func TestNotes(t *testing.T) {
	for overrides, want := range map[string][]string{
		"":                              {"status.secretRef.name", "https://keysmith-token-server." + namespace + ".svc/oauth2/token", "get configmap keysmith-token-server-ca -o jsonpath='{.data.ca\\.crt}'"},
		"certManager: {enabled: true}":  {"get secret keysmith-token-server-tls -o jsonpath='{.data.ca\\.crt}' | base64 -d"},
		"tokenServer: {enabled: false}": {"status.secretRef.name", "token server is disabled"},
	} {
		notes := mustRenderNotes(t, overrides)
		t.Logf("NOTES.txt with %q:\n%s", overrides, notes)
		for _, w := range want {
			if !strings.Contains(notes, w) {
				t.Errorf("%q: NOTES.txt lacks %q:\n%s", overrides, w, notes)
			}
		}
	}
}

// TestInstallDocValues: the example values file of docs/install.md passes the schema and
// renders what it says.
func TestInstallDocValues(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```yaml\n(# values-[a-z]+\\.yaml\n.*?)\n```").FindSubmatch(doc)
	if block == nil {
		t.Fatal("docs/install.md has no ```yaml block starting with # values-<name>.yaml")
	}
	m, err := render("", string(block[1]))
	if err != nil {
		t.Fatalf("the values of docs/install.md do not render: %v", err)
	}
	var vals map[string]any
	if err := yaml.Unmarshal(block[1], &vals); err != nil {
		t.Fatal(err)
	}
	if want, ok, _ := unstructured.NestedInt64(vals, "tokenServer", "replicas"); ok {
		d := m.mustGet(t, "Deployment", "keysmith-token-server")
		if got, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas"); got != want {
			t.Errorf("token server replicas %d, the docs' values say %d", got, want)
		}
	}
}
