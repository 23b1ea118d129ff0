package cli

import (
	"path/filepath"
	"regexp"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// commandFlags are DESIGN §6's commands and the flags each one's help must list.
var commandFlags = map[string][]string{
	"create":     {"--api", "--workspace", "--account", "--display-name", "--expires-in", "--expires-at", "--grace", "--timeout", "--output"},
	"list":       {"--all-namespaces", "--output"},
	"status":     {},
	"rotate":     {"--grace", "--show-secret", "--force"},
	"deactivate": {"--force"},
	"activate":   {"--force"},
	"delete":     {"--confirm", "--force"},
	"token":      {"--scope", "--decode", "--token-url", "--certificate-authority", "--insecure-skip-tls-verify"},
	"check":      {"--api", "--method", "--workspace", "--path", "--token-url", "--certificate-authority", "--insecure-skip-tls-verify"},
	"apis":       {"--output"},
	"completion": {},
	"version":    {},
}

// section returns the lines of a help text's section ("Flags:", "Examples:") up to the
// next blank line.
func section(help, title string) string {
	_, rest, ok := strings.Cut(help, "\n"+title+"\n")
	if !ok {
		return ""
	}
	body, _, _ := strings.Cut(rest, "\n\n")
	return body
}

// flagListed matches a flag's line in a Flags section: "  -n, --namespace string   …".
func flagListed(flags, flag string) bool {
	return regexp.MustCompile(`(?m)^\s+(-\w, )?` + regexp.QuoteMeta(flag) + `\b`).MatchString(flags)
}

var _ = Describe("kubectl keysmith --help", func() {
	// noCluster is a kubeconfig that does not exist: help needs no cluster.
	noCluster := func() string { return filepath.Join(GinkgoT().TempDir(), "absent") }

	It("lists the commands, the kubectl flags and an example", func(ctx SpecContext) {
		r := run(ctx, noCluster(), "--help")
		expectOK(r)
		cmds := section(r.stdout, "Available Commands:")
		for name := range commandFlags {
			Expect(cmds).To(MatchRegexp(`(?m)^\s+`+name+`\s`), "the root's help lists %s:\n%s", name, r.stdout)
		}
		flags := section(r.stdout, "Flags:")
		for _, f := range []string{"--namespace", "--context", "--kubeconfig"} {
			Expect(flagListed(flags, f)).To(BeTrue(), "the root's help lists %s:\n%s", f, r.stdout)
		}
		Expect(section(r.stdout, "Examples:")).To(ContainSubstring("kubectl keysmith"), "an example:\n%s", r.stdout)
	})

	for name, want := range commandFlags {
		It("documents "+name+" with its flags and an example", func(ctx SpecContext) {
			r := run(ctx, noCluster(), name, "--help")
			expectOK(r)
			Expect(r.stdout).To(ContainSubstring("Usage:"))
			Expect(section(r.stdout, "Examples:")).To(ContainSubstring("kubectl keysmith "+name), "an example of %s:\n%s", name, r.stdout)
			flags := section(r.stdout, "Flags:") + "\n" + section(r.stdout, "Global Flags:")
			Expect(flagListed(flags, "--help")).To(BeTrue(), "%s lists its flags:\n%s", name, r.stdout)
			for _, f := range want {
				Expect(flagListed(flags, f)).To(BeTrue(), "%s --help lists %s:\n%s", name, f, r.stdout)
			}
			Expect(flagListed(flags, "--namespace")).To(BeTrue(), "the kubectl flags reach %s:\n%s", name, r.stdout)
		})
	}

	It("refuses an unknown command and an unknown flag in one line", func(ctx SpecContext) {
		expectOneLineError(run(ctx, noCluster(), "frobnicate"))
		expectOneLineError(run(ctx, noCluster(), "list", "--frobnicate"))
	})
})
