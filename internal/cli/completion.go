package cli

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// completionTimeout bounds the cluster calls of one <TAB>, so an unreachable cluster
// never hangs the shell.
const completionTimeout = 5 * time.Second

func init() { registerCommand(newCompletionCommand) }

func newCompletionCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print the shell completion script of kubectl-keysmith",
		Long: `Print the completion script of kubectl-keysmith for a shell. Source it to complete
commands, flags, credential names (from the namespace of -n) and API names (for --api,
API: then the API's permissions after the colon).

For "kubectl keysmith <TAB>" (kubectl 1.26 and later), put the kubectl_complete-keysmith
binary next to kubectl-keysmith on PATH: kubectl's own completion then asks it.`,
		Example: `  # bash, this shell only
  source <(kubectl keysmith completion bash)

  # zsh, every shell
  kubectl keysmith completion zsh > "${fpath[1]}/_kubectl-keysmith"

  # fish
  kubectl keysmith completion fish > ~/.config/fish/completions/kubectl-keysmith.fish

  # PowerShell
  kubectl keysmith completion powershell | Out-String | Invoke-Expression`,
		ValidArgs:             []string{"bash", "zsh", "fish", "powershell"},
		DisableFlagsInUseLine: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || !slices.Contains(cmd.ValidArgs, args[0]) {
				return userError(cmd.CommandPath()+" needs one shell: bash, zsh, fish or powershell", "see '"+cmd.CommandPath()+" --help'")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), e.out()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			default:
				return root.GenPowerShellCompletionWithDesc(out)
			}
		},
	}
	return cmd
}

// completionContext is the context of one completion's cluster calls.
func completionContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, completionTimeout)
}

// completeCredentialNames completes the first argument with the names of the
// credentials in the namespace (-n, else the kubeconfig's), described by display name.
func completeCredentialNames(e *env) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := completionContext(cmd)
		defer cancel()
		names, err := credentialNames(ctx, e, toComplete)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

func credentialNames(ctx context.Context, e *env, prefix string) ([]cobra.Completion, error) {
	c, err := e.Client()
	if err != nil {
		return nil, err
	}
	ns, err := e.Namespace()
	if err != nil {
		return nil, err
	}
	list := &iamv1alpha1.APICredentialList{}
	if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var out []cobra.Completion
	for _, cred := range list.Items {
		if strings.HasPrefix(cred.Name, prefix) {
			out = append(out, cobra.CompletionWithDesc(cred.Name, printable(cred.Spec.DisplayName)))
		}
	}
	return out, nil
}

// apiDefinitions lists the catalog, sorted by name.
func apiDefinitions(ctx context.Context, e *env) ([]iamv1alpha1.APIDefinition, error) {
	c, err := e.Client()
	if err != nil {
		return nil, err
	}
	list := &iamv1alpha1.APIDefinitionList{}
	if err := c.List(ctx, list); err != nil {
		return nil, err
	}
	slices.SortFunc(list.Items, func(a, b iamv1alpha1.APIDefinition) int { return strings.Compare(a.Name, b.Name) })
	return list.Items, nil
}

// registerAPINameCompletion completes flag with the names of the catalog's APIs.
func registerAPINameCompletion(e *env, cmd *cobra.Command, flag string) {
	registerCatalogCompletion(e, cmd, flag, func(defs []iamv1alpha1.APIDefinition, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return apiNameCompletions(defs, toComplete), cobra.ShellCompDirectiveNoFileComp
	})
}

// registerGrantCompletion completes flag, an API:PERMISSION value: first the catalog's
// API names followed by a colon (no space, so the permission follows), then, after the
// colon, that API's permissions with their methods.
func registerGrantCompletion(e *env, cmd *cobra.Command, flag string) {
	registerCatalogCompletion(e, cmd, flag, grantCompletions)
}

// registerCatalogCompletion completes flag with complete's answer from the catalog's
// APIDefinitions, read when the completion is asked for.
func registerCatalogCompletion(e *env, cmd *cobra.Command, flag string, complete func([]iamv1alpha1.APIDefinition, string) ([]cobra.Completion, cobra.ShellCompDirective)) {
	_ = cmd.RegisterFlagCompletionFunc(flag, func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx, cancel := completionContext(cmd)
		defer cancel()
		defs, err := apiDefinitions(ctx, e)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		return complete(defs, toComplete)
	})
}

func apiNameCompletions(defs []iamv1alpha1.APIDefinition, prefix string) []cobra.Completion {
	var out []cobra.Completion
	for _, d := range defs {
		if strings.HasPrefix(d.Name, prefix) {
			out = append(out, cobra.CompletionWithDesc(d.Name, printable(d.Spec.DisplayName)))
		}
	}
	return out
}

// grantCompletions completes an API:PERMISSION value typed so far.
func grantCompletions(defs []iamv1alpha1.APIDefinition, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	api, perm, hasColon := strings.Cut(toComplete, ":")
	if !hasColon {
		var out []cobra.Completion
		for _, d := range defs {
			if strings.HasPrefix(d.Name, api) {
				out = append(out, cobra.CompletionWithDesc(d.Name+":", printable(d.Spec.DisplayName)))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	}
	var out []cobra.Completion
	for _, d := range defs {
		if d.Name != api {
			continue
		}
		for _, p := range d.Spec.Permissions {
			if strings.HasPrefix(p.Name, perm) {
				out = append(out, cobra.CompletionWithDesc(api+":"+p.Name, printable(strings.Join(p.Methods, ","))))
			}
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// registerFlagCompletions completes the root's -n with the cluster's namespaces and
// --context, --cluster and --user with the kubeconfig's.
func registerFlagCompletions(root *cobra.Command, e *env) {
	_ = root.RegisterFlagCompletionFunc("namespace", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx, cancel := completionContext(cmd)
		defer cancel()
		c, err := e.Client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		list := &corev1.NamespaceList{}
		if err := c.List(ctx, list); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		var out []cobra.Completion
		for _, ns := range list.Items {
			if strings.HasPrefix(ns.Name, toComplete) {
				out = append(out, ns.Name)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
	kubeconfig := func(pick func(ns, ctx, cluster, user string) string) cobra.CompletionFunc {
		return func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			cfg, err := e.flags.ToRawKubeConfigLoader().RawConfig()
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
			}
			seen := map[string]bool{}
			var out []cobra.Completion
			for name, c := range cfg.Contexts {
				v := pick(c.Namespace, name, c.Cluster, c.AuthInfo)
				if v != "" && !seen[v] && strings.HasPrefix(v, toComplete) {
					seen[v] = true
					out = append(out, v)
				}
			}
			slices.Sort(out)
			return out, cobra.ShellCompDirectiveNoFileComp
		}
	}
	_ = root.RegisterFlagCompletionFunc("context", kubeconfig(func(_, ctx, _, _ string) string { return ctx }))
	_ = root.RegisterFlagCompletionFunc("cluster", kubeconfig(func(_, _, cluster, _ string) string { return cluster }))
	_ = root.RegisterFlagCompletionFunc("user", kubeconfig(func(_, _, _, user string) string { return user }))
}

// describeMethods prints a permission's methods, "*" as "all methods".
func describeMethods(methods []string) string {
	if slices.Contains(methods, iamv1alpha1.MethodAny) {
		return "all methods"
	}
	return strings.Join(methods, ", ")
}
