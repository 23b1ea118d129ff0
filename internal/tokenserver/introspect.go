package tokenserver

import (
	"net/http"
	"time"
)

// introspect is token introspection (RFC 7662). The caller authenticates with its
// own client credentials; a token that is invalid, expired or whose credential is
// inactive, expired, deleted or rotated past its grace period is {"active":false}. Tokens
// that fail verification count against the caller's address: past its budget, 429. A
// token of a credential with spec.sourceRanges is {"active":false} too, fail closed like
// TokenReview: the caller is the resource server, whose address says nothing about the
// client's, so the ranges cannot be checked, and an active answer would let the token be
// used from anywhere (such tokens are checked at /authz, which sees the client). The
// caller's own credential's ranges are checked, by authenticate.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) int {
	_, token, now, addr, oerr := s.tokenFormOfClient(w, r)
	if oerr != nil {
		return writeErr(w, oerr)
	}
	resp := map[string]any{"active": false}
	claims, c, oerr := s.verifyBearerFrom(token, addr, now)
	if oerr != nil && oerr.status == http.StatusTooManyRequests {
		return writeErr(w, oerr) // too many invalid tokens from this address
	}
	if oerr == nil && !c.policy.restricted() {
		resp = map[string]any{
			"active": true, "token_type": "Bearer", "scope": claims.Scope, "client_id": claims.ClientID,
			"sub": claims.Subject, "aud": claims.Audience, "iss": claims.Issuer, "exp": claims.ExpiresAt,
			"iat": claims.IssuedAt, "jti": claims.ID, "ks_cred": c.Name, "ks_account": c.Account,
			"ks_workspaces": c.Workspaces, "ks_apis": claims.APIs,
		}
	}
	return writeJSON(w, http.StatusOK, cacheNoStore, resp)
}

// tokenFormOfClient reads the form of a client-authenticated request about a token
// (RFC 7662 introspection, RFC 7009 revocation): it authenticates the caller exactly as
// the token endpoint does (Basic or client_secret_post, the failure limits, the caller's
// source ranges) and returns its credential, the form's token (required), the time and
// the client address.
func (s *Server) tokenFormOfClient(w http.ResponseWriter, r *http.Request) (*Credential, string, time.Time, string, *oauthError) {
	form, oerr := readForm(w, r, maxTokenBodyBytes)
	if oerr != nil {
		return nil, "", time.Time{}, "", oerr
	}
	ca, oerr := clientAuthFrom(r, form)
	if oerr != nil {
		return nil, "", time.Time{}, "", oerr
	}
	now, addr := s.opts.Clock.Now(), s.clientAddr(r)
	c, _, oerr := s.authenticate(ca, addr, now)
	if oerr != nil {
		return nil, "", time.Time{}, "", oerr
	}
	token := form.Get("token")
	if token == "" {
		return nil, "", time.Time{}, "", invalidRequest("token is required")
	}
	return c, token, now, addr, nil
}
