package integration

import (
	"context"
	"maps"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/oauth2/clientcredentials"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// DESIGN §2 item 9, end to end: the operator runs as its own service account under the
// shipped RBAC and status policy, the token server beside it, and the attacker is a
// tenant who may write only Secrets (and APICredentials) in a namespace of their own.
var _ = Describe("A client ID belongs to one credential, and only the operator mints", func() {
	// namespace creates a namespace and returns a client for a tenant who may do anything
	// with Secrets and, when credentials is true, APICredentials there, and nothing else.
	namespace := func(ctx context.Context, credentials bool) (string, client.Client) {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "tenant-"}}
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		rules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"*"}}}
		if credentials {
			rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{iamv1alpha1.GroupVersion.Group}, Resources: []string{"apicredentials"}, Verbs: []string{"*"}})
		}
		user := "tenant-of-" + n.Name
		Expect(k8sClient.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: n.Name, Name: "tenant"}, Rules: rules})).To(Succeed())
		Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: n.Name, Name: "tenant"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "tenant"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
		})).To(Succeed())
		c := userClient(user)
		Eventually(func() error { return c.List(ctx, &corev1.SecretList{}, client.InNamespace(n.Name)) }).Should(Succeed())
		return n.Name, c
	}
	issue := func(ctx context.Context, ns, name string) (*iamv1alpha1.APICredential, *clientcredentials.Config) {
		cred := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}}},
		}
		Expect(k8sClient.Create(ctx, cred)).To(Succeed())
		secret := &corev1.Secret{}
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), cred)).To(Succeed())
			g.Expect(cred.Status.SecretHash).NotTo(BeEmpty())
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), secret)).To(Succeed())
		}).Should(Succeed())
		return cred, &clientcredentials.Config{
			ClientID: string(secret.Data[iamv1alpha1.DefaultClientIDKey]), ClientSecret: string(secret.Data[iamv1alpha1.DefaultClientSecretKey]),
			TokenURL: string(secret.Data[iamv1alpha1.DefaultTokenURLKey]),
		}
	}
	readyOf := func(ctx context.Context, key client.ObjectKey) func(Gomega) metav1.Condition {
		return func(g Gomega) metav1.Condition {
			cred := &iamv1alpha1.APICredential{}
			g.Expect(k8sClient.Get(ctx, key, cred)).To(Succeed())
			for _, c := range cred.Status.Conditions {
				if c.Type == iamv1alpha1.ConditionReady {
					return c
				}
			}
			return metav1.Condition{}
		}
	}
	tokenWorks := func(ctx context.Context, cc *clientcredentials.Config) {
		EventuallyWithOffset(1, func() error { _, err := cc.Token(ctx); return err }).Should(Succeed())
	}

	It("finding 2: client-ID takeover across namespaces is refused, and the victim keeps getting tokens", func(ctx SpecContext) {
		victimNS, _ := namespace(ctx, false)
		victim, victimCC := issue(ctx, victimNS, "victim")
		tokenWorks(ctx, victimCC)
		victimSecret := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(victim), victimSecret)).To(Succeed())

		By("an attacker pre-creating Secret x in their namespace and pointing a credential at it")
		attackerNS, mallory := namespace(ctx, true)
		x := client.ObjectKey{Namespace: attackerNS, Name: "x"}
		Expect(mallory.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: attackerNS, Name: "x"}})).To(Succeed())
		attack := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: attackerNS, Name: "attack"},
			Spec: iamv1alpha1.APICredentialSpec{
				APIs:           []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}},
				SecretTemplate: iamv1alpha1.SecretTemplate{Name: "x"},
			},
		}
		Expect(mallory.Create(ctx, attack)).To(Succeed())
		Eventually(func(g Gomega) string { return readyOf(ctx, client.ObjectKeyFromObject(attack))(g).Reason }).Should(Equal(iamv1alpha1.ReasonSecretConflict))

		By("rewriting x with a controller reference to that credential, its label, the victim's client ID and a chosen secret")
		chosen, err := credential.NewSecret()
		Expect(err).NotTo(HaveOccurred())
		s := &corev1.Secret{}
		Expect(mallory.Get(ctx, x, s)).To(Succeed())
		s.OwnerReferences = []metav1.OwnerReference{{APIVersion: iamv1alpha1.GroupVersion.String(), Kind: "APICredential", Name: attack.Name, UID: attack.UID, Controller: ptr.To(true)}}
		s.Labels = map[string]string{iamv1alpha1.CredentialLabel: attack.Name}
		s.Annotations = maps.Clone(victimSecret.Annotations) // the victim's binding too: it names the victim's namespace
		s.Data = map[string][]byte{iamv1alpha1.DefaultClientIDKey: []byte(victimCC.ClientID), iamv1alpha1.DefaultClientSecretKey: []byte(chosen)}
		Expect(mallory.Update(ctx, s)).To(Succeed())

		Eventually(func(g Gomega) string { return readyOf(ctx, client.ObjectKeyFromObject(attack))(g).Message }).Should(ContainSubstring("held by another APICredential"))
		got := &iamv1alpha1.APICredential{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(attack), got)).To(Succeed())
		Expect(got.Status.ClientID).To(BeEmpty())
		Expect(got.Status.SecretHash).To(BeEmpty())
		By("the victim still getting tokens: the token server sees one claimant")
		tokenWorks(ctx, victimCC)

		By("the victim deleted: the attacker still adopts nothing")
		Expect(k8sClient.Delete(ctx, victim)).To(Succeed())
		Expect(mallory.Get(ctx, client.ObjectKeyFromObject(attack), got)).To(Succeed())
		got.Spec.DisplayName = "poke" // the attacker makes the operator look again
		Expect(mallory.Update(ctx, got)).To(Succeed())
		Eventually(func(g Gomega) string { return readyOf(ctx, client.ObjectKeyFromObject(attack))(g).Reason }).Should(Equal(iamv1alpha1.ReasonSecretModified))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(attack), got)).To(Succeed())
		Expect(got.Status.ClientID).To(BeEmpty())
		_, err = (&clientcredentials.Config{ClientID: victimCC.ClientID, ClientSecret: chosen, TokenURL: victimCC.TokenURL}).Token(ctx)
		Expect(err).To(HaveOccurred(), "no token for the victim's client ID with the attacker's secret")
	})

	It("finding 3: a Secret writer cannot choose the secret", func(ctx SpecContext) {
		ns, writer := namespace(ctx, false)
		cred, cc := issue(ctx, ns, "chosen")
		tokenWorks(ctx, cc)

		chosen, err := credential.NewSecret()
		Expect(err).NotTo(HaveOccurred())
		s := &corev1.Secret{}
		Expect(writer.Get(ctx, client.ObjectKeyFromObject(cred), s)).To(Succeed())
		s.Data[iamv1alpha1.DefaultClientSecretKey] = []byte(chosen)
		s.Annotations[iamv1alpha1.IssuedAtAnnotation] = "2099-01-01T00:00:00Z"
		s.Annotations[iamv1alpha1.KeyVersionAnnotation] = "0"
		Expect(writer.Update(ctx, s)).To(Succeed())

		Eventually(func(g Gomega) string { return readyOf(ctx, client.ObjectKeyFromObject(cred))(g).Reason }).Should(Equal(iamv1alpha1.ReasonSecretModified))
		got := &iamv1alpha1.APICredential{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(cred), got)).To(Succeed())
		Expect(got.Status.SecretHash).To(Equal(cred.Status.SecretHash), "the chosen secret is not recorded")
		Expect(got.Status.PreviousSecrets).To(BeEmpty())
		_, err = (&clientcredentials.Config{ClientID: cc.ClientID, ClientSecret: chosen, TokenURL: cc.TokenURL}).Token(ctx)
		Expect(err).To(HaveOccurred(), "the chosen secret gets no token")
		tokenWorks(ctx, cc)
	})
})
