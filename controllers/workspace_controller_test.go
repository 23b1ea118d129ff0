package controllers

import (
	"context"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// workspace creates a namespace labelled as a workspace with the default-apis annotation.
func workspace(ctx context.Context, defaultAPIs string) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "keysmith-workspace-",
		Labels:       map[string]string{iamv1alpha1.WorkspaceLabel: "eu-prod"},
		Annotations:  map[string]string{iamv1alpha1.DefaultAPIsAnnotation: defaultAPIs},
	}}
	ExpectWithOffset(1, k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// writeCounter wraps k8sClient, counting the writes through it.
type writeCounter struct {
	client.WithWatch
	writes atomic.Int64
}

func newWriteCounter() *writeCounter {
	w := &writeCounter{}
	count := func() { w.writes.Add(1) }
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	w.WithWatch = interceptor.NewClient(c, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			count()
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			count()
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			count()
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			count()
			return c.Delete(ctx, obj, opts...)
		},
	})
	return w
}

var _ = Describe("WorkspaceReconciler: a default credential per workspace", func() {
	var (
		writes   *writeCounter
		recorder *events.FakeRecorder
		r        *WorkspaceReconciler
	)
	BeforeEach(func() {
		writes = newWriteCounter()
		recorder = events.NewFakeRecorder(20)
		r = &WorkspaceReconciler{Client: writes, APIReader: k8sClient, Recorder: recorder}
	})
	reconcileNS := func(ctx context.Context, ns string) {
		_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: ns}})
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
	}
	credentials := func(ctx context.Context, ns string) []iamv1alpha1.APICredential {
		var list iamv1alpha1.APICredentialList
		ExpectWithOffset(1, k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		return list.Items
	}
	patchNS := func(ctx context.Context, ns, body string) {
		ExpectWithOffset(1, k8sClient.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, client.RawPatch(types.MergePatchType, []byte(body)))).To(Succeed())
	}

	It("creates primary once, with exactly the annotation's grants, never overwrites it, and recreates it only when none is left", func(ctx SpecContext) {
		ns := workspace(ctx, "platform-api:user, dataplanning-api:read-only")
		reconcileNS(ctx, ns)
		creds := credentials(ctx, ns)
		Expect(creds).To(HaveLen(1))
		primary := creds[0]
		Expect(primary.Name).To(Equal("primary"))
		Expect(primary.Spec.APIs).To(Equal([]iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}, {Name: "dataplanning-api", Permission: "read-only"}}))
		Expect(primary.Spec.Scope).To(BeZero())
		Expect(primary.Spec.ExpiresAt).To(BeNil())
		Expect(primary.Spec.SourceRanges).To(BeEmpty())
		Expect(primary.Annotations).To(BeEmpty())
		Expect(writes.writes.Load()).To(Equal(int64(1)))
		Expect(recorder.Events).To(Receive(ContainSubstring("DefaultCredentialCreated")))

		By("writing nothing when reconciled again, or when the annotation changes")
		reconcileNS(ctx, ns)
		patchNS(ctx, ns, `{"metadata":{"annotations":{"iam.keysmith.dev/default-apis":"platform-api:admin"}}}`)
		reconcileNS(ctx, ns)
		Expect(writes.writes.Load()).To(Equal(int64(1)))
		var again iamv1alpha1.APICredential
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(&primary), &again)).To(Succeed())
		Expect(again.ResourceVersion).To(Equal(primary.ResourceVersion), "primary is never overwritten")
		Expect(again.Spec.APIs).To(Equal(primary.Spec.APIs))

		By("not recreating primary while another credential is there")
		Expect(k8sClient.Create(ctx, &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "replacement"},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}}},
		})).To(Succeed())
		Expect(k8sClient.Delete(ctx, &again)).To(Succeed())
		reconcileNS(ctx, ns)
		Expect(credentials(ctx, ns)).To(ConsistOf(HaveField("Name", "replacement")))
		Expect(writes.writes.Load()).To(Equal(int64(1)))

		By("recreating it, with the annotation as it is now, once none is left")
		Expect(k8sClient.Delete(ctx, &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "replacement"}})).To(Succeed())
		reconcileNS(ctx, ns)
		creds = credentials(ctx, ns)
		Expect(creds).To(HaveLen(1))
		Expect(creds[0].Name).To(Equal("primary"))
		Expect(creds[0].Spec.APIs).To(Equal([]iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "admin"}}))
		Expect(writes.writes.Load()).To(Equal(int64(2)))
	})

	It("creates nothing from a cache that has not seen the namespace's credentials: it asks the API server first", func(ctx SpecContext) {
		ns := workspace(ctx, "platform-api:user")
		Expect(k8sClient.Create(ctx, &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "existing"},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}}},
		})).To(Succeed())
		stale := interceptor.NewClient(writes.WithWatch, interceptor.Funcs{
			List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				if _, ok := list.(*iamv1alpha1.APICredentialList); ok {
					return nil // a cache behind the API server: no credential yet
				}
				return c.List(ctx, list, opts...)
			},
		})
		r.Client = stale
		reconcileNS(ctx, ns)
		Expect(credentials(ctx, ns)).To(ConsistOf(HaveField("Name", "existing")))
		Expect(writes.writes.Load()).To(BeZero())
	})

	It("creates nothing for a malformed annotation, an unlabelled or a terminating namespace; the malformed one gets an event", func(ctx SpecContext) {
		bad := workspace(ctx, "platform-api:user,platform-api:admin")
		reconcileNS(ctx, bad)
		Expect(credentials(ctx, bad)).To(BeEmpty())
		Expect(recorder.Events).To(Receive(And(ContainSubstring("Warning"), ContainSubstring("InvalidDefaultAPIs"),
			ContainSubstring(`iam.keysmith.dev/default-apis lists API "platform-api" more than once`))))

		unlabelled := newNamespace(ctx, nil)
		patchNS(ctx, unlabelled, `{"metadata":{"annotations":{"iam.keysmith.dev/default-apis":"platform-api:user"}}}`)
		reconcileNS(ctx, unlabelled)
		Expect(credentials(ctx, unlabelled)).To(BeEmpty())

		terminating := workspace(ctx, "platform-api:user")
		Expect(k8sClient.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: terminating}})).To(Succeed())
		reconcileNS(ctx, terminating)
		Expect(credentials(ctx, terminating)).To(BeEmpty())
		Expect(writes.writes.Load()).To(BeZero())
		Expect(recorder.Events).NotTo(Receive())
	})

	It("records admission's refusal on the Namespace and returns it, for the retry", func(ctx SpecContext) {
		ns := workspace(ctx, "profile-api:read-only")
		r.Client = interceptor.NewClient(writes.WithWatch, interceptor.Funcs{
			Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
				return apierrors.NewInvalid(iamv1alpha1.GroupVersion.WithKind("APICredential").GroupKind(), "primary", nil)
			},
		})
		_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: ns}})
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(recorder.Events).To(Receive(And(ContainSubstring("Warning"), ContainSubstring("DefaultCredentialRefused"),
			ContainSubstring(`creating APICredential "primary" was refused`))))
		Expect(credentials(ctx, ns)).To(BeEmpty())
	})

	It("in a manager: creates primary for a new workspace and again when its last credential is deleted", func(ctx SpecContext) {
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{
			Scheme:                 scheme,
			Metrics:                metricsserver.Options{BindAddress: "0"},
			HealthProbeBindAddress: "0",
			Cache:                  CacheOptions(),
			Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
		})
		Expect(err).NotTo(HaveOccurred())
		Expect((&WorkspaceReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("keysmith-manager")}).SetupWithManager(mgr)).To(Succeed())
		stop := testenv.Start(ctx, mgr)
		DeferCleanup(func() { Expect(stop()).To(Succeed()) })

		ns := workspace(ctx, "platform-api:user")
		key := client.ObjectKey{Namespace: ns, Name: "primary"}
		var first iamv1alpha1.APICredential
		Eventually(func() error { return k8sClient.Get(ctx, key, &first) }).WithTimeout(30 * time.Second).Should(Succeed())
		Expect(k8sClient.Delete(ctx, &first)).To(Succeed())
		Eventually(func(g Gomega) {
			var again iamv1alpha1.APICredential
			g.Expect(k8sClient.Get(ctx, key, &again)).To(Succeed())
			g.Expect(again.UID).NotTo(Equal(first.UID))
		}).WithTimeout(30 * time.Second).Should(Succeed())

		By("creating it for a namespace labelled later")
		late := newNamespace(ctx, nil)
		patchNS(ctx, late, `{"metadata":{"labels":{"iam.keysmith.dev/workspace":"us-prod"},"annotations":{"iam.keysmith.dev/default-apis":"platform-api:user"}}}`)
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Namespace: late, Name: "primary"}, &iamv1alpha1.APICredential{})
		}).WithTimeout(30 * time.Second).Should(Succeed())
		Expect(credentials(ctx, late)).To(HaveLen(1))
	})
})
