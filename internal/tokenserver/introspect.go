package tokenserver

import "net/http"

// introspect is token introspection (RFC 7662). The caller authenticates with its
// own client credentials; a token that is invalid, expired or whose credential is
// inactive, expired, deleted or rotated past its grace period is {"active":false}. Tokens
// that fail verification count against the caller's address: past its budget, 429. The
// token's spec.sourceRanges are not checked: the caller is the resource server, whose
// address says nothing about the client's (the caller's own credential's are, by
// authenticate).
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) int {
	form, oerr := readForm(w, r, maxTokenBodyBytes)
	if oerr != nil {
		return writeErr(w, oerr)
	}
	ca, oerr := clientAuthFrom(r, form)
	if oerr != nil {
		return writeErr(w, oerr)
	}
	now, addr := s.opts.Clock.Now(), s.clientAddr(r)
	if _, _, oerr := s.authenticate(ca, addr, now); oerr != nil {
		return writeErr(w, oerr)
	}
	token := form.Get("token")
	if token == "" {
		return writeErr(w, invalidRequest("token is required"))
	}
	resp := map[string]any{"active": false}
	claims, c, oerr := s.verifyBearerFrom(token, addr, now)
	if oerr != nil && oerr.status == http.StatusTooManyRequests {
		return writeErr(w, oerr) // too many invalid tokens from this address
	}
	if oerr == nil {
		resp = map[string]any{
			"active": true, "token_type": "Bearer", "scope": claims.Scope, "client_id": claims.ClientID,
			"sub": claims.Subject, "aud": claims.Audience, "iss": claims.Issuer, "exp": claims.ExpiresAt,
			"iat": claims.IssuedAt, "jti": claims.ID, "ks_cred": c.Name, "ks_account": c.Account,
			"ks_workspaces": c.Workspaces, "ks_apis": claims.APIs,
		}
	}
	return writeJSON(w, http.StatusOK, cacheNoStore, resp)
}
