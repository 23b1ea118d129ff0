package webhook

import (
	"net/netip"
	"slices"

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
//   - spec.sourceRanges widen: a range is added that no previous range contains, or the
//     ranges are removed altogether (empty means any address);
//   - spec.tokenPolicy.lifetime gets longer, is removed or is set where there was none:
//     unset means the token server's --token-lifetime, which admission cannot know and
//     which may be as long or as short as any lifetime, so both removing it and setting
//     one where none was count as lengthening (fail closed: a 1h lifetime over the 10m
//     default is six times longer tokens);
//   - the rebind annotation is added or changed, on create too: the operator then adopts
//     the Secret the credential names (DESIGN §2 item 9).
//
// Deactivating, shortening the expiry or a set token lifetime, narrowing or first setting
// source ranges, rotating, renaming and removing the annotation make a credential no more
// powerful and need nothing. A create needs every grant anyway;
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
	for _, sa := range cred.Spec.WorkloadServiceAccounts() {
		if !slices.Contains(old.Spec.WorkloadServiceAccounts(), sa) {
			out = append(out, regrant{spec.Child("workloadIdentity", "serviceAccounts"), "a new ServiceAccount lets more workloads obtain the credential's tokens"})
			break
		}
	}
	if widensSourceRanges(old.Spec.SourceRanges, cred.Spec.SourceRanges) {
		what := "a range no previous range contains lets the credential be used from more addresses"
		if len(cred.Spec.SourceRanges) == 0 {
			what = "removing them lets the credential be used from any address"
		}
		out = append(out, regrant{spec.Child("sourceRanges"), what})
	}
	switch was, now := old.Spec.TokenPolicy.Lifetime, cred.Spec.TokenPolicy.Lifetime; {
	case was == nil && now != nil:
		out = append(out, regrant{spec.Child("tokenPolicy", "lifetime"), "setting it where there was none may lengthen tokens past the token server's default (--token-lifetime, 10m unless set), which admission cannot know"})
	case was != nil:
		switch {
		case now == nil:
			out = append(out, regrant{spec.Child("tokenPolicy", "lifetime"), "removing it lets tokens live as long as the token server's default, which may be longer"})
		case now.Duration > was.Duration:
			out = append(out, regrant{spec.Child("tokenPolicy", "lifetime"), "a longer lifetime lets tokens live longer"})
		}
	}
	return out
}

// widensSourceRanges reports whether the source ranges now allow an address that was
// not allowed before: was restricted (non-empty) and now is empty, or now holds a range
// that no range of was contains. A range that does not parse or has bits set after its
// prefix (the CRD refuses both) counts as widening in now and as containing nothing in
// was: fail closed.
func widensSourceRanges(was, now []string) bool {
	if len(was) == 0 {
		return false // from any address, every list is narrower or the same
	}
	if len(now) == 0 {
		return true
	}
	old := make([]netip.Prefix, 0, len(was))
	for _, s := range was {
		if p, err := netip.ParsePrefix(s); err == nil && p == p.Masked() {
			old = append(old, p)
		}
	}
	for _, s := range now {
		p, err := netip.ParsePrefix(s)
		if err != nil || p != p.Masked() {
			return true
		}
		contained := false
		for _, q := range old {
			if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
				contained = true
				break
			}
		}
		if !contained {
			return true
		}
	}
	return false
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
