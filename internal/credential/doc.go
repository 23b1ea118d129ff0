// Package credential generates, parses and hashes the machine API
// credentials minted by keysmith: an OAuth2 client ID and client secret.
//
// # Client IDs
//
// A client ID is [ClientIDPrefix] ("ksc_") followed by 16 bytes from
// crypto/rand encoded as unpadded, lowercase RFC 4648 base32, 30 characters
// in total, for example:
//
//	ksc_mfrggzdfmztwq2lknnwg23tpoa
//
// Client IDs are identifiers, not secrets. They are lowercase so they can be
// used as Kubernetes label values and in URLs without escaping. (The '_' in
// the prefix means they are not valid DNS-1123 object names.)
//
// # Client secrets
//
// A client secret is [SecretPrefix] ("kss_") followed by a 43-character
// base62 body (0-9A-Za-z) that encodes 32 bytes from crypto/rand, followed by
// a 6-character base62 checksum, 53 characters in total:
//
//	kss_<43 body characters><6 checksum characters>
//
// The body is the 256-bit random value written as a big-endian base62 number,
// left-padded with '0' to exactly 43 digits (62^43 > 2^256, so every value
// fits). The checksum is the CRC-32 (IEEE) of the prefix and body, written the
// same way and left-padded to 6 digits. The prefix makes leaked secrets easy
// to recognise by secret scanners; the checksum lets [ParseSecret] reject
// mistyped or truncated secrets, and scanners reject false positives, without
// any lookup. The checksum is not a security mechanism.
//
// # Hashes
//
// keysmith never stores a secret, only its hash as produced by [Hash], a
// versioned string of the form "sha256:<64 lowercase hex digits>". The token
// server checks a presented secret with [Verify].
//
// A plain SHA-256 is deliberate. Slow password hashes (bcrypt, scrypt,
// Argon2, PBKDF2) exist to make guessing low-entropy, human-chosen passwords
// expensive. A keysmith secret carries at least 256 bits of entropy, so brute
// force is already infeasible against a fast hash and a slow KDF would add no
// security, while costing throughput and latency on the token server's hot
// path. The scheme prefix leaves room to change the algorithm later.
//
// A typical token-server check is:
//
//	if err := credential.ParseSecret(presented); err != nil {
//		return errInvalidClient // cheap rejection, no hashing
//	}
//	if !credential.Verify(presented, storedHash) {
//		return errInvalidClient
//	}
//
// Error values and messages from this package never contain a secret or any
// part of one, so they are safe to log.
package credential
