package cli

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// listFixtures are two credentials of team-a (one deactivated, one never used), one of
// team-b, and team-a's Secret, whose data must never be printed.
func listFixtures() []client.Object {
	unused := fixtureCredential("team-a", "report-job")
	unused.Spec.DisplayName = ""
	unused.Spec.APIs = unused.Spec.APIs[:1]
	unused.Status.LastUsedTime, unused.Status.LastUsedAddress = nil, ""
	return []client.Object{
		inactive(fixtureCredential("team-a", "ci-bot")),
		unused,
		fixtureCredential("team-b", "billing"),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "ci-bot"}, Data: map[string][]byte{"CLIENT_SECRET": []byte("kss_do_not_print")}},
	}
}

func TestListTable(t *testing.T) {
	h := newCoreHarness(t, listFixtures()...)
	if err := h.run("list", "-n", "team-a"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(h.out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and 2 rows:\n%s", h.out.String())
	}
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "NAME DISPLAY NAME CLIENT ID APIS ACTIVE READY LAST USED FROM AGE" {
		t.Fatalf("header %q", lines[0])
	}
	wantRows := [][]string{
		{"ci-bot", "CI", "bot", "ksc_ci-bot0123456789", "profile-api:read-only,platform-api:admin", "False", "(Inactive)", "True", "3m", "ago", "10.0.0.7", "3d"},
		{"report-job", "<none>", "ksc_report-job0123456789", "profile-api:read-only", "True", "True", "never", "<none>", "3d"},
	}
	for i, want := range wantRows {
		if got := strings.Fields(lines[i+1]); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("row %d:\n got %q\nwant %q", i+1, got, want)
		}
	}
}

func TestListAllNamespacesPutsNamespaceFirst(t *testing.T) {
	h := newCoreHarness(t, listFixtures()...)
	if err := h.run("list", "-A"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(h.out.String(), "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAMESPACE ") || !strings.HasPrefix(lines[3], "team-b ") {
		t.Fatalf("list -A:\n%s", h.out.String())
	}
}

func TestListEmptySaysWhere(t *testing.T) {
	h := newCoreHarness(t)
	if err := h.run("list", "-n", "nobody"); err != nil {
		t.Fatal(err)
	}
	if h.out.Len() != 0 || h.errOut.String() != "No credentials found in namespace \"nobody\".\n" {
		t.Fatalf("out %q, err %q", h.out.String(), h.errOut.String())
	}
	if err := h.run("list", "-n", "nobody", "-o", "yaml"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.out.String(), "items: []\n") {
		t.Fatalf("an empty list -o yaml has no empty items: %q", h.out.String())
	}
}

func TestListJSONPrintsTheObjectsWithoutSecretData(t *testing.T) {
	h := newCoreHarness(t, listFixtures()...)
	if err := h.run("list", "-n", "team-a", "-o", "json"); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Kind  string                      `json:"kind"`
		Items []iamv1alpha1.APICredential `json:"items"`
	}
	if err := json.Unmarshal(h.out.Bytes(), &list); err != nil {
		t.Fatalf("%v:\n%s", err, h.out.String())
	}
	if list.Kind != "List" || len(list.Items) != 2 || list.Items[0].Kind != "APICredential" || list.Items[0].APIVersion != "iam.keysmith.dev/v1alpha1" ||
		list.Items[0].Status.ClientID != "ksc_ci-bot0123456789" || list.Items[0].ManagedFields != nil {
		t.Fatalf("list -o json:\n%s", h.out.String())
	}
	if strings.Contains(h.out.String(), "kss_do_not_print") || strings.Contains(h.out.String(), "CLIENT_SECRET\"") {
		t.Fatal("list -o json printed Secret data")
	}
	h.out.Reset()
	if err := h.run("list", "-n", "team-a", "-o", "yaml"); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h.out.String(), "apiVersion: v1\nitems:\n- apiVersion: iam.keysmith.dev/v1alpha1\n  kind: APICredential\n") {
		t.Fatalf("list -o yaml:\n%s", h.out.String())
	}
}

func TestAPIsTable(t *testing.T) {
	h := newCoreHarness(t, fixtureAPIs()...)
	if err := h.run("apis"); err != nil {
		t.Fatal(err)
	}
	want := "API            DISPLAY NAME   SCOPE LEVEL   PERMISSIONS\n" +
		"platform-api   Platform API   Workspace     user (GET,POST), admin (*)\n" +
		"profile-api    Profile API    Account       read-only (GET,HEAD)\n"
	if h.out.String() != want {
		t.Fatalf("apis:\n%s\nwant:\n%s", h.out.String(), want)
	}
}
