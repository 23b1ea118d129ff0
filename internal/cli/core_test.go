package cli

import (
	"bytes"
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// coreNow is the fake clock's time in the CLI-CORE tests.
var coreNow = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

// coreHarness runs the plugin's root command (list, status, apis, completion, …)
// against a fake API server, with its output captured.
type coreHarness struct {
	t      *testing.T
	c      client.WithWatch
	e      *env
	out    *bytes.Buffer
	errOut *bytes.Buffer
}

func newCoreHarness(t *testing.T, objs ...client.Object) *coreHarness {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&iamv1alpha1.APICredential{}).
		WithIndex(&iamv1alpha1.APICredential{}, "metadata.name", func(o client.Object) []string { return []string{o.GetName()} }).
		Build()
	t.Setenv("KUBECONFIG", t.TempDir()+"/none")
	h := &coreHarness{t: t, c: c, out: &bytes.Buffer{}, errOut: &bytes.Buffer{}}
	h.e = newEnv(Streams{In: &bytes.Buffer{}, Out: h.out, ErrOut: h.errOut}, genericclioptions.NewConfigFlags(true))
	h.e.newClient = func() (client.WithWatch, error) { return c, nil }
	h.e.terminal = func(any) bool { return false }
	h.e.clock = clocktesting.NewFakeClock(coreNow)
	return h
}

// run executes `kubectl keysmith <args>` and returns its error.
func (h *coreHarness) run(args ...string) error {
	h.t.Helper()
	h.e.flags = genericclioptions.NewConfigFlags(true) // it caches the kubeconfig, -n included
	root := newRootCommand(h.e)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return root.ExecuteContext(ctx)
}

// fixtureCredential is an issued credential of namespace ns, as the operator and a
// token server leave it: two grants, a rotation with a previous secret in its grace
// period, automatic rotation, an expiry, last use.
func fixtureCredential(ns, name string) *iamv1alpha1.APICredential {
	at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(coreNow.Add(d)); return &t }
	active := true
	return &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, Generation: 2, UID: types.UID("uid-" + name),
			CreationTimestamp: *at(-72 * time.Hour),
			ManagedFields: []metav1.ManagedFieldsEntry{
				{Manager: "kubectl-keysmith", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "iam.keysmith.dev/v1alpha1", FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:spec":{}}`)},
				{Manager: "keysmith-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "iam.keysmith.dev/v1alpha1", FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:status":{}}`), Subresource: "status"},
			},
		},
		Spec: iamv1alpha1.APICredentialSpec{
			DisplayName: "CI bot",
			APIs: []iamv1alpha1.APIGrant{
				{Name: "profile-api", Permission: "read-only"},
				{Name: "platform-api", Permission: "admin"},
			},
			Scope:     iamv1alpha1.CredentialScope{Workspaces: []string{"eu-prod", "us-dev"}},
			Active:    &active,
			Rotation:  iamv1alpha1.Rotation{KeyVersion: 2, GracePeriod: &metav1.Duration{Duration: time.Hour}, Period: &metav1.Duration{Duration: 90 * 24 * time.Hour}},
			ExpiresAt: at(30 * 24 * time.Hour),
		},
		Status: iamv1alpha1.APICredentialStatus{
			ClientID:        "ksc_" + name + "0123456789",
			SecretHash:      "sha256:deadbeefcafe0000000000000000000000000000000000000000000000000000",
			PreviousSecrets: []iamv1alpha1.PreviousSecret{{Hash: "sha256:0ldf00d000000000000000000000000000000000000000000000000000000000", ExpiresAt: *at(40 * time.Minute)}},
			SecretRef:       &iamv1alpha1.SecretReference{Name: name},
			IssuedAt:        at(-20 * time.Minute),
			KeyVersion:      2,
			Account:         ns,
			LastUsedTime:    at(-3 * time.Minute),
			LastUsedAddress: "10.0.0.7",
			Conditions: []metav1.Condition{
				{Type: iamv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: iamv1alpha1.ReasonIssued, Message: "the secret is issued", ObservedGeneration: 2, LastTransitionTime: *at(-20 * time.Minute)},
				{Type: iamv1alpha1.ConditionActive, Status: metav1.ConditionTrue, Reason: iamv1alpha1.ReasonIssued, ObservedGeneration: 2, LastTransitionTime: *at(-72 * time.Hour)},
			},
			ObservedGeneration: 2,
		},
	}
}

// fixtureAPIs are the catalog of the fixtures.
func fixtureAPIs() []client.Object {
	return []client.Object{
		&iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: "profile-api"}, Spec: iamv1alpha1.APIDefinitionSpec{
			DisplayName: "Profile API", ScopeLevel: iamv1alpha1.ScopeLevelAccount,
			Permissions: []iamv1alpha1.Permission{{Name: "read-only", Methods: []string{"GET", "HEAD"}}},
		}},
		&iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: "platform-api"}, Spec: iamv1alpha1.APIDefinitionSpec{
			DisplayName: "Platform API", ScopeLevel: iamv1alpha1.ScopeLevelWorkspace,
			Permissions: []iamv1alpha1.Permission{{Name: "user", Methods: []string{"GET", "POST"}}, {Name: "admin", Methods: []string{"*"}}},
		}},
	}
}

// inactive marks a fixture deactivated, as the operator reports it.
func inactive(cred *iamv1alpha1.APICredential) *iamv1alpha1.APICredential {
	off := false
	cred.Spec.Active = &off
	for i := range cred.Status.Conditions {
		c := &cred.Status.Conditions[i]
		if c.Type == iamv1alpha1.ConditionActive {
			c.Status, c.Reason, c.Message = metav1.ConditionFalse, iamv1alpha1.ReasonInactive, "spec.active is false"
		}
		if c.Type == iamv1alpha1.ConditionReady {
			c.Reason = iamv1alpha1.ReasonInactive
		}
	}
	return cred
}

// clientKey is obj's namespaced name.
func clientKey(obj client.Object) types.NamespacedName {
	return types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}
}
