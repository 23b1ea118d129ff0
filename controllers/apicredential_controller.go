// Package controllers holds the keysmith reconcilers.
package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/binding"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// apiNameIndex indexes APICredentials by the names of the APIs they grant, so that a
// change to an APIDefinition reaches exactly the credentials that use it.
const apiNameIndex = "spec.apis.name"

// conflictRecheck is how often a credential blocked by a foreign Secret looks again.
const conflictRecheck = time.Minute

// APICredentialReconciler issues the client ID and secret of APICredentials, writes them
// once into a Secret, keeps only the hash in status, and rotates them on request.
type APICredentialReconciler struct {
	// Client reads from the manager's cache (Secrets only if they carry
	// iamv1alpha1.CredentialLabel) and writes to the API server.
	client.Client
	// APIReader reads from the API server directly. It confirms the cache before any
	// secret is minted or rotated, and finds Secrets the cache does not hold.
	APIReader client.Reader
	// Scheme resolves the owner references of Secrets.
	Scheme *runtime.Scheme
	// Clock is the time source; tests move it.
	Clock clock.PassiveClock
	// Recorder emits events on transitions: issued, rotated, deactivated, expired, invalid.
	Recorder events.EventRecorder
	// DefaultTokenURL is written into credential Secrets when no granted API names its
	// own spec.tokenURL. Empty means no token URL key.
	DefaultTokenURL string
	// BindingKeys holds the keys with which the operator binds a Secret's data to its
	// credential (DESIGN §2 item 9). Required.
	BindingKeys *BindingKeyReconciler
	// MaxConcurrentReconciles is how many credentials are reconciled at once (0: one).
	// Concurrency is safe because every mint, rotation and adoption is confirmed live
	// (the Secret's create-or-conflict, the status patch's optimistic lock), and what
	// reconciles share (the binding key ring, metrics, the cache) is safe for concurrent use.
	MaxConcurrentReconciles int

	// echoes holds the resourceVersions of this reconciler's own Secret writes, whose
	// watch events wake nothing (ownEcho).
	echoes ownWrites
}

// ownWrites remembers, per Secret, this reconciler's write to it, from before the write
// is sent until the watch delivers it back (or any later event of the Secret arrives).
// The reconcile that wrote is responsible for what follows: it records the outcome in
// status, or fails and is retried with backoff; a crash restarts every reconcile. Waking
// the credential again on the echo of its own write confirms nothing new, and that
// second reconcile mostly finds the Secret in the cache before the status patch, decides
// something other than nothing, and pays live reads and a retry to learn that its cache
// was behind (docs/benchmarks.md "Scale").
//
// The echo often arrives before the write's response: an event of a Secret whose write is
// in flight is held back, and once the response names the resourceVersion written, any
// held-back event of another version (someone else's write) wakes the credential after all.
type ownWrites struct {
	mu     sync.Mutex
	writes map[types.NamespacedName]*ownWrite
	wake   chan event.GenericEvent // nil without a controller (tests that call Reconcile)
}

// ownWrite is one write: in flight until its response, then awaiting its echo.
type ownWrite struct {
	inFlight bool
	owner    string      // the name of the credential whose reconcile writes
	rv       string      // the version written, once the response arrived
	heldBack []heldEvent // events held back while in flight
}

// heldEvent is an event held back while a write was in flight: its resourceVersion and
// the credentials its Secret names as controller (before and after), which the watch of
// owned Secrets would have woken.
type heldEvent struct {
	rv     string
	owners []string
}

// begin records that owner's write of the Secret key is about to be sent. Two
// credentials can name one Secret (spec.secretTemplate.name): a write begun while
// another credential's is in flight keeps the events held back for that one, which
// then wake whoever the Secret names, never nobody.
func (o *ownWrites) begin(key types.NamespacedName, owner client.Object) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.writes == nil {
		o.writes = map[types.NamespacedName]*ownWrite{}
	}
	w := &ownWrite{inFlight: true, owner: owner.GetName()}
	if prev := o.writes[key]; prev != nil && prev.inFlight {
		w.heldBack = prev.heldBack
	}
	o.writes[key] = w
}

// done records the response of owner's write begun for key: written is the Secret as
// written, nil when the write failed. Events held back that were not this write wake
// owner and every credential the Secret named as controller in them. A write whose entry
// another credential's write replaced records nothing: its echo wakes it, which costs a
// reconcile and loses nothing.
func (o *ownWrites) done(ctx context.Context, key types.NamespacedName, written client.Object, owner client.Object) {
	o.mu.Lock()
	w := o.writes[key]
	if w == nil || !w.inFlight || w.owner != owner.GetName() {
		o.mu.Unlock()
		return
	}
	var wakes []string
	echoed := false
	for _, e := range w.heldBack {
		if written != nil && e.rv == written.GetResourceVersion() {
			echoed = true
			continue
		}
		for _, name := range append([]string{owner.GetName()}, e.owners...) {
			if !slices.Contains(wakes, name) {
				wakes = append(wakes, name)
			}
		}
	}
	if written == nil || echoed {
		delete(o.writes, key)
	} else {
		w.inFlight, w.rv, w.heldBack = false, written.GetResourceVersion(), nil
	}
	wake := o.wake
	o.mu.Unlock()
	if wake == nil {
		return
	}
	for _, name := range wakes {
		select {
		case wake <- event.GenericEvent{Object: &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
			Namespace: key.Namespace, Name: name}}}:
		case <-ctx.Done():
			return
		}
	}
}

// echo reports whether the event of obj (old: the object before an update, or nil) is to
// be held back: the echo of this reconciler's last write to it, or an event while that
// write is in flight. Any event after the write's response ends the wait for the echo.
func (o *ownWrites) echo(obj, old client.Object) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	key := client.ObjectKeyFromObject(obj)
	w, ok := o.writes[key]
	switch {
	case !ok:
		return false
	case w.inFlight:
		e := heldEvent{rv: obj.GetResourceVersion()}
		for _, x := range []client.Object{obj, old} {
			if x == nil {
				continue
			}
			if ref := metav1.GetControllerOf(x); ref != nil && ref.Kind == "APICredential" && !slices.Contains(e.owners, ref.Name) {
				e.owners = append(e.owners, ref.Name)
			}
		}
		w.heldBack = append(w.heldBack, e)
		return true
	default:
		delete(o.writes, key)
		return w.rv == obj.GetResourceVersion()
	}
}

// awaiting is how many writes still wait for their echo or their response (tests).
func (o *ownWrites) awaiting() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.writes)
}

// notOwnEcho lets through every event of a credential Secret except the echo of this
// reconciler's own write to it. A deletion always passes.
func (r *APICredentialReconciler) notOwnEcho() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return !r.echoes.echo(e.Object, nil) },
		UpdateFunc: func(e event.UpdateEvent) bool { return !r.echoes.echo(e.ObjectNew, e.ObjectOld) },
		DeleteFunc: func(event.DeleteEvent) bool { return true },
	}
}

// +kubebuilder:rbac:groups=iam.keysmith.dev,resources=apicredentials,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=iam.keysmith.dev,resources=apicredentials/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=iam.keysmith.dev,resources=apicredentials/finalizers,verbs=update
// +kubebuilder:rbac:groups=iam.keysmith.dev,resources=apidefinitions,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one APICredential to its declared state: resolve its grants against
// the catalog, apply the write-once table to its Secret, prune expired previous secrets,
// and come back exactly when the next deadline falls. Whatever happens, the deferred
// finish reports it in status (a failure too), and only then in events and metrics.
func (r *APICredentialReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	cred := &iamv1alpha1.APICredential{}
	if err := r.Get(ctx, req.NamespacedName, cred); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !cred.DeletionTimestamp.IsZero() {
		// The Secret goes with it through its owner reference; nothing is issued, rotated
		// or adopted any more. Only Active follows: token servers refuse it now.
		return r.markTerminating(ctx, cred)
	}
	now := r.Clock.Now()
	before := cred.DeepCopy()
	out := &outcome{facts: readinessFacts{secretName: secretName(cred)}}
	defer func() { retErr = r.finish(ctx, before, cred, out, now, retErr) }()

	grants, err := r.resolveGrants(ctx, cred)
	if err != nil {
		return ctrl.Result{}, err
	}
	if out.facts.invalidSpec = grants.invalid; grants.invalid == nil {
		cred.Status.Account = grants.account
		if !cred.Spec.IssuesSecret() { // spec.issueSecret: false: a client ID, no secret, no Secret
			if err := r.reconcileSecretless(ctx, cred, now, out); err != nil {
				return ctrl.Result{}, err
			}
		} else if err := r.reconcileSecret(ctx, cred, grants.tokenURL, now, out); err != nil {
			return ctrl.Result{}, err
		}
	}
	pruneExpiredSecrets(cred, now)
	res = requeueFor(cred, out.facts, now)
	if grants.invalid != nil && res.RequeueAfter == 0 {
		// Retrying cannot fix the spec, a change to it or to the catalog will. (A terminal
		// error would drop a pending RequeueAfter, such as the end of a previous secret's
		// grace period, so it is used only without one.)
		return res, reconcile.TerminalError(grants.invalid)
	}
	return res, nil
}

// outcome is what one reconcile found and did, for the deferred status step.
type outcome struct {
	// facts feed computeReadiness.
	facts readinessFacts
	// done is the Secret action whose result status now records; it is announced
	// (events, metrics, logs) once the status patch succeeded.
	done secretAction
}

// reconcileSecret applies the write-once table to the credential's Secret and records
// what was issued or adopted in status. The facts are gathered once and confirmed on the
// API server before any write or adoption, then decided once. A Create that finds the
// Secret already there is the confirmation that it exists (the cache did not hold it):
// the table decides again from a live read, and never mints a second secret.
func (r *APICredentialReconciler) reconcileSecret(ctx context.Context, cred *iamv1alpha1.APICredential, tokenURL string, now time.Time, out *outcome) error {
	ring, err := r.BindingKeys.Ring(ctx)
	if err != nil {
		return err
	}
	secret, facts, action, err := r.gatherAndDecide(ctx, cred, ring, now)
	if err != nil {
		return err
	}
	out.facts.secret = action.state()
	err = r.act(ctx, cred, action, secret, facts, ring, tokenURL, now, out)
	if action != actionMint || !apierrors.IsAlreadyExists(err) {
		return err
	}
	if secret, err = r.liveSecret(ctx, cred); err != nil {
		return err
	}
	if facts, err = r.gatherSecretFacts(ctx, cred, secret, ring); err != nil {
		return err
	}
	if action = decideSecret(cred, facts, now); action == actionMint {
		return errors.New("the credential's Secret was created and deleted meanwhile; retrying")
	}
	out.facts.secret = action.state()
	return r.act(ctx, cred, action, secret, facts, ring, tokenURL, now, out)
}

// gatherAndDecide reads the facts of the credential's Secret from the cache and decides
// what to do. Unless that is nothing, it confirms them first on the API server (a cache
// behind must never look like a crash, a deletion or a change) and decides on those.
//
// The confirmation is one live read of the credential (its resourceVersion must be the
// cache's) and, unless the decision is to mint, one live read of the Secret. A Secret
// the cache does not hold is not read live before a mint: the Create that follows is
// the confirmation of its absence (AlreadyExists makes reconcileSecret decide again from
// a live read, and nothing is minted twice). Every other decision about a Secret the
// cache does not hold (a rotation re-creating it, a report that it is missing) and every
// decision about one it holds (a trimmed copy) reads the Secret live first.
func (r *APICredentialReconciler) gatherAndDecide(ctx context.Context, cred *iamv1alpha1.APICredential, ring *binding.Ring, now time.Time) (*corev1.Secret, secretFacts, secretAction, error) {
	secret, err := r.cachedSecret(ctx, cred)
	if err != nil {
		return nil, secretFacts{}, actionNone, err
	}
	// No client-ID lookup here: whether another credential holds the client ID never
	// decides between nothing and something (decideSecret returns actionNone before it
	// looks), and anything else is decided again below from live facts that have it.
	facts := cachedSecretFacts(cred, secret, ring)
	action := decideSecret(cred, facts, now)
	if action == actionNone {
		return secret, facts, actionNone, nil
	}
	// Before writing, adopting or reporting a problem, make sure the cache was not
	// behind, and that no other credential holds a client ID status does not record.
	if err := r.confirmCredential(ctx, cred); err != nil {
		return nil, secretFacts{}, actionNone, err
	}
	if secret == nil && action == actionMint {
		return nil, facts, actionMint, nil // confirmed by the Create (create-or-conflict)
	}
	if secret, err = r.liveSecret(ctx, cred); err != nil {
		return nil, secretFacts{}, actionNone, err
	}
	if facts, err = r.gatherSecretFacts(ctx, cred, secret, ring); err != nil {
		return nil, secretFacts{}, actionNone, err
	}
	return secret, facts, decideSecret(cred, facts, now), nil
}

// cachedSecret returns the credential's Secret from the manager's cache, or nil if the
// cache holds none (which a Secret that lost the credential label also gives: the caller
// confirms any decision other than nothing on the API server).
func (r *APICredentialReconciler) cachedSecret(ctx context.Context, cred *iamv1alpha1.APICredential) (*corev1.Secret, error) {
	key := client.ObjectKey{Namespace: cred.Namespace, Name: secretName(cred)}
	secret := &corev1.Secret{}
	if err := r.Get(ctx, key, secret); apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading Secret %s: %w", key, err)
	}
	return secret, nil
}

// act carries out the decision. Any write starts from the live Secret that
// gatherAndDecide confirmed, never from the cache's trimmed copy.
func (r *APICredentialReconciler) act(ctx context.Context, cred *iamv1alpha1.APICredential, action secretAction, secret *corev1.Secret, facts secretFacts, ring *binding.Ring, tokenURL string, now time.Time, out *outcome) error {
	switch action {
	case actionMint:
		if err := r.issue(ctx, cred, ring, tokenURL, now); err != nil {
			return err
		}
	case actionRotate:
		if err := r.rotate(ctx, cred, secret, facts, ring, tokenURL, now); err != nil {
			return err
		}
	case actionAdopt, actionRebind:
		r.adopt(ctx, cred, facts, now)
	case actionAdoptRotation:
		r.retirePrevious(cred, facts.issuedAt)
		r.adopt(ctx, cred, facts, now)
	}
	out.done = action
	switch action {
	case actionAdopt, actionRebind, actionAdoptRotation, actionBind:
		return r.bind(ctx, cred, secret, ring)
	}
	return nil
}

// gatherSecretFacts reads the facts of the live Secret and looks its client ID up in the
// client-ID index: the manager's cache when status already records that client ID for
// this credential, else the API server (a cache behind must not let two credentials
// adopt one client ID).
func (r *APICredentialReconciler) gatherSecretFacts(ctx context.Context, cred *iamv1alpha1.APICredential, secret *corev1.Secret, ring *binding.Ring) (secretFacts, error) {
	f := readSecretFacts(cred, secret, ring)
	if !f.exists || !credential.ValidClientID(f.clientID) {
		return f, nil
	}
	var index client.Reader = r.Client
	if cred.Status.SecretHash == "" || cred.Status.ClientID != f.clientID {
		index = r.APIReader
	}
	var err error
	f.heldElsewhere, err = clientIDHeldElsewhere(ctx, index, cred, f.clientID)
	return f, err
}

// clientIDHeldElsewhere reports whether the status of an APICredential other than cred,
// in any namespace, holds clientID.
func clientIDHeldElsewhere(ctx context.Context, c client.Reader, cred *iamv1alpha1.APICredential, clientID string) (bool, error) {
	var list iamv1alpha1.APICredentialList
	if err := c.List(ctx, &list, client.MatchingFields{iamv1alpha1.ClientIDField: clientID}); err != nil {
		return false, fmt.Errorf("looking up the holders of the Secret's client ID: %w", err)
	}
	for i := range list.Items {
		if other := &list.Items[i]; other.Namespace != cred.Namespace || other.Name != cred.Name {
			return true, nil
		}
	}
	return false, nil
}

// liveSecret reads the credential's Secret from the API server, or nil if there is none.
func (r *APICredentialReconciler) liveSecret(ctx context.Context, cred *iamv1alpha1.APICredential) (*corev1.Secret, error) {
	key := client.ObjectKey{Namespace: cred.Namespace, Name: secretName(cred)}
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s: %w", key, err)
	}
	return secret, nil
}

// errCacheBehind makes the reconcile retry once the cache has caught up.
var errCacheBehind = errors.New("the cached APICredential is older than the API server's; retrying")

// confirmCredential re-reads the credential from the API server. It fails when the
// cached credential is stale, so that no decision to mint or rotate rests on old data.
func (r *APICredentialReconciler) confirmCredential(ctx context.Context, cred *iamv1alpha1.APICredential) error {
	live := &iamv1alpha1.APICredential{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(cred), live); err != nil {
		return fmt.Errorf("reading APICredential: %w", err)
	}
	if live.ResourceVersion != cred.ResourceVersion {
		return errCacheBehind
	}
	return nil
}

// finish is the deferred status step: it computes the conditions from the facts and the
// reconcile's error (a failure is Ready=Unknown, Reconciling=True, with the error's
// message), writes status once, and only once that succeeded says what happened (events,
// metrics) and removes an acted-on rebind request. An adoption whose status patch failed
// is not announced: it was not recorded.
func (r *APICredentialReconciler) finish(ctx context.Context, before, cred *iamv1alpha1.APICredential, out *outcome, now time.Time, reconcileErr error) error {
	if reconcileErr != nil && !errors.Is(reconcileErr, reconcile.TerminalError(nil)) {
		out.facts.unfinished = reconcileErr
	}
	applyReadiness(cred, computeReadiness(cred, out.facts, now))
	if err := r.patchStatus(ctx, before, cred); err != nil {
		return errors.Join(reconcileErr, err)
	}
	r.announce(ctx, before, cred, out.done)
	if reconcileErr != nil {
		return reconcileErr // a rebind request is kept until the Secret step has run and acted on it
	}
	return r.settleRebind(ctx, before, cred, out.done)
}

// announce says, in events, metrics and logs, what the status just written records: an
// issue, a rotation, an adoption or a rebind, and a change of readiness.
func (r *APICredentialReconciler) announce(ctx context.Context, before, cred *iamv1alpha1.APICredential, done secretAction) {
	logger, name, st := log.FromContext(ctx), secretName(cred), &cred.Status
	switch done {
	case actionMint:
		issuedTotal.Inc()
		logger.Info("issued credential", "clientID", st.ClientID, "secret", name)
		r.event(cred, corev1.EventTypeNormal, iamv1alpha1.ReasonIssued, "Issue",
			fmt.Sprintf("issued client ID %s into Secret %q", st.ClientID, name))
	case actionRotate:
		rotatedTotal.Inc()
		grace := gracePeriod(cred)
		logger.Info("rotated credential", "clientID", st.ClientID, "keyVersion", st.KeyVersion, "gracePeriod", grace)
		r.event(cred, corev1.EventTypeNormal, "Rotated", "Rotate",
			fmt.Sprintf("issued new keys (key version %d) into Secret %q; the previous secret keeps working for %s", st.KeyVersion, name, grace))
	case actionAdopt, actionAdoptRotation:
		adoptedTotal.Inc()
		logger.Info("adopted credential Secret", "clientID", st.ClientID, "secret", name)
		r.event(cred, corev1.EventTypeNormal, "Adopted", "Adopt",
			fmt.Sprintf("recorded the secret already held in Secret %q; nothing was minted", name))
	case actionRebind:
		adoptedTotal.Inc()
		logger.Info("rebound credential Secret on request", "clientID", st.ClientID, "secret", name)
		r.event(cred, corev1.EventTypeNormal, "Rebound", "Rebind",
			fmt.Sprintf("bound the data held in Secret %q to this credential, as %s asked; nothing was minted", name, iamv1alpha1.RebindAnnotation))
	}
	r.announceTransition(before, cred)
}

// announceTransition emits an event when the credential was deactivated, expired or
// activated again (the Active condition), or when a person must now act (Ready).
func (r *APICredentialReconciler) announceTransition(before, cred *iamv1alpha1.APICredential) {
	switch prev, now := activeReason(before), activeReason(cred); {
	case now == prev:
	case now == iamv1alpha1.ReasonInactive:
		r.event(cred, corev1.EventTypeNormal, "Deactivated", "Deactivate", conditionMessage(cred, iamv1alpha1.ConditionActive))
	case now == iamv1alpha1.ReasonExpired:
		r.event(cred, corev1.EventTypeNormal, iamv1alpha1.ReasonExpired, "Expire", conditionMessage(cred, iamv1alpha1.ConditionActive))
	case now == iamv1alpha1.ReasonIssued && (prev == iamv1alpha1.ReasonInactive || prev == iamv1alpha1.ReasonExpired):
		r.event(cred, corev1.EventTypeNormal, "Activated", "Activate", "token servers accept this credential again")
	}
	if reason := readyReason(cred); reason != readyReason(before) && personMustAct(reason) {
		r.event(cred, corev1.EventTypeWarning, reason, "Reconcile", readyMessage(cred))
	}
}

// settleRebind removes a rebind request from the credential once the Secret step has run
// and acted on it, saying with an event when it was not honoured.
func (r *APICredentialReconciler) settleRebind(ctx context.Context, before, cred *iamv1alpha1.APICredential, done secretAction) error {
	if !rebindRequested(before) || readyReason(cred) == iamv1alpha1.ReasonInvalidSpec {
		return nil // kept until the Secret step has run and acted on it
	}
	name := secretName(cred)
	switch done {
	case actionRebind:
	case actionNone, actionBind:
		r.event(cred, corev1.EventTypeNormal, "RebindIgnored", "Rebind",
			fmt.Sprintf("removed %s: status already records what Secret %q holds, nothing to rebind", iamv1alpha1.RebindAnnotation, name))
	default:
		eventType := corev1.EventTypeNormal
		if done.state() != secretOK {
			eventType = corev1.EventTypeWarning
		}
		r.event(cred, eventType, "RebindIgnored", "Rebind",
			fmt.Sprintf("removed %s: the data in Secret %q was not rebound: %s", iamv1alpha1.RebindAnnotation, name, readyMessage(cred)))
	}
	return r.clearRebind(ctx, cred)
}

// clearRebind removes the rebind request from the credential, guarded by the
// resourceVersion just written, so that a request made meanwhile is not lost unseen.
func (r *APICredentialReconciler) clearRebind(ctx context.Context, cred *iamv1alpha1.APICredential) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": cred.ResourceVersion,
		"annotations":     map[string]any{iamv1alpha1.RebindAnnotation: nil},
	}})
	if err != nil {
		return err
	}
	if err := r.Patch(ctx, cred, client.RawPatch(types.MergePatchType, body)); err != nil {
		return fmt.Errorf("removing %s: %w", iamv1alpha1.RebindAnnotation, err)
	}
	return nil
}

// patchStatus writes status once, as a merge patch from the copy taken at the start of
// the reconcile, and only when it changed.
func (r *APICredentialReconciler) patchStatus(ctx context.Context, before, cred *iamv1alpha1.APICredential) error {
	if equality.Semantic.DeepEqual(before.Status, cred.Status) {
		return nil
	}
	err := r.Status().Patch(ctx, cred, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	if apierrors.IsConflict(err) {
		err = r.patchStatusOverUsage(ctx, before, cred)
	}
	if err != nil {
		return fmt.Errorf("patching status: %w", err)
	}
	return nil
}

// markTerminating sets Active to False (Terminating) on a credential being deleted, once:
// while a finalizer or a foreground deletion holds it, status would otherwise say token
// servers accept a credential they refuse. Ready and the rest of status stay as they were.
// Gone meanwhile: nothing to do. A conflict (the garbage collector removing the
// foregroundDeletion finalizer, say) is looked at again shortly, not reported as an error.
func (r *APICredentialReconciler) markTerminating(ctx context.Context, cred *iamv1alpha1.APICredential) (ctrl.Result, error) {
	before := cred.DeepCopy()
	meta.SetStatusCondition(&cred.Status.Conditions, metav1.Condition{
		Type: iamv1alpha1.ConditionActive, Status: metav1.ConditionFalse, Reason: iamv1alpha1.ReasonTerminating,
		Message: "the credential is being deleted (metadata.deletionTimestamp is set): token servers refuse it", ObservedGeneration: cred.Generation,
	})
	switch err := r.patchStatus(ctx, before, cred); {
	case apierrors.IsNotFound(err):
		return ctrl.Result{}, nil
	case apierrors.IsConflict(err):
		return ctrl.Result{RequeueAfter: time.Second}, nil
	default:
		return ctrl.Result{}, err
	}
}

// patchStatusOverUsage retries a status patch that lost the optimistic lock, but only when
// what changed in between is a token server's write (lastUsedTime, lastUsedAddress,
// revokedTokens): the decision this reconcile wrote down rested on the spec, the
// annotations and the operator's own status fields, and none of those moved. The token
// server's values are kept. Any other change returns the conflict, and the next reconcile
// decides again from the new state (which, after a Secret write, is an adoption: nothing
// is minted twice).
// Without it, every issue or rotation that raced a usage write was announced as an
// adoption by the retry, and the rotation counter missed it.
func (r *APICredentialReconciler) patchStatusOverUsage(ctx context.Context, before, cred *iamv1alpha1.APICredential) error {
	live := &iamv1alpha1.APICredential{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(cred), live); err != nil {
		return err
	}
	trimAsCached(live) // before is the cache's copy (apicredential_cache.go)
	if !onlyUsageChanged(before, live) {
		return apierrors.NewConflict(iamv1alpha1.GroupVersion.WithResource("apicredentials").GroupResource(), cred.Name,
			errors.New("the credential changed while it was reconciled; retrying"))
	}
	base := before.DeepCopy()
	base.ResourceVersion = live.ResourceVersion
	takeTokenServerFields(&base.Status, &live.Status)
	takeTokenServerFields(&cred.Status, &live.Status)
	return r.Status().Patch(ctx, cred, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
}

// onlyUsageChanged reports whether live differs from before only in the fields token
// servers write: the usage fields and revokedTokens of status (and the resource version
// and managed fields that any write moves).
func onlyUsageChanged(before, live *iamv1alpha1.APICredential) bool {
	if live.Generation != before.Generation || live.UID != before.UID ||
		!live.DeletionTimestamp.Equal(before.DeletionTimestamp) ||
		!equality.Semantic.DeepEqual(live.Annotations, before.Annotations) ||
		!equality.Semantic.DeepEqual(live.Labels, before.Labels) ||
		!equality.Semantic.DeepEqual(live.Finalizers, before.Finalizers) {
		return false
	}
	b := live.Status.DeepCopy()
	takeTokenServerFields(b, &before.Status)
	return equality.Semantic.DeepEqual(&before.Status, b)
}

// takeTokenServerFields sets in dst the status fields that token servers write, and only
// they (lastUsedTime, lastUsedAddress, revokedTokens), to src's: the one list of them.
func takeTokenServerFields(dst, src *iamv1alpha1.APICredentialStatus) {
	dst.LastUsedTime, dst.LastUsedAddress, dst.RevokedTokens = src.LastUsedTime, src.LastUsedAddress, src.RevokedTokens
}

// event records an event about the credential. Notes never carry a secret or a hash.
func (r *APICredentialReconciler) event(cred *iamv1alpha1.APICredential, eventType, reason, action, note string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(cred, nil, eventType, reason, action, "%s", note)
	}
}

// SetupWithManager registers the reconciler: it watches APICredentials (spec and
// annotation changes only, so token servers' usage writes do not wake it), the Secrets it
// owns, the binding key Secret, the APIDefinitions credentials grant, and the account
// label of namespaces. It indexes credentials by status.clientID across namespaces. Set
// up BindingKeys with the manager first.
func (r *APICredentialReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if r.BindingKeys == nil {
		return errors.New("APICredentialReconciler.BindingKeys is required")
	}
	keyChanges, err := r.BindingKeys.source(handler.TypedEnqueueRequestsFromMapFunc(
		func(ctx context.Context, _ *corev1.Secret) []reconcile.Request { return r.requestsFor(ctx) }))
	if err != nil {
		return err
	}
	if err := indexCredentials(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	r.echoes.wake = make(chan event.GenericEvent)
	var reader client.Reader = mgr.GetClient()
	stateReader.Store(&reader)
	return ctrl.NewControllerManagedBy(mgr).
		For(&iamv1alpha1.APICredential{}, builder.WithPredicates(
													predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&corev1.Secret{}, builder.WithPredicates(r.notOwnEcho())).                      // not the echo of its own write
		WatchesRawSource(keyChanges).                                                        // a new binding key re-binds every Secret
		WatchesRawSource(source.Channel(r.echoes.wake, &handler.EnqueueRequestForObject{})). // held back, not an echo
		Watches(&iamv1alpha1.APIDefinition{}, handler.EnqueueRequestsFromMapFunc(r.credentialsGranting)).
		WatchesMetadata(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.credentialsInNamespace),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Complete(r)
}

// indexCredentials indexes APICredentials by status.clientID and by the names of the
// APIs they grant. Both are looked up across all namespaces only (clusterWideIndexes).
func indexCredentials(ctx context.Context, indexer client.FieldIndexer) error {
	if err := indexer.IndexField(ctx, &iamv1alpha1.APICredential{}, iamv1alpha1.ClientIDField, func(o client.Object) []string {
		if id := o.(*iamv1alpha1.APICredential).Status.ClientID; id != "" {
			return []string{id}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing APICredentials by client ID: %w", err)
	}
	if err := indexer.IndexField(ctx, &iamv1alpha1.APICredential{}, apiNameIndex, func(o client.Object) []string {
		cred := o.(*iamv1alpha1.APICredential)
		names := make([]string, 0, len(cred.Spec.APIs))
		for _, g := range cred.Spec.APIs {
			names = append(names, g.Name)
		}
		return names
	}); err != nil {
		return fmt.Errorf("indexing APICredentials by API: %w", err)
	}
	return nil
}

func (r *APICredentialReconciler) credentialsGranting(ctx context.Context, def client.Object) []reconcile.Request {
	return r.requestsFor(ctx, client.MatchingFields{apiNameIndex: def.GetName()})
}

func (r *APICredentialReconciler) credentialsInNamespace(ctx context.Context, ns client.Object) []reconcile.Request {
	return r.requestsFor(ctx, client.InNamespace(ns.GetName()))
}

func (r *APICredentialReconciler) requestsFor(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	var list iamv1alpha1.APICredentialList
	if err := r.List(ctx, &list, opts...); err != nil {
		log.FromContext(ctx).Error(err, "listing APICredentials to reconcile")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}
