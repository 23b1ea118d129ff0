package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/keysmith-dev/keysmith/internal/binding"
)

const (
	// BindingKeyLabel marks the Secret that holds the keys of credential Secret bindings.
	BindingKeyLabel = "iam.keysmith.dev/binding-keys"
	// BindingKeyDataKey is the key of the binding key Secret's data that holds the key ring.
	BindingKeyDataKey = "keys.json"
	// RotateBindingKeyAnnotation, set to "true" on the binding key Secret, makes a new key
	// current; the previous keys are retained (binding.MaxKeys in all) so that Secrets
	// bound under them are still recognised, and every credential Secret is re-bound under
	// the new key on its next reconcile. The manager removes the annotation.
	RotateBindingKeyAnnotation = "iam.keysmith.dev/rotate"
)

// BindingKeyReconciler keeps the Secret of binding keys, the HMAC keys with which the
// operator binds a credential Secret's data to its credential (DESIGN §2 item 9). It
// creates the Secret when absent (never overwriting one: a lost key means restored
// Secrets need a deliberate rebind) and rotates the key on request. Ring hands the keys
// to the APICredential reconciler.
//
// The Secret belongs in every backup of the operator's namespace: without it, Secrets
// restored without their credential's status are not adopted until a person rebinds them.
type BindingKeyReconciler struct {
	// Client writes the Secret.
	client.Client
	// APIReader reads the Secret from the API server when the cache misses it, so that
	// a cache that is behind never makes the manager create a second key.
	APIReader client.Reader
	// Clock is the time source; tests move it.
	Clock clock.PassiveClock
	// Namespace and Name locate the Secret, normally in the operator's namespace.
	Namespace, Name string
	// Recorder emits an event when a key is generated or rotated. Optional.
	Recorder events.EventRecorder

	// reader is a cache that holds only the Secret; APIReader until SetupWithManager.
	reader client.Reader
	cache  cache.Cache

	mu     sync.Mutex
	parsed struct {
		resourceVersion string
		ring            *binding.Ring
	}
}

// Ring returns the binding key ring, creating its Secret with a new key from crypto/rand
// when there is none. It fails, and never overwrites, when the Secret cannot be read.
func (r *BindingKeyReconciler) Ring(ctx context.Context) (*binding.Ring, error) {
	_, ring, err := r.load(ctx)
	return ring, err
}

// load returns the Secret and its parsed ring, creating the Secret when there is none.
func (r *BindingKeyReconciler) load(ctx context.Context) (*corev1.Secret, *binding.Ring, error) {
	secret, err := r.get(ctx)
	if err != nil {
		return nil, nil, err
	}
	if secret == nil {
		if secret, err = r.create(ctx); err != nil {
			return nil, nil, err
		}
	}
	ring, err := r.parse(secret)
	if err != nil {
		return nil, nil, err
	}
	return secret, ring, nil
}

// Reconcile makes sure the Secret exists and rotates the key when the Secret carries
// RotateBindingKeyAnnotation.
func (r *BindingKeyReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	secret, ring, err := r.load(ctx)
	if err != nil || secret.Annotations[RotateBindingKeyAnnotation] != "true" {
		return ctrl.Result{}, err
	}
	// Rotate a copy: the parsed ring is shared with readers of Ring.
	rotated := &binding.Ring{Keys: append([]binding.Key(nil), ring.Keys...)}
	if err := rotated.Rotate(r.Clock.Now()); err != nil {
		return ctrl.Result{}, err
	}
	data, err := rotated.Marshal()
	if err != nil {
		return ctrl.Result{}, err
	}
	secret = secret.DeepCopy()
	secret.Data = map[string][]byte{BindingKeyDataKey: data}
	delete(secret.Annotations, RotateBindingKeyAnnotation)
	// The update carries the resourceVersion read: a concurrent writer makes it fail and
	// the retry rotates from what that writer left.
	if err := r.Update(ctx, secret); err != nil {
		return ctrl.Result{}, fmt.Errorf("rotating the binding key in Secret %s/%s: %w", r.Namespace, r.Name, err)
	}
	log.FromContext(ctx).Info("binding key rotated", "keyID", rotated.Current().ID, "retained", len(rotated.Keys)-1)
	r.event(secret, "BindingKeyRotated", fmt.Sprintf("binding key %s is current; %d previous keys retained; credential Secrets are re-bound on their next reconcile",
		rotated.Current().ID, len(rotated.Keys)-1))
	return ctrl.Result{}, nil
}

// get reads the Secret, through the cache and then the API server; nil when absent.
func (r *BindingKeyReconciler) get(ctx context.Context) (*corev1.Secret, error) {
	key := client.ObjectKey{Namespace: r.Namespace, Name: r.Name}
	secret := &corev1.Secret{}
	err := r.cacheReader().Get(ctx, key, secret)
	if apierrors.IsNotFound(err) && r.reader != nil {
		err = r.APIReader.Get(ctx, key, secret)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the binding key Secret %s: %w", key, err)
	}
	return secret, nil
}

// create writes a new Secret with one key. Create, never update: when another replica
// or a previous run got there first, its key is the one, re-read from the API server.
func (r *BindingKeyReconciler) create(ctx context.Context) (*corev1.Secret, error) {
	ring, err := binding.NewRing(r.Clock.Now())
	if err != nil {
		return nil, err
	}
	data, err := ring.Marshal()
	if err != nil {
		return nil, err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.Name, Labels: map[string]string{
			BindingKeyLabel: "true", "app.kubernetes.io/managed-by": "keysmith",
		}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{BindingKeyDataKey: data},
	}
	err = r.Create(ctx, secret)
	if apierrors.IsAlreadyExists(err) {
		existing := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(secret), existing); err != nil {
			return nil, fmt.Errorf("reading the binding key Secret %s/%s: %w", r.Namespace, r.Name, err)
		}
		return existing, nil
	}
	if err != nil {
		return nil, fmt.Errorf("creating the binding key Secret %s/%s: %w", r.Namespace, r.Name, err)
	}
	log.FromContext(ctx).Info("binding key generated", "secret", r.Namespace+"/"+r.Name, "keyID", ring.Current().ID)
	r.event(secret, "BindingKeyGenerated", fmt.Sprintf("generated binding key %s; back this Secret up with the operator's namespace", ring.Current().ID))
	return secret, nil
}

// parse decodes the ring, once per resourceVersion.
func (r *BindingKeyReconciler) parse(secret *corev1.Secret) (*binding.Ring, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.parsed.ring != nil && secret.ResourceVersion != "" && r.parsed.resourceVersion == secret.ResourceVersion {
		return r.parsed.ring, nil
	}
	ring, err := binding.Parse(secret.Data[BindingKeyDataKey])
	if err != nil {
		// Never overwrite keys we cannot read: Secrets bound under them would be lost.
		return nil, fmt.Errorf("the binding key Secret %s/%s is unreadable (fix it, or delete it to generate a new key and rebind restored Secrets): %w",
			r.Namespace, r.Name, err)
	}
	r.parsed.resourceVersion, r.parsed.ring = secret.ResourceVersion, ring
	return ring, nil
}

func (r *BindingKeyReconciler) cacheReader() client.Reader {
	if r.reader != nil {
		return r.reader
	}
	return r.APIReader
}

func (r *BindingKeyReconciler) event(obj *corev1.Secret, reason, msg string) {
	if r.Recorder != nil && obj.UID != "" {
		r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, reason, "Reconcile", "%s", msg)
	}
}

// errNotSetUp is returned when the APICredential reconciler is set up before its keys.
var errNotSetUp = errors.New("the BindingKeyReconciler must be set up with the manager first")

// source returns a source of events for changes of the binding key Secret.
func (r *BindingKeyReconciler) source(h handler.TypedEventHandler[*corev1.Secret, reconcile.Request]) (source.Source, error) {
	if r.cache == nil {
		return nil, errNotSetUp
	}
	return source.Kind(r.cache, &corev1.Secret{}, h), nil
}

// SetupWithManager registers the controller. It reads the Secret through a cache of its
// own that holds only that Secret, reconciles once at start (creating the Secret if need
// be) and again whenever the Secret changes.
func (r *BindingKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	c, err := singletonCache(mgr, r.Namespace, map[client.Object]string{&corev1.Secret{}: r.Name})
	if err != nil {
		return err
	}
	r.reader, r.cache = c, c
	return completeSingleton(mgr, "bindingkeys", c, client.ObjectKey{Namespace: r.Namespace, Name: r.Name}, r, &corev1.Secret{})
}
