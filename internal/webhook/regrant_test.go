package webhook

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// TestFinding6_Regrants is the decision behind finding 6: which changes make a
// credential as powerful as creating it, so that admission asks for every grant.
func TestFinding6_Regrants(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: t0.Add(d)} }
	base := func() *iamv1alpha1.APICredential {
		return &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "c"},
			Spec: iamv1alpha1.APICredentialSpec{
				APIs:      []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "admin"}},
				Active:    ptr.To(false),
				ExpiresAt: at(time.Hour),
			},
		}
	}
	for _, tc := range []struct {
		name   string
		create bool
		change func(old, cred *iamv1alpha1.APICredential)
		want   []string
	}{
		{name: "nothing changes", change: func(_, _ *iamv1alpha1.APICredential) {}},
		{name: "rename", change: func(_, c *iamv1alpha1.APICredential) { c.Spec.DisplayName = "x" }},
		{name: "rotate", change: func(_, c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion++ }},
		{name: "reactivate: false to true", change: func(_, c *iamv1alpha1.APICredential) { c.Spec.Active = ptr.To(true) },
			want: []string{"spec.active"}},
		{name: "reactivate: false to absent (absent means true)", change: func(_, c *iamv1alpha1.APICredential) { c.Spec.Active = nil },
			want: []string{"spec.active"}},
		{name: "deactivate: true to false", change: func(o, c *iamv1alpha1.APICredential) {
			o.Spec.Active = nil
			c.Spec.Active = ptr.To(false)
		}},
		{name: "active stays true", change: func(o, c *iamv1alpha1.APICredential) {
			o.Spec.Active = nil
			c.Spec.Active = ptr.To(true)
		}},
		{name: "remove expiresAt", change: func(_, c *iamv1alpha1.APICredential) { c.Spec.ExpiresAt = nil },
			want: []string{"spec.expiresAt"}},
		{name: "extend expiresAt", change: func(_, c *iamv1alpha1.APICredential) { c.Spec.ExpiresAt = at(2 * time.Hour) },
			want: []string{"spec.expiresAt"}},
		{name: "shorten expiresAt", change: func(_, c *iamv1alpha1.APICredential) { c.Spec.ExpiresAt = at(time.Minute) }},
		{name: "set an expiry where there was none", change: func(o, c *iamv1alpha1.APICredential) {
			o.Spec.ExpiresAt = nil
			c.Spec.ExpiresAt = at(time.Hour)
		}},
		{name: "change the scope", change: func(_, c *iamv1alpha1.APICredential) { c.Spec.Scope.Account = "globex" },
			want: []string{"spec.scope"}},
		{name: "add the rebind annotation", change: func(_, c *iamv1alpha1.APICredential) {
			c.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
		}, want: []string{"metadata.annotations[iam.keysmith.dev/rebind]"}},
		{name: "change the rebind annotation's value", change: func(o, c *iamv1alpha1.APICredential) {
			o.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "false"}
			c.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
		}, want: []string{"metadata.annotations[iam.keysmith.dev/rebind]"}},
		{name: "keep the rebind annotation", change: func(o, c *iamv1alpha1.APICredential) {
			o.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
			c.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
		}},
		{name: "remove the rebind annotation", change: func(o, _ *iamv1alpha1.APICredential) {
			o.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
		}},
		{name: "everything at once", change: func(_, c *iamv1alpha1.APICredential) {
			c.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
			c.Spec.Scope.Workspaces = []string{"eu"}
			c.Spec.Active = nil
			c.Spec.ExpiresAt = nil
		}, want: []string{"metadata.annotations[iam.keysmith.dev/rebind]", "spec.scope", "spec.active", "spec.expiresAt"}},
		{name: "create", create: true, change: func(_, _ *iamv1alpha1.APICredential) {}},
		{name: "create with the rebind annotation", create: true, change: func(_, c *iamv1alpha1.APICredential) {
			c.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
		}, want: []string{"metadata.annotations[iam.keysmith.dev/rebind]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, cred := base(), base()
			tc.change(old, cred)
			if tc.create {
				old = nil
			}
			var got []string
			for _, r := range regrants(old, cred) {
				got = append(got, r.field.String())
				if r.what == "" {
					t.Errorf("%s: no description", r.field)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("regrants = %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("regrants = %q, want %q", got, tc.want)
				}
			}
		})
	}
}
