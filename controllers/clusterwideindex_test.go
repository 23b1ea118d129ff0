package controllers

import (
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// clientIDIndex is an index function shaped like controller-runtime's field indexes: each
// value under its cluster-wide key and its namespaced key.
func clientIDIndex(obj any) ([]string, error) {
	s := obj.(*corev1.Secret)
	id := s.Labels["id"]
	return []string{allNamespacesKey + id, s.Namespace + "/" + id}, nil
}

func indexSecret(ns, name, id string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"id": id}}}
}

// TestClusterWideIndexerGetIndexersLeavesTheStoreAlone: controller-runtime asks the
// indexer for its functions on every List with a two-field selector. The answer must be
// a map of its own: the store's map, written to, raced with every lookup (the manager died
// of "concurrent map read and map write" in the fault test) and put the full functions,
// namespaced keys and all, into the store for every object indexed after it.
func TestClusterWideIndexerGetIndexersLeavesTheStoreAlone(t *testing.T) {
	name := "field:" + iamv1alpha1.ClientIDField
	store := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{})
	x := &clusterWideIndexer{Indexer: store, indexes: &clusterWideIndexSet{full: toolscache.Indexers{}}}
	if err := x.AddIndexers(toolscache.Indexers{name: clientIDIndex}); err != nil {
		t.Fatal(err)
	}

	// What the caller gets gives the namespaced key too (it filters by it).
	got := x.GetIndexers()
	keys, err := got[name](indexSecret("team-a", "s0", "ksc_0"))
	if err != nil || len(keys) != 2 || keys[1] != "team-a/ksc_0" {
		t.Fatalf("GetIndexers()[%s] gave %v, %v; want the cluster-wide and the namespaced key", name, keys, err)
	}
	got[name] = nil // the caller's map is the caller's
	if store.GetIndexers()[name] == nil {
		t.Fatal("writing to the map GetIndexers returned changed the store's own functions")
	}

	// The store still keeps the cluster-wide keys only, for objects added after the call.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if w%2 == 0 {
					_ = x.GetIndexers()
					continue
				}
				id := "ksc_" + string(rune('a'+w)) + strings.Repeat("x", i%7)
				if err := store.Add(indexSecret("team-a", id+"-"+string(rune('0'+i%10)), id)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := store.Add(indexSecret("team-b", "s1", "ksc_1")); err != nil {
		t.Fatal(err)
	}
	for _, v := range store.ListIndexFuncValues(name) {
		if !strings.HasPrefix(v, allNamespacesKey) {
			t.Errorf("the store indexed the namespaced key %q after GetIndexers: the full function got into it", v)
		}
	}
	if items, err := x.ByIndex(name, allNamespacesKey+"ksc_1"); err != nil || len(items) != 1 {
		t.Errorf("cluster-wide lookup of ksc_1: %d items, %v", len(items), err)
	}
}
