package catalog

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// Account returns the account a credential acts in: spec.scope.account, else the
// account of its namespace (NamespaceAccount). The reconciler shows it in
// status.account; admission compares spec.scope.account with NamespaceAccount to decide
// whether naming it needs `assume`.
func Account(ctx context.Context, r client.Reader, cred *iamv1alpha1.APICredential) (string, error) {
	if a := cred.Spec.Scope.Account; a != "" {
		return a, nil
	}
	return NamespaceAccount(ctx, r, cred.Namespace)
}

// NamespaceAccount returns the namespace's own account: its iam.keysmith.dev/account
// label, else the namespace name ("scope selected for you"). It reads the Namespace as
// metadata only. The error wraps the reader's, so apierrors.IsNotFound works on it.
func NamespaceAccount(ctx context.Context, r client.Reader, namespace string) (string, error) {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := r.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		return "", fmt.Errorf("reading namespace %q: %w", namespace, err)
	}
	if a := ns.GetLabels()[iamv1alpha1.AccountLabel]; a != "" {
		return a, nil
	}
	return namespace, nil
}
