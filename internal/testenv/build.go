package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build builds the module's main packages (./cmd/manager, ./cmd/token-server) into dir, as
// the image holds them, for tests that run the real binaries; each binary is named after
// its package's directory (dir/manager).
func Build(ctx context.Context, dir string, pkgs ...string) error {
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", dir + string(os.PathSeparator)}, pkgs...)...)
	cmd.Dir = RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %w\n%s", pkgs, err, out)
	}
	return nil
}

// Binary is the path Build gives the binary of pkg in dir.
func Binary(dir, pkg string) string { return filepath.Join(dir, filepath.Base(pkg)) }
