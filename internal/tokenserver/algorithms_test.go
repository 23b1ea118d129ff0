package tokenserver_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/keysmith-dev/keysmith/internal/signingkey"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// useKeys makes the fixture's key set the given keys, the last one signing at now and
// every other published and retired.
func (f *fixture) useKeys(keys ...signingkey.Key) {
	f.t.Helper()
	now := f.clock.Now()
	set := &signingkey.Set{}
	for i, k := range keys {
		k.ActivatesAt = now.Add(-time.Duration(len(keys)-1-i) * time.Hour)
		set.Keys = append(set.Keys, k)
	}
	for i := range set.Keys[:len(set.Keys)-1] {
		at := set.Keys[i+1].ActivatesAt
		set.Keys[i].RetiredAt = &at
	}
	f.keys = set
	if err := f.srv.SetKeys(set); err != nil {
		f.t.Fatal(err)
	}
}

func generate(t testing.TB, alg string, now time.Time) signingkey.Key {
	t.Helper()
	k, err := signingkey.GenerateAlgorithm(alg, now, now)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// servedJWKS fetches the JWKS the server publishes.
func (f *fixture) servedJWKS() (jose.JSONWebKeySet, []byte) {
	f.t.Helper()
	resp, err := http.Get(f.ts.URL + "/.well-known/jwks.json")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		f.t.Fatalf("JWKS %s: %v", body, err)
	}
	return set, body
}

// joseVerify verifies tok as a relying party would: go-jose, the alg allowed by the key
// the kid names in the served JWKS, and returns the claims.
func joseVerify(t *testing.T, jwks jose.JSONWebKeySet, tok string) map[string]any {
	t.Helper()
	var header struct{ Alg, Kid, Typ string }
	if err := json.Unmarshal(mustDecode(t, strings.Split(tok, ".")[0]), &header); err != nil {
		t.Fatal(err)
	}
	keys := jwks.Key(header.Kid)
	if len(keys) != 1 {
		t.Fatalf("kid %q: %d keys in the served JWKS", header.Kid, len(keys))
	}
	if keys[0].Algorithm != header.Alg || header.Typ != "at+jwt" {
		t.Fatalf("token header %+v, JWKS key alg %s", header, keys[0].Algorithm)
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(keys[0].Algorithm)})
	if err != nil {
		t.Fatalf("go-jose parse: %v", err)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatalf("go-jose verify (%s): %v", header.Alg, err)
	}
	claims := map[string]any{}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func (f *fixture) introspectActive(rs *client, tok string) bool {
	f.t.Helper()
	resp, body := f.post("/oauth2/introspect", url.Values{"token": {tok}}, rs.id, rs.secret)
	if resp.StatusCode != 200 {
		f.t.Fatalf("introspection: %d %v", resp.StatusCode, body)
	}
	return body["active"] == true
}

func headerAlg(t *testing.T, tok string) string {
	t.Helper()
	var h struct{ Alg string }
	if err := json.Unmarshal(mustDecode(t, strings.Split(tok, ".")[0]), &h); err != nil {
		t.Fatal(err)
	}
	return h.Alg
}

// Tokens of each algorithm verify with go-jose against the served JWKS, at /authz and by
// introspection.
func TestTokensOfEachAlgorithmVerify(t *testing.T) {
	for _, alg := range signingkey.Algorithms {
		t.Run(alg, func(t *testing.T) {
			f := newFixture(t, func(o *tokenserver.Options) { o.FailureRate, o.FailureBurst = 1, 1<<20 })
			f.useKeys(generate(t, alg, f.clock.Now()))
			c := f.issue("alg-user", grants("platform-api:user"))
			rs := f.issue("alg-rs", grants("profile-api:read-only"))
			tok := f.token(c)
			if got := headerAlg(t, tok); got != alg {
				t.Fatalf("token signed with %s, want %s", got, alg)
			}
			jwks, body := f.servedJWKS()
			if len(jwks.Keys) != 1 || jwks.Keys[0].Algorithm != alg || jwks.Keys[0].Use != "sig" || !jwks.Keys[0].IsPublic() {
				t.Fatalf("served JWKS %s", body)
			}
			claims := joseVerify(t, jwks, tok)
			if claims["client_id"] != c.id || claims["iss"] != f.ts.URL {
				t.Fatalf("claims %v", claims)
			}
			if code := f.authzStatus(tok); code != 200 {
				t.Fatalf("/authz: %d", code)
			}
			if !f.introspectActive(rs, tok) {
				t.Fatal("introspection: inactive")
			}
			// The control: a flipped signature byte is refused everywhere.
			sig := mustDecode(t, strings.Split(tok, ".")[2])
			sig[len(sig)/2] ^= 1
			bad := tok[:strings.LastIndexByte(tok, '.')+1] + base64.RawURLEncoding.EncodeToString(sig)
			if code := f.authzStatus(bad); code != 401 {
				t.Fatalf("/authz accepted a damaged %s signature: %d", alg, code)
			}
			if f.introspectActive(rs, bad) {
				t.Fatalf("introspection accepted a damaged %s signature", alg)
			}
			// One spelling per token under every algorithm: the signature's trailing-bit
			// twins and a padded signature are refused.
			seg := strings.Split(tok, ".")
			variants := []string{tok + "=", tok + "=="}
			for _, twin := range trailingBitTwins(seg[2]) {
				variants = append(variants, seg[0]+"."+seg[1]+"."+twin)
			}
			if len(variants) < 3 {
				t.Fatalf("no trailing-bit twins of a %s signature", alg)
			}
			for _, v := range variants {
				if code := f.authzStatus(v); code != 401 {
					t.Errorf("another spelling of a %s token: /authz %d, want 401", alg, code)
				}
			}
		})
	}
}

// A set with keys of all three algorithms, as during two changes of algorithm, verifies
// the tokens each of them signed.
func TestMixedKeySetVerifiesTokensOfEachAlgorithm(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now()
	es, rs, ed := generate(t, signingkey.ES256, now), generate(t, signingkey.RS256, now), generate(t, signingkey.EdDSA, now)
	c := f.issue("mixed-user", grants("platform-api:user"))
	introspector := f.issue("mixed-rs", grants("profile-api:read-only"))
	tokens := map[string]string{}
	for _, order := range [][]signingkey.Key{{rs, ed, es}, {es, ed, rs}, {es, rs, ed}} {
		f.useKeys(order...)
		tok := f.token(c)
		tokens[headerAlg(t, tok)] = tok
	}
	if len(tokens) != 3 {
		t.Fatalf("tokens of %d algorithms, want 3", len(tokens))
	}
	jwks, body := f.servedJWKS() // the last set: EdDSA signs, ES256 and RS256 retired
	if len(jwks.Keys) != 3 {
		t.Fatalf("served JWKS %s", body)
	}
	for alg, tok := range tokens {
		if claims := joseVerify(t, jwks, tok); claims["client_id"] != c.id {
			t.Errorf("%s: claims %v", alg, claims)
		}
		if code := f.authzStatus(tok); code != 200 {
			t.Errorf("%s: /authz %d", alg, code)
		}
		if !f.introspectActive(introspector, tok) {
			t.Errorf("%s: introspection inactive", alg)
		}
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// signWith signs header.payload with priv as alg says (or HMAC when alg is HS256 and
// priv a []byte), in the JWS form of each algorithm.
func signWith(t *testing.T, alg string, priv any, header, payload string) string {
	t.Helper()
	in := header + "." + payload
	digest := sha256.Sum256([]byte(in))
	var sig []byte
	var err error
	switch alg {
	case "HS256":
		m := hmac.New(sha256.New, priv.([]byte))
		m.Write([]byte(in))
		sig = m.Sum(nil)
	case "none":
	case "ES256":
		k := priv.(*ecdsa.PrivateKey)
		var r, s *big.Int
		if r, s, err = ecdsa.Sign(rand.Reader, k, digest[:]); err != nil {
			t.Fatal(err)
		}
		if n := k.Curve.Params().N; s.Cmp(new(big.Int).Rsh(n, 1)) > 0 {
			s.Sub(n, s)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	case "RS256":
		sig, err = rsa.SignPKCS1v15(nil, priv.(*rsa.PrivateKey), crypto.SHA256, digest[:])
	case "PS256":
		sig, err = rsa.SignPSS(rand.Reader, priv.(*rsa.PrivateKey), crypto.SHA256, digest[:], nil)
	case "EdDSA":
		sig = ed25519.Sign(priv.(ed25519.PrivateKey), []byte(in))
	default:
		t.Fatalf("no signer for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// No algorithm confusion: a token verifies only under the algorithm of the key its kid
// names. "alg":"none", HS256 with the RSA (or any) public key as the HMAC secret, and
// every other algorithm under each kid, each correctly signed for what it claims, are
// refused at /authz and by introspection, by the signing server and by a verify-only one.
func TestNoAlgorithmConfusion(t *testing.T) {
	f := newFixture(t, func(o *tokenserver.Options) { o.FailureRate, o.FailureBurst = 1, 1<<20 })
	now := f.clock.Now()
	keys := map[string]signingkey.Key{}
	for _, alg := range signingkey.Algorithms {
		keys[alg] = generate(t, alg, now)
	}
	f.useKeys(keys[signingkey.RS256], keys[signingkey.EdDSA], keys[signingkey.ES256])
	c := f.issue("confused", grants("platform-api:user"))
	rs := f.issue("confused-rs", grants("profile-api:read-only"))
	payload := strings.Split(f.token(c), ".")[1] // real, valid claims

	// The control: a token built by this test's own signer for the right alg and kid is
	// accepted, so every refusal below is the algorithm's.
	forged := map[string]string{}
	for alg, k := range keys {
		h := b64(`{"alg":"` + alg + `","kid":"` + k.ID + `","typ":"at+jwt"}`)
		tok := signWith(t, alg, k.Private, h, payload)
		if code := f.authzStatus(tok); code != 200 {
			t.Fatalf("control %s: /authz %d", alg, code)
		}
		for _, other := range []string{"ES256", "RS256", "PS256", "EdDSA"} {
			if other == alg {
				continue
			}
			// Claim another algorithm under this kid, signed with a published key of
			// that algorithm (or with this RSA key for PS256).
			signer := any(nil)
			switch other {
			case "PS256":
				signer = keys[signingkey.RS256].Private
			default:
				signer = keys[other].Private
			}
			h := b64(`{"alg":"` + other + `","kid":"` + k.ID + `","typ":"at+jwt"}`)
			forged[other+" under the "+alg+" kid"] = signWith(t, other, signer, h, payload)
		}
		forged["none under the "+alg+" kid"] = b64(`{"alg":"none","kid":"`+k.ID+`","typ":"at+jwt"}`) + "." + payload + "."
		forged["none under the "+alg+" kid, no typ"] = b64(`{"alg":"none","kid":"`+k.ID+`"}`) + "." + payload + "."
		forged["none, header without kid"] = b64(`{"alg":"none"}`) + "." + payload + "."
	}
	// HS256 with the public key as the secret, in each form a verifier might feed it.
	pub := keys[signingkey.RS256].Private.Public()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := x509.MarshalPKCS1PublicKey(pub.(*rsa.PublicKey))
	jwk, _ := json.Marshal(jose.JSONWebKey{Key: pub, KeyID: keys[signingkey.RS256].ID, Algorithm: "RS256", Use: "sig"})
	for name, secret := range map[string][]byte{
		"PKIX PEM":  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		"PKCS1 PEM": pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: pkcs1}),
		"PKIX DER":  der,
		"JWK":       jwk,
	} {
		for _, kid := range []string{keys[signingkey.RS256].ID, keys[signingkey.ES256].ID} {
			h := b64(`{"alg":"HS256","kid":"` + kid + `","typ":"at+jwt"}`)
			forged["HS256 with the RSA public key ("+name+") as secret, kid "+kid[:6]] = signWith(t, "HS256", secret, h, payload)
		}
	}
	if len(forged) < 20 {
		t.Fatalf("only %d forgeries built", len(forged))
	}

	sidecar := tokenserver.New(f.store, tokenserver.Options{Issuer: f.ts.URL, Clock: f.clock, VerifyOnly: true, FailureRate: 1, FailureBurst: 1 << 20})
	jwks, err := f.keys.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	if err := sidecar.SetVerifyKeys(jwks); err != nil {
		t.Fatal(err)
	}
	sidecar.SetReady()
	for name, tok := range forged {
		if code := f.authzStatus(tok); code != 401 {
			t.Errorf("%s: /authz %d, want 401", name, code)
		}
		if f.introspectActive(rs, tok) {
			t.Errorf("%s: introspection says active", name)
		}
		if code := authzOn(t, sidecar, tok); code != 401 {
			t.Errorf("%s: verify-only /authz %d, want 401", name, code)
		}
	}
}

func authzOn(t *testing.T, s *tokenserver.Server, tok string) int {
	t.Helper()
	req := httpRequest(http.MethodGet, "/authz/platform-api", "")
	req.Header.Set("Authorization", bearer(tok))
	req.Header.Set("X-Forwarded-Method", "GET")
	return record(s.Handler(), req).Code
}

// A verify-only server parses the RSA and OKP keys of the public ConfigMap's JWKS and
// verifies tokens of each algorithm; a JWKS entry whose alg does not fit its key type is
// ignored, not used with either algorithm.
func TestVerifyOnlyServerVerifiesEachAlgorithm(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now()
	es, rsKey, ed := generate(t, signingkey.ES256, now), generate(t, signingkey.RS256, now), generate(t, signingkey.EdDSA, now)
	c := f.issue("vo-user", grants("platform-api:user"))
	tokens := map[string]string{}
	for _, order := range [][]signingkey.Key{{rsKey, ed, es}, {es, ed, rsKey}, {es, rsKey, ed}} {
		f.useKeys(order...)
		tokens[order[2].Algorithm] = f.token(c)
	}
	jwks, err := f.keys.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "keysmith-system", Name: signingkey.PublicName("keysmith-signing-keys")},
		Data:       map[string]string{signingkey.PublicDataKey: string(jwks)},
	}
	sidecar := tokenserver.New(f.store, tokenserver.Options{Issuer: f.ts.URL, Clock: f.clock, VerifyOnly: true})
	if err := sidecar.SetVerifyKeysFromConfigMap(cm); err != nil {
		t.Fatal(err)
	}
	sidecar.SetReady()
	for alg, tok := range tokens {
		if code := authzOn(t, sidecar, tok); code != 200 {
			t.Errorf("verify-only: %s token %d, want 200", alg, code)
		}
	}
	ts := httptest.NewServer(sidecar.Handler())
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, k := range f.keys.Keys {
		if !strings.Contains(string(body), k.ID) {
			t.Errorf("verify-only JWKS lacks the %s key: %s", k.Algorithm, body)
		}
	}

	// Declared algs swapped: RSA declared ES256, OKP declared RS256, EC declared EdDSA.
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatal(err)
	}
	swap := map[string]string{"RS256": "ES256", "EdDSA": "RS256", "ES256": "EdDSA"}
	for i := range set.Keys {
		set.Keys[i].Algorithm = swap[set.Keys[i].Algorithm]
	}
	swapped, _ := json.Marshal(set)
	if err := sidecar.SetVerifyKeys(swapped); err == nil {
		t.Fatalf("a JWKS with no key whose alg fits its type was accepted")
	}
	// One fitting key among misfits: only it verifies.
	set.Keys = append(set.Keys, jose.JSONWebKey{Key: ed.Private.Public(), KeyID: ed.ID, Algorithm: "EdDSA", Use: "sig"})
	set.Keys[0], set.Keys[len(set.Keys)-1] = set.Keys[len(set.Keys)-1], set.Keys[0]
	mixed, _ := json.Marshal(set)
	if err := sidecar.SetVerifyKeys(mixed); err != nil {
		t.Fatal(err)
	}
	if code := authzOn(t, sidecar, tokens["EdDSA"]); code != 200 {
		t.Errorf("the fitting EdDSA key: %d", code)
	}
	for _, alg := range []string{"ES256", "RS256"} {
		if code := authzOn(t, sidecar, tokens[alg]); code != 401 {
			t.Errorf("%s token under a JWKS declaring its key another alg: %d, want 401", alg, code)
		}
	}
}
