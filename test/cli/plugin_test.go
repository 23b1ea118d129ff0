package cli

import (
	"errors"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

var _ = Describe("kubectl keysmith against a cluster", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) { ns = newNamespace(ctx) })

	It("create prints a secret that exchanges for a token with the client credentials grant", func(ctx SpecContext) {
		c := createJSON(ctx, ns, "billing", "--api", "platform-api:user", "--display-name", "Billing automation")
		Expect(c.Name).To(Equal("billing"))
		Expect(c.Namespace).To(Equal(ns))
		Expect(c.ClientID).To(HavePrefix("ksc_"))
		Expect(c.TokenURL).To(Equal(tokenServerURL + "/oauth2/token"))

		By("printing what the Secret holds")
		secret := credentialSecret(ctx, ns, "billing")
		Expect(string(secret.Data[iamv1alpha1.DefaultClientIDKey])).To(Equal(c.ClientID))
		Expect(string(secret.Data[iamv1alpha1.DefaultClientSecretKey])).To(Equal(c.ClientSecret))

		By("exchanging the printed secret at the printed token URL")
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, c.ClientSecret)).Should(Equal(http.StatusOK))
	})

	It("create without -o prints the client ID, the secret once, the token URL and the note", func(ctx SpecContext) {
		r := admin(ctx, "-n", ns, "create", "orders", "--api", "platform-api:user")
		expectOK(r)
		secret := credentialSecret(ctx, ns, "orders")
		clientSecret := string(secret.Data[iamv1alpha1.DefaultClientSecretKey])
		Expect(strings.Count(r.stdout, clientSecret)).To(Equal(1), "the secret exactly once: %s", r)
		Expect(r.stdout).To(ContainSubstring(string(secret.Data[iamv1alpha1.DefaultClientIDKey])))
		Expect(r.stdout).To(ContainSubstring(tokenServerURL + "/oauth2/token"))
		Expect(r.stderr).NotTo(ContainSubstring(clientSecret))

		By("refusing to create it again, without showing the secret")
		again := admin(ctx, "-n", ns, "create", "orders", "--api", "platform-api:user")
		msg := expectOneLineError(again)
		Expect(msg).To(ContainSubstring("already exists"))
		Expect(again.stdout + again.stderr).NotTo(ContainSubstring(clientSecret))
	})

	It("list shows the credential with its client ID, and -o json/yaml never holds Secret data", func(ctx SpecContext) {
		c := createJSON(ctx, ns, "reports", "--api", "platform-api:user", "--display-name", "Reports")
		r := admin(ctx, "-n", ns, "list")
		expectOK(r)
		header := lines(r.stdout)[0]
		Expect(regexp.MustCompile(`^NAME\s+DISPLAY NAME\s+CLIENT ID\s+APIS\s+ACTIVE\s+READY\s+LAST USED\s+FROM\s+AGE\s*$`).MatchString(header)).
			To(BeTrue(), "DESIGN §6's columns: %q", header)
		row := rowOf(r.stdout, "reports")
		Expect(row).To(ContainSubstring(c.ClientID), "%s", r)
		Expect(row).To(ContainSubstring("Reports"))
		Expect(row).To(ContainSubstring("platform-api"))

		for _, format := range []string{"json", "yaml"} {
			out := admin(ctx, "-n", ns, "list", "-o", format)
			expectOK(out)
			Expect(out.stdout).To(ContainSubstring(c.ClientID))
			Expect(out.stdout).NotTo(ContainSubstring(c.ClientSecret), "-o %s never prints a secret", format)
		}
	})

	It("deactivate makes the token endpoint answer 401 within a second, and activate brings back 200", func(ctx SpecContext) {
		c := createJSON(ctx, ns, "payroll", "--api", "platform-api:user")
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, c.ClientSecret)).Should(Equal(http.StatusOK))

		expectOK(admin(ctx, "-n", ns, "deactivate", "payroll"))
		start := time.Now()
		// The one timing assertion: polled for at most a second.
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, c.ClientSecret)).
			WithTimeout(time.Second).WithPolling(10 * time.Millisecond).Should(Equal(http.StatusUnauthorized))
		AddReportEntry("401 after deactivate", time.Since(start).String())
		Expect(credential(ctx, ns, "payroll").Spec.IsActive()).To(BeFalse())

		expectOK(admin(ctx, "-n", ns, "activate", "payroll"))
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, c.ClientSecret)).Should(Equal(http.StatusOK))
		Expect(credential(ctx, ns, "payroll").Spec.IsActive()).To(BeTrue())
	})

	It("rotate keeps the old secret working in the grace period and the new one from the Secret works", func(ctx SpecContext) {
		c := createJSON(ctx, ns, "ledger", "--api", "platform-api:user")
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, c.ClientSecret)).Should(Equal(http.StatusOK))
		before := credential(ctx, ns, "ledger")

		r := admin(ctx, "-n", ns, "rotate", "ledger", "--grace", "10m")
		expectOK(r)
		Expect(r.stdout+r.stderr).NotTo(ContainSubstring(c.ClientSecret), "rotate without --show-secret prints no secret")

		after := credential(ctx, ns, "ledger")
		Expect(after.Spec.Rotation.KeyVersion).To(Equal(before.Spec.Rotation.KeyVersion + 1))
		Expect(after.Spec.Rotation.GracePeriod).To(Equal(&metav1.Duration{Duration: 10 * time.Minute}))
		var newSecret string
		Eventually(func() string {
			newSecret = string(credentialSecret(ctx, ns, "ledger").Data[iamv1alpha1.DefaultClientSecretKey])
			return newSecret
		}).ShouldNot(Equal(c.ClientSecret))
		Expect(r.stdout + r.stderr).NotTo(ContainSubstring(newSecret))

		By("exchanging the new secret, read from the Secret")
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, newSecret)).Should(Equal(http.StatusOK))
		By("exchanging the old one, inside its grace period")
		Expect(exchangeStatus(ctx, c.TokenURL, c.ClientID, c.ClientSecret)()).To(Equal(http.StatusOK))
		Expect(credential(ctx, ns, "ledger").Status.PreviousSecrets).To(HaveLen(1))
	})

	It("rotate --show-secret prints the new secret, the one the Secret holds", func(ctx SpecContext) {
		c := createJSON(ctx, ns, "audit", "--api", "platform-api:user")
		r := admin(ctx, "-n", ns, "rotate", "audit", "--show-secret")
		expectOK(r)
		newSecret := string(credentialSecret(ctx, ns, "audit").Data[iamv1alpha1.DefaultClientSecretKey])
		Expect(newSecret).NotTo(Equal(c.ClientSecret))
		Expect(strings.Count(r.stdout, newSecret)).To(Equal(1), "%s", r)
		Expect(r.stdout + r.stderr).NotTo(ContainSubstring(c.ClientSecret))
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, newSecret)).Should(Equal(http.StatusOK))
	})

	It("delete without --confirm and without a terminal refuses, and the credential remains", func(ctx SpecContext) {
		createJSON(ctx, ns, "keep", "--api", "platform-api:user")
		msg := expectOneLineError(admin(ctx, "-n", ns, "delete", "keep"))
		Expect(msg).To(ContainSubstring("--confirm"), "it says how to proceed")
		Expect(exists(ctx, ns, "keep")()).To(BeTrue())

		By("refusing a --confirm that names another credential")
		expectOneLineError(admin(ctx, "-n", ns, "delete", "keep", "--confirm", "other"))
		Expect(exists(ctx, ns, "keep")()).To(BeTrue())
	})

	It("delete --confirm NAME removes the credential and, through its owner reference, its Secret", func(ctx SpecContext) {
		c := createJSON(ctx, ns, "gone", "--api", "platform-api:user")
		cred := credential(ctx, ns, "gone")
		secret := credentialSecret(ctx, ns, "gone")
		Expect(metav1.GetControllerOf(secret)).To(HaveField("UID", cred.UID), "the Secret is the credential's, so the garbage collector takes it")

		expectOK(admin(ctx, "-n", ns, "delete", "gone", "--confirm", "gone"))
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gone"}, &iamv1alpha1.APICredential{}))
		}).Should(BeTrue())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(secret), secret))
		}).Should(BeTrue(), "kube-controller-manager's garbage collector deletes the Secret")
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, c.ClientSecret)).Should(Equal(http.StatusUnauthorized))
	})

	It("token prints an access token, and token --decode its claims naming the client ID", func(ctx SpecContext) {
		c := createJSON(ctx, ns, "tok", "--api", "platform-api:user")
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, c.ClientSecret)).Should(Equal(http.StatusOK))

		r := admin(ctx, "-n", ns, "token", "tok")
		expectOK(r)
		token := strings.TrimSpace(r.stdout)
		Expect(strings.Split(token, ".")).To(HaveLen(3), "a JWT: %s", r)
		Expect(authz(ctx, token, "platform-api", "GET")).To(Equal(http.StatusOK))

		d := admin(ctx, "-n", ns, "token", "tok", "--decode")
		expectOK(d)
		Expect(d.stdout).To(ContainSubstring(c.ClientID), "the claims name the client ID: %s", d)
		Expect(d.stdout).NotTo(ContainSubstring(c.ClientSecret))
		Expect(d.stdout).NotTo(ContainSubstring(token), "--decode prints claims, not the token")
		Expect(d.stdout).To(MatchRegexp(`"client_id":\s*"`+regexp.QuoteMeta(c.ClientID)+`"`), "the client_id claim: %s", d)
		Expect(d.stdout).To(MatchRegexp(`"sub":\s*"`+regexp.QuoteMeta(c.ClientID)+`"`), "the sub claim: %s", d)
		Expect(d.stdout).To(MatchRegexp(`"iss":\s*"` + regexp.QuoteMeta(tokenServerURL) + `"`))
	})

	It("token and check reach an HTTPS token server with --certificate-authority or --insecure-skip-tls-verify, and refuse an unknown CA", func(ctx SpecContext) {
		c := createJSON(ctx, ns, "over-tls", "--api", "platform-api:user")
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, c.ClientSecret)).Should(Equal(http.StatusOK))
		url := tlsTokenServerURL + "/oauth2/token"

		By("verifying the token server with --certificate-authority, while the API server is still verified with the kubeconfig's CA")
		r := admin(ctx, "-n", ns, "token", "over-tls", "--token-url", url, "--certificate-authority", tokenServerCA)
		expectOK(r)
		Expect(authz(ctx, strings.TrimSpace(r.stdout), "platform-api", "GET")).To(Equal(http.StatusOK))
		ok := admin(ctx, "-n", ns, "check", "over-tls", "--api", "platform-api", "--method", "GET", "--token-url", url, "--certificate-authority", tokenServerCA)
		expectOK(ok)
		Expect(ok.stdout).To(MatchRegexp(`(?i)\ballowed\b`))

		By("skipping verification with --insecure-skip-tls-verify")
		expectOK(admin(ctx, "-n", ns, "token", "over-tls", "--token-url", url, "--insecure-skip-tls-verify"))

		By("refusing a certificate of a CA it was not given")
		for _, args := range [][]string{
			{"token", "over-tls", "--token-url", url},
			{"check", "over-tls", "--api", "platform-api", "--token-url", url},
		} {
			msg := expectOneLineError(admin(ctx, append([]string{"-n", ns}, args...)...))
			Expect(msg).To(ContainSubstring("--certificate-authority"), "it says what to do")
			Expect(msg).NotTo(ContainSubstring(c.ClientSecret))
		}
	})

	It("check prints allowed for a granted method and denied with the reason for another", func(ctx SpecContext) {
		c := createJSON(ctx, ns, "checked", "--api", "platform-api:user")
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, c.ClientSecret)).Should(Equal(http.StatusOK))

		ok := admin(ctx, "-n", ns, "check", "checked", "--api", "platform-api", "--method", "GET")
		expectOK(ok)
		Expect(ok.stdout).To(MatchRegexp(`(?i)\ballowed\b`))
		Expect(ok.stdout).NotTo(MatchRegexp(`(?i)\bdenied\b`))

		no := admin(ctx, "-n", ns, "check", "checked", "--api", "platform-api", "--method", "DELETE")
		Expect(no.code).To(Equal(1), "denied exits 1: %s", no)
		out := no.stdout + no.stderr
		Expect(out).To(MatchRegexp(`(?i)\bdenied\b`), "%s", no)
		Expect(out).To(ContainSubstring(`permission "user" of API "platform-api" does not allow DELETE`), "the token server's reason: %s", no)
		Expect(out).NotTo(ContainSubstring("{"), "the reason in words, not the JSON body")
	})

	It("check sends the workspace and path, and token --scope narrows the token", func(ctx SpecContext) {
		c := createJSON(ctx, ns, "scoped", "--api", "profile-api:read-only", "--api", "platform-api:user", "--workspace", "eu-prod")
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, c.ClientSecret)).Should(Equal(http.StatusOK))

		in := admin(ctx, "-n", ns, "check", "scoped", "--api", "profile-api", "--workspace", "eu-prod", "--path", "/v1/profiles/42")
		expectOK(in)
		Expect(in.stdout).To(MatchRegexp(`(?i)\ballowed\b`))
		out := admin(ctx, "-n", ns, "check", "scoped", "--api", "profile-api", "--workspace", "us-prod")
		Expect(out.code).To(Equal(1), "%s", out)
		Expect(out.stdout+out.stderr).To(ContainSubstring(`workspace "us-prod" is not in the credential's scope`), "%s", out)

		d := admin(ctx, "-n", ns, "token", "scoped", "--scope", "platform-api", "--decode")
		expectOK(d)
		Expect(d.stdout).To(MatchRegexp(`"aud":\s*\[\s*"platform-api"\s*\]`), "only the API asked for: %s", d)
		Expect(d.stdout).NotTo(ContainSubstring("profile-api"))
	})

	It("a user without grant gets the admission webhook's refusal from create, unchanged", func(ctx SpecContext) {
		By("creating it directly as the editor, for the webhook's own message")
		direct := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: editorNamespace, Name: "escalate"},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "admin"}}},
		}
		err := editorClient.Create(ctx, direct)
		status := (*apierrors.StatusError)(nil)
		Expect(errors.As(err, &status)).To(BeTrue(), "admission refuses: %v", err)
		_, denial, found := strings.Cut(status.ErrStatus.Message, "denied the request: ")
		Expect(found).To(BeTrue(), "a webhook's refusal: %s", status.ErrStatus.Message)

		r := run(ctx, editorKubeconfig, "-n", editorNamespace, "create", "escalate", "--api", "platform-api:admin")
		msg := expectOneLineError(r)
		Expect(msg).To(ContainSubstring(denial), "the webhook's message, unchanged")
		Expect(exists(ctx, editorNamespace, "escalate")()).To(BeFalse())
	})

	It("create passes the webhook's catalog refusal through unchanged", func(ctx SpecContext) {
		direct := &iamv1alpha1.APICredential{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "uncatalogued"},
			Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "billing-api", Permission: "user"}}},
		}
		err := k8sClient.Create(ctx, direct)
		status := (*apierrors.StatusError)(nil)
		Expect(errors.As(err, &status)).To(BeTrue(), "admission refuses: %v", err)
		_, denial, found := strings.Cut(status.ErrStatus.Message, "denied the request: ")
		Expect(found).To(BeTrue(), "a webhook's refusal: %s", status.ErrStatus.Message)

		msg := expectOneLineError(admin(ctx, "-n", ns, "create", "uncatalogued", "--api", "billing-api:user"))
		Expect(msg).To(ContainSubstring(denial), "the webhook's message, unchanged")
		Expect(exists(ctx, ns, "uncatalogued")()).To(BeFalse())
	})

	It("create says the credential was created but not issued when the operator stalls on it", func(ctx SpecContext) {
		By("holding the Secret's name with a Secret of somebody else's")
		Expect(k8sClient.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"},
			StringData: map[string]string{"password": "not keysmith's"},
		})).To(Succeed())
		r := admin(ctx, "-n", ns, "create", "taken", "--api", "platform-api:user", "--timeout", "60s")
		msg := expectOneLineError(r)
		Expect(msg).To(ContainSubstring("created"))
		Expect(msg).To(ContainSubstring(iamv1alpha1.ReasonSecretConflict), "the Ready condition's reason")
		Expect(r.stdout + r.stderr).NotTo(ContainSubstring("not keysmith's"))
		Expect(exists(ctx, ns, "taken")()).To(BeTrue())
	})

	It("create by a user who may grant but not read Secrets says the credential was created and what to ask for", func(ctx SpecContext) {
		r := run(ctx, complianceKubeconfig, "-n", complianceNamespace, "create", "unread", "--api", "platform-api:user")
		msg := expectOneLineError(r)
		Expect(msg).To(MatchRegexp(`(?i)created`), "it says the credential exists")
		Expect(msg).To(MatchRegexp(`(?i)secret`), "it names what cannot be read")
		Expect(exists(ctx, complianceNamespace, "unread")()).To(BeTrue())
		secret := &corev1.Secret{}
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Namespace: complianceNamespace, Name: "unread"}, secret)
		}).Should(Succeed())
		Expect(r.stdout + r.stderr).NotTo(ContainSubstring(string(secret.Data[iamv1alpha1.DefaultClientSecretKey])))
	})

	It("the editor may deactivate but not reactivate, and is told why by admission", func(ctx SpecContext) {
		createJSON(ctx, editorNamespace, "editor-owned", "--api", "platform-api:user")
		expectOK(run(ctx, editorKubeconfig, "-n", editorNamespace, "deactivate", "editor-owned"))
		Expect(credential(ctx, editorNamespace, "editor-owned").Spec.IsActive()).To(BeFalse())
		msg := expectOneLineError(run(ctx, editorKubeconfig, "-n", editorNamespace, "activate", "editor-owned"))
		Expect(msg).To(ContainSubstring("grant"))
		Expect(credential(ctx, editorNamespace, "editor-owned").Spec.IsActive()).To(BeFalse())
	})

	It("a credential applied by Argo CD is not deactivated without --force; the plugin prints the Git change", func(ctx SpecContext) {
		applyAsArgoCD(ctx, ns, "synced", map[string]any{"apis": []any{map[string]any{"name": "platform-api", "permission": "user"}}})
		Eventually(activeCondition(ctx, ns, "synced")).Should(Equal("True"))

		r := admin(ctx, "-n", ns, "deactivate", "synced")
		msg := expectOneLineError(r)
		Expect(msg).To(ContainSubstring("--force"))
		Expect(r.stdout).To(ContainSubstring("Argo CD"), "it names the applier: %s", r)
		Expect(r.stdout).To(MatchRegexp(`(?m)^\s+active:\s*false$`), "the change to make in Git: %s", r)
		Expect(credential(ctx, ns, "synced").Spec.IsActive()).To(BeTrue(), "nothing changed live")

		By("deactivating it with --force")
		expectOK(admin(ctx, "-n", ns, "deactivate", "synced", "--force"))
		Expect(credential(ctx, ns, "synced").Spec.IsActive()).To(BeFalse())
	})

	It("a credential applied by Argo CD is not rotated or deleted without --force", func(ctx SpecContext) {
		applyAsArgoCD(ctx, ns, "synced", map[string]any{"apis": []any{map[string]any{"name": "platform-api", "permission": "user"}}})
		Eventually(activeCondition(ctx, ns, "synced")).Should(Equal("True"))

		r := admin(ctx, "-n", ns, "rotate", "synced")
		expectOneLineError(r)
		Expect(r.stdout).To(MatchRegexp(`(?m)^\s+keyVersion:\s*1$`), "the change to make in Git: %s", r)
		Expect(credential(ctx, ns, "synced").Spec.Rotation.KeyVersion).To(BeZero(), "nothing changed live")

		d := admin(ctx, "-n", ns, "delete", "synced", "--confirm", "synced")
		expectOneLineError(d)
		Expect(d.stdout).To(ContainSubstring("Git"), "%s", d)
		Expect(exists(ctx, ns, "synced")()).To(BeTrue())
	})

	It("status explains grants, scope, acceptance, secret versions with the grace end, the next deadline, last use and events", func(ctx SpecContext) {
		c := createJSON(ctx, ns, "explained", "--api", "platform-api:user", "--api", "profile-api:read-only", "--workspace", "eu-prod")
		Eventually(exchangeStatus(ctx, c.TokenURL, c.ClientID, c.ClientSecret)).Should(Equal(http.StatusOK))
		expectOK(admin(ctx, "-n", ns, "rotate", "explained", "--grace", "10m"))
		cred := credential(ctx, ns, "explained")
		Expect(cred.Status.PreviousSecrets).To(HaveLen(1))
		graceEnd := cred.Status.PreviousSecrets[0].ExpiresAt.UTC().Format(time.RFC3339)

		// The token server reports use every second (usageInterval) and events are recorded
		// asynchronously: poll until status shows both.
		var r result
		Eventually(func(g Gomega) {
			r = admin(ctx, "-n", ns, "status", "explained")
			g.Expect(r.code).To(Equal(0), "%s", r)
			g.Expect(r.stdout).To(ContainSubstring("127.0.0.1"), "the last use's address")
			g.Expect(r.stdout).To(MatchRegexp(`(?m)^\s*Normal\s+Issued\s`), "recent events: %s", r)
			// Every event the API holds for it (the namespace is this spec's own). Whether
			// the rotation reads Rotated or Adopted depends on a race of the operator's
			// status write with the token server's usage write, so no reason beyond
			// Issued is named here.
			events := &eventsv1.EventList{}
			g.Expect(k8sClient.List(ctx, events, client.InNamespace(ns))).To(Succeed())
			g.Expect(len(events.Items)).To(BeNumerically(">=", 2), "issued and rotated")
			for _, ev := range events.Items {
				g.Expect(r.stdout).To(MatchRegexp(`(?m)^\s*`+ev.Type+`\s+`+ev.Reason+`\s`), "the event %s: %s", ev.Reason, r)
			}
		}).WithPolling(250 * time.Millisecond).Should(Succeed())
		out := r.stdout
		for _, want := range []string{
			"platform-api", "Platform API", "user", "profile-api", "Profile API", "read-only", // grants, with the catalog's names
			"GET", "POST", // the methods a permission allows
			account, "eu-prod", // scope: the account from status, the workspaces
			c.ClientID,
			"key version 1",     // the current secret
			graceEnd,            // the previous one's grace end, which is also the next deadline
			"Issued", "Rotated", // recent events
		} {
			Expect(out).To(ContainSubstring(want), "%s", r)
		}
		Expect(out).To(MatchRegexp(`(?m)^\s*Next:.*`+regexp.QuoteMeta(graceEnd)), "the next deadline is the grace end: %s", r)
		newSecret := string(credentialSecret(ctx, ns, "explained").Data[iamv1alpha1.DefaultClientSecretKey])
		Expect(out).NotTo(ContainSubstring(c.ClientSecret))
		Expect(out).NotTo(ContainSubstring(newSecret))

		By("saying why token servers refuse a deactivated credential")
		expectOK(admin(ctx, "-n", ns, "deactivate", "explained"))
		Eventually(func() string { return admin(ctx, "-n", ns, "status", "explained").stdout }).
			WithPolling(250 * time.Millisecond).Should(ContainSubstring("deactivated"))

		for _, format := range []string{"json", "yaml"} {
			o := admin(ctx, "-n", ns, "status", "explained", "-o", format)
			expectOK(o)
			Expect(o.stdout).To(ContainSubstring(c.ClientID))
			Expect(o.stdout).NotTo(ContainSubstring(c.ClientSecret))
			Expect(o.stdout).NotTo(ContainSubstring(newSecret))
		}
	})

	It("apis lists the catalog with scope levels, permissions and their methods", func(ctx SpecContext) {
		r := admin(ctx, "apis")
		expectOK(r)
		Expect(regexp.MustCompile(`^API\s+DISPLAY NAME\s+SCOPE LEVEL\s+PERMISSIONS`).MatchString(lines(r.stdout)[0])).To(BeTrue(), "%s", r)
		platform := rowOf(r.stdout, "platform-api")
		Expect(platform).To(ContainSubstring("Platform API"))
		Expect(platform).To(ContainSubstring("Account"))
		Expect(platform).To(MatchRegexp(`user.*GET.*POST`))
		Expect(platform).To(MatchRegexp(`admin.*\*`))
		Expect(rowOf(r.stdout, "profile-api")).To(ContainSubstring("Workspace"))
		Expect(rowOf(r.stdout, "dataplanning-api")).NotTo(BeEmpty())
	})

	It("list -A adds the namespace and shows credentials of every namespace", func(ctx SpecContext) {
		createJSON(ctx, ns, "everywhere", "--api", "platform-api:user")
		r := admin(ctx, "list", "-A")
		expectOK(r)
		Expect(lines(r.stdout)[0]).To(MatchRegexp(`^NAMESPACE\s+NAME\s+DISPLAY NAME`))
		Expect(rowOf(r.stdout, ns)).To(ContainSubstring("everywhere"))
	})

	It("takes the namespace from the kubeconfig's context when -n is not given", func(ctx SpecContext) {
		createJSON(ctx, ns, "from-context", "--api", "platform-api:user")
		cfg, err := clientcmd.LoadFromFile(adminKubeconfig)
		Expect(err).NotTo(HaveOccurred())
		cfg.Contexts[cfg.CurrentContext].Namespace = ns
		kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(clientcmd.WriteToFile(*cfg, kubeconfig)).To(Succeed())

		r := run(ctx, kubeconfig, "list")
		expectOK(r)
		Expect(rowOf(r.stdout, "from-context")).NotTo(BeEmpty(), "%s", r)
		expectOK(run(ctx, kubeconfig, "status", "from-context"))
		Expect(rowOf(admin(ctx, "list").stdout, "from-context")).To(BeEmpty(), "the admin's own kubeconfig names no namespace: default")
	})

	It("version prints the plugin's version", func(ctx SpecContext) {
		r := admin(ctx, "version")
		expectOK(r)
		Expect(strings.TrimSpace(r.stdout)).NotTo(BeEmpty())
	})

	It("status and a missing credential: errors are one line with exit code 1", func(ctx SpecContext) {
		for _, args := range [][]string{
			{"status", "nosuch"},
			{"rotate", "nosuch"},
			{"deactivate", "nosuch"},
			{"token", "nosuch"},
			{"create", "bad", "--api", "platform-api"},
			{"create", "bad", "--api", "no-such-api:user"},
		} {
			msg := expectOneLineError(admin(ctx, append([]string{"-n", ns}, args...)...))
			GinkgoWriter.Printf("%v: %s\n", args, msg)
		}
	})
})

var _ = Describe("kubectl keysmith completion", func() {
	// candidates are the completions cobra's __complete protocol prints before its
	// ":directive" line.
	candidates := func(r result) []string {
		var out []string
		for _, l := range lines(r.stdout) {
			if strings.HasPrefix(l, ":") {
				break
			}
			name, _, _ := strings.Cut(l, "\t")
			out = append(out, name)
		}
		return out
	}

	It("completes credential names from the cluster and API names for --api, also through kubectl_complete-keysmith", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		createJSON(ctx, ns, "alpha", "--api", "platform-api:user")
		createJSON(ctx, ns, "beta", "--api", "platform-api:user")

		r := runBinary(ctx, plugin, "__complete", "--kubeconfig", adminKubeconfig, "-n", ns, "status", "")
		expectOK(r)
		Expect(candidates(r)).To(ConsistOf("alpha", "beta"), "%s", r)

		h := runBinary(ctx, completeHelper, "--kubeconfig", adminKubeconfig, "-n", ns, "rotate", "al")
		expectOK(h)
		Expect(candidates(h)).To(ConsistOf("alpha"), "kubectl runs the helper with the words after `kubectl keysmith`: %s", h)

		apis := runBinary(ctx, plugin, "__complete", "--kubeconfig", adminKubeconfig, "create", "x", "--api", "")
		expectOK(apis)
		Expect(candidates(apis)).To(ContainElements(HavePrefix("platform-api"), HavePrefix("profile-api"), HavePrefix("dataplanning-api")), "%s", apis)
		perms := runBinary(ctx, plugin, "__complete", "--kubeconfig", adminKubeconfig, "create", "x", "--api", "platform-api:")
		expectOK(perms)
		Expect(candidates(perms)).To(ConsistOf("platform-api:user", "platform-api:admin"), "%s", perms)

		script := admin(ctx, "completion", "bash")
		expectOK(script)
		Expect(script.stdout).To(ContainSubstring("__complete"))
	})
})
