package tokenserver

import (
	"bytes"
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Claims are the claims of a keysmith access token: RFC 9068's (iss, sub, aud, exp, iat,
// jti, client_id, scope) and keysmith's own, prefixed "ks_".
type Claims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  []string `json:"aud"`
	ExpiresAt int64    `json:"exp"`
	IssuedAt  int64    `json:"iat"`
	ID        string   `json:"jti"`
	ClientID  string   `json:"client_id"`
	// Scope lists the granted "api:permission" pairs, space-separated.
	Scope string `json:"scope"`
	// Credential is the APICredential's namespace/name.
	Credential string `json:"ks_cred"`
	// Account and Workspaces are the credential's scope.
	Account    string   `json:"ks_account,omitempty"`
	Workspaces []string `json:"ks_workspaces,omitempty"`
	// APIs maps each granted API to its permission.
	APIs map[string]string `json:"ks_apis"`
	// SecretVersion identifies the client secret the token was issued under; the token
	// dies with that secret (rotation past its grace period).
	SecretVersion string `json:"ks_sv"`
	// WorkloadServiceAccount is, in a token of the JWT-bearer grant (ks_sv "wi"), the
	// ServiceAccount of the credential's namespace whose projected token was exchanged:
	// the token dies when it leaves spec.workloadIdentity. Empty in other tokens.
	WorkloadServiceAccount string `json:"ks_wi,omitempty"`
	// grants, when set, are the token endpoint's claims' ks_apis in grant order: appendJSON
	// encodes them and not APIs (nil then), so that issuing a token builds no map and
	// sorts nothing. Without them appendJSON encodes APIs, its keys sorted.
	grants []Grant
}

// appendJSON encodes the claims without reflection: the token endpoint's hot path.
func (c *Claims) appendJSON(b []byte) []byte {
	b = append(b, `{"iss":`...)
	b = appendJSONString(b, c.Issuer)
	b = append(b, `,"sub":`...)
	b = appendJSONString(b, c.Subject)
	b = append(b, `,"aud":`...)
	b = appendJSONStrings(b, c.Audience)
	b = append(b, `,"exp":`...)
	b = strconv.AppendInt(b, c.ExpiresAt, 10)
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, c.IssuedAt, 10)
	b = append(b, `,"jti":`...)
	b = appendJSONString(b, c.ID)
	b = append(b, `,"client_id":`...)
	b = appendJSONString(b, c.ClientID)
	b = append(b, `,"scope":`...)
	b = appendJSONString(b, c.Scope)
	b = append(b, `,"ks_cred":`...)
	b = appendJSONString(b, c.Credential)
	if c.Account != "" {
		b = append(b, `,"ks_account":`...)
		b = appendJSONString(b, c.Account)
	}
	if len(c.Workspaces) > 0 {
		b = append(b, `,"ks_workspaces":`...)
		b = appendJSONStrings(b, c.Workspaces)
	}
	b = append(b, `,"ks_apis":{`...)
	if c.grants != nil {
		for i, g := range c.grants {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, g.API)
			b = append(b, ':')
			b = appendJSONString(b, g.Permission)
		}
	} else {
		for i, api := range slices.Sorted(maps.Keys(c.APIs)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, api)
			b = append(b, ':')
			b = appendJSONString(b, c.APIs[api])
		}
	}
	b = append(b, `},"ks_sv":`...)
	b = appendJSONString(b, c.SecretVersion)
	if c.WorkloadServiceAccount != "" {
		b = append(b, `,"ks_wi":`...)
		b = appendJSONString(b, c.WorkloadServiceAccount)
	}
	return append(b, '}')
}

func appendJSONStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONString appends s as a JSON string (RFC 8259 escaping).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// derToRaw converts an ASN.1 ECDSA-Sig-Value into the fixed 64-byte r||s form of JWS
// (RFC 7518 §3.4) without going through math/big.
func derToRaw(der []byte, out *[64]byte) bool {
	var seq, r, s cryptobyte.String
	in := cryptobyte.String(der)
	if !in.ReadASN1(&seq, asn1.SEQUENCE) || !in.Empty() ||
		!seq.ReadASN1(&r, asn1.INTEGER) || !seq.ReadASN1(&s, asn1.INTEGER) || !seq.Empty() {
		return false
	}
	return fillScalar(out[:32], r) && fillScalar(out[32:], s)
}

// fillScalar right-aligns a positive DER INTEGER into dst.
func fillScalar(dst []byte, v []byte) bool {
	for len(v) > 0 && v[0] == 0 {
		v = v[1:]
	}
	if len(v) > len(dst) {
		return false
	}
	copy(dst[len(dst)-len(v):], v)
	return true
}

// errInvalidToken covers every reason a bearer token is refused; the reason is not
// disclosed to the caller.
var errInvalidToken = errors.New("invalid access token")

// es256SignatureSegmentLength is the length of the base64url of an ES256 signature, r||s.
const es256SignatureSegmentLength = 86

// p256N and p256HalfN are the order of P-256 and its half, for low-s signatures.
var (
	p256N     = elliptic.P256().Params().N
	p256HalfN = new(big.Int).Rsh(p256N, 1)
	// p256HalfNBytes is p256HalfN as a 32-byte big-endian number, compared without math/big.
	p256HalfNBytes = p256HalfN.FillBytes(make([]byte, 32))
)

// lowS replaces s with n-s when s > n/2. (r, s) and (r, n-s) both verify, so a verifier
// that accepted both would give every token two spellings; keysmith signs and accepts
// only the low one.
func lowS(sig *[64]byte) {
	if bytes.Compare(sig[32:], p256HalfNBytes) <= 0 {
		return
	}
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(p256N, s).FillBytes(sig[32:])
}

// strictB64 decodes base64url without padding and refuses non-zero trailing bits, so
// each byte string has exactly one encoding. It still skips CR and LF, which verify
// refuses before decoding.
var strictB64 = base64.RawURLEncoding.Strict()

// clockSkew is how far in the future a token's iat may be: token servers' clocks differ a
// little, and a token minted by one replica may reach another at once.
const clockSkew = time.Minute

// validClaims reports whether verified claims are acceptable at now: the issuer is this
// server's, exp is present and not reached, iat is not in the future (beyond clockSkew),
// and exp - iat is at most the longest lifetime this server issues, so a token (or a
// signing key misused elsewhere) cannot claim a life of years.
func validClaims(c *Claims, issuer string, maxLifetime time.Duration, now time.Time) bool {
	unix := now.Unix()
	switch {
	case c.Issuer != issuer:
		return false
	case c.ExpiresAt <= 0 || unix >= c.ExpiresAt:
		return false
	case c.IssuedAt <= 0 || c.IssuedAt > unix+int64(clockSkew/time.Second):
		return false
	case c.ExpiresAt-c.IssuedAt > int64((maxLifetime+time.Second-1)/time.Second):
		return false
	}
	return true
}
