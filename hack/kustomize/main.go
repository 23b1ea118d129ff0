// Command kustomize prints `kustomize build DIR`: the kustomization in DIR rendered by
// sigs.k8s.io/kustomize/api/krusty, the library the kustomize CLI and `kubectl kustomize`
// are built on, pinned by go.mod. `make build-installer` renders config/default with it
// into dist/install.yaml, so that neither CI nor a developer needs a kustomize or kubectl
// found on the machine.
//
//	go run ./hack/kustomize DIR > out.yaml
//
// The options are krusty's defaults except the resource order: like the kustomize CLI
// (whose --reorder defaults to "legacy" unless the kustomization sets sortOptions), the
// output lists Namespaces and CRDs before the objects that need them, and webhook
// configurations last, so that `kubectl apply -f` of the file succeeds in one pass.
// Errors go to stderr, with exit status 1.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run ./hack/kustomize DIR")
		os.Exit(1)
	}
	out, err := build(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "kustomize build %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	if _, err := os.Stdout.Write(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// build renders the kustomization in dir from the file system, with a first comment line
// naming dir (as given, cleaned) so that a reader of the output knows it is generated.
func build(dir string) ([]byte, error) {
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionUnspecified
	resources, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, err
	}
	yaml, err := resources.AsYaml()
	if err != nil {
		return nil, err
	}
	return append([]byte(header(dir)), yaml...), nil
}

// header is the comment line build puts first.
func header(dir string) string {
	return "# Rendered from " + filepath.ToSlash(filepath.Clean(dir)) + " by hack/kustomize (make build-installer); do not edit.\n"
}
