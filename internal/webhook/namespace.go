package webhook

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// A workspace Namespace (labelled iam.keysmith.dev/workspace) annotated
// iam.keysmith.dev/default-apis gets a default credential, "primary", created by the
// manager with exactly the annotation's grants (controllers/workspace_controller.go).
// Admission keeps that from becoming a way around the grant check: whoever sets or
// changes the annotation must hold `grant` on each listed permission (NamespaceValidator),
// the manager's create is admitted without grants only when it is exactly what the
// annotation lists (workspaceDefault), and the last credential of such a namespace cannot
// be deleted while the namespace lives (checkLastCredential).

// The objectSelector keeps every Namespace without the workspace label away from the
// webhook. On UPDATE the API server matches it against the old and the new object, so a
// change that removes the label reaches the webhook too (and is admitted).
// +kubebuilder:webhook:path=/validate--v1-namespace,mutating=false,failurePolicy=fail,sideEffects=None,groups="",resources=namespaces;namespaces/status;namespaces/finalize,verbs=create;update,versions=v1,name=namespaces.iam.keysmith.dev,admissionReviewVersions=v1,timeoutSeconds=10,patch=`{"objectSelector":{"matchExpressions":[{"key":"iam.keysmith.dev/workspace","operator":"Exists"}]}}`

// NamespaceValidator admits a workspace Namespace's default-apis annotation only from
// whoever may grant every permission it lists in that namespace: the same
// SubjectAccessReviews as an APICredential with those grants.
type NamespaceValidator struct {
	// Credentials is the APICredential validator whose SubjectAccessReviews this reuses.
	Credentials *APICredentialValidator
}

var (
	namespacesGR    = corev1.SchemeGroupVersion.WithResource("namespaces").GroupResource()
	credentialsGR   = iamv1alpha1.GroupVersion.WithResource("apicredentials").GroupResource()
	defaultAPIsPath = field.NewPath("metadata", "annotations").Key(iamv1alpha1.DefaultAPIsAnnotation)
)

// ValidateCreate checks the grants of a labelled Namespace created with the annotation.
func (v *NamespaceValidator) ValidateCreate(ctx context.Context, ns *corev1.Namespace) (admission.Warnings, error) {
	return nil, v.check(ctx, nil, ns)
}

// ValidateUpdate checks the grants when the update sets or changes the annotation of a
// labelled Namespace, or adds the label to a Namespace that has the annotation.
func (v *NamespaceValidator) ValidateUpdate(ctx context.Context, old, ns *corev1.Namespace) (admission.Warnings, error) {
	return nil, v.check(ctx, old, ns)
}

// ValidateDelete admits every deletion (the webhook is not registered for it).
func (v *NamespaceValidator) ValidateDelete(context.Context, *corev1.Namespace) (admission.Warnings, error) {
	return nil, nil
}

// check refuses a default-apis annotation that is malformed or lists a permission the
// requesting user may not grant in the namespace, when old (nil on create) was not
// already a labelled Namespace with the same annotation. Removing the label or the
// annotation, and every other change, needs nothing.
func (v *NamespaceValidator) check(ctx context.Context, old, ns *corev1.Namespace) error {
	value, ok := defaultAPIs(&ns.ObjectMeta)
	if !ok {
		return nil
	}
	if old != nil {
		if was, had := defaultAPIs(&old.ObjectMeta); had && was == value {
			return nil
		}
	}
	apis, err := iamv1alpha1.ParseDefaultAPIs(value)
	if err != nil {
		return apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Namespace").GroupKind(), ns.Name,
			field.ErrorList{field.Invalid(defaultAPIsPath, value, err.Error())})
	}
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	user := req.UserInfo
	var missing []string
	for _, g := range apis {
		allowed, _, err := v.Credentials.review(ctx, user, grantAttributes(ns.Name, g))
		if err != nil {
			return apierrors.NewInternalError(fmt.Errorf("checking the right to grant %s: %w", g.Name, err))
		}
		if !allowed {
			missing = append(missing, fmt.Sprintf("grant apidefinitions/%s %q", g.Permission, g.Name))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return apierrors.NewForbidden(namespacesGR, ns.Name, fmt.Errorf(
		"%s: the manager creates credential %q with these grants, so setting it needs them: %s may not %s in namespace %q",
		defaultAPIsPath, iamv1alpha1.DefaultCredentialName, user.Username, strings.Join(missing, ", "), ns.Name))
}

// defaultAPIs returns the default-apis annotation of a Namespace that has the workspace
// label, and whether both are there.
func defaultAPIs(ns *metav1.ObjectMeta) (string, bool) {
	if _, ok := ns.Labels[iamv1alpha1.WorkspaceLabel]; !ok {
		return "", false
	}
	value, ok := ns.Annotations[iamv1alpha1.DefaultAPIsAnnotation]
	return value, ok
}

// SetupWithManager registers the webhook with the manager's webhook server.
func (v *NamespaceValidator) SetupWithManager(mgr ctrl.Manager) error {
	if v.Credentials == nil {
		return errors.New("NamespaceValidator.Credentials is required")
	}
	return ctrl.NewWebhookManagedBy(mgr, &corev1.Namespace{}).WithValidator(v).Complete()
}

var _ admission.Validator[*corev1.Namespace] = &NamespaceValidator{}

// workspaceDefault reports whether cred, being created, is the manager's own create of
// its namespace's default credential, exactly as the annotation lists it: the request
// comes from ManagerUsername, the name is "primary", the Namespace (read live) has the
// workspace label and is not being deleted, and the spec is spec.apis = the annotation's
// pairs, in order, and nothing else (defaults allowed, no keysmith annotation such as
// rebind). Otherwise it says why not, for the refusal, and the create gets the normal
// checks.
func (v *APICredentialValidator) workspaceDefault(ctx context.Context, cred *iamv1alpha1.APICredential) (bool, string, error) {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return false, "", apierrors.NewInternalError(err)
	}
	if v.ManagerUsername == "" || req.UserInfo.Username != v.ManagerUsername {
		return false, "", nil
	}
	not := func(format string, args ...any) (bool, string, error) {
		return false, "not admitted as the workspace's default credential: " + fmt.Sprintf(format, args...), nil
	}
	if cred.Name != iamv1alpha1.DefaultCredentialName {
		return not("the manager creates only credentials named %q", iamv1alpha1.DefaultCredentialName)
	}
	ns, err := v.liveNamespace(ctx, cred.Namespace)
	if err != nil {
		return false, "", apierrors.NewInternalError(fmt.Errorf("reading namespace %q: %w", cred.Namespace, err))
	}
	value, ok := defaultAPIs(&ns.ObjectMeta)
	switch {
	case !ok:
		return not("namespace %q has not both the %s label and the %s annotation", cred.Namespace, iamv1alpha1.WorkspaceLabel, iamv1alpha1.DefaultAPIsAnnotation)
	case ns.DeletionTimestamp != nil:
		return not("namespace %q is being deleted", cred.Namespace)
	}
	apis, err := iamv1alpha1.ParseDefaultAPIs(value)
	if err != nil {
		return not("%v", err)
	}
	for k := range cred.Annotations {
		if strings.HasPrefix(k, iamv1alpha1.GroupVersion.Group+"/") {
			return not("annotation %s is set", k)
		}
	}
	if got, want := withoutDefaults(cred.Spec), (iamv1alpha1.APICredentialSpec{APIs: apis}); !equality.Semantic.DeepEqual(got, want) {
		return not("the spec is not exactly spec.apis = the namespace's %s annotation %q", iamv1alpha1.DefaultAPIsAnnotation, value)
	}
	return true, "", nil
}

// withoutDefaults clears the fields of spec that hold what the CRD schema defaults them
// to, so that a spec that sets only apis compares equal to one the API server defaulted.
func withoutDefaults(spec iamv1alpha1.APICredentialSpec) iamv1alpha1.APICredentialSpec {
	if spec.Active != nil && *spec.Active {
		spec.Active = nil
	}
	if spec.IssueSecret != nil && *spec.IssueSecret {
		spec.IssueSecret = nil
	}
	if g := spec.Rotation.GracePeriod; g != nil && g.Duration == time.Hour {
		spec.Rotation.GracePeriod = nil
	}
	keys := &spec.SecretTemplate.Keys
	if keys.ClientID == iamv1alpha1.DefaultClientIDKey {
		keys.ClientID = ""
	}
	if keys.ClientSecret == iamv1alpha1.DefaultClientSecretKey {
		keys.ClientSecret = ""
	}
	if keys.TokenURL == iamv1alpha1.DefaultTokenURLKey {
		keys.TokenURL = ""
	}
	return spec
}

// checkLastCredential refuses to delete the last APICredential of a workspace Namespace
// that keeps a default credential (label and annotation), unless the Namespace itself is
// being deleted. The Namespace and its credentials are read live, two at a time: a cache
// behind the API server must not let the last one go.
func (v *APICredentialValidator) checkLastCredential(ctx context.Context, cred *iamv1alpha1.APICredential) error {
	ns, err := v.liveNamespace(ctx, cred.Namespace)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return apierrors.NewInternalError(fmt.Errorf("reading namespace %q: %w", cred.Namespace, err))
	}
	if _, ok := defaultAPIs(&ns.ObjectMeta); !ok || ns.DeletionTimestamp != nil {
		return nil
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(iamv1alpha1.GroupVersion.WithKind("APICredentialList"))
	opts := []client.ListOption{client.InNamespace(cred.Namespace), client.Limit(2)}
	for {
		if err := v.apiReader().List(ctx, list, opts...); err != nil {
			return apierrors.NewInternalError(fmt.Errorf("counting the credentials of namespace %q: %w", cred.Namespace, err))
		}
		for _, other := range list.Items {
			if other.Name != cred.Name && other.DeletionTimestamp == nil {
				return nil
			}
		}
		if list.Continue == "" {
			break
		}
		opts = []client.ListOption{client.InNamespace(cred.Namespace), client.Limit(2), client.Continue(list.Continue)}
	}
	return apierrors.NewForbidden(credentialsGR, cred.Name, fmt.Errorf(
		"it is the last APICredential of workspace namespace %q, which keeps a default credential (annotation %s): "+
			"create another credential first, or remove the annotation (kubectl annotate namespace %s %s-), then delete it again",
		cred.Namespace, iamv1alpha1.DefaultAPIsAnnotation, cred.Namespace, iamv1alpha1.DefaultAPIsAnnotation))
}

// liveNamespace reads the metadata of a Namespace from the API server.
func (v *APICredentialValidator) liveNamespace(ctx context.Context, name string) (*metav1.PartialObjectMetadata, error) {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := v.apiReader().Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
		return nil, err
	}
	return ns, nil
}

func (v *APICredentialValidator) apiReader() client.Reader {
	if v.APIReader != nil {
		return v.APIReader
	}
	return v.Reader
}

// withReason adds why a create was not admitted as a workspace default to its refusal.
func withReason(err error, reason string) error {
	var status *apierrors.StatusError
	if reason == "" || !errors.As(err, &status) {
		return err
	}
	status.ErrStatus.Message += "; " + reason
	return status
}
