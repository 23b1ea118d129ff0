package tokenserver

import (
	"encoding/json"
	"net/http"
	"sort"

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
	// GroupAPIPrefix is followed by "<api>:<permission>" for each API in the token.
	GroupAPIPrefix = "keysmith:api:"
	// ExtraClientID carries the client ID in the user's extra attributes.
	ExtraClientID = "iam.keysmith.dev/client-id"
)

// tokenReview lets kube-apiserver authenticate requests that carry a keysmith
// access token (--authentication-token-webhook-config-file). The user is
// keysmith:credential:<namespace>:<name> with UID the credential's UID, in the groups
// keysmith:credentials, keysmith:account:<account> and keysmith:api:<api>:<permission>.
// Status audiences are left empty: the API server then applies its own audiences.
func (s *Server) tokenReview(w http.ResponseWriter, r *http.Request) int {
	var review authnv1.TokenReview
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes)).Decode(&review); err != nil {
		http.Error(w, "the body must be a TokenReview", http.StatusBadRequest)
		return http.StatusBadRequest
	}
	resp := authnv1.TokenReview{TypeMeta: review.TypeMeta}
	if resp.APIVersion == "" {
		resp.APIVersion, resp.Kind = "authentication.k8s.io/v1", "TokenReview"
	}
	claims, c, oerr := s.verifyBearer(review.Spec.Token, s.opts.Clock.Now())
	if oerr != nil {
		resp.Status.Error = credentialsInvalid
	} else {
		groups := []string{GroupAll}
		if c.Account != "" {
			groups = append(groups, GroupAccountPrefix+c.Account)
		}
		for api, perm := range claims.APIs {
			if g, ok := c.grant(api); ok && g.Permission == perm {
				groups = append(groups, GroupAPIPrefix+api+":"+perm)
			}
		}
		sort.Strings(groups[1:])
		resp.Status = authnv1.TokenReviewStatus{
			Authenticated: true,
			User: authnv1.UserInfo{
				Username: UsernamePrefix + c.Key.Namespace + ":" + c.Key.Name,
				UID:      string(c.UID),
				Groups:   groups,
				Extra:    map[string]authnv1.ExtraValue{ExtraClientID: {c.ClientID}},
			},
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&resp)
	return http.StatusOK
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
