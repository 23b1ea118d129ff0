package controllers

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// countingSink is an events.k8s.io sink that counts the API writes it is asked for.
type countingSink struct {
	mu                        sync.Mutex
	creates, updates, patches int
	created                   chan struct{}
}

func (s *countingSink) Create(_ context.Context, e *eventsv1.Event) (*eventsv1.Event, error) {
	s.mu.Lock()
	s.creates++
	s.mu.Unlock()
	s.created <- struct{}{}
	return e, nil
}

func (s *countingSink) Update(_ context.Context, e *eventsv1.Event) (*eventsv1.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updates++
	return e, nil
}

func (s *countingSink) Patch(_ context.Context, e *eventsv1.Event, _ []byte) (*eventsv1.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.patches++
	return e, nil
}

// TestIssuedEventCost measures what the one Issued event per issued credential costs
// (issue 11 item 1): the API writes (one create each: the events.k8s.io recorder
// aggregates only repeats of one event about one object, never across credentials) and
// the bytes the broadcaster holds per event in its series cache, which keeps every event
// until its series is finished 6 to 12 minutes later (client-go tools/events
// finishSeries). The bytes are logged, not asserted; the writes are.
func TestIssuedEventCost(t *testing.T) {
	const n = 3000
	sink := &countingSink{created: make(chan struct{}, n)}
	b := events.NewBroadcaster(sink)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := b.StartRecordingToSinkWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	r := &APICredentialReconciler{Recorder: b.NewRecorder(scheme, "keysmith-manager")}
	creds := make([]*iamv1alpha1.APICredential, n)
	for i := range creds {
		creds[i] = &iamv1alpha1.APICredential{
			TypeMeta: metav1.TypeMeta{APIVersion: iamv1alpha1.GroupVersion.String(), Kind: "APICredential"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "scale-w4", Name: fmt.Sprintf("cred-%05d", i),
				UID: types.UID(fmt.Sprintf("0f8e6a52-3c1d-4a7b-9e2f-%012d", i)), ResourceVersion: fmt.Sprint(100000 + i)},
		}
	}
	before := heapInUse()
	// In batches well below the broadcaster's queue (1 000 events, dropped when full: a
	// loaded machine's sink falls behind a tight loop of 3 000), each batch sent before
	// the next is recorded.
	const batch = 250
	deadline := time.After(2 * time.Minute)
	for start := 0; start < n; start += batch {
		for _, cred := range creds[start:min(start+batch, n)] {
			// The note announce writes for an issue, with a client ID of the real length.
			r.event(cred, corev1.EventTypeNormal, iamv1alpha1.ReasonIssued, "Issue",
				fmt.Sprintf("issued client ID %s into Secret %q", "ks_0123456789abcdefghijklmnopqrstuv", cred.Name))
		}
		for range min(batch, n-start) {
			select {
			case <-sink.created:
			case <-deadline:
				sink.mu.Lock()
				defer sink.mu.Unlock()
				t.Fatalf("the sink saw %d of %d event creates", sink.creates, n)
			}
		}
	}
	held := heapInUse() - before
	runtime.KeepAlive(creds)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.creates != n || sink.updates != 0 || sink.patches != 0 {
		t.Errorf("API writes for %d Issued events: %d creates, %d updates, %d patches; want one create each", n, sink.creates, sink.updates, sink.patches)
	}
	t.Logf("%d Issued events: %d API writes (creates), %.0f bytes per event held by the broadcaster until its series is finished (6-12 min)",
		n, sink.creates, float64(held)/n)
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
