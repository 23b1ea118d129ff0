package testenv

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
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

// UserKubeconfig adds the user name to env's control plane and writes its kubeconfig to
// dir/<the name's last ':' segment>.kubeconfig (mode 0600), for a process that runs as
// that user (a service account's name: system:serviceaccount:<ns>:<name>).
func UserKubeconfig(env *envtest.Environment, cfg *rest.Config, name, dir string) (string, *envtest.AuthenticatedUser, error) {
	u, err := env.ControlPlane.AddUser(envtest.User{Name: name}, cfg)
	if err != nil {
		return "", nil, err
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, name[strings.LastIndex(name, ":")+1:]+".kubeconfig")
	return path, u, os.WriteFile(path, kc, 0o600)
}
