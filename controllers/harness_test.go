package controllers

import (
	"context"
	"errors"
	"strings"
	"time"

	kstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

const testTokenURL = "https://keysmith.example.com/oauth2/token"

// harness drives the reconciler step by step against the real API server, with a clock
// the test moves and a recorder the test reads.
type harness struct {
	ctx context.Context
	// ns is the tenant namespace the credentials live in.
	ns string
	// operatorNS holds the binding key Secret, as the operator's namespace does.
	operatorNS string
	clock      *clocktesting.FakeClock
	recorder   *events.FakeRecorder
	keys       *BindingKeyReconciler
	r          *APICredentialReconciler
}

// bindingKeySecret is the name of the binding key Secret in the harness's operator namespace.
const bindingKeySecret = "keysmith-binding-key"

func newHarness(ctx context.Context, nsLabels map[string]string) *harness {
	h := &harness{
		// A BeforeEach's context ends with it; the harness lives for the whole spec.
		ctx:      context.WithoutCancel(ctx),
		ns:       newNamespace(ctx, nsLabels),
		clock:    clocktesting.NewFakeClock(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)),
		recorder: events.NewFakeRecorder(100),
	}
	h.operatorNS = newNamespace(ctx, nil)
	h.keys = &BindingKeyReconciler{
		Client: k8sClient, APIReader: k8sClient, Clock: h.clock,
		Namespace: h.operatorNS, Name: bindingKeySecret,
	}
	h.r = h.reconcilerWith(k8sClient)
	return h
}

// reconcilerWith returns a reconciler of the harness that writes through c.
func (h *harness) reconcilerWith(c client.Client) *APICredentialReconciler {
	return &APICredentialReconciler{
		Client: c, APIReader: k8sClient, Scheme: scheme,
		Clock: h.clock, Recorder: h.recorder, DefaultTokenURL: testTokenURL, BindingKeys: h.keys,
	}
}

func (h *harness) credential(name string, apis ...iamv1alpha1.APIGrant) *iamv1alpha1.APICredential {
	return &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name},
		Spec:       iamv1alpha1.APICredentialSpec{DisplayName: "Test " + name, APIs: apis},
	}
}

func (h *harness) create(cred *iamv1alpha1.APICredential) *iamv1alpha1.APICredential {
	ExpectWithOffset(1, k8sClient.Create(h.ctx, cred)).To(Succeed())
	return cred
}

func (h *harness) reconcile(cred *iamv1alpha1.APICredential) (ctrl.Result, error) {
	return h.r.Reconcile(h.ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cred)})
}

// mustReconcile reconciles and expects success.
func (h *harness) mustReconcile(cred *iamv1alpha1.APICredential) ctrl.Result {
	res, err := h.reconcile(cred)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return res
}

func (h *harness) fetch(name string) *iamv1alpha1.APICredential {
	cred := &iamv1alpha1.APICredential{}
	ExpectWithOffset(1, k8sClient.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: name}, cred)).To(Succeed())
	return cred
}

// secret returns the named Secret, or nil when it does not exist.
func (h *harness) secret(name string) *corev1.Secret {
	s := &corev1.Secret{}
	err := k8sClient.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: name}, s)
	if apierrors.IsNotFound(err) {
		return nil
	}
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return s
}

// update applies mutate to the latest version of the credential's spec.
func (h *harness) update(name string, mutate func(*iamv1alpha1.APICredential)) {
	cred := h.fetch(name)
	mutate(cred)
	ExpectWithOffset(1, k8sClient.Update(h.ctx, cred)).To(Succeed())
}

// events drains the events recorded so far.
func (h *harness) events() []string {
	var out []string
	for {
		select {
		case e := <-h.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func grant(api, permission string) iamv1alpha1.APIGrant {
	return iamv1alpha1.APIGrant{Name: api, Permission: permission}
}

func ready(cred *iamv1alpha1.APICredential) *metav1.Condition {
	return condition(cred, iamv1alpha1.ConditionReady)
}

// condition returns the credential's condition of the given type, or nil.
func condition(cred *iamv1alpha1.APICredential, condType string) *metav1.Condition {
	for i := range cred.Status.Conditions {
		if cred.Status.Conditions[i].Type == condType {
			return &cred.Status.Conditions[i]
		}
	}
	return nil
}

func hasCondition(cred *iamv1alpha1.APICredential, condType string) bool {
	for _, c := range cred.Status.Conditions {
		if c.Type == condType {
			return true
		}
	}
	return false
}

// crashingStatusClient writes everything but status: it simulates an operator that dies
// between writing a Secret and recording it in status.
type crashingStatusClient struct{ client.Client }

var errSimulatedCrash = errors.New("simulated crash before the status write")

func (c crashingStatusClient) Status() client.SubResourceWriter {
	return crashingStatusWriter{c.Client.Status()}
}

type crashingStatusWriter struct{ client.SubResourceWriter }

func (crashingStatusWriter) Patch(context.Context, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
	return errSimulatedCrash
}

func (crashingStatusWriter) Update(context.Context, client.Object, ...client.SubResourceUpdateOption) error {
	return errSimulatedCrash
}

// failingSecretWrites fails every create and update of a Secret with err, as an API
// server under trouble does; everything else goes through.
type failingSecretWrites struct {
	client.Client
	err error
}

func (c failingSecretWrites) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		return c.err
	}
	return c.Client.Create(ctx, obj, opts...)
}

func (c failingSecretWrites) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	if _, ok := obj.(*corev1.Secret); ok {
		return c.err
	}
	return c.Client.Update(ctx, obj, opts...)
}

// createdFirst creates a foreign Secret of the same name just before the reconciler's
// own Create of a Secret, as someone racing it (the cache and the live read both missed).
type createdFirst struct{ client.Client }

func (c createdFirst) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if s, ok := obj.(*corev1.Secret); ok {
		foreign := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name},
			StringData: map[string]string{"password": "got-there-first"},
		}
		if err := c.Client.Create(ctx, foreign); err != nil {
			return err
		}
	}
	return c.Client.Create(ctx, obj, opts...)
}

// containsAny reports whether any of the haystacks contains needle.
func containsAny(needle string, haystacks ...string) bool {
	for _, h := range haystacks {
		if strings.Contains(h, needle) {
			return true
		}
	}
	return false
}

func keyOf(cred *iamv1alpha1.APICredential) client.ObjectKey { return client.ObjectKeyFromObject(cred) }

// kstatusOf computes the kstatus status of the credential, as Flux and kstatus-based
// tools see it: "Current", "InProgress" or "Failed".
func kstatusOf(cred *iamv1alpha1.APICredential) string {
	cred = cred.DeepCopy()
	cred.SetGroupVersionKind(iamv1alpha1.GroupVersion.WithKind("APICredential"))
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cred)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	res, err := kstatus.Compute(&unstructured.Unstructured{Object: obj})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return res.Status.String()
}
