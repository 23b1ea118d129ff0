package tokenserver

import (
	"crypto/x509"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// Options configure a Server.
type Options struct {
	// Issuer is the token server's URL: the "iss" of its tokens and the base of the
	// endpoint URLs it advertises (RFC 8414), e.g. "https://keysmith.example.com".
	Issuer string
	// TokenLifetime is how long access tokens live. Default 10 minutes.
	TokenLifetime time.Duration
	// MaxTokenLifetime is the longest life (exp - iat) a token may claim to be accepted,
	// and the cap of a credential's spec.tokenPolicy.lifetime: the longest lifetime any
	// token server sharing the keys issues. Default, and at least, TokenLifetime.
	MaxTokenLifetime time.Duration
	// WorkspaceHeader names the request header that carries the workspace a forward-auth
	// request acts in. Default "X-Keysmith-Workspace".
	WorkspaceHeader string
	// WorkspacePath, when set, extracts the workspace from the original URI's path: its
	// first capture group, e.g. `^/workspaces/([^/]+)`. Original paths not in canonical
	// form are then refused (originalRequest).
	WorkspacePath *regexp.Regexp
	// TokenCacheBytes bounds the verified-token cache by an estimate of the heap its
	// entries hold. Default 64 MiB (DefaultTokenCacheBytes).
	TokenCacheBytes int64
	// FailureRate and FailureBurst bound failed authentications per client and address
	// and per address. Default 1 per second with a burst of 10.
	FailureRate  rate.Limit
	FailureBurst int
	// VerifyOnly serves everything but the token endpoint, from public keys only
	// (SetVerifyKeys): the mode for sidecars, which then never hold a private key.
	VerifyOnly bool
	// TrustedProxies are the proxies whose X-Forwarded-For is believed when they are the
	// TCP peer (nginx beside the token server, an ingress). Default: loopback only.
	TrustedProxies []netip.Prefix
	// KubernetesAudiences are the audiences a TokenReview that names none is decided
	// for (an API server without --api-audiences). Empty: such reviews authenticate no
	// one. Reviews that name audiences are decided for those.
	KubernetesAudiences []string
	// ReviewClientCAs, when set, admits a TokenReview only from a client that presents,
	// over TLS, a certificate for client authentication that chains to one of them (the
	// API server's, given by the client-certificate of its webhook kubeconfig): others
	// get 403 before the body is read, and no token is verified for them. The server
	// must then be served over TLS asking for client certificates (ReviewTLSConfig).
	// It is asked on every review, so a CAFile's CertPool follows its file. Nil: any
	// client that reaches the endpoint may ask for reviews.
	ReviewClientCAs func() *x509.CertPool
	// RevocationInterval is how often Setup's RevocationWriter copies revocations into
	// status.revokedTokens, which is how other replicas learn them. Default 250ms.
	RevocationInterval time.Duration
	// WorkloadIdentity verifies the ServiceAccount tokens of the JWT-bearer grant (RFC
	// 7523 §2.1, spec.workloadIdentity); nil: the grant is unsupported.
	WorkloadIdentity *ServiceAccountIssuer
	// Usage records that a credential was used; nil records nothing.
	Usage UsageRecorder
	// Clock is the time source. Default the real clock.
	Clock clock.PassiveClock
	// Log receives the server's logs (never a secret or a token).
	Log logr.Logger
	// Registry registers the metrics; default a new registry served on /metrics.
	Registry *prometheus.Registry

	// Derived by New (originalRequest skips the checks that need them when they are unset):
	// workspaceHeaderKey is WorkspaceHeader in canonical form; workspacePathFold is
	// WorkspacePath matching in any letter case.
	workspaceHeaderKey string
	workspacePathFold  *regexp.Regexp
}

// UsageRecorder is told every time a credential is accepted.
type UsageRecorder interface {
	Record(c *Credential, addr string, at time.Time)
}

// DefaultTokenCacheBytes is the default bound of the verified-token cache: a quarter of
// the 256 MiB memory limit the shipped Deployment sets.
const DefaultTokenCacheBytes = 64 << 20

// maxBodyBytes caps request bodies.
const maxBodyBytes = 64 << 10

// maxTokenBodyBytes caps the bodies that carry a token (introspection, TokenReview): room
// for the largest token and the rest of the request.
const maxTokenBodyBytes = maxTokenBytes + maxBodyBytes

// Server serves the token server's endpoints. Create it with New.
type Server struct {
	opts     Options
	store    *Store
	keys     keys
	tokens   *tokenCache
	limiter  *failureLimiter
	metrics  *metrics
	ready    atomic.Bool
	metadata []byte
	mux      *http.ServeMux
	handler  http.Handler

	// badTokens are tokens that failed verification at TokenReview.
	badTokens *negativeCache
	// revocations are the tokens this server revoked (RFC 7009), until they expire.
	revocations *revocations
}

// deriveWorkspace defaults WorkspaceHeader and fills in what originalRequest derives from
// the workspace options: the header's canonical key and the case-folded pattern.
func (o *Options) deriveWorkspace() {
	if o.WorkspaceHeader == "" {
		o.WorkspaceHeader = "X-Keysmith-Workspace"
	}
	o.workspaceHeaderKey = http.CanonicalHeaderKey(o.WorkspaceHeader)
	o.workspacePathFold = nil
	if o.WorkspacePath != nil {
		o.workspacePathFold, _ = regexp.Compile("(?i)" + o.WorkspacePath.String())
	}
}

// New returns a server over the store. It answers 503 on /readyz until SetReady and on
// /oauth2/token until SetKeys has given it a signing key.
func New(store *Store, opts Options) *Server {
	opts.Issuer = strings.TrimSuffix(opts.Issuer, "/")
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = 10 * time.Minute
	}
	opts.deriveWorkspace()
	if opts.MaxTokenLifetime < opts.TokenLifetime {
		opts.MaxTokenLifetime = opts.TokenLifetime
	}
	if opts.TokenCacheBytes <= 0 {
		opts.TokenCacheBytes = DefaultTokenCacheBytes
	}
	if opts.RevocationInterval <= 0 {
		opts.RevocationInterval = 250 * time.Millisecond
	}
	if opts.FailureRate <= 0 {
		opts.FailureRate, opts.FailureBurst = 1, 10
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.TrustedProxies == nil {
		opts.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	s := &Server{
		opts:    opts,
		store:   store,
		tokens:  newTokenCache(opts.TokenCacheBytes),
		limiter: newFailureLimiter(opts.FailureRate, opts.FailureBurst),
		metrics: newMetrics(opts.Registry, store),
		mux:     http.NewServeMux(),
	}
	s.badTokens = newNegativeCache(negativeCacheSize, negativeCacheTTL)
	s.revocations = newRevocations(iamv1alpha1.MaxRevokedTokens)
	store.onConflict = func(clientID string, keys []types.NamespacedName) {
		opts.Log.Error(nil, "two APICredentials claim one client ID; refusing both", "clientID", clientID, "credentials", keys)
	}
	s.metadata = s.buildMetadata()
	s.routes()
	return s
}

func (s *Server) routes() {
	m := s.metrics
	if !s.opts.VerifyOnly {
		s.mux.HandleFunc("POST /oauth2/token", m.instrument("token", s.token))
		s.mux.HandleFunc("POST /oauth2/revoke", m.instrument("revoke", s.revoke))
	}
	s.mux.HandleFunc("POST /oauth2/introspect", m.instrument("introspect", s.introspect))
	s.mux.HandleFunc("GET /.well-known/jwks.json", s.handleJWKS)
	s.mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.handleMetadata)
	s.mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", m.instrument("tokenreview", s.tokenReview))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeBody(w, http.StatusOK, contentTypeText, nil, okBody)
	})
	s.mux.HandleFunc("GET /readyz", s.handleReady)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{}))

	// Forward-auth requests bypass the mux's path cleaning: a proxy must get an allow or a
	// deny, never a redirect, whatever path a client sent through it.
	authz := m.instrument("authz", s.authz)
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/authz/") {
			authz(w, r)
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// Handler returns the HTTP handler of all endpoints.
func (s *Server) Handler() http.Handler { return s.handler }

// SetReady marks the server ready: its caches have synced.
func (s *Server) SetReady() { s.ready.Store(true) }

func (s *Server) handleReady(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() || s.keys.ring.Load() == nil {
		writeErr(w, temporarilyUnavailable("caches not synced or no signing keys yet"))
		return
	}
	writeBody(w, http.StatusOK, contentTypeText, nil, okBody)
}

// NewHTTPServer returns an http.Server for handler with the timeouts and limits a server
// exposed to untrusted clients needs.
func NewHTTPServer(addr string, handler http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    maxTokenBytes + 16<<10, // the largest token in Authorization, and the rest
	}
}

// SweepLimiter forgets failure budgets that have refilled; call it periodically.
func (s *Server) SweepLimiter() { s.limiter.sweep(s.opts.Clock.Now()) }
