package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// The manager creates a workspace's default credential; it never updates or deletes one.
// +kubebuilder:rbac:groups=iam.keysmith.dev,resources=apicredentials,verbs=create

// Event reasons of the WorkspaceReconciler, on the Namespace.
const (
	// EventDefaultCredentialCreated: the manager created the namespace's default credential.
	EventDefaultCredentialCreated = "DefaultCredentialCreated"
	// EventInvalidDefaultAPIs: the default-apis annotation does not parse; nothing is created.
	EventInvalidDefaultAPIs = "InvalidDefaultAPIs"
	// EventDefaultCredentialRefused: admission refused the default credential's create.
	EventDefaultCredentialRefused = "DefaultCredentialRefused"
)

// WorkspaceReconciler gives every workspace Namespace (label iam.keysmith.dev/workspace,
// annotation iam.keysmith.dev/default-apis) a default APICredential, "primary", with
// exactly the annotation's grants, while the namespace has no APICredential at all. It
// creates and nothing else: a credential that exists, "primary" or another, is never
// updated or deleted, so changing the annotation later changes no credential.
type WorkspaceReconciler struct {
	// Client reads Namespaces and credentials from the cache and creates credentials.
	Client client.Client
	// APIReader reads the namespace's credentials from the API server before a create.
	APIReader client.Reader
	// Recorder emits events on the Namespace.
	Recorder events.EventRecorder
}

// Reconcile creates the default credential of the namespace req.Name if it is a live
// workspace Namespace with a valid annotation and no APICredential, in the cache and
// then on the API server. It writes nothing otherwise.
func (r *WorkspaceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := r.Client.Get(ctx, req.NamespacedName, ns); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	value, ok := workspaceDefaultAPIs(ns)
	if !ok || ns.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	apis, err := iamv1alpha1.ParseDefaultAPIs(value)
	if err != nil {
		r.event(ns, corev1.EventTypeWarning, EventInvalidDefaultAPIs, "CreateDefaultCredential",
			"no default credential created: "+err.Error())
		return ctrl.Result{}, nil
	}
	// The cache first (typed, the informer the APICredential reconciler shares), so that a
	// namespace with credentials costs no API call; then the API server, before the create.
	if has, err := hasCredential(ctx, r.Client, &iamv1alpha1.APICredentialList{}, ns.Name); has || err != nil {
		return ctrl.Result{}, err
	}
	live := &metav1.PartialObjectMetadataList{}
	live.SetGroupVersionKind(iamv1alpha1.GroupVersion.WithKind("APICredentialList"))
	if has, err := hasCredential(ctx, r.APIReader, live, ns.Name); has || err != nil {
		return ctrl.Result{}, err
	}
	cred := &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: iamv1alpha1.DefaultCredentialName},
		Spec:       iamv1alpha1.APICredentialSpec{APIs: apis},
	}
	switch err := r.Client.Create(ctx, cred); {
	case apierrors.IsAlreadyExists(err):
		return ctrl.Result{}, nil
	case apierrors.IsForbidden(err) || apierrors.IsInvalid(err):
		// Admission's answer (a Workspace-level API without workspaces, an annotation
		// changed meanwhile): a person may have to act, and the retry with backoff may pass.
		r.event(ns, corev1.EventTypeWarning, EventDefaultCredentialRefused, "CreateDefaultCredential",
			fmt.Sprintf("creating APICredential %q was refused: %v", cred.Name, err))
		return ctrl.Result{}, fmt.Errorf("creating the default credential of namespace %q: %w", ns.Name, err)
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("creating the default credential of namespace %q: %w", ns.Name, err)
	}
	log.FromContext(ctx).Info("created the default credential", "apis", value)
	r.event(ns, corev1.EventTypeNormal, EventDefaultCredentialCreated, "CreateDefaultCredential",
		fmt.Sprintf("created APICredential %q with the grants of annotation %s: %s", cred.Name, iamv1alpha1.DefaultAPIsAnnotation, value))
	return ctrl.Result{}, nil
}

// hasCredential reports whether namespace holds at least one APICredential, as reader
// sees it, listing into list (an APICredential list, typed or metadata).
func hasCredential(ctx context.Context, reader client.Reader, list client.ObjectList, namespace string) (bool, error) {
	if err := reader.List(ctx, list, client.InNamespace(namespace), client.Limit(1)); err != nil {
		return false, fmt.Errorf("listing the credentials of namespace %q: %w", namespace, err)
	}
	return meta.LenList(list) > 0, nil
}

func (r *WorkspaceReconciler) event(ns client.Object, eventType, reason, action, note string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(ns, nil, eventType, reason, action, "%s", note)
	}
}

// workspaceDefaultAPIs returns the default-apis annotation of a Namespace labelled as a
// workspace, and whether it has both.
func workspaceDefaultAPIs(ns client.Object) (string, bool) {
	if _, ok := ns.GetLabels()[iamv1alpha1.WorkspaceLabel]; !ok {
		return "", false
	}
	value, ok := ns.GetAnnotations()[iamv1alpha1.DefaultAPIsAnnotation]
	return value, ok
}

// SetupWithManager registers the reconciler: it watches the metadata of workspace
// Namespaces (the informer the APICredential reconciler shares) and the deletion of
// APICredentials, mapped to their namespace: nothing else can leave a namespace without
// a credential.
func (r *WorkspaceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	workspaces := predicate.NewPredicateFuncs(func(o client.Object) bool {
		_, ok := workspaceDefaultAPIs(o)
		return ok
	})
	deletions := predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("workspace").
		For(&corev1.Namespace{}, builder.OnlyMetadata, builder.WithPredicates(workspaces)).
		Watches(&iamv1alpha1.APICredential{}, handler.EnqueueRequestsFromMapFunc(
			func(_ context.Context, o client.Object) []reconcile.Request {
				return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.GetNamespace()}}}
			}), builder.WithPredicates(deletions)).
		Complete(r)
}
