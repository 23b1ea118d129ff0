package tokenserver

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// token is the token endpoint: the client credentials grant of RFC 6749 §4.4, and the
// JWT-bearer grant of RFC 7523 §2.1 when Options.WorkloadIdentity is set.
func (s *Server) token(w http.ResponseWriter, r *http.Request) int {
	form, oerr := readForm(w, r, maxBodyBytes)
	if oerr != nil {
		return writeErr(w, oerr)
	}
	gt := form.Get("grant_type")
	if gt == grantJWTBearer { // RFC 7523 §2.1: no client secret (jwtbearer.go)
		return s.tokenJWTBearer(w, r, form)
	}
	ca, oerr := clientAuthFrom(r, form)
	if oerr != nil {
		return writeErr(w, oerr)
	}
	now := s.opts.Clock.Now()
	addr := s.clientAddr(r)
	c, version, oerr := s.authenticate(ca, addr, now)
	if oerr != nil {
		return writeErr(w, oerr)
	}
	switch gt {
	case "client_credentials":
	case "":
		return writeErr(w, invalidRequest("grant_type is required"))
	default:
		return writeErr(w, unsupportedGrantType())
	}
	return s.issue(w, c, form.Get("scope"), version, "", addr, now)
}

// issue answers a granted token request of the credential with an access token for scope.
func (s *Server) issue(w http.ResponseWriter, c *Credential, scope, version, serviceAccount, addr string, now time.Time) int {
	// The claims live on this frame, their grants and audiences in its arrays: they are
	// encoded into the token and dead once it is written (appendToken keeps no reference).
	var grants [maxStackGrants]Grant
	var audience [maxStackGrants]string
	claims, oerr := s.claimsFor(c, scope, version, now, grants[:0], audience[:0])
	if oerr != nil {
		return writeErr(w, oerr)
	}
	claims.WorkloadServiceAccount = serviceAccount
	// The response is rendered around the token in one buffer: a compact JWS is
	// base64url and dots, a JSON string as it stands.
	p := getScratch()
	b := append((*p)[:0], `{"access_token":"`...)
	b, err := s.keys.appendToken(b, &claims)
	defer func() { putScratch(p, b) }() // dead once written: the writer copies it
	if err == errTokenTooLarge {
		return writeErr(w, tokenTooLarge())
	}
	if err != nil {
		return writeErr(w, temporarilyUnavailable(err.Error()))
	}
	s.metrics.tokensIssued.Inc()
	if s.opts.Usage != nil {
		s.opts.Usage.Record(c, addr, now)
	}
	b = append(b, `","token_type":"Bearer","expires_in":`...)
	b = strconv.AppendInt(b, claims.ExpiresAt-claims.IssuedAt, 10)
	b = append(b, `,"scope":`...)
	b = appendJSONString(b, claims.Scope)
	b = append(b, '}')
	w.Header()["Pragma"] = pragmaNoCache // RFC 6749 §5.1
	return writeBody(w, http.StatusOK, contentTypeJSON, cacheNoStore, b)
}

// maxStackGrants is how many grants a token's claims collect without allocating: the
// shapes seen in practice (one to a few APIs per credential); more spill to the heap.
const maxStackGrants = 8

// claimsFor returns the claims of a token for the credential, narrowed by the requested
// scope: space-separated "api" or "api:permission" items, each of which the credential
// must grant (RFC 6749 §3.3). Without a scope (an empty parameter counts as omitted, RFC
// 6749 §3.1) the token carries every grant whose API is in the catalog; a scope of only
// whitespace names nothing and is invalid_scope, never a token without APIs. The token's
// audiences are those of the APIs it carries (spec.audience, else the API's name), each once.
// It lives min(spec.tokenPolicy.lifetime, MaxTokenLifetime), else TokenLifetime.
//
// The claims are for encoding only (appendJSON): ks_apis is in their grants, in grant
// order, and APIs stays nil, so that issuing builds no map. Their grants and audiences
// are appended to grants and audience (empty slices of the caller's arrays).
func (s *Server) claimsFor(c *Credential, scope, version string, now time.Time, grants []Grant, audience []string) (Claims, *oauthError) {
	add := func(g Grant, a *API) {
		for _, have := range grants {
			if have.API == g.API {
				return // named twice in the scope: once in the token
			}
		}
		grants = append(grants, g)
		if !slices.Contains(audience, a.Audience) {
			audience = append(audience, a.Audience)
		}
	}
	if scope == "" {
		for _, g := range c.Grants {
			if a, ok := s.store.API(g.API); ok {
				if _, ok := a.Permissions[g.Permission]; ok {
					add(g, a)
				}
			}
		}
		if len(grants) == 0 {
			return Claims{}, invalidScope("none of the credential's APIs is in the catalog")
		}
	} else {
		for item := range strings.FieldsSeq(scope) {
			api, perm, hasPerm := strings.Cut(item, ":")
			g, ok := c.grant(api)
			if !ok || (hasPerm && perm != g.Permission) {
				return Claims{}, invalidScope("scope " + strconv.Quote(item) + " is not granted to this client")
			}
			a, ok := s.store.API(api)
			if !ok {
				return Claims{}, invalidScope("scope " + strconv.Quote(item) + " names an API that is not in the catalog")
			}
			if _, ok := a.Permissions[g.Permission]; !ok {
				return Claims{}, invalidScope("scope " + strconv.Quote(item) + ": the API no longer offers permission " + strconv.Quote(g.Permission))
			}
			add(g, a)
		}
		if len(grants) == 0 {
			return Claims{}, invalidScope("scope names no API; omit it to request every granted API")
		}
	}
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	return Claims{
		Issuer:        s.opts.Issuer,
		Subject:       c.ClientID,
		Audience:      audience,
		IssuedAt:      now.Unix(),
		ExpiresAt:     now.Add(s.opts.tokenLifetime(c.policy.lifetime())).Unix(),
		ID:            base64.RawURLEncoding.EncodeToString(jti[:]),
		ClientID:      c.ClientID,
		Scope:         scopeOf(grants),
		Credential:    c.Name,
		Account:       c.Account,
		Workspaces:    c.Workspaces,
		SecretVersion: version,
		grants:        grants,
	}, nil
}

// scopeOf returns the space-separated "api:permission" items of grants (RFC 6749 §3.3),
// in one allocation.
func scopeOf(grants []Grant) string {
	n := len(grants) - 1
	for _, g := range grants {
		n += len(g.API) + 1 + len(g.Permission)
	}
	var b strings.Builder
	b.Grow(n)
	for i, g := range grants {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(g.API)
		b.WriteByte(':')
		b.WriteString(g.Permission)
	}
	return b.String()
}
