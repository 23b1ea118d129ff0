package tokenserver

import (
	"bytes"
	"encoding/json"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/keysmith-dev/keysmith/internal/signingkey"
)

// The CRD limits that bound a token (api/v1alpha1, kubebuilder markers), and the
// token server's own issuer bound: worstCaseClaims is built from them.
const (
	maxGrants        = 32   // APICredential spec.apis MaxItems
	maxAPINameLen    = 253  // spec.apis[].name MaxLength (an APIDefinition name)
	maxPermissionLen = 63   // spec.apis[].permission MaxLength
	maxWorkspaces    = 64   // spec.scope.workspaces MaxItems
	maxWorkspaceLen  = 63   // spec.scope.workspaces[] MaxLength
	maxAccountLen    = 63   // spec.scope.account MaxLength
	maxNamespaceLen  = 63   // a namespace name
	maxNameLen       = 253  // an APICredential name
	maxAudienceLen   = 2048 // APIDefinition spec.audience MaxLength
	// maxIssuerLen bounds --issuer (a URL); the worst case assumes it.
	maxIssuerLen = MaxIssuerLength
)

// worstCaseClaims are the largest claims the CRD limits allow: every list at its MaxItems,
// every name at its MaxLength, every API with its own 2048-character audience. Audiences
// are assumed to need no JSON escaping (URLs and names do not); an audience full of
// quotes, control or non-ASCII characters can go beyond, and the signer then refuses.
func worstCaseClaims() *Claims {
	name := func(prefix string, i, n int) string {
		s := prefix + string(rune('a'+i/26%26)) + string(rune('a'+i%26))
		return s + strings.Repeat("x", n-len(s))
	}
	c := &Claims{
		Issuer:        "https://" + strings.Repeat("i", maxIssuerLen-len("https://")),
		Subject:       "ksc_" + strings.Repeat("A", 26),
		ExpiresAt:     1<<63 - 1,
		IssuedAt:      1<<63 - 1,
		ID:            strings.Repeat("j", 22),
		ClientID:      "ksc_" + strings.Repeat("A", 26),
		Credential:    strings.Repeat("n", maxNamespaceLen) + "/" + strings.Repeat("c", maxNameLen),
		Account:       strings.Repeat("a", maxAccountLen),
		APIs:          make(map[string]string, maxGrants),
		SecretVersion: strings.Repeat("v", 12),
	}
	var scope []string
	for i := range maxGrants {
		api, perm := name("api", i, maxAPINameLen), name("p", i, maxPermissionLen)
		c.APIs[api] = perm
		c.grants = append(c.grants, Grant{api, perm})
		c.Audience = append(c.Audience, name("https://aud", i, maxAudienceLen))
		scope = append(scope, api+":"+perm)
	}
	c.Scope = strings.Join(scope, " ")
	for i := range maxWorkspaces {
		c.Workspaces = append(c.Workspaces, name("w", i, maxWorkspaceLen))
	}
	return c
}

// TestCRDLimitsAreTheWorstCase: the limits worstCaseClaims assumes are the generated
// CRDs' own, so raising a MaxItems or MaxLength without raising maxTokenBytes fails here.
func TestCRDLimitsAreTheWorstCase(t *testing.T) {
	schema := func(file string) map[string]any {
		raw, err := os.ReadFile("../../config/crd/bases/" + file)
		if err != nil {
			t.Fatal(err)
		}
		var crd map[string]any
		if err := yaml.Unmarshal(raw, &crd); err != nil {
			t.Fatal(err)
		}
		v := crd["spec"].(map[string]any)["versions"].([]any)[0].(map[string]any)
		return v["schema"].(map[string]any)["openAPIV3Schema"].(map[string]any)
	}
	at := func(node map[string]any, path string) float64 {
		t.Helper()
		parts := strings.Split(path, ".")
		for _, p := range parts[:len(parts)-1] {
			if p == "items" {
				node = node["items"].(map[string]any)
				continue
			}
			node = node["properties"].(map[string]any)[p].(map[string]any)
		}
		v, ok := node[parts[len(parts)-1]].(float64)
		if !ok {
			t.Fatalf("%s is not in the CRD", path)
		}
		return v
	}
	cred, def := schema("iam.keysmith.dev_apicredentials.yaml"), schema("iam.keysmith.dev_apidefinitions.yaml")
	for _, tc := range []struct {
		node  map[string]any
		path  string
		limit int
	}{
		{cred, "spec.apis.maxItems", maxGrants},
		{cred, "spec.apis.items.name.maxLength", maxAPINameLen},
		{cred, "spec.apis.items.permission.maxLength", maxPermissionLen},
		{cred, "spec.scope.workspaces.maxItems", maxWorkspaces},
		{cred, "spec.scope.workspaces.items.maxLength", maxWorkspaceLen},
		{cred, "spec.scope.account.maxLength", maxAccountLen},
		{def, "spec.audience.maxLength", maxAudienceLen},
	} {
		if got := at(tc.node, tc.path); int(got) != tc.limit {
			t.Errorf("CRD %s = %v, the token size bound assumes %d", tc.path, got, tc.limit)
		}
	}
}

func testKeys(t testing.TB) *Server {
	t.Helper()
	s := New(NewStore(), Options{Issuer: "https://keysmith.example"})
	now := time.Now()
	k, err := signingkey.Generate(now, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetKeys(&signingkey.Set{Keys: []signingkey.Key{k}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWorstCaseTokenFits: the largest claims the CRDs allow sign into a token within
// maxTokenBytes that verifies; one byte of issuer more than the bound leaves makes the
// signer refuse (errTokenTooLarge) instead of minting what no token server accepts.
func TestWorstCaseTokenFits(t *testing.T) {
	s := testKeys(t)
	c := worstCaseClaims()
	tok, err := s.keys.sign(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) > maxTokenBytes || len(tok) < maxTokenBytes*9/10 {
		t.Fatalf("the worst-case token is %d bytes; maxTokenBytes %d should hold it with little to spare", len(tok), maxTokenBytes)
	}
	if _, _, err := s.keys.verify(tok); err != nil {
		t.Fatalf("the worst-case token does not verify: %v", err)
	}
	c.Issuer += strings.Repeat("i", maxTokenBytes-len(tok)) // now over the limit by the base64 growth
	if _, err := s.keys.sign(c); err != errTokenTooLarge {
		t.Errorf("a token over maxTokenBytes: sign returned %v, want errTokenTooLarge", err)
	}
}

// TestSignerEmitsLowS: every signature the signer writes has s <= n/2 (else the
// verifier, which accepts only low s, would refuse half of keysmith's own tokens).
func TestSignerEmitsLowS(t *testing.T) {
	s := testKeys(t)
	c := worstCaseClaims()
	c.Issuer = "https://keysmith.example"
	for i := range 200 {
		c.ID = strings.Repeat("j", i%22) // a fresh message each time
		tok, err := s.keys.sign(c)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := strictB64.DecodeString(tok[strings.LastIndexByte(tok, '.')+1:])
		if err != nil || bytes.Compare(sig[32:], p256HalfNBytes) > 0 {
			t.Fatalf("signature %d is high-s or malformed (%v)", i, err)
		}
		if _, _, err := s.keys.verify(tok); err != nil {
			t.Fatalf("token %d does not verify: %v", i, err)
		}
	}
}

// TestTokenCacheFootprintIsAnUpperBound: the bytes the cache charges per entry are at
// least the heap the entry really holds, for small, wide and worst-case claims, so the
// byte bound is a bound.
func TestTokenCacheFootprintIsAnUpperBound(t *testing.T) {
	wide := worstCaseClaims()
	wide.Issuer, wide.Audience = "https://keysmith.example", wide.Audience[:3]
	for k := range wide.APIs {
		if len(wide.APIs) > 3 {
			delete(wide.APIs, k)
		}
	}
	wide.grants = nil
	small := &Claims{Issuer: "https://keysmith.example", Subject: "ksc_abc", Audience: []string{"platform-api"},
		IssuedAt: 1, ExpiresAt: 1 << 40, ID: "jti-0123456789abcdef", ClientID: "ksc_abc", Scope: "platform-api:user",
		Credential: "team-a/automation", Account: "acme", APIs: map[string]string{"platform-api": "user"}, SecretVersion: "1"}
	for _, tc := range []struct {
		name   string
		claims *Claims
		n      int
	}{{"small", small, 4000}, {"wide", wide, 400}, {"worst case", worstCaseClaims(), 40}} {
		payload := tc.claims.appendJSON(nil)
		cache := newTokenCache(1 << 40)
		now := time.Unix(2, 0)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range tc.n {
			c := &Claims{}
			if err := json.Unmarshal(payload, c); err != nil {
				t.Fatal(err)
			}
			cache.put(tokenDigest(string(payload)+strings.Repeat(" ", i)), c, verifiedBy{header: "h"}, now, nil)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		charged := cache.bytes.Load()
		t.Logf("%s: %d bytes held per entry, %d charged", tc.name, held/int64(tc.n), charged/int64(tc.n))
		if held > charged {
			t.Errorf("%s claims: %d entries hold %d bytes of heap but are charged %d", tc.name, tc.n, held, charged)
		}
		runtime.KeepAlive(cache)
	}
}
