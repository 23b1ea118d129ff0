package controllers

import (
	"context"
	"maps"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/binding"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// tenantClient returns a client for a user who may do anything with Secrets and, when
// credentials is true, APICredentials in namespace ns, and nothing else: a tenant who
// owns one namespace. The API server enforces it (RBAC), not the test.
func tenantClient(ctx context.Context, ns, username string, credentials bool) client.Client {
	rules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"*"}}}
	if credentials {
		rules = append(rules, rbacv1.PolicyRule{
			APIGroups: []string{iamv1alpha1.GroupVersion.Group}, Resources: []string{"apicredentials"}, Verbs: []string{"*"},
		})
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: username}, Rules: rules}
	ExpectWithOffset(1, k8sClient.Create(ctx, role)).To(Succeed())
	ExpectWithOffset(1, k8sClient.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: username},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: username},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: username}},
	})).To(Succeed())
	u, err := testEnv.ControlPlane.AddUser(envtest.User{Name: username}, cfg)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	c, err := client.New(u.Config(), client.Options{Scheme: scheme})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	// RBAC bindings reach the authorizer asynchronously: wait until the tenant may list
	// Secrets in its namespace, and make sure it may not elsewhere.
	EventuallyWithOffset(1, func() error {
		return c.List(ctx, &corev1.SecretList{}, client.InNamespace(ns))
	}).Should(Succeed())
	ExpectWithOffset(1, c.List(ctx, &corev1.SecretList{}, client.InNamespace("default"))).NotTo(Succeed(), "a tenant of one namespace")
	return c
}

// writeAs applies mutate to the latest version of the Secret and updates it through c.
func writeAs(ctx context.Context, c client.Client, key client.ObjectKey, mutate func(*corev1.Secret)) {
	s := &corev1.Secret{}
	ExpectWithOffset(1, c.Get(ctx, key, s)).To(Succeed())
	mutate(s)
	ExpectWithOffset(1, c.Update(ctx, s)).To(Succeed())
}

var _ = Describe("APICredential Secret binding", func() {
	var h *harness

	BeforeEach(func(ctx context.Context) {
		h = newHarness(ctx, nil)
	})

	issued := func(name string, mutate ...func(*iamv1alpha1.APICredential)) (*iamv1alpha1.APICredential, *corev1.Secret) {
		cred := h.credential(name, grant("platform-api", "user"))
		for _, m := range mutate {
			m(cred)
		}
		h.create(cred)
		h.mustReconcile(cred)
		cred = h.fetch(name)
		ExpectWithOffset(1, ready(cred).Reason).To(Equal(iamv1alpha1.ReasonIssued))
		return cred, h.secret(secretName(cred))
	}
	reconcileKey := func(key client.ObjectKey) {
		_, err := h.r.Reconcile(h.ctx, reconcile.Request{NamespacedName: key})
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
	}
	get := func(key client.ObjectKey) *iamv1alpha1.APICredential {
		cred := &iamv1alpha1.APICredential{}
		ExpectWithOffset(1, k8sClient.Get(h.ctx, key, cred)).To(Succeed())
		return cred
	}
	loseStatus := func(name string) {
		lost := h.fetch(name)
		lost.Status = iamv1alpha1.APICredentialStatus{}
		ExpectWithOffset(1, k8sClient.Status().Update(h.ctx, lost)).To(Succeed())
	}
	keyRing := func() *binding.Ring {
		ring, err := h.keys.Ring(h.ctx)
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		return ring
	}

	It("binds every Secret it writes, under a key kept in the operator's namespace", func() {
		cred, secret := issued("bound")
		value := secret.Annotations[iamv1alpha1.BindingAnnotation]
		Expect(value).To(HavePrefix("v1." + keyRing().Current().ID + "."))
		Expect(keyRing().Verify(value, bindingSubject(cred, cred.Status.ClientID, cred.Status.SecretHash,
			cred.Status.KeyVersion, cred.Status.IssuedAt.Time))).To(Equal(binding.BoundCurrent))

		keySecret := &corev1.Secret{}
		Expect(k8sClient.Get(h.ctx, client.ObjectKey{Namespace: h.operatorNS, Name: bindingKeySecret}, keySecret)).To(Succeed())
		Expect(keySecret.Labels).To(HaveKeyWithValue(BindingKeyLabel, "true"))
		Expect(h.events()).NotTo(ContainElement(ContainSubstring(string(keySecret.Data[BindingKeyDataKey]))))

		By("re-binding on rotation, never with the previous binding")
		h.update("bound", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 1 })
		h.mustReconcile(cred)
		rotated := h.fetch("bound")
		Expect(keyRing().Verify(h.secret("bound").Annotations[iamv1alpha1.BindingAnnotation], bindingSubject(rotated,
			rotated.Status.ClientID, rotated.Status.SecretHash, 1, rotated.Status.IssuedAt.Time))).To(Equal(binding.BoundCurrent))
	})

	Describe("finding 2: client-ID takeover across namespaces", func() {
		It("never issues the attacker's credential the victim's client ID, before or after the victim is deleted", func(ctx context.Context) {
			victim, victimSecret := issued("victim")
			victimID := victim.Status.ClientID

			By("an attacker who owns only namespace B pre-creating Secret x")
			nsB := newNamespace(ctx, nil)
			mallory := tenantClient(ctx, nsB, "mallory-"+nsB, true)
			x := client.ObjectKey{Namespace: nsB, Name: "x"}
			Expect(mallory.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: nsB, Name: "x"},
				StringData: map[string]string{"placeholder": "nothing yet"},
			})).To(Succeed())

			By("pointing a new credential's secretTemplate.name at it: SecretConflict")
			attack := &iamv1alpha1.APICredential{
				ObjectMeta: metav1.ObjectMeta{Namespace: nsB, Name: "attack"},
				Spec: iamv1alpha1.APICredentialSpec{
					APIs:           []iamv1alpha1.APIGrant{grant("platform-api", "user")},
					SecretTemplate: iamv1alpha1.SecretTemplate{Name: "x"},
				},
			}
			Expect(mallory.Create(ctx, attack)).To(Succeed())
			reconcileKey(keyOf(attack))
			Expect(ready(get(keyOf(attack))).Reason).To(Equal(iamv1alpha1.ReasonSecretConflict))

			By("rewriting x with a controller reference to that credential, its label, the victim's client ID and a well-formed secret")
			chosen := mustSecretG()
			writeAs(ctx, mallory, x, func(s *corev1.Secret) {
				s.OwnerReferences = []metav1.OwnerReference{{
					APIVersion: iamv1alpha1.GroupVersion.String(), Kind: "APICredential",
					Name: attack.Name, UID: attack.UID, Controller: ptr.To(true),
				}}
				s.Labels = map[string]string{iamv1alpha1.CredentialLabel: attack.Name}
				s.Data = map[string][]byte{
					iamv1alpha1.DefaultClientIDKey:     []byte(victimID),
					iamv1alpha1.DefaultClientSecretKey: []byte(chosen),
				}
			})
			reconcileKey(keyOf(attack))
			reconcileKey(keyOf(attack))
			taken := get(keyOf(attack))
			Expect(taken.Status.ClientID).To(BeEmpty(), "the victim's client ID is not recorded")
			Expect(taken.Status.SecretHash).To(BeEmpty(), "the chosen secret is not recorded")
			Expect(ready(taken).Reason).To(Equal(iamv1alpha1.ReasonSecretConflict))
			Expect(ready(taken).Message).To(ContainSubstring("held by another APICredential"))
			Expect(ready(taken).Message).NotTo(ContainSubstring(h.ns), "the other holder is not named to the attacker")

			By("leaving the victim untouched")
			h.mustReconcile(victim)
			after := h.fetch("victim")
			Expect(after.Status.ClientID).To(Equal(victimID))
			Expect(after.Status.SecretHash).To(Equal(victim.Status.SecretHash))
			Expect(ready(after).Reason).To(Equal(iamv1alpha1.ReasonIssued))
			Expect(h.secret("victim").ResourceVersion).To(Equal(victimSecret.ResourceVersion))

			By("copying the victim's binding too, once the victim is deleted")
			Expect(k8sClient.Delete(ctx, after)).To(Succeed())
			Eventually(func() error { return k8sClient.Get(ctx, keyOf(after), &iamv1alpha1.APICredential{}) }).ShouldNot(Succeed())
			writeAs(ctx, mallory, x, func(s *corev1.Secret) {
				s.Annotations = maps.Clone(victimSecret.Annotations)
			})
			for range 2 {
				reconcileKey(keyOf(attack))
			}
			orphaned := get(keyOf(attack))
			Expect(orphaned.Status.ClientID).To(BeEmpty(), "no valid binding: the deleted victim's client ID is not adopted")
			Expect(orphaned.Status.SecretHash).To(BeEmpty())
			Expect(ready(orphaned).Reason).To(Equal(iamv1alpha1.ReasonSecretModified))
			Expect(ready(orphaned).Message).To(ContainSubstring(iamv1alpha1.RebindAnnotation))
			held := &corev1.Secret{}
			Expect(k8sClient.Get(ctx, x, held)).To(Succeed())
			Expect(string(held.Data[iamv1alpha1.DefaultClientSecretKey])).To(Equal(chosen), "never rewritten unasked")
			Expect(h.events()).NotTo(ContainElement(ContainSubstring("Adopted")))
		})
	})

	Describe("finding 3: a Secret writer chooses the secret", func() {
		DescribeTable("records nothing the operator did not mint",
			func(ctx context.Context, bumpSpec bool, mutate func(s *corev1.Secret, chosen string)) {
				cred, _ := issued("chosen")
				writer := tenantClient(ctx, h.ns, "secret-writer-"+h.ns, false)
				chosen := mustSecretG()
				writeAs(ctx, writer, client.ObjectKey{Namespace: h.ns, Name: "chosen"}, func(s *corev1.Secret) { mutate(s, chosen) })
				if bumpSpec {
					h.update("chosen", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 1 })
				}
				h.mustReconcile(cred)
				h.mustReconcile(cred)

				got := h.fetch("chosen")
				Expect(got.Status.SecretHash).NotTo(Equal(credential.Hash(chosen)), "the chosen secret is never recorded")
				for _, p := range got.Status.PreviousSecrets {
					Expect(p.Hash).NotTo(Equal(credential.Hash(chosen)))
				}
				Expect(got.Status.ClientID).To(Equal(cred.Status.ClientID))
				if bumpSpec {
					By("a requested rotation issues a fresh secret over the chosen one")
					Expect(ready(got).Reason).To(Equal(iamv1alpha1.ReasonIssued))
					Expect(credential.Verify(string(h.secret("chosen").Data[iamv1alpha1.DefaultClientSecretKey]), got.Status.SecretHash)).To(BeTrue())
					return
				}
				Expect(got.Status.SecretHash).To(Equal(cred.Status.SecretHash), "status hash unchanged")
				Expect(got.Status.PreviousSecrets).To(BeEmpty(), "nothing recorded as a rotation")
				Expect(ready(got).Reason).To(Equal(iamv1alpha1.ReasonSecretModified))
			},
			Entry("a chosen secret with issued-at moved forward", false, func(s *corev1.Secret, chosen string) {
				s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte(chosen)
				s.Annotations[iamv1alpha1.IssuedAtAnnotation] = "2026-11-23T11:00:00Z"
			}),
			Entry("a chosen secret with a higher key version", false, func(s *corev1.Secret, chosen string) {
				s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte(chosen)
				s.Annotations[iamv1alpha1.KeyVersionAnnotation] = "1"
			}),
			Entry("a chosen secret with both, and the old binding kept", false, func(s *corev1.Secret, chosen string) {
				s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte(chosen)
				s.Annotations[iamv1alpha1.KeyVersionAnnotation] = "1"
				s.Annotations[iamv1alpha1.IssuedAtAnnotation] = "2026-11-23T11:00:00Z"
			}),
			Entry("a chosen secret written as the rotation a person just asked for", true, func(s *corev1.Secret, chosen string) {
				s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte(chosen)
				s.Annotations[iamv1alpha1.KeyVersionAnnotation] = "1"
				s.Annotations[iamv1alpha1.IssuedAtAnnotation] = "2026-11-23T11:00:00Z"
			}),
		)

		It("does not adopt a chosen secret after status is lost either", func(ctx context.Context) {
			issued("lost-chosen")
			writer := tenantClient(ctx, h.ns, "secret-writer-"+h.ns, false)
			chosen := mustSecretG()
			writeAs(ctx, writer, client.ObjectKey{Namespace: h.ns, Name: "lost-chosen"}, func(s *corev1.Secret) {
				s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte(chosen)
			})
			loseStatus("lost-chosen")
			h.mustReconcile(h.fetch("lost-chosen"))
			got := h.fetch("lost-chosen")
			Expect(got.Status.SecretHash).To(BeEmpty())
			Expect(ready(got).Reason).To(Equal(iamv1alpha1.ReasonSecretModified))
		})
	})

	Context("when the credential is restored from a backup: recreated with a new UID, status lost, Secret kept", func() {
		It("adopts the Secret with the same client ID, mints nothing, and re-points the owner reference", func(ctx context.Context) {
			cred, secret := issued("restored")
			Expect(k8sClient.Delete(ctx, cred)).To(Succeed()) // no garbage collector here: the Secret stays, as a restore brings it back
			Eventually(func() error { return k8sClient.Get(ctx, keyOf(cred), &iamv1alpha1.APICredential{}) }).ShouldNot(Succeed())

			again := h.create(h.credential("restored", grant("platform-api", "user")))
			Expect(again.UID).NotTo(Equal(cred.UID))
			h.mustReconcile(again)
			restored := h.fetch("restored")
			Expect(restored.Status.ClientID).To(Equal(cred.Status.ClientID))
			Expect(restored.Status.SecretHash).To(Equal(cred.Status.SecretHash))
			Expect(restored.Status.IssuedAt.Time).To(BeTemporally("==", cred.Status.IssuedAt.Time))
			Expect(ready(restored).Reason).To(Equal(iamv1alpha1.ReasonIssued))
			Expect(h.events()).To(ContainElement(ContainSubstring("Adopted")))

			rebound := h.secret("restored")
			Expect(rebound.Data).To(Equal(secret.Data), "nothing minted, the data untouched")
			Expect(metav1.IsControlledBy(rebound, restored)).To(BeTrue(), "the owner reference names the new UID")
			Expect(rebound.OwnerReferences).To(HaveLen(1))

			By("writing nothing more")
			rv := rebound.ResourceVersion
			for range 3 {
				h.mustReconcile(restored)
			}
			Expect(h.secret("restored").ResourceVersion).To(Equal(rv))
		})
	})

	Context("when a rotated-away Secret is written back", func() {
		It("does not adopt it after a key version bump", func(ctx context.Context) {
			cred, old := issued("written-back")
			h.update("written-back", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 1 })
			h.mustReconcile(cred)
			rotated := h.fetch("written-back")

			writer := tenantClient(ctx, h.ns, "secret-writer-"+h.ns, false)
			writeAs(ctx, writer, keyOf(cred), func(s *corev1.Secret) {
				s.Data, s.Annotations = old.Data, old.Annotations
			})
			h.mustReconcile(cred)
			got := h.fetch("written-back")
			Expect(got.Status.SecretHash).To(Equal(rotated.Status.SecretHash), "status unchanged")
			Expect(got.Status.KeyVersion).To(Equal(int64(1)))
			Expect(got.Status.PreviousSecrets).To(Equal(rotated.Status.PreviousSecrets))
			Expect(ready(got).Reason).To(Equal(iamv1alpha1.ReasonSecretModified))

			By("nor after status is lost too: the bound client ID is kept, the rotated-away secret is not")
			loseStatus("written-back")
			h.mustReconcile(cred)
			reissued := h.fetch("written-back")
			Expect(reissued.Status.ClientID).To(Equal(cred.Status.ClientID), "the binding proves the client ID ours")
			Expect(reissued.Status.SecretHash).NotTo(Equal(cred.Status.SecretHash))
			Expect(reissued.Status.PreviousSecrets).To(BeEmpty(), "the rotated-away secret gets no grace period")
			Expect(credential.Verify(string(h.secret("written-back").Data[iamv1alpha1.DefaultClientSecretKey]), reissued.Status.SecretHash)).To(BeTrue())
		})

		It("does not adopt it after an automatic rotation, even with its issue time moved forward", func(ctx context.Context) {
			cred, old := issued("periodic-back", func(c *iamv1alpha1.APICredential) {
				c.Spec.Rotation.Period = &metav1.Duration{Duration: time.Hour}
			})
			h.clock.Step(time.Hour)
			h.mustReconcile(cred)
			rotated := h.fetch("periodic-back")
			Expect(rotated.Status.SecretHash).NotTo(Equal(cred.Status.SecretHash))

			writer := tenantClient(ctx, h.ns, "secret-writer-"+h.ns, false)
			for _, issuedAt := range []string{old.Annotations[iamv1alpha1.IssuedAtAnnotation], h.clock.Now().Add(time.Minute).UTC().Format(time.RFC3339)} {
				writeAs(ctx, writer, keyOf(cred), func(s *corev1.Secret) {
					s.Data, s.Annotations = old.Data, maps.Clone(old.Annotations)
					s.Annotations[iamv1alpha1.IssuedAtAnnotation] = issuedAt
				})
				h.mustReconcile(cred)
				got := h.fetch("periodic-back")
				Expect(got.Status.SecretHash).To(Equal(rotated.Status.SecretHash), "issued-at %s: status unchanged", issuedAt)
				Expect(ready(got).Reason).To(Equal(iamv1alpha1.ReasonSecretModified))
			}
		})
	})

	Context("when a Secret was written before bindings existed (migration)", func() {
		It("binds it once, without touching its data, then writes nothing", func() {
			cred, secret := issued("legacy")
			delete(secret.Annotations, iamv1alpha1.BindingAnnotation)
			Expect(k8sClient.Update(h.ctx, secret)).To(Succeed())
			legacy := h.secret("legacy")
			credRV := h.fetch("legacy").ResourceVersion

			h.mustReconcile(cred)
			migrated := h.secret("legacy")
			Expect(migrated.Data).To(Equal(legacy.Data), "data untouched")
			Expect(migrated.Annotations).To(HaveKey(iamv1alpha1.BindingAnnotation))
			Expect(keyRing().Verify(migrated.Annotations[iamv1alpha1.BindingAnnotation], bindingSubject(cred, cred.Status.ClientID,
				cred.Status.SecretHash, cred.Status.KeyVersion, cred.Status.IssuedAt.Time))).To(Equal(binding.BoundCurrent))
			withoutBinding := maps.Clone(migrated.Annotations)
			delete(withoutBinding, iamv1alpha1.BindingAnnotation)
			Expect(withoutBinding).To(Equal(legacy.Annotations), "only the binding annotation was added")
			Expect(migrated.OwnerReferences).To(Equal(legacy.OwnerReferences))
			Expect(h.fetch("legacy").ResourceVersion).To(Equal(credRV), "status is not written")

			for range 3 {
				h.mustReconcile(cred)
			}
			Expect(h.secret("legacy").ResourceVersion).To(Equal(migrated.ResourceVersion), "idempotent")
		})

		It("does not bind it while another credential holds its client ID", func(ctx context.Context) {
			cred, secret := issued("twin")
			delete(secret.Annotations, iamv1alpha1.BindingAnnotation)
			Expect(k8sClient.Update(h.ctx, secret)).To(Succeed())
			By("a credential elsewhere whose status holds the same client ID, as a takeover before this fix left it")
			other := &iamv1alpha1.APICredential{
				ObjectMeta: metav1.ObjectMeta{Namespace: newNamespace(ctx, nil), Name: "twin"},
				Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{grant("platform-api", "user")}},
			}
			Expect(k8sClient.Create(ctx, other)).To(Succeed())
			other.Status.ClientID = cred.Status.ClientID
			Expect(k8sClient.Status().Update(ctx, other)).To(Succeed())

			h.mustReconcile(cred)
			Expect(h.secret("twin").Annotations).NotTo(HaveKey(iamv1alpha1.BindingAnnotation))
			Expect(ready(h.fetch("twin")).Reason).To(Equal(iamv1alpha1.ReasonSecretConflict))

			Expect(k8sClient.Delete(ctx, other)).To(Succeed())
			Eventually(func() error { return k8sClient.Get(ctx, keyOf(other), &iamv1alpha1.APICredential{}) }).ShouldNot(Succeed())
			h.mustReconcile(cred)
			Expect(h.secret("twin").Annotations).To(HaveKey(iamv1alpha1.BindingAnnotation))
			Expect(ready(h.fetch("twin")).Reason).To(Equal(iamv1alpha1.ReasonIssued))
		})
	})

	Context("when the binding key is rotated", func() {
		It("re-binds under the new key and still adopts Secrets bound under the previous one", func() {
			cred, secret := issued("rekeyed")
			first := keyRing().Current().ID
			keySecret := &corev1.Secret{}
			Expect(k8sClient.Get(h.ctx, client.ObjectKey{Namespace: h.operatorNS, Name: bindingKeySecret}, keySecret)).To(Succeed())
			keySecret.Annotations = map[string]string{RotateBindingKeyAnnotation: "true"}
			Expect(k8sClient.Update(h.ctx, keySecret)).To(Succeed())
			_, err := h.keys.Reconcile(h.ctx, reconcile.Request{})
			Expect(err).NotTo(HaveOccurred())
			ring := keyRing()
			Expect(ring.Current().ID).NotTo(Equal(first))
			Expect(ring.Keys).To(HaveLen(2), "the previous key is retained")
			Expect(k8sClient.Get(h.ctx, client.ObjectKeyFromObject(keySecret), keySecret)).To(Succeed())
			Expect(keySecret.Annotations).NotTo(HaveKey(RotateBindingKeyAnnotation), "the request is consumed")

			By("adopting after a lost status under the retained key")
			loseStatus("rekeyed")
			h.mustReconcile(cred)
			adopted := h.fetch("rekeyed")
			Expect(adopted.Status.SecretHash).To(Equal(cred.Status.SecretHash))
			Expect(adopted.Status.ClientID).To(Equal(cred.Status.ClientID))

			By("re-binding under the new key, data untouched")
			rebound := h.secret("rekeyed")
			Expect(rebound.Data).To(Equal(secret.Data))
			Expect(rebound.Annotations[iamv1alpha1.BindingAnnotation]).To(HavePrefix("v1." + ring.Current().ID + "."))
			rv := rebound.ResourceVersion
			h.mustReconcile(cred)
			Expect(h.secret("rekeyed").ResourceVersion).To(Equal(rv))
		})
	})

	Context("when the binding key is lost and status too, as after a restore without the operator's namespace", func() {
		It("reports SecretModified with the rebind hint, and binds once the rebind annotation asks", func(ctx context.Context) {
			cred, secret := issued("rekey-lost")
			keySecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: h.operatorNS, Name: bindingKeySecret}}
			Expect(k8sClient.Delete(ctx, keySecret)).To(Succeed())
			loseStatus("rekey-lost")

			h.mustReconcile(cred)
			lost := h.fetch("rekey-lost")
			Expect(lost.Status.SecretHash).To(BeEmpty(), "not adopted: no key verifies its binding")
			Expect(ready(lost).Reason).To(Equal(iamv1alpha1.ReasonSecretModified))
			Expect(ready(lost).Message).To(ContainSubstring(iamv1alpha1.RebindAnnotation + "=true"))
			Expect(h.secret("rekey-lost").ResourceVersion).To(Equal(secret.ResourceVersion), "not rewritten")
			Expect(keyRing().Verify(secret.Annotations[iamv1alpha1.BindingAnnotation], bindingSubject(cred, cred.Status.ClientID,
				cred.Status.SecretHash, cred.Status.KeyVersion, cred.Status.IssuedAt.Time))).To(Equal(binding.Unbound), "a new key was generated")

			By("a person holding the credential's grants asking for a rebind")
			h.update("rekey-lost", func(c *iamv1alpha1.APICredential) {
				c.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
			})
			h.mustReconcile(cred)
			rebound := h.fetch("rekey-lost")
			Expect(rebound.Status.ClientID).To(Equal(cred.Status.ClientID))
			Expect(rebound.Status.SecretHash).To(Equal(cred.Status.SecretHash))
			Expect(ready(rebound).Reason).To(Equal(iamv1alpha1.ReasonIssued))
			Expect(rebound.Annotations).NotTo(HaveKey(iamv1alpha1.RebindAnnotation), "the request is removed once acted on")
			Expect(h.events()).To(ContainElement(ContainSubstring("Rebound")))
			s := h.secret("rekey-lost")
			Expect(s.Data).To(Equal(secret.Data))
			Expect(keyRing().Verify(s.Annotations[iamv1alpha1.BindingAnnotation], bindingSubject(rebound, rebound.Status.ClientID,
				rebound.Status.SecretHash, rebound.Status.KeyVersion, rebound.Status.IssuedAt.Time))).To(Equal(binding.BoundCurrent))

			By("the next lost status adopting it without help")
			loseStatus("rekey-lost")
			h.mustReconcile(cred)
			Expect(h.fetch("rekey-lost").Status.SecretHash).To(Equal(cred.Status.SecretHash))
		})

		It("removes a rebind request it cannot honour, saying why", func() {
			cred, _ := issued("no-rebind")
			h.update("no-rebind", func(c *iamv1alpha1.APICredential) {
				c.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
			})
			h.mustReconcile(cred)
			got := h.fetch("no-rebind")
			Expect(got.Annotations).NotTo(HaveKey(iamv1alpha1.RebindAnnotation))
			Expect(got.Status.SecretHash).To(Equal(cred.Status.SecretHash))
			Expect(h.events()).To(ContainElement(ContainSubstring("RebindIgnored")))
		})
	})
})

// mustSecretG mints a well-formed secret inside a Ginkgo spec.
func mustSecretG() string {
	s, err := credential.NewSecret()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return s
}

var _ = Describe("APICredential Secret binding with the manager running", func() {
	var (
		ns   string
		stop func()
	)
	BeforeEach(func(ctx context.Context) {
		ns = newNamespace(ctx, nil)
		stop = startManager(ctx, ns)
		DeferCleanup(func() { stop() })
	})
	credIn := func(ctx context.Context, name string) *iamv1alpha1.APICredential {
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{grant("platform-api", "user")}},
		}
		ExpectWithOffset(1, k8sClient.Create(ctx, cred)).To(Succeed())
		EventuallyWithOffset(1, func(g Gomega) string {
			g.Expect(k8sClient.Get(ctx, keyOf(cred), cred)).To(Succeed())
			return readyReason(cred)
		}).WithTimeout(10 * time.Second).Should(Equal(iamv1alpha1.ReasonIssued))
		return cred
	}
	keyKey := func() client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: bindingKeySecret} }
	currentKeyID := func(ctx context.Context, g Gomega) string {
		s := &corev1.Secret{}
		g.Expect(k8sClient.Get(ctx, keyKey(), s)).To(Succeed())
		ring, err := binding.Parse(s.Data[BindingKeyDataKey])
		g.Expect(err).NotTo(HaveOccurred())
		return ring.Current().ID
	}
	bindingKeyOf := func(ctx context.Context, name string) func(Gomega) string {
		return func(g Gomega) string {
			s := &corev1.Secret{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)).To(Succeed())
			return s.Annotations[iamv1alpha1.BindingAnnotation]
		}
	}

	It("re-binds every Secret once the binding key Secret asks for a new key", func(ctx context.Context) {
		a, b := credIn(ctx, "a"), credIn(ctx, "b")
		first := currentKeyID(ctx, Default)
		s := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, keyKey(), s)).To(Succeed())
		s.Annotations = map[string]string{RotateBindingKeyAnnotation: "true"}
		Expect(k8sClient.Update(ctx, s)).To(Succeed())

		var second string
		Eventually(func(g Gomega) {
			second = currentKeyID(ctx, g)
			g.Expect(second).NotTo(Equal(first))
		}).Should(Succeed())
		for _, cred := range []*iamv1alpha1.APICredential{a, b} {
			Eventually(bindingKeyOf(ctx, cred.Name)).Should(HavePrefix("v1." + second + "."))
		}
	})

	It("re-binds by itself when the binding key is lost but status is intact", func(ctx context.Context) {
		cred := credIn(ctx, "kept")
		first := currentKeyID(ctx, Default)
		Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: bindingKeySecret}})).To(Succeed())
		var second string
		Eventually(func(g Gomega) {
			second = currentKeyID(ctx, g)
			g.Expect(second).NotTo(Equal(first))
		}).Should(Succeed(), "the manager generates a new key")
		Eventually(bindingKeyOf(ctx, cred.Name)).Should(HavePrefix("v1."+second+"."), "status vouches for the data")
	})

	It("acts on a rebind request set on the credential, and removes it", func(ctx context.Context) {
		cred := credIn(ctx, "restored")
		hash := cred.Status.SecretHash
		By("losing the binding key and status at once, as a restore without the operator's namespace does")
		stop()
		Expect(k8sClient.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: bindingKeySecret}})).To(Succeed())
		Expect(k8sClient.Get(ctx, keyOf(cred), cred)).To(Succeed())
		cred.Status = iamv1alpha1.APICredentialStatus{}
		Expect(k8sClient.Status().Update(ctx, cred)).To(Succeed())
		stop = startManager(ctx, ns)
		Eventually(func(g Gomega) { currentKeyID(ctx, g) }).Should(Succeed(), "the manager generates a new key")
		Eventually(func(g Gomega) string {
			g.Expect(k8sClient.Get(ctx, keyOf(cred), cred)).To(Succeed())
			return readyReason(cred)
		}).Should(Equal(iamv1alpha1.ReasonSecretModified))
		Expect(cred.Status.SecretHash).To(BeEmpty())

		By("annotating the credential")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, keyOf(cred), cred)).To(Succeed())
			cred.Annotations = map[string]string{iamv1alpha1.RebindAnnotation: "true"}
			g.Expect(k8sClient.Update(ctx, cred)).To(Succeed())
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			got := &iamv1alpha1.APICredential{}
			g.Expect(k8sClient.Get(ctx, keyOf(cred), got)).To(Succeed())
			g.Expect(got.Status.SecretHash).To(Equal(hash))
			g.Expect(readyReason(got)).To(Equal(iamv1alpha1.ReasonIssued))
			g.Expect(got.Annotations).NotTo(HaveKey(iamv1alpha1.RebindAnnotation))
		}).Should(Succeed())
	})
})
