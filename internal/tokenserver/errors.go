package tokenserver

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// oauthError is an error response of RFC 6749 §5.2 (and RFC 6750 §3 for bearer tokens),
// rendered once by write. Descriptions never carry a secret or a token.
type oauthError struct {
	status      int
	code        string
	description string
	// challenge is the WWW-Authenticate value for 401 responses.
	challenge string
	// retryAfter is the Retry-After value in seconds for 429 responses.
	retryAfter int
}

func (e *oauthError) Error() string { return e.code + ": " + e.description }

func (e *oauthError) write(w http.ResponseWriter) {
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Cache-Control"] = cacheNoStore
	if e.challenge != "" {
		h.Set("WWW-Authenticate", e.challenge)
	}
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{e.code, e.description})
}

func invalidRequest(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "invalid_request", description: desc}
}

// invalidClient is the answer to every failed client authentication: unknown client,
// wrong secret, inactive, expired or deleted credential alike (RFC 6749 §5.2).
func invalidClient(desc string) *oauthError {
	return &oauthError{status: http.StatusUnauthorized, code: "invalid_client", description: desc,
		challenge: `Basic realm="keysmith", charset="UTF-8"`}
}

// invalidToken answers a bearer token that is malformed, expired or revoked (RFC 6750 §3.1).
func invalidToken(desc string) *oauthError {
	return &oauthError{status: http.StatusUnauthorized, code: "invalid_token", description: desc,
		challenge: `Bearer realm="keysmith", error="invalid_token"`}
}

func unauthenticated() *oauthError {
	return &oauthError{status: http.StatusUnauthorized, code: "invalid_request",
		description: "credentials are required: a Bearer access token or Basic client credentials",
		challenge:   `Bearer realm="keysmith", Basic realm="keysmith"`}
}

func insufficientScope(desc string) *oauthError {
	return &oauthError{status: http.StatusForbidden, code: "insufficient_scope", description: desc}
}

func tooManyFailures(retryAfter int) *oauthError {
	return &oauthError{status: http.StatusTooManyRequests, code: "slow_down",
		description: "too many failed authentications; retry later", retryAfter: retryAfter}
}

// credentialsInvalid is the description of every refused credential, so that callers
// learn nothing about which part was wrong.
const credentialsInvalid = "the credentials are invalid"
