package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

var _ = Describe("APICredential with concurrent workers", func() {
	It("issues a burst of credentials once each, with four workers", func(ctx context.Context) {
		const n = 40
		ns := newNamespace(ctx, nil)
		stop := startManager(ctx, ns) // MaxConcurrentReconciles: 4
		DeferCleanup(func() { stop() })
		issuedBefore := metricValue("keysmith_credentials_issued_total", nil)
		adoptedBefore := metricValue("keysmith_credentials_adopted_total", nil)

		By("watching every value each credential Secret's client secret takes")
		wc, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		watchCtx, stopWatch := context.WithCancel(ctx)
		DeferCleanup(stopWatch)
		values, err := testenv.WatchSecretValues(watchCtx, wc, ns)
		Expect(err).NotTo(HaveOccurred())

		var creating sync.WaitGroup
		for i := range n {
			creating.Go(func() {
				defer GinkgoRecover()
				Expect(k8sClient.Create(ctx, &iamv1alpha1.APICredential{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("burst-%02d", i)},
					Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{grant("platform-api", "user")}},
				})).To(Succeed())
			})
		}
		creating.Wait()

		Eventually(func(g Gomega) int {
			var list iamv1alpha1.APICredentialList
			g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			ready := 0
			for i := range list.Items {
				if readyReason(&list.Items[i]) == iamv1alpha1.ReasonIssued {
					ready++
				}
			}
			return ready
		}).WithTimeout(60*time.Second).Should(Equal(n), "every credential Issued")

		By("holding each Secret to its status hash, and each credential to one secret")
		var list iamv1alpha1.APICredentialList
		Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		ids := map[string]bool{}
		for i := range list.Items {
			cred := &list.Items[i]
			s := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: secretName(cred)}, s)).To(Succeed())
			Expect(credential.Verify(string(s.Data[iamv1alpha1.DefaultClientSecretKey]), cred.Status.SecretHash)).To(BeTrue(), cred.Name)
			Expect(ids).NotTo(HaveKey(cred.Status.ClientID), "client IDs are unique")
			ids[cred.Status.ClientID] = true
		}
		Eventually(values.Secrets).Should(Equal(n), "the watch saw every Secret")
		for i := range list.Items {
			cred := &list.Items[i]
			Expect(values.Counts(secretName(cred))).To(Equal(map[string]int{"0": 1}), "one client secret ever for %s", cred.Name)
		}
		deleted, watchErrs := values.Problems()
		Expect(deleted).To(BeEmpty())
		Expect(watchErrs).To(BeEmpty())
		Expect(metricValue("keysmith_credentials_issued_total", nil) - issuedBefore).To(Equal(float64(n)))
		Expect(metricValue("keysmith_credentials_adopted_total", nil)-adoptedBefore).To(BeZero(), "no adoption without a crash")
	})
})
