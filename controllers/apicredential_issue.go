package controllers

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/binding"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// DefaultGracePeriod is how long a previous secret keeps working after a rotation when
// spec.rotation.gracePeriod is unset.
const DefaultGracePeriod = time.Hour

// maxPreviousSecrets bounds status.previousSecrets; the oldest fall off first.
const maxPreviousSecrets = 16

// issue mints a client ID (unless the credential has one) and a secret, creates the
// Secret, and records the hash. Create, never update: AlreadyExists means someone got
// there first, and the table decides again. Announced once status records it.
func (r *APICredentialReconciler) issue(ctx context.Context, cred *iamv1alpha1.APICredential, ring *binding.Ring, tokenURL string, now time.Time) error {
	clientID := cred.Status.ClientID
	if clientID == "" {
		var err error
		if clientID, err = credential.NewClientID(); err != nil {
			return err
		}
	}
	clientSecret, err := credential.NewSecret()
	if err != nil {
		return err
	}
	issuedAt := now.Truncate(time.Second)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: cred.Namespace, Name: secretName(cred)}, Type: corev1.SecretTypeOpaque}
	if err := r.writeCredentialData(cred, secret, ring, clientID, clientSecret, tokenURL, issuedAt); err != nil {
		return err
	}
	if err := r.writeSecret(ctx, cred, secret, true); err != nil {
		return fmt.Errorf("creating Secret %q: %w", secret.Name, err)
	}
	r.record(cred, clientID, clientSecret, cred.Spec.Rotation.KeyVersion, issuedAt)
	return nil
}

// rotate issues a new secret for the same client ID into the credential's Secret
// (re-creating it if it was deleted) and keeps the previous hash valid for the grace period.
// The update carries the resourceVersion that was read, so a concurrent change makes it
// fail rather than overwrite. Announced once status records it. With status lost, the client ID is kept only when the
// Secret's binding proves it this credential's; otherwise a new one is minted, so that a
// Secret writer cannot carry another credential's client ID into a rotation.
func (r *APICredentialReconciler) rotate(ctx context.Context, cred *iamv1alpha1.APICredential, secret *corev1.Secret, f secretFacts, ring *binding.Ring, tokenURL string, now time.Time) error {
	clientSecret, err := credential.NewSecret()
	if err != nil {
		return err
	}
	if cred.Status.ClientID == "" && f.bound.Bound() && !f.heldElsewhere && credential.ValidClientID(f.clientID) {
		cred.Status.ClientID = f.clientID // status was lost; the binding says whose the client ID is
	}
	if cred.Status.ClientID == "" {
		// Status was lost and the Secret held nothing proven ours: there is no identity to keep.
		if cred.Status.ClientID, err = credential.NewClientID(); err != nil {
			return err
		}
	}
	issuedAt := now.Truncate(time.Second)
	create := secret == nil
	if create {
		secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: cred.Namespace, Name: secretName(cred)}, Type: corev1.SecretTypeOpaque}
	} else {
		secret = secret.DeepCopy()
	}
	if err := r.writeCredentialData(cred, secret, ring, cred.Status.ClientID, clientSecret, tokenURL, issuedAt); err != nil {
		return err
	}
	if err := r.writeSecret(ctx, cred, secret, create); err != nil {
		return fmt.Errorf("writing rotated Secret %q: %w", secret.Name, err)
	}
	r.retirePrevious(cred, issuedAt)
	r.record(cred, cred.Status.ClientID, clientSecret, cred.Spec.Rotation.KeyVersion, issuedAt)
	return nil
}

// writeSecret creates or updates the credential's Secret, and tells the watch of owned
// Secrets that the echo of this write is not to wake the credential (ownWrites).
func (r *APICredentialReconciler) writeSecret(ctx context.Context, cred *iamv1alpha1.APICredential, secret *corev1.Secret, create bool) error {
	key := client.ObjectKeyFromObject(secret)
	r.echoes.begin(key, cred)
	var err error
	if create {
		err = r.Create(ctx, secret)
	} else {
		err = r.Update(ctx, secret)
	}
	var written client.Object
	if err == nil {
		written = secret
	}
	r.echoes.done(ctx, key, written, cred)
	return err
}

// adopt records the secret held by the credential's own Secret, after a crash between
// creating the Secret and writing status, after status was lost, or on a deliberate
// rebind. Nothing is minted. The caller has checked the binding (or the rebind request)
// and the client-ID index; the event goes out once status is written (announce).
func (r *APICredentialReconciler) adopt(ctx context.Context, cred *iamv1alpha1.APICredential, f secretFacts, now time.Time) {
	keyVersion := f.keyVersion
	if keyVersion == 0 && cred.Status.SecretHash == "" {
		keyVersion = cred.Spec.Rotation.KeyVersion // no annotation: it was issued for this spec
	}
	issuedAt := f.issuedAt
	if issuedAt.IsZero() {
		issuedAt = now.Truncate(time.Second)
	}
	r.record(cred, f.clientID, f.clientSecret, keyVersion, issuedAt)
	log.FromContext(ctx).V(1).Info("adopting credential Secret", "clientID", f.clientID, "secret", secretName(cred))
}

// bind writes the operator's binding of what status records onto the Secret, with the
// key-version and issued-at annotations it covers, and points the Secret's controller
// reference at this credential's UID (a restore changes the UID). The data is never
// touched. It writes nothing when the Secret already says all that. The update carries
// the resourceVersion that was read, so a concurrent change makes it fail.
func (r *APICredentialReconciler) bind(ctx context.Context, cred *iamv1alpha1.APICredential, secret *corev1.Secret, ring *binding.Ring) error {
	st := &cred.Status
	var issuedAt time.Time
	want := secret.DeepCopy()
	want.Annotations = mergeInto(want.Annotations, nil)
	want.Annotations[iamv1alpha1.KeyVersionAnnotation] = strconv.FormatInt(st.KeyVersion, 10)
	if st.IssuedAt != nil {
		issuedAt = st.IssuedAt.Time
		want.Annotations[iamv1alpha1.IssuedAtAnnotation] = issuedAtAnnotation(issuedAt)
	} else {
		delete(want.Annotations, iamv1alpha1.IssuedAtAnnotation)
	}
	want.Annotations[iamv1alpha1.BindingAnnotation] = ring.Sign(bindingSubject(cred, st.ClientID, st.SecretHash, st.KeyVersion, issuedAt))
	want.Labels = mergeInto(want.Labels, nil)
	want.Labels[iamv1alpha1.CredentialLabel] = cred.Name
	if err := r.controlledBy(cred, want); err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(want.ObjectMeta, secret.ObjectMeta) {
		return nil
	}
	if err := r.writeSecret(ctx, cred, want, false); err != nil {
		return fmt.Errorf("binding Secret %q: %w", secret.Name, err)
	}
	*secret = *want
	log.FromContext(ctx).Info("bound credential Secret", "clientID", st.ClientID, "secret", secret.Name, "bindingKey", ring.Current().ID)
	return nil
}

// controlledBy makes cred the controller of secret. A controller reference to anything
// else is dropped: only a Secret whose binding verified, or that this UID controls,
// gets here.
func (r *APICredentialReconciler) controlledBy(cred *iamv1alpha1.APICredential, secret *corev1.Secret) error {
	refs := secret.OwnerReferences[:0:0]
	for _, ref := range secret.OwnerReferences {
		if ref.Controller != nil && *ref.Controller && !(ref.Kind == "APICredential" && ref.Name == cred.Name &&
			strings.HasPrefix(ref.APIVersion, iamv1alpha1.GroupVersion.Group+"/")) {
			continue
		}
		refs = append(refs, ref)
	}
	secret.OwnerReferences = refs
	if err := controllerutil.SetControllerReference(cred, secret, r.Scheme); err != nil {
		return fmt.Errorf("setting owner of Secret %q: %w", secret.Name, err)
	}
	return nil
}

// retirePrevious moves the current hash to status.previousSecrets, valid for the grace
// period from the moment it was replaced. A zero grace period revokes it at once.
func (r *APICredentialReconciler) retirePrevious(cred *iamv1alpha1.APICredential, replacedAt time.Time) {
	st := &cred.Status
	grace := gracePeriod(cred)
	if st.SecretHash == "" || grace <= 0 {
		return
	}
	prev := iamv1alpha1.PreviousSecret{Hash: st.SecretHash, ExpiresAt: metav1.NewTime(replacedAt.Add(grace))}
	st.PreviousSecrets = append([]iamv1alpha1.PreviousSecret{prev}, st.PreviousSecrets...)
	if len(st.PreviousSecrets) > maxPreviousSecrets {
		st.PreviousSecrets = st.PreviousSecrets[:maxPreviousSecrets]
	}
}

// record writes the identity of an issued secret into status: the hash, never the secret.
func (r *APICredentialReconciler) record(cred *iamv1alpha1.APICredential, clientID, clientSecret string, keyVersion int64, issuedAt time.Time) {
	st := &cred.Status
	st.ClientID = clientID
	st.SecretHash = credential.Hash(clientSecret)
	st.KeyVersion = keyVersion
	t := metav1.NewTime(issuedAt)
	st.IssuedAt = &t
	st.SecretRef = &iamv1alpha1.SecretReference{Name: secretName(cred)}
}

// writeCredentialData puts the credential keys, the template's labels and annotations, the
// bookkeeping annotations and the owner reference on secret. Other keys are left alone.
func (r *APICredentialReconciler) writeCredentialData(cred *iamv1alpha1.APICredential, secret *corev1.Secret, ring *binding.Ring, clientID, clientSecret, tokenURL string, issuedAt time.Time) error {
	keys := cred.Spec.SecretKeyNames()
	if secret.Data == nil {
		secret.Data = map[string][]byte{}
	}
	secret.Data[keys.ClientID] = []byte(clientID)
	secret.Data[keys.ClientSecret] = []byte(clientSecret)
	if tokenURL != "" {
		secret.Data[keys.TokenURL] = []byte(tokenURL)
	}
	secret.Labels = mergeInto(secret.Labels, cred.Spec.SecretTemplate.Labels)
	secret.Labels[iamv1alpha1.CredentialLabel] = cred.Name
	secret.Labels["app.kubernetes.io/managed-by"] = "keysmith"
	secret.Annotations = mergeInto(secret.Annotations, cred.Spec.SecretTemplate.Annotations)
	secret.Annotations[iamv1alpha1.KeyVersionAnnotation] = strconv.FormatInt(cred.Spec.Rotation.KeyVersion, 10)
	secret.Annotations[iamv1alpha1.IssuedAtAnnotation] = issuedAtAnnotation(issuedAt)
	secret.Annotations[iamv1alpha1.BindingAnnotation] = ring.Sign(bindingSubject(cred, clientID, credential.Hash(clientSecret), cred.Spec.Rotation.KeyVersion, issuedAt))
	return r.controlledBy(cred, secret)
}

func mergeInto(dst, src map[string]string) map[string]string {
	if dst == nil {
		dst = make(map[string]string, len(src)+2)
	}
	maps.Copy(dst, src)
	return dst
}

func secretName(cred *iamv1alpha1.APICredential) string { return cred.Spec.SecretName(cred.Name) }

func gracePeriod(cred *iamv1alpha1.APICredential) time.Duration {
	if g := cred.Spec.Rotation.GracePeriod; g != nil {
		return g.Duration
	}
	return DefaultGracePeriod
}
