package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func renderFixture(t *testing.T, cred *iamv1alpha1.APICredential, events ...statusEvent) string {
	t.Helper()
	apis := map[string]*iamv1alpha1.APIDefinition{}
	for _, o := range fixtureAPIs() {
		def := o.(*iamv1alpha1.APIDefinition)
		apis[def.Name] = def
	}
	var b bytes.Buffer
	if err := renderStatus(&b, statusFacts{cred: cred, apis: apis, events: events}, coreNow); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestStatusRendersAnIssuedCredential(t *testing.T) {
	got := renderFixture(t, fixtureCredential("team-a", "ci-bot"),
		statusEvent{Type: "Normal", Reason: "Issued", From: "keysmith-manager", Message: "issued client ID ksc_ci-bot0123456789", Count: 1, Last: coreNow.Add(-72 * time.Hour)},
		statusEvent{Type: "Normal", Reason: "Rotated", From: "keysmith-manager", Message: "issued key version 2", Count: 1, Last: coreNow.Add(-20 * time.Minute)},
	)
	t.Log("\n" + got)
	for _, want := range []string{
		"Name:          ci-bot\n",
		"Display name:  CI bot\n",
		"Client ID:     ksc_ci-bot0123456789\n",
		"Grants:\n  profile-api (Profile API, Account level): read-only: GET, HEAD\n  platform-api (Platform API, Workspace level): admin: all methods\n",
		"Scope:\n  Account:     team-a (selected for you from the namespace)\n  Workspaces:  eu-prod, us-dev\n",
		"Token servers:\n  Accepted: token servers exchange its secret for tokens and accept the tokens.\n  Ready: the declared state is in effect (Issued): the secret is issued.\n",
		"  Current:     key version 2, issued 2026-12-02T11:40:00Z (20m ago)\n",
		"  Previous:    works until 2026-12-02T12:40:00Z (in 40m)\n",
		"  Grace:       the previous secret works 1h after a rotation\n",
		"Deadlines:\n  Next:        grace period of a previous secret ends: 2026-12-02T12:40:00Z (in 40m)\n",
		"  Then:        the credential expires: 2027-01-01T12:00:00Z (in 30d)\n",
		"  Then:        automatic rotation due (every 2160h): 2027-03-02T11:40:00Z (in 89d)\n",
		"  Last used:   2026-12-02T11:57:00Z (3m ago)\n  From:        10.0.0.7\n",
		"Rotated   20m",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks %q", want)
		}
	}
	if strings.Contains(got, "sha256") || strings.Contains(got, "deadbeef") {
		t.Error("status printed a secret hash")
	}
	if strings.Index(got, "Issued    3d") > strings.Index(got, "Rotated   20m") {
		t.Error("events are not oldest first")
	}
}

func TestStatusExplainsWhyTokenServersRefuse(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*iamv1alpha1.APICredential)
		want   []string
	}{
		{"deactivated", func(c *iamv1alpha1.APICredential) { inactive(c) },
			[]string{"Refused: it is deactivated (spec.active is false), and so are the tokens it was issued. 'kubectl keysmith activate ci-bot' accepts the same keys again."}},
		{"expired", func(c *iamv1alpha1.APICredential) {
			past := metav1.NewTime(coreNow.Add(-time.Hour))
			c.Spec.ExpiresAt = &past
			setCondition(c, iamv1alpha1.ConditionActive, metav1.ConditionFalse, iamv1alpha1.ReasonExpired)
		}, []string{"Refused: it expired at 2026-12-02T11:00:00Z (60m ago) (spec.expiresAt).", "  Expired:     2026-12-02T11:00:00Z (60m ago)\n"}},
		{"not issued yet", func(c *iamv1alpha1.APICredential) {
			c.Status = iamv1alpha1.APICredentialStatus{}
			setCondition(c, iamv1alpha1.ConditionActive, metav1.ConditionFalse, iamv1alpha1.ReasonProgressing)
		}, []string{"Not yet: it has not been issued; the operator is issuing it.", "  Current:     <not issued yet>\n", "  Account:     <not reported yet>\n"}},
		{"no status at all", func(c *iamv1alpha1.APICredential) { c.Status = iamv1alpha1.APICredentialStatus{} },
			[]string{"Unknown: the operator has not reported on it yet (is the keysmith manager running?)."}},
		{"Secret deleted", func(c *iamv1alpha1.APICredential) {
			setCondition(c, iamv1alpha1.ConditionReady, metav1.ConditionFalse, iamv1alpha1.ReasonSecretMissing)
		}, []string{"Its Secret is missing: clients that hold the secret keep working; rotate to issue new keys.",
			"Not ready, a person must act (SecretMissing)", "'kubectl keysmith rotate ci-bot' issues new keys."}},
		{"rotation requested", func(c *iamv1alpha1.APICredential) { c.Spec.Rotation.KeyVersion = 3 },
			[]string{"  Rotating:    to key version 3 (requested, not issued yet)\n"}},
		{"applied by Flux", func(c *iamv1alpha1.APICredential) {
			c.Labels = map[string]string{"kustomize.toolkit.fluxcd.io/name": "apps"}
		}, []string{"Applied by:    Flux (kustomize-controller) (label kustomize.toolkit.fluxcd.io/name): change it in Git"}},
		{"account named in spec", func(c *iamv1alpha1.APICredential) { c.Spec.Scope.Account, c.Status.Account = "acme", "acme" },
			[]string{"  Account:     acme\n"}},
		{"no deadlines", func(c *iamv1alpha1.APICredential) {
			c.Spec.ExpiresAt, c.Spec.Rotation.Period, c.Status.PreviousSecrets = nil, nil, nil
		}, []string{"  Next:        none (no automatic rotation, no grace period running, no expiry)\n", "  Expires:     never\n", "  Rotation:    manual ('kubectl keysmith rotate ci-bot')\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred := fixtureCredential("team-a", "ci-bot")
			tc.mutate(cred)
			got := renderFixture(t, cred)
			for _, want := range tc.want {
				if !strings.Contains(got, want) {
					t.Errorf("status lacks %q:\n%s", want, got)
				}
			}
		})
	}
}

func TestStatusCommandReadsTheCatalogAndPrintsNoSecret(t *testing.T) {
	objs := append(fixtureAPIs(), listFixtures()...)
	h := newCoreHarness(t, objs...)
	if err := h.run("status", "ci-bot", "-n", "team-a"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.out.String(), "platform-api (Platform API, Workspace level): admin: all methods") {
		t.Fatalf("status:\n%s", h.out.String())
	}
	for _, format := range []string{"json", "yaml"} {
		h.out.Reset()
		if err := h.run("status", "ci-bot", "-n", "team-a", "-o", format); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(h.out.String(), "ksc_ci-bot0123456789") || strings.Contains(h.out.String(), "kss_do_not_print") || strings.Contains(h.out.String(), "managedFields") {
			t.Fatalf("status -o %s:\n%s", format, h.out.String())
		}
	}
	err := h.run("status", "nope", "-n", "team-a")
	if err == nil || err.Error() != `credential "nope" not found in namespace "team-a": see the credentials there with 'kubectl keysmith list -n team-a'` {
		t.Fatalf("status of a missing credential: %v", err)
	}
}

func setCondition(c *iamv1alpha1.APICredential, typ string, status metav1.ConditionStatus, reason string) {
	for i := range c.Status.Conditions {
		if c.Status.Conditions[i].Type == typ {
			c.Status.Conditions[i].Status, c.Status.Conditions[i].Reason, c.Status.Conditions[i].Message = status, reason, ""
			return
		}
	}
	c.Status.Conditions = append(c.Status.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, LastTransitionTime: metav1.NewTime(coreNow)})
}
