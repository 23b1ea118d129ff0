// Command kubectl-keysmith is keysmith's kubectl plugin: `kubectl keysmith create|list|
// status|rotate|deactivate|activate|delete|token|check|apis|completion|version` once the
// binary is on PATH (DESIGN §6, docs/cli.md).
package main

import (
	"os"

	"github.com/keysmith-dev/keysmith/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.Streams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}))
}
