package tokenserver

import (
	"context"
	"time"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Setup wires a token server into a manager whose cache was built with CacheOptions:
// the store fed by informers, the signing keys, the usage reporter (every usageInterval;
// zero disables it), the revocation writer (unless VerifyOnly) and readiness once the cache has synced. The caller serves
// Server.Handler.
func Setup(ctx context.Context, mgr manager.Manager, opts Options, usageInterval time.Duration) (*Server, error) {
	store := NewStore()
	var usage *UsageReporter
	if usageInterval > 0 {
		usage = NewUsageReporter(mgr.GetClient(), usageInterval)
		opts.Usage = usage
	}
	srv := New(store, opts)
	if usage != nil {
		usage.metrics = srv.metrics
		if err := mgr.Add(usage); err != nil {
			return nil, err
		}
	}
	if !opts.VerifyOnly { // revocations (revoke.go) are written to status by the token server
		if err := mgr.Add(NewRevocationWriter(srv, mgr.GetClient(), mgr.GetAPIReader(), srv.opts.RevocationInterval)); err != nil {
			return nil, err
		}
	}
	handled, err := Watch(ctx, mgr.GetCache(), store, srv)
	if err != nil {
		return nil, err
	}
	err = mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if !mgr.GetCache().WaitForCacheSync(ctx) || !toolscache.WaitForCacheSync(ctx.Done(), handled) {
			return nil
		}
		srv.SetReady()
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				srv.SweepLimiter()
			}
		}
	}))
	return srv, err
}
