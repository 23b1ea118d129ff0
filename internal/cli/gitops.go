package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// GitOps appliers, as they appear in an object's managedFields, labels and annotations.
const (
	argoCD    = "Argo CD"
	fluxKusto = "Flux (kustomize-controller)"
	fluxHelm  = "Flux (helm-controller)"
	flux      = "Flux"
)

// gitopsManagers maps field managers to the GitOps tool they are: Argo CD's application
// controller (argocd-controller with server-side apply, argocd-application-controller
// otherwise) and Flux's kustomize- and helm-controller.
var gitopsManagers = map[string]string{
	"argocd-controller":             argoCD,
	"argocd-application-controller": argoCD,
	"kustomize-controller":          fluxKusto,
	"helm-controller":               fluxHelm,
}

// gitopsMarks are the labels and annotations GitOps tools put on what they apply.
var (
	gitopsAnnotations = map[string]string{"argocd.argoproj.io/tracking-id": argoCD}
	gitopsLabels      = map[string]string{
		"kustomize.toolkit.fluxcd.io/name": fluxKusto,
		"helm.toolkit.fluxcd.io/name":      fluxHelm,
	}
)

// argoCDInstanceLabel is Argo CD's label tracking method (its default before 3.0). The
// same label is one of Kubernetes' recommended labels, and Helm sets it with
// app.kubernetes.io/managed-by=Helm, so it counts only when managed-by names no other tool.
const argoCDInstanceLabel = "app.kubernetes.io/instance"

// appliedByGitOps reports whether obj was applied by Argo CD or Flux, and which: from its
// managedFields' managers, then the tracking annotation and labels the tools write. An
// object applied with kubectl (kubectl-client-side-apply, kubectl, kubectl-keysmith) is not.
func appliedByGitOps(obj metav1.Object) (tool string, ok bool) {
	tool, _, ok = gitopsEvidence(obj)
	return tool, ok
}

// gitopsEvidence is appliedByGitOps with what gave it away ("field manager
// kustomize-controller", "annotation argocd.argoproj.io/tracking-id").
func gitopsEvidence(obj metav1.Object) (tool, evidence string, ok bool) {
	for _, mf := range obj.GetManagedFields() {
		if t, found := gitopsManagers[mf.Manager]; found {
			return t, "field manager " + mf.Manager, true
		}
	}
	annotations, labels := obj.GetAnnotations(), obj.GetLabels()
	for key, t := range gitopsAnnotations {
		if _, found := annotations[key]; found {
			return t, "annotation " + key, true
		}
	}
	for key, t := range gitopsLabels {
		if _, found := labels[key]; found {
			return t, "label " + key, true
		}
	}
	// Fail closed on any other mark of the tools: a key of their domains (Argo CD's
	// argocd.argoproj.io/instance, the instanceLabelKey many installations set; sync
	// options and waves; Flux's reconcile, ssa and prune annotations) is written only by
	// the tool or by a person for it, in Git.
	for _, kind := range []struct {
		what string
		keys map[string]string
	}{{"annotation", annotations}, {"label", labels}} {
		for _, key := range slices.Sorted(maps.Keys(kind.keys)) {
			if t, found := toolOfKey(key); found {
				return t, kind.what + " " + key, true
			}
		}
	}
	if _, found := labels[argoCDInstanceLabel]; found {
		if by := labels["app.kubernetes.io/managed-by"]; by == "" || strings.EqualFold(by, "argocd") {
			return argoCD, "label " + argoCDInstanceLabel, true
		}
	}
	return "", "", false
}

// toolOfKey returns the GitOps tool whose domain a label or annotation key is in.
func toolOfKey(key string) (string, bool) {
	prefix, _, ok := strings.Cut(key, "/")
	if !ok {
		return "", false
	}
	switch {
	case prefix == "argocd.argoproj.io": // not workflows. or rollouts.argoproj.io: other tools
		return argoCD, true
	case prefix == "kustomize.toolkit.fluxcd.io":
		return fluxKusto, true
	case prefix == "helm.toolkit.fluxcd.io":
		return fluxHelm, true
	case prefix == "fluxcd.io" || strings.HasSuffix(prefix, ".fluxcd.io"):
		return flux, true
	}
	return "", false
}

// gitChange returns what to tell a person whose credential is applied by a GitOps tool:
// the tool and how it was recognised, the YAML to change in Git (change is the partial
// object, e.g. {"spec": {"active": false}}), and how to override with --force.
func gitChange(obj client.Object, change map[string]any) string {
	tool, evidence, _ := gitopsEvidence(obj)
	doc := map[string]any{
		"apiVersion": iamv1alpha1.GroupVersion.String(),
		"kind":       "APICredential",
		"metadata":   map[string]any{"name": obj.GetName(), "namespace": obj.GetNamespace()},
	}
	for k, v := range change {
		doc[k] = v
	}
	out, err := yaml.Marshal(doc)
	if err != nil { // a map of plain values always marshals
		out = []byte(err.Error())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "APICredential %s/%s is applied by %s (%s): a live change would be reverted by the next sync, or wedge it.\n",
		obj.GetNamespace(), obj.GetName(), tool, evidence)
	b.WriteString("Make this change in Git instead:\n\n")
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		b.WriteString("  " + line + "\n")
	}
	b.WriteString("\nor run the command again with --force to change it live.\n")
	return b.String()
}

// refuseGitOps prints gitChange to stdout and returns the one-line error of the refusal,
// for commands (rotate, activate, deactivate, delete) run without --force on a credential
// applied by GitOps. It returns nil when obj is not applied by GitOps.
func refuseGitOps(e *env, obj client.Object, change map[string]any) error {
	tool, ok := appliedByGitOps(obj)
	if !ok {
		return nil
	}
	fmt.Fprint(e.out(), gitChange(obj, change))
	return userError(fmt.Sprintf("credential %q is applied by %s, so it was not changed", obj.GetName(), tool),
		"make the change above in Git, or pass --force")
}
