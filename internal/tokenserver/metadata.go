package tokenserver

import (
	"encoding/json"
	"net/http"
)

// buildMetadata renders the RFC 8414 authorization server metadata once.
func (s *Server) buildMetadata() []byte {
	auth := []string{"client_secret_basic", "client_secret_post"}
	m := map[string]any{
		"issuer":                                s.opts.Issuer,
		"token_endpoint":                        s.opts.Issuer + "/oauth2/token",
		"jwks_uri":                              s.opts.Issuer + "/.well-known/jwks.json",
		"introspection_endpoint":                s.opts.Issuer + "/oauth2/introspect",
		"grant_types_supported":                 []string{"client_credentials"},
		"response_types_supported":              []string{},
		"token_endpoint_auth_methods_supported": auth,
		"introspection_endpoint_auth_methods_supported":    auth,
		"token_endpoint_auth_signing_alg_values_supported": []string{},
	}
	if s.opts.WorkloadIdentity != nil {
		m["grant_types_supported"] = []string{"client_credentials", grantJWTBearer}
	}
	if !s.opts.VerifyOnly { // a verify-only sidecar cannot write status: clients revoke at the token server
		m["revocation_endpoint"] = s.opts.Issuer + "/oauth2/revoke"
		m["revocation_endpoint_auth_methods_supported"] = auth
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // static types
	}
	return b
}

func (s *Server) handleMetadata(w http.ResponseWriter, _ *http.Request) {
	writeBody(w, http.StatusOK, contentTypeJSON, cacheMetadata, s.metadata)
}

// handleJWKS serves the public keys of every published signing key (RFC 7517).
func (s *Server) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	ring := s.keys.ring.Load()
	if ring == nil {
		writeErr(w, temporarilyUnavailable("no signing keys yet"))
		return
	}
	writeBody(w, http.StatusOK, contentTypeJWKS, cacheJWKS, ring.jwks)
}
