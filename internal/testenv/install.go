package testenv

import (
	"context"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// InstallShipped creates what the processes of a test need to run as their service
// accounts with exactly the shipped permissions: the namespaces (the operator's, system,
// first), every resource of config/rbac's kustomization (the manager's RBAC, placed in
// system), the token server's RBAC (config/token-server/rbac.yaml), the status policy
// (config/policy) and the sample catalog (config/samples).
func InstallShipped(ctx context.Context, c client.Client, system string, namespaces ...string) error {
	for _, ns := range append([]string{system}, namespaces...) {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	root := RepoRoot()
	data, err := os.ReadFile(filepath.Join(root, "config", "rbac", "kustomization.yaml"))
	if err != nil {
		return err
	}
	var kustomization struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(data, &kustomization); err != nil {
		return err
	}
	files := []string{
		filepath.Join("config", "policy", "apicredential-status.yaml"),
		filepath.Join("config", "samples", "iam_v1alpha1_apidefinitions.yaml"),
		filepath.Join("config", "token-server", "rbac.yaml"),
	}
	for _, r := range kustomization.Resources {
		files = append(files, filepath.Join("config", "rbac", r))
	}
	for _, f := range files {
		if err := CreateFromFile(ctx, c, filepath.Join(root, f), system); err != nil {
			return err
		}
	}
	return nil
}
