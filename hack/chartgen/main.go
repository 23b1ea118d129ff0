// Command chartgen writes the parts of charts/keysmith that have their source of truth in
// config/: the CustomResourceDefinitions, every RBAC object and ServiceAccount, the status
// ValidatingAdmissionPolicy and its binding, and the ValidatingWebhookConfiguration. It
// renders the kustomize directories with sigs.k8s.io/kustomize/api/krusty and substitutes
// the release's values structurally (the namespace of objects, subjects and webhook
// services, the webhook's failurePolicy and timeoutSeconds, the chart's labels, the
// cert-manager CA injection and the CRDs' resource policy), so there is no third copy of
// the RBAC rules to drift. It writes the PrometheusRule from the example alerts of
// docs/admission.md, and the values table of the chart's README from the
// `# --` comments of values.yaml.
//
// `make manifests` runs it after controller-gen, from the repository root:
//
//	go run ./hack/chartgen
//
// It fails, writing nothing, if a source already holds a template action (`{{`), if a
// namespace of config/ survives the substitution, if config/ holds an object of a kind it
// does not know where to put, or if a value of values.yaml has no description.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	root := flag.String("root", ".", "root of the keysmith repository")
	flag.Parse()
	if err := run(*root); err != nil {
		fmt.Fprintln(os.Stderr, "chartgen:", err)
		os.Exit(1)
	}
}

// run generates every file and only then writes them, so a failure leaves the chart as it
// was. Generated files of templates/crds that are no longer produced are removed.
func run(root string) error {
	files, err := generate(root)
	if err != nil {
		return err
	}
	crdDir := filepath.Join(root, chartDir, "templates", "crds")
	if err := os.MkdirAll(crdDir, 0o755); err != nil {
		return err
	}
	stale, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil {
		return err
	}
	for _, path := range stale {
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if _, ok := files[filepath.ToSlash(rel)]; !ok {
			if err := os.Remove(path); err != nil {
				return err
			}
		}
	}
	for _, rel := range slices.Sorted(maps.Keys(files)) {
		path := filepath.Join(root, filepath.FromSlash(rel))
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, files[rel]) {
			continue
		}
		if err := os.WriteFile(path, files[rel], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// chartDir is the chart, relative to the repository root.
const chartDir = "charts/keysmith"

// generate returns the generated files, keyed by their slash-separated path relative to
// root.
func generate(root string) (map[string][]byte, error) {
	files := map[string][]byte{}
	var errs []error

	crds, err := renderDir(root, "config/crd", kindsCRD, nil)
	errs = append(errs, err)
	for _, crd := range crds {
		name := crd.name
		files[chartDir+"/templates/crds/"+name+".yaml"] = []byte(
			header("config/crd") + "{{- if .Values.crds.enabled }}\n" + crd.text + "{{- end }}\n")
	}

	var rbac, accounts []object
	for _, dir := range []string{"config/rbac", "config/token-server"} {
		objs, err := renderDir(root, dir, kindsRBAC, kindsHandWritten)
		errs = append(errs, err)
		for _, o := range objs {
			if o.kind == "ServiceAccount" {
				accounts = append(accounts, o)
			} else {
				rbac = append(rbac, o)
			}
		}
	}
	files[chartDir+"/templates/rbac.yaml"] = []byte(header("config/rbac and config/token-server") + join(rbac))
	files[chartDir+"/templates/serviceaccounts.yaml"] = []byte(header("config/rbac and config/token-server") + join(accounts))

	policy, err := renderDir(root, "config/policy", kindsPolicy, nil)
	errs = append(errs, err)
	files[chartDir+"/templates/policy.yaml"] = []byte(header("config/policy") + join(policy))

	webhook, err := renderDir(root, "config/webhook", kindsWebhook, kindsHandWritten)
	errs = append(errs, err)
	files[chartDir+"/templates/webhook.yaml"] = []byte(header("config/webhook") + join(webhook))

	alerts, err := alertsTemplate(root)
	errs = append(errs, err)
	files[chartDir+"/templates/prometheusrule.yaml"] = []byte(alerts)

	readmePath := chartDir + "/README.md"
	readme, err := os.ReadFile(filepath.Join(root, readmePath))
	if err != nil {
		errs = append(errs, err)
	} else if values, err := os.ReadFile(filepath.Join(root, chartDir, "values.yaml")); err != nil {
		errs = append(errs, err)
	} else if out, err := writeValuesTable(readme, values); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", readmePath, err))
	} else {
		files[readmePath] = out
	}

	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for name, objs := range map[string][]object{"crds/": crds, "rbac.yaml": rbac, "serviceaccounts.yaml": accounts, "policy.yaml": policy, "webhook.yaml": webhook} {
		if len(objs) == 0 {
			return nil, fmt.Errorf("templates/%s would be empty: config/ lost its objects", name)
		}
	}
	return files, nil
}

func header(source string) string {
	return "# generated by hack/chartgen from " + source + "; do not edit (run make manifests)\n"
}

func join(objs []object) string {
	texts := make([]string, len(objs))
	for i, o := range objs {
		texts[i] = o.text
	}
	return strings.Join(texts, "---\n")
}
