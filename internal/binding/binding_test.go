package binding

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func mustRing(t *testing.T) *Ring {
	t.Helper()
	r, err := NewRing(now)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func subject() Subject {
	return Subject{
		Namespace: "team-a", Name: "billing", ClientID: "ksc_aaaaaaaaaaaaaaaaaaaaaaaaaa",
		SecretHash: "sha256:" + strings.Repeat("0", 64), KeyVersion: 2, IssuedAt: now,
	}
}

func TestVerify(t *testing.T) {
	ring := mustRing(t)
	s := subject()
	value := ring.Sign(s)
	if !strings.HasPrefix(value, "v1."+ring.Current().ID+".") {
		t.Fatalf("Sign() = %q, want v1.<key ID>.<MAC>", value)
	}
	other := mustRing(t)
	mac := strings.TrimPrefix(value, "v1."+ring.Current().ID+".")
	raw, err := base64.RawURLEncoding.DecodeString(mac)
	if err != nil {
		t.Fatal(err)
	}

	change := func(f func(*Subject)) Subject { c := s; f(&c); return c }
	tests := []struct {
		name    string
		value   string
		subject Subject
		want    Result
	}{
		{"the signed subject", value, s, BoundCurrent},
		{"the same issue time in another zone", value, change(func(c *Subject) { c.IssuedAt = now.In(time.FixedZone("x", 3600)) }), BoundCurrent},
		{"another namespace (a copy into the attacker's namespace)", value, change(func(c *Subject) { c.Namespace = "team-b" }), Unbound},
		{"another credential name", value, change(func(c *Subject) { c.Name = "billing2" }), Unbound},
		{"another client ID (a takeover)", value, change(func(c *Subject) { c.ClientID = "ksc_bbbbbbbbbbbbbbbbbbbbbbbbbb" }), Unbound},
		{"another secret (a chosen secret)", value, change(func(c *Subject) { c.SecretHash = "sha256:" + strings.Repeat("1", 64) }), Unbound},
		{"another key version", value, change(func(c *Subject) { c.KeyVersion = 3 }), Unbound},
		{"a later issue time (an old Secret passed off as a rotation)", value, change(func(c *Subject) { c.IssuedAt = now.Add(time.Hour) }), Unbound},
		{"no issue time", value, change(func(c *Subject) { c.IssuedAt = time.Time{} }), Unbound},
		{"fields shifted across the boundary", value, change(func(c *Subject) { c.Namespace, c.Name = "team-ab", "illing" }), Unbound},
		{"empty", "", s, Unbound},
		{"another version", "v2" + strings.TrimPrefix(value, "v1"), s, Unbound},
		{"no MAC", "v1." + ring.Current().ID, s, Unbound},
		{"an unknown key", "v1.00000000." + mac, s, Unbound},
		{"a key of another install", value, s, Unbound}, // verified against other below
		{"padded base64", value + "=", s, Unbound},
		{"standard base64", "v1." + ring.Current().ID + "." + base64.StdEncoding.EncodeToString(raw), s, Unbound},
		{"a truncated MAC", value[:len(value)-2], s, Unbound},
		{"trailing data", value + ".x", s, Unbound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ring
			if tt.name == "a key of another install" {
				r = other
			}
			if got := r.Verify(tt.value, tt.subject); got != tt.want {
				t.Errorf("Verify() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRotateRetainsPreviousKeys(t *testing.T) {
	ring := mustRing(t)
	s := subject()
	first := ring.Sign(s)
	if err := ring.Rotate(now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := ring.Verify(first, s); got != BoundRetained {
		t.Fatalf("a binding under the previous key: Verify() = %v, want BoundRetained", got)
	}
	if got := ring.Verify(ring.Sign(s), s); got != BoundCurrent {
		t.Fatalf("a binding under the new key: Verify() = %v, want BoundCurrent", got)
	}
	for range 2 * MaxKeys {
		if err := ring.Rotate(now); err != nil {
			t.Fatal(err)
		}
	}
	if len(ring.Keys) != MaxKeys {
		t.Fatalf("ring holds %d keys, want the bound %d", len(ring.Keys), MaxKeys)
	}
	if got := ring.Verify(first, s); got != Unbound {
		t.Fatalf("a binding under a key that fell off the ring: Verify() = %v, want Unbound", got)
	}
}

func TestParse(t *testing.T) {
	ring := mustRing(t)
	if err := ring.Rotate(now); err != nil {
		t.Fatal(err)
	}
	data, err := ring.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse(Marshal()) = %v", err)
	}
	s := subject()
	if back.Verify(ring.Sign(s), s) != BoundCurrent {
		t.Fatal("the parsed ring does not verify what the original signed")
	}

	key := base64.StdEncoding.EncodeToString(ring.Current().Secret)
	short := base64.StdEncoding.EncodeToString([]byte("short"))
	tests := []struct {
		name, data, wantErr string
	}{
		{"not JSON", "{" + key, "not JSON"},
		{"no key", `{"keys":[]}`, "keys: no key"},
		{"a bad ID", `{"keys":[{"id":"ABCDEFGH","secret":"` + key + `"}]}`, "keys[0].id"},
		{"a repeated ID", `{"keys":[{"id":"0000000a","secret":"` + key + `"},{"id":"0000000a","secret":"` + key + `"}]}`, "keys[1].id"},
		{"a short key", `{"keys":[{"id":"0000000a","secret":"` + short + `"}]}`, "keys[0].secret: 5 bytes"},
		{"too many keys", `{"keys":[` + strings.Repeat(`{"id":"0000000a","secret":"`+key+`"},`, MaxKeys) + `{"id":"0000000b","secret":"` + key + `"}]}`, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse() = %v, want an error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), key) || bytes.Contains([]byte(err.Error()), ring.Current().Secret) {
				t.Fatalf("Parse() error %q carries key material", err)
			}
		})
	}
}

func TestNewKeysDiffer(t *testing.T) {
	a, b := mustRing(t), mustRing(t)
	if a.Current().ID == b.Current().ID || bytes.Equal(a.Current().Secret, b.Current().Secret) {
		t.Fatal("two new keys are equal")
	}
	if len(a.Current().Secret) != KeySize {
		t.Fatalf("key of %d bytes, want %d", len(a.Current().Secret), KeySize)
	}
}

// TestPack: a value Sign wrote packs into PackedSize bytes and unpacks to itself byte for
// byte (and still verifies); a value in any other form, however close, does not pack, so
// a caller that keeps it as it is never turns one value into another.
func TestPack(t *testing.T) {
	ring := mustRing(t)
	value := ring.Sign(subject())
	packed, ok := Pack(value)
	if !ok {
		t.Fatalf("Pack(%q) refused a value Sign wrote", value)
	}
	if got := Unpack(packed); got != value {
		t.Fatalf("Unpack(Pack(v)) = %q, want %q", got, value)
	}
	if ring.Verify(Unpack(packed), subject()) != BoundCurrent {
		t.Error("the unpacked value does not verify")
	}
	id, mac, _ := strings.Cut(strings.TrimPrefix(value, Version+"."), ".")
	last := mac[len(mac)-1]
	for _, bad := range []string{
		"",
		"v2." + id + "." + mac,
		"v1." + strings.ToUpper(id) + "." + mac,
		"v1." + id[:6] + "." + mac,
		"v1." + id + "x." + mac,
		"v1." + id + "." + mac + "=",
		"v1." + id + "." + mac[:len(mac)-1],
		"v1." + id + "." + mac + "A",
		"v1." + id + "." + strings.ReplaceAll(mac, "-", "+"),
		"v1." + id + "." + mac[:len(mac)-1] + string(nonCanonical(last)),
		"v1." + id + "." + mac + ".x",
		" v1." + id + "." + mac,
	} {
		if bad == value {
			continue // a replacement that changed nothing in this value
		}
		if p, ok := Pack(bad); ok {
			t.Errorf("Pack(%q) = %x, want refused", bad, p)
		}
	}
}

// nonCanonical returns a base64url character that decodes, ignoring the unused low bits
// of a final character of 4 significant bits, to the same bits as c, but is not c.
func nonCanonical(c byte) byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return alphabet[i|1]
}
