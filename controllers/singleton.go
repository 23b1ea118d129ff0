package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// singletonCache returns a cache of its own, added to mgr, that holds in namespace only
// the objects named in names (one name per type), for a controller of one object.
func singletonCache(mgr ctrl.Manager, namespace string, names map[client.Object]string) (cache.Cache, error) {
	byObject := make(map[client.Object]cache.ByObject, len(names))
	for obj, name := range names {
		byObject[obj] = cache.ByObject{Field: fields.OneTermEqualSelector("metadata.name", name)}
	}
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme:            mgr.GetScheme(),
		Mapper:            mgr.GetRESTMapper(),
		DefaultNamespaces: map[string]cache.Config{namespace: {}},
		ByObject:          byObject,
	})
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(c); err != nil {
		return nil, err
	}
	return c, nil
}

// completeSingleton registers r as the controller named name of the one object key: it
// reconciles key once at start (the object may not exist yet) and again whenever one of
// objs changes in c.
func completeSingleton(mgr ctrl.Manager, name string, c cache.Cache, key client.ObjectKey, r reconcile.Reconciler, objs ...client.Object) error {
	req := reconcile.Request{NamespacedName: key}
	b := ctrl.NewControllerManagedBy(mgr).Named(name)
	for _, obj := range objs {
		b = b.WatchesRawSource(source.Kind(c, obj, handler.EnqueueRequestsFromMapFunc(
			func(context.Context, client.Object) []reconcile.Request { return []reconcile.Request{req} })))
	}
	return b.WatchesRawSource(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(req)
		return nil
	})).Complete(r)
}
