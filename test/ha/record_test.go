package ha

import (
	"context"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// recorder follows, through watches started before the first credential is created,
// every value each credential Secret's CLIENT_SECRET took (testenv.SecretValues), when
// each credential first became Ready, and every change of the leader lease's holder. It
// keeps hashes, never a secret.
type recorder struct {
	*testenv.SecretValues
	mu sync.Mutex
	// ready maps a credential's name to when it was first seen Ready=True.
	ready map[string]time.Time
	// holders are the lease's holders in the order seen, with when.
	holders []holderChange
	// errs are watches that ended or failed before the test stopped them: then the
	// recorder cannot vouch that it saw everything.
	errs []error
}

// holderChange is one holder of the leader lease and when the watch saw it take over.
type holderChange struct {
	identity string
	at       time.Time
}

func newRecorder() *recorder {
	return &recorder{ready: map[string]time.Time{}}
}

// start opens the three watches; they are established when it returns, and end with ctx.
func (r *recorder) start(ctx context.Context, c client.WithWatch) error {
	secrets, err := testenv.WatchSecretValues(ctx, c, tenantNamespace)
	if err != nil {
		return err
	}
	r.SecretValues = secrets
	creds, err := c.Watch(ctx, &iamv1alpha1.APICredentialList{}, client.InNamespace(tenantNamespace))
	if err != nil {
		return err
	}
	leases, err := c.Watch(ctx, &coordinationv1.LeaseList{}, client.InNamespace(systemNamespace), client.MatchingFields{"metadata.name": leaseName})
	if err != nil {
		creds.Stop()
		return err
	}
	go testenv.Follow(ctx, "APICredentials", creds, r.credential, r.fail)
	go testenv.Follow(ctx, "the leader Lease", leases, r.lease, r.fail)
	return nil
}

func (r *recorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *recorder) credential(t watch.EventType, obj client.Object) {
	cred := obj.(*iamv1alpha1.APICredential)
	if t == watch.Deleted || !meta.IsStatusConditionTrue(cred.Status.Conditions, iamv1alpha1.ConditionReady) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, seen := r.ready[cred.Name]; !seen {
		r.ready[cred.Name] = time.Now()
	}
}

func (r *recorder) lease(t watch.EventType, obj client.Object) {
	l := obj.(*coordinationv1.Lease)
	if t == watch.Deleted || l.Spec.HolderIdentity == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.holders); n == 0 || r.holders[n-1].identity != *l.Spec.HolderIdentity {
		r.holders = append(r.holders, holderChange{identity: *l.Spec.HolderIdentity, at: time.Now()})
	}
}

// readyCount is the number of credentials seen Ready.
func (r *recorder) readyCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ready)
}

// takeover returns the first holder other than old seen after t.
func (r *recorder) takeover(old string, t time.Time) (holderChange, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range r.holders {
		if h.identity != old && h.identity != "" && h.at.After(t) {
			return h, true
		}
	}
	return holderChange{}, false
}

// firstReadyAfter returns when the first credential not in before was seen Ready after t.
func (r *recorder) firstReadyAfter(t time.Time, before map[string]bool) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var first time.Time
	for name, at := range r.ready {
		if !before[name] && at.After(t) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first, !first.IsZero()
}

// problems returns the Secrets seen deleted and the watches that failed.
func (r *recorder) problems() (deleted []string, errs []error) {
	deleted, errs = r.Problems()
	r.mu.Lock()
	defer r.mu.Unlock()
	return deleted, append(errs, r.errs...)
}

// admissions counts the admission requests sent through the API server and their
// failures. Every request takes gate for reading; the kill takes it for writing, so that
// the leader is killed between two admission requests, never during one (see TestFailover).
type admissions struct {
	gate sync.RWMutex

	mu sync.Mutex
	// results are the requests' outcomes, with when each ended.
	results []admission
}

// admission is the outcome of one admission request.
type admission struct {
	kind string
	at   time.Time
	err  error
}

// do sends one admission request and records its outcome, unless ctx ended meanwhile.
func (a *admissions) do(ctx context.Context, kind string, req func() error) error {
	a.gate.RLock()
	err := req()
	a.gate.RUnlock()
	if ctx.Err() != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.results = append(a.results, admission{kind: kind, at: time.Now(), err: err})
	return err
}

// count returns, for requests of kind that ended within [from, to), how many were sent
// and how many failed, with the first few errors.
func (a *admissions) count(kind string, from, to time.Time) (total, failed int, errs []error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.results {
		if r.kind != kind || r.at.Before(from) || !r.at.Before(to) {
			continue
		}
		total++
		if r.err != nil {
			failed++
			if len(errs) < 5 {
				errs = append(errs, r.err)
			}
		}
	}
	return total, failed, errs
}
