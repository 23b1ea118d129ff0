package signingkey

import (
	"crypto"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

var policy = Policy{RotationPeriod: 720 * time.Hour, PrePublish: time.Hour, Retention: 24 * time.Hour}

func mustPlan(t *testing.T, set *Set, now time.Time) (*Set, bool) {
	t.Helper()
	next, changed, err := Plan(set, now, policy)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	return next, changed
}

func TestPlanLifecycle(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	set, changed := mustPlan(t, nil, t0)
	if !changed || len(set.Keys) != 1 {
		t.Fatalf("first plan: changed=%v keys=%d, want a single new key", changed, len(set.Keys))
	}
	first := set.Keys[0]
	if k, ok := set.Signing(t0); !ok || k.ID != first.ID {
		t.Fatalf("the first key must sign at once")
	}

	if _, changed := mustPlan(t, set, t0.Add(100*time.Hour)); changed {
		t.Fatalf("nothing is due mid-period, yet Plan changed the set")
	}
	if got, want := NextEvent(set, policy), t0.Add(719*time.Hour); !got.Equal(want) {
		t.Fatalf("NextEvent = %s, want %s (the successor is pre-published an hour early)", got, want)
	}

	// The successor is published an hour before it signs; the old key keeps signing.
	tPub := t0.Add(719 * time.Hour)
	set, changed = mustPlan(t, set, tPub)
	if !changed || len(set.Keys) != 2 {
		t.Fatalf("successor: changed=%v keys=%d", changed, len(set.Keys))
	}
	second := set.Keys[1]
	if !second.ActivatesAt.Equal(t0.Add(720 * time.Hour)) {
		t.Fatalf("successor activates at %s, want the end of the period", second.ActivatesAt)
	}
	if k, _ := set.Signing(tPub); k.ID != first.ID {
		t.Fatalf("before activation the first key must still sign")
	}
	if k, _ := set.Signing(second.ActivatesAt); k.ID != second.ID {
		t.Fatalf("from activation the successor must sign")
	}
	if set.Keys[0].RetiredAt == nil || !set.Keys[0].RetiredAt.Equal(second.ActivatesAt) {
		t.Fatalf("the first key must be retired when the successor activates, got %v", set.Keys[0].RetiredAt)
	}
	if at, ok := set.NextActivation(tPub); !ok || !at.Equal(second.ActivatesAt) {
		t.Fatalf("NextActivation = %s %v", at, ok)
	}
	if _, changed := mustPlan(t, set, tPub); changed {
		t.Fatalf("Plan is not idempotent")
	}

	// The retired key stays published for the retention, then goes.
	tKeep := second.ActivatesAt.Add(policy.Retention - time.Second)
	if set2, _ := mustPlan(t, set, tKeep); len(set2.Keys) != 2 {
		t.Fatalf("a retired key must stay published for the retention")
	}
	if got := NextEvent(set, policy); !got.Equal(second.ActivatesAt.Add(policy.Retention)) {
		t.Fatalf("NextEvent = %s, want the end of retention", got)
	}
	set, changed = mustPlan(t, set, second.ActivatesAt.Add(policy.Retention))
	if !changed || len(set.Keys) != 1 || set.Keys[0].ID != second.ID {
		t.Fatalf("after retention only the successor must remain, got %d keys", len(set.Keys))
	}
}

func TestPlanAfterLongDowntimeNeverLeavesAGap(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	set, _ := mustPlan(t, nil, t0)
	late := t0.Add(5000 * time.Hour) // the operator was down for months
	set, _ = mustPlan(t, set, late)
	k, ok := set.Signing(late)
	if !ok || k.ID != set.Keys[0].ID {
		t.Fatalf("the old key must keep signing until the successor is published for PrePublish")
	}
	if len(set.Keys) != 2 || !set.Keys[1].ActivatesAt.Equal(late.Truncate(time.Second).Add(policy.PrePublish)) {
		t.Fatalf("the successor must activate PrePublish after it is published")
	}
}

func TestMarshalParseRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	set, _ := mustPlan(t, nil, now)
	set, _ = mustPlan(t, set, now.Add(719*time.Hour))
	data, err := set.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(got.Keys) != 2 {
		t.Fatalf("round trip lost keys: %d", len(got.Keys))
	}
	for i := range got.Keys {
		a, b := set.Keys[i], got.Keys[i]
		if a.ID != b.ID || !a.Private.(interface{ Equal(crypto.PrivateKey) bool }).Equal(b.Private) || !a.ActivatesAt.Equal(b.ActivatesAt) || (a.RetiredAt == nil) != (b.RetiredAt == nil) {
			t.Fatalf("key %d differs after round trip", i)
		}
	}
}

func TestParseRefusesBrokenSets(t *testing.T) {
	now := time.Now()
	k, err := Generate(now, now)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := (&Set{Keys: []Key{k}}).Marshal()
	tampered := strings.Replace(string(good), k.ID, "not-the-thumbprint", 1)
	dup, _ := (&Set{Keys: []Key{k, k}}).Marshal()
	for name, tc := range map[string]struct{ data, want string }{
		"empty":       {"", "empty"},
		"not json":    {"{", DataKey},
		"no keys":     {`{"keys":[]}`, "no keys"},
		"bad alg":     {`{"keys":[{"kid":"x","alg":"HS256","privateKey":""}]}`, `"HS256" is not supported`},
		"alg none":    {`{"keys":[{"kid":"x","alg":"none","privateKey":""}]}`, `"none" is not supported`},
		"bad pem":     {`{"keys":[{"kid":"x","alg":"ES256","privateKey":"nope"}]}`, "PEM"},
		"foreign kid": {tampered, "thumbprint"},
		"duplicate":   {string(dup), "duplicate kid"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestJWKSPublishesOnlyPublicKeysThatVerify(t *testing.T) {
	now := time.Now()
	set, _ := mustPlan(t, nil, now)
	data, err := set.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), `"d"`) {
		t.Fatalf("the JWKS must not carry the private exponent: %s", data)
	}
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal(data, &jwks); err != nil {
		t.Fatal(err)
	}
	keys := jwks.Key(set.Keys[0].ID)
	if len(keys) != 1 || !keys[0].IsPublic() || keys[0].Algorithm != "ES256" || keys[0].Use != "sig" {
		t.Fatalf("JWKS key = %+v", keys)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: set.Keys[0].Private}, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 32)
	_, _ = rand.Read(payload)
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(keys[0].Key); err != nil {
		t.Fatalf("the published key does not verify its own signature: %v", err)
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, p := range []Policy{
		{},
		{RotationPeriod: time.Hour, PrePublish: time.Hour, Retention: time.Hour},
		{RotationPeriod: time.Hour, PrePublish: -time.Second, Retention: time.Hour},
		{RotationPeriod: time.Hour, Retention: 0},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", p)
		}
	}
	if err := policy.Validate(); err != nil {
		t.Errorf("the default policy is refused: %v", err)
	}
}
