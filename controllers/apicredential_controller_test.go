package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

var _ = Describe("APICredential", func() {
	var h *harness

	BeforeEach(func(ctx context.Context) {
		h = newHarness(ctx, nil)
	})

	// issued creates a credential for the Platform API and reconciles it once.
	issued := func(name string, mutate ...func(*iamv1alpha1.APICredential)) (*iamv1alpha1.APICredential, *corev1.Secret) {
		cred := h.credential(name, grant("platform-api", "admin"))
		for _, m := range mutate {
			m(cred)
		}
		h.create(cred)
		h.mustReconcile(cred)
		cred = h.fetch(name)
		secret := h.secret(secretName(cred))
		ExpectWithOffset(1, secret).NotTo(BeNil())
		return cred, secret
	}

	Context("when it is created", func() {
		It("mints a client ID and secret, writes them once into an owned Secret, and keeps only the hash", func() {
			cred, secret := issued("billing")

			Expect(credential.ValidClientID(cred.Status.ClientID)).To(BeTrue(), "client ID %q", cred.Status.ClientID)
			plain := string(secret.Data[iamv1alpha1.DefaultClientSecretKey])
			Expect(credential.ParseSecret(plain)).To(Succeed())
			Expect(string(secret.Data[iamv1alpha1.DefaultClientIDKey])).To(Equal(cred.Status.ClientID))
			Expect(string(secret.Data[iamv1alpha1.DefaultTokenURLKey])).To(Equal("https://platform.example.com/oauth2/token"),
				"the granted API's tokenURL wins over the default")
			Expect(cred.Status.SecretHash).To(Equal(credential.Hash(plain)))
			Expect(credential.Verify(plain, cred.Status.SecretHash)).To(BeTrue())
			Expect(cred.Status.SecretRef).To(Equal(&iamv1alpha1.SecretReference{Name: "billing"}))
			Expect(cred.Status.IssuedAt.Time).To(BeTemporally("==", h.clock.Now()))
			Expect(cred.Status.Account).To(Equal(h.ns), "the account defaults to the namespace name")
			Expect(cred.Spec.Scope.Account).To(BeEmpty(), "the selected account is never written into spec")

			By("owning the Secret, so that garbage collection removes it with the credential")
			Expect(metav1.IsControlledBy(secret, cred)).To(BeTrue())
			owner := metav1.GetControllerOf(secret)
			Expect(owner.BlockOwnerDeletion).To(Equal(ptr.To(true)))
			Expect(secret.Labels).To(HaveKeyWithValue(iamv1alpha1.CredentialLabel, "billing"))
			Expect(secret.Annotations).To(HaveKeyWithValue(iamv1alpha1.IssuedAtAnnotation, "2026-11-23T10:00:00Z"))

			By("reporting Ready=True with reason Issued, kstatus-style")
			c := ready(cred)
			Expect(c).NotTo(BeNil())
			Expect(c.Status).To(Equal(metav1.ConditionTrue))
			Expect(c.Reason).To(Equal(iamv1alpha1.ReasonIssued))
			Expect(c.ObservedGeneration).To(Equal(cred.Generation))
			Expect(cred.Status.ObservedGeneration).To(Equal(cred.Generation))
			Expect(hasCondition(cred, iamv1alpha1.ConditionStalled)).To(BeFalse())
			Expect(hasCondition(cred, iamv1alpha1.ConditionReconciling)).To(BeFalse())
			Expect(condition(cred, iamv1alpha1.ConditionActive).Status).To(Equal(metav1.ConditionTrue))
			Expect(condition(cred, iamv1alpha1.ConditionActive).ObservedGeneration).To(Equal(cred.Generation))
			Expect(kstatusOf(cred)).To(Equal("Current"))

			By("never putting the plaintext in status or events")
			statusJSON, err := json.Marshal(cred.Status)
			Expect(err).NotTo(HaveOccurred())
			evs := h.events()
			Expect(evs).To(ContainElement(ContainSubstring("Issued")))
			Expect(containsAny(plain, append(evs, string(statusJSON))...)).To(BeFalse())
			Expect(containsAny(plain[len(credential.SecretPrefix):len(credential.SecretPrefix)+12], evs...)).To(BeFalse())
			Expect(containsAny(cred.Status.SecretHash, evs...)).To(BeFalse(), "not even the hash goes into events")
		})

		It("writes the Secret the template describes", func() {
			_, secret := issued("shaped", func(c *iamv1alpha1.APICredential) {
				c.Spec.SecretTemplate = iamv1alpha1.SecretTemplate{
					Name:        "shaped-keys",
					Labels:      map[string]string{"team": "billing"},
					Annotations: map[string]string{"reloader.stakater.com/match": "true"},
					Keys:        iamv1alpha1.SecretKeys{ClientID: "id", ClientSecret: "secret", TokenURL: "url"},
				}
			})
			Expect(secret.Name).To(Equal("shaped-keys"))
			Expect(secret.Labels).To(HaveKeyWithValue("team", "billing"))
			Expect(secret.Annotations).To(HaveKeyWithValue("reloader.stakater.com/match", "true"))
			Expect(secret.Data).To(HaveKey("id"))
			Expect(secret.Data).To(HaveKey("secret"))
			Expect(secret.Data).To(HaveKey("url"))
			Expect(secret.Data).NotTo(HaveKey(iamv1alpha1.DefaultClientSecretKey))
		})

		It("selects the account from the namespace label and never writes it into spec", func(ctx context.Context) {
			h = newHarness(ctx, map[string]string{iamv1alpha1.AccountLabel: "acme-prod"})
			cred, _ := issued("labelled")
			Expect(cred.Status.Account).To(Equal("acme-prod"))
			Expect(cred.Spec.Scope.Account).To(BeEmpty())
		})

		It("uses the manager's default token URL when no granted API names one", func() {
			cred := h.create(h.credential("profiles", grant("profile-api", "read-only")))
			h.update("profiles", func(c *iamv1alpha1.APICredential) { c.Spec.Scope.Workspaces = []string{"eu-1"} })
			h.mustReconcile(cred)
			Expect(string(h.secret("profiles").Data[iamv1alpha1.DefaultTokenURLKey])).To(Equal(testTokenURL))
		})
	})

	Context("when it is reconciled again and again", func() {
		It("writes nothing: neither the Secret nor the status moves", func() {
			cred, secret := issued("steady")
			for range 5 {
				h.mustReconcile(cred)
			}
			By("renaming it, which changes the generation but not the identity")
			h.update("steady", func(c *iamv1alpha1.APICredential) { c.Spec.DisplayName = "Renamed" })
			h.mustReconcile(cred)
			afterRename := h.fetch("steady")
			for range 5 {
				h.mustReconcile(cred)
			}
			Expect(h.secret("steady").ResourceVersion).To(Equal(secret.ResourceVersion))
			Expect(h.fetch("steady").ResourceVersion).To(Equal(afterRename.ResourceVersion), "no status write without a change")
			Expect(afterRename.Status.ClientID).To(Equal(cred.Status.ClientID))
			Expect(afterRename.Status.SecretHash).To(Equal(cred.Status.SecretHash))
			Expect(afterRename.Status.ObservedGeneration).To(Equal(afterRename.Generation))
		})
	})

	Context("when the operator dies between creating the Secret and writing status", func() {
		It("adopts the Secret it owns instead of minting a second secret", func() {
			cred := h.create(h.credential("crashy", grant("platform-api", "user")))
			issuedBefore := metricValue("keysmith_credentials_issued_total", nil)
			_, err := h.reconcilerWith(crashingStatusClient{k8sClient}).Reconcile(h.ctx, reconcile.Request{NamespacedName: keyOf(cred)})
			Expect(errors.Is(err, errSimulatedCrash)).To(BeTrue(), "got %v", err)
			secret := h.secret("crashy")
			Expect(secret).NotTo(BeNil(), "the Secret was written before the crash")
			Expect(h.fetch("crashy").Status.SecretHash).To(BeEmpty(), "status was lost in the crash")
			Expect(h.events()).To(BeEmpty(), "nothing is announced before the status write that records it")
			Expect(metricValue("keysmith_credentials_issued_total", nil)).To(Equal(issuedBefore))

			h.mustReconcile(cred)
			cred = h.fetch("crashy")
			Expect(cred.Status.SecretHash).To(Equal(credential.Hash(string(secret.Data[iamv1alpha1.DefaultClientSecretKey]))))
			Expect(cred.Status.ClientID).To(Equal(string(secret.Data[iamv1alpha1.DefaultClientIDKey])))
			Expect(h.secret("crashy").ResourceVersion).To(Equal(secret.ResourceVersion), "the Secret is not rewritten")
			Expect(ready(cred).Reason).To(Equal(iamv1alpha1.ReasonIssued))
			Expect(h.events()).To(ContainElement(ContainSubstring("Adopted")))
		})
	})

	Context("when status is lost, as after a restore from backup", func() {
		It("adopts the Secret and keeps the same client ID and hash", func() {
			cred, secret := issued("restored")
			lost := h.fetch("restored")
			lost.Status = iamv1alpha1.APICredentialStatus{}
			Expect(k8sClient.Status().Update(h.ctx, lost)).To(Succeed())

			h.mustReconcile(cred)
			again := h.fetch("restored")
			Expect(again.Status.ClientID).To(Equal(cred.Status.ClientID))
			Expect(again.Status.SecretHash).To(Equal(cred.Status.SecretHash))
			Expect(again.Status.IssuedAt.Time).To(BeTemporally("==", cred.Status.IssuedAt.Time), "issue time comes from the Secret")
			Expect(h.secret("restored").ResourceVersion).To(Equal(secret.ResourceVersion))
		})

		It("reports SecretModified when the Secret is unusable too, and issues new keys once the key version is bumped", func() {
			_, secret := issued("wrecked")
			secret.Data[iamv1alpha1.DefaultClientSecretKey] = []byte("hunter2")
			Expect(k8sClient.Update(h.ctx, secret)).To(Succeed())
			lost := h.fetch("wrecked")
			lost.Status = iamv1alpha1.APICredentialStatus{}
			Expect(k8sClient.Status().Update(h.ctx, lost)).To(Succeed())

			h.mustReconcile(lost)
			Expect(ready(h.fetch("wrecked")).Reason).To(Equal(iamv1alpha1.ReasonSecretModified))
			Expect(string(h.secret("wrecked").Data[iamv1alpha1.DefaultClientSecretKey])).To(Equal("hunter2"), "never rewritten unasked")

			h.update("wrecked", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 1 })
			h.mustReconcile(lost)
			fixed := h.fetch("wrecked")
			Expect(ready(fixed).Reason).To(Equal(iamv1alpha1.ReasonIssued))
			plain := string(h.secret("wrecked").Data[iamv1alpha1.DefaultClientSecretKey])
			Expect(credential.Verify(plain, fixed.Status.SecretHash)).To(BeTrue())
			Expect(credential.ValidClientID(fixed.Status.ClientID)).To(BeTrue())
			Expect(string(h.secret("wrecked").Data[iamv1alpha1.DefaultClientIDKey])).To(Equal(fixed.Status.ClientID))
		})
	})

	Context("when someone deletes the Secret", func() {
		It("reports SecretMissing, keeps the hash valid and mints nothing until a rotation", func() {
			cred, secret := issued("orphan")
			Expect(k8sClient.Delete(h.ctx, secret)).To(Succeed())

			h.mustReconcile(cred)
			h.mustReconcile(cred)
			missing := h.fetch("orphan")
			Expect(h.secret("orphan")).To(BeNil(), "no new secret is invented")
			Expect(missing.Status.SecretHash).To(Equal(cred.Status.SecretHash))
			Expect(ready(missing).Reason).To(Equal(iamv1alpha1.ReasonSecretMissing))
			Expect(ready(missing).Status).To(Equal(metav1.ConditionFalse))
			Expect(hasCondition(missing, iamv1alpha1.ConditionStalled)).To(BeTrue())
			Expect(kstatusOf(missing)).To(Equal("Failed"))
			Expect(condition(missing, iamv1alpha1.ConditionActive).Status).To(Equal(metav1.ConditionTrue), "clients that hold the secret keep working")
			Expect(h.events()).To(ContainElement(ContainSubstring("SecretMissing")))

			By("reporting SecretMissing while inactive too: a person must act")
			h.update("orphan", func(c *iamv1alpha1.APICredential) { c.Spec.Active = ptr.To(false) })
			h.mustReconcile(cred)
			Expect(ready(h.fetch("orphan")).Reason).To(Equal(iamv1alpha1.ReasonSecretMissing))
			Expect(condition(h.fetch("orphan"), iamv1alpha1.ConditionActive).Reason).To(Equal(iamv1alpha1.ReasonInactive))
			h.update("orphan", func(c *iamv1alpha1.APICredential) { c.Spec.Active = ptr.To(true) })

			By("bumping the key version, which issues new keys for the same client ID")
			h.update("orphan", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 1 })
			h.mustReconcile(cred)
			rotated := h.fetch("orphan")
			recreated := h.secret("orphan")
			Expect(recreated).NotTo(BeNil())
			Expect(string(recreated.Data[iamv1alpha1.DefaultClientIDKey])).To(Equal(cred.Status.ClientID))
			Expect(rotated.Status.SecretHash).To(Equal(credential.Hash(string(recreated.Data[iamv1alpha1.DefaultClientSecretKey]))))
			Expect(rotated.Status.SecretHash).NotTo(Equal(cred.Status.SecretHash))
			Expect(ready(rotated).Reason).To(Equal(iamv1alpha1.ReasonIssued))
		})
	})

	Context("when someone edits the credential data in the Secret", func() {
		It("reports SecretModified and does not rewrite it", func() {
			cred, secret := issued("tampered")
			secret.Data[iamv1alpha1.DefaultClientSecretKey] = []byte("hunter2")
			Expect(k8sClient.Update(h.ctx, secret)).To(Succeed())
			rv := h.secret("tampered").ResourceVersion

			h.mustReconcile(cred)
			modified := h.fetch("tampered")
			Expect(ready(modified).Reason).To(Equal(iamv1alpha1.ReasonSecretModified))
			Expect(modified.Status.SecretHash).To(Equal(cred.Status.SecretHash))
			Expect(h.secret("tampered").ResourceVersion).To(Equal(rv))
		})
	})

	Context("when a Secret with the target name belongs to something else", func() {
		It("reports SecretConflict and leaves that Secret alone", func() {
			foreign := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: "taken"},
				StringData: map[string]string{"password": "not-ours"},
			}
			Expect(k8sClient.Create(h.ctx, foreign)).To(Succeed())
			rv := h.secret("taken").ResourceVersion

			cred := h.create(h.credential("taken", grant("platform-api", "user")))
			res := h.mustReconcile(cred)
			conflicted := h.fetch("taken")
			Expect(ready(conflicted).Reason).To(Equal(iamv1alpha1.ReasonSecretConflict))
			Expect(hasCondition(conflicted, iamv1alpha1.ConditionStalled)).To(BeTrue())
			Expect(conflicted.Status.SecretHash).To(BeEmpty())
			Expect(h.secret("taken").ResourceVersion).To(Equal(rv))
			Expect(res.RequeueAfter).To(Equal(conflictRecheck), "the foreign Secret's deletion raises no event: look again")

			By("issuing once the foreign Secret is gone")
			Expect(k8sClient.Delete(h.ctx, foreign)).To(Succeed())
			h.mustReconcile(cred)
			Expect(ready(h.fetch("taken")).Reason).To(Equal(iamv1alpha1.ReasonIssued))
		})

		It("decides again from a live read when its Create finds that Secret already there, and mints nothing", func() {
			cred := h.create(h.credential("raced", grant("platform-api", "user")))
			first := h.reconcilerWith(createdFirst{Client: k8sClient})
			res, err := first.Reconcile(h.ctx, reconcile.Request{NamespacedName: keyOf(cred)})
			Expect(err).NotTo(HaveOccurred(), "AlreadyExists is the confirmation, not a failure")
			raced := h.fetch("raced")
			Expect(ready(raced).Reason).To(Equal(iamv1alpha1.ReasonSecretConflict))
			Expect(raced.Status.SecretHash).To(BeEmpty(), "nothing was minted")
			Expect(h.secret("raced").Data).To(HaveKeyWithValue("password", []byte("got-there-first")))
			Expect(res.RequeueAfter).To(Equal(conflictRecheck))
			Expect(h.events()).NotTo(ContainElement(ContainSubstring("Issued")))
		})
	})

	Context("when the key version is increased", func() {
		It("issues a new secret into the same Secret and keeps the old one valid for the grace period", func() {
			cred, secret := issued("rotating", func(c *iamv1alpha1.APICredential) {
				c.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: 30 * time.Minute}
			})
			h.clock.Step(10 * time.Minute)
			h.update("rotating", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 1 })
			res := h.mustReconcile(cred)

			rotated := h.fetch("rotating")
			newSecret := h.secret("rotating")
			newPlain := string(newSecret.Data[iamv1alpha1.DefaultClientSecretKey])
			Expect(newSecret.UID).To(Equal(secret.UID), "the same Secret, so mounts keep working")
			Expect(newPlain).NotTo(Equal(string(secret.Data[iamv1alpha1.DefaultClientSecretKey])))
			Expect(rotated.Status.ClientID).To(Equal(cred.Status.ClientID), "rotation keeps the client ID")
			Expect(rotated.Status.SecretHash).To(Equal(credential.Hash(newPlain)))
			Expect(rotated.Status.KeyVersion).To(Equal(int64(1)))
			Expect(rotated.Status.PreviousSecrets).To(HaveLen(1))
			Expect(rotated.Status.PreviousSecrets[0].Hash).To(Equal(cred.Status.SecretHash))
			Expect(rotated.Status.PreviousSecrets[0].ExpiresAt.Time).To(BeTemporally("==", h.clock.Now().Add(30*time.Minute)))
			Expect(res.RequeueAfter).To(Equal(30*time.Minute), "back exactly when the grace period ends")
			Expect(h.events()).To(ContainElement(ContainSubstring("Rotated")))

			By("pruning the previous secret once the grace period has ended")
			h.clock.Step(30 * time.Minute)
			res = h.mustReconcile(cred)
			Expect(h.fetch("rotating").Status.PreviousSecrets).To(BeEmpty())
			Expect(res.RequeueAfter).To(BeZero(), "no deadline left, so no polling")
		})

		It("still prunes the previous secret on time when the spec turns invalid during the grace period", func() {
			cred, _ := issued("rotating-invalid", func(c *iamv1alpha1.APICredential) {
				c.Spec.Rotation.GracePeriod = &metav1.Duration{Duration: 30 * time.Minute}
			})
			h.update("rotating-invalid", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 1 })
			h.mustReconcile(cred)
			h.update("rotating-invalid", func(c *iamv1alpha1.APICredential) { c.Spec.APIs[0].Permission = "owner" })
			res, err := h.reconcile(cred)
			Expect(err).NotTo(HaveOccurred(), "a terminal error would drop the requeue")
			Expect(res.RequeueAfter).To(Equal(30 * time.Minute))
			Expect(ready(h.fetch("rotating-invalid")).Reason).To(Equal(iamv1alpha1.ReasonInvalidSpec))

			h.clock.Step(30 * time.Minute)
			_, err = h.reconcile(cred)
			Expect(err).To(HaveOccurred(), "with no deadline left the invalid spec is terminal")
			Expect(h.fetch("rotating-invalid").Status.PreviousSecrets).To(BeEmpty())
		})

		It("adopts a rotation whose status write was lost, without rotating twice", func() {
			cred, _ := issued("halfway")
			h.update("halfway", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 1 })
			_, err := h.reconcilerWith(crashingStatusClient{k8sClient}).Reconcile(h.ctx, reconcile.Request{NamespacedName: keyOf(cred)})
			Expect(errors.Is(err, errSimulatedCrash)).To(BeTrue())
			written := h.secret("halfway")

			h.mustReconcile(cred)
			adopted := h.fetch("halfway")
			Expect(adopted.Status.SecretHash).To(Equal(credential.Hash(string(written.Data[iamv1alpha1.DefaultClientSecretKey]))))
			Expect(adopted.Status.KeyVersion).To(Equal(int64(1)))
			Expect(adopted.Status.PreviousSecrets).To(HaveLen(1))
			Expect(adopted.Status.PreviousSecrets[0].Hash).To(Equal(cred.Status.SecretHash))
			Expect(h.secret("halfway").ResourceVersion).To(Equal(written.ResourceVersion), "the rotated Secret is not rewritten")
		})

		It("revokes the previous secret at once with a zero grace period", func() {
			issued("instant", func(c *iamv1alpha1.APICredential) {
				c.Spec.Rotation.GracePeriod = &metav1.Duration{}
			})
			h.update("instant", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 3 })
			h.mustReconcile(h.fetch("instant"))
			Expect(h.fetch("instant").Status.PreviousSecrets).To(BeEmpty())
			Expect(h.fetch("instant").Status.KeyVersion).To(Equal(int64(3)))
		})
	})

	Context("when an automatic rotation period is set", func() {
		It("rotates once the keys are that old, and requeues for exactly then", func() {
			cred, secret := issued("periodic", func(c *iamv1alpha1.APICredential) {
				c.Spec.Rotation.Period = &metav1.Duration{Duration: 24 * time.Hour}
			})
			res := h.mustReconcile(cred)
			Expect(res.RequeueAfter).To(Equal(24 * time.Hour))

			h.clock.Step(23 * time.Hour)
			h.mustReconcile(cred)
			Expect(h.secret("periodic").ResourceVersion).To(Equal(secret.ResourceVersion), "not yet due")

			h.clock.Step(time.Hour)
			res = h.mustReconcile(cred)
			rotated := h.fetch("periodic")
			Expect(rotated.Status.SecretHash).NotTo(Equal(cred.Status.SecretHash))
			Expect(rotated.Status.IssuedAt.Time).To(BeTemporally("==", h.clock.Now()))
			Expect(rotated.Status.PreviousSecrets).To(HaveLen(1))
			Expect(res.RequeueAfter).To(Equal(time.Hour), "the default grace period ends first")
		})
	})

	Context("when a reconcile cannot finish", func() {
		failing := func(c client.Client) *APICredentialReconciler {
			return h.reconcilerWith(failingSecretWrites{Client: c, err: apierrors.NewServiceUnavailable("etcd leader changed")})
		}
		It("reports Ready=Unknown and Reconciling=True with the error's message on the first reconcile", func() {
			cred := h.create(h.credential("first", grant("platform-api", "user")))
			_, err := failing(k8sClient).Reconcile(h.ctx, reconcile.Request{NamespacedName: keyOf(cred)})
			Expect(err).To(HaveOccurred())
			got := h.fetch("first")
			Expect(ready(got)).NotTo(BeNil(), "a failure reaches status")
			Expect(ready(got).Status).To(Equal(metav1.ConditionUnknown))
			Expect(ready(got).Reason).To(Equal(iamv1alpha1.ReasonRetrying))
			Expect(ready(got).Message).To(ContainSubstring("etcd leader changed"))
			Expect(condition(got, iamv1alpha1.ConditionReconciling)).NotTo(BeNil())
			Expect(condition(got, iamv1alpha1.ConditionReconciling).Status).To(Equal(metav1.ConditionTrue))
			Expect(condition(got, iamv1alpha1.ConditionReconciling).Message).To(Equal(ready(got).Message))
			Expect(condition(got, iamv1alpha1.ConditionActive).Status).To(Equal(metav1.ConditionFalse))
			Expect(condition(got, iamv1alpha1.ConditionActive).Reason).To(Equal(iamv1alpha1.ReasonProgressing))
			Expect(kstatusOf(got)).To(Equal("InProgress"))
			Expect(h.events()).NotTo(ContainElement(ContainSubstring("Issued")), "nothing was issued")

			By("recovering on the next reconcile, and dropping Reconciling")
			h.mustReconcile(cred)
			got = h.fetch("first")
			Expect(ready(got).Reason).To(Equal(iamv1alpha1.ReasonIssued))
			Expect(hasCondition(got, iamv1alpha1.ConditionReconciling)).To(BeFalse())
			Expect(kstatusOf(got)).To(Equal("Current"))
		})

		It("does not leave Ready=True untouched while a rotation fails", func() {
			cred, secret := issued("rotating")
			h.events()
			h.update("rotating", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 1 })
			_, err := failing(k8sClient).Reconcile(h.ctx, reconcile.Request{NamespacedName: keyOf(cred)})
			Expect(err).To(HaveOccurred())
			got := h.fetch("rotating")
			Expect(ready(got).Status).To(Equal(metav1.ConditionUnknown))
			Expect(ready(got).Reason).To(Equal(iamv1alpha1.ReasonRetrying))
			Expect(ready(got).Message).To(ContainSubstring("writing rotated Secret"))
			Expect(ready(got).ObservedGeneration).To(Equal(got.Generation))
			Expect(got.Status.SecretHash).To(Equal(cred.Status.SecretHash), "nothing was rotated")
			Expect(condition(got, iamv1alpha1.ConditionActive).Status).To(Equal(metav1.ConditionTrue), "the current secret still works")
			Expect(h.secret("rotating").ResourceVersion).To(Equal(secret.ResourceVersion))
			Expect(h.events()).NotTo(ContainElement(ContainSubstring("Rotated")), "no event for what did not happen")

			h.mustReconcile(cred)
			got = h.fetch("rotating")
			Expect(ready(got).Reason).To(Equal(iamv1alpha1.ReasonIssued))
			Expect(got.Status.KeyVersion).To(Equal(int64(1)))
			Expect(hasCondition(got, iamv1alpha1.ConditionReconciling)).To(BeFalse())
			Expect(h.events()).To(ContainElement(ContainSubstring("Rotated")))
		})
	})

	Context("when it is deactivated", func() {
		It("reports Inactive, keeps its keys, and comes back with the same keys", func() {
			cred, secret := issued("paused")
			h.update("paused", func(c *iamv1alpha1.APICredential) { c.Spec.Active = ptr.To(false) })
			h.mustReconcile(cred)
			inactive := h.fetch("paused")
			Expect(ready(inactive).Status).To(Equal(metav1.ConditionTrue), "its declared state is in effect")
			Expect(ready(inactive).Reason).To(Equal(iamv1alpha1.ReasonInactive))
			Expect(condition(inactive, iamv1alpha1.ConditionActive).Status).To(Equal(metav1.ConditionFalse))
			Expect(condition(inactive, iamv1alpha1.ConditionActive).Reason).To(Equal(iamv1alpha1.ReasonInactive))
			Expect(hasCondition(inactive, iamv1alpha1.ConditionStalled)).To(BeFalse(), "a deliberate state, not a failure")
			Expect(kstatusOf(inactive)).To(Equal("Current"), "a Flux wait goes green")
			Expect(h.events()).To(ContainElement(ContainSubstring("Deactivated")))

			h.update("paused", func(c *iamv1alpha1.APICredential) { c.Spec.Active = ptr.To(true) })
			h.mustReconcile(cred)
			active := h.fetch("paused")
			Expect(ready(active).Reason).To(Equal(iamv1alpha1.ReasonIssued))
			Expect(condition(active, iamv1alpha1.ConditionActive).Status).To(Equal(metav1.ConditionTrue))
			Expect(active.Status.SecretHash).To(Equal(cred.Status.SecretHash))
			Expect(h.secret("paused").ResourceVersion).To(Equal(secret.ResourceVersion))
			Expect(h.events()).To(ContainElement(ContainSubstring("Activated")))
		})
	})

	Context("when it has an expiry", func() {
		It("is Ready until then, requeues for exactly then, and reports Expired after", func() {
			expiry := metav1.NewTime(h.clock.Now().Add(2 * time.Hour))
			cred := h.create(func() *iamv1alpha1.APICredential {
				c := h.credential("temporary", grant("platform-api", "user"))
				c.Spec.ExpiresAt = &expiry
				return c
			}())
			res := h.mustReconcile(cred)
			Expect(ready(h.fetch("temporary")).Reason).To(Equal(iamv1alpha1.ReasonIssued))
			Expect(res.RequeueAfter).To(Equal(2 * time.Hour))

			h.clock.Step(2 * time.Hour)
			res = h.mustReconcile(cred)
			expired := h.fetch("temporary")
			Expect(ready(expired).Status).To(Equal(metav1.ConditionTrue), "its declared state is in effect")
			Expect(ready(expired).Reason).To(Equal(iamv1alpha1.ReasonExpired))
			Expect(ready(expired).Message).To(ContainSubstring("spec.expiresAt"))
			Expect(condition(expired, iamv1alpha1.ConditionActive).Status).To(Equal(metav1.ConditionFalse), "token servers refuse it")
			Expect(condition(expired, iamv1alpha1.ConditionActive).Reason).To(Equal(iamv1alpha1.ReasonExpired))
			Expect(kstatusOf(expired)).To(Equal("Current"))
			Expect(res.RequeueAfter).To(BeZero())
			Expect(h.events()).To(ContainElement(ContainSubstring("Expired")))
		})
	})

	Context("when the spec breaks the catalog", func() {
		DescribeTable("issues nothing and reports InvalidSpec naming the field",
			func(apis []iamv1alpha1.APIGrant, workspaces []string, wantField, wantDetail string) {
				cred := h.credential("invalid", apis...)
				cred.Spec.Scope.Workspaces = workspaces
				h.create(cred)
				_, err := h.reconcile(cred)
				Expect(errors.Is(err, reconcile.TerminalError(nil))).To(BeTrue(), "a retry cannot fix a bad spec: %v", err)

				got := h.fetch("invalid")
				Expect(h.secret("invalid")).To(BeNil())
				Expect(got.Status.SecretHash).To(BeEmpty())
				Expect(got.Status.ClientID).To(BeEmpty())
				c := ready(got)
				Expect(c.Status).To(Equal(metav1.ConditionFalse))
				Expect(c.Reason).To(Equal(iamv1alpha1.ReasonInvalidSpec))
				Expect(c.Message).To(ContainSubstring(wantField))
				Expect(c.Message).To(ContainSubstring(wantDetail))
				Expect(hasCondition(got, iamv1alpha1.ConditionStalled)).To(BeTrue())
				Expect(kstatusOf(got)).To(Equal("Failed"))
				Expect(h.events()).To(ContainElement(ContainSubstring(wantField)))
			},
			Entry("an unknown API", []iamv1alpha1.APIGrant{grant("billing-api", "admin")}, nil,
				"spec.apis[0].name", `"billing-api": no APIDefinition with this name exists`),
			Entry("a permission the API does not offer", []iamv1alpha1.APIGrant{grant("platform-api", "user"), grant("profile-api", "admin")}, []string{"eu-1"},
				"spec.apis[1].permission", `"admin": supported values: "read-only"`),
			Entry("a Workspace-level API without a workspace", []iamv1alpha1.APIGrant{grant("profile-api", "read-only")}, nil,
				"spec.scope.workspaces", `"profile-api" (spec.apis[0]) applies at the Workspace level`),
		)

		It("issues once the catalog is fixed", func() {
			cred := h.create(h.credential("early", grant("profile-api", "read-only")))
			_, err := h.reconcile(cred)
			Expect(err).To(HaveOccurred())
			h.update("early", func(c *iamv1alpha1.APICredential) { c.Spec.Scope.Workspaces = []string{"eu-1", "us-2"} })
			h.mustReconcile(cred)
			Expect(ready(h.fetch("early")).Reason).To(Equal(iamv1alpha1.ReasonIssued))
			Expect(h.secret("early")).NotTo(BeNil())
		})
	})
})
