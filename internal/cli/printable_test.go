package cli

import (
	"errors"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"CI bot":                     "CI bot",
		"Zoë ✓ \uFFFD":               "Zoë ✓ \uFFFD",
		"\x1b]0;pwned\x07":           `\x1b]0;pwned\x07`,
		"a\tb\nc\rd\x7f":             `a\x09b\x0ac\x0dd\x7f`,
		"\u009b2J":                   `\x9b2J`,
		"evil\u202egnp.exe":          `evil\u202egnp.exe`,
		"bad \xff utf-8":             `bad \xff utf-8`,
		"isolate \u2066x\u2069 mark": `isolate \u2066x\u2069 mark`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

// hostile is what anyone who may write a credential's spec, its status, an event in its
// namespace or an APIDefinition could put where the plugin prints it: an OSC title change,
// a clear-screen, a bidi override and a forged table row.
const hostile = "x\x1b]0;owned\x07\x1b[2J\u202e\tforged\nrow"

// noControl fails when out holds a terminal escape, a bidi override, or a tab or
// newline of hostile text.
func noControl(t *testing.T, what, out string) {
	t.Helper()
	if strings.ContainsAny(out, "\x1b\x07\u202e") || strings.Contains(out, "\tforged") || strings.Contains(out, "\nrow") {
		t.Errorf("%s printed control characters from the cluster:\n%q", what, out)
	}
	if !strings.Contains(out, `x\x1b]0;owned\x07\x1b[2J\u202e\x09forged\x0arow`) {
		t.Errorf("%s does not show the hostile text escaped:\n%q", what, out)
	}
}

func TestClusterTextReachesTheTerminalEscaped(t *testing.T) {
	cred := fixtureCredential("team-a", "ci-bot")
	cred.Spec.DisplayName = hostile
	cred.Status.LastUsedAddress = hostile
	for i := range cred.Status.Conditions {
		cred.Status.Conditions[i].Message = hostile
	}
	noControl(t, "status", renderFixture(t, cred, statusEvent{Type: "Warning", Reason: "Odd", From: hostile, Message: hostile, Count: 1, Last: coreNow}))

	def := fixtureAPIs()[0].(*iamv1alpha1.APIDefinition)
	def.Spec.DisplayName = hostile
	h := newCoreHarness(t, append([]client.Object{def}, cred)...)
	if err := h.run("list", "-n", "team-a"); err != nil {
		t.Fatal(err)
	}
	noControl(t, "list", h.out.String())
	h.out.Reset()
	if err := h.run("apis"); err != nil {
		t.Fatal(err)
	}
	noControl(t, "apis", h.out.String())
	noControl(t, "completion of names", strings.Join(h.completions("status", "-n", "team-a", ""), "|"))
	noControl(t, "completion of APIs", strings.Join(h.completions("check", "-n", "team-a", "ci-bot", "--api", ""), "|"))

	var b strings.Builder
	printError(&b, userError("the operator reports "+hostile, ""))
	printError(&b, errors.New(hostile))
	if strings.ContainsAny(b.String(), "\x1b\x07\u202e\t") || strings.Count(b.String(), "\n") != 2 {
		t.Errorf("errors printed control characters: %q", b.String())
	}
}
