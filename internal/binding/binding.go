// Package binding computes and verifies the operator's binding of a credential Secret's
// data to its credential (DESIGN §2 item 9): an HMAC-SHA256, keyed by a key only the
// manager holds, over the credential's namespace and name, the client ID, the hash of the
// secret, the key version and the issue time. Whoever can write the Secret but not read
// the key can neither choose a secret nor carry another credential's client ID into it:
// the operator adopts a Secret's data only when its binding verifies.
//
// The binding covers the namespace and name of the credential, not its UID, so that a
// credential restored from a backup (a new UID) still recognises its Secret.
//
// The package has no Kubernetes imports: the controllers read the Secret and the key
// ring, this package only signs and verifies.
package binding

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"
)

// Version is the first field of every binding value: "v1.<key ID>.<MAC>".
const Version = "v1"

// domain separates this MAC from any other use of the key; it is the first input field.
const domain = "keysmith.dev/secret-binding/v1"

// KeySize is the size of a binding key in bytes.
const KeySize = 32

// keyIDBytes is the size of the random key ID before hex encoding.
const keyIDBytes = 4

// MaxKeys bounds the key ring: the current key and the retained previous ones. A Secret
// bound under a key that fell off the ring is re-bound while its credential's status
// still records its hash; only a restore without status needs the retained keys.
const MaxKeys = 5

// Subject is what a binding binds together. Namespace and Name are the credential's;
// the rest comes from the Secret: its client ID, the hash of its secret, and its
// key-version and issued-at annotations.
type Subject struct {
	// Namespace is the credential's namespace.
	Namespace string
	// Name is the credential's name.
	Name string
	// ClientID is the client ID held in the Secret.
	ClientID string
	// SecretHash is the hash of the secret held in the Secret (credential.Hash).
	SecretHash string
	// KeyVersion is the spec.rotation.keyVersion the secret was issued for.
	KeyVersion int64
	// IssuedAt is when the secret was issued; the zero time when unknown. It is bound at
	// second precision in UTC, so that a Secret written back with a moved issue time is
	// not taken for a newer rotation.
	IssuedAt time.Time
}

// message writes the unambiguous encoding of s into h: the domain tag and then every
// field, each as a 4-byte big-endian length followed by its bytes.
func (s Subject) message(h hash.Hash) {
	issuedAt := ""
	if !s.IssuedAt.IsZero() {
		issuedAt = s.IssuedAt.UTC().Truncate(time.Second).Format(time.RFC3339)
	}
	for _, field := range []string{
		domain, s.Namespace, s.Name, s.ClientID, s.SecretHash,
		strconv.FormatInt(s.KeyVersion, 10), issuedAt,
	} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(field)))
		h.Write(n[:])
		h.Write([]byte(field))
	}
}

// Key is one binding key.
type Key struct {
	// ID names the key in binding values: 8 lowercase hex digits.
	ID string `json:"id"`
	// Secret is the HMAC key, KeySize random bytes.
	Secret []byte `json:"secret"`
	// CreatedAt is when the key was generated.
	CreatedAt time.Time `json:"createdAt"`
}

// NewKey returns a key of KeySize bytes from crypto/rand.
func NewKey(now time.Time) (Key, error) {
	k := Key{Secret: make([]byte, KeySize), CreatedAt: now.UTC().Truncate(time.Second)}
	id := make([]byte, keyIDBytes)
	if _, err := rand.Read(k.Secret); err != nil {
		return Key{}, fmt.Errorf("generating a binding key: %w", err)
	}
	if _, err := rand.Read(id); err != nil {
		return Key{}, fmt.Errorf("generating a binding key ID: %w", err)
	}
	k.ID = hex.EncodeToString(id)
	return k, nil
}

func (k Key) mac(s Subject) []byte {
	h := hmac.New(sha256.New, k.Secret)
	s.message(h)
	return h.Sum(nil)
}

// Ring is the set of binding keys: Keys[0] signs, every key verifies, newest first.
type Ring struct {
	// Keys are the keys, the current one first. At most MaxKeys.
	Keys []Key `json:"keys"`
}

// NewRing returns a ring holding one new key.
func NewRing(now time.Time) (*Ring, error) {
	k, err := NewKey(now)
	if err != nil {
		return nil, err
	}
	return &Ring{Keys: []Key{k}}, nil
}

// Current returns the key that signs.
func (r *Ring) Current() Key { return r.Keys[0] }

// Rotate makes a new key current and retains the previous ones, dropping the oldest
// beyond MaxKeys.
func (r *Ring) Rotate(now time.Time) error {
	for {
		k, err := NewKey(now)
		if err != nil {
			return err
		}
		if _, taken := r.key(k.ID); taken {
			continue // 32 random bits collided with a retained key: draw again
		}
		r.Keys = append([]Key{k}, r.Keys...)
		if len(r.Keys) > MaxKeys {
			r.Keys = r.Keys[:MaxKeys]
		}
		return nil
	}
}

func (r *Ring) key(id string) (Key, bool) {
	for _, k := range r.Keys {
		if k.ID == id {
			return k, true
		}
	}
	return Key{}, false
}

// Sign returns the binding value of s under the current key: "v1.<key ID>.<MAC>", the
// MAC in unpadded base64url.
func (r *Ring) Sign(s Subject) string {
	k := r.Current()
	return Version + "." + k.ID + "." + base64.RawURLEncoding.EncodeToString(k.mac(s))
}

// PackedSize is the size of a packed binding value (Pack): the key ID's bytes and the MAC.
const PackedSize = keyIDBytes + sha256.Size

// Pack returns the binary form of value, for callers that hold many: the key ID and the
// MAC decoded, 36 bytes instead of a 55-byte string. ok is false unless value is exactly
// in the form Sign writes (version, lowercase hex key ID, unpadded base64url MAC of the
// right size), so that Unpack of the result is value itself, byte for byte; a value in
// any other form is to be kept as it is. Pack verifies nothing.
func Pack(value string) (packed [PackedSize]byte, ok bool) {
	version, rest, ok := strings.Cut(value, ".")
	if !ok || version != Version {
		return packed, false
	}
	id, encoded, ok := strings.Cut(rest, ".")
	if !ok || !validKeyID(id) || base64.RawURLEncoding.EncodedLen(sha256.Size) != len(encoded) {
		return packed, false
	}
	if _, err := hex.Decode(packed[:keyIDBytes], []byte(id)); err != nil {
		return packed, false
	}
	if n, err := base64.RawURLEncoding.Strict().Decode(packed[keyIDBytes:], []byte(encoded)); err != nil || n != sha256.Size {
		return packed, false
	}
	if Unpack(packed) != value {
		return packed, false
	}
	return packed, true
}

// Unpack returns the binding value that Pack packed.
func Unpack(packed [PackedSize]byte) string {
	return Version + "." + hex.EncodeToString(packed[:keyIDBytes]) + "." + base64.RawURLEncoding.EncodeToString(packed[keyIDBytes:])
}

// Result is the outcome of verifying a binding.
type Result int

const (
	// Unbound: the value is absent, malformed, names no key of the ring, or does not
	// match the subject. The Secret's data is not the operator's for this credential.
	Unbound Result = iota
	// BoundRetained: the value verifies under a retained previous key; re-bind it.
	BoundRetained
	// BoundCurrent: the value verifies under the current key.
	BoundCurrent
)

var resultNames = [...]string{"Unbound", "BoundRetained", "BoundCurrent"}

func (r Result) String() string { return resultNames[r] }

// Bound reports whether the binding verified under some key of the ring.
func (r Result) Bound() bool { return r != Unbound }

// Verify checks the binding value against s under every key of the ring. The MACs are
// compared with hmac.Equal (constant time).
func (r *Ring) Verify(value string, s Subject) Result {
	version, rest, ok := strings.Cut(value, ".")
	if !ok || version != Version {
		return Unbound
	}
	id, encoded, ok := strings.Cut(rest, ".")
	if !ok {
		return Unbound
	}
	k, ok := r.key(id)
	if !ok {
		return Unbound
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(encoded)
	if err != nil || len(got) != sha256.Size {
		return Unbound
	}
	if !hmac.Equal(got, k.mac(s)) {
		return Unbound
	}
	if id == r.Current().ID {
		return BoundCurrent
	}
	return BoundRetained
}

// ErrInvalidRing is wrapped by every error of Parse.
var ErrInvalidRing = errors.New("invalid binding key ring")

// Parse decodes a ring stored by Marshal. It refuses an empty ring, more than MaxKeys
// keys, a key of the wrong size, and a missing or repeated key ID; the errors never carry
// key material.
func Parse(data []byte) (*Ring, error) {
	var r Ring
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: not JSON: %v", ErrInvalidRing, jsonErrorKind(err))
	}
	if len(r.Keys) == 0 {
		return nil, fmt.Errorf("%w: keys: no key", ErrInvalidRing)
	}
	if len(r.Keys) > MaxKeys {
		return nil, fmt.Errorf("%w: keys: %d keys, at most %d", ErrInvalidRing, len(r.Keys), MaxKeys)
	}
	seen := map[string]bool{}
	for i, k := range r.Keys {
		if !validKeyID(k.ID) {
			return nil, fmt.Errorf("%w: keys[%d].id: want %d lowercase hex digits", ErrInvalidRing, i, 2*keyIDBytes)
		}
		if seen[k.ID] {
			return nil, fmt.Errorf("%w: keys[%d].id: %q repeated", ErrInvalidRing, i, k.ID)
		}
		seen[k.ID] = true
		if len(k.Secret) != KeySize {
			return nil, fmt.Errorf("%w: keys[%d].secret: %d bytes, want %d", ErrInvalidRing, i, len(k.Secret), KeySize)
		}
	}
	return &r, nil
}

// Marshal encodes the ring for its Secret.
func (r *Ring) Marshal() ([]byte, error) { return json.Marshal(r) }

func validKeyID(id string) bool {
	if len(id) != 2*keyIDBytes {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// jsonErrorKind names the kind of a JSON error without quoting the input, which holds keys.
func jsonErrorKind(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("syntax error at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %s has the wrong type", typ.Field)
	default:
		return "malformed"
	}
}
