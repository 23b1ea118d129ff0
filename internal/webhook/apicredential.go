// Package webhook holds keysmith's admission webhooks. They turn the catalog and the
// lifecycle invariants into answers at the API server's door: a bad manifest fails at
// `kubectl apply` (or in an Argo CD sync) with a message that names the field, the value
// and what is allowed; nobody mints a credential more powerful than they are; a protected
// credential and a catalog entry still in use cannot be deleted by accident.
package webhook

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/catalog"
)

// GrantVerb is the RBAC verb a user needs on apidefinitions/<permission> to grant that
// permission of that API in a credential.
const GrantVerb = "grant"

// AssumeVerb is the RBAC verb a user needs on the pseudo-resource accounts (group
// iam.keysmith.dev, name = the account) in the credential's namespace to name an account
// other than the namespace's own in spec.scope.account.
const AssumeVerb = "assume"

// RebindVerb is the RBAC verb a user needs on apicredentials (name = the credential) to
// add the iam.keysmith.dev/rebind annotation, besides every grant the credential holds.
const RebindVerb = "rebind"

// +kubebuilder:webhook:path=/validate-iam-keysmith-dev-v1alpha1-apicredential,mutating=false,failurePolicy=fail,sideEffects=None,groups=iam.keysmith.dev,resources=apicredentials,verbs=create;update;delete,versions=v1alpha1,name=apicredentials.iam.keysmith.dev,admissionReviewVersions=v1,timeoutSeconds=10

// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// APICredentialValidator admits APICredentials that fit the catalog and that the
// requesting user may grant, and refuses to delete a credential under deletion protection.
type APICredentialValidator struct {
	// Reader reads the catalog and the Namespaces (their account label), normally the
	// manager's cache.
	Reader client.Reader
	// Client creates SubjectAccessReviews.
	Client client.Client
	// Clock is the time source for warnings; default the real clock.
	Clock clock.PassiveClock
	// APIReader reads what a decision must not take from a cache: a workspace Namespace
	// and its credentials (namespace.go). Default Reader.
	APIReader client.Reader
	// ManagerUsername is the manager's own user (system:serviceaccount:<ns>:<name>). Its
	// create of a workspace's default credential is admitted without grants when it is
	// exactly what the Namespace's annotation lists (namespace.go); empty: never.
	ManagerUsername string
}

var credentialGK = iamv1alpha1.GroupVersion.WithKind("APICredential").GroupKind()

// ValidateCreate checks the catalog, the user's right to grant every permission, and
// to assume spec.scope.account when it is not the namespace's own.
func (v *APICredentialValidator) ValidateCreate(ctx context.Context, cred *iamv1alpha1.APICredential) (admission.Warnings, error) {
	if err := v.checkCatalog(ctx, cred); err != nil {
		return nil, err
	}
	isDefault, notDefault, err := v.workspaceDefault(ctx, cred)
	if err != nil {
		return nil, err
	}
	if isDefault {
		return v.warnings(cred), nil
	}
	if err := v.checkGrants(ctx, cred, nil); err != nil {
		return nil, withReason(err, notDefault)
	}
	return v.warnings(cred), nil
}

// ValidateUpdate checks the catalog when the grants or the scope change, and the user's
// right to grant every permission the update adds or changes — every permission, and
// assume on a foreign account, when the update makes the credential as powerful as a new
// one (regrants: a new scope, reactivation, a removed or later expiry, the rebind
// annotation). An update that leaves grants and scope alone (labels, finalizers,
// deactivation, rotation) is never blocked by the catalog, so a catalog change cannot
// wedge a credential.
func (v *APICredentialValidator) ValidateUpdate(ctx context.Context, old, cred *iamv1alpha1.APICredential) (admission.Warnings, error) {
	if !equality.Semantic.DeepEqual(old.Spec.APIs, cred.Spec.APIs) || !equality.Semantic.DeepEqual(old.Spec.Scope, cred.Spec.Scope) {
		if err := v.checkCatalog(ctx, cred); err != nil {
			return nil, err
		}
	}
	if err := v.checkGrants(ctx, cred, old); err != nil {
		return nil, err
	}
	return v.warnings(cred), nil
}

// ValidateDelete refuses to delete a credential whose spec.deletionProtection is true,
// and the last credential of a workspace Namespace that keeps a default credential
// (checkLastCredential).
func (v *APICredentialValidator) ValidateDelete(ctx context.Context, cred *iamv1alpha1.APICredential) (admission.Warnings, error) {
	if !cred.Spec.DeletionProtection {
		return nil, v.checkLastCredential(ctx, cred)
	}
	return nil, apierrors.NewForbidden(iamv1alpha1.GroupVersion.WithResource("apicredentials").GroupResource(), cred.Name, fmt.Errorf(
		"spec.deletionProtection is true: to delete this credential, first set it to false "+
			"(kubectl -n %s patch apicredential %s --type=merge -p '{\"spec\":{\"deletionProtection\":false}}'), then delete it again",
		cred.Namespace, cred.Name))
}

func (v *APICredentialValidator) checkCatalog(ctx context.Context, cred *iamv1alpha1.APICredential) error {
	var defs iamv1alpha1.APIDefinitionList
	if err := v.Reader.List(ctx, &defs); err != nil {
		return apierrors.NewInternalError(fmt.Errorf("reading the API catalog: %w", err))
	}
	if errs := catalog.Check(&cred.Spec, catalog.NewIndex(defs.Items)); len(errs) > 0 {
		return apierrors.NewInvalid(credentialGK, cred.Name, errs)
	}
	return nil
}

// checkGrants refuses a credential more powerful than who creates or changes it (DESIGN
// §2 item 8). It asks SubjectAccessReviews whether the requesting user may grant every
// API permission the credential has and old (nil on create) did not, and every one of
// them when the change is a regrant (a create, a new scope, reactivation, a longer life,
// the rebind annotation). Whenever it asks for every grant, it also asks for `assume` on
// spec.scope.account if that names an account other than the namespace's own.
func (v *APICredentialValidator) checkGrants(ctx context.Context, cred, old *iamv1alpha1.APICredential) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	user := req.UserInfo
	reasons := regrants(old, cred)
	all := old == nil || len(reasons) > 0
	had := map[iamv1alpha1.APIGrant]bool{}
	if old != nil {
		for _, g := range old.Spec.APIs {
			had[g] = true
		}
	}
	var missing []string
	var errs field.ErrorList
	for i, g := range cred.Spec.APIs {
		if had[g] && !all {
			continue
		}
		allowed, reason, err := v.review(ctx, user, grantAttributes(cred.Namespace, g))
		if err != nil {
			return apierrors.NewInternalError(fmt.Errorf("checking the right to grant %s: %w", g.Name, err))
		}
		if allowed {
			continue
		}
		grant := fmt.Sprintf("grant apidefinitions/%s %q", g.Permission, g.Name)
		missing = append(missing, grant)
		if !had[g] {
			msg := fmt.Sprintf("%s may not %s in namespace %q", user.Username, grant, cred.Namespace)
			if reason != "" {
				msg += " (" + reason + ")"
			}
			errs = append(errs, field.Forbidden(field.NewPath("spec", "apis").Index(i), msg))
		}
	}
	if len(missing) > 0 {
		for _, r := range reasons {
			errs = append(errs, field.Forbidden(r.field, fmt.Sprintf("%s, which needs every grant the credential holds: %s may not %s in namespace %q",
				r.what, user.Username, strings.Join(missing, ", "), cred.Namespace)))
		}
	}
	if all {
		refused, err := v.checkAccount(ctx, user, cred)
		if err != nil {
			return err
		}
		if refused != nil {
			missing = append(missing, fmt.Sprintf("%s accounts %q", AssumeVerb, cred.Spec.Scope.Account))
			errs = append(errs, refused)
		}
	}
	if rebinds(reasons) {
		refused, err := v.checkRebind(ctx, user, cred)
		if err != nil {
			return err
		}
		if refused != nil {
			missing = append(missing, fmt.Sprintf("%s apicredentials %q", RebindVerb, cred.Name))
			errs = append(errs, refused)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewForbidden(iamv1alpha1.GroupVersion.WithResource("apicredentials").GroupResource(), cred.Name, fmt.Errorf(
		"a credential cannot exceed the privileges of who creates it; missing %s: %w", strings.Join(missing, ", "), errs.ToAggregate()))
}

// checkAccount asks whether the user may `assume` spec.scope.account in the credential's
// namespace, when it names an account other than the namespace's own (the one the
// reconciler selects when the field is empty, catalog.NamespaceAccount). It returns the
// refusal, or nil. A namespace the cache has not seen yet has no known account of its
// own, so any named account needs `assume` then: admission fails closed.
func (v *APICredentialValidator) checkAccount(ctx context.Context, user authenticationv1.UserInfo, cred *iamv1alpha1.APICredential) (*field.Error, error) {
	account := cred.Spec.Scope.Account
	if account == "" {
		return nil, nil
	}
	own, err := catalog.NamespaceAccount(ctx, v.Reader, cred.Namespace)
	switch {
	case apierrors.IsNotFound(err):
		own = ""
	case err != nil:
		return nil, apierrors.NewInternalError(fmt.Errorf("selecting the account of namespace %q: %w", cred.Namespace, err))
	case own == account:
		return nil, nil
	}
	allowed, reason, err := v.review(ctx, user, authorizationv1.ResourceAttributes{
		Namespace: cred.Namespace, Verb: AssumeVerb, Group: iamv1alpha1.GroupVersion.Group,
		Resource: "accounts", Name: account,
	})
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("checking the right to assume account %q: %w", account, err))
	}
	if allowed {
		return nil, nil
	}
	ownSays := strconv.Quote(own)
	if own == "" {
		ownSays = "not known yet"
	}
	msg := fmt.Sprintf("%s may not %s accounts %q in namespace %q: naming an account other than the namespace's own (%s) needs RBAC verb %s on resource accounts of group %s with that name",
		user.Username, AssumeVerb, account, cred.Namespace, ownSays, AssumeVerb, iamv1alpha1.GroupVersion.Group)
	if reason != "" {
		msg += " (" + reason + ")"
	}
	return field.Forbidden(field.NewPath("spec", "scope", "account"), msg), nil
}

// checkRebind asks whether the user may `rebind` the credential: RBAC verb rebind on
// apicredentials with its name, in its namespace. Re-binding makes the operator adopt
// whatever client ID and secret the credential's Secret holds; holding the credential's
// grants does not show that the client ID was ever this credential's (once another
// credential is deleted, its client ID is free and not secret), so adopting one is a
// restore step for the platform team: only keysmith-admin has the verb. It returns the
// refusal, or nil.
func (v *APICredentialValidator) checkRebind(ctx context.Context, user authenticationv1.UserInfo, cred *iamv1alpha1.APICredential) (*field.Error, error) {
	allowed, reason, err := v.review(ctx, user, authorizationv1.ResourceAttributes{
		Namespace: cred.Namespace, Verb: RebindVerb, Group: iamv1alpha1.GroupVersion.Group,
		Resource: "apicredentials", Name: cred.Name,
	})
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("checking the right to rebind %q: %w", cred.Name, err))
	}
	if allowed {
		return nil, nil
	}
	msg := fmt.Sprintf("%s may not %s apicredentials %q in namespace %q: re-binding adopts the client ID and secret the Secret holds, a restore step that needs RBAC verb %s on apicredentials of group %s (keysmith-admin has it)",
		user.Username, RebindVerb, cred.Name, cred.Namespace, RebindVerb, iamv1alpha1.GroupVersion.Group)
	if reason != "" {
		msg += " (" + reason + ")"
	}
	return field.Forbidden(rebindPath, msg), nil
}

// grantAttributes is what a user needs to grant g in namespace: RBAC verb grant on
// apidefinitions/<permission> with the API's name.
func grantAttributes(namespace string, g iamv1alpha1.APIGrant) authorizationv1.ResourceAttributes {
	return authorizationv1.ResourceAttributes{
		Namespace: namespace, Verb: GrantVerb, Group: iamv1alpha1.GroupVersion.Group,
		Resource: "apidefinitions", Subresource: g.Permission, Name: g.Name,
	}
}

// review asks a SubjectAccessReview whether user may do attrs.
func (v *APICredentialValidator) review(ctx context.Context, user authenticationv1.UserInfo, attrs authorizationv1.ResourceAttributes) (bool, string, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: convertExtra(user.Extra),
		ResourceAttributes: &attrs,
	}}
	if err := v.Client.Create(ctx, sar); err != nil {
		return false, "", err
	}
	return sar.Status.Allowed, sar.Status.Reason, nil
}

// warnings are for what is legal but suspicious.
func (v *APICredentialValidator) warnings(cred *iamv1alpha1.APICredential) admission.Warnings {
	var w admission.Warnings
	now := v.now()
	if e := cred.Spec.ExpiresAt; e != nil && !e.After(now) {
		w = append(w, fmt.Sprintf("spec.expiresAt %s is in the past: the credential is issued but token servers refuse it", e.UTC().Format("2006-01-02T15:04:05Z")))
	}
	if r := cred.Spec.Rotation; r.Period != nil && r.GracePeriod != nil && r.GracePeriod.Duration >= r.Period.Duration {
		w = append(w, fmt.Sprintf("spec.rotation.gracePeriod %s is not shorter than spec.rotation.period %s: more than one previous secret stays valid at a time", r.GracePeriod.Duration, r.Period.Duration))
	}
	return w
}

func (v *APICredentialValidator) now() time.Time {
	if v.Clock == nil {
		return time.Now()
	}
	return v.Clock.Now()
}

// SetupWithManager registers the webhook with the manager's webhook server.
func (v *APICredentialValidator) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &iamv1alpha1.APICredential{}).WithValidator(v).Complete()
}

var _ admission.Validator[*iamv1alpha1.APICredential] = &APICredentialValidator{}

// convertExtra copies the requester's extra attributes into a SubjectAccessReview, so
// that authorizers that decide on them (scopes, for instance) see the same user.
func convertExtra(in map[string]authenticationv1.ExtraValue) map[string]authorizationv1.ExtraValue {
	if len(in) == 0 {
		return nil
	}
	out := make(map[string]authorizationv1.ExtraValue, len(in))
	for k, v := range in {
		out[k] = authorizationv1.ExtraValue(v)
	}
	return out
}
