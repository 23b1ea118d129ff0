// Command kubectl_complete-keysmith is the completion helper kubectl (1.26 and later) runs
// for `kubectl keysmith <TAB>`: kubectl passes the words typed after `kubectl keysmith`,
// and the helper answers them as `kubectl-keysmith __complete <words>` would, in the same
// process (no kubectl-keysmith on PATH needed). Install it next to kubectl-keysmith.
package main

import (
	"os"

	"github.com/keysmith-dev/keysmith/internal/cli"
)

func main() {
	os.Exit(cli.Main(cli.CompletionArgs(os.Args[1:]), cli.Streams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}))
}
