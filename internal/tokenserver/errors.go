package tokenserver

import (
	"net/http"
	"strconv"
)

// oauthError is an error response of RFC 6749 §5.2 (and RFC 6750 §3 for bearer tokens),
// rendered once by writeErr. Descriptions never carry a secret or a token.
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

// invalidScope answers a token request whose scope the credential cannot have (RFC 6749
// §5.2).
func invalidScope(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "invalid_scope", description: desc}
}

// unsupportedGrantType answers a token request for any grant but client_credentials.
func unsupportedGrantType() *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "unsupported_grant_type",
		description: "the grant type is not supported; see grant_types_supported in the metadata"}
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

// temporarilyUnavailable answers a request the server cannot serve yet: no signing key,
// caches not synced (RFC 6749 §5.2's temporarily_unavailable, with status 503).
func temporarilyUnavailable(desc string) *oauthError {
	return &oauthError{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", description: desc}
}

// tokenTooLarge answers a token request whose token would exceed maxTokenBytes: a server
// error (the request is well-formed and granted), with the way out.
func tokenTooLarge() *oauthError {
	return &oauthError{status: http.StatusInternalServerError, code: "server_error",
		description: "the access token would be larger than the " + strconv.Itoa(maxTokenBytes) +
			" bytes token servers accept; request fewer APIs with the scope parameter"}
}

// credentialsInvalid is the description of every refused credential, so that callers
// learn nothing about which part was wrong.
const credentialsInvalid = "the credentials are invalid"
