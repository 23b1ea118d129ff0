package tokenserver

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"slices"
	"sort"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
)

// Kubernetes identities of keysmith credentials (webhook token authentication).
const (
	// UsernamePrefix is followed by "<namespace>:<name>" of the APICredential.
	UsernamePrefix = "keysmith:credential:"
	// GroupAll holds every keysmith credential.
	GroupAll = "keysmith:credentials"
	// GroupAccountPrefix is followed by the credential's account.
	GroupAccountPrefix = "keysmith:account:"
	// GroupAPIPrefix is followed by "<api>:<permission>" for each API in the token whose
	// audience the review asked for.
	GroupAPIPrefix = "keysmith:api:"
	// ExtraClientID carries the client ID in the user's extra attributes.
	ExtraClientID = "iam.keysmith.dev/client-id"
)

// tokenReview lets kube-apiserver authenticate requests that carry a keysmith
// access token (--authentication-token-webhook-config-file). The user is
// keysmith:credential:<namespace>:<name> with UID the credential's UID, in the groups
// keysmith:credentials, keysmith:account:<account> and keysmith:api:<api>:<permission>.
//
// A credential with spec.sourceRanges never authenticates here: the review comes from the
// API server and says nothing about the client's address (DESIGN §3).
//
// Tokens are audience-bound (DESIGN §3): a token authenticates only when its aud
// intersects the audiences asked for, the review's spec.audiences or, when it sends
// none, Options.KubernetesAudiences (empty: nothing authenticates). status.audiences is
// that intersection and the API groups name only the APIs whose audience is in it, so a
// token for a billing API is not a login to the cluster.
func (s *Server) tokenReview(w http.ResponseWriter, r *http.Request) int {
	if s.opts.ReviewClientCAs != nil && !reviewerAuthenticated(r, s.opts.ReviewClientCAs()) {
		return writeErr(w, &oauthError{status: http.StatusForbidden, code: "access_denied",
			description: "a TokenReview needs a TLS client certificate this token server trusts"})
	}
	var review authnv1.TokenReview
	if err := readJSON(w, r, maxTokenBodyBytes, &review); err != nil {
		return writeErr(w, invalidRequest("the body must be a TokenReview"))
	}
	resp := authnv1.TokenReview{TypeMeta: review.TypeMeta}
	if resp.APIVersion == "" {
		resp.APIVersion, resp.Kind = "authentication.k8s.io/v1", "TokenReview"
	}
	wanted := review.Spec.Audiences
	if len(wanted) == 0 {
		wanted = s.opts.KubernetesAudiences
	}
	resp.Status = s.review(review.Spec.Token, wanted, s.opts.Clock.Now())
	return writeJSON(w, http.StatusOK, nil, &resp)
}

// review decides a TokenReview of token for the audiences wanted. Every refusal is the
// same unauthenticated answer. A token that fails verification is remembered in the
// negative cache, so a replay costs no signature check; failures that depend on a
// credential's state are not remembered (a reactivated credential works at once) and
// cost no signature check anyway, its claims being in the token cache.
func (s *Server) review(token string, wanted []string, now time.Time) authnv1.TokenReviewStatus {
	refused := authnv1.TokenReviewStatus{Error: credentialsInvalid}
	if len(wanted) == 0 || token == "" {
		return refused
	}
	claims, oerr := s.verifyToken(token, now) // a failure is remembered in the negative cache
	if oerr != nil {
		return refused
	}
	c, oerr := s.credentialOf(claims, now)
	if oerr != nil || c.policy.restricted() {
		return refused // a review carries no client address: source ranges fail closed
	}
	audiences, apiGroups := s.matchAudiences(claims, c, wanted)
	if len(audiences) == 0 {
		return refused
	}
	groups := []string{GroupAll}
	if c.Account != "" {
		groups = append(groups, GroupAccountPrefix+c.Account)
	}
	groups = append(groups, apiGroups...)
	sort.Strings(groups[1:])
	return authnv1.TokenReviewStatus{
		Authenticated: true,
		User: authnv1.UserInfo{
			Username: UsernamePrefix + c.Key.Namespace + ":" + c.Key.Name,
			UID:      string(c.UID),
			Groups:   groups,
			Extra:    map[string]authnv1.ExtraValue{ExtraClientID: {c.ClientID}},
		},
		Audiences: audiences,
	}
}

// matchAudiences returns the audiences of wanted that the token is for, in the order of
// wanted, and the keysmith:api groups of the APIs behind them. An API counts when the
// token and the credential still authorize it as at /authz (grantedAPI) and its audience
// is in wanted; an audience counts only through such an API, so a token whose APIs have
// since left the catalog or changed audience authenticates nowhere.
func (s *Server) matchAudiences(claims *Claims, c *Credential, wanted []string) (audiences, groups []string) {
	for api, perm := range claims.APIs {
		a, _, _, oerr := s.grantedAPI(c, claims, api)
		if oerr != nil || !slices.Contains(wanted, a.Audience) {
			continue
		}
		groups = append(groups, GroupAPIPrefix+api+":"+perm)
		if !slices.Contains(audiences, a.Audience) {
			audiences = append(audiences, a.Audience)
		}
	}
	slices.SortFunc(audiences, func(x, y string) int { return slices.Index(wanted, x) - slices.Index(wanted, y) })
	return audiences, groups
}

// WebhookKubeconfig returns the file kube-apiserver's
// --authentication-token-webhook-config-file takes to send TokenReviews to the token
// server at baseURL (for HTTPS, add certificate-authority to the cluster entry).
func WebhookKubeconfig(baseURL string) string {
	return `apiVersion: v1
kind: Config
clusters:
- name: keysmith-token-server
  cluster:
    server: ` + baseURL + `/apis/authentication.k8s.io/v1/tokenreviews
users:
- name: kube-apiserver
contexts:
- name: webhook
  context: {cluster: keysmith-token-server, user: kube-apiserver}
current-context: webhook
`
}

// reviewerAuthenticated reports whether r came over TLS with a client certificate for
// client authentication that chains to cas. It verifies the chain itself, whatever the
// listener did: a listener that asked for no certificate, or took any, admits no one.
func reviewerAuthenticated(r *http.Request, cas *x509.CertPool) bool {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return false
	}
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := r.TLS.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: cas, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err == nil
}

// ReviewTLSConfig sets what a TLS listener needs for Options.ReviewClientCAs: it asks
// every client for a certificate without requiring or verifying one at the handshake
// (only TokenReview needs it, and reviewerAuthenticated verifies it), so the other
// endpoints serve clients without certificates as before.
func ReviewTLSConfig(cfg *tls.Config) {
	cfg.ClientAuth = tls.RequestClientCert
}
