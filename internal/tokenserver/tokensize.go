package tokenserver

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
)

// maxTokenBytes is the longest token the verifier considers and the signer mints: 128 KiB.
// It holds the largest token the CRDs permit (worstCaseClaims, about 122 KiB with a
// 2 KiB issuer), so no credential the API server accepts gets a token the token servers
// refuse; the signer refuses anything longer (errTokenTooLarge) rather than mint it.
// TestWorstCaseTokenFits checks the arithmetic, TestCRDLimitsAreTheWorstCase the limits.
const maxTokenBytes = 128 << 10

// MaxIssuerLength is the longest issuer URL a token server takes (--issuer): the
// largest token the CRDs permit is computed with it.
const MaxIssuerLength = 2048

// The CRD limits that bound a token (api/v1alpha1, kubebuilder markers), and the
// token server's own.
const (
	maxGrants        = 32   // APICredential spec.apis MaxItems
	maxAPINameLen    = 253  // spec.apis[].name MaxLength (an APIDefinition name)
	maxPermissionLen = 63   // spec.apis[].permission MaxLength
	maxWorkspaces    = 64   // spec.scope.workspaces MaxItems
	maxWorkspaceLen  = 63   // spec.scope.workspaces[] MaxLength
	maxAccountLen    = 63   // spec.scope.account MaxLength
	maxNamespaceLen  = 63   // a namespace name
	maxNameLen       = 253  // an APICredential name
	maxAudienceLen   = 2048 // APIDefinition spec.audience MaxLength
	// maxIssuerLen bounds --issuer (a URL); the worst case assumes it.
	maxIssuerLen = MaxIssuerLength
	// maxKidLen bounds the kid of a verification key: keysmith's are RFC 7638
	// thumbprints, 43 characters.
	maxKidLen = 64
)

// errTokenTooLarge is the signer's backstop: a token longer than maxTokenBytes would be
// refused by every token server, so it is never minted.
var errTokenTooLarge = errors.New("the access token would be larger than token servers accept")

// worstCaseClaims are the largest claims the CRD limits allow: every list at its MaxItems,
// every name at its MaxLength, every API with its own 2048-character audience. Audiences
// are assumed to need no JSON escaping (URLs and names do not); an audience full of
// quotes, control or non-ASCII characters can go beyond, and the signer then refuses.
func worstCaseClaims() *Claims {
	name := func(prefix string, i, n int) string {
		s := prefix + string(rune('a'+i/26%26)) + string(rune('a'+i%26))
		return s + strings.Repeat("x", n-len(s))
	}
	c := &Claims{
		Issuer:        "https://" + strings.Repeat("i", maxIssuerLen-len("https://")),
		Subject:       "ksc_" + strings.Repeat("A", 26),
		ExpiresAt:     1<<63 - 1,
		IssuedAt:      1<<63 - 1,
		ID:            strings.Repeat("j", 22),
		ClientID:      "ksc_" + strings.Repeat("A", 26),
		Credential:    strings.Repeat("n", maxNamespaceLen) + "/" + strings.Repeat("c", maxNameLen),
		Account:       strings.Repeat("a", maxAccountLen),
		APIs:          make(map[string]string, maxGrants),
		SecretVersion: strings.Repeat("v", 12),
	}
	var scope []string
	for i := range maxGrants {
		api, perm := name("api", i, maxAPINameLen), name("p", i, maxPermissionLen)
		c.APIs[api] = perm
		c.apiOrder = append(c.apiOrder, api)
		c.Audience = append(c.Audience, name("https://aud", i, maxAudienceLen))
		scope = append(scope, api+":"+perm)
	}
	c.Scope = strings.Join(scope, " ")
	for i := range maxWorkspaces {
		c.Workspaces = append(c.Workspaces, name("w", i, maxWorkspaceLen))
	}
	return c
}

// tokenTooLarge answers a token request whose token would exceed maxTokenBytes: a server
// error (the request is well-formed and granted), with the way out.
func tokenTooLarge() *oauthError {
	return &oauthError{status: http.StatusInternalServerError, code: "server_error",
		description: "the access token would be larger than the " + strconv.Itoa(maxTokenBytes) +
			" bytes token servers accept; request fewer APIs with the scope parameter"}
}
