package main

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/binding"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// limits are the API server's own rates, in this run, for the writes an issue cannot
// avoid: the credential's create (the creators'), the Secret's create, the status patch
// and the Issued event (the manager's, as its service account, with the same clients).
type limits struct {
	creates, secrets, patches, events float64 // per second
	// cpu is the CPU time the four writes of one issue cost, every process together
	// (API server, etcd, the writing clients): the sum of each write's CPU per write.
	cpu time.Duration
}

// cpuRate is the issue rate the machine's cores allow when the four writes are all
// that runs and every core is busy: cores over their CPU per issue. Unlike rate, it
// does not move with the machine's other work.
func (l limits) cpuRate() float64 {
	if l.cpu <= 0 {
		return 0
	}
	return float64(runtime.NumCPU()) / l.cpu.Seconds()
}

// rate is the issue rate those writes allow when nothing else runs: one over the sum of
// their per-write costs.
func (l limits) rate() float64 {
	return 1 / (1/l.creates + 1/l.secrets + 1/l.patches + 1/l.events)
}

func (l limits) String() string {
	return fmt.Sprintf("credential creates %.0f/s, Secret creates %.0f/s, status patches %.0f/s, events %.0f/s: "+
		"1/(sum of the per-write costs) = %.0f credentials/s; by CPU: the four writes cost %.2f ms of CPU per issue "+
		"(API server, etcd and clients), %d cores / that = %.0f credentials/s",
		l.creates, l.secrets, l.patches, l.events, l.rate(), float64(l.cpu)/float64(time.Millisecond), runtime.NumCPU(), l.cpuRate())
}

// measureLimits times n of each write with clients concurrent goroutines, before any
// manager runs, in a namespace of its own, and deletes what it made (envtest runs no
// garbage collector and no namespace controller), so that the rounds start as before.
// admin creates the credentials, as the creators do; mgr (the manager's service account,
// under the shipped RBAC and the status policy) writes the rest.
func measureLimits(ctx context.Context, admin, mgr client.Client, n, clients int, prof *profiler) (limits, error) {
	var l limits
	ns := "scale-limit"
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return l, err
	}
	profiled, cpu0 := prof.start(ctx, "limit-creates"), sampleCPU()
	began := time.Now()
	if err := create(ctx, admin, ns, n, clients); err != nil {
		return l, err
	}
	l.creates = float64(n) / time.Since(began).Seconds()
	cpu1 := sampleCPU()
	l.cpu += cpu1.total(cpu0) / time.Duration(n)
	fmt.Printf("scale: limit: credential creates %.0f/s, %s\n", l.creates, cpu0.per(cpu1, n, "write"))
	if err := profiled(); err != nil {
		return l, err
	}
	var list iamv1alpha1.APICredentialList
	if err := admin.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return l, err
	}
	if len(list.Items) != n {
		return l, fmt.Errorf("limit: %d of %d credentials listed", len(list.Items), n)
	}
	now := time.Now().Truncate(time.Second)
	ring, err := binding.NewRing(now)
	if err != nil {
		return l, err
	}
	for _, w := range []struct {
		name string
		rate *float64
		do   func(i int) error
	}{
		{"status-patches", &l.patches, func(i int) error { return patchStatus(ctx, mgr, &list.Items[i], now) }},
		{"events", &l.events, func(i int) error { return mgr.Create(ctx, issuedEvent(&list.Items[i], now)) }},
		{"secrets", &l.secrets, func(i int) error { return mgr.Create(ctx, credentialSecret(&list.Items[i], ring, now)) }},
	} {
		profiled, cpu0 := prof.start(ctx, "limit-"+w.name), sampleCPU()
		if *w.rate, err = timed(ctx, n, clients, w.do); err != nil {
			return l, fmt.Errorf("limit: %s: %w", w.name, err)
		}
		cpu1 := sampleCPU()
		l.cpu += cpu1.total(cpu0) / time.Duration(n)
		fmt.Printf("scale: limit: %s %.0f/s, %s\n", w.name, *w.rate, cpu0.per(cpu1, n, "write"))
		if err := profiled(); err != nil {
			return l, err
		}
	}
	for _, obj := range []client.Object{&iamv1alpha1.APICredential{}, &corev1.Secret{}, &eventsv1.Event{}} {
		if err := admin.DeleteAllOf(ctx, obj, client.InNamespace(ns)); err != nil {
			return l, fmt.Errorf("limit: deleting %T: %w", obj, err)
		}
	}
	return l, nil
}

// timed runs do(0..n-1) with clients goroutines and returns the rate.
func timed(ctx context.Context, n, clients int, do func(int) error) (float64, error) {
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	began := time.Now()
	for range clients {
		wg.Go(func() {
			for i := range next {
				if err := do(i); err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return float64(n) / time.Since(began).Seconds(), first
}

// patchStatus writes what the manager's status patch for an issue writes, as a merge
// patch under the optimistic lock.
func patchStatus(ctx context.Context, c client.Client, cred *iamv1alpha1.APICredential, now time.Time) error {
	before := cred.DeepCopy()
	clientID, err := credential.NewClientID()
	if err != nil {
		return err
	}
	secret, err := credential.NewSecret()
	if err != nil {
		return err
	}
	t := metav1.NewTime(now)
	st := &cred.Status
	st.ClientID, st.SecretHash, st.IssuedAt = clientID, credential.Hash(secret), &t
	st.SecretRef = &iamv1alpha1.SecretReference{Name: cred.Name}
	st.ObservedGeneration = cred.Generation
	for _, cond := range []metav1.Condition{
		{Type: iamv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: iamv1alpha1.ReasonIssued,
			Message: fmt.Sprintf("client secret issued into Secret %q", cred.Name)},
		{Type: iamv1alpha1.ConditionActive, Status: metav1.ConditionTrue, Reason: iamv1alpha1.ReasonIssued,
			Message: "token servers accept this credential"},
	} {
		cond.ObservedGeneration = cred.Generation
		meta.SetStatusCondition(&st.Conditions, cond)
	}
	return c.Status().Patch(ctx, cred, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
}

// issuedEvent is an event like the manager's on an issue (events.k8s.io/v1).
func issuedEvent(cred *iamv1alpha1.APICredential, now time.Time) *eventsv1.Event {
	return &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: cred.Namespace, Name: fmt.Sprintf("%s.%x", cred.Name, now.UnixNano())},
		EventTime:  metav1.NewMicroTime(now), ReportingController: "keysmith-manager", ReportingInstance: "keysmith-manager-scale",
		Action: "Issue", Reason: iamv1alpha1.ReasonIssued, Type: corev1.EventTypeNormal,
		Note: fmt.Sprintf("issued client ID %s into Secret %q", strings.Repeat("x", 26), cred.Name),
		Regarding: corev1.ObjectReference{APIVersion: iamv1alpha1.GroupVersion.String(), Kind: "APICredential",
			Namespace: cred.Namespace, Name: cred.Name, UID: cred.UID, ResourceVersion: cred.ResourceVersion},
	}
}

// credentialSecret is a Secret of a credential Secret's size: the keys, the labels, the
// bookkeeping annotations (a binding of the same length) and the owner reference.
func credentialSecret(cred *iamv1alpha1.APICredential, ring *binding.Ring, now time.Time) *corev1.Secret {
	clientID, _ := credential.NewClientID()
	secret, _ := credential.NewSecret()
	bound := ring.Sign(binding.Subject{Namespace: cred.Namespace, Name: cred.Name, ClientID: clientID,
		SecretHash: credential.Hash(secret), IssuedAt: now})
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: cred.Namespace, Name: cred.Name,
			Labels: map[string]string{iamv1alpha1.CredentialLabel: cred.Name, "app.kubernetes.io/managed-by": "keysmith"},
			Annotations: map[string]string{
				iamv1alpha1.KeyVersionAnnotation: "0",
				iamv1alpha1.IssuedAtAnnotation:   now.UTC().Format(time.RFC3339),
				iamv1alpha1.BindingAnnotation:    bound,
			},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: iamv1alpha1.GroupVersion.String(), Kind: "APICredential",
				Name: cred.Name, UID: types.UID(cred.UID), Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			iamv1alpha1.DefaultClientIDKey: []byte(clientID), iamv1alpha1.DefaultClientSecretKey: []byte(secret),
			iamv1alpha1.DefaultTokenURLKey: []byte("http://127.0.0.1:8443/oauth2/token"),
		},
	}
}
