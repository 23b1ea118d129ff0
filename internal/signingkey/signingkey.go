// Package signingkey holds the keys that sign keysmith access tokens (ES256 by default,
// RS256 or EdDSA on request): how they are generated, stored in one Secret, chosen for
// signing, published as a JWKS, and rotated without ever invalidating a token that is
// still within its lifetime.
//
// A key goes through three stages. It is published (in the JWKS) from the moment it is
// generated, so that relying parties fetch it before they see a token it signed. It
// signs from ActivatesAt until a newer key activates; that moment is its RetiredAt.
// It stays published for Policy.Retention after retirement, which must exceed the
// longest token lifetime, and is then pruned.
//
// A set may mix algorithms: when Policy.Algorithm differs from the newest key's, Plan
// pre-publishes a successor of the new algorithm at once, and the old keys stay published
// for the retention like any retired key.
package signingkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// DataKey is the key of the signing key Secret's data that holds the key set.
const DataKey = "keys.json"

// RetentionAnnotation on the signing key Secret and its public ConfigMap records the
// manager's retention policy, so that a token server can warn when its token lifetime
// exceeds it (tokens would then outlive the key that signed them).
const RetentionAnnotation = "iam.keysmith.dev/retention"

// PublicDataKey is the key of the public ConfigMap's data that holds the JWKS: what
// verify-only token servers read, so that sidecars never see a private key.
const PublicDataKey = "jwks.json"

// PublicName is the name of the ConfigMap that publishes the public keys of the signing
// key Secret named secret.
func PublicName(secret string) string { return secret + "-public" }

// The JWS algorithms (RFC 7518 §3.1, RFC 8037 §3.1) keysmith signs with.
const (
	// ES256 is ECDSA with P-256 and SHA-256: the default, the smallest and fastest to sign.
	ES256 = "ES256"
	// RS256 is RSASSA-PKCS1-v1_5 with SHA-256 and a 2048-bit key, the algorithm RFC 9068
	// §4 requires every authorization server to support.
	RS256 = "RS256"
	// EdDSA is Ed25519, under the JWS name go-jose and most verifiers use.
	EdDSA = "EdDSA"
)

// DefaultAlgorithm is the algorithm of new keys when the policy names none.
const DefaultAlgorithm = ES256

// Algorithms lists the supported algorithms, the default first.
var Algorithms = []string{ES256, RS256, EdDSA}

// RSABits is the size of generated RSA keys, RFC 7518 §3.3's minimum; Parse refuses
// smaller ones.
const RSABits = 2048

// maxRSABits bounds the RSA keys Parse accepts, so that a hand-edited Secret cannot make
// every token cost a 16384-bit signature.
const maxRSABits = 4096

// ValidAlgorithm reports an algorithm keysmith cannot sign with.
func ValidAlgorithm(alg string) error {
	for _, a := range Algorithms {
		if alg == a {
			return nil
		}
	}
	return fmt.Errorf("signing algorithm %q is not supported (want one of %v)", alg, Algorithms)
}

// Key is one signing key.
type Key struct {
	// ID is the key's RFC 7638 JWK thumbprint (SHA-256, base64url), used as the JWS kid.
	ID string
	// Algorithm is the JWS algorithm: ES256, RS256 or EdDSA.
	Algorithm string
	// Private is the private key: *ecdsa.PrivateKey (P-256) for ES256, *rsa.PrivateKey
	// for RS256, ed25519.PrivateKey for EdDSA.
	Private crypto.Signer
	// CreatedAt is when the key was generated and first published.
	CreatedAt time.Time
	// ActivatesAt is when the key starts to sign.
	ActivatesAt time.Time
	// RetiredAt is when a newer key took over signing; nil while the key is the newest.
	RetiredAt *time.Time
}

// Set is the ordered set of keys stored in the signing key Secret, oldest first. Every
// key in it is published (Plan prunes keys retired for longer than the retention).
type Set struct {
	// Keys are the keys, oldest ActivatesAt first.
	Keys []Key
}

// Policy says how often keys rotate and how long they stay published.
type Policy struct {
	// RotationPeriod is how long a key signs before its successor takes over.
	RotationPeriod time.Duration
	// PrePublish is how long a new key is published before it signs, so that relying
	// parties that cache the JWKS know it before they meet a token it signed.
	PrePublish time.Duration
	// Retention is how long a retired key stays published. It must exceed the longest
	// access token lifetime.
	Retention time.Duration
	// Algorithm is the JWS algorithm of the keys Plan generates; empty means
	// DefaultAlgorithm. Keys of another algorithm already in the set stay valid.
	Algorithm string
}

// KeyAlgorithm returns the policy's algorithm, defaulted.
func (p Policy) KeyAlgorithm() string {
	if p.Algorithm == "" {
		return DefaultAlgorithm
	}
	return p.Algorithm
}

// Validate reports a policy that cannot work.
func (p Policy) Validate() error {
	var errs []error
	if p.RotationPeriod <= 0 {
		errs = append(errs, errors.New("rotation period must be positive"))
	}
	if p.PrePublish < 0 || p.PrePublish >= p.RotationPeriod {
		errs = append(errs, fmt.Errorf("pre-publish period %s must be at least 0 and shorter than the rotation period %s", p.PrePublish, p.RotationPeriod))
	}
	if p.Retention <= 0 {
		errs = append(errs, errors.New("retention must be positive"))
	}
	if err := ValidAlgorithm(p.KeyAlgorithm()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Generate returns a new ES256 (P-256) key that is published from now and signs from
// activatesAt.
func Generate(now, activatesAt time.Time) (Key, error) {
	return GenerateAlgorithm(ES256, now, activatesAt)
}

// GenerateAlgorithm returns a new key for alg (ES256: P-256; RS256: RSA 2048; EdDSA:
// Ed25519) that is published from now and signs from activatesAt.
func GenerateAlgorithm(alg string, now, activatesAt time.Time) (Key, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RS256:
		priv, err = rsa.GenerateKey(rand.Reader, RSABits)
	case EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return Key{}, ValidAlgorithm(alg)
	}
	if err != nil {
		return Key{}, fmt.Errorf("generating a %s key: %w", alg, err)
	}
	id, err := thumbprint(priv.Public())
	if err != nil {
		return Key{}, err
	}
	return Key{
		ID: id, Algorithm: alg, Private: priv,
		CreatedAt: now.UTC().Truncate(time.Second), ActivatesAt: activatesAt.UTC().Truncate(time.Second),
	}, nil
}

// thumbprint is the RFC 7638 thumbprint of pub (RFC 8037 §2 for OKP keys).
func thumbprint(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("computing the key thumbprint: %w", err)
	}
	return base64URL(tp), nil
}

// Signing returns the key that signs at now: the newest key whose ActivatesAt has come.
func (s *Set) Signing(now time.Time) (*Key, bool) {
	for i := len(s.Keys) - 1; i >= 0; i-- {
		if !s.Keys[i].ActivatesAt.After(now) {
			return &s.Keys[i], true
		}
	}
	return nil, false
}

// NextActivation returns the earliest ActivatesAt after now, if any: the moment a token
// server must switch to a new signing key.
func (s *Set) NextActivation(now time.Time) (time.Time, bool) {
	for _, k := range s.Keys {
		if k.ActivatesAt.After(now) {
			return k.ActivatesAt, true
		}
	}
	return time.Time{}, false
}

// JWKS returns the RFC 7517 JSON Web Key Set of the published public keys.
func (s *Set) JWKS() ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(s.Keys))}
	for _, k := range s.Keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Private.Public(), KeyID: k.ID, Algorithm: k.Algorithm, Use: "sig"})
	}
	return json.Marshal(set)
}

// storedKey is the JSON form of a Key in the Secret.
type storedKey struct {
	ID          string     `json:"kid"`
	Algorithm   string     `json:"alg"`
	PrivateKey  string     `json:"privateKey"`
	CreatedAt   time.Time  `json:"createdAt"`
	ActivatesAt time.Time  `json:"activatesAt"`
	RetiredAt   *time.Time `json:"retiredAt,omitempty"`
}

type storedSet struct {
	Keys []storedKey `json:"keys"`
}

// Marshal returns the Secret form of the set.
func (s *Set) Marshal() ([]byte, error) {
	out := storedSet{Keys: make([]storedKey, 0, len(s.Keys))}
	for _, k := range s.Keys {
		der, err := x509.MarshalPKCS8PrivateKey(k.Private)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", k.ID, err)
		}
		out.Keys = append(out.Keys, storedKey{
			ID: k.ID, Algorithm: k.Algorithm, CreatedAt: k.CreatedAt, ActivatesAt: k.ActivatesAt, RetiredAt: k.RetiredAt,
			PrivateKey: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		})
	}
	return json.MarshalIndent(out, "", "  ")
}

// Parse reads the Secret form of a set. It refuses anything it could not sign or verify
// with: a missing or foreign key, a kid that is not the key's thumbprint, a duplicate.
func Parse(data []byte) (*Set, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%s is empty", DataKey)
	}
	var in storedSet
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, fmt.Errorf("%s: %w", DataKey, err)
	}
	if len(in.Keys) == 0 {
		return nil, fmt.Errorf("%s holds no keys", DataKey)
	}
	set := &Set{Keys: make([]Key, 0, len(in.Keys))}
	seen := map[string]bool{}
	for i, sk := range in.Keys {
		k, err := parseKey(sk)
		if err != nil {
			return nil, fmt.Errorf("%s: keys[%d]: %w", DataKey, i, err)
		}
		if seen[k.ID] {
			return nil, fmt.Errorf("%s: keys[%d]: duplicate kid %q", DataKey, i, k.ID)
		}
		seen[k.ID] = true
		set.Keys = append(set.Keys, k)
	}
	sort.SliceStable(set.Keys, func(i, j int) bool { return set.Keys[i].ActivatesAt.Before(set.Keys[j].ActivatesAt) })
	return set, nil
}

func parseKey(sk storedKey) (Key, error) {
	if err := ValidAlgorithm(sk.Algorithm); err != nil {
		return Key{}, err
	}
	block, _ := pem.Decode([]byte(sk.PrivateKey))
	if block == nil || block.Type != "PRIVATE KEY" {
		return Key{}, errors.New("privateKey is not a PEM PKCS #8 private key")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return Key{}, fmt.Errorf("privateKey: %w", err)
	}
	// The declared alg must match the key's type: a key is used with one algorithm only.
	var priv crypto.Signer
	switch k := parsed.(type) {
	case *ecdsa.PrivateKey:
		if sk.Algorithm != ES256 || k.Curve != elliptic.P256() {
			return Key{}, fmt.Errorf("privateKey is an ECDSA key, not a key for alg %s", sk.Algorithm)
		}
		priv = k
	case *rsa.PrivateKey:
		if sk.Algorithm != RS256 {
			return Key{}, fmt.Errorf("privateKey is an RSA key, not a key for alg %s", sk.Algorithm)
		}
		if bits := k.N.BitLen(); bits < RSABits || bits > maxRSABits {
			return Key{}, fmt.Errorf("privateKey is a %d-bit RSA key, want %d to %d bits", bits, RSABits, maxRSABits)
		}
		priv = k
	case ed25519.PrivateKey:
		if sk.Algorithm != EdDSA {
			return Key{}, fmt.Errorf("privateKey is an Ed25519 key, not a key for alg %s", sk.Algorithm)
		}
		priv = k
	default:
		return Key{}, fmt.Errorf("privateKey is a %T, not a key for alg %s", parsed, sk.Algorithm)
	}
	id, err := thumbprint(priv.Public())
	if err != nil {
		return Key{}, err
	}
	if id != sk.ID {
		return Key{}, fmt.Errorf("kid %q is not the key's thumbprint %q", sk.ID, id)
	}
	return Key{ID: id, Algorithm: sk.Algorithm, Private: priv, CreatedAt: sk.CreatedAt, ActivatesAt: sk.ActivatesAt, RetiredAt: sk.RetiredAt}, nil
}

// Plan returns the set as it should be at now under policy, and whether that differs
// from set (nil means no Secret yet). It generates the first key, which signs at once;
// generates a successor PrePublish before the signing key's period ends; marks a key
// retired from the moment its successor activates; and prunes keys retired for longer
// than Retention. It never removes the key that signs at now. When the newest key's
// algorithm is not policy.Algorithm, it pre-publishes a successor of that algorithm at
// once, which signs after PrePublish (or when the newest key activates, if later).
func Plan(set *Set, now time.Time, policy Policy) (*Set, bool, error) {
	if err := policy.Validate(); err != nil {
		return nil, false, err
	}
	if set == nil || len(set.Keys) == 0 {
		k, err := GenerateAlgorithm(policy.KeyAlgorithm(), now, now)
		if err != nil {
			return nil, false, err
		}
		return &Set{Keys: []Key{k}}, true, nil
	}
	next := &Set{Keys: append([]Key(nil), set.Keys...)}
	changed := false

	newest := &next.Keys[len(next.Keys)-1]
	switch {
	case newest.Algorithm != policy.KeyAlgorithm():
		// A change of algorithm does not wait for the rotation: the successor is
		// published now and signs after the usual pre-publication.
		activates := now.Add(policy.PrePublish)
		if activates.Before(newest.ActivatesAt) {
			activates = newest.ActivatesAt
		}
		k, err := GenerateAlgorithm(policy.KeyAlgorithm(), now, activates)
		if err != nil {
			return nil, false, err
		}
		next.Keys = append(next.Keys, k)
		changed = true
	case !now.Before(newest.ActivatesAt.Add(policy.RotationPeriod - policy.PrePublish)):
		activates := now.Add(policy.PrePublish)
		if end := newest.ActivatesAt.Add(policy.RotationPeriod); activates.Before(end) {
			activates = end
		}
		k, err := GenerateAlgorithm(policy.KeyAlgorithm(), now, activates)
		if err != nil {
			return nil, false, err
		}
		next.Keys = append(next.Keys, k)
		changed = true
	}
	// Every key but the newest is retired when its successor activates.
	for i := 0; i < len(next.Keys)-1; i++ {
		at := next.Keys[i+1].ActivatesAt
		if next.Keys[i].RetiredAt == nil || !next.Keys[i].RetiredAt.Equal(at) {
			next.Keys[i].RetiredAt = &at
			changed = true
		}
	}
	signing, _ := next.Signing(now)
	kept := next.Keys[:0]
	for _, k := range next.Keys {
		if k.RetiredAt != nil && !now.Before(k.RetiredAt.Add(policy.Retention)) && (signing == nil || k.ID != signing.ID) {
			changed = true
			continue
		}
		kept = append(kept, k)
	}
	next.Keys = kept
	return next, changed, nil
}

// NextEvent returns when Plan will next change the set: a successor is due, or a
// retired key's retention ends.
func NextEvent(set *Set, policy Policy) time.Time {
	if set == nil || len(set.Keys) == 0 {
		return time.Time{}
	}
	newest := set.Keys[len(set.Keys)-1]
	next := newest.ActivatesAt.Add(policy.RotationPeriod - policy.PrePublish)
	for _, k := range set.Keys {
		if k.RetiredAt != nil {
			if t := k.RetiredAt.Add(policy.Retention); t.Before(next) {
				next = t
			}
		}
	}
	return next
}

func base64URL(b []byte) string {
	return base64.RawURLEncoding.EncodeToString(b)
}
