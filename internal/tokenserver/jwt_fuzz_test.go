package tokenserver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/keysmith-dev/keysmith/internal/signingkey"
)

// FuzzVerify feeds arbitrary strings to the JWS verifier, seeded with a valid token and
// spellings of it. Property: whatever verify accepts has one spelling — re-encoding its
// decoded header, payload and signature gives back exactly the input — carries a kid of
// the key set and the exact header keysmith writes for it, and has a low-s signature.
func FuzzVerify(f *testing.F) {
	s := New(NewStore(), Options{Issuer: "https://keysmith.example"})
	now := time.Now()
	k, err := signingkey.Generate(now, now)
	if err != nil {
		f.Fatal(err)
	}
	if err := s.SetKeys(&signingkey.Set{Keys: []signingkey.Key{k}}); err != nil {
		f.Fatal(err)
	}
	tok, err := s.keys.sign(&Claims{Issuer: "https://keysmith.example", Subject: "ksc_abc", Audience: []string{"platform-api"},
		IssuedAt: now.Unix(), ExpiresAt: now.Add(10 * time.Minute).Unix(), ID: "jti", ClientID: "ksc_abc",
		Scope: "platform-api:user", Credential: "team-a/automation", APIs: map[string]string{"platform-api": "user"}, SecretVersion: "1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add(tok + "=")
	f.Add(tok[:len(tok)-1] + "B")
	f.Add(strings.Replace(tok, ".", "=.", 1))
	f.Add(tok[:len(tok)-5] + "\n" + tok[len(tok)-5:])
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		claims, signer, err := s.keys.verify(token)
		if err != nil {
			return
		}
		if claims == nil || signer.pub == nil {
			t.Fatal("accepted without claims or key")
		}
		seg := strings.Split(token, ".")
		if len(seg) != 3 {
			t.Fatalf("accepted a token of %d segments", len(seg))
		}
		var re [3]string
		for i, sg := range seg {
			raw, err := base64.RawURLEncoding.DecodeString(sg)
			if err != nil {
				t.Fatalf("accepted segment %d that does not decode: %v", i, err)
			}
			re[i] = base64.RawURLEncoding.EncodeToString(raw)
			if i == 2 && (len(raw) != 64 || bytes.Compare(raw[32:], p256HalfNBytes) > 0) {
				t.Fatalf("accepted a signature that is not 64 bytes with low s")
			}
		}
		if strings.Join(re[:], ".") != token {
			t.Fatalf("accepted a second spelling:\n got %q\nre-encoded %q", token, strings.Join(re[:], "."))
		}
		var header struct{ Kid string }
		if err := json.Unmarshal(mustB64(t, seg[0]), &header); err != nil {
			t.Fatal(err)
		}
		if header.Kid != k.ID || seg[0] != headerFor(k.Algorithm, k.ID) {
			t.Fatalf("accepted kid %q with header %q", header.Kid, seg[0])
		}
	})
}

func mustB64(t *testing.T, s string) []byte {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
