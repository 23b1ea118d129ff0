package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// The kinds each config/ directory may hold: the ones chartgen copies into the chart, and
// the ones the chart writes by hand (skipped). Any other kind is an error, so an object added
// to config/ cannot go missing from the chart unnoticed.
var (
	kindsCRD         = []string{"CustomResourceDefinition"}
	kindsRBAC        = []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
	kindsPolicy      = []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
	kindsWebhook     = []string{"ValidatingWebhookConfiguration"}
	kindsHandWritten = []string{"Deployment", "Service", "PodDisruptionBudget"}
)

// sourceNamespaces are the namespaces config/ names: kustomize's placeholder "system" of
// the bases and the namespace config/default installs into. None may survive in the chart.
var sourceNamespaces = []string{"system", "keysmith-system"}

// The text chartgen puts in a node that becomes template text once the object is written
// as YAML. Sources must not contain it.
const (
	sentinel          = "KEYSMITHCHARTGEN"
	namespaceSentinel = sentinel + "NAMESPACE"
)

// Template text substituted for the sentinels.
const (
	releaseNamespace = "{{ .Release.Namespace }}"
	failurePolicy    = "{{ .Values.webhook.failurePolicy }}"
	timeoutSeconds   = "{{ .Values.webhook.timeoutSeconds }}"
)

// chartOwnedLabels are set by the chart's keysmith.labels helper; config/ must not set them
// differently.
var chartOwnedLabels = map[string]string{
	"app.kubernetes.io/name":       "keysmith",
	"app.kubernetes.io/instance":   "",
	"app.kubernetes.io/version":    "",
	"app.kubernetes.io/managed-by": "",
	"helm.sh/chart":                "",
}

// object is one rendered object, as chart template text.
type object struct {
	kind, name string
	text       string
}

// renderDir renders the kustomize directory dir (relative to root) and returns its objects
// of the kinds in copy as template text, skipping those of the kinds in skip.
func renderDir(root, dir string, copy, skip []string) ([]object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(root, filepath.FromSlash(dir)))
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var objs []object
	for _, res := range resources.Resources() {
		rn := &res.RNode
		kind, name := rn.GetKind(), rn.GetName()
		where := fmt.Sprintf("%s: %s %s", dir, kind, name)
		switch {
		case slices.Contains(skip, kind):
			continue
		case !slices.Contains(copy, kind):
			return nil, fmt.Errorf("%s: chartgen does not copy this kind from %s (expected %s)", where, dir, strings.Join(copy, ", "))
		}
		text, err := templateOf(rn.Copy())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		objs = append(objs, object{kind: kind, name: name, text: text})
	}
	return objs, nil
}

// templateOf substitutes the release's values into rn (a copy) and returns it as template
// text.
func templateOf(rn *yaml.RNode) (string, error) {
	src, err := rn.String()
	if err != nil {
		return "", err
	}
	if strings.Contains(src, "{{") {
		return "", fmt.Errorf("the source contains %q, which Helm would read as a template action", "{{")
	}
	if strings.Contains(src, sentinel) {
		return "", fmt.Errorf("the source contains chartgen's placeholder %s", sentinel)
	}

	t := &templater{}
	steps := []func(*yaml.RNode) error{t.namespace, t.subjects, t.labels}
	switch rn.GetKind() {
	case "CustomResourceDefinition":
		steps = append(steps, t.crd)
	case "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration":
		steps = append(steps, t.webhooks)
	case "ValidatingAdmissionPolicy":
		steps = append(steps, t.policy)
	}
	for _, step := range steps {
		if err := step(rn); err != nil {
			return "", err
		}
	}
	if err := noSourceNamespace(rn.YNode(), nil); err != nil {
		return "", err
	}
	blockStyle(rn.YNode())
	out, err := rn.String()
	if err != nil {
		return "", err
	}
	return t.expand(out)
}

// templater collects the template text of the sentinels it puts into an object.
type templater struct {
	values []string                     // values[i] replaces sentinel+"VALUE"+i
	blocks []func(indent string) string // blocks[i] replaces the line of the key sentinel+"BLOCK"+i
}

// value returns a sentinel for a scalar that becomes the template text text.
func (t *templater) value(text string) *yaml.RNode {
	t.values = append(t.values, text)
	return yaml.NewScalarRNode(sentinel + "VALUE" + strconv.Itoa(len(t.values)-1))
}

// block returns a sentinel key whose whole line becomes the text block returns for the
// line's indentation.
func (t *templater) block(text func(indent string) string) string {
	t.blocks = append(t.blocks, text)
	return sentinel + "BLOCK" + strconv.Itoa(len(t.blocks)-1)
}

var (
	blockLine = regexp.MustCompile(`(?m)^( *)` + sentinel + `BLOCK([0-9]+):.*$`)
	valueWord = regexp.MustCompile(sentinel + `VALUE([0-9]+)`)
)

// expand replaces the sentinels of out by their template text.
func (t *templater) expand(out string) (string, error) {
	out = blockLine.ReplaceAllStringFunc(out, func(line string) string {
		m := blockLine.FindStringSubmatch(line)
		i, _ := strconv.Atoi(m[2])
		return t.blocks[i](m[1])
	})
	out = valueWord.ReplaceAllStringFunc(out, func(word string) string {
		i, _ := strconv.Atoi(valueWord.FindStringSubmatch(word)[1])
		return t.values[i]
	})
	out = strings.ReplaceAll(out, namespaceSentinel, releaseNamespace)
	if strings.Contains(out, sentinel) {
		return "", fmt.Errorf("chartgen left a placeholder in the template (a bug): %s", out)
	}
	return out, nil
}

// namespace moves a namespaced object into the release's namespace.
func (t *templater) namespace(rn *yaml.RNode) error {
	if rn.GetNamespace() == "" {
		return nil
	}
	return rn.PipeE(yaml.Lookup("metadata"), yaml.SetField("namespace", yaml.NewScalarRNode(namespaceSentinel)))
}

// subjects points the ServiceAccount subjects of a binding at the release's namespace.
func (t *templater) subjects(rn *yaml.RNode) error {
	subjects, err := rn.Pipe(yaml.Lookup("subjects"))
	if err != nil || subjects == nil {
		return err
	}
	elems, err := subjects.Elements()
	if err != nil {
		return err
	}
	for _, s := range elems {
		if kind := s.Field("kind"); kind == nil || yaml.GetValue(kind.Value) != "ServiceAccount" {
			continue
		}
		if err := s.PipeE(yaml.SetField("namespace", yaml.NewScalarRNode(namespaceSentinel))); err != nil {
			return err
		}
	}
	return nil
}

// labels gives the object the chart's labels (keysmith.labels), keeping its own.
func (t *templater) labels(rn *yaml.RNode) error {
	labels := rn.GetLabels()
	for key, want := range chartOwnedLabels {
		got, ok := labels[key]
		if !ok {
			continue
		}
		if want == "" || got != want {
			return fmt.Errorf("label %s=%q is the chart's to set", key, got)
		}
		delete(labels, key)
	}
	labels[t.block(func(indent string) string {
		return fmt.Sprintf(`%s{{- include "keysmith.labels" . | nindent %d }}`, indent, len(indent))
	})] = ""
	return rn.SetLabels(labels)
}

// annotateIf adds the annotation key: value (template text) when the template condition
// cond holds, keeping the object's own annotations.
func (t *templater) annotateIf(rn *yaml.RNode, cond, key, value string) error {
	annotations := rn.GetAnnotations()
	delete(annotations, key)
	if len(annotations) > 0 {
		annotations[t.block(func(indent string) string {
			return fmt.Sprintf("%[1]s{{- if %[2]s }}\n%[1]s%[3]s: %[4]s\n%[1]s{{- end }}", indent, cond, key, value)
		})] = ""
		return rn.SetAnnotations(annotations)
	}
	if err := rn.SetAnnotations(map[string]string{}); err != nil {
		return err
	}
	return rn.PipeE(yaml.Lookup("metadata"), yaml.SetField(t.block(func(indent string) string {
		return fmt.Sprintf("%[1]s{{- if %[2]s }}\n%[1]sannotations:\n%[1]s  %[3]s: %[4]s\n%[1]s{{- end }}", indent, cond, key, value)
	}), yaml.NewScalarRNode("")))
}

// crd keeps the CRD on uninstall when crds.keep is set, and points a conversion webhook
// at the release's namespace.
func (t *templater) crd(rn *yaml.RNode) error {
	if err := t.annotateIf(rn, ".Values.crds.keep", "helm.sh/resource-policy", "keep"); err != nil {
		return err
	}
	svc, err := rn.Pipe(yaml.Lookup("spec", "conversion", "webhook", "clientConfig", "service"))
	if err != nil || svc == nil {
		return err
	}
	return svc.PipeE(yaml.SetField("namespace", yaml.NewScalarRNode(namespaceSentinel)))
}

// webhooks points every webhook at the release's namespace, takes failurePolicy and
// timeoutSeconds from the values and lets cert-manager inject the CA when it issues the
// serving certificate.
func (t *templater) webhooks(rn *yaml.RNode) error {
	if err := t.annotateIf(rn, ".Values.certManager.enabled", "cert-manager.io/inject-ca-from",
		releaseNamespace+"/keysmith-webhook-server-cert"); err != nil {
		return err
	}
	hooks, err := rn.Pipe(yaml.Lookup("webhooks"))
	if err != nil || hooks == nil {
		return err
	}
	elems, err := hooks.Elements()
	if err != nil {
		return err
	}
	for _, h := range elems {
		if err := h.PipeE(yaml.SetField("failurePolicy", t.value(failurePolicy))); err != nil {
			return err
		}
		if err := h.PipeE(yaml.SetField("timeoutSeconds", t.value(timeoutSeconds))); err != nil {
			return err
		}
		svc, err := h.Pipe(yaml.Lookup("clientConfig", "service"))
		if err != nil {
			return err
		}
		if svc != nil {
			if err := svc.PipeE(yaml.SetField("namespace", yaml.NewScalarRNode(namespaceSentinel))); err != nil {
				return err
			}
		}
	}
	return nil
}

// serviceAccountUser matches the CEL string literal of a ServiceAccount's user name in a
// namespace of config/.
var serviceAccountUser = regexp.MustCompile(`'system:serviceaccount:(` + strings.Join(sourceNamespaces, "|") + `):([a-z0-9.-]+)'`)

// policy rewrites the ServiceAccount user names of the policy's variables to the release's
// namespace.
func (t *templater) policy(rn *yaml.RNode) error {
	vars, err := rn.Pipe(yaml.Lookup("spec", "variables"))
	if err != nil || vars == nil {
		return err
	}
	elems, err := vars.Elements()
	if err != nil {
		return err
	}
	for _, v := range elems {
		expr := v.Field("expression")
		if expr == nil {
			continue
		}
		node := expr.Value.YNode()
		node.Value = serviceAccountUser.ReplaceAllString(node.Value, "'system:serviceaccount:"+namespaceSentinel+":$2'")
	}
	return nil
}

// noSourceNamespace fails if a namespace of config/ survives anywhere in node: as a whole
// value, in a service DNS name, or in a ServiceAccount user name.
func noSourceNamespace(node *yaml.Node, path []string) error {
	switch node.Kind {
	case yaml.ScalarNode:
		for _, ns := range sourceNamespaces {
			// "system" is a word of its own elsewhere (system:serviceaccount:); the longer
			// names are config/'s wherever they appear.
			if node.Value == ns || (ns != "system" && strings.Contains(node.Value, ns)) ||
				strings.Contains(node.Value, "."+ns+".svc") || strings.Contains(node.Value, ":"+ns+":") {
				return fmt.Errorf("namespace %q of config/ survives at %s: %q", ns, strings.Join(path, "."), node.Value)
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(node.Content); i += 2 {
			if err := noSourceNamespace(node.Content[i+1], append(path, node.Content[i].Value)); err != nil {
				return err
			}
		}
	default:
		for i, c := range node.Content {
			if err := noSourceNamespace(c, append(path, "["+strconv.Itoa(i)+"]")); err != nil {
				return err
			}
		}
	}
	return nil
}

// blockStyle writes every mapping and sequence under node in block style: the sentinels
// of template blocks must be lines of their own, and template text inside a flow
// collection would be at the mercy of the values' characters.
func blockStyle(node *yaml.Node) {
	if node.Kind == yaml.MappingNode || node.Kind == yaml.SequenceNode {
		node.Style &^= yaml.FlowStyle
	}
	for _, c := range node.Content {
		blockStyle(c)
	}
}
