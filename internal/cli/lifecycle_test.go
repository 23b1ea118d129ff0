package cli

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// generationBumps makes the fake API server raise metadata.generation on every patch of
// a credential's spec, as the real one does; patches counts them.
func generationBumps(patches *atomic.Int32) *interceptor.Funcs {
	return &interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
		if err := c.Patch(ctx, obj, patch, opts...); err != nil {
			return err
		}
		patches.Add(1)
		obj.SetGeneration(obj.GetGeneration() + 1)
		return c.Update(ctx, obj)
	}}
}

// lifecycleOperator reconciles credential name until the test ends, as the operator
// would: a raised keyVersion issues secret "kss_v<N>" into the Secret and moves the old
// hash to previousSecrets (grace from spec, default 1h), and status follows the spec's
// generation.
func lifecycleOperator(t *testing.T, h *opsHarness, name string) {
	c := h.c
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
			cred := &iamv1alpha1.APICredential{}
			if !h.watching() || c.Get(ctx, types.NamespacedName{Namespace: opsNamespace, Name: name}, cred) != nil || cred.Status.ObservedGeneration >= cred.Generation {
				continue
			}
			secret := &corev1.Secret{}
			if c.Get(ctx, types.NamespacedName{Namespace: opsNamespace, Name: name}, secret) != nil {
				continue
			}
			plain := string(secret.Data["CLIENT_SECRET"])
			if v := cred.Spec.Rotation.KeyVersion; v > cred.Status.KeyVersion {
				grace := time.Hour
				if g := cred.Spec.Rotation.GracePeriod; g != nil {
					grace = g.Duration
				}
				if grace > 0 {
					cred.Status.PreviousSecrets = append([]iamv1alpha1.PreviousSecret{{Hash: cred.Status.SecretHash, ExpiresAt: metav1.NewTime(opsNow.Add(grace))}}, cred.Status.PreviousSecrets...)
				}
				plain = fmt.Sprintf("kss_v%d", v)
				secret.Data["CLIENT_SECRET"] = []byte(plain)
				if c.Update(ctx, secret) != nil {
					continue
				}
			}
			markIssued(cred, plain)
			_ = c.Status().Update(ctx, cred)
		}
	}()
}

func TestRotate(t *testing.T) {
	var patches atomic.Int32
	cred, secret := issuedCred("ci-bot", 2)
	h := newOpsHarness(t, generationBumps(&patches), cred, secret)
	lifecycleOperator(t, h, "ci-bot")

	if err := h.run(newRotateCommand, "ci-bot", "--grace", "10m", "--show-secret", "--timeout", "10s"); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	got, _ := h.credential("ci-bot")
	if got.Spec.Rotation.KeyVersion != 3 || got.Spec.Rotation.GracePeriod == nil || got.Spec.Rotation.GracePeriod.Duration != 10*time.Minute {
		t.Errorf("spec.rotation = %+v, want keyVersion 3 and gracePeriod 10m", got.Spec.Rotation)
	}
	out := h.out.String()
	for _, want := range []string{
		"apicredential team-a/ci-bot rotated: key version 3 issued",
		"The previous secret keeps working until 2026-12-02T03:10:00Z (in 10m)",
		"Client secret:  kss_v3",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not contain %q:\n%s", want, out)
		}
	}

	// Without --show-secret the new secret is not printed.
	h.out.Reset()
	if err := h.run(newRotateCommand, "ci-bot", "--timeout", "10s"); err != nil {
		t.Fatalf("second rotate: %v", err)
	}
	if out := h.out.String(); strings.Contains(out, "kss_v4") || !strings.Contains(out, "key version 4 issued") || !strings.Contains(out, "--show-secret prints it") {
		t.Errorf("rotate without --show-secret:\n%s", out)
	}
}

// Two rotations that read the same keyVersion must not both write N+1: the second one's
// resourceVersion precondition fails, and it reads again and writes N+2.
func TestRotateDoesNotCollapseConcurrentRotations(t *testing.T) {
	cred, secret := issuedCred("ci-bot", 5)
	var raced atomic.Bool
	funcs := &interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
		if raced.CompareAndSwap(false, true) { // another rotate lands between our read and our patch
			other := &iamv1alpha1.APICredential{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), other); err != nil {
				return err
			}
			other.Spec.Rotation.KeyVersion++
			if err := c.Update(ctx, other); err != nil {
				return err
			}
		}
		return c.Patch(ctx, obj, patch, opts...)
	}}
	h := newOpsHarness(t, funcs, cred, secret)
	// Status is not followed here: the wait times out, and the test reads the spec.
	err := h.run(newRotateCommand, "ci-bot", "--timeout", "200ms")
	if err == nil || !strings.Contains(err.Error(), "spec.rotation.keyVersion of credential \"ci-bot\" is now 7") {
		t.Fatalf("err = %v, want the timeout naming keyVersion 7", err)
	}
	got, _ := h.credential("ci-bot")
	if got.Spec.Rotation.KeyVersion != 7 {
		t.Errorf("keyVersion = %d after two rotations from 5, want 7", got.Spec.Rotation.KeyVersion)
	}
}

func TestActivateAndDeactivate(t *testing.T) {
	var patches atomic.Int32
	cred, secret := issuedCred("ci-bot", 0)
	h := newOpsHarness(t, generationBumps(&patches), cred, secret)
	lifecycleOperator(t, h, "ci-bot")

	if err := h.run(newDeactivateCommand, "ci-bot", "--timeout", "10s"); err != nil {
		t.Fatalf("deactivate: %v", err)
	}
	if got, _ := h.credential("ci-bot"); got.Spec.IsActive() {
		t.Error("spec.active is still true")
	}
	if out := h.out.String(); !strings.Contains(out, "apicredential team-a/ci-bot deactivated: token servers refuse it and the tokens it was issued (Active=False, Inactive)") {
		t.Errorf("deactivate printed:\n%s", out)
	}

	h.out.Reset()
	if err := h.run(newDeactivateCommand, "ci-bot"); err != nil || !strings.Contains(h.out.String(), "already inactive: nothing changed") || patches.Load() != 1 {
		t.Errorf("second deactivate: err %v, %d patches, output:\n%s", err, patches.Load(), h.out)
	}

	h.out.Reset()
	if err := h.run(newActivateCommand, "ci-bot", "--timeout", "10s"); err != nil {
		t.Fatalf("activate: %v", err)
	}
	if got, _ := h.credential("ci-bot"); !got.Spec.IsActive() {
		t.Error("spec.active is still false")
	}
	if out := h.out.String(); !strings.Contains(out, "apicredential team-a/ci-bot activated: token servers accept its keys again (Active=True)") {
		t.Errorf("activate printed:\n%s", out)
	}
}

func TestActivatePassesTheAdmissionRefusalThrough(t *testing.T) {
	denial := `admission webhook "vapicredential.iam.keysmith.dev" denied the request: apicredentials.iam.keysmith.dev "ci-bot" is forbidden: reactivating the credential needs every grant it holds: bob may not grant apidefinitions/read-only "profile-api" in namespace "team-a"`
	funcs := &interceptor.Funcs{Patch: func(context.Context, client.WithWatch, client.Object, client.Patch, ...client.PatchOption) error {
		return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: 403, Reason: metav1.StatusReasonForbidden, Message: denial}}
	}}
	cred, secret := issuedCred("ci-bot", 0, func(c *iamv1alpha1.APICredential) { c.Spec.Active = new(false) })
	h := newOpsHarness(t, funcs, cred, secret)
	err := h.run(newActivateCommand, "ci-bot")
	if err == nil {
		t.Fatal("activate succeeded")
	}
	var out strings.Builder
	printError(&out, err)
	if got := out.String(); got != "error: "+denial+"\n" {
		t.Errorf("printed %q, want the webhook's message unchanged", got)
	}
}

// The GitOps rule: without --force, rotate, activate and deactivate print the change to
// make in Git, change nothing and fail.
func TestGitOpsRefusal(t *testing.T) {
	tests := []struct {
		name    string
		build   func(*env) *cobra.Command
		args    []string
		active  bool
		wantOut []string
	}{
		{name: "rotate", build: newRotateCommand, args: []string{"--grace", "5m"}, active: true,
			wantOut: []string{"rotation:", "keyVersion: 3", "gracePeriod: 5m0s",
				"Rotating live would raise spec.rotation.keyVersion to 3 while Git says 2: the next sync would set it back, which is refused (keyVersion cannot decrease)"}},
		{name: "deactivate", build: newDeactivateCommand, active: true, wantOut: []string{"active: false"}},
		{name: "activate", build: newActivateCommand, active: false, wantOut: []string{"active: true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var patches atomic.Int32
			cred, secret := issuedCred("ci-bot", 2, fluxApplied, func(c *iamv1alpha1.APICredential) { c.Spec.Active = new(tt.active) })
			h := newOpsHarness(t, generationBumps(&patches), cred, secret)
			err := h.run(tt.build, append([]string{"ci-bot"}, tt.args...)...)
			want := `credential "ci-bot" is applied by Flux (kustomize-controller), so it was not changed: make the change above in Git, or pass --force`
			if err == nil || err.Error() != want {
				t.Fatalf("err = %v, want %q", err, want)
			}
			out := h.out.String()
			for _, w := range append([]string{
				"APICredential team-a/ci-bot is applied by Flux (kustomize-controller) (field manager kustomize-controller): a live change would be reverted by the next sync",
				"Make this change in Git instead:",
				"kind: APICredential",
				"name: ci-bot",
				"namespace: team-a",
				"--force",
			}, tt.wantOut...) {
				if !strings.Contains(out, w) {
					t.Errorf("output does not contain %q:\n%s", w, out)
				}
			}
			if patches.Load() != 0 {
				t.Errorf("%d patches sent", patches.Load())
			}
			got, _ := h.credential("ci-bot")
			if got.Spec.Rotation.KeyVersion != 2 || got.Spec.IsActive() != tt.active {
				t.Errorf("spec changed: %+v", got.Spec)
			}
		})
	}
}

func TestGitOpsForce(t *testing.T) {
	var patches atomic.Int32
	cred, secret := issuedCred("ci-bot", 2, fluxApplied)
	h := newOpsHarness(t, generationBumps(&patches), cred, secret)
	lifecycleOperator(t, h, "ci-bot")
	if err := h.run(newRotateCommand, "ci-bot", "--force", "--timeout", "10s"); err != nil {
		t.Fatalf("rotate --force: %v", err)
	}
	if got, _ := h.credential("ci-bot"); got.Spec.Rotation.KeyVersion != 3 || !credential.Verify("kss_v3", got.Status.SecretHash) {
		t.Errorf("not rotated: spec %+v status %+v", got.Spec.Rotation, got.Status)
	}
	if want := "warning: credential \"ci-bot\" is applied by Flux (kustomize-controller) and rotated live: raise spec.rotation.keyVersion in Git to at least 3 now"; !strings.Contains(h.errOut.String(), want) {
		t.Errorf("stderr %q does not warn %q", h.errOut, want)
	}
}

func TestPreviousSecretLine(t *testing.T) {
	at := func(d time.Duration) []iamv1alpha1.PreviousSecret {
		return []iamv1alpha1.PreviousSecret{{Hash: "sha256:x", ExpiresAt: metav1.NewTime(opsNow.Add(d))}}
	}
	tests := []struct {
		name     string
		grace    *metav1.Duration
		previous []iamv1alpha1.PreviousSecret
		want     string
	}{
		{name: "in grace", previous: at(time.Hour), want: "The previous secret keeps working until 2026-12-02T04:00:00Z (in 60m)"},
		{name: "grace 0s, an older one still in its grace", grace: &metav1.Duration{}, previous: at(time.Hour), want: "The previous secret stopped working at once (grace period 0s)."},
		{name: "grace ended", previous: at(-time.Minute), want: "The previous secret stopped working at 2026-12-02T02:59:00Z."},
		{name: "none", want: "The previous secret no longer works (no grace period)."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred := &iamv1alpha1.APICredential{Spec: iamv1alpha1.APICredentialSpec{Rotation: iamv1alpha1.Rotation{GracePeriod: tt.grace}},
				Status: iamv1alpha1.APICredentialStatus{PreviousSecrets: tt.previous}}
			if got := previousSecretLine(cred, opsNow); !strings.HasPrefix(got, tt.want) {
				t.Errorf("previousSecretLine = %q, want %q", got, tt.want)
			}
		})
	}
}
