package tokenserver

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// UsageReporter batches the last time and client address each credential was used and
// patches them into its status at most once per interval, so API writes stay bounded
// whatever the request rate. Recording takes no lock shared by all requests.
type UsageReporter struct {
	client   client.Client
	interval time.Duration
	cells    sync.Map // types.NamespacedName -> *usageCell
	metrics  *metrics
}

type usageCell struct {
	at    atomic.Int64 // unix seconds
	addr  atomic.Pointer[string]
	dirty atomic.Bool
}

// NewUsageReporter returns a reporter that patches status through c every interval.
func NewUsageReporter(c client.Client, interval time.Duration) *UsageReporter {
	return &UsageReporter{client: c, interval: interval}
}

// Record notes that the credential was used from addr at the given time.
func (u *UsageReporter) Record(c *Credential, addr string, at time.Time) {
	v, ok := u.cells.Load(c.Key)
	if !ok {
		v, _ = u.cells.LoadOrStore(c.Key, &usageCell{})
	}
	cell := v.(*usageCell)
	cell.at.Store(at.Unix())
	if p := cell.addr.Load(); p == nil || *p != addr {
		a := addr // only a changed address is moved to the heap
		cell.addr.Store(&a)
	}
	if !cell.dirty.Load() {
		cell.dirty.Store(true)
	}
}

// Start flushes every interval until ctx ends (a controller-runtime Runnable).
func (u *UsageReporter) Start(ctx context.Context) error {
	t := time.NewTicker(u.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			u.Flush(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
			u.Flush(ctx)
		}
	}
}

// Flush patches the status of every credential used since the last flush: one merge
// patch of lastUsedTime and lastUsedAddress each.
func (u *UsageReporter) Flush(ctx context.Context) {
	u.cells.Range(func(k, v any) bool {
		cell := v.(*usageCell)
		if !cell.dirty.Swap(false) {
			return true
		}
		key := k.(types.NamespacedName)
		err := u.patch(ctx, key, time.Unix(cell.at.Load(), 0), *cell.addr.Load())
		switch {
		case apierrors.IsNotFound(err):
			u.cells.Delete(key)
			u.count("not_found")
		case err != nil:
			cell.dirty.Store(true) // try again next time
			u.count("error")
		default:
			u.count("ok")
		}
		return true
	})
}

func (u *UsageReporter) count(result string) {
	if u.metrics != nil {
		u.metrics.usagePatches.WithLabelValues(result).Inc()
	}
}

func (u *UsageReporter) patch(ctx context.Context, key types.NamespacedName, at time.Time, addr string) error {
	t := metav1.NewTime(at)
	body, err := json.Marshal(map[string]any{"status": map[string]any{"lastUsedTime": &t, "lastUsedAddress": addr}})
	if err != nil {
		return err
	}
	cred := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	return u.client.Status().Patch(ctx, cred, client.RawPatch(types.MergePatchType, body))
}
