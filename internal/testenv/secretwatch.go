package testenv

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// SecretValues follows, through a watch of one namespace's Secrets started before the
// first credential is created there, every value each Secret's CLIENT_SECRET took for
// each key version, and when the watch first saw each. It keeps hashes, never a secret.
// The tests that count mints (no secret minted twice for one key version) read it.
type SecretValues struct {
	mu sync.Mutex
	// hashes maps a Secret's name to its key versions, each to the hashes seen for it.
	hashes map[string]map[string]map[string]struct{}
	// seen maps a Secret's name to when each new CLIENT_SECRET value was first seen.
	seen    map[string][]time.Time
	deleted []string
	errs    []error
}

// WatchSecretValues opens the watch of namespace's Secrets; it is established when this
// returns, and ends with ctx.
func WatchSecretValues(ctx context.Context, c client.WithWatch, namespace string) (*SecretValues, error) {
	w, err := c.Watch(ctx, &corev1.SecretList{}, client.InNamespace(namespace))
	if err != nil {
		return nil, err
	}
	r := &SecretValues{hashes: map[string]map[string]map[string]struct{}{}, seen: map[string][]time.Time{}}
	go Follow(ctx, "Secrets", w, r.record, r.fail)
	return r, nil
}

// Follow calls handle for each event of w until ctx ends. A watch that ends before ctx
// does, or reports an error, is passed to fail: then whoever follows it cannot vouch
// that it saw everything.
func Follow(ctx context.Context, what string, w watch.Interface, handle func(watch.EventType, client.Object), fail func(error)) {
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ResultChan():
			if !ok {
				if ctx.Err() == nil {
					fail(fmt.Errorf("the watch of %s ended early", what))
				}
				return
			}
			obj, isObj := ev.Object.(client.Object)
			if ev.Type == watch.Error || !isObj {
				fail(fmt.Errorf("the watch of %s failed: %v", what, ev.Object))
				return
			}
			if ev.Type != watch.Bookmark {
				handle(ev.Type, obj)
			}
		}
	}
}

func (r *SecretValues) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *SecretValues) record(t watch.EventType, obj client.Object) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t == watch.Deleted {
		r.deleted = append(r.deleted, s.Name)
		return
	}
	value, ok := s.Data[iamv1alpha1.DefaultClientSecretKey]
	if !ok {
		return
	}
	version := s.Annotations[iamv1alpha1.KeyVersionAnnotation]
	if r.hashes[s.Name] == nil {
		r.hashes[s.Name] = map[string]map[string]struct{}{}
	}
	if r.hashes[s.Name][version] == nil {
		r.hashes[s.Name][version] = map[string]struct{}{}
	}
	h := credential.Hash(string(value))
	if _, ok := r.hashes[s.Name][version][h]; !ok {
		r.seen[s.Name] = append(r.seen[s.Name], time.Now())
	}
	r.hashes[s.Name][version][h] = struct{}{}
}

// Counts returns, for a Secret, its key versions and how many CLIENT_SECRET values each took.
func (r *SecretValues) Counts(secret string) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for version, hashes := range r.hashes[secret] {
		out[version] = len(hashes)
	}
	return out
}

// Secrets is how many Secrets were seen with a CLIENT_SECRET.
func (r *SecretValues) Secrets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.hashes)
}

// SeenHash says whether the Secret was seen with a CLIENT_SECRET of this hash under this
// key version.
func (r *SecretValues) SeenHash(secret, version, hash string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.hashes[secret][version][hash]
	return ok
}

// LastSeenBefore returns when the watch first saw the newest CLIENT_SECRET value of a
// Secret that it saw before t.
func (r *SecretValues) LastSeenBefore(secret string, t time.Time) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var last time.Time
	for _, at := range r.seen[secret] {
		if at.Before(t) {
			last = at
		}
	}
	return last, !last.IsZero()
}

// Problems returns the Secrets seen deleted and the watch's failures.
func (r *SecretValues) Problems() (deleted []string, errs []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.deleted), slices.Clone(r.errs)
}
