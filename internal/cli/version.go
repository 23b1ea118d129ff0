package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is the plugin's version, set at build time with
// -ldflags "-X github.com/keysmith-dev/keysmith/internal/cli.version=v0.3.0"; without it
// the module version of a `go install …@version` build, else "devel".
var version string

func init() { registerCommand(newVersionCommand) }

// buildVersion returns the plugin's version.
func buildVersion() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "devel"
}

// versionInfo is what `version -o json|yaml` prints.
type versionInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
	Commit    string `json:"commit,omitempty"`
}

func currentVersion() versionInfo {
	v := versionInfo{Version: buildVersion(), GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				v.Commit = s.Value
			}
		}
	}
	return v
}

func newVersionCommand(e *env) *cobra.Command {
	var o outputFlag
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version",
		Long:  "Print the version of kubectl-keysmith, the Go version it was built with and its platform. It needs no cluster.",
		Example: `  kubectl keysmith version
  kubectl keysmith version -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			v := currentVersion()
			if o.structured() {
				return printValue(e.out(), o.format, v)
			}
			commit := ""
			if v.Commit != "" {
				commit = ", commit " + v.Commit
			}
			_, err := fmt.Fprintf(e.out(), "kubectl-keysmith %s (%s, %s%s)\n", v.Version, v.GoVersion, v.Platform, commit)
			return err
		},
	}
	addOutputFlag(cmd, &o)
	return cmd
}
