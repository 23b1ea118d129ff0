package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/keysmith-dev/keysmith/internal/signingkey"
)

// SigningKeyLabel marks the Secret that holds the token signing keys.
const SigningKeyLabel = "iam.keysmith.dev/signing-keys"

// SigningKeyReconciler keeps the one Secret of token signing keys: it creates it, adds a
// successor key ahead of each rotation, and prunes keys retired for longer than the
// policy's retention. It publishes the public keys in a ConfigMap beside it
// (signingkey.PublicName) for verify-only token servers. Token servers read only one
// of the two.
type SigningKeyReconciler struct {
	// Client writes the Secret. Reads go through a cache that holds only this Secret.
	client.Client
	// Clock is the time source; tests move it.
	Clock clock.PassiveClock
	// Namespace and Name locate the Secret, normally in the operator's namespace.
	Namespace, Name string
	// Policy sets the rotation period, pre-publication and retention.
	Policy signingkey.Policy
	// Recorder emits an event when a key is generated or pruned. Optional.
	Recorder events.EventRecorder

	reader client.Reader
}

// Reconcile brings the signing key Secret to the state signingkey.Plan asks for and
// comes back when the next rotation or pruning is due.
func (r *SigningKeyReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	now := r.Clock.Now()
	secret := &corev1.Secret{}
	err := r.reader.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: r.Name}, secret)
	if client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	}
	exists := err == nil

	var current *signingkey.Set
	if exists {
		current, err = signingkey.Parse(secret.Data[signingkey.DataKey])
		if err != nil {
			// Never overwrite keys we cannot read: tokens they signed may still be valid.
			r.event(secret, corev1.EventTypeWarning, "InvalidSigningKeys", err.Error())
			logger.Error(err, "signing key Secret is unreadable; fix or delete it", "secret", r.Namespace+"/"+r.Name)
			return ctrl.Result{}, nil
		}
	}
	next, changed, err := signingkey.Plan(current, now, r.Policy)
	if err != nil {
		return ctrl.Result{}, err
	}
	retention := r.Policy.Retention.String()
	if changed || secret.Annotations[signingkey.RetentionAnnotation] != retention {
		if !exists {
			secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.Name}}
		}
		if changed || !exists {
			data, err := next.Marshal()
			if err != nil {
				return ctrl.Result{}, err
			}
			secret.Data = map[string][]byte{signingkey.DataKey: data}
		}
		if secret.Labels == nil {
			secret.Labels = map[string]string{}
		}
		secret.Labels[SigningKeyLabel] = "true"
		secret.Labels["app.kubernetes.io/managed-by"] = "keysmith"
		if secret.Annotations == nil {
			secret.Annotations = map[string]string{}
		}
		secret.Annotations[signingkey.RetentionAnnotation] = retention
		secret.Type = corev1.SecretTypeOpaque
		if exists {
			err = r.Update(ctx, secret)
		} else {
			err = r.Create(ctx, secret)
		}
		if err != nil {
			// A conflict or AlreadyExists means another writer won: the error requeues
			// with backoff and the next attempt plans from what it wrote.
			return ctrl.Result{}, err
		}
		logger.Info("signing keys updated", "keys", len(next.Keys), "algorithm", r.Policy.KeyAlgorithm())
		r.event(secret, corev1.EventTypeNormal, "SigningKeysUpdated", describe(current, next))
	}
	if err := r.publish(ctx, next); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: max(signingkey.NextEvent(next, r.Policy).Sub(now), time.Second)}, nil
}

// publish writes the JWKS of the published keys into the public ConfigMap, which
// verify-only token servers (sidecars) read instead of the Secret. It writes only when
// the JWKS changed.
func (r *SigningKeyReconciler) publish(ctx context.Context, set *signingkey.Set) error {
	jwks, err := set.JWKS()
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{}
	err = r.reader.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: signingkey.PublicName(r.Name)}, cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: signingkey.PublicName(r.Name), Labels: map[string]string{
				SigningKeyLabel: "public", "app.kubernetes.io/managed-by": "keysmith",
			}, Annotations: map[string]string{signingkey.RetentionAnnotation: r.Policy.Retention.String()}},
			Data: map[string]string{signingkey.PublicDataKey: string(jwks)},
		}
		return r.Create(ctx, cm)
	case err != nil:
		return err
	case cm.Data[signingkey.PublicDataKey] == string(jwks) && cm.Annotations[signingkey.RetentionAnnotation] == r.Policy.Retention.String():
		return nil
	}
	cm.Data = map[string]string{signingkey.PublicDataKey: string(jwks)}
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Annotations[signingkey.RetentionAnnotation] = r.Policy.Retention.String()
	return r.Update(ctx, cm)
}

func describe(before, after *signingkey.Set) string {
	had := map[string]bool{}
	if before != nil {
		for _, k := range before.Keys {
			had[k.ID] = true
		}
	}
	added, kept := 0, 0
	for _, k := range after.Keys {
		if had[k.ID] {
			kept++
		} else {
			added++
		}
	}
	removed := 0
	if before != nil {
		removed = len(before.Keys) - kept
	}
	algs := map[string]int{}
	for _, k := range after.Keys {
		algs[k.Algorithm]++
	}
	mix := ""
	for _, alg := range signingkey.Algorithms {
		if n := algs[alg]; n > 0 {
			mix += fmt.Sprintf(", %d %s", n, alg)
		}
	}
	return fmt.Sprintf("signing keys: %d added, %d pruned, %d published%s", added, removed, len(after.Keys), mix)
}

func (r *SigningKeyReconciler) event(obj *corev1.Secret, typ, reason, msg string) {
	if r.Recorder != nil && obj.UID != "" {
		r.Recorder.Eventf(obj, nil, typ, reason, "Reconcile", "%s", msg)
	}
}

// The signing key Secret and its public ConfigMap live in the operator's namespace, so
// these rules go into a Role there ("system" is kustomize's placeholder for it), bound by
// config/rbac/role_binding.yaml: the manager writes no ConfigMap anywhere else. (The
// ClusterRole still holds Secrets, for the credential Secrets of every namespace.)
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps,verbs=get;list;watch;create;update

// SetupWithManager registers the controller. It reads the Secret through a cache of its
// own that holds only that Secret, reconciles once at start (the Secret may not exist
// yet) and again whenever the Secret changes.
func (r *SigningKeyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := r.Policy.Validate(); err != nil {
		return fmt.Errorf("signing key policy: %w", err)
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	c, err := singletonCache(mgr, r.Namespace, map[client.Object]string{
		&corev1.Secret{}: r.Name, &corev1.ConfigMap{}: signingkey.PublicName(r.Name),
	})
	if err != nil {
		return err
	}
	r.reader = c
	return completeSingleton(mgr, "signingkeys", c, client.ObjectKey{Namespace: r.Namespace, Name: r.Name}, r,
		&corev1.Secret{}, &corev1.ConfigMap{})
}
