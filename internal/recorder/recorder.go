// Package recorder writes the manager's events (events.k8s.io/v1) without holding them.
//
// client-go's events broadcaster keeps every event it sent for 6 to 12 minutes, so that a
// repeat of the same event about the same object version becomes a series. keysmith's
// events are about one resource version each (an issue, a rotation, a transition), so no
// two are ever alike and that cache only holds memory: about 1.3 KB per event, unbounded,
// which is 10 000 events for 10 000 credentials issued at once and grows with the event
// rate (docs/benchmarks.md "Memory per credential", "Soak"). This recorder sends each
// event once, from a bounded queue, and keeps nothing once it is written. Like client-go,
// it drops events when its queue is full (counted in keysmith_events_dropped_total)
// rather than block a reconcile.
package recorder

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/tools/reference"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// QueueSize is how many events wait to be written before new ones are dropped (client-go's
// broadcaster drops past 1 000 too).
const QueueSize = 1000

// maxNote is the API server's limit on an event's note.
const maxNote = 1024

// Dropped counts events dropped because the queue was full or the API server refused
// them; registered with controller-runtime's metrics registry.
var Dropped = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "keysmith_events_dropped_total",
	Help: "Events the manager did not write: its queue was full, or the API server refused them.",
})

func init() { ctrlmetrics.Registry.MustRegister(Dropped) }

// Creator creates objects; a client.Client is one.
type Creator interface {
	Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error
}

// Recorder is an events.EventRecorder that writes each event once and keeps nothing.
// Start it with the manager (it is a manager.Runnable on every replica); events recorded
// before it starts wait in the queue.
type Recorder struct {
	client     Creator
	scheme     *runtime.Scheme
	controller string
	instance   string
	log        logr.Logger
	queue      chan *eventsv1.Event
	// Workers is how many events are written at once (default 2).
	Workers int
}

var _ events.EventRecorder = (*Recorder)(nil)

// New returns a recorder that writes through c as reporting controller controller (the
// instance is controller-hostname, as client-go names it).
func New(c Creator, scheme *runtime.Scheme, controller string, log logr.Logger) *Recorder {
	host, _ := os.Hostname()
	instance := controller
	if host != "" {
		instance += "-" + host
	}
	if len(instance) > 128 {
		instance = instance[:128]
	}
	return &Recorder{client: c, scheme: scheme, controller: controller, instance: instance, log: log,
		queue: make(chan *eventsv1.Event, QueueSize)}
}

// Eventf queues an event about regarding (and related, which may be nil).
func (r *Recorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	ref, err := reference.GetReference(r.scheme, regarding)
	if err != nil {
		r.log.Error(err, "not recording an event about an object without a reference", "reason", reason)
		return
	}
	now := time.Now()
	ev := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%v.%x", ref.Name, now.UnixNano()),
			Namespace: ref.Namespace,
		},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: r.controller,
		ReportingInstance:   r.instance,
		Action:              action,
		Reason:              reason,
		Regarding:           *ref,
		Type:                eventtype,
		Note:                truncate(fmt.Sprintf(note, args...), maxNote),
	}
	if ev.Namespace == "" {
		ev.Namespace = metav1.NamespaceDefault // where client-go puts events of cluster-scoped objects
	}
	if related != nil {
		if rel, err := reference.GetReference(r.scheme, related); err == nil {
			ev.Related = rel
		}
	}
	select {
	case r.queue <- ev:
	default:
		Dropped.Inc()
	}
}

// Start writes queued events until ctx ends, then those still queued, for a few seconds.
func (r *Recorder) Start(ctx context.Context) error {
	workers := r.Workers
	if workers <= 0 {
		workers = 2
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case ev := <-r.queue:
					r.write(ctx, ev)
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
	// What was recorded just before the stop still goes out, within a bound.
	drain, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		select {
		case ev := <-r.queue:
			r.write(drain, ev)
		default:
			return nil
		}
	}
}

// NeedLeaderElection is false: every replica records what it does (the webhook's replicas too).
func (r *Recorder) NeedLeaderElection() bool { return false }

// write creates the event, retrying twice on errors the API server may recover from.
func (r *Recorder) write(ctx context.Context, ev *eventsv1.Event) {
	err := r.client.Create(ctx, ev.DeepCopy())
	for attempt := 1; attempt < 3 && retriable(ctx, err); attempt++ {
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			err = r.client.Create(ctx, ev.DeepCopy())
		}
	}
	if err == nil || apierrors.IsAlreadyExists(err) {
		return
	}
	Dropped.Inc()
	r.log.Error(err, "event not written", "reason", ev.Reason,
		"regarding", ev.Regarding.Kind+" "+ev.Regarding.Namespace+"/"+ev.Regarding.Name)
}

// retriable says whether another attempt could write what err refused: not when it was
// written, refused for what it is (invalid, forbidden, its namespace gone or terminating),
// or ctx ended.
func retriable(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil && !apierrors.IsAlreadyExists(err) &&
		!apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) && !apierrors.IsNotFound(err)
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n]
}
