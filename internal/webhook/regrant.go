package webhook

import (
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/validation/field"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// A regrant is a change that makes a credential as powerful as creating it (DESIGN §2
// item 8), so that admission asks for every grant the credential holds, not only the
// grants the change adds, and for `assume` when it names another account.
type regrant struct {
	// field is the field whose change it is.
	field *field.Path
	// what says what the change does, for the refusal.
	what string
}

var rebindPath = field.NewPath("metadata", "annotations").Key(iamv1alpha1.RebindAnnotation)

// regrants returns the changes from old (nil on create) to cred that need every grant:
//   - spec.scope changes: pointing a credential at another account or workspace set is
//     as powerful as creating one there;
//   - spec.active goes from false to true (absent means true): reactivating a credential
//     that someone deactivated, during an incident say;
//   - spec.expiresAt is removed or moved later;
//   - the rebind annotation is added or changed, on create too: the operator then adopts
//     the Secret the credential names (DESIGN §2 item 9).
//
// Deactivating, shortening the expiry, rotating, renaming and removing the annotation
// make a credential no more powerful and need nothing. A create needs every grant anyway;
// regrants names the rebind annotation then so that a refusal says why it matters.
func regrants(old, cred *iamv1alpha1.APICredential) []regrant {
	var out []regrant
	if v, ok := cred.Annotations[iamv1alpha1.RebindAnnotation]; ok {
		var was string
		had := false
		if old != nil {
			was, had = old.Annotations[iamv1alpha1.RebindAnnotation]
		}
		if !had || was != v {
			out = append(out, regrant{rebindPath, "adding it asks the operator to adopt the Secret the credential names"})
		}
	}
	if old == nil {
		return out
	}
	spec := field.NewPath("spec")
	if !equality.Semantic.DeepEqual(old.Spec.Scope, cred.Spec.Scope) {
		out = append(out, regrant{spec.Child("scope"), "a new account or workspace set is as powerful as a new credential there"})
	}
	if !old.Spec.IsActive() && cred.Spec.IsActive() {
		out = append(out, regrant{spec.Child("active"), "setting it to true reactivates the credential"})
	}
	if was := old.Spec.ExpiresAt; was != nil {
		switch now := cred.Spec.ExpiresAt; {
		case now == nil:
			out = append(out, regrant{spec.Child("expiresAt"), "removing it lets the credential live forever"})
		case now.After(was.Time):
			out = append(out, regrant{spec.Child("expiresAt"), "moving it later extends the credential's life"})
		}
	}
	return out
}

// rebinds reports whether the regrants include adding or changing the rebind annotation.
func rebinds(rs []regrant) bool {
	for _, r := range rs {
		if r.field == rebindPath {
			return true
		}
	}
	return false
}
