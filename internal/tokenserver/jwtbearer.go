package tokenserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
)

// grantJWTBearer is the grant type of RFC 7523 §2.1.
const grantJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// workloadVersion is the "secret version" of tokens issued through the JWT-bearer grant:
// no secret's (versionOf is 12 base64url characters). Such a token also names the
// ServiceAccount whose token was exchanged (Claims.WorkloadServiceAccount, ks_wi) and is
// accepted while that ServiceAccount is listed in the credential's workloadIdentity
// (Credential.acceptsToken), so removing one refuses the tokens it obtained and leaves the
// others' alone. ks_sv stays "wi", so token servers older than ks_wi accept these tokens
// too through a rolling upgrade (they ignore the claim they do not know).
const workloadVersion = "wi"

// assertionInvalid is the description of every refused assertion (RFC 7523 §3.1's
// invalid_grant): the token server says nothing of which check failed.
const assertionInvalid = "the assertion is invalid, expired or not accepted for this client"

// invalidGrant answers a refused JWT-bearer assertion (RFC 7523 §3.1, RFC 6749 §5.2).
func invalidGrant() *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "invalid_grant", description: assertionInvalid}
}

// ServiceAccountIssuer verifies Kubernetes ServiceAccount tokens locally against the
// cluster's service-account issuer: its OIDC discovery document
// (/.well-known/openid-configuration) and key set (/openid/v1/jwks), read from the API
// server through a rest config, cached and refreshed every RefreshInterval. A token
// signed with a key it does not know triggers one refresh at most every MinRefresh, so
// no request costs an API call in the steady state and unknown kids cannot make it hammer
// the API server.
type ServiceAccountIssuer struct {
	client *http.Client
	host   string
	clock  clock.PassiveClock
	// RefreshInterval is how often Run refreshes the key set. Default 5 minutes.
	RefreshInterval time.Duration
	// MinRefresh is the shortest time between two refreshes caused by unknown kids.
	// Default 30 seconds.
	MinRefresh time.Duration
	// Leeway is the clock skew allowed on exp, nbf and iat. Default 30 seconds.
	Leeway time.Duration
	// TokenReviews, when set, also asks the API server (a TokenReview for the audience)
	// about every token that verified locally: only the API server knows that the Pod,
	// Secret or ServiceAccount a bound token names was deleted since, or recreated under
	// another UID. Its refusal, or any error reaching it, refuses the assertion (fail
	// closed): the JWT-bearer grant then depends on the API server, one call per exchange.
	// Nil: the local check only, and a deleted Pod's token is accepted until its exp.
	TokenReviews authnv1client.TokenReviewInterface

	state atomic.Pointer[saIssuerState]

	mu          sync.Mutex // serialises refreshes
	lastRefresh time.Time
}

type saIssuerState struct {
	issuer string
	keys   map[string]any // kid -> public key
}

// saAlgorithms are the algorithms the API server signs ServiceAccount tokens with.
var saAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256}

// NewServiceAccountIssuer returns a verifier for the service-account issuer of the API
// server cfg points at; clk nil is the real clock. Call Refresh (or Run) before use.
func NewServiceAccountIssuer(cfg *rest.Config, clk clock.PassiveClock) (*ServiceAccountIssuer, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	host := cfg.Host
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &ServiceAccountIssuer{client: hc, host: strings.TrimSuffix(host, "/") + cfg.APIPath, clock: clk,
		RefreshInterval: 5 * time.Minute, MinRefresh: 30 * time.Second, Leeway: 30 * time.Second}, nil
}

// Issuer returns the issuer of the discovery document last read ("" before).
func (v *ServiceAccountIssuer) Issuer() string {
	if st := v.state.Load(); st != nil {
		return st.issuer
	}
	return ""
}

// Run refreshes the key set every RefreshInterval until ctx ends; a failed refresh keeps
// the keys it had.
func (v *ServiceAccountIssuer) Run(ctx context.Context, onErr func(error)) {
	t := time.NewTicker(v.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := v.Refresh(ctx); err != nil && onErr != nil {
				onErr(err)
			}
		}
	}
}

// Refresh reads the discovery document and the key set now.
func (v *ServiceAccountIssuer) Refresh(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.refreshLocked(ctx)
}

func (v *ServiceAccountIssuer) refreshLocked(ctx context.Context) error {
	v.lastRefresh = v.clock.Now()
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := v.get(ctx, "/.well-known/openid-configuration", &disc); err != nil {
		return err
	}
	if disc.Issuer == "" {
		return errors.New("service-account issuer discovery: no issuer")
	}
	// The key set is read from the API server itself, whatever host jwks_uri names (it
	// may be an external URL the token server cannot or should not reach): its path is
	// /openid/v1/jwks unless --service-account-jwks-uri names another on the same server.
	path := "/openid/v1/jwks"
	if u, err := url.Parse(disc.JWKSURI); err == nil && u.Path != "" && strings.HasPrefix(u.Path, "/openid/") {
		path = u.Path
	}
	var set jose.JSONWebKeySet
	if err := v.get(ctx, path, &set); err != nil {
		return err
	}
	keys := make(map[string]any, len(set.Keys))
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" || !k.Valid() || !k.IsPublic() {
			continue
		}
		keys[k.KeyID] = k.Key
	}
	if len(keys) == 0 {
		return errors.New("service-account issuer: the key set holds no usable key")
	}
	v.state.Store(&saIssuerState{issuer: disc.Issuer, keys: keys})
	return nil
}

func (v *ServiceAccountIssuer) get(ctx context.Context, path string, into any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.host+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := v.client.Do(req)
	if err != nil {
		return fmt.Errorf("service-account issuer %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("service-account issuer %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("service-account issuer %s: %s", path, resp.Status)
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("service-account issuer %s: %w", path, err)
	}
	return nil
}

// errAssertion is every verification failure; the reason is for tests and logs only.
type errAssertion string

func (e errAssertion) Error() string { return "assertion refused: " + string(e) }

// Verify checks a ServiceAccount token: signed (RS256 or ES256) by a key of the issuer's
// key set, iss the issuer's, aud containing audience, exp present and not passed, nbf
// and iat not in the future (Leeway each), sub "system:serviceaccount:<ns>:<name>". It
// returns the namespace and name.
func (v *ServiceAccountIssuer) Verify(ctx context.Context, token, audience string, now time.Time) (namespace, name string, err error) {
	if len(token) > maxTokenBytes {
		return "", "", errAssertion("too large")
	}
	tok, err := jwt.ParseSigned(token, saAlgorithms)
	if err != nil || len(tok.Headers) != 1 {
		return "", "", errAssertion("not a JWS with an allowed algorithm")
	}
	kid := tok.Headers[0].KeyID
	st := v.state.Load()
	key, ok := lookupKey(st, kid)
	if !ok {
		st = v.refreshForKid(ctx, kid)
		if key, ok = lookupKey(st, kid); !ok {
			return "", "", errAssertion("unknown key")
		}
	}
	var claims jwt.Claims
	if err := tok.Claims(key, &claims); err != nil {
		return "", "", errAssertion("bad signature")
	}
	if claims.Expiry == nil {
		return "", "", errAssertion("no exp")
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: st.issuer, AnyAudience: jwt.Audience{audience}, Time: now}, v.Leeway); err != nil {
		return "", "", errAssertion(err.Error())
	}
	rest, ok := strings.CutPrefix(claims.Subject, "system:serviceaccount:")
	if !ok {
		return "", "", errAssertion("not a ServiceAccount subject")
	}
	namespace, name, ok = strings.Cut(rest, ":")
	if !ok || namespace == "" || name == "" || strings.Contains(name, ":") {
		return "", "", errAssertion("not a ServiceAccount subject")
	}
	if v.TokenReviews != nil {
		if err := v.review(ctx, token, audience, claims.Subject); err != nil {
			return "", "", err
		}
	}
	return namespace, name, nil
}

// review asks the API server whether token is still valid for audience and belongs to
// subject; anything but a yes is a refusal.
func (v *ServiceAccountIssuer) review(ctx context.Context, token, audience, subject string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr, err := v.TokenReviews.Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	switch {
	case err != nil:
		return errAssertion("TokenReview failed: " + err.Error())
	case !tr.Status.Authenticated || tr.Status.User.Username != subject || !slices.Contains(tr.Status.Audiences, audience):
		return errAssertion("refused by the API server's TokenReview")
	}
	return nil
}

func lookupKey(st *saIssuerState, kid string) (any, bool) {
	if st == nil {
		return nil, false
	}
	k, ok := st.keys[kid]
	return k, ok
}

// refreshForKid refreshes the key set for a kid it does not hold, unless another
// refresh happened within MinRefresh (then the kid stays unknown until it is due).
func (v *ServiceAccountIssuer) refreshForKid(ctx context.Context, kid string) *saIssuerState {
	v.mu.Lock()
	defer v.mu.Unlock()
	if st := v.state.Load(); st != nil {
		if _, ok := st.keys[kid]; ok {
			return st // a concurrent refresh brought it
		}
	}
	if !v.lastRefresh.IsZero() && v.clock.Now().Sub(v.lastRefresh) < v.MinRefresh {
		return v.state.Load()
	}
	_ = v.refreshLocked(ctx) // a failure keeps the old keys
	return v.state.Load()
}

// tokenJWTBearer serves grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer (RFC 7523
// §2.1): a pod's projected ServiceAccount token (assertion, audience the token server's
// issuer) for an access token of the credential client_id names, when the token's
// ServiceAccount is one of spec.workloadIdentity.serviceAccounts in the credential's
// namespace. No client secret is taken. Every refusal is the same invalid_grant, counted
// by the failure limiter per client ID and address like a wrong secret.
func (s *Server) tokenJWTBearer(w http.ResponseWriter, r *http.Request, form url.Values) int {
	if s.opts.WorkloadIdentity == nil {
		return writeErr(w, unsupportedGrantType())
	}
	if _, ok := form["client_secret"]; ok || r.Header.Get("Authorization") != "" {
		return writeErr(w, invalidRequest("the jwt-bearer grant takes no client secret: the assertion authenticates the workload"))
	}
	clientID, assertion := form.Get("client_id"), form.Get("assertion")
	if clientID == "" || assertion == "" {
		return writeErr(w, invalidRequest("the jwt-bearer grant needs client_id and assertion"))
	}
	now := s.opts.Clock.Now()
	addr := s.clientAddr(r)
	budget := failureBudget(clientID)
	if wait := s.limiter.blocked(budget, addr, now); wait > 0 {
		return writeErr(w, tooManyFailures(wait))
	}
	ns, name, err := s.opts.WorkloadIdentity.Verify(r.Context(), assertion, s.opts.Issuer, now)
	c, found := s.store.Credential(clientID)
	if err != nil || !found || !c.usable(now) || !c.policy.allows(addr) ||
		ns != c.Key.Namespace || !slices.Contains(c.serviceAccounts, name) {
		s.authFailed(budget, addr, now)
		return writeErr(w, invalidGrant())
	}
	return s.issue(w, c, form.Get("scope"), workloadVersion, name, addr, now)
}
