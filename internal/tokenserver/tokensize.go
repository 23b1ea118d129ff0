package tokenserver

import "errors"

// maxTokenBytes is the longest token the verifier considers and the signer mints: 128 KiB.
// It holds the largest token the CRDs permit (worstCaseClaims, about 122 KiB with a
// 2 KiB issuer), so no credential the API server accepts gets a token the token servers
// refuse; the signer refuses anything longer (errTokenTooLarge) rather than mint it.
// TestWorstCaseTokenFits checks the arithmetic, TestCRDLimitsAreTheWorstCase the limits.
const maxTokenBytes = 128 << 10

// MaxIssuerLength is the longest issuer URL a token server takes (--issuer): the
// largest token the CRDs permit is computed with it.
const MaxIssuerLength = 2048

// maxKidLen bounds the kid of a verification key: keysmith's are RFC 7638 thumbprints,
// 43 characters.
const maxKidLen = 64

// errTokenTooLarge is the signer's backstop: a token longer than maxTokenBytes would be
// refused by every token server, so it is never minted.
var errTokenTooLarge = errors.New("the access token would be larger than token servers accept")
