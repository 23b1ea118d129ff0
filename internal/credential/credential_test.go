package credential

import (
	"bytes"
	"encoding/base32"
	"errors"
	"hash/crc32"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
)

// Golden values, cross-checked against an independent Python implementation
// (int.to_bytes / zlib.crc32 / base64.b32encode) when they were written.
var goldenSecrets = []struct {
	name string
	raw  [32]byte
	want string
}{
	{"zero", [32]byte{}, "kss_00000000000000000000000000000000000000000003CNvks"},
	{"max", bytes32(func(int) byte { return 0xff }), "kss_yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp105v4ti"},
	{"counting", bytes32(func(i int) byte { return byte(i) }), "kss_003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf2PXIec"},
}

func bytes32(f func(int) byte) (b [32]byte) {
	for i := range b {
		b[i] = f(i)
	}
	return b
}

// testSecret is a fixed, valid secret for table tests, so they are
// deterministic.
var testSecret = goldenSecrets[2].want

func isBase62Charset(s string) bool {
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(base62Alphabet, rune(s[i])) {
			return false
		}
	}
	return true
}

// ---- Client IDs ----

func TestNewClientID(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id, err := NewClientID()
		if err != nil {
			t.Fatalf("NewClientID: %v", err)
		}
		if len(id) != 30 {
			t.Fatalf("len(%q) = %d, want 30", id, len(id))
		}
		if !strings.HasPrefix(id, ClientIDPrefix) {
			t.Fatalf("%q lacks prefix %q", id, ClientIDPrefix)
		}
		body := id[len(ClientIDPrefix):]
		if strings.Trim(body, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("%q: body has characters outside lowercase base32", id)
		}
		if !canonicalBase32(body) {
			t.Fatalf("%q: body is not canonical base32 of 16 bytes", id)
		}
		if !ValidClientID(id) {
			t.Fatalf("ValidClientID(%q) = false", id)
		}
		if seen[id] {
			t.Fatalf("duplicate client ID %q", id)
		}
		seen[id] = true
	}
}

func TestClientIDGolden(t *testing.T) {
	got := clientIDFromBytes([16]byte([]byte("abcdefghijklmnop")))
	if want := "ksc_mfrggzdfmztwq2lknnwg23tpoa"; got != want {
		t.Errorf("clientIDFromBytes = %q, want %q", got, want)
	}
	std := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString([]byte("abcdefghijklmnop")))
	if got != ClientIDPrefix+std {
		t.Errorf("clientIDFromBytes = %q, want %q", got, ClientIDPrefix+std)
	}
}

func TestNewClientIDReaderError(t *testing.T) {
	if _, err := newClientID(iotestErrReader{}); err == nil {
		t.Error("newClientID with failing reader: got nil error")
	}
	if _, err := newClientID(bytes.NewReader(make([]byte, 15))); err == nil {
		t.Error("newClientID with short reader: got nil error")
	}
}

func TestValidClientID(t *testing.T) {
	const valid = "ksc_mfrggzdfmztwq2lknnwg23tpoa"
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"valid", valid, true},
		{"all a", "ksc_" + strings.Repeat("a", 26), true},
		{"max canonical", "ksc_" + strings.Repeat("7", 25) + "4", true},
		{"empty", "", false},
		{"prefix only", "ksc_", false},
		{"secret prefix", "kss_" + valid[4:], false},
		{"uppercase prefix", "KSC_" + valid[4:], false},
		{"uppercase body", "ksc_" + strings.ToUpper(valid[4:]), false},
		{"too short", valid[:29], false},
		{"too long", valid + "a", false},
		{"padded", valid + "======", false},
		{"digit 0", valid[:10] + "0" + valid[11:], false},
		{"digit 1", valid[:10] + "1" + valid[11:], false},
		{"digit 8", valid[:10] + "8" + valid[11:], false},
		{"dash", valid[:10] + "-" + valid[11:], false},
		{"non-ascii", valid[:28] + "é", false},
		{"non-canonical last char", valid[:29] + "b", false},
		{"non-canonical last char 7", valid[:29] + "7", false},
		{"leading space", " " + valid[:29], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidClientID(tt.in); got != tt.want {
				t.Errorf("ValidClientID(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// canonicalBase32 reports whether body decodes, with encoding/base32, to 16
// bytes that encode back to body. (encoding/base32 has no Strict mode, so
// the round trip is what rejects non-zero trailing bits.)
func canonicalBase32(body string) bool {
	raw, err := clientIDEncoding.DecodeString(body)
	return err == nil && len(raw) == 16 && clientIDEncoding.EncodeToString(raw) == body
}

// TestValidClientIDMatchesReference checks ValidClientID against an
// encoding/base32 round trip for every possible byte at the first, a middle
// and the last body position.
func TestValidClientIDMatchesReference(t *testing.T) {
	const valid = "ksc_mfrggzdfmztwq2lknnwg23tpoa"
	for _, pos := range []int{4, 15, 29} {
		for c := range 256 {
			s := valid[:pos] + string([]byte{byte(c)}) + valid[pos+1:]
			want := canonicalBase32(s[4:])
			if got := ValidClientID(s); got != want {
				t.Errorf("pos %d char %#x: ValidClientID = %v, reference = %v", pos, c, got, want)
			}
		}
	}
}

// ---- Secrets ----

func TestNewSecret(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		s, err := NewSecret()
		if err != nil {
			t.Fatalf("NewSecret: %v", err)
		}
		if len(s) != 53 {
			t.Fatalf("len = %d, want 53", len(s))
		}
		if !strings.HasPrefix(s, SecretPrefix) {
			t.Fatal("secret lacks prefix")
		}
		if !isBase62Charset(s[len(SecretPrefix):]) {
			t.Fatal("secret body has characters outside base62")
		}
		if err := ParseSecret(s); err != nil {
			t.Fatalf("ParseSecret(NewSecret()) = %v", err)
		}
		if _, ok := decodeBody(s[4:47]); !ok {
			t.Fatal("secret body does not decode to 32 bytes")
		}
		if seen[s] {
			t.Fatal("duplicate secret")
		}
		seen[s] = true
	}
}

func TestNewSecretReaderError(t *testing.T) {
	if _, err := newSecret(iotestErrReader{}); err == nil {
		t.Error("newSecret with failing reader: got nil error")
	}
	if _, err := newSecret(bytes.NewReader(make([]byte, 31))); err == nil {
		t.Error("newSecret with short reader: got nil error")
	}
	s, err := newSecret(bytes.NewReader(make([]byte, 32)))
	if err != nil || s != goldenSecrets[0].want {
		t.Errorf("newSecret(zeros) = %q, %v; want %q", s, err, goldenSecrets[0].want)
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("entropy unavailable") }

func TestSecretGolden(t *testing.T) {
	for _, tt := range goldenSecrets {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.raw
			if got := secretFromBytes(&raw); got != tt.want {
				t.Errorf("secretFromBytes = %q, want %q", got, tt.want)
			}
			if raw != ([32]byte{}) {
				t.Error("secretFromBytes did not zero its scratch input")
			}
			if got := referenceSecret(tt.raw); got != tt.want {
				t.Errorf("referenceSecret = %q, want %q", got, tt.want)
			}
			if err := ParseSecret(tt.want); err != nil {
				t.Errorf("ParseSecret = %v", err)
			}
		})
	}
}

// TestSecretEncodingMatchesReference compares the encoder with an independent
// math/big + hash/crc32 implementation on random and edge-case inputs, and
// checks that the body decodes back to the input.
func TestSecretEncodingMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	inputs := [][32]byte{{31: 1}, {0: 0x80}, {0: 0x01}}
	for range 2000 {
		var b [32]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		inputs = append(inputs, b)
	}
	for _, in := range inputs {
		raw := in
		got := secretFromBytes(&raw)
		if want := referenceSecret(in); got != want {
			t.Fatalf("secretFromBytes(%x) = %q, want %q", in, got, want)
		}
		dec, ok := decodeBody(got[4:47])
		if !ok || dec != in {
			t.Fatalf("body of %x decodes to %x, %v", in, dec, ok)
		}
	}
}

func referenceSecret(raw [32]byte) string {
	n := new(big.Int).SetBytes(raw[:])
	body := SecretPrefix + referenceBase62(n, 43)
	return body + referenceBase62(big.NewInt(int64(crc32.ChecksumIEEE([]byte(body)))), 6)
}

func referenceBase62(n *big.Int, width int) string {
	n = new(big.Int).Set(n)
	out := make([]byte, width)
	base, m := big.NewInt(62), new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, m)
		out[i] = base62Alphabet[m.Int64()]
	}
	if n.Sign() != 0 {
		panic("value does not fit")
	}
	return string(out)
}

func decodeBody(body string) (out [32]byte, ok bool) {
	n := new(big.Int)
	for i := 0; i < len(body); i++ {
		d := strings.IndexByte(base62Alphabet, body[i])
		if d < 0 {
			return out, false
		}
		n.Mul(n, big.NewInt(62))
		n.Add(n, big.NewInt(int64(d)))
	}
	if n.BitLen() > 256 {
		return out, false
	}
	n.FillBytes(out[:])
	return out, true
}

func TestChecksumMatchesCRC32(t *testing.T) {
	for _, s := range []string{"", "a", testSecret[:47], strings.Repeat("xyz", 100)} {
		if got, want := checksum(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Errorf("checksum(%q) = %#x, want %#x", s, got, want)
		}
		if got, want := checksum([]byte(s)), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Errorf("checksum([]byte(%q)) = %#x, want %#x", s, got, want)
		}
	}
}

func TestParseSecret(t *testing.T) {
	s := testSecret
	body := s[4:47]
	flip := func(s string, i int) string {
		c := byte('A')
		if s[i] == 'A' {
			c = 'B'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	tests := []struct {
		name   string
		in     string
		reason string // "" means valid
	}{
		{"valid", s, ""},
		{"empty", "", `missing prefix "kss_"`},
		{"prefix only", "kss_", "wrong length: got 4 bytes, want 53"},
		{"partial prefix", "kss", `missing prefix "kss_"`},
		{"client ID prefix", "ksc_" + s[4:], `missing prefix "kss_"`},
		{"uppercase prefix", "KSS_" + s[4:], `missing prefix "kss_"`},
		{"leading space", " " + s, `missing prefix "kss_"`},
		{"no prefix", s[4:], `missing prefix "kss_"`},
		{"too short", s[:52], "wrong length: got 52 bytes, want 53"},
		{"too long", s + "0", "wrong length: got 54 bytes, want 53"},
		{"trailing newline", s + "\n", "wrong length: got 54 bytes, want 53"},
		{"doubled", s + s, "wrong length: got 106 bytes, want 53"},
		{"bad char in body", s[:10] + "-" + s[11:], "invalid character at position 10"},
		{"bad char first", s[:4] + "_" + s[5:], "invalid character at position 4"},
		{"bad char in checksum", s[:52] + "=", "invalid character at position 52"},
		{"NUL byte", s[:20] + "\x00" + s[21:], "invalid character at position 20"},
		{"high byte", s[:30] + "\xff" + s[31:], "invalid character at position 30"},
		{"body char flipped", flip(s, 20), "checksum mismatch"},
		{"body chars swapped", s[:5] + s[6:7] + s[5:6] + s[7:], "checksum mismatch"},
		{"checksum changed", flip(s, 52), "checksum mismatch"},
		{"checksum maxed", s[:47] + "zzzzzz", "checksum mismatch"},
		{"checksum zeroed", s[:47] + "000000", "checksum mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.reason != "" && tt.in == s {
				t.Fatal("test setup: mutation did not change the secret")
			}
			err := ParseSecret(tt.in)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("ParseSecret = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("ParseSecret = nil, want error")
			}
			if !errors.Is(err, ErrMalformedSecret) {
				t.Errorf("errors.Is(%v, ErrMalformedSecret) = false", err)
			}
			var me *MalformedSecretError
			if !errors.As(err, &me) {
				t.Fatalf("error %T is not *MalformedSecretError", err)
			}
			if me.Reason != tt.reason {
				t.Errorf("Reason = %q, want %q", me.Reason, tt.reason)
			}
			if want := "credential: malformed secret: " + tt.reason; err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
			assertNoLeak(t, err.Error(), body, s[47:])
		})
	}
}

// assertNoLeak fails if msg contains any 5-character run of the given parts
// of a secret. (Shorter runs could collide with digits in the message.)
func assertNoLeak(t *testing.T, msg string, parts ...string) {
	t.Helper()
	const window = 5
	for _, p := range parts {
		for i := 0; i+window <= len(p); i++ {
			if strings.Contains(msg, p[i:i+window]) {
				t.Errorf("error message %q contains part of the secret (%q)", msg, p[i:i+window])
				return
			}
		}
	}
}

// TestParseSecretDetectsEverySubstitution checks that replacing any single
// character after the prefix with any other base62 character is caught.
// CRC-32 detects every error burst of up to 32 bits, and 62^6 > 2^32 makes
// the checksum encoding injective, so this must hold for every secret.
func TestParseSecretDetectsEverySubstitution(t *testing.T) {
	s := testSecret
	for i := len(SecretPrefix); i < len(s); i++ {
		for j := 0; j < len(base62Alphabet); j++ {
			c := base62Alphabet[j]
			if c == s[i] {
				continue
			}
			m := s[:i] + string(c) + s[i+1:]
			err := ParseSecret(m)
			var me *MalformedSecretError
			if !errors.As(err, &me) || me.Reason != "checksum mismatch" {
				t.Fatalf("position %d -> %q: ParseSecret = %v, want checksum mismatch", i, c, err)
			}
			assertNoLeak(t, err.Error(), s[4:], m[4:])
		}
	}
}

func TestParseSecretNoLeakRandom(t *testing.T) {
	for range 200 {
		s, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{s[:52], s + "x", s[:30] + "!" + s[31:], s[:52] + string(s[52]^1), "x" + s[1:]} {
			if err := ParseSecret(m); err == nil {
				t.Fatalf("ParseSecret accepted a mutated secret")
			} else {
				// Window 8 keeps accidental matches on random input negligible.
				for i := 4; i+8 <= len(s); i++ {
					if strings.Contains(err.Error(), s[i:i+8]) {
						t.Fatalf("error message %q leaks part of the secret", err)
					}
				}
			}
		}
	}
}

func TestParseSecretAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = ParseSecret(testSecret) }); n != 0 {
		t.Errorf("ParseSecret(valid) allocates %v times, want 0", n)
	}
}

func TestValidClientIDAllocs(t *testing.T) {
	const id = "ksc_mfrggzdfmztwq2lknnwg23tpoa"
	if n := testing.AllocsPerRun(100, func() { _ = ValidClientID(id) }); n != 0 {
		t.Errorf("ValidClientID allocates %v times, want 0", n)
	}
}

var sinkString string
var sinkErr error

func BenchmarkNewSecret(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		s, err := NewSecret()
		if err != nil {
			b.Fatal(err)
		}
		sinkString = s
	}
}

func BenchmarkNewClientID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		s, err := NewClientID()
		if err != nil {
			b.Fatal(err)
		}
		sinkString = s
	}
}

func BenchmarkParseSecret(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sinkErr = ParseSecret(testSecret)
	}
}
