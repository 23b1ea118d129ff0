package tokenserver_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

const b64alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// trailingBitTwins returns the other spellings of a base64url segment that a lax decoder
// reads as the same bytes: the last character with different unused low bits.
func trailingBitTwins(seg string) []string {
	want, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		panic(err)
	}
	var twins []string
	for _, c := range b64alphabet {
		twin := seg[:len(seg)-1] + string(c)
		if twin == seg {
			continue
		}
		if got, err := base64.RawURLEncoding.DecodeString(twin); err == nil && string(got) == string(want) {
			twins = append(twins, twin)
		}
	}
	return twins
}

// highS returns the signature segment with s replaced by n-s: the same signature's twin.
func highS(sigSeg string) string {
	sig, err := base64.RawURLEncoding.DecodeString(sigSeg)
	if err != nil || len(sig) != 64 {
		panic("not an ES256 signature")
	}
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(elliptic.P256().Params().N, s).FillBytes(sig[32:])
	return base64.RawURLEncoding.EncodeToString(sig)
}

// signSegments signs header.payload with the fixture's key exactly as keysmith does
// (low s), so that a refusal can only come from the spelling.
func (f *fixture) signSegments(header, payload string) string {
	f.t.Helper()
	digest := sha256.Sum256([]byte(header + "." + payload))
	r, s, err := ecdsa.Sign(rand.Reader, f.keys.Keys[0].Private.(*ecdsa.PrivateKey), digest[:])
	if err != nil {
		f.t.Fatal(err)
	}
	n := elliptic.P256().Params().N
	if s.Cmp(new(big.Int).Rsh(n, 1)) > 0 {
		s.Sub(n, s)
	}
	var sig [64]byte
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return header + "." + payload + "." + base64.RawURLEncoding.EncodeToString(sig[:])
}

func (f *fixture) authzStatus(token string) int {
	req := httpRequest(http.MethodGet, "/authz/platform-api", "")
	req.Header.Set("Authorization", bearer(token))
	req.Header.Set("X-Forwarded-Method", "GET")
	return record(f.srv.Handler(), req).Code
}

// TestFinding8_OneSpellingPerToken (issue 8, finding 8: "JWS accepts non-canonical
// base64 and high-s signatures, 32 spellings of one token"): every other spelling of a
// token is refused — the signature with other trailing bits (15), with padding, its
// high-s twin (and the twin's 15 trailing-bit spellings: 32 with the original), line
// breaks — and so are payloads and headers spelled differently even when correctly
// signed: trailing bits, padding, another header JSON for the same kid.
func TestFinding8_OneSpellingPerToken(t *testing.T) {
	f := newFixture(t, func(o *tokenserver.Options) { o.FailureRate, o.FailureBurst = 1, 1<<20 })
	c := f.issue("spelling", grants("platform-api:user"))
	tok := f.token(c)
	if code := f.authzStatus(tok); code != 200 {
		t.Fatalf("the token itself: got %d, want 200", code)
	}
	seg := strings.Split(tok, ".")
	header, payload, sig := seg[0], seg[1], seg[2]

	variants := map[string]string{}
	for i, twin := range trailingBitTwins(sig) {
		variants["signature trailing bits #"+string(rune('a'+i))] = header + "." + payload + "." + twin
	}
	twin := highS(sig)
	variants["high-s twin"] = header + "." + payload + "." + twin
	for i, tt := range trailingBitTwins(twin) {
		variants["high-s twin, trailing bits #"+string(rune('a'+i))] = header + "." + payload + "." + tt
	}
	variants["signature padded"] = tok + "=="
	variants["signature padded once"] = tok + "="
	variants["line break in signature"] = tok[:len(tok)-10] + "\n" + tok[len(tok)-10:]
	variants["carriage return in payload"] = header + "." + payload[:5] + "\r" + payload[5:] + "." + sig
	if n := len(variants); n < 31 {
		t.Fatalf("only %d signature spellings built", n)
	}

	// Correctly signed, differently spelled payloads.
	for i, p := range trailingBitTwins(payload) {
		variants["signed payload, trailing bits #"+string(rune('a'+i))] = f.signSegments(header, p)
	}
	pad := strings.Repeat("=", (4-len(payload)%4)%4)
	if pad == "" {
		pad = "===="
	}
	variants["signed payload, padded"] = f.signSegments(header, payload+pad)

	// Correctly signed, differently spelled headers for the same key.
	kid := f.keys.Keys[0].ID
	for name, h := range map[string]string{
		"keys reordered":  `{"kid":"` + kid + `","alg":"ES256","typ":"at+jwt"}`,
		"spaces":          `{"alg": "ES256", "kid": "` + kid + `", "typ": "at+jwt"}`,
		"no typ":          `{"alg":"ES256","kid":"` + kid + `"}`,
		"typ JWT":         `{"alg":"ES256","kid":"` + kid + `","typ":"JWT"}`,
		"extra jku":       `{"alg":"ES256","kid":"` + kid + `","typ":"at+jwt","jku":"https://evil.example/jwks"}`,
		"duplicate alg":   `{"alg":"ES256","kid":"` + kid + `","typ":"at+jwt","alg":"none"}`,
		"alg none":        `{"alg":"none","kid":"` + kid + `","typ":"at+jwt"}`,
		"escaped kid":     `{"alg":"ES256","kid":"` + fmt.Sprintf(`\u%04x`, kid[0]) + kid[1:] + `","typ":"at+jwt"}`,
		"padded segment":  "",
		"header standard": "",
	} {
		var hs string
		switch name {
		case "padded segment":
			hs = header + strings.Repeat("=", (4-len(header)%4)%4+4*boolInt(len(header)%4 == 0))
		case "header standard": // the same JSON in standard base64 where it differs, else skipped
			std := base64.RawStdEncoding.EncodeToString(mustDecode(t, header))
			if std == header {
				continue
			}
			hs = std
		default:
			hs = base64.RawURLEncoding.EncodeToString([]byte(h))
		}
		variants["signed header, "+name] = f.signSegments(hs, payload)
	}
	for i, h := range trailingBitTwins(header) {
		variants["signed header, trailing bits #"+string(rune('a'+i))] = f.signSegments(h, payload)
	}

	for name, v := range variants {
		if v == tok {
			t.Fatalf("%s: the variant is the token itself", name)
		}
		if code := f.authzStatus(v); code != 401 {
			t.Errorf("%s: /authz got %d, want 401", name, code)
		}
		rs := f.issue("rs-"+strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' {
				return r
			}
			return -1
		}, name), grants("profile-api:read-only"))
		if resp, body := f.post("/oauth2/introspect", url.Values{"token": {v}}, rs.id, rs.secret); resp.StatusCode != 200 || body["active"] != false {
			t.Errorf("%s: introspection got %d %v, want {\"active\":false}", name, resp.StatusCode, body)
		}
	}
	if code := f.authzStatus(tok); code != 200 {
		t.Errorf("the token itself afterwards: got %d, want 200", code)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func mustDecode(t *testing.T, seg string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// claimsOf decodes a token's payload, unverified.
func claimsOf(t *testing.T, tok string) *tokenserver.Claims {
	t.Helper()
	c := &tokenserver.Claims{}
	if err := json.Unmarshal(mustDecode(t, strings.Split(tok, ".")[1]), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFinding8_LifetimeIsCapped (issue 8, finding 8: "exp has no upper bound"): a token
// correctly signed with the server's key but claiming a life longer than the server
// issues (exp 10 years out), issued in the future, or without exp is refused; a life up
// to MaxTokenLifetime is accepted.
func TestFinding8_LifetimeIsCapped(t *testing.T) {
	f := newFixture(t, func(o *tokenserver.Options) {
		o.TokenLifetime, o.MaxTokenLifetime = 10*time.Minute, time.Hour
		o.FailureRate, o.FailureBurst = 1, 1000
	})
	c := f.issue("lifetime", grants("platform-api:user"))
	base := claimsOf(t, f.token(c))
	now := f.clock.Now().Unix()
	for _, tc := range []struct {
		name     string
		iat, exp int64
		want     int
	}{
		{"as minted", now, now + 600, 200},
		{"MaxTokenLifetime", now, now + 3600, 200},
		{"issued a little in the future (clock skew)", now + 30, now + 630, 200},
		{"exp 10 years out", now, now + 10*365*24*3600, 401},
		{"one second over MaxTokenLifetime", now, now + 3601, 401},
		{"iat long ago, exp soon", now - 10*365*24*3600, now + 60, 401},
		{"issued an hour in the future", now + 3600, now + 3600 + 600, 401},
		{"no exp", now, 0, 401},
		{"no iat", 0, now + 600, 401},
	} {
		claims := *base
		claims.IssuedAt, claims.ExpiresAt = tc.iat, tc.exp
		tok, err := f.srv.SignClaims(&claims)
		if err != nil {
			t.Fatal(err)
		}
		if code := f.authzStatus(tok); code != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, code, tc.want)
		}
	}
}

// maximalCatalog is the largest catalog a credential can use: 32 APIs with 253-character
// names, a 63-character permission each and a 2048-character audience each.
func maximalCatalog() ([]*iamv1alpha1.APIDefinition, []iamv1alpha1.APIGrant) {
	var defs []*iamv1alpha1.APIDefinition
	var grants []iamv1alpha1.APIGrant
	pad := func(s string, n int) string { return s + strings.Repeat("x", n-len(s)) }
	for i := range 32 {
		name := pad("api-"+string(rune('a'+i/26))+string(rune('a'+i%26))+"-", 253)
		perm := pad("perm-"+string(rune('a'+i%26))+"-", 63)
		defs = append(defs, &iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: iamv1alpha1.APIDefinitionSpec{DisplayName: "max", ScopeLevel: iamv1alpha1.ScopeLevelAccount,
				Audience:    pad("https://audience-"+string(rune('a'+i/26))+string(rune('a'+i%26))+".example/", 2048),
				Permissions: []iamv1alpha1.Permission{{Name: perm, Methods: []string{"*"}}}}})
		grants = append(grants, iamv1alpha1.APIGrant{Name: name, Permission: perm})
	}
	return defs, grants
}

func maximalCredential(defs []*iamv1alpha1.APIDefinition) func(*iamv1alpha1.APICredential) {
	return func(o *iamv1alpha1.APICredential) {
		o.Namespace = strings.Repeat("n", 63)
		o.Name = strings.Repeat("c", 253)
		o.Status.Account = strings.Repeat("a", 63)
		o.Spec.Scope.Account = o.Status.Account
		o.Spec.Scope.Workspaces = nil
		for i := range 64 {
			o.Spec.Scope.Workspaces = append(o.Spec.Scope.Workspaces, string(rune('a'+i/26))+string(rune('a'+i%26))+strings.Repeat("w", 61))
		}
	}
}

// TestFinding8_MaximalCredentialTokenVerifies (issue 8, finding 8: "the token endpoint
// mints tokens larger than the 8 KiB the verifier accepts"): the largest credential the
// CRDs allow — 32 APIs with 253-character names, 63-character permissions and
// 2048-character audiences, 64 workspaces of 63 characters, a 63-character account and
// namespace, a 253-character name — behind a 2048-character issuer gets a token that
// /authz (through NewHTTPServer's header limit) and introspection accept.
func TestFinding8_MaximalCredentialTokenVerifies(t *testing.T) {
	issuer := "https://" + strings.Repeat("i", tokenserver.MaxIssuerLength-len("https://"))
	f := newFixture(t, func(o *tokenserver.Options) { o.Issuer = issuer })
	defs, apis := maximalCatalog()
	for _, d := range defs {
		f.store.SetAPI(d)
	}
	c := f.issue("max", apis, maximalCredential(defs))
	tok := f.token(c)
	if len(tok) <= 8<<10 || len(tok) > tokenserver.MaxTokenBytes {
		t.Fatalf("the maximal token is %d bytes; want above the old 8 KiB and at most %d", len(tok), tokenserver.MaxTokenBytes)
	}
	t.Logf("maximal token: %d bytes (limit %d)", len(tok), tokenserver.MaxTokenBytes)

	// Through a server with the production limits (header size).
	hs := tokenserver.NewHTTPServer("127.0.0.1:0", f.srv.Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	for _, api := range []string{apis[0].Name, apis[31].Name} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/authz/"+api, nil)
		req.Header.Set("Authorization", bearer(tok))
		req.Header.Set("X-Forwarded-Method", "DELETE")
		if resp, body := f.do(req); resp.StatusCode != 200 {
			t.Errorf("/authz/%s…: got %d %v, want 200", api[:8], resp.StatusCode, body)
		}
	}
	rs := f.issue("resource-server", grants("profile-api:read-only"))
	form := url.Values{"token": {tok}}
	req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/oauth2/introspect", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(rs.id, rs.secret)
	if resp, body := f.do(req); resp.StatusCode != 200 || body["active"] != true {
		t.Errorf("introspection: got %d active=%v, want 200 active=true", resp.StatusCode, body["active"])
	}
}

// TestTokenEndpointRefusesATokenTooLargeToVerify: the signer's backstop. Behind an issuer
// far longer than --issuer allows, the maximal credential's token would exceed what token
// servers verify: the endpoint answers server_error telling to narrow the scope, and a
// narrower scope works.
func TestTokenEndpointRefusesATokenTooLargeToVerify(t *testing.T) {
	f := newFixture(t, func(o *tokenserver.Options) { o.Issuer = "https://" + strings.Repeat("i", 20<<10) })
	defs, apis := maximalCatalog()
	for _, d := range defs {
		f.store.SetAPI(d)
	}
	c := f.issue("max", apis, maximalCredential(defs))
	resp, body := f.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, c.id, c.secret)
	desc, _ := body["error_description"].(string)
	if resp.StatusCode != 500 || body["error"] != "server_error" || !strings.Contains(desc, "scope") {
		t.Errorf("oversized token: got %d %v, want 500 server_error naming scope", resp.StatusCode, body)
	}
	resp, body = f.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {apis[0].Name}}, c.id, c.secret)
	if resp.StatusCode != 200 {
		t.Errorf("with a narrower scope: got %d %v, want 200", resp.StatusCode, body)
	}
}
