package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build builds the module's main packages (./cmd/manager, ./cmd/token-server) into dir, as
// the image holds them, for tests that run the real binaries; each binary is named after
// its package's directory (dir/manager). BuildFlagsEnv adds flags to the build, such as
// -race: the fault and HA tests then run race-detecting processes (with
// GORACE=halt_on_error=1 a race ends the process, which those tests report).
func Build(ctx context.Context, dir string, pkgs ...string) error {
	args := append([]string{"build"}, strings.Fields(os.Getenv(BuildFlagsEnv))...)
	args = append(args, "-o", dir+string(os.PathSeparator))
	cmd := exec.CommandContext(ctx, "go", append(args, pkgs...)...)
	cmd.Dir = RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %w\n%s", pkgs, err, out)
	}
	return nil
}

// BuildFlagsEnv names the environment variable of extra go build flags for Build.
const BuildFlagsEnv = "KEYSMITH_TEST_BUILD_FLAGS"

// Binary is the path Build gives the binary of pkg in dir.
func Binary(dir, pkg string) string { return filepath.Join(dir, filepath.Base(pkg)) }
