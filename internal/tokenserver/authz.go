package tokenserver

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// authz answers forward-auth requests: nginx auth_request, Traefik ForwardAuth and
// Envoy ext_authz (HTTP). The path names the API, /authz/{api}/...; the original method
// and URI come from X-Forwarded-Method / X-Forwarded-Uri (Traefik), X-Original-Method /
// X-Original-URI (nginx), or else the request itself and the rest of the path (Envoy
// appends the original path to its path prefix and keeps the method).
//
// 200 with X-Keysmith-* headers when the caller's credential is known, active, unexpired,
// allows the client address (spec.sourceRanges, read on every request), grants the API with a permission whose methods cover the original method, and, if the
// request names a workspace, has it in scope; 401 or 403 with a JSON error otherwise, and
// 400 for an original request that could be read two ways (originalRequest).
func (s *Server) authz(w http.ResponseWriter, r *http.Request) int {
	api, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/authz/"), "/")
	if api == "" {
		return writeErr(w, invalidRequest("the path must name an API: /authz/{api}/..."))
	}
	orig, badOrigin := originalRequest(r, &s.opts)
	if badOrigin != nil {
		return writeErr(w, badOrigin)
	}
	method := orig.method
	now := s.opts.Clock.Now()
	addr := s.clientAddr(r)

	var (
		c      *Credential
		claims *Claims // nil for Basic credentials
	)
	scheme, value, oerr := authorization(r)
	if oerr != nil {
		return writeErr(w, oerr)
	}
	switch scheme {
	case "bearer":
		claims, c, oerr = s.verifyBearerFrom(value, addr, now) // failures count against addr
		if oerr == nil && !c.policy.allows(addr) {
			oerr = invalidToken(credentialsInvalid) // looked up live: narrowing revokes tokens out
		}
	case "basic":
		id, secret, ok := parseBasic(value)
		if !ok {
			return writeErr(w, invalidClient("malformed Basic credentials"))
		}
		c, _, oerr = s.authenticate(clientAuth{id: id, secret: secret, method: "basic"}, addr, now)
	default:
		oerr = unauthenticated()
	}
	if oerr != nil {
		return writeErr(w, oerr)
	}

	_, perm, methods, oerr := s.grantedAPI(c, claims, api)
	if oerr != nil {
		return writeErr(w, oerr)
	}
	if !methods.allows(method) {
		return writeErr(w, insufficientScope(fmt.Sprintf("permission %q of API %q does not allow %s", perm, api, method)))
	}
	for _, ws := range orig.workspaces {
		if ws != "" && !c.hasWorkspace(ws) {
			return writeErr(w, insufficientScope(fmt.Sprintf("workspace %q is not in the credential's scope", ws)))
		}
	}

	h := w.Header()
	h["X-Keysmith-Client-Id"] = c.header(hdrClientID)
	h["X-Keysmith-Credential"] = c.header(hdrCredential)
	h["X-Keysmith-Permission"] = c.permissionHeader(api)
	h["X-Keysmith-Account"] = c.header(hdrAccount)
	h["X-Keysmith-Workspaces"] = c.header(hdrWorkspaces)
	w.WriteHeader(http.StatusOK)
	if s.opts.Usage != nil {
		s.opts.Usage.Record(c, addr, now)
	}
	return http.StatusOK
}

// grantedAPI returns the API api, the permission on it and that permission's methods
// while credential c, and the access token's claims when the request bears one (nil for
// Basic credentials), still authorize it: c grants api, the token carries it with the
// same permission and holds its audience (audience-bound tokens, DESIGN §3), and the
// catalog has it and still offers the permission. /authz and TokenReview decide by it
// alike; the error says which check failed.
func (s *Server) grantedAPI(c *Credential, claims *Claims, api string) (*API, string, methodSet, *oauthError) {
	g, ok := c.grant(api)
	if !ok {
		return nil, "", methodSet{}, insufficientScope(fmt.Sprintf("the credential is not granted API %q", api))
	}
	if claims != nil && claims.APIs[api] != g.Permission {
		return nil, "", methodSet{}, insufficientScope(fmt.Sprintf("the access token's scope does not include API %q with permission %q", api, g.Permission))
	}
	a, ok := s.store.API(api)
	if !ok {
		return nil, "", methodSet{}, insufficientScope(fmt.Sprintf("API %q is not in the catalog", api))
	}
	if claims != nil && !slices.Contains(claims.Audience, a.Audience) {
		return nil, "", methodSet{}, invalidToken(fmt.Sprintf("the access token's audience does not hold %q, the audience of API %q", a.Audience, api))
	}
	methods, ok := a.Permissions[g.Permission]
	if !ok {
		return nil, "", methodSet{}, insufficientScope(fmt.Sprintf("API %q no longer offers permission %q", api, g.Permission))
	}
	return a, g.Permission, methods, nil
}
