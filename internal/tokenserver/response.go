package tokenserver

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Every response of the token server is written here: writeErr for errors, writeJSON for
// values encoded per request, writeBody for bodies already rendered (the token response,
// built without reflection on the hot path; the metadata and JWKS, rendered once).

// Header values shared by every response. They are never mutated, so setting them
// allocates nothing.
var (
	contentTypeJSON = []string{"application/json"}
	contentTypeJWKS = []string{"application/jwk-set+json"} // RFC 7517 §8.5
	contentTypeText = []string{"text/plain; charset=utf-8"}
	cacheNoStore    = []string{"no-store"}
	cacheMetadata   = []string{"public, max-age=3600"}
	cacheJWKS       = []string{"public, max-age=300"}
	pragmaNoCache   = []string{"no-cache"}
)

// okBody is the body of the health and readiness probes.
var okBody = []byte("ok")

// errorBody is the JSON of an error response (RFC 6749 §5.2).
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// writeErr writes e as an RFC 6749 §5.2 JSON error, never cached, with its challenge and
// Retry-After, and returns its status.
func writeErr(w http.ResponseWriter, e *oauthError) int {
	h := w.Header()
	if e.challenge != "" {
		h.Set("WWW-Authenticate", e.challenge)
	}
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	return writeJSON(w, e.status, cacheNoStore, errorBody{e.code, e.description})
}

// writeJSON writes status and v as JSON with Cache-Control cache (nil: none) and returns
// status.
func writeJSON(w http.ResponseWriter, status int, cache []string, v any) int {
	setHeaders(w.Header(), contentTypeJSON, cache)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
	return status
}

// writeBody writes status and a body already rendered, of contentType, with
// Cache-Control cache (nil: none), and returns status.
func writeBody(w http.ResponseWriter, status int, contentType, cache []string, body []byte) int {
	setHeaders(w.Header(), contentType, cache)
	w.WriteHeader(status)
	_, _ = w.Write(body)
	return status
}

func setHeaders(h http.Header, contentType, cache []string) {
	h["Content-Type"] = contentType
	if cache != nil {
		h["Cache-Control"] = cache
	}
}
