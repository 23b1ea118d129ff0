package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/creack/pty"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	kscredential "github.com/keysmith-dev/keysmith/internal/credential"
)

// terminal is a run of the plugin on a pseudo-terminal: stdin, stdout and stderr are the
// pty's, as in a shell.
type terminal struct {
	cmd  *exec.Cmd
	tty  *os.File
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	code int
}

// onTerminal starts the plugin as the admin on a new pty.
func onTerminal(ctx context.Context, args ...string) *terminal {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	t := &terminal{cmd: pluginCommand(ctx, adminKubeconfig, args...), done: make(chan struct{})}
	tty, err := pty.StartWithSize(t.cmd, &pty.Winsize{Rows: 40, Cols: 200})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	t.tty = tty
	go func() {
		defer close(t.done)
		defer cancel()
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			t.mu.Lock()
			t.out.Write(buf[:n])
			t.mu.Unlock()
			if err != nil { // EIO once the plugin exited and the pty closed
				break
			}
		}
		err := t.cmd.Wait()
		if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
			t.code = exit.ExitCode()
		} else if err != nil {
			t.code = -1
		}
		_ = tty.Close()
	}()
	return t
}

// output is what the terminal showed so far, with the pty's CRLF as LF.
func (t *terminal) output() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.ReplaceAll(t.out.String(), "\r\n", "\n")
}

// typeLine types a line and Enter, as a person would.
func (t *terminal) typeLine(s string) {
	_, err := io.WriteString(t.tty, s+"\r")
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
}

// wait waits for the plugin to exit and returns its exit code.
func (t *terminal) wait() int {
	EventuallyWithOffset(1, t.done).WithTimeout(90*time.Second).Should(BeClosed(), "the plugin exits; it showed:\n%s", t.output())
	GinkgoWriter.Printf("$ (on a terminal) %s %s\n%s[exit %d]\n", filepath.Base(t.cmd.Path), strings.Join(t.cmd.Args[1:], " "), t.output(), t.code)
	return t.code
}

var _ = Describe("kubectl keysmith on a terminal", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) { ns = newNamespace(ctx) })

	It("create shows the secret once, with the warning that create will not show it again", func(ctx SpecContext) {
		t := onTerminal(ctx, "-n", ns, "create", "shown-once", "--api", "platform-api:user")
		Expect(t.wait()).To(Equal(0), "%s", t.output())
		out := t.output()
		secret := credentialSecret(ctx, ns, "shown-once")
		clientSecret := string(secret.Data[iamv1alpha1.DefaultClientSecretKey])
		Expect(clientSecret).NotTo(BeEmpty())
		Expect(strings.Count(out, clientSecret)).To(Equal(1), "the secret exactly once:\n%s", out)
		Expect(out).To(ContainSubstring(string(secret.Data[iamv1alpha1.DefaultClientIDKey])))
		Expect(out).To(MatchRegexp(`(?i)not (be )?show(n)?( it)? again`), "the warning:\n%s", out)
		Expect(out).NotTo(ContainSubstring("goroutine"))
	})

	It("delete asks for the name, aborts on a wrong one and deletes when it is typed right", func(ctx SpecContext) {
		createJSON(ctx, ns, "typed", "--api", "platform-api:user")

		By("typing a wrong name")
		t := onTerminal(ctx, "-n", ns, "delete", "typed")
		Eventually(t.output).Should(ContainSubstring("typed"), "the prompt names the credential")
		t.typeLine("typo")
		Expect(t.wait()).To(Equal(1), "a wrong name aborts:\n%s", t.output())
		Expect(t.output()).To(MatchRegexp(`(?m)^error: .*nothing was deleted`), "it says so:\n%s", t.output())
		Expect(t.output()).NotTo(ContainSubstring("goroutine"))
		Expect(t.output()).NotTo(ContainSubstring(kscredential.SecretPrefix), "delete shows no secret")
		// The plugin has exited: a delete it sent would show already.
		Expect(exists(ctx, ns, "typed")()).To(BeTrue(), "the credential remains")

		By("typing it right")
		t = onTerminal(ctx, "-n", ns, "delete", "typed")
		Eventually(t.output).Should(ContainSubstring("typed"))
		t.typeLine("typed")
		Expect(t.wait()).To(Equal(0), "%s", t.output())
		Expect(t.output()).NotTo(ContainSubstring(kscredential.SecretPrefix), "delete shows no secret")
		Eventually(exists(ctx, ns, "typed")).Should(BeFalse())
	})
})
