package credential

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func TestHash(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	}
	for _, tt := range tests {
		if got := Hash(tt.in); got != tt.want {
			t.Errorf("Hash(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// Around and beyond the stack-buffer boundary, and a real secret.
	for _, in := range []string{testSecret, strings.Repeat("a", hashStackBuf-1), strings.Repeat("b", hashStackBuf),
		strings.Repeat("c", hashStackBuf+1), strings.Repeat("d", 10000)} {
		sum := sha256.Sum256([]byte(in))
		want := HashSchemeSHA256 + ":" + hex.EncodeToString(sum[:])
		got := Hash(in)
		if got != want {
			t.Errorf("Hash(len %d) = %q, want %q", len(in), got, want)
		}
		if len(got) != 71 || !ValidHash(got) || !Verify(in, got) {
			t.Errorf("Hash(len %d) = %q: len %d, ValidHash %v, Verify %v", len(in), got, len(got), ValidHash(got), Verify(in, got))
		}
	}
}

// TestDigestAndFormatHash: Digest is the SHA-256 that Hash formats, FormatHash is
// ParseHash's inverse, and Digest does not allocate for a real secret.
func TestDigestAndFormatHash(t *testing.T) {
	for _, in := range []string{"", "abc", testSecret, strings.Repeat("d", 10000)} {
		d := Digest(in)
		if d != sha256.Sum256([]byte(in)) {
			t.Errorf("Digest(len %d) is not the SHA-256", len(in))
		}
		h := FormatHash(d)
		if h != Hash(in) {
			t.Errorf("FormatHash(Digest(len %d)) = %q, want Hash's %q", len(in), h, Hash(in))
		}
		if back, ok := ParseHash(h); !ok || back != d {
			t.Errorf("ParseHash(FormatHash(d)) = %x, %v; want %x", back, ok, d)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = Digest(testSecret) }); n != 0 {
		t.Errorf("Digest allocates %v times, want 0", n)
	}
}

func TestVerify(t *testing.T) {
	secret := testSecret
	other := goldenSecrets[0].want
	h := Hash(secret)
	hexPart := h[len("sha256:"):]
	tamper := func(h string, i int) string {
		c := byte('0')
		if h[i] == '0' {
			c = '1'
		}
		return h[:i] + string(c) + h[i+1:]
	}
	tests := []struct {
		name   string
		secret string
		hash   string
		want   bool
	}{
		{"correct secret", secret, h, true},
		{"other secret", other, h, false},
		{"empty secret", "", h, false},
		{"secret with trailing newline", secret + "\n", h, false},
		{"secret truncated", secret[:52], h, false},
		{"tampered last digit", secret, tamper(h, len(h)-1), false},
		{"tampered first digit", secret, tamper(h, len("sha256:")), false},
		{"unknown scheme bcrypt", secret, "bcrypt:" + hexPart, false},
		{"bcrypt-style hash", secret, "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", false},
		{"uppercase scheme", secret, "SHA256:" + hexPart, false},
		{"sha512 scheme", secret, "sha512:" + hexPart, false},
		{"missing colon", secret, "sha256" + hexPart, false},
		{"bare hex", secret, hexPart, false},
		{"empty hash", secret, "", false},
		{"scheme only", secret, "sha256:", false},
		{"uppercase hex rejected", secret, "sha256:" + strings.ToUpper(hexPart), false},
		{"one uppercase digit rejected", secret, mixedCase(h), false},
		{"hex too short", secret, h[:len(h)-1], false},
		{"hex too long", secret, h + "0", false},
		{"hex truncated to 32 bytes hex", secret, h[:len(h)-2], false},
		{"non-hex digit", secret, h[:len(h)-1] + "g", false},
		{"trailing whitespace", secret, h + " ", false},
		{"leading whitespace", secret, " " + h, false},
		{"double colon", secret, "sha256::" + hexPart[1:], false},
		{"hash of the hash", secret, Hash(h), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Verify(tt.secret, tt.hash); got != tt.want {
				t.Errorf("Verify(secret, %q) = %v, want %v", tt.hash, got, tt.want)
			}
			// ValidHash must agree with Verify on format: whenever Verify
			// is true the hash is valid, and an invalid hash never verifies.
			if tt.want && !ValidHash(tt.hash) {
				t.Errorf("ValidHash(%q) = false for a verifying hash", tt.hash)
			}
		})
	}
}

// mixedCase uppercases the first hex letter in h, so that the hash differs
// from the canonical one only in case.
func mixedCase(h string) string {
	for i := len("sha256:"); i < len(h); i++ {
		if 'a' <= h[i] && h[i] <= 'f' {
			return h[:i] + strings.ToUpper(h[i:i+1]) + h[i+1:]
		}
	}
	panic("hash has no hex letters")
}

func TestValidHash(t *testing.T) {
	h := Hash(testSecret)
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"from Hash", h, true},
		{"all zeros", "sha256:" + strings.Repeat("0", 64), true},
		{"all f", "sha256:" + strings.Repeat("f", 64), true},
		{"empty", "", false},
		{"uppercase hex", "sha256:" + strings.Repeat("F", 64), false},
		{"mixed case hex", mixedCase(h), false},
		{"unknown scheme", "bcrypt:" + h[7:], false},
		{"missing colon", "sha256" + h[7:], false},
		{"short", h[:70], false},
		{"long", h + "0", false},
		{"non-hex", "sha256:" + strings.Repeat("x", 64), false},
		{"non-ascii", h[:69] + "é", false},
		{"a secret", testSecret, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidHash(tt.in); got != tt.want {
				t.Errorf("ValidHash(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestVerifyGeneratedSecrets(t *testing.T) {
	prev := ""
	for range 100 {
		s, err := NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		h := Hash(s)
		if !Verify(s, h) {
			t.Fatal("Verify(s, Hash(s)) = false")
		}
		if prev != "" && Verify(prev, h) {
			t.Fatal("previous secret verifies against a new hash")
		}
		prev = s
	}
}

func TestVerifyAllocs(t *testing.T) {
	h := Hash(testSecret)
	if n := testing.AllocsPerRun(100, func() { _ = Verify(testSecret, h) }); n != 0 {
		t.Errorf("Verify allocates %v times, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = ValidHash(h) }); n != 0 {
		t.Errorf("ValidHash allocates %v times, want 0", n)
	}
}

var sinkBool bool

func BenchmarkHash(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		sinkString = Hash(testSecret)
	}
}

func BenchmarkVerify(b *testing.B) {
	h := Hash(testSecret)
	b.ReportAllocs()
	for b.Loop() {
		sinkBool = Verify(testSecret, h)
	}
	if !sinkBool {
		b.Fatal("Verify = false")
	}
}
