package controllers

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

func TestTrimCredentialSecret(t *testing.T) {
	clientID, err := credential.NewClientID()
	if err != nil {
		t.Fatal(err)
	}
	secret, err := credential.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	in := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "team-a", Name: "checkout", UID: "u1", ResourceVersion: "7",
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
			Labels: map[string]string{
				iamv1alpha1.CredentialLabel: "checkout", "app.kubernetes.io/managed-by": "keysmith", "team": "billing",
			},
			Annotations: map[string]string{
				iamv1alpha1.BindingAnnotation: "v1.k.sig", iamv1alpha1.KeyVersionAnnotation: "2",
				iamv1alpha1.IssuedAtAnnotation:                     "2026-11-23T10:00:00Z",
				"kubectl.kubernetes.io/last-applied-configuration": `{"data":{"APP_PASSWORD":"aHVudGVyMg=="}}`,
			},
			OwnerReferences: []metav1.OwnerReference{{Kind: "APICredential", Name: "checkout", UID: "c1", Controller: ptr.To(true)}},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			"MY_ID": []byte(clientID), "MY_SECRET": []byte(secret), // renamed keys: recognised by format
			iamv1alpha1.DefaultTokenURLKey: []byte("https://platform.example.com/oauth2/token"),
			"APP_PASSWORD":                 []byte("hunter2"),
		},
	}
	out, err := trimCredentialSecret(in.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.Secret)
	if got.ManagedFields != nil {
		t.Error("managedFields kept")
	}
	if keys := slices.Sorted(maps.Keys(got.Data)); !slices.Equal(keys, []string{"MY_ID", "MY_SECRET"}) {
		t.Errorf("data keys = %v, want the client ID and the secret only", keys)
	}
	if keys := slices.Sorted(maps.Keys(got.Annotations)); !slices.Equal(keys, []string{
		iamv1alpha1.BindingAnnotation, iamv1alpha1.IssuedAtAnnotation, iamv1alpha1.KeyVersionAnnotation}) {
		t.Errorf("annotations = %v, want keysmith's only", keys)
	}
	if keys := slices.Sorted(maps.Keys(got.Labels)); !slices.Equal(keys, []string{iamv1alpha1.CredentialLabel}) {
		t.Errorf("labels = %v, want keysmith's only", keys)
	}
	if len(got.OwnerReferences) != 1 || got.UID != "u1" || got.ResourceVersion != "7" || got.Name != "checkout" {
		t.Errorf("identity or owner references lost: %+v", got.ObjectMeta)
	}

	// What the decision reads is the same from the trimmed copy as from the Secret.
	cred := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "checkout", UID: "c1"}}
	cred.Spec.SecretTemplate.Keys = iamv1alpha1.SecretKeys{ClientID: "MY_ID", ClientSecret: "MY_SECRET"}
	if want, have := readSecretFacts(cred, in, nil), readSecretFacts(cred, got, nil); want != have {
		t.Errorf("facts from the cache = %+v, want %+v", have, want)
	}

	if other, _ := trimCredentialSecret(&corev1.ConfigMap{Data: map[string]string{"a": "b"}}); len(other.(*corev1.ConfigMap).Data) != 1 {
		t.Error("only Secrets are trimmed")
	}
}

var _ = Describe("The manager's cache", func() {
	It("holds no managedFields and of credential Secrets only what the decision reads", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		stop := startManager(ctx, ns)
		DeferCleanup(func() { stop() })
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cached"},
			Spec: iamv1alpha1.APICredentialSpec{
				APIs: []iamv1alpha1.APIGrant{grant("platform-api", "user")},
				SecretTemplate: iamv1alpha1.SecretTemplate{
					Annotations: map[string]string{"team.example.com/owner": "billing"},
					Keys:        iamv1alpha1.SecretKeys{ClientID: "APP_ID", ClientSecret: "APP_SECRET"},
				},
			},
		}
		Expect(k8sClient.Create(ctx, cred)).To(Succeed())
		Eventually(func(g Gomega) string {
			g.Expect(k8sClient.Get(ctx, keyOf(cred), cred)).To(Succeed())
			return readyReason(cred)
		}).WithTimeout(10 * time.Second).Should(Equal(iamv1alpha1.ReasonIssued))
		live := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cached"}, live)).To(Succeed())
		secretRV, credRV := live.ResourceVersion, cred.ResourceVersion

		By("reading them through a cache built with the manager's options")
		opts := CacheOptions()
		opts.DefaultNamespaces = map[string]cache.Config{ns: {}}
		opts.Scheme = scheme
		c, err := cache.New(cfg, opts)
		Expect(err).NotTo(HaveOccurred())
		cctx, cancel := context.WithCancel(ctx)
		DeferCleanup(cancel)
		go func() { _ = c.Start(cctx) }()
		Expect(c.WaitForCacheSync(ctx)).To(BeTrue())
		cachedSecret, cachedCred := &corev1.Secret{}, &iamv1alpha1.APICredential{}
		Expect(c.Get(ctx, client.ObjectKeyFromObject(live), cachedSecret)).To(Succeed())
		Expect(c.Get(ctx, keyOf(cred), cachedCred)).To(Succeed())
		Expect(live.ManagedFields).NotTo(BeEmpty(), "the API server keeps them")
		Expect(cachedSecret.ManagedFields).To(BeNil())
		Expect(cachedCred.ManagedFields).To(BeNil())
		Expect(cachedSecret.Data).To(HaveLen(2))
		Expect(cachedSecret.Data).To(HaveKey("APP_ID"))
		Expect(cachedSecret.Data).To(HaveKey("APP_SECRET"))
		Expect(cachedSecret.Annotations).NotTo(HaveKey("team.example.com/owner"))
		Expect(cachedSecret.Annotations).To(HaveKey(iamv1alpha1.BindingAnnotation))

		By("writing nothing because of it, across a manager restart")
		stop()
		stop = startManager(ctx, ns)
		Consistently(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, keyOf(cred), cred)).To(Succeed())
			g.Expect(cred.ResourceVersion).To(Equal(credRV))
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(live), live)).To(Succeed())
			g.Expect(live.ResourceVersion).To(Equal(secretRV))
			g.Expect(live.Data).To(HaveKey(iamv1alpha1.DefaultTokenURLKey), "data the cache does not hold is kept")
			g.Expect(live.Annotations).To(HaveKey("team.example.com/owner"))
		}).WithTimeout(2 * time.Second).Should(Succeed())
	})

	It("never mints because a Secret is not in the cache", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		stop := startManager(ctx, ns)
		DeferCleanup(func() { stop() })
		foreign := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "uncached"},
			StringData: map[string]string{"password": "not-ours"},
		}
		Expect(k8sClient.Create(ctx, foreign)).To(Succeed()) // no credential label: outside the cache
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(foreign), foreign)).To(Succeed())
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "uncached"},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{grant("platform-api", "user")}},
		}
		issuedBefore := metricValue("keysmith_credentials_issued_total", nil)
		Expect(k8sClient.Create(ctx, cred)).To(Succeed())
		Eventually(func(g Gomega) string {
			g.Expect(k8sClient.Get(ctx, keyOf(cred), cred)).To(Succeed())
			return readyReason(cred)
		}).Should(Equal(iamv1alpha1.ReasonSecretConflict))
		Consistently(func(g Gomega) {
			got := &corev1.Secret{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(foreign), got)).To(Succeed())
			g.Expect(got.ResourceVersion).To(Equal(foreign.ResourceVersion))
			g.Expect(metricValue("keysmith_credentials_issued_total", nil)).To(Equal(issuedBefore))
		}).WithTimeout(time.Second).Should(Succeed())
	})
})
