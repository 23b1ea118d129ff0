package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// eventCount counts the events with the given reason in ns, series included.
func eventCount(ctx context.Context, g Gomega, ns, reason string) int {
	var evs eventsv1.EventList
	g.Expect(k8sClient.List(ctx, &evs, client.InNamespace(ns))).To(Succeed())
	n := 0
	for _, e := range evs.Items {
		if e.Reason != reason {
			continue
		}
		n++
		if e.Series != nil && e.Series.Count > 1 {
			n += int(e.Series.Count) - 1
		}
	}
	return n
}

// staleOnce is a cache that falls behind the API server once per credential: the first
// read of a credential that changed since it was first read returns it as first read,
// as an informer that has not yet seen the status patch does.
type staleOnce struct {
	client.Client
	mu     sync.Mutex
	first  map[client.ObjectKey]*iamv1alpha1.APICredential
	served map[client.ObjectKey]bool
}

func newStaleOnce(c client.Client) *staleOnce {
	return &staleOnce{Client: c, first: map[client.ObjectKey]*iamv1alpha1.APICredential{}, served: map[client.ObjectKey]bool{}}
}

func (c *staleOnce) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := c.Client.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	cred, ok := obj.(*iamv1alpha1.APICredential)
	if !ok {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch first, seen := c.first[key]; {
	case !seen:
		c.first[key] = cred.DeepCopy()
	case !c.served[key] && first.ResourceVersion != cred.ResourceVersion:
		c.served[key] = true
		first.DeepCopyInto(cred)
	}
	return nil
}

var _ = Describe("APICredential adoption with the manager running", func() {
	newCred := func(ns, name string) *iamv1alpha1.APICredential {
		return &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{grant("platform-api", "user")}},
		}
	}
	allIssued := func(ctx context.Context, ns string, n int) func(Gomega) {
		return func(g Gomega) {
			var list iamv1alpha1.APICredentialList
			g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			g.Expect(list.Items).To(HaveLen(n))
			for i := range list.Items {
				g.Expect(readyReason(&list.Items[i])).To(Equal(iamv1alpha1.ReasonIssued), list.Items[i].Name)
			}
		}
	}

	DescribeTable("creating many ordinary credentials adopts none of them",
		func(ctx context.Context, n int, lagging bool) {
			ns := newNamespace(ctx, nil)
			var wrap func(client.Client) client.Client
			if lagging {
				wrap = func(c client.Client) client.Client { return newStaleOnce(c) }
			}
			stop := startManagerWith(ctx, ns, wrap)
			DeferCleanup(func() { stop() })
			adoptedBefore := metricValue("keysmith_credentials_adopted_total", nil)
			issuedBefore := metricValue("keysmith_credentials_issued_total", nil)

			for i := range n {
				Expect(k8sClient.Create(ctx, newCred(ns, fmt.Sprintf("cred-%03d", i)))).To(Succeed())
			}
			Eventually(allIssued(ctx, ns, n)).WithTimeout(time.Duration(n/5+20) * time.Second).Should(Succeed())
			Eventually(func(g Gomega) int { return eventCount(ctx, g, ns, iamv1alpha1.ReasonIssued) }).
				Should(Equal(n), "one Issued event per credential")
			Consistently(func(g Gomega) {
				g.Expect(eventCount(ctx, g, ns, "Adopted")).To(BeZero())
				g.Expect(metricValue("keysmith_credentials_adopted_total", nil) - adoptedBefore).To(BeZero())
			}).WithTimeout(2 * time.Second).Should(Succeed())
			Expect(metricValue("keysmith_credentials_issued_total", nil) - issuedBefore).To(Equal(float64(n)))
		},
		Entry("30 credentials", 30, false),
		Entry("300 credentials", 300, false),
		// The Secret's event wakes the reconciler before the cache has the status that
		// recorded it: a cache behind must not look like a crash.
		Entry("30 credentials, the cache behind the API server once for each", 30, true),
	)

	It("adopts exactly once after a crash between the Secret and the status write", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		cred := newCred(ns, "crashed")
		Expect(k8sClient.Create(ctx, cred)).To(Succeed())

		By("running one reconcile, as the manager would, that dies before its status write")
		keys := &BindingKeyReconciler{Client: k8sClient, APIReader: k8sClient, Clock: clock.RealClock{}, Namespace: ns, Name: bindingKeySecret}
		crashing := &APICredentialReconciler{
			Client: crashingStatusClient{k8sClient}, APIReader: k8sClient, Scheme: scheme,
			Clock: clock.RealClock{}, Recorder: events.NewFakeRecorder(10), DefaultTokenURL: testTokenURL, BindingKeys: keys,
		}
		_, err := crashing.Reconcile(ctx, ctrl.Request{NamespacedName: keyOf(cred)})
		Expect(err).To(MatchError(errSimulatedCrash))
		Expect(k8sClient.Get(ctx, keyOf(cred), cred)).To(Succeed())
		Expect(cred.Status.SecretHash).To(BeEmpty(), "status was never written")

		By("starting the manager, which finds the Secret without a status")
		adoptedBefore := metricValue("keysmith_credentials_adopted_total", nil)
		stop := startManager(ctx, ns)
		DeferCleanup(func() { stop() })
		Eventually(allIssued(ctx, ns, 1)).Should(Succeed())
		Eventually(func(g Gomega) int { return eventCount(ctx, g, ns, "Adopted") }).Should(Equal(1))
		Consistently(func(g Gomega) {
			g.Expect(eventCount(ctx, g, ns, "Adopted")).To(Equal(1))
			g.Expect(eventCount(ctx, g, ns, iamv1alpha1.ReasonIssued)).To(BeZero(), "nothing was minted by the manager")
			g.Expect(metricValue("keysmith_credentials_adopted_total", nil) - adoptedBefore).To(Equal(1.0))
		}).WithTimeout(2 * time.Second).Should(Succeed())
	})
})
