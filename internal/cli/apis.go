package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func init() { registerCommand(newAPIsCommand) }

func newAPIsCommand(e *env) *cobra.Command {
	var o outputFlag
	cmd := &cobra.Command{
		Use:     "apis",
		Aliases: []string{"catalog"},
		Short:   "List the catalog: each API, its display name, scope level, permissions and their methods",
		Long: `List the APIDefinitions of the catalog (cluster-scoped): API (the name --api takes),
DISPLAY NAME, SCOPE LEVEL (Org, Account or Workspace; Workspace-level APIs need
--workspace) and PERMISSIONS, each with the HTTP methods token servers let it use
("*" is every method). Grant one with 'kubectl keysmith create NAME --api API:PERMISSION'.

-o json or -o yaml prints the APIDefinition objects.`,
		Example: `  kubectl keysmith apis
  kubectl keysmith apis -o yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			defs, err := apiDefinitions(cmd.Context(), e)
			if err != nil {
				return kubeError(err, "list the APIs of the catalog")
			}
			if o.structured() {
				return printList(e.out(), o.format, defs)
			}
			if len(defs) == 0 {
				_, err := fmt.Fprintln(e.errOut(), "No APIs in the catalog: a cluster admin adds them as APIDefinitions.")
				return err
			}
			return printAPITable(e.out(), defs)
		},
	}
	addOutputFlag(cmd, &o)
	return cmd
}

// printAPITable writes the catalog's table: API, DISPLAY NAME, SCOPE LEVEL, PERMISSIONS
// ("read-only (GET,HEAD), admin (*)").
func printAPITable(w io.Writer, defs []iamv1alpha1.APIDefinition) error {
	t := newTable(w)
	row(t, "API", "DISPLAY NAME", "SCOPE LEVEL", "PERMISSIONS")
	for _, d := range defs {
		perms := make([]string, len(d.Spec.Permissions))
		for i, p := range d.Spec.Permissions {
			perms[i] = fmt.Sprintf("%s (%s)", p.Name, strings.Join(p.Methods, ","))
		}
		row(t, d.Name, orNone(d.Spec.DisplayName), string(d.Spec.ScopeLevel), orNone(strings.Join(perms, ", ")))
	}
	return t.Flush()
}
