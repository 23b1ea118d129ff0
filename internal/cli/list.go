package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func init() { registerCommand(newListCommand) }

// listOptions are the flags of list.
type listOptions struct {
	output        outputFlag
	allNamespaces bool
	selector      string
}

func newListCommand(e *env) *cobra.Command {
	o := &listOptions{}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls", "get"},
		Short:   "List credentials: client ID, APIs, whether token servers accept them, last use",
		Long: `List the APICredentials of the namespace (-n, else the kubeconfig's), or of every
namespace with -A: NAME, DISPLAY NAME, CLIENT ID, APIS (api:permission), ACTIVE (whether
token servers accept it now, with the reason when not), READY (whether the declared
state is in effect, with the reason when not), LAST USED, FROM (the address it was last
used from) and AGE.

-o json or -o yaml prints the APICredential objects (never Secret data).`,
		Example: `  # The credentials of the current namespace
  kubectl keysmith list

  # Of every namespace
  kubectl keysmith list -A

  # As JSON, for scripts
  kubectl keysmith list -n team-a -o json

  # Only those with a label
  kubectl keysmith list -l app=billing`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.output.validate(); err != nil {
				return err
			}
			return o.run(cmd, e)
		},
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "List the credentials of every namespace")
	cmd.Flags().StringVarP(&o.selector, "selector", "l", "", "Only credentials whose labels match this selector (e.g. app=billing)")
	addOutputFlag(cmd, &o.output)
	return cmd
}

func (o *listOptions) run(cmd *cobra.Command, e *env) error {
	c, err := e.Client()
	if err != nil {
		return err
	}
	var opts []client.ListOption
	where := "every namespace"
	if !o.allNamespaces {
		ns, err := e.Namespace()
		if err != nil {
			return err
		}
		opts = append(opts, client.InNamespace(ns))
		where = fmt.Sprintf("namespace %q", ns)
	}
	if o.selector != "" {
		sel, err := labels.Parse(o.selector)
		if err != nil {
			return userError(fmt.Sprintf("invalid --selector %q: %v", o.selector, err), "use key=value, key!=value, key in (a,b)")
		}
		opts = append(opts, client.MatchingLabelsSelector{Selector: sel})
	}
	list := &iamv1alpha1.APICredentialList{}
	if err := c.List(cmd.Context(), list, opts...); err != nil {
		return kubeError(err, "list the credentials of "+where)
	}
	slices.SortFunc(list.Items, func(a, b iamv1alpha1.APICredential) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	if o.output.structured() {
		return printList(e.out(), o.output.format, list.Items)
	}
	if len(list.Items) == 0 {
		_, err := fmt.Fprintf(e.errOut(), "No credentials found in %s.\n", where)
		return err
	}
	return printCredentialTable(e.out(), list.Items, o.allNamespaces, e.clock.Now())
}

// printCredentialTable writes list's table (DESIGN §6), with NAMESPACE first when
// withNamespace.
func printCredentialTable(w io.Writer, creds []iamv1alpha1.APICredential, withNamespace bool, now time.Time) error {
	t := newTable(w)
	header := []string{"NAME", "DISPLAY NAME", "CLIENT ID", "APIS", "ACTIVE", "READY", "LAST USED", "FROM", "AGE"}
	if withNamespace {
		header = append([]string{"NAMESPACE"}, header...)
	}
	row(t, header...)
	for i := range creds {
		cred := &creds[i]
		cells := []string{
			cred.Name,
			orNone(cred.Spec.DisplayName),
			orNone(cred.Status.ClientID),
			grantList(cred.Spec.APIs),
			conditionCell(cred, iamv1alpha1.ConditionActive),
			conditionCell(cred, iamv1alpha1.ConditionReady),
			ago(cred.Status.LastUsedTime, now),
			orNone(cred.Status.LastUsedAddress),
			age(cred.CreationTimestamp, now),
		}
		if withNamespace {
			cells = append([]string{cred.Namespace}, cells...)
		}
		row(t, cells...)
	}
	return t.Flush()
}

// grantList prints the grants as "api:permission,api:permission".
func grantList(grants []iamv1alpha1.APIGrant) string {
	parts := make([]string, len(grants))
	for i, g := range grants {
		parts[i] = g.Name + ":" + g.Permission
	}
	return orNone(strings.Join(parts, ","))
}

// conditionCell prints a condition's status, with its reason when it is not True
// ("False (Inactive)"), or "Unknown" when the operator has not written it yet.
func conditionCell(cred *iamv1alpha1.APICredential, typ string) string {
	c := meta.FindStatusCondition(cred.Status.Conditions, typ)
	if c == nil {
		return "Unknown"
	}
	if c.Status == "True" || c.Reason == "" {
		return string(c.Status)
	}
	return fmt.Sprintf("%s (%s)", c.Status, c.Reason)
}
