package tokenserver_test

import (
	"context"
	"net/url"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// TestRevocationWriterMergesAndRetriesOnConflict: the writer merges its revocations with
// the entries in status (another replica's are kept, expired ones pruned) and, when
// another replica writes between its read and its patch, the resourceVersion-guarded
// patch conflicts and is retried on a fresh read: nothing is lost.
func TestRevocationWriterMergesAndRetriesOnConflict(t *testing.T) {
	f := newFixture(t)
	c := f.issue("api", grants("platform-api:user"))
	now := f.clock.Now()
	obj := c.obj.DeepCopy()
	obj.Status.RevokedTokens = []iamv1alpha1.RevokedToken{
		{JTI: "expired-elsewhere", Exp: metav1.NewTime(now.Add(-time.Second))},
		{JTI: "live-elsewhere", Exp: metav1.NewTime(now.Add(time.Hour))},
	}
	scheme := runtime.NewScheme()
	if err := iamv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	patches, raced := 0, false
	api := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&iamv1alpha1.APICredential{}).WithObjects(obj).
		WithInterceptorFuncs(interceptor.Funcs{
			SubResourcePatch: func(ctx context.Context, cl ctrlclient.Client, sub string, o ctrlclient.Object, p ctrlclient.Patch, opts ...ctrlclient.SubResourcePatchOption) error {
				patches++
				if !raced { // another replica writes between this one's read and patch
					raced = true
					other := &iamv1alpha1.APICredential{}
					if err := cl.Get(ctx, ctrlclient.ObjectKeyFromObject(o), other); err != nil {
						return err
					}
					other.Status.RevokedTokens = append(other.Status.RevokedTokens,
						iamv1alpha1.RevokedToken{JTI: "raced-in", Exp: metav1.NewTime(now.Add(time.Hour))})
					if err := cl.Status().Update(ctx, other); err != nil {
						return err
					}
				}
				return cl.SubResource(sub).Patch(ctx, o, p, opts...)
			},
		}).Build()

	tok := f.token(c)
	jti, _ := f.jtiOf(t, tok)
	if resp, _ := f.post("/oauth2/revoke", url.Values{"token": {tok}}, c.id, c.secret); resp.StatusCode != 200 {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	w := tokenserver.NewRevocationWriter(f.srv, api, api, time.Hour)
	w.Flush(context.Background())

	var got iamv1alpha1.APICredential
	if err := api.Get(context.Background(), keyOf(obj), &got); err != nil {
		t.Fatal(err)
	}
	var jtis []string
	for _, e := range got.Status.RevokedTokens {
		jtis = append(jtis, e.JTI)
	}
	slices.Sort(jtis)
	want := []string{jti, "live-elsewhere", "raced-in"}
	slices.Sort(want)
	if !slices.Equal(jtis, want) {
		t.Errorf("revokedTokens after a raced write: %v, want %v", jtis, want)
	}
	if patches != 2 {
		t.Errorf("%d patches, want 2 (one conflict, one retry)", patches)
	}

	// Written once: the next flush patches nothing.
	w.Flush(context.Background())
	if patches != 2 {
		t.Errorf("a second flush patched again: %d patches", patches)
	}
}

// TestRevocationWriterCountsFailures: a revocation the writer cannot write holds on this
// replica only, so it must be visible: each failed write counts under result="error" and
// keysmith_tokenserver_revocations_pending says how many credentials wait; the retry that
// writes it counts under "ok" and the gauge returns to 0.
func TestRevocationWriterCountsFailures(t *testing.T) {
	f := newFixture(t)
	c := f.issue("api", grants("platform-api:user"))
	api := newUsageClient(t, c.obj.Name) // its next status patch of the credential fails
	api.failNext[c.obj.Name] = true
	tok := f.token(c)
	if resp, _ := f.post("/oauth2/revoke", url.Values{"token": {tok}}, c.id, c.secret); resp.StatusCode != 200 {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	w := tokenserver.NewRevocationWriter(f.srv, api, api, time.Hour)

	w.Flush(context.Background())
	if got := f.metricSamples("keysmith_tokenserver_revocation_writes_total", "keysmith_tokenserver_revocations_pending"); !slices.Equal(got, []string{
		`keysmith_tokenserver_revocation_writes_total{result="error"} 1`,
		`keysmith_tokenserver_revocations_pending 1`,
	}) {
		t.Errorf("after a failed write: %q", got)
	}

	w.Flush(context.Background())
	if got := f.metricSamples("keysmith_tokenserver_revocation_writes_total", "keysmith_tokenserver_revocations_pending"); !slices.Equal(got, []string{
		`keysmith_tokenserver_revocation_writes_total{result="error"} 1`,
		`keysmith_tokenserver_revocation_writes_total{result="ok"} 1`,
		`keysmith_tokenserver_revocations_pending 0`,
	}) {
		t.Errorf("after the retry: %q", got)
	}
	if got := api.status(t, c.obj.Name).RevokedTokens; len(got) != 1 {
		t.Errorf("status.revokedTokens after the retry: %v, want the one revoked token", got)
	}
}
