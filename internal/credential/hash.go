package credential

import (
	"crypto/sha256"
	"crypto/subtle"
)

// HashSchemeSHA256 is the scheme name of hashes produced by [Hash]: a single,
// unsalted SHA-256 of the secret.
const HashSchemeSHA256 = "sha256"

const (
	hashPrefix = HashSchemeSHA256 + ":"
	hashHexLen = 2 * sha256.Size
	hashLen    = len(hashPrefix) + hashHexLen
)

// hashStackBuf bounds the secrets hashed without a heap allocation. Real
// secrets are 53 bytes; longer input is still hashed correctly.
const hashStackBuf = 128

// Hash returns the hash under which keysmith stores secret:
// "sha256:" followed by the 64-digit lowercase hex SHA-256 of secret.
//
// A fast hash is deliberate: secrets from [NewSecret] carry 256 bits of
// entropy, so they cannot be brute-forced even against a fast hash, and a
// slow KDF such as bcrypt or Argon2 would add no security while costing
// token-server throughput. No salt is needed for the same reason. Hash
// accepts any string and does not check it with [ParseSecret].
func Hash(secret string) string { return FormatHash(Digest(secret)) }

// Digest returns the SHA-256 digest of secret that [Hash] formats: FormatHash(Digest(s))
// is Hash(s). For callers that hold many hashes: 32 bytes instead of a 71-byte string.
// Like [Verify], it does not allocate for secrets of up to 128 bytes.
func Digest(secret string) [sha256.Size]byte { return sum256(secret) }

// FormatHash returns the hash string of a digest, as [Hash] returns it: the inverse of
// [ParseHash], so FormatHash(d) is well formed and ParseHash of it is d.
func FormatHash(sum [sha256.Size]byte) string {
	var buf [hashLen]byte
	copy(buf[:], hashPrefix)
	const hexDigits = "0123456789abcdef"
	for i, b := range sum {
		buf[len(hashPrefix)+2*i] = hexDigits[b>>4]
		buf[len(hashPrefix)+2*i+1] = hexDigits[b&0x0f]
	}
	return string(buf[:])
}

// Verify reports whether hash, as produced by [Hash], is the hash of secret.
// It returns false if hash is not well formed (see [ValidHash]), including
// for unknown schemes and for uppercase hex. The digests are compared with
// crypto/subtle.ConstantTimeCompare.
//
// Verify is meant for the token server's hot path: it does not allocate for
// secrets of up to 128 bytes. It does not check the secret's format; call
// [ParseSecret] first to reject malformed input without hashing.
func Verify(secret, hash string) bool {
	want, ok := parseHash(hash)
	if !ok {
		return false
	}
	got := sum256(secret)
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// ParseHash decodes a hash as produced by [Hash] into its SHA-256 digest; ok is
// false, as [Verify] would refuse every secret, when it is not well formed (see
// [ValidHash]). For callers that hold many hashes: 32 bytes instead of a 71-byte string.
func ParseHash(hash string) (digest [sha256.Size]byte, ok bool) { return parseHash(hash) }

// VerifyDigest reports whether digest, as returned by [ParseHash], is the digest of
// secret, comparing in constant time; it does not allocate for secrets of up to 128
// bytes, like [Verify].
func VerifyDigest(secret string, digest *[sha256.Size]byte) bool {
	got := sum256(secret)
	return subtle.ConstantTimeCompare(got[:], digest[:]) == 1
}

// ValidHash reports whether hash is a well-formed stored hash: exactly
// "sha256:" followed by 64 lowercase hex digits. Uppercase hex is rejected so
// that every secret has exactly one valid hash string, the one [Hash]
// returns.
func ValidHash(hash string) bool {
	_, ok := parseHash(hash)
	return ok
}

// parseHash decodes a hash string into its digest without allocating.
// Timing here depends only on the stored hash, not on the presented secret.
func parseHash(hash string) (digest [sha256.Size]byte, ok bool) {
	if len(hash) != hashLen || hash[:len(hashPrefix)] != hashPrefix {
		return digest, false
	}
	h := hash[len(hashPrefix):]
	for i := range digest {
		hi, ok1 := lowerHexValue(h[2*i])
		lo, ok2 := lowerHexValue(h[2*i+1])
		if !ok1 || !ok2 {
			return digest, false
		}
		digest[i] = hi<<4 | lo
	}
	return digest, true
}

func lowerHexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// sum256 returns the SHA-256 of s. Converting s to []byte directly would
// heap-allocate for strings longer than 32 bytes, so short strings are
// copied to a stack buffer first.
func sum256(s string) [sha256.Size]byte {
	if len(s) <= hashStackBuf {
		var buf [hashStackBuf]byte
		n := copy(buf[:], s)
		sum := sha256.Sum256(buf[:n])
		clear(buf[:n])
		return sum
	}
	return sha256.Sum256([]byte(s))
}
