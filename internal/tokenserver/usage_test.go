package tokenserver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// usageClient is a fake API server holding the named credentials that counts status
// patches by credential and fails the next one of a credential while failNext names it.
type usageClient struct {
	ctrlclient.Client
	patches  map[string]int
	failNext map[string]bool
}

func newUsageClient(t *testing.T, names ...string) *usageClient {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := iamv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	u := &usageClient{patches: map[string]int{}, failNext: map[string]bool{}}
	b := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&iamv1alpha1.APICredential{})
	for _, n := range names {
		b = b.WithObjects(&iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: n}})
	}
	u.Client = b.WithInterceptorFuncs(interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c ctrlclient.Client, sub string, obj ctrlclient.Object, patch ctrlclient.Patch, opts ...ctrlclient.SubResourcePatchOption) error {
			u.patches[obj.GetName()]++
			if u.failNext[obj.GetName()] {
				delete(u.failNext, obj.GetName())
				return errors.New("the API server is unavailable")
			}
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	}).Build()
	return u
}

func (u *usageClient) status(t *testing.T, name string) iamv1alpha1.APICredentialStatus {
	t.Helper()
	var o iamv1alpha1.APICredential
	if err := u.Get(context.Background(), types.NamespacedName{Namespace: "team-a", Name: name}, &o); err != nil {
		t.Fatal(err)
	}
	return o.Status
}

func usedCredential(name string) *tokenserver.Credential {
	return &tokenserver.Credential{Key: types.NamespacedName{Namespace: "team-a", Name: name}, Name: "team-a/" + name}
}

// TestUsageReporterPatchesEachUsedCredentialOncePerFlush: however often a credential is
// used between two flushes, a flush patches its status once, with the last use's time and
// address; a credential not used since the last flush is not patched.
func TestUsageReporterPatchesEachUsedCredentialOncePerFlush(t *testing.T) {
	api := newUsageClient(t, "busy", "quiet", "idle")
	u := tokenserver.NewUsageReporter(api, time.Hour)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	busy, quiet := usedCredential("busy"), usedCredential("quiet")
	for i := range 100 {
		addr := "10.0.0.1"
		if i == 99 {
			addr = "10.0.0.2"
		}
		u.Record(busy, addr, t0.Add(time.Duration(i)*time.Second))
	}
	u.Record(quiet, "10.0.1.1", t0)

	u.Flush(context.Background())
	if api.patches["busy"] != 1 || api.patches["quiet"] != 1 || api.patches["idle"] != 0 {
		t.Fatalf("patches after the first flush: %v, want busy and quiet once each", api.patches)
	}
	if s := api.status(t, "busy"); s.LastUsedTime == nil || !s.LastUsedTime.Time.Equal(t0.Add(99*time.Second)) || s.LastUsedAddress != "10.0.0.2" {
		t.Errorf("busy's status: %v %q, want the last use: %v from 10.0.0.2", s.LastUsedTime, s.LastUsedAddress, t0.Add(99*time.Second))
	}
	if s := api.status(t, "quiet"); s.LastUsedTime == nil || !s.LastUsedTime.Time.Equal(t0) || s.LastUsedAddress != "10.0.1.1" {
		t.Errorf("quiet's status: %v %q", s.LastUsedTime, s.LastUsedAddress)
	}
	if s := api.status(t, "idle"); s.LastUsedTime != nil || s.LastUsedAddress != "" {
		t.Errorf("idle's status: %v %q, want never used", s.LastUsedTime, s.LastUsedAddress)
	}

	u.Flush(context.Background())
	if api.patches["busy"] != 1 || api.patches["quiet"] != 1 {
		t.Fatalf("a flush with no use since the last patched again: %v", api.patches)
	}
	u.Record(quiet, "10.0.1.1", t0.Add(time.Minute))
	u.Flush(context.Background())
	if api.patches["busy"] != 1 || api.patches["quiet"] != 2 {
		t.Fatalf("after quiet's next use: %v, want quiet patched once more and busy not", api.patches)
	}
}

// TestUsageReporterRetriesFailedPatchesAndForgetsDeletedCredentials: a patch that fails
// is tried again at the next flush (the use is not lost); a credential deleted since its
// use is forgotten, not patched at every flush.
func TestUsageReporterRetriesFailedPatchesAndForgetsDeletedCredentials(t *testing.T) {
	api := newUsageClient(t, "flaky")
	u := tokenserver.NewUsageReporter(api, time.Hour)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	api.failNext["flaky"] = true
	u.Record(usedCredential("flaky"), "10.0.0.1", t0)
	u.Record(usedCredential("deleted"), "10.0.0.9", t0)

	u.Flush(context.Background())
	if s := api.status(t, "flaky"); s.LastUsedTime != nil {
		t.Fatalf("the failed patch reached the status: %v", s.LastUsedTime)
	}
	u.Flush(context.Background())
	if s := api.status(t, "flaky"); s.LastUsedTime == nil || !s.LastUsedTime.Time.Equal(t0) || s.LastUsedAddress != "10.0.0.1" {
		t.Errorf("after the retry: %v %q, want %v from 10.0.0.1", s.LastUsedTime, s.LastUsedAddress, t0)
	}
	if api.patches["flaky"] != 2 {
		t.Errorf("flaky patched %d times, want 2 (the failure and the retry)", api.patches["flaky"])
	}
	u.Flush(context.Background())
	if api.patches["deleted"] != 1 {
		t.Errorf("the deleted credential was patched %d times over three flushes, want once", api.patches["deleted"])
	}
}
