package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
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
	if got.Data != nil || got.StringData != nil || got.Annotations != nil {
		t.Errorf("data or annotations kept: %v %v %v; the cached facts hold what the decision reads", got.Data, got.StringData, got.Annotations)
	}
	if got.Labels != nil {
		t.Errorf("labels = %v, want none: the cache's selector says the credential label is there", got.Labels)
	}
	if len(got.OwnerReferences) != 1 || got.UID != "" || got.ResourceVersion != "7" || got.Name != "checkout" {
		t.Errorf("identity or owner references lost: %+v", got.ObjectMeta)
	}
	for _, plain := range []string{secret, "hunter2", "aHVudGVyMg==", "platform.example.com", "billing"} {
		if strings.Contains(got.GenerateName, plain) {
			t.Errorf("the cached copy holds %q", plain)
		}
	}

	// What the decision reads is the same from the trimmed copy as from the Secret, but
	// the plaintext secret, of which the copy holds only the hash.
	cred := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "checkout", UID: "c1"}}
	cred.Spec.SecretTemplate.Keys = iamv1alpha1.SecretKeys{ClientID: "MY_ID", ClientSecret: "MY_SECRET"}
	want, have := readSecretFacts(cred, in, nil), cachedSecretFacts(cred, got, nil)
	want.clientSecret = ""
	if want != have {
		t.Errorf("facts from the cache = %+v, want %+v", have, want)
	}
	if have.clientID != clientID || have.secretHash != credential.Hash(secret) || have.keyVersion != 2 {
		t.Errorf("facts from the cache = %+v", have)
	}

	if a, b := internedCopy(t, in), got; unsafe.StringData(a.Namespace) != unsafe.StringData(b.Namespace) ||
		unsafe.StringData(a.OwnerReferences[0].Kind) != unsafe.StringData(b.OwnerReferences[0].Kind) ||
		a.OwnerReferences[0].Controller != b.OwnerReferences[0].Controller {
		t.Error("the namespace, the owner's kind and its flags are not shared between credential Secrets")
	}
	for _, v := range []string{clientID, secret, credential.Hash(secret), got.GenerateName} {
		if isInterned(v) {
			t.Error("secret data in the intern table")
		}
	}

	if other, _ := trimCredentialSecret(&corev1.ConfigMap{Data: map[string]string{"a": "b"}}); len(other.(*corev1.ConfigMap).Data) != 1 {
		t.Error("only Secrets are trimmed")
	}
}

// internedCopy trims a second copy of a credential Secret, as the cache does for another one.
func internedCopy(t *testing.T, in *corev1.Secret) *corev1.Secret {
	t.Helper()
	out, err := trimCredentialSecret(in.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	return out.(*corev1.Secret)
}

func isInterned(s string) bool { return sharedStrings.has(s) }

// issuedCredential is an APICredential as the API server returns it once issued, applied
// with kubectl (a last-applied-configuration annotation that repeats the spec).
func issuedCredential(t *testing.T) *iamv1alpha1.APICredential {
	t.Helper()
	clientID, err := credential.NewClientID()
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	cred := &iamv1alpha1.APICredential{
		TypeMeta: metav1.TypeMeta{APIVersion: iamv1alpha1.GroupVersion.String(), Kind: "APICredential"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "team-a", Name: "checkout", UID: "c1", ResourceVersion: "9", Generation: 1,
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
			Labels:        map[string]string{"team": "billing"},
			Annotations: map[string]string{
				"team.example.com/owner":           "billing",
				corev1.LastAppliedConfigAnnotation: `{"apiVersion":"iam.keysmith.dev/v1alpha1","kind":"APICredential","spec":{"apis":[{"name":"platform-api","permission":"user"}]}}`,
			},
		},
		Spec: iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{grant("platform-api", "user")}},
		Status: iamv1alpha1.APICredentialStatus{
			ClientID: clientID, SecretHash: credential.Hash("not-a-real-secret"), Account: "team-a",
			SecretRef: &iamv1alpha1.SecretReference{Name: "checkout"}, IssuedAt: &now, ObservedGeneration: 1,
			Conditions: []metav1.Condition{
				{Type: iamv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: iamv1alpha1.ReasonIssued,
					Message: `client secret issued into Secret "checkout"`, ObservedGeneration: 1, LastTransitionTime: now},
				{Type: iamv1alpha1.ConditionActive, Status: metav1.ConditionTrue, Reason: iamv1alpha1.ReasonIssued,
					Message: "token servers accept this credential", ObservedGeneration: 1, LastTransitionTime: now},
			},
		},
	}
	return cred
}

func TestTrimCredential(t *testing.T) {
	in := issuedCredential(t)
	trim := func() *iamv1alpha1.APICredential {
		out, err := trimCredential(in.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		return out.(*iamv1alpha1.APICredential)
	}
	a, b := trim(), trim()

	want := in.DeepCopy()
	want.ManagedFields = nil
	delete(want.Annotations, corev1.LastAppliedConfigAnnotation)
	if !equality.Semantic.DeepEqual(a, want) {
		t.Errorf("trimmed credential differs beyond managedFields and last-applied-configuration:\n got %+v\nwant %+v", a, want)
	}
	live := in.DeepCopy()
	trimAsCached(live)
	if !equality.Semantic.DeepEqual(live.ObjectMeta, a.ObjectMeta) {
		t.Error("a live copy trimmed as cached differs from the cached one")
	}
	for name, pair := range map[string][2]string{
		"namespace":        {a.Namespace, b.Namespace},
		"kind":             {a.Kind, b.Kind},
		"condition reason": {a.Status.Conditions[0].Reason, b.Status.Conditions[0].Reason},
		"Active message":   {a.Status.Conditions[1].Message, b.Status.Conditions[1].Message},
		"API name":         {a.Spec.APIs[0].Name, b.Spec.APIs[0].Name},
		"annotation key":   {slices.Collect(maps.Keys(a.Annotations))[0], slices.Collect(maps.Keys(b.Annotations))[0]},
	} {
		if unsafe.StringData(pair[0]) != unsafe.StringData(pair[1]) {
			t.Errorf("%s not shared between cached credentials", name)
		}
	}
	if unsafe.StringData(a.Status.SecretRef.Name) != unsafe.StringData(a.Name) || unsafe.StringData(a.Status.Account) != unsafe.StringData(a.Namespace) {
		t.Error("the Secret's name and the account are not the credential's own strings")
	}
	for _, s := range []string{a.Status.ClientID, a.Status.SecretHash, a.Status.Conditions[0].Message, a.Annotations["team.example.com/owner"]} {
		if isInterned(s) {
			t.Errorf("%q in the intern table: only names, keys and constant texts go there", s)
		}
	}
}

func TestInternBounded(t *testing.T) {
	table := &stringTable{m: map[string]string{}}
	if long := strings.Repeat("x", maxInternedLen+1); table.has(table.intern(long)) {
		t.Error("a long string interned")
	}
	a, b := table.intern(strings.Clone("team-a")), table.intern(strings.Clone("team-a"))
	if unsafe.StringData(a) != unsafe.StringData(b) {
		t.Error("equal strings not shared")
	}
	for i := 0; i < maxInterned+10; i++ {
		table.intern(fmt.Sprintf("bounded-%d", i))
	}
	if n := len(table.m); n != maxInterned {
		t.Errorf("intern table holds %d strings, want its bound %d", n, maxInterned)
	}
	if s := fmt.Sprintf("bounded-%d", maxInterned+5); table.intern(s) != s || table.has(s) {
		t.Error("a string interned beyond the bound")
	}
}

var _ = Describe("The manager's cache", func() {
	It("holds no managedFields and of credential Secrets only what the decision reads", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		stop := startManager(ctx, ns)
		DeferCleanup(func() { stop() })
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cached", Annotations: map[string]string{
				"team.example.com/owner":           "billing",
				corev1.LastAppliedConfigAnnotation: `{"spec":{"apis":[{"name":"platform-api","permission":"user"}]}}`,
			}},
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
		Expect(cachedSecret.Data).To(BeNil(), "the cached facts hold what the decision reads")
		Expect(cachedSecret.Annotations).To(BeNil())
		Expect(cachedSecret.GenerateName).NotTo(ContainSubstring(string(live.Data["APP_SECRET"])), "no plaintext secret in the cache")
		facts := cachedSecretFacts(cred, cachedSecret, nil)
		Expect(facts.clientID).To(Equal(string(live.Data["APP_ID"])))
		Expect(facts.secretHash).To(Equal(cred.Status.SecretHash))
		Expect(facts.keyVersion).To(BeZero())
		Expect(facts.issuedAt).To(Equal(cred.Status.IssuedAt.UTC()))
		Expect(cachedSecret.Labels).To(BeNil())
		Expect(live.Labels).To(HaveKeyWithValue(iamv1alpha1.CredentialLabel, "cached"))
		Expect(cachedCred.Annotations).To(Equal(map[string]string{"team.example.com/owner": "billing"}))
		Expect(cachedCred.Status).To(Equal(cred.Status), "status as the API server holds it")

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

	It("retries a status write over a usage write for a credential applied with kubectl, though the cache holds no last-applied-configuration", func(ctx context.Context) {
		h := newHarness(ctx, nil)
		racing := &racingStatusClient{Client: cachedView{k8sClient}}
		h.r = h.reconcilerWith(racing)
		cred := h.credential("applied", grant("platform-api", "admin"))
		cred.Annotations = map[string]string{
			corev1.LastAppliedConfigAnnotation: `{"apiVersion":"iam.keysmith.dev/v1alpha1","kind":"APICredential","metadata":{"name":"applied"},"spec":{"displayName":"` +
				strings.Repeat("x", 4096) + `","apis":[{"name":"platform-api","permission":"admin"}]}}`,
		}
		h.create(cred)
		racing.race = usageWrite("203.0.113.8")
		h.mustReconcile(cred)
		Expect(racing.race).To(BeNil(), "the race ran")
		got := h.fetch("applied")
		Expect(got.Status.SecretHash).NotTo(BeEmpty(), "the issue is recorded in the same reconcile")
		Expect(got.Status.LastUsedAddress).To(Equal("203.0.113.8"), "the token server's usage write is kept")
		Expect(got.Annotations).To(HaveKey(corev1.LastAppliedConfigAnnotation), "the status write leaves the annotation alone")
		evs := h.events()
		Expect(countReason(evs, iamv1alpha1.ReasonIssued)).To(Equal(1), "%v", evs)
		Expect(countReason(evs, "Adopted")).To(Equal(0), "%v", evs)
	})
})

// cachedView reads APICredentials as the manager's cache holds them (trimCredential).
type cachedView struct{ client.Client }

func (c cachedView) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := c.Client.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	if cred, ok := obj.(*iamv1alpha1.APICredential); ok {
		if _, err := trimCredential(cred); err != nil {
			return err
		}
	}
	return nil
}
