package cli

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestEveryCommandsHelpHasFlagsAndAnExample walks the whole command tree, the commands
// of CLI-OPS included, through --help as a user would.
func TestEveryCommandsHelpHasFlagsAndAnExample(t *testing.T) {
	h := newCoreHarness(t)
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if c.Hidden {
			return
		}
		paths = append(paths, path)
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string{}, path...), sub.Name()))
		}
	}
	walk(newRootCommand(h.e), nil)
	if len(paths) < 13 {
		t.Fatalf("only %d commands: %v", len(paths), paths)
	}
	for _, path := range paths {
		h.out.Reset()
		if err := h.run(append(path, "--help")...); err != nil {
			t.Fatalf("%v --help: %v", path, err)
		}
		help := h.out.String()
		for _, want := range []string{"Usage:\n", "Examples:\n  ", "Flags:\n", "-h, --help", "Global Flags:\n", "--kubeconfig", "-n, --namespace"} {
			if len(path) == 0 && want == "Global Flags:\n" {
				continue // the root's own flags are the global ones
			}
			if !strings.Contains(help, want) {
				t.Errorf("kubectl keysmith %s --help lacks %q", strings.Join(path, " "), want)
			}
		}
		if !strings.Contains(help, "kubectl keysmith") {
			t.Errorf("%v --help does not name the command as users type it", path)
		}
	}
}
