package controllers

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/recorder"
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

// countingCreator is the recorder's client: it counts the events it is asked to create.
type countingCreator struct {
	mu      sync.Mutex
	creates int
	created chan struct{}
}

func (c *countingCreator) Create(_ context.Context, obj client.Object, _ ...client.CreateOption) error {
	if _, ok := obj.(*eventsv1.Event); !ok {
		return fmt.Errorf("not an event: %T", obj)
	}
	c.mu.Lock()
	c.creates++
	c.mu.Unlock()
	c.created <- struct{}{}
	return nil
}

// TestIssuedEventCost measures what the one Issued event per issued credential costs
// (issue 11 item 1), through client-go's events.k8s.io broadcaster (what
// mgr.GetEventRecorder gives) and through the manager's recorder (internal/recorder):
// the API writes (one create each: neither aggregates across credentials) and the bytes
// still held once every event is written. The broadcaster keeps every event until its
// series is finished 6 to 12 minutes later (client-go tools/events finishSeries); the
// manager's recorder keeps nothing. The writes are asserted, the bytes logged, and the
// recorder must hold less than a tenth of the broadcaster's.
func TestIssuedEventCost(t *testing.T) {
	const n = 3000
	creds := make([]*iamv1alpha1.APICredential, n)
	for i := range creds {
		creds[i] = &iamv1alpha1.APICredential{
			TypeMeta: metav1.TypeMeta{APIVersion: iamv1alpha1.GroupVersion.String(), Kind: "APICredential"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "scale-w4", Name: fmt.Sprintf("cred-%05d", i),
				UID: types.UID(fmt.Sprintf("0f8e6a52-3c1d-4a7b-9e2f-%012d", i)), ResourceVersion: fmt.Sprint(100000 + i)},
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	sink := &countingSink{created: make(chan struct{}, n)}
	b := events.NewBroadcaster(sink)
	if err := b.StartRecordingToSinkWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	broadcasterHeld := issueEvents(t, b.NewRecorder(scheme, "keysmith-manager"), creds, sink.created)
	sink.mu.Lock()
	if sink.creates != n || sink.updates != 0 || sink.patches != 0 {
		t.Errorf("client-go broadcaster: %d creates, %d updates, %d patches for %d Issued events; want one create each", sink.creates, sink.updates, sink.patches, n)
	}
	sink.mu.Unlock()

	creator := &countingCreator{created: make(chan struct{}, n)}
	rec := recorder.New(creator, scheme, "keysmith-manager", logr.Discard())
	go func() { _ = rec.Start(ctx) }()
	recorderHeld := issueEvents(t, rec, creds, creator.created)
	creator.mu.Lock()
	if creator.creates != n {
		t.Errorf("manager's recorder: %d creates for %d Issued events; want one create each", creator.creates, n)
	}
	creator.mu.Unlock()
	runtime.KeepAlive(creds)
	t.Logf("%d Issued events, one API create each; bytes held per event once written: client-go broadcaster %.0f (until its series is finished, 6-12 min), the manager's recorder %.0f",
		n, broadcasterHeld, recorderHeld)
	if recorderHeld > broadcasterHeld/10 {
		t.Errorf("the manager's recorder holds %.0f bytes per written event, the broadcaster %.0f: it should hold next to nothing", recorderHeld, broadcasterHeld)
	}
}

// issueEvents records the Issued event of each credential through rec, in batches well
// below both recorders' queues (1 000 events, dropped when full: a loaded machine's sink
// falls behind a tight loop of 3 000), each batch written before the next is recorded,
// and returns the live heap per event it grew by once all are written.
func issueEvents(t *testing.T, rec events.EventRecorder, creds []*iamv1alpha1.APICredential, created <-chan struct{}) float64 {
	t.Helper()
	r := &APICredentialReconciler{Recorder: rec}
	before := heapInUse()
	const batch = 250
	deadline := time.After(2 * time.Minute)
	for start := 0; start < len(creds); start += batch {
		end := min(start+batch, len(creds))
		for _, cred := range creds[start:end] {
			// The note announce writes for an issue, with a client ID of the real length.
			r.event(cred, corev1.EventTypeNormal, iamv1alpha1.ReasonIssued, "Issue",
				fmt.Sprintf("issued client ID %s into Secret %q", "ks_0123456789abcdefghijklmnopqrstuv", cred.Name))
		}
		for range end - start {
			select {
			case <-created:
			case <-deadline:
				t.Fatalf("%T: the sink saw fewer than %d event creates", rec, len(creds))
			}
		}
	}
	return float64(heapInUse()-before) / float64(len(creds))
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
