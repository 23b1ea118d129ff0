package install

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// fieldOwner is the field manager of every apply of a manifest: one applier, as a GitOps
// tool or `kubectl apply --server-side` is.
const fieldOwner = "keysmith-install-test"

// describe names an object for messages: Kind namespace/name.
func describe(obj client.Object) string {
	kind := obj.GetObjectKind().GroupVersionKind().Kind
	if obj.GetNamespace() == "" {
		return kind + " " + obj.GetName()
	}
	return kind + " " + obj.GetNamespace() + "/" + obj.GetName()
}

// applyOrder is the order the objects are applied in: CRDs first, then Namespaces, then
// the rest as rendered (Helm and kustomize already order by kind).
func applyOrder(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	rank := func(o *unstructured.Unstructured) int {
		switch o.GetKind() {
		case "CustomResourceDefinition":
			return 0
		case "Namespace":
			return 1
		}
		return 2
	}
	sorted := slices.Clone(objs)
	slices.SortStableFunc(sorted, func(a, b *unstructured.Unstructured) int { return rank(a) - rank(b) })
	return sorted
}

// placeObjects gives each namespaced object without a namespace the release's, as Helm
// does when it applies, and refuses an object of another namespace: an installation
// writes only its own namespace (tenants' namespaces are theirs).
func placeObjects(c client.Client, objs []*unstructured.Unstructured, namespace string, crds map[string]bool) error {
	for _, obj := range objs {
		namespaced, err := isNamespaced(c, obj, crds)
		if err != nil {
			return err
		}
		switch {
		case !namespaced && obj.GetNamespace() != "":
			return fmt.Errorf("%s: a cluster-scoped object with a namespace", describe(obj))
		case namespaced && obj.GetNamespace() == "":
			obj.SetNamespace(namespace)
		case namespaced && obj.GetNamespace() != namespace:
			return fmt.Errorf("%s: outside the installation's namespace %s", describe(obj), namespace)
		}
	}
	return nil
}

// isNamespaced tells whether obj's kind is namespaced, from the API server's discovery or,
// for a kind whose CRD is in the same manifest and not yet applied, from that CRD
// (crds maps group/Kind to namespaced).
func isNamespaced(c client.Client, obj *unstructured.Unstructured, crds map[string]bool) (bool, error) {
	gvk := obj.GroupVersionKind()
	if namespaced, ok := crds[gvk.Group+"/"+gvk.Kind]; ok {
		return namespaced, nil
	}
	return c.IsObjectNamespaced(obj)
}

// crdScopes maps group/Kind to namespaced for the CRDs among objs.
func crdScopes(objs []*unstructured.Unstructured) (map[string]bool, error) {
	scopes := map[string]bool{}
	for _, obj := range objs {
		if obj.GetKind() != "CustomResourceDefinition" {
			continue
		}
		group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "kind")
		scope, _, _ := unstructured.NestedString(obj.Object, "spec", "scope")
		if group == "" || kind == "" || (scope != "Namespaced" && scope != "Cluster") {
			return nil, fmt.Errorf("%s: no spec.group, spec.names.kind or spec.scope", describe(obj))
		}
		scopes[group+"/"+kind] = scope == "Namespaced"
	}
	return scopes, nil
}

// applyAll applies every object with server-side apply, as fieldOwner with forced
// ownership, in applyOrder, waiting for the CRDs to be Established before the objects
// that may be of their kinds. It returns the objects as the API server stored them. The
// objects given are not changed.
func applyAll(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) ([]*unstructured.Unstructured, error) {
	var applied []*unstructured.Unstructured
	var crds []string
	ordered := applyOrder(objs)
	for i, obj := range ordered {
		if obj.GetKind() != "CustomResourceDefinition" && len(crds) > 0 {
			if err := waitEstablished(ctx, c, crds); err != nil {
				return nil, err
			}
			crds = nil
		}
		out := obj.DeepCopy()
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(out), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
			return nil, fmt.Errorf("applying %s (object %d of %d): %w", describe(obj), i+1, len(ordered), err)
		}
		if obj.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, obj.GetName())
		}
		applied = append(applied, out)
	}
	if err := waitEstablished(ctx, c, crds); err != nil {
		return nil, err
	}
	return applied, nil
}

// waitEstablished waits until every named CRD is Established (its kind is served).
func waitEstablished(ctx context.Context, c client.Client, names []string) error {
	for _, name := range names {
		var last string
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			crd := &unstructured.Unstructured{}
			crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
			if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				last = err.Error()
				return false, nil
			}
			conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, raw := range conditions {
				cond, _ := raw.(map[string]any)
				switch {
				case cond["type"] == "Established" && cond["status"] == "True":
					return true, nil
				case cond["type"] == "NamesAccepted" && cond["status"] == "False":
					last, _ = cond["message"].(string)
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not Established: %w (%s)", name, err, last)
		}
	}
	return nil
}

// reapplyChanges applies objs again, as applyAll did, and returns one line for every
// object the second apply changed: a resourceVersion that moved, with the fields that
// differ (a defaulted field that the manifest sets differently fights server-side apply
// this way, and a GitOps tool would show the installation as forever out of sync).
func reapplyChanges(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) ([]string, error) {
	before := map[string]*unstructured.Unstructured{}
	for _, obj := range objs {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(obj.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), live); err != nil {
			return nil, fmt.Errorf("reading %s: %w", describe(obj), err)
		}
		before[describe(obj)] = live
	}
	after, err := applyAll(ctx, c, objs)
	if err != nil {
		return nil, err
	}
	var changes []string
	for _, obj := range after {
		old := before[describe(obj)]
		if old.GetResourceVersion() == obj.GetResourceVersion() {
			continue
		}
		// A Secret's values are never printed, only where they differ.
		paths := diffPaths(old.Object, obj.Object, obj.GetKind() != "Secret")
		changes = append(changes, fmt.Sprintf("%s: resourceVersion %s -> %s; fields changed: %s",
			describe(obj), old.GetResourceVersion(), obj.GetResourceVersion(), strings.Join(paths, ", ")))
	}
	return changes, nil
}

// diffPaths lists the paths at which a and b differ, with both values when values is set,
// ignoring resourceVersion and generation (which every change moves) and naming only the
// path of managedFields.
func diffPaths(a, b map[string]any, values bool) []string {
	var paths []string
	var walk func(path string, x, y any)
	walk = func(path string, x, y any) {
		switch path {
		case ".metadata.resourceVersion", ".metadata.generation":
			return
		}
		xm, xok := x.(map[string]any)
		ym, yok := y.(map[string]any)
		if xok && yok {
			keys := map[string]bool{}
			for k := range xm {
				keys[k] = true
			}
			for k := range ym {
				keys[k] = true
			}
			sorted := make([]string, 0, len(keys))
			for k := range keys {
				sorted = append(sorted, k)
			}
			sort.Strings(sorted)
			for _, k := range sorted {
				walk(path+"."+k, xm[k], ym[k])
			}
			return
		}
		if !reflect.DeepEqual(x, y) {
			if path == ".metadata.managedFields" || !values {
				paths = append(paths, path)
				return
			}
			xs, _ := json.Marshal(x)
			ys, _ := json.Marshal(y)
			paths = append(paths, fmt.Sprintf("%s (%.200s -> %.200s)", path, xs, ys))
		}
	}
	walk("", a, b)
	return paths
}
