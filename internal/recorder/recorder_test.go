package recorder

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// TestWritesEventsTheAPIServerAccepts records events about a namespaced credential and a
// cluster-scoped Namespace through a real API server, and reads them back: every field
// the events.k8s.io/v1 validation requires is set, a note longer than the API's 1 KiB is
// cut, and an event recorded before Start is written once Start runs.
func TestWritesEventsTheAPIServerAccepts(t *testing.T) {
	_, cfg := testenv.StartT(t)
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	cred := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "billing"},
		Spec: iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}}}}
	if err := c.Create(ctx, cred); err != nil {
		t.Fatal(err)
	}
	// The recorder's log goes to the test's: an event it dropped says why.
	rec := New(c, testenv.Scheme(), "keysmith-manager", testr.New(t))
	rec.Eventf(cred, nil, corev1.EventTypeNormal, iamv1alpha1.ReasonIssued, "Issue", "issued client ID %s", "ks_x")
	rec.Eventf(ns, cred, corev1.EventTypeWarning, "Refused", "Create", "%s", strings.Repeat("é", 700))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- rec.Start(runCtx) }()

	var list eventsv1.EventList
	for ctx.Err() == nil {
		if err := c.List(ctx, &list); err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
		if len(list.Items) == 2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 {
		t.Fatalf("%d events written, want 2", len(list.Items))
	}
	for _, ev := range list.Items {
		if ev.ReportingController != "keysmith-manager" || !strings.HasPrefix(ev.ReportingInstance, "keysmith-manager") || ev.EventTime.IsZero() {
			t.Errorf("%s: reporting %q/%q at %v", ev.Name, ev.ReportingController, ev.ReportingInstance, ev.EventTime)
		}
		switch ev.Regarding.Kind {
		case "APICredential":
			if ev.Namespace != "team-a" || ev.Regarding.Name != "billing" || ev.Regarding.UID != cred.UID || ev.Reason != iamv1alpha1.ReasonIssued ||
				ev.Action != "Issue" || ev.Type != corev1.EventTypeNormal || ev.Note != "issued client ID ks_x" || ev.Related != nil {
				t.Errorf("credential event: %+v", ev)
			}
		case "Namespace":
			if ev.Namespace != metav1.NamespaceDefault || ev.Related == nil || ev.Related.Name != "billing" || len(ev.Note) > maxNote || !strings.HasPrefix(ev.Note, "éé") {
				t.Errorf("namespace event: namespace %q, related %v, note of %d bytes", ev.Namespace, ev.Related, len(ev.Note))
			}
			if !strings.HasSuffix(ev.Note, "é") {
				t.Errorf("the note was cut inside a character: %q", ev.Note[len(ev.Note)-4:])
			}
		default:
			t.Errorf("event about %s", ev.Regarding.Kind)
		}
	}
}

// TestDropsWhenTheQueueIsFull: with nothing writing, the recorder queues QueueSize events
// and drops (and counts) the rest instead of blocking the reconcile that records them.
func TestDropsWhenTheQueueIsFull(t *testing.T) {
	rec := New(nil, testenv.Scheme(), "keysmith-manager", logr.Discard())
	cred := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "billing"}}
	before := dropped(t)
	finished := make(chan struct{})
	go func() {
		for range QueueSize + 10 {
			rec.Eventf(cred, nil, corev1.EventTypeNormal, iamv1alpha1.ReasonIssued, "Issue", "issued")
		}
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatal("Eventf blocked on a full queue")
	}
	if got := dropped(t) - before; got != 10 {
		t.Errorf("dropped %v events, want 10", got)
	}
	if len(rec.queue) != QueueSize {
		t.Errorf("%d events queued, want %d", len(rec.queue), QueueSize)
	}
}

func dropped(t *testing.T) float64 {
	t.Helper()
	var m dto.Metric
	if err := Dropped.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
