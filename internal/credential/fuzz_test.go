package credential

import (
	"errors"
	"strings"
	"testing"
)

func FuzzParseSecret(f *testing.F) {
	s := testSecret
	for _, seed := range []string{
		s,
		goldenSecrets[0].want,
		goldenSecrets[1].want,
		"",
		SecretPrefix,
		ClientIDPrefix + s[4:],
		s[:52],
		s + "0",
		s[:20] + "-" + s[21:],
		s[:20] + "B" + s[21:],
		s[:47] + "zzzzzz",
		s[:30] + "é" + s[32:],
		strings.Repeat("z", 53),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		err := ParseSecret(in)
		if err != nil {
			if !errors.Is(err, ErrMalformedSecret) {
				t.Fatalf("error %v does not match ErrMalformedSecret", err)
			}
			var me *MalformedSecretError
			if !errors.As(err, &me) || me.Reason == "" {
				t.Fatalf("error %v is not a *MalformedSecretError with a reason", err)
			}
			return
		}
		if !strings.HasPrefix(in, SecretPrefix) {
			t.Fatalf("accepted %q without prefix", in)
		}
		if len(in) != 53 {
			t.Fatalf("accepted %q of length %d", in, len(in))
		}
		if !isBase62Charset(in[len(SecretPrefix):]) {
			t.Fatalf("accepted %q with non-base62 characters", in)
		}
		if !Verify(in, Hash(in)) {
			t.Fatalf("Verify(s, Hash(s)) = false for accepted %q", in)
		}
	})
}

func FuzzVerify(f *testing.F) {
	s := testSecret
	h := Hash(s)
	for _, seed := range [][2]string{
		{s, h},
		{s, strings.ToUpper(h)},
		{s, "bcrypt:" + h[7:]},
		{s, h[:70]},
		{s, h + "0"},
		{goldenSecrets[0].want, h},
		{"", Hash("")},
		{"", ""},
		{s, "sha256:" + strings.Repeat("g", 64)},
		{strings.Repeat("x", 200), Hash(strings.Repeat("x", 200))},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, secret, hash string) {
		ok := Verify(secret, hash)
		if ok && hash != Hash(secret) {
			t.Fatalf("Verify(%q, %q) = true, but Hash = %q", secret, hash, Hash(secret))
		}
		if ok && !ValidHash(hash) {
			t.Fatalf("Verify(%q, %q) = true for a hash ValidHash rejects", secret, hash)
		}
		if want := Hash(secret); !Verify(secret, want) || !ValidHash(want) {
			t.Fatalf("Hash(%q) = %q does not verify or is not valid", secret, want)
		}
	})
}
