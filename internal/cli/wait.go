package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// errWaitTimeout is returned by waitForCredential when the condition did not hold in time.
var errWaitTimeout = errors.New("timed out waiting")

// credentialCondition decides, from the credential as it is now, whether the wait is
// over (done) or failed for good (err, e.g. Stalled with InvalidSpec).
type credentialCondition func(*iamv1alpha1.APICredential) (done bool, err error)

// waitForCredential watches the credential ns/name until cond is done, fails, or timeout
// passes (then errWaitTimeout, wrapped with the last state seen). The watch starts at the
// resourceVersion of a first read, so no change between the two is missed; a watch the
// server closes is restarted. It returns the credential as it was when cond held.
func waitForCredential(ctx context.Context, c client.WithWatch, ns, name string, timeout time.Duration, cond credentialCondition) (*iamv1alpha1.APICredential, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	selector := client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)}
	var last *iamv1alpha1.APICredential
	for {
		list := &iamv1alpha1.APICredentialList{}
		if err := c.List(ctx, list, client.InNamespace(ns), selector); err != nil {
			return last, waitError(ctx, err, last)
		}
		if len(list.Items) == 1 {
			last = &list.Items[0]
			if done, err := cond(last); done || err != nil {
				return last, err
			}
		}
		w, err := c.Watch(ctx, &iamv1alpha1.APICredentialList{}, client.InNamespace(ns), selector,
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion, AllowWatchBookmarks: true}})
		if err != nil {
			return last, waitError(ctx, err, last)
		}
		done, err := watchUntil(ctx, w, &last, cond)
		w.Stop()
		if done || err != nil {
			return last, err
		}
		if ctx.Err() != nil {
			return last, waitError(ctx, ctx.Err(), last)
		}
	}
}

// watchUntil reads events until cond holds or fails (done, err), or the watch ends
// (false, nil) so the caller lists and watches again.
func watchUntil(ctx context.Context, w watch.Interface, last **iamv1alpha1.APICredential, cond credentialCondition) (bool, error) {
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case ev, open := <-w.ResultChan():
			if !open {
				return false, nil
			}
			switch ev.Type {
			case watch.Error:
				return false, nil
			case watch.Deleted:
				cred, _ := ev.Object.(*iamv1alpha1.APICredential)
				if cred != nil {
					*last = cred
					return false, userError(fmt.Sprintf("credential %q was deleted while waiting", cred.Name), "")
				}
			case watch.Added, watch.Modified:
				cred, ok := ev.Object.(*iamv1alpha1.APICredential)
				if !ok {
					continue
				}
				*last = cred
				if done, err := cond(cred); done || err != nil {
					return done, err
				}
			}
		}
	}
}

func waitError(ctx context.Context, err error, last *iamv1alpha1.APICredential) error {
	if ctx.Err() == context.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s", errWaitTimeout, describeState(last))
	}
	return err
}

// describeState is a short account of where a credential stands, for a timeout message.
func describeState(cred *iamv1alpha1.APICredential) string {
	if cred == nil {
		return "the credential was not seen"
	}
	ready := meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionReady)
	if ready == nil {
		return "the operator has not reported on it yet (is the keysmith manager running?)"
	}
	s := fmt.Sprintf("Ready=%s (%s)", ready.Status, ready.Reason)
	if ready.Message != "" {
		s += ": " + ready.Message
	}
	return s
}

// conditionIs reports whether the credential's condition typ has status and, when
// observed is true, was computed for the current generation.
func conditionIs(cred *iamv1alpha1.APICredential, typ string, status metav1.ConditionStatus, observed bool) bool {
	c := meta.FindStatusCondition(cred.Status.Conditions, typ)
	if c == nil || c.Status != status {
		return false
	}
	return !observed || c.ObservedGeneration == cred.Generation
}

// activeIs returns a condition that holds once Active has status for the current generation.
func activeIs(status metav1.ConditionStatus) credentialCondition {
	return func(cred *iamv1alpha1.APICredential) (bool, error) {
		return conditionIs(cred, iamv1alpha1.ConditionActive, status, true), nil
	}
}
