// Package cli is keysmith's kubectl plugin, `kubectl keysmith` (DESIGN §6): one file per
// command, and the helpers they share (the cluster client and namespace in client.go,
// one-line errors in errors.go, tables and -o json|yaml in output.go, waiting on
// conditions in wait.go, the GitOps rule in gitops.go).
package cli

import (
	"context"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Streams are the standard streams a command reads and writes (kubectl's IOStreams).
type Streams = genericiooptions.IOStreams

// commandName is how users type the plugin; kubectl runs the binary kubectl-keysmith.
const commandName = "kubectl keysmith"

// fieldManager is the field manager of every write the plugin makes, so managedFields
// tell a person's change with the plugin from GitOps appliers and the operator.
const fieldManager = "kubectl-keysmith"

// commands builds every subcommand of the root; each command's file adds its builder
// with registerCommand from an init function, so that commands are added without
// editing this file.
var commands []func(*env) *cobra.Command

// registerCommand adds a subcommand builder to the root command.
func registerCommand(build func(*env) *cobra.Command) { commands = append(commands, build) }

// NewRootCommand returns the `kubectl keysmith` command with every subcommand, its
// kubectl flags (-n, --context, --kubeconfig, …) bound to its persistent flags. Nothing
// talks to a cluster until a command runs.
func NewRootCommand(streams Streams) *cobra.Command {
	return newRootCommand(newEnv(streams, genericclioptions.NewConfigFlags(true)))
}

// newRootCommand builds the root for e, whose flags it binds (tests pass an env with a
// fake client).
func newRootCommand(e *env) *cobra.Command {
	streams := e.streams
	root := &cobra.Command{
		Use:   "kubectl-keysmith",
		Short: "Manage keysmith API credentials: create, list, rotate, deactivate and delete them",
		Long: `kubectl keysmith is the API Credentials screen of keysmith as a kubectl plugin.

It creates APICredentials and shows their secret once, lists and explains them,
rotates, deactivates, activates and deletes them, exchanges them for access tokens and
asks a token server what they may do. Credentials applied by Argo CD or Flux are not
changed live without --force: the plugin prints the change to make in Git instead.`,
		Example: `  # Create a credential for the Profile API and show its secret once
  kubectl keysmith create ci-bot --api profile-api:read-only

  # List the credentials of every namespace
  kubectl keysmith list -A

  # Explain one: grants, scope, secret versions, next deadline, events
  kubectl keysmith status ci-bot -n team-a`,
		Annotations:       map[string]string{cobra.CommandDisplayNameAnnotation: commandName},
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		Args:              noArgs,
		RunE:              func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SetFlagErrorFunc(flagError)
	e.flags.AddFlags(root.PersistentFlags())
	registerFlagCompletions(root, e)
	for _, build := range commands {
		root.AddCommand(build(e))
	}
	root.InitDefaultHelpCmd()
	for _, c := range root.Commands() {
		if c.Name() == "help" {
			c.Example = "  kubectl keysmith help create\n  kubectl keysmith create --help"
		}
	}
	return root
}

// Main runs the plugin with args (without the program name) and returns its exit code:
// 0 on success, 1 with one line `error: <what failed>: <what to do>` on stderr otherwise.
// SIGINT and SIGTERM cancel the command's context.
func Main(args []string, streams Streams) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := NewRootCommand(streams)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		printError(streams.ErrOut, err)
		return 1
	}
	return 0
}

// CompletionArgs turns the words kubectl passes to the kubectl_complete-keysmith helper
// into the arguments of Main: cobra's hidden __complete command followed by the words.
func CompletionArgs(words []string) []string {
	if len(words) > 0 && slices.Contains([]string{cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd}, words[0]) {
		return words
	}
	return append([]string{cobra.ShellCompRequestCmd}, words...)
}

// noArgs refuses arguments for a command that takes none, naming the unknown command
// (the root) or the stray argument.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if !cmd.HasParent() {
		return userError("unknown command \""+args[0]+"\"", "see '"+commandName+" --help' for the commands")
	}
	return userError(cmd.CommandPath()+" takes no arguments, got \""+args[0]+"\"", "see '"+cmd.CommandPath()+" --help'")
}

// exactlyOneName accepts one argument, the credential's name.
func exactlyOneName(cmd *cobra.Command, args []string) error {
	switch len(args) {
	case 1:
		return nil
	case 0:
		return userError(cmd.CommandPath()+" needs the credential's name", "see '"+cmd.CommandPath()+" --help'")
	default:
		return userError(cmd.CommandPath()+" takes one credential name, got "+quoteList(args), "see '"+cmd.CommandPath()+" --help'")
	}
}

// flagError turns pflag's parse errors into a one-line error pointing at --help.
func flagError(cmd *cobra.Command, err error) error {
	return userError(err.Error(), "see '"+cmd.CommandPath()+" --help'")
}
