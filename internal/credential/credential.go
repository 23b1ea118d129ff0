package credential

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
)

// ClientIDPrefix is the fixed prefix of every client ID produced by
// [NewClientID].
const ClientIDPrefix = "ksc_"

// SecretPrefix is the fixed prefix of every client secret produced by
// [NewSecret].
const SecretPrefix = "kss_"

const (
	clientIDRandomBytes = 16
	clientIDBodyLen     = 26 // base32, unpadded: ceil(16*8/5)
	clientIDLen         = len(ClientIDPrefix) + clientIDBodyLen

	secretRandomBytes = 32
	secretBodyLen     = 43 // base62: smallest n with 62^n > 2^256
	secretChecksumLen = 6  // base62: smallest n with 62^n > 2^32
	secretLen         = len(SecretPrefix) + secretBodyLen + secretChecksumLen
	secretChecksumPos = len(SecretPrefix) + secretBodyLen
)

// clientIDAlphabet is the RFC 4648 base32 alphabet, lowercased.
const clientIDAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

var clientIDEncoding = base32.NewEncoding(clientIDAlphabet).WithPadding(base32.NoPadding)

// base62Alphabet orders digits by ASCII value, so for equal-length strings
// lexical order matches numeric order.
const base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewClientID returns a new random client ID: [ClientIDPrefix] followed by
// 16 bytes from crypto/rand encoded as 26 characters of unpadded, lowercase
// base32 (30 characters in total).
//
// The error is non-nil only if the system random source fails; see
// [NewSecret].
func NewClientID() (string, error) {
	return newClientID(rand.Reader)
}

func newClientID(r io.Reader) (string, error) {
	var raw [clientIDRandomBytes]byte
	if _, err := io.ReadFull(r, raw[:]); err != nil {
		return "", fmt.Errorf("credential: generating client ID: %w", err)
	}
	return clientIDFromBytes(raw), nil
}

func clientIDFromBytes(raw [clientIDRandomBytes]byte) string {
	var buf [clientIDLen]byte
	copy(buf[:], ClientIDPrefix)
	clientIDEncoding.Encode(buf[len(ClientIDPrefix):], raw[:])
	return string(buf[:])
}

// ValidClientID reports whether s is a well-formed client ID: exactly
// [ClientIDPrefix] followed by 26 characters of lowercase base32 in canonical
// form (the unused low bits of the final character are zero), as produced by
// [NewClientID]. It does not allocate.
func ValidClientID(s string) bool {
	if len(s) != clientIDLen || s[:len(ClientIDPrefix)] != ClientIDPrefix {
		return false
	}
	for i := len(ClientIDPrefix); i < len(s); i++ {
		v := base32Value(s[i])
		if v < 0 {
			return false
		}
		// 26 characters carry 130 bits for 128 bits of data: the last
		// character's two low bits must be zero.
		if i == len(s)-1 && v&0b11 != 0 {
			return false
		}
	}
	return true
}

// base32Value returns the value of c in clientIDAlphabet, or -1.
func base32Value(c byte) int {
	switch {
	case 'a' <= c && c <= 'z':
		return int(c - 'a')
	case '2' <= c && c <= '7':
		return int(c-'2') + 26
	}
	return -1
}

// NewSecret returns a new random client secret: [SecretPrefix], then 32 bytes
// from crypto/rand as a 43-character base62 number (left-padded with '0'),
// then a 6-character base62 CRC-32 checksum of everything before it (53
// characters in total). The result always satisfies [ParseSecret].
//
// The error is non-nil only if crypto/rand.Reader fails; the operating
// system APIs it uses are documented never to fail except on legacy Linux,
// so in practice the error is nil.
func NewSecret() (string, error) {
	return newSecret(rand.Reader)
}

func newSecret(r io.Reader) (string, error) {
	var raw [secretRandomBytes]byte
	if _, err := io.ReadFull(r, raw[:]); err != nil {
		// err comes from the random source and cannot contain the secret.
		return "", fmt.Errorf("credential: generating secret: %w", err)
	}
	s := secretFromBytes(&raw)
	clear(raw[:])
	return s, nil
}

// secretFromBytes encodes raw as a complete secret, checksum included. raw is
// zero on return.
func secretFromBytes(raw *[secretRandomBytes]byte) string {
	var buf [secretLen]byte
	copy(buf[:], SecretPrefix)

	// Treat raw as a big-endian 256-bit number held in eight 32-bit limbs
	// and repeatedly divide it by 62^5, which turns each remainder into five
	// base62 digits, least significant first. 8 passes yield 40 digits; the
	// quotient left is then below 2^256/62^40 < 62^3, so a ninth pass yields
	// the last 3. The loop is fixed-length, so leading zeros become leading
	// '0' digits and the body is always exactly secretBodyLen characters.
	const pow62x5 = 62 * 62 * 62 * 62 * 62
	var limbs [secretRandomBytes / 4]uint32
	for i := range limbs {
		limbs[i] = binary.BigEndian.Uint32(raw[4*i:])
	}
	clear(raw[:])
	pos := secretChecksumPos - 1
	for pass := range 9 {
		var rem uint64
		for j := range limbs {
			acc := rem<<32 | uint64(limbs[j]) // rem < 62^5 < 2^30: no overflow
			limbs[j] = uint32(acc / pow62x5)
			rem = acc % pow62x5
		}
		digits := 5
		if pass == 8 {
			digits = secretBodyLen - 8*5
		}
		for range digits {
			buf[pos] = base62Alphabet[rem%62]
			rem /= 62
			pos--
		}
	}
	clear(limbs[:])

	putChecksum((*[secretChecksumLen]byte)(buf[secretChecksumPos:]), checksum(buf[:secretChecksumPos]))
	s := string(buf[:])
	clear(buf[:])
	return s
}

// checksum returns the CRC-32 (IEEE) of b. It is computed inline from
// crc32.IEEETable, rather than with crc32.ChecksumIEEE, so that ParseSecret
// can checksum a substring of its argument without allocating.
func checksum[T string | []byte](b T) uint32 {
	crc := ^uint32(0)
	for i := 0; i < len(b); i++ {
		crc = crc32.IEEETable[byte(crc)^b[i]] ^ crc>>8
	}
	return ^crc
}

// putChecksum writes c as a secretChecksumLen-digit base62 number.
func putChecksum(dst *[secretChecksumLen]byte, c uint32) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = base62Alphabet[c%62]
		c /= 62
	}
}

// ErrMalformedSecret is matched, via [errors.Is], by every error returned by
// [ParseSecret]. Use [errors.As] with [*MalformedSecretError] to get the
// reason.
var ErrMalformedSecret = errors.New("credential: malformed secret")

// MalformedSecretError is the error type returned by [ParseSecret]. Its
// message never contains the secret or any part of it, so it is safe to log
// and to return to clients.
type MalformedSecretError struct {
	// Reason says what is wrong, for example "checksum mismatch".
	Reason string
}

// Error implements the error interface.
func (e *MalformedSecretError) Error() string {
	return ErrMalformedSecret.Error() + ": " + e.Reason
}

// Unwrap returns [ErrMalformedSecret], so that errors.Is(err,
// ErrMalformedSecret) reports true.
func (e *MalformedSecretError) Unwrap() error { return ErrMalformedSecret }

// ParseSecret checks that s is a well-formed client secret: it starts with
// [SecretPrefix], is exactly 53 characters long, contains only base62
// characters after the prefix, and carries a correct checksum. It returns nil
// if so, and otherwise a [*MalformedSecretError], which matches
// [ErrMalformedSecret].
//
// A nil result is a format check only: it says nothing about whether s is a
// secret keysmith issued. (It also does not check that the body is below
// 2^256, so a few well-formed strings could never come from [NewSecret].) Calling it before
// [Verify] rejects typos, truncation and garbage without hashing.
//
// ParseSecret runs in constant memory and never panics; input of the wrong
// length is rejected without being scanned. Its errors never include any
// part of s.
func ParseSecret(s string) error {
	if len(s) < len(SecretPrefix) || s[:len(SecretPrefix)] != SecretPrefix {
		return &MalformedSecretError{Reason: `missing prefix "` + SecretPrefix + `"`}
	}
	if len(s) != secretLen {
		// len counts bytes; for a well-formed secret bytes and characters
		// coincide. Only the length is reported, never content.
		return &MalformedSecretError{Reason: "wrong length: got " + strconv.Itoa(len(s)) +
			" bytes, want " + strconv.Itoa(secretLen)}
	}
	for i := len(SecretPrefix); i < len(s); i++ {
		if !isBase62(s[i]) {
			// Report the byte offset only, not the offending byte.
			return &MalformedSecretError{Reason: "invalid character at position " + strconv.Itoa(i)}
		}
	}
	var want [secretChecksumLen]byte
	putChecksum(&want, checksum(s[:secretChecksumPos]))
	if string(want[:]) != s[secretChecksumPos:] {
		// Never report the expected or actual checksum: the expected one is
		// derived from the body.
		return &MalformedSecretError{Reason: "checksum mismatch"}
	}
	return nil
}

func isBase62(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}
