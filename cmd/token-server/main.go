// Command token-server exchanges keysmith client credentials for short-lived JWT access
// tokens and answers forward-auth and Kubernetes TokenReview requests. Run it as a sidecar
// beside the APIs it protects or as a shared Deployment; replicas are stateless.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

type config struct {
	listen, issuer, namespaces, signingNamespace, signingSecret string
	workspaceHeader, workspacePath, tlsCert, tlsKey             string
	trustedProxies, kubernetesAudiences, reviewClientCA         string
	tokenLifetime, maxTokenLifetime, usageInterval              time.Duration
	revocationInterval                                          time.Duration
	tokenCacheBytes                                             int64
	verifyOnly                                                  bool
	workloadIdentity, workloadIdentityReview                    bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.listen, "listen", ":8080", "address to serve on")
	flag.StringVar(&cfg.issuer, "issuer", "", "the token server's external URL, the \"iss\" of its tokens (required)")
	flag.StringVar(&cfg.namespaces, "namespaces", "", "comma-separated namespaces whose APICredentials to serve; empty for all")
	flag.StringVar(&cfg.signingNamespace, "signing-key-namespace", cmp.Or(os.Getenv("POD_NAMESPACE"), "keysmith-system"), "namespace of the signing key Secret")
	flag.StringVar(&cfg.signingSecret, "signing-key-secret", "keysmith-signing-keys", "name of the signing key Secret")
	flag.DurationVar(&cfg.tokenLifetime, "token-lifetime", 10*time.Minute, "lifetime of access tokens for credentials that set no spec.tokenPolicy.lifetime (at most 24h)")
	flag.DurationVar(&cfg.maxTokenLifetime, "max-token-lifetime", defaultMaxTokenLifetime, "longest lifetime of access tokens: credentials' spec.tokenPolicy.lifetime is capped at it, and tokens claiming a longer life are refused (at least --token-lifetime, at most 24h; default 1h, or --token-lifetime when that is longer and this flag is not given). Keep it the same on every token server sharing the signing keys, and below the manager's --signing-key-retention")
	flag.Int64Var(&cfg.tokenCacheBytes, "token-cache-bytes", tokenserver.DefaultTokenCacheBytes, "bound, in bytes of heap (estimated per entry), of the cache of verified access tokens; keep it well under the container's memory limit")
	flag.DurationVar(&cfg.usageInterval, "usage-interval", 30*time.Second, "how often usage (last used time and address) is written to status")
	flag.DurationVar(&cfg.revocationInterval, "revocation-interval", 250*time.Millisecond, "how often tokens revoked here (POST /oauth2/revoke) are written to status.revokedTokens, from which every other replica refuses them")
	flag.StringVar(&cfg.workspaceHeader, "workspace-header", "X-Keysmith-Workspace", "request header naming the workspace of a forward-auth request")
	flag.StringVar(&cfg.workspacePath, "workspace-path", "", "regular expression whose first group extracts the workspace from the original path, e.g. ^/workspaces/([^/]+)")
	flag.BoolVar(&cfg.verifyOnly, "verify-only", false, "serve everything but the token endpoint, from the public keys of the ConfigMap <signing-key-secret>-public: for sidecars, which then hold no private key and need no access to the signing key Secret")
	flag.StringVar(&cfg.trustedProxies, "trusted-proxies", "127.0.0.0/8,::1/128", "comma-separated CIDRs of proxies whose X-Forwarded-For is believed (nginx beside the server, your ingress); the client address drives rate limiting and lastUsedAddress")
	flag.StringVar(&cfg.kubernetesAudiences, "kubernetes-audiences", "", "comma-separated audiences for TokenReviews that name none (an API server without --api-audiences); empty: such reviews authenticate no one. Reviews that name audiences are decided for those")
	flag.BoolVar(&cfg.workloadIdentity, "workload-identity", true, "serve the JWT-bearer grant (RFC 7523 §2.1) for credentials with spec.workloadIdentity: projected ServiceAccount tokens are verified against the API server's service-account issuer keys (/.well-known/openid-configuration, /openid/v1/jwks), read at start and refreshed")
	flag.BoolVar(&cfg.workloadIdentityReview, "workload-identity-review", false, "also ask the API server (a TokenReview) about every projected ServiceAccount token before exchanging it: a deleted Pod's token is refused (within the API server's 10s cache) instead of being accepted until its exp; the grant then fails while the API server is unreachable")
	flag.StringVar(&cfg.tlsCert, "tls-cert-file", "", "serve HTTPS with this certificate (with --tls-key-file)")
	flag.StringVar(&cfg.tlsKey, "tls-key-file", "", "private key of --tls-cert-file")
	flag.StringVar(&cfg.reviewClientCA, "tokenreview-client-ca-file", "", "PEM CA bundle: answer TokenReviews only from clients whose TLS client certificate chains to it (the API server's, from its webhook kubeconfig); others get 403. Needs --tls-cert-file. Empty: any client that reaches the endpoint may ask for reviews")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	cfg.maxTokenLifetime = maxTokenLifetime(cfg, flagSet("max-token-lifetime"))
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	if err := run(ctrl.SetupSignalHandler(), cfg); err != nil {
		ctrl.Log.Error(err, "token server stopped")
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	if cfg.issuer == "" {
		return errors.New("--issuer is required")
	}
	if len(cfg.issuer) > tokenserver.MaxIssuerLength {
		return fmt.Errorf("--issuer is longer than %d characters", tokenserver.MaxIssuerLength)
	}
	if cfg.tokenCacheBytes <= 0 {
		return errors.New("--token-cache-bytes must be positive")
	}
	if cfg.tokenLifetime <= 0 || cfg.tokenLifetime > 24*time.Hour {
		return errors.New("--token-lifetime must be between 1s and 24h")
	}
	if cfg.maxTokenLifetime < cfg.tokenLifetime || cfg.maxTokenLifetime > 24*time.Hour {
		return fmt.Errorf("--max-token-lifetime must be between --token-lifetime (%s) and 24h", cfg.tokenLifetime)
	}
	if (cfg.tlsCert == "") != (cfg.tlsKey == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	var reviewCAs *tokenserver.CAFile
	if cfg.reviewClientCA != "" {
		if cfg.tlsCert == "" {
			return errors.New("--tokenreview-client-ca-file needs --tls-cert-file: client certificates come over TLS")
		}
		var err error
		if reviewCAs, err = tokenserver.NewCAFile(cfg.reviewClientCA, ctrl.Log.WithName("token-server").WithName("tokenreview-ca")); err != nil {
			return fmt.Errorf("--tokenreview-client-ca-file: %w", err)
		}
	}
	var wsPath *regexp.Regexp
	if cfg.workspacePath != "" {
		var err error
		if wsPath, err = regexp.Compile(cfg.workspacePath); err != nil {
			return errors.New("--workspace-path: " + err.Error())
		}
		if err := tokenserver.CheckWorkspacePath(wsPath); err != nil {
			return errors.New("--workspace-path: " + err.Error())
		}
	}
	var proxies []netip.Prefix
	for _, c := range strings.Split(cfg.trustedProxies, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("--trusted-proxies: %q is not a CIDR: %w", c, err)
		}
		proxies = append(proxies, p)
	}
	if proxies == nil {
		proxies = []netip.Prefix{} // trust nobody
	}
	var kubeAudiences []string
	for a := range strings.SplitSeq(cfg.kubernetesAudiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			kubeAudiences = append(kubeAudiences, a)
		}
	}
	var namespaces []string
	if cfg.namespaces != "" {
		namespaces = strings.Split(cfg.namespaces, ",")
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := iamv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	restCfg := ctrl.GetConfigOrDie()
	var saIssuer *tokenserver.ServiceAccountIssuer
	if cfg.workloadIdentity && !cfg.verifyOnly { // a verify-only sidecar has no token endpoint
		var err error
		if saIssuer, err = tokenserver.NewServiceAccountIssuer(restCfg, nil); err != nil {
			return fmt.Errorf("--workload-identity: %w", err)
		}
		if cfg.workloadIdentityReview {
			cs, err := kubernetes.NewForConfig(restCfg)
			if err != nil {
				return fmt.Errorf("--workload-identity-review: %w", err)
			}
			saIssuer.TokenReviews = cs.AuthenticationV1().TokenReviews()
		}
		log := ctrl.Log.WithName("token-server").WithName("service-account-issuer")
		if err := saIssuer.Refresh(ctx); err != nil {
			log.Error(err, "reading the service-account issuer keys; the jwt-bearer grant refuses assertions until a refresh succeeds")
		}
		go saIssuer.Run(ctx, func(err error) { log.Error(err, "refreshing the service-account issuer keys") })
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"}, // served on --listen
		Cache:   tokenserver.CacheOptions(namespaces, cfg.signingNamespace, cfg.signingSecret, cfg.verifyOnly),
	})
	if err != nil {
		return err
	}
	opts := tokenserver.Options{
		Issuer:              cfg.issuer,
		TokenLifetime:       cfg.tokenLifetime,
		MaxTokenLifetime:    cfg.maxTokenLifetime,
		TokenCacheBytes:     cfg.tokenCacheBytes,
		WorkspaceHeader:     cfg.workspaceHeader,
		WorkspacePath:       wsPath,
		TrustedProxies:      proxies,
		KubernetesAudiences: kubeAudiences,
		VerifyOnly:          cfg.verifyOnly,
		RevocationInterval:  cfg.revocationInterval,
		WorkloadIdentity:    saIssuer,
		Registry:            newRegistry(),
		Log:                 ctrl.Log.WithName("token-server"),
	}
	if reviewCAs != nil {
		opts.ReviewClientCAs = reviewCAs.CertPool
		if err := mgr.Add(reviewCAs); err != nil { // read again when the file changes
			return err
		}
	}
	srv, err := tokenserver.Setup(ctx, mgr, opts, cfg.usageInterval)
	if err != nil {
		return err
	}
	var certs *certwatcher.CertWatcher
	if cfg.tlsCert != "" {
		// Reloaded when the files change (cert-manager renewals), without a restart.
		if certs, err = certwatcher.New(cfg.tlsCert, cfg.tlsKey); err != nil {
			return fmt.Errorf("--tls-cert-file/--tls-key-file: %w", err)
		}
		if err := mgr.Add(certs); err != nil {
			return err
		}
	}
	if err := mgr.Add(serve(cfg, srv.Handler(), certs)); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// defaultMaxTokenLifetime is --max-token-lifetime's default: the longest a credential's
// spec.tokenPolicy.lifetime gets without the operator of the token server opting in.
const defaultMaxTokenLifetime = time.Hour

// maxTokenLifetime is --max-token-lifetime: as given when explicit (run refuses it below
// --token-lifetime), else the default raised to --token-lifetime, so that a deployment
// that runs a --token-lifetime over 1h keeps starting after an upgrade.
func maxTokenLifetime(cfg config, explicit bool) time.Duration {
	if explicit {
		return cfg.maxTokenLifetime
	}
	return max(cfg.maxTokenLifetime, cfg.tokenLifetime)
}

// flagSet reports whether the named flag was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// newRegistry returns the registry served on /metrics: the token server's metrics, which
// tokenserver.New registers, and the Go runtime's and the process's (go_memstats_*,
// go_gc_*, process_resident_memory_bytes...), by which heap and memory are watched.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serve runs the HTTP(S) server until the manager stops, then drains it. With certs it
// serves TLS 1.2+ with the watcher's current certificate.
func serve(cfg config, h http.Handler, certs *certwatcher.CertWatcher) manager.RunnableFunc {
	return func(ctx context.Context) error {
		hs := tokenserver.NewHTTPServer(cfg.listen, h)
		ln, err := net.Listen("tcp", cfg.listen)
		if err != nil {
			return err
		}
		errc := make(chan error, 1)
		go func() {
			if certs != nil {
				hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate}
				if cfg.reviewClientCA != "" {
					tokenserver.ReviewTLSConfig(hs.TLSConfig)
				}
				errc <- hs.ServeTLS(ln, "", "")
			} else {
				errc <- hs.Serve(ln)
			}
		}()
		ctrl.Log.Info("token server listening", "address", ln.Addr().String(), "issuer", cfg.issuer)
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return hs.Shutdown(shutdownCtx)
		}
	}
}
