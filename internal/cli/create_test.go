package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// opsNamespace is the namespace the CLI-OPS command tests run in (as if -n team-a).
const opsNamespace = "team-a"

// opsNow is the fake clock's time in the CLI-OPS command tests.
var opsNow = time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)

// opsHarness runs one of create, delete, rotate, activate, deactivate, token and check
// against a fake API server, with its output captured.
type opsHarness struct {
	t      *testing.T
	c      client.WithWatch
	e      *env
	in     *bytes.Buffer
	out    *bytes.Buffer
	errOut *bytes.Buffer

	// watches counts the watches the command opened, watchesAtPatch their number at its
	// last patch. The fake API server's watch does not replay changes made between the
	// List and the Watch it starts from, as the real one does from a resourceVersion, so
	// the fake operators act only once the command watches (watching()).
	watches, watchesAtPatch atomic.Int32
}

// watching reports whether the command has opened a watch since its last patch.
func (h *opsHarness) watching() bool { return h.watches.Load() > h.watchesAtPatch.Load() }

func newOpsHarness(t *testing.T, funcs *interceptor.Funcs, objs ...client.Object) *opsHarness {
	t.Helper()
	b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&iamv1alpha1.APICredential{}).WithReturnManagedFields().
		WithIndex(&iamv1alpha1.APICredential{}, "metadata.name", func(o client.Object) []string { return []string{o.GetName()} })
	h := &opsHarness{t: t, in: &bytes.Buffer{}, out: &bytes.Buffer{}, errOut: &bytes.Buffer{}}
	f := interceptor.Funcs{}
	if funcs != nil {
		f = *funcs
	}
	patch := f.Patch
	f.Patch = func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
		h.watchesAtPatch.Store(h.watches.Load())
		if patch != nil {
			return patch(ctx, c, obj, p, opts...)
		}
		return c.Patch(ctx, obj, p, opts...)
	}
	f.Watch = func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
		w, err := c.Watch(ctx, list, opts...)
		h.watches.Add(1)
		return w, err
	}
	c := b.WithInterceptorFuncs(f).Build()
	h.c = c
	flags := genericclioptions.NewConfigFlags(true)
	ns := opsNamespace
	flags.Namespace = &ns
	t.Setenv("KUBECONFIG", t.TempDir()+"/none")
	h.e = newEnv(Streams{In: h.in, Out: h.out, ErrOut: h.errOut}, flags)
	h.e.newClient = func() (client.WithWatch, error) { return c, nil }
	h.e.terminal = func(any) bool { return false }
	h.e.clock = clocktesting.NewFakeClock(opsNow)
	return h
}

// run executes the command build makes with args and returns its error.
func (h *opsHarness) run(build func(*env) *cobra.Command, args ...string) error {
	h.t.Helper()
	cmd := build(h.e)
	cmd.SetArgs(args)
	cmd.SetIn(h.in)
	cmd.SetOut(h.out)
	cmd.SetErr(h.errOut)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return cmd.ExecuteContext(ctx)
}

// credential reads the credential name back from the fake API server.
func (h *opsHarness) credential(name string) (*iamv1alpha1.APICredential, error) {
	cred := &iamv1alpha1.APICredential{}
	err := h.c.Get(context.Background(), types.NamespacedName{Namespace: opsNamespace, Name: name}, cred)
	return cred, err
}

// issuedCred is an issued credential as the operator leaves it, with its Secret.
func issuedCred(name string, keyVersion int64, mutate ...func(*iamv1alpha1.APICredential)) (*iamv1alpha1.APICredential, *corev1.Secret) {
	secret := "kss_secret_" + name
	cred := &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: opsNamespace, Generation: 1},
		Spec: iamv1alpha1.APICredentialSpec{
			APIs:     []iamv1alpha1.APIGrant{{Name: "profile-api", Permission: "read-only"}},
			Active:   new(true),
			Rotation: iamv1alpha1.Rotation{KeyVersion: keyVersion},
		},
	}
	markIssued(cred, secret)
	for _, m := range mutate {
		m(cred)
	}
	return cred, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: cred.Spec.SecretName(name), Namespace: opsNamespace},
		Data: map[string][]byte{
			"CLIENT_ID":     []byte("ksc_" + name),
			"CLIENT_SECRET": []byte(secret),
			"TOKEN_URL":     []byte("https://keysmith.example.com/oauth2/token"),
		},
	}
}

// markIssued sets the status the operator writes once secret is issued.
func markIssued(cred *iamv1alpha1.APICredential, secret string) {
	cred.Status.ClientID = "ksc_" + cred.Name
	cred.Status.SecretHash = credential.Hash(secret)
	cred.Status.KeyVersion = cred.Spec.Rotation.KeyVersion
	cred.Status.ObservedGeneration = cred.Generation
	cred.Status.SecretRef = &iamv1alpha1.SecretReference{Name: cred.Spec.SecretName(cred.Name)}
	active, reason := metav1.ConditionTrue, iamv1alpha1.ReasonIssued
	if !cred.Spec.IsActive() {
		active, reason = metav1.ConditionFalse, iamv1alpha1.ReasonInactive
	}
	apimeta.SetStatusCondition(&cred.Status.Conditions, metav1.Condition{Type: iamv1alpha1.ConditionReady, Status: metav1.ConditionTrue,
		Reason: map[bool]string{true: iamv1alpha1.ReasonIssued, false: iamv1alpha1.ReasonInactive}[cred.Spec.IsActive()], ObservedGeneration: cred.Generation})
	apimeta.SetStatusCondition(&cred.Status.Conditions, metav1.Condition{Type: iamv1alpha1.ConditionActive, Status: active, Reason: reason, ObservedGeneration: cred.Generation})
}

func TestParseGrants(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		want    []iamv1alpha1.APIGrant
		wantErr string
	}{
		{name: "one", values: []string{"profile-api:read-only"},
			want: []iamv1alpha1.APIGrant{{Name: "profile-api", Permission: "read-only"}}},
		{name: "repeated flag", values: []string{"profile-api:read-only", "platform-api:admin"},
			want: []iamv1alpha1.APIGrant{{Name: "profile-api", Permission: "read-only"}, {Name: "platform-api", Permission: "admin"}}},
		{name: "comma-separated", values: []string{"profile-api:read-only, platform-api:admin"},
			want: []iamv1alpha1.APIGrant{{Name: "profile-api", Permission: "read-only"}, {Name: "platform-api", Permission: "admin"}}},
		{name: "no permission", values: []string{"profile-api"}, wantErr: `--api "profile-api" is not API:PERMISSION`},
		{name: "empty permission", values: []string{"profile-api:"}, wantErr: `--api "profile-api:" is not API:PERMISSION`},
		{name: "empty API", values: []string{":read-only"}, wantErr: `--api ":read-only" is not API:PERMISSION`},
		{name: "two colons", values: []string{"profile-api:read:only"}, wantErr: `is not API:PERMISSION`},
		{name: "empty item", values: []string{"profile-api:read-only,"}, wantErr: `--api "" is not API:PERMISSION`},
		{name: "an API twice", values: []string{"platform-api:user", "platform-api:admin"},
			wantErr: `--api names API "platform-api" twice (user and admin): a credential holds one permission per API`},
		{name: "none", values: nil, wantErr: "no API to grant: pass --api API:PERMISSION"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseGrants(tt.values)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseGrants(%q) error = %v, want it to contain %q", tt.values, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseGrants(%q): %v", tt.values, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseGrants(%q) = %v, want %v", tt.values, got, tt.want)
			}
		})
	}
}

func TestParseExpiry(t *testing.T) {
	tests := []struct {
		name    string
		in, at  string
		want    time.Time
		wantErr string
	}{
		{name: "neither"},
		{name: "days", in: "90d", want: opsNow.Add(90 * 24 * time.Hour)},
		{name: "hours", in: "36h", want: opsNow.Add(36 * time.Hour)},
		{name: "time", at: "2027-01-31T00:00:00Z", want: time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)},
		{name: "time with offset", at: "2027-01-31T01:00:00+01:00", want: time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)},
		{name: "both", in: "90d", at: "2027-01-31T00:00:00Z", wantErr: "--expires-in and --expires-at both given: pass one of them"},
		{name: "zero", in: "0s", wantErr: `--expires-in "0s" is not a positive duration`},
		{name: "negative", in: "-1h", wantErr: `--expires-in "-1h" is not a positive duration`},
		{name: "days not a number", in: "xd", wantErr: `--expires-in "xd" is not a positive duration`},
		{name: "not RFC 3339", at: "2027-01-31", wantErr: `--expires-at "2027-01-31" is not an RFC 3339 time`},
		{name: "in the past", at: "2026-01-01T00:00:00Z", wantErr: "--expires-at 2026-01-01T00:00:00Z is in the past"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseExpiry(tt.in, tt.at, opsNow)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseExpiry(%q, %q) error = %v, want it to contain %q", tt.in, tt.at, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseExpiry(%q, %q): %v", tt.in, tt.at, err)
			}
			if tt.want.IsZero() != (got == nil) || (got != nil && !got.Time.Equal(tt.want)) {
				t.Errorf("parseExpiry(%q, %q) = %v, want %v", tt.in, tt.at, got, tt.want)
			}
		})
	}
}

func TestCreateBuildsTheCredential(t *testing.T) {
	o := &createOptions{
		apis:        []string{"platform-api:admin", "profile-api:read-only"},
		workspaces:  []string{"eu-prod", "us-prod,eu-prod"},
		displayName: "Deploy pipeline",
		expiresIn:   "90d",
		grace:       "10m",
	}
	cred, err := o.credential("deployer", opsNamespace, opsNow)
	if err != nil {
		t.Fatal(err)
	}
	if cred.Spec.Scope.Account != "" {
		t.Errorf("spec.scope.account = %q without --account; want it empty (status selects it)", cred.Spec.Scope.Account)
	}
	if want := []string{"eu-prod", "us-prod"}; !reflect.DeepEqual(cred.Spec.Scope.Workspaces, want) {
		t.Errorf("workspaces = %v, want %v", cred.Spec.Scope.Workspaces, want)
	}
	if g := cred.Spec.Rotation.GracePeriod; g == nil || g.Duration != 10*time.Minute {
		t.Errorf("gracePeriod = %v, want 10m", g)
	}
	if e := cred.Spec.ExpiresAt; e == nil || !e.Time.Equal(opsNow.Add(90*24*time.Hour)) {
		t.Errorf("expiresAt = %v, want 90 days from now", e)
	}
	if cred.Spec.Active != nil || cred.Spec.DisplayName != "Deploy pipeline" || len(cred.Spec.APIs) != 2 {
		t.Errorf("spec = %+v", cred.Spec)
	}

	o.account = "acme"
	if cred, err = o.credential("deployer", opsNamespace, opsNow); err != nil || cred.Spec.Scope.Account != "acme" {
		t.Errorf("with --account acme: account %q, err %v", cred.Spec.Scope.Account, err)
	}
	o.output = "yaml"
	if _, err := o.credential("deployer", opsNamespace, opsNow); err == nil || !strings.Contains(err.Error(), `-o "yaml" is not an output format of create`) {
		t.Errorf("-o yaml: err = %v", err)
	}
}

func TestCreateRefusesBothExpiryFlagsBeforeCallingTheAPI(t *testing.T) {
	h := newOpsHarness(t, nil)
	err := h.run(newCreateCommand, "ci-bot", "--api", "profile-api:read-only", "--expires-in", "90d", "--expires-at", "2027-01-31T00:00:00Z")
	if err == nil || !strings.Contains(err.Error(), "--expires-in and --expires-at both given: pass one of them") {
		t.Fatalf("err = %v, want the exclusive-flags refusal", err)
	}
	if _, err := h.credential("ci-bot"); err == nil {
		t.Error("the credential was created")
	}
}

func TestCreateJSONShape(t *testing.T) {
	var b bytes.Buffer
	ic := issuedCredential{Name: "ci-bot", Namespace: opsNamespace, ClientID: "ksc_1", ClientSecret: "kss_2", TokenURL: "https://ts/oauth2/token"}
	if err := printIssued(&b, ic, "ci-bot", "json"); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, b.String())
	}
	want := map[string]any{"name": "ci-bot", "namespace": opsNamespace, "clientID": "ksc_1", "clientSecret": "kss_2", "tokenURL": "https://ts/oauth2/token"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("create -o json = %v, want exactly %v", got, want)
	}
	if strings.Contains(b.String(), "will not show it again") {
		t.Error("-o json carries the terminal note")
	}
}

// fakeOperator issues the first credential named name that appears: it writes the Secret
// and then status, as the operator does.
func fakeOperator(t *testing.T, h *opsHarness, name, secret string, stall bool) {
	t.Helper()
	c := h.c
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil {
			cred := &iamv1alpha1.APICredential{}
			if err := c.Get(ctx, types.NamespacedName{Namespace: opsNamespace, Name: name}, cred); err != nil || !h.watching() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if stall {
				apimeta.SetStatusCondition(&cred.Status.Conditions, metav1.Condition{Type: iamv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: iamv1alpha1.ReasonInvalidSpec, Message: `API "nope" is not in the catalog`})
				apimeta.SetStatusCondition(&cred.Status.Conditions, metav1.Condition{Type: iamv1alpha1.ConditionStalled, Status: metav1.ConditionTrue, Reason: iamv1alpha1.ReasonInvalidSpec, Message: `API "nope" is not in the catalog`})
				_ = c.Status().Update(ctx, cred)
				return
			}
			_ = c.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: opsNamespace},
				Data:       map[string][]byte{"CLIENT_ID": []byte("ksc_" + name), "CLIENT_SECRET": []byte(secret), "TOKEN_URL": []byte("https://ts.example/oauth2/token")},
			})
			markIssued(cred, secret)
			_ = c.Status().Update(ctx, cred)
			return
		}
	}()
}

func TestCreateWaitsAndShowsTheSecretOnce(t *testing.T) {
	for _, format := range []string{"", "json"} {
		t.Run("-o "+format, func(t *testing.T) {
			h := newOpsHarness(t, nil)
			fakeOperator(t, h, "ci-bot", "kss_the_secret", false)
			args := []string{"ci-bot", "--api", "profile-api:read-only", "--timeout", "10s"}
			if format != "" {
				args = append(args, "-o", format)
			}
			if err := h.run(newCreateCommand, args...); err != nil {
				t.Fatalf("create: %v", err)
			}
			out := h.out.String()
			if strings.Count(out, "kss_the_secret") != 1 || !strings.Contains(out, "ksc_ci-bot") || !strings.Contains(out, "https://ts.example/oauth2/token") {
				t.Errorf("output does not show the client ID, the secret once and the token URL:\n%s", out)
			}
			note := "the secret is stored only in Secret team-a/ci-bot; create will not show it again"
			if (format == "") != strings.Contains(out, note) {
				t.Errorf("note %q shown = %t with -o %q:\n%s", note, strings.Contains(out, note), format, out)
			}
			if h.errOut.Len() != 0 {
				t.Errorf("stderr: %s", h.errOut)
			}
		})
	}
}

func TestCreateFailsWhenTheCredentialExists(t *testing.T) {
	cred, secret := issuedCred("ci-bot", 0)
	h := newOpsHarness(t, nil, cred, secret)
	err := h.run(newCreateCommand, "ci-bot", "--api", "profile-api:read-only")
	if err == nil || !strings.Contains(err.Error(), "apicredential team-a/ci-bot already exists: use `kubectl keysmith status ci-bot`") {
		t.Fatalf("err = %v, want the already-exists refusal", err)
	}
	if strings.Contains(h.out.String()+err.Error(), "kss_") {
		t.Error("the existing secret was shown")
	}
}

func TestCreateReportsAStalledCredential(t *testing.T) {
	h := newOpsHarness(t, nil)
	fakeOperator(t, h, "ci-bot", "", true)
	err := h.run(newCreateCommand, "ci-bot", "--api", "nope:read-only", "--timeout", "10s")
	if err == nil || !strings.Contains(err.Error(), `was created but not issued: InvalidSpec: API "nope" is not in the catalog`) {
		t.Fatalf("err = %v, want the stall reason", err)
	}
}

func TestCreateTimesOutSayingItWasCreated(t *testing.T) {
	h := newOpsHarness(t, nil)
	err := h.run(newCreateCommand, "ci-bot", "--api", "profile-api:read-only", "--timeout", "300ms")
	if err == nil || !strings.Contains(err.Error(), `credential "ci-bot" was created in namespace "team-a", but is not issued after 300ms`) {
		t.Fatalf("err = %v, want the timeout that says it was created", err)
	}
	if _, err := h.credential("ci-bot"); err != nil {
		t.Errorf("the credential is not there: %v", err)
	}
}

func TestCreateSaysWhenTheSecretCannotBeRead(t *testing.T) {
	h := newOpsHarness(t, &interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if _, ok := obj.(*corev1.Secret); ok {
			return apierrorsForbiddenSecret(key.Name)
		}
		return c.Get(ctx, key, obj, opts...)
	}})
	fakeOperator(t, h, "ci-bot", "kss_the_secret", false)
	err := h.run(newCreateCommand, "ci-bot", "--api", "profile-api:read-only", "--timeout", "10s")
	want := `apicredential team-a/ci-bot was created, but you may not read its Secret team-a/ci-bot: ask for get on secrets "ci-bot" in namespace "team-a"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// apierrorsForbiddenSecret is the API server's refusal to get Secret name.
func apierrorsForbiddenSecret(name string) error {
	return apierrors.NewForbidden(corev1.Resource("secrets"), name, errors.New(`User "bob" cannot get resource "secrets" in API group "" in the namespace "team-a"`))
}

func TestIssuedState(t *testing.T) {
	cond := func(typ string, status metav1.ConditionStatus, reason string, gen int64) metav1.Condition {
		return metav1.Condition{Type: typ, Status: status, Reason: reason, ObservedGeneration: gen}
	}
	tests := []struct {
		name       string
		conditions []metav1.Condition
		hash       string
		want       bool
		wantErr    string
	}{
		{name: "no status yet"},
		{name: "issued", conditions: []metav1.Condition{cond("Ready", "True", "Issued", 1)}, hash: "sha256:x", want: true},
		{name: "expired while issuing: issued all the same", conditions: []metav1.Condition{cond("Ready", "True", "Expired", 1)}, hash: "sha256:x", want: true},
		{name: "issued, no hash yet", conditions: []metav1.Condition{cond("Ready", "True", "Issued", 1)}},
		{name: "for an older generation", conditions: []metav1.Condition{cond("Ready", "True", "Issued", 0)}, hash: "sha256:x"},
		{name: "retrying", conditions: []metav1.Condition{cond("Ready", "Unknown", "Retrying", 1), cond("Reconciling", "True", "Retrying", 1)}},
		{name: "stalled", conditions: []metav1.Condition{cond("Ready", "False", "SecretConflict", 1), {Type: "Stalled", Status: "True", Reason: "SecretConflict", Message: "Secret taken"}},
			wantErr: "was created but not issued: SecretConflict: Secret taken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Name: "ci-bot", Namespace: opsNamespace, Generation: 1},
				Status: iamv1alpha1.APICredentialStatus{Conditions: tt.conditions, SecretHash: tt.hash, ObservedGeneration: 1}}
			got, err := issuedState(cred)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("issuedState = %t, %v; want %t", got, err, tt.want)
			}
		})
	}
}
