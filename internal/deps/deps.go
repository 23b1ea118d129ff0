//go:build tools

// Package deps pins the modules that issue 12's kubectl plugin imports while it is being
// built (cobra, cli-runtime, pty), so that go mod tidy keeps them meanwhile. It is removed
// once every one of them is imported by real code.
package deps

import (
	_ "github.com/creack/pty"
	_ "github.com/spf13/cobra"
	_ "k8s.io/cli-runtime/pkg/genericclioptions"
	_ "k8s.io/cli-runtime/pkg/printers"
	_ "k8s.io/kubectl/pkg/util/term"
)
