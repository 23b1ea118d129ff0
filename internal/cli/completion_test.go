package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// completions runs cobra's __complete for args and returns the candidates it prints
// (without the trailing directive line).
func (h *coreHarness) completions(args ...string) []string {
	h.t.Helper()
	h.out.Reset()
	if err := h.run(append([]string{"__complete"}, args...)...); err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(h.out.String()), "\n") {
		if !strings.HasPrefix(line, ":") {
			out = append(out, line)
		}
	}
	return out
}

func TestCompletionOfCredentialNames(t *testing.T) {
	objs := append(fixtureAPIs(), listFixtures()...)
	h := newCoreHarness(t, objs...)
	if got := h.completions("status", "-n", "team-a", ""); strings.Join(got, "|") != "ci-bot\tCI bot|report-job" {
		t.Fatalf("status <TAB> = %q", got)
	}
	if got := h.completions("status", "-n", "team-a", "rep"); strings.Join(got, "|") != "report-job" {
		t.Fatalf("status rep<TAB> = %q", got)
	}
	if got := h.completions("status", "-n", "team-b", ""); strings.Join(got, "|") != "billing\tCI bot" {
		t.Fatalf("status -n team-b <TAB> = %q", got)
	}
	if got := h.completions("status", "-n", "team-a", "ci-bot", ""); len(got) != 0 {
		t.Fatalf("a second name was offered: %q", got)
	}
	if got := h.completions("-n", "team-"); len(got) != 0 {
		t.Logf("namespaces: %q", got) // the fake holds no Namespace objects
	}
}

func TestCompletionViaTheKubectlHelper(t *testing.T) {
	if got := CompletionArgs([]string{"status", ""}); strings.Join(got, " ") != "__complete status " {
		t.Fatalf("CompletionArgs = %q", got)
	}
	if got := CompletionArgs([]string{"__complete", "list"}); strings.Join(got, " ") != "__complete list" {
		t.Fatalf("CompletionArgs kept no single __complete: %q", got)
	}
	h := newCoreHarness(t, listFixtures()...)
	if got := h.completions(CompletionArgs([]string{"stat"})[1:]...); len(got) == 0 || !strings.HasPrefix(got[0], "status\t") {
		t.Fatalf("kubectl keysmith stat<TAB> = %q", got)
	}
}

func TestCompletionOfAPIsAndPermissions(t *testing.T) {
	defs := []iamv1alpha1.APIDefinition{}
	for _, o := range fixtureAPIs() {
		defs = append(defs, *o.(*iamv1alpha1.APIDefinition))
	}
	got, directive := grantCompletions(defs, "p")
	if strings.Join(got, "|") != "profile-api:\tProfile API|platform-api:\tPlatform API" || directive&4 == 0 /* NoSpace */ {
		t.Fatalf("--api p<TAB> = %q (directive %d)", got, directive)
	}
	got, _ = grantCompletions(defs, "platform-api:")
	if strings.Join(got, "|") != "platform-api:user\tGET,POST|platform-api:admin\t*" {
		t.Fatalf("--api platform-api:<TAB> = %q", got)
	}
	got, _ = grantCompletions(defs, "platform-api:a")
	if strings.Join(got, "|") != "platform-api:admin\t*" {
		t.Fatalf("--api platform-api:a<TAB> = %q", got)
	}
	if got := apiNameCompletions(defs, "pro"); strings.Join(got, "|") != "profile-api\tProfile API" {
		t.Fatalf("api names = %q", got)
	}
	h := newCoreHarness(t, fixtureAPIs()...)
	if got := h.completions("check", "ci-bot", "--api", "pla"); strings.Join(got, "|") != "platform-api\tPlatform API" {
		t.Fatalf("check --api pla<TAB> = %q", got)
	}
	if got := h.completions("create", "x", "--api", "platform-api:"); strings.Join(got, "|") != "platform-api:user\tGET,POST|platform-api:admin\t*" {
		t.Fatalf("create --api platform-api:<TAB> = %q", got)
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		h := newCoreHarness(t)
		if err := h.run("completion", shell); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(h.out.String(), "kubectl-keysmith") || !strings.Contains(h.out.String(), "__complete") {
			t.Errorf("completion %s printed no script for kubectl-keysmith", shell)
		}
	}
}

func TestWaitForCredentialWatchesUntilTheConditionHolds(t *testing.T) {
	cred := fixtureCredential("team-a", "ci-bot")
	cred.ManagedFields = nil
	cred.Status = iamv1alpha1.APICredentialStatus{}
	h := newCoreHarness(t, cred)
	done := make(chan struct{})
	defer close(done)
	// The operator's status writes: repeated until the wait ends, since the fake's watch
	// does not replay a write made between the wait's first read and its watch.
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			live := &iamv1alpha1.APICredential{}
			if err := h.c.Get(context.Background(), clientKey(cred), live); err != nil {
				continue
			}
			setCondition(live, iamv1alpha1.ConditionActive, metav1.ConditionTrue, iamv1alpha1.ReasonIssued)
			live.Status.Conditions[0].ObservedGeneration = live.Generation
			live.Status.Conditions[0].Message = fmt.Sprint("write ", n)
			_ = h.c.Status().Update(context.Background(), live)
		}
	}()
	got, err := waitForCredential(context.Background(), h.c, "team-a", "ci-bot", 20*time.Second, activeIs(metav1.ConditionTrue))
	if err != nil || !conditionIs(got, iamv1alpha1.ConditionActive, metav1.ConditionTrue, true) {
		t.Fatalf("waitForCredential = %v, %v", got, err)
	}
}

func TestWaitForCredentialTimesOutSayingWhere(t *testing.T) {
	cred := fixtureCredential("team-a", "ci-bot")
	cred.ManagedFields = nil
	inactive(cred)
	h := newCoreHarness(t, cred)
	_, err := waitForCredential(context.Background(), h.c, "team-a", "ci-bot", 100*time.Millisecond, activeIs(metav1.ConditionTrue))
	if !errors.Is(err, errWaitTimeout) || !strings.Contains(err.Error(), "Ready=True (Inactive)") {
		t.Fatalf("waitForCredential = %v", err)
	}
}
