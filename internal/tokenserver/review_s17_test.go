package tokenserver

// Security review of issue 11's memory and CPU cuts (session 17): shared scopes, the
// client-ID overflow map, digests instead of hash strings, the informer's small object,
// the token endpoint's frame arrays, recycled form buffer and stack-decoded Basic
// credentials. Each test is what a tenant who owns one namespace (any APICredential,
// any Secret there) or any HTTP client would try against one of those cuts.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
	"github.com/keysmith-dev/keysmith/internal/signingkey"
)

// s17Scope is the content a credential's scope must serve: nil and empty lists are the
// same (every reader uses len or Contains), nothing else is.
type s17Scope struct {
	account         string
	workspaces, sas []string
	apis            []iamv1alpha1.APIGrant
}

func (sc s17Scope) equal(o s17Scope) bool {
	return sc.account == o.account && slices.Equal(sc.workspaces, o.workspaces) &&
		slices.Equal(sc.sas, o.sas) && slices.Equal(sc.apis, o.apis)
}

func (sc s17Scope) object(ns, name, clientID string) *iamv1alpha1.APICredential {
	o := issuedCredential(ns, name, clientID, credential.Hash("kss_s17"))
	o.Status.Account = sc.account
	o.Spec.Scope.Workspaces = slices.Clone(sc.workspaces)
	o.Spec.APIs = slices.Clone(sc.apis)
	if sc.sas != nil {
		o.Spec.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: slices.Clone(sc.sas)}
	}
	return o
}

// s17Serves fails unless c serves exactly sc: its fields and every header value.
func s17Serves(t *testing.T, what string, c *Credential, sc s17Scope) {
	t.Helper()
	got := []Grant{}
	for _, g := range sc.apis {
		got = append(got, Grant{API: g.Name, Permission: g.Permission})
	}
	switch {
	case c.Account != sc.account || !slices.Equal(c.Workspaces, sc.workspaces) ||
		!slices.Equal(c.serviceAccounts, sc.sas) || !slices.Equal(c.Grants, got):
		t.Fatalf("%s: served %q %q %q %v, want %+v", what, c.Account, c.Workspaces, c.serviceAccounts, c.Grants, sc)
	case c.header(hdrAccount)[0] != sc.account || c.header(hdrWorkspaces)[0] != strings.Join(sc.workspaces, ","):
		t.Fatalf("%s: headers %q %q, want %+v", what, c.header(hdrAccount), c.header(hdrWorkspaces), sc)
	}
	for i, g := range got {
		if h := c.header(hdrGrants + i); len(h) != 1 || cap(h) != 1 || h[0] != g.Permission {
			t.Fatalf("%s: permission header %d is %q (cap %d), want %q", what, i, h, cap(h), g.Permission)
		}
	}
}

// TestReviewS17ScopeSharedOnlyWhenEqual: among credentials built from adversarial
// scopes (separators, NUL and uvarint-looking bytes, strings past 127 bytes whose length
// takes two uvarint bytes, both Unicode normal forms of one word, nil against empty,
// duplicates, reorderings, a list's element moved into the next list), two share a scope
// exactly when their content is equal, and each is served its own content.
func TestReviewS17ScopeSharedOnlyWhenEqual(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 17))
	atoms := []string{"", "a", "b", ",", ":", "/", "\x00", "\x01", "\x02", "\x7f", "\x80\x01", "é", "e\u0301",
		strings.Repeat("x", 127), strings.Repeat("x", 128), "a,b", "a:b"}
	word := func() string {
		var b strings.Builder
		for range r.IntN(3) {
			b.WriteString(atoms[r.IntN(len(atoms))])
		}
		return b.String()
	}
	list := func() []string {
		switch r.IntN(4) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		var out []string
		for range 1 + r.IntN(3) {
			out = append(out, word())
		}
		if len(out) > 1 && r.IntN(3) == 0 {
			out = append(out, out[0]) // a duplicate
		}
		return out
	}
	var scs []s17Scope
	for range 300 {
		sc := s17Scope{account: word(), workspaces: list(), sas: list()}
		for range r.IntN(3) {
			sc.apis = append(sc.apis, iamv1alpha1.APIGrant{Name: word(), Permission: word()})
		}
		scs = append(scs, sc)
		// Near-misses of it: reordered, an element moved to the next list, nil for empty.
		if len(sc.workspaces) > 1 {
			m := sc
			m.workspaces = slices.Clone(sc.workspaces)
			slices.Reverse(m.workspaces)
			scs = append(scs, m)
		}
		if len(sc.workspaces) > 0 {
			m := sc
			m.workspaces = sc.workspaces[:len(sc.workspaces)-1]
			m.sas = append([]string{sc.workspaces[len(sc.workspaces)-1]}, sc.sas...)
			scs = append(scs, m)
		}
		if len(sc.apis) > 0 {
			m := sc
			m.apis = slices.Clone(sc.apis)
			m.apis[0].Name, m.apis[0].Permission = m.apis[0].Name+m.apis[0].Permission, ""
			scs = append(scs, m)
		}
		m := sc
		m.workspaces = []string{}
		if sc.workspaces == nil {
			scs = append(scs, m) // equal to sc: must share
		}
	}
	creds := make([]*Credential, len(scs))
	for i, sc := range scs {
		c, ok := credentialFrom(sc.object(fmt.Sprintf("ns-%d", i%7), fmt.Sprintf("c-%d", i), fmt.Sprintf("id-%d", i)))
		if !ok {
			t.Fatalf("scope %d: not issued", i)
		}
		creds[i] = c
		s17Serves(t, fmt.Sprintf("scope %d", i), c, sc)
	}
	for i := range scs {
		for j := i + 1; j < len(scs); j++ {
			if shared, eq := creds[i].credentialScope == creds[j].credentialScope, scs[i].equal(scs[j]); shared != eq {
				t.Fatalf("scopes %+v and %+v: shared %v, equal %v", scs[i], scs[j], shared, eq)
			}
		}
	}
	runtime.KeepAlive(creds)
}

// TestReviewS17ScopeDetachedFromObject: the scope holds nothing of the object it was
// converted from: an informer (or a test) reusing the object's slices after conversion
// changes neither the credential nor any credential later given the same scope.
func TestReviewS17ScopeDetachedFromObject(t *testing.T) {
	sc := s17Scope{account: "acme", workspaces: []string{"eu-1", "us-2"}, sas: []string{"worker"},
		apis: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}}}
	obj := sc.object("team-a", "victim", "id-victim")
	c, _ := credentialFrom(obj)
	obj.Spec.Scope.Workspaces[0] = "*"
	obj.Spec.APIs[0].Permission = "admin"
	obj.Spec.WorkloadIdentity.ServiceAccounts[0] = "default"
	obj.Status.Account = "other"
	s17Serves(t, "after the object was changed in place", c, sc)
	twin, _ := credentialFrom(sc.object("evil", "twin", "id-twin"))
	if twin.credentialScope != c.credentialScope {
		t.Error("an equal scope is not shared")
	}
	s17Serves(t, "a later credential of the same scope", twin, sc)
	runtime.KeepAlive(c)
}

// TestReviewS17ScopeTableConcurrent: informer conversions on several goroutines at once,
// with collections running beside them so that table entries die and are made again
// while others look them up, always get a scope of exactly their own content (run it
// with -race: the table's locking is what it tests).
func TestReviewS17ScopeTableConcurrent(t *testing.T) {
	templates := []s17Scope{
		{account: "s17-a", workspaces: []string{"eu-1"}, apis: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}}},
		{account: "s17-a", workspaces: []string{"eu-1"}, apis: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "admin"}}},
		{account: "s17-b", workspaces: []string{"eu-1", "us-2"}, sas: []string{"worker"}},
		{account: "s17-b", workspaces: []string{"eu-1,us-2"}},
	}
	stop := make(chan struct{})
	var gc sync.WaitGroup
	gc.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
				time.Sleep(time.Millisecond)
			}
		}
	})
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for w := range 4 {
		wg.Go(func() {
			for i := range 400 {
				k := (w + i) % len(templates)
				sc := templates[k]
				c, _ := credentialFrom(sc.object("team", fmt.Sprintf("c-%d-%d", w, i), "id"))
				if c.Account != sc.account || !slices.Equal(c.Workspaces, sc.workspaces) || !slices.Equal(c.serviceAccounts, sc.sas) ||
					len(c.Grants) != len(sc.apis) || (len(sc.apis) > 0 && c.Grants[0].Permission != sc.apis[0].Permission) {
					select {
					case errs <- fmt.Sprintf("template %d served %q %q %v", k, c.Account, c.Workspaces, c.Grants):
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	gc.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestReviewS17ClientIDConflictModel drives the store through its informer handlers
// (trimCredential's small objects, adds, updates, deletes, tombstones) with random
// events on six credentials in two namespaces over three client IDs: issue, re-issue
// under another ID, un-issue, update in place, terminate, malformed hash, delete. After
// every event a client ID resolves exactly when one credential claims it, to that
// credential's latest version; the overflow map never holds an ID with fewer than two
// claimers, nor one also in claimed.
func TestReviewS17ClientIDConflictModel(t *testing.T) {
	ids := newIDs(t, 3)
	type state struct {
		clientID string // "" not issued
		version  int
	}
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 17))
		s := NewStore()
		h := credentialHandlers(s)
		model := map[types.NamespacedName]state{}
		last := map[types.NamespacedName]*credentialObject{} // what the informer holds
		keys := []types.NamespacedName{}
		for _, ns := range []string{"team-a", "evil"} {
			for _, n := range []string{"x", "y", "z"} {
				keys = append(keys, types.NamespacedName{Namespace: ns, Name: n})
			}
		}
		for step := range 300 {
			k := keys[r.IntN(len(keys))]
			var what string
			if r.IntN(5) == 0 { // delete
				old := last[k]
				if old == nil {
					continue
				}
				if r.IntN(2) == 0 {
					what = "delete " + k.String()
					h.OnDelete(old)
				} else {
					what = "tombstone " + k.String()
					h.OnDelete(toolscache.DeletedFinalStateUnknown{Key: k.String(), Obj: old})
				}
				delete(last, k)
				delete(model, k)
			} else {
				st := state{version: step}
				o := issuedCredential(k.Namespace, k.Name, "", credential.Hash("kss_s17"))
				o.Spec.APIs[0].Permission = fmt.Sprintf("v%d", step)
				switch r.IntN(6) {
				case 0: // not issued
				case 1: // a malformed hash still claims
					st.clientID = ids[r.IntN(len(ids))]
					o.Status.SecretHash = "SHA256:" + strings.Repeat("A", 64)
				case 2: // terminating still claims
					st.clientID = ids[r.IntN(len(ids))]
					o.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
				default:
					st.clientID = ids[r.IntN(len(ids))]
				}
				o.Status.ClientID = st.clientID
				obj, _ := trimCredential(o)
				co := obj.(*credentialObject)
				what = fmt.Sprintf("set %s claiming %q", k, st.clientID)
				if old := last[k]; old != nil {
					h.OnUpdate(old, co)
				} else {
					h.OnAdd(co, false)
				}
				last[k] = co
				if st.clientID == "" {
					delete(model, k)
				} else {
					model[k] = st
				}
			}
			for _, id := range ids {
				var claimers []types.NamespacedName
				for mk, st := range model {
					if st.clientID == id {
						claimers = append(claimers, mk)
					}
				}
				c, ok := s.Credential(id)
				switch {
				case len(claimers) == 1 && !ok:
					t.Fatalf("seed %d step %d (%s): %s has one claimer, %s, and resolves to nothing", seed, step, what, id[:8], claimers[0])
				case len(claimers) != 1 && ok:
					t.Fatalf("seed %d step %d (%s): %s has claimers %v and resolves to %s", seed, step, what, id[:8], claimers, c.Name)
				case ok && (c.Key != claimers[0] || c.Grants[0].Permission != fmt.Sprintf("v%d", model[claimers[0]].version)):
					t.Fatalf("seed %d step %d (%s): %s resolves to %s %v, want %s v%d", seed, step, what, id[:8], c.Name, c.Grants, claimers[0], model[claimers[0]].version)
				}
				if cl, in := s.conflicts[id]; in && (len(cl) < 2 || s.claimed[id] != nil) {
					t.Fatalf("seed %d step %d (%s): conflicts[%s] = %d claimers, claimed too: %v", seed, step, what, id[:8], len(cl), s.claimed[id] != nil)
				}
			}
			if s.Len() != len(model) {
				t.Fatalf("seed %d step %d (%s): store holds %d credentials, want %d", seed, step, what, s.Len(), len(model))
			}
		}
	}
}

// s17Server is a token server with a signing key and the seeds' catalog plus an API
// sharing platform-api's audience.
func s17Server(t *testing.T) (*Server, *Store, *clocktesting.FakeClock) {
	t.Helper()
	clock := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	store := NewStore()
	srv := New(store, Options{Issuer: "https://ks.example", Clock: clock, FailureRate: 1000, FailureBurst: 1000})
	key, err := signingkey.Generate(clock.Now(), clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetKeys(&signingkey.Set{Keys: []signingkey.Key{key}}); err != nil {
		t.Fatal(err)
	}
	srv.SetReady()
	def := func(name, audience string, perms ...string) {
		d := &iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: iamv1alpha1.APIDefinitionSpec{DisplayName: name, ScopeLevel: iamv1alpha1.ScopeLevelAccount, Audience: audience}}
		for _, p := range perms {
			d.Spec.Permissions = append(d.Spec.Permissions, iamv1alpha1.Permission{Name: p, Methods: []string{"GET"}})
		}
		store.SetAPI(d)
	}
	def("platform-api", "", "user", "admin")
	def("profile-api", "", "read-only")
	def("billing-api", "platform-api", "read") // shares platform-api's audience
	def("retired-perm-api", "", "read")        // does not offer "write"
	return srv, store, clock
}

// s17Token posts a client_credentials request and returns the status, the response and
// the token's payload (not verified: other tests verify signatures).
func s17Token(t *testing.T, srv *Server, form url.Values) (int, map[string]any, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", formMediaType)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	body := map[string]any{}
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	if rec.Code != http.StatusOK {
		return rec.Code, body, nil
	}
	parts := strings.Split(body["access_token"].(string), ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatalf("payload %s: %v", raw, err)
	}
	return rec.Code, body, claims
}

// TestReviewS17ClaimsAreTheGrants: a token's aud, scope and ks_apis are the credential's
// grants the catalog still serves, no more: a grant of an API not in the catalog or of a
// permission it no longer offers is left out (or invalid_scope when named), an API named
// twice is in once, two APIs of one audience give it once, a duplicated grant in the spec
// gives its first permission only (the one /authz decides by), and the token's identity
// is the credential's own although its scope is shared with another tenant's.
func TestReviewS17ClaimsAreTheGrants(t *testing.T) {
	srv, store, _ := s17Server(t)
	secret, err := credential.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	ids := newIDs(t, 2)
	sc := s17Scope{account: "acme", workspaces: []string{"eu-1"}, apis: []iamv1alpha1.APIGrant{
		{Name: "platform-api", Permission: "user"}, {Name: "missing-api", Permission: "read"},
		{Name: "billing-api", Permission: "read"}, {Name: "retired-perm-api", Permission: "write"},
		{Name: "platform-api", Permission: "admin"}, {Name: "profile-api", Permission: "read-only"},
	}}
	for i, ns := range []string{"team-a", "evil"} {
		o := sc.object(ns, "cred", ids[i])
		o.Status.SecretHash = credential.Hash(secret)
		store.SetCredential(o)
	}
	if a, _ := store.Credential(ids[0]); true {
		if b, _ := store.Credential(ids[1]); a.credentialScope != b.credentialScope {
			t.Fatal("the two credentials' equal scopes are not shared")
		}
	}
	form := func(id, scope string) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}
		if scope != "" {
			v.Set("scope", scope)
		}
		return v
	}
	for _, tc := range []struct {
		scope string
		want  []string // api:permission, in token order
		aud   []string
	}{
		{"", []string{"platform-api:user", "billing-api:read", "profile-api:read-only"}, []string{"platform-api", "profile-api"}},
		{"profile-api platform-api profile-api:read-only billing-api", []string{"profile-api:read-only", "platform-api:user", "billing-api:read"}, []string{"profile-api", "platform-api"}},
		{"billing-api:read", []string{"billing-api:read"}, []string{"platform-api"}},
	} {
		for i, id := range ids {
			code, body, claims := s17Token(t, srv, form(id, tc.scope))
			if code != http.StatusOK {
				t.Fatalf("scope %q: %d %v", tc.scope, code, body)
			}
			apis := map[string]any{}
			for _, p := range tc.want {
				api, perm, _ := strings.Cut(p, ":")
				apis[api] = perm
			}
			var aud []any
			for _, a := range tc.aud {
				aud = append(aud, a)
			}
			name := []string{"team-a", "evil"}[i] + "/cred"
			switch {
			case fmt.Sprint(claims["ks_apis"]) != fmt.Sprint(apis):
				t.Errorf("scope %q: ks_apis %v, want %v", tc.scope, claims["ks_apis"], apis)
			case fmt.Sprint(claims["aud"]) != fmt.Sprint(aud):
				t.Errorf("scope %q: aud %v, want %v", tc.scope, claims["aud"], aud)
			case claims["scope"] != strings.Join(tc.want, " ") || body["scope"] != claims["scope"]:
				t.Errorf("scope %q: scope %q (response %q), want %q", tc.scope, claims["scope"], body["scope"], strings.Join(tc.want, " "))
			case claims["client_id"] != id || claims["sub"] != id || claims["ks_cred"] != name:
				t.Errorf("scope %q: identity %v %v %v, want %s %s", tc.scope, claims["client_id"], claims["sub"], claims["ks_cred"], id, name)
			}
		}
	}
	for _, bad := range []string{"missing-api", "retired-perm-api", "platform-api:admin", "profile-api:admin", "platform-api:user:x", "   "} {
		if code, body, _ := s17Token(t, srv, form(ids[0], bad)); code != http.StatusBadRequest || body["error"] != "invalid_scope" {
			t.Errorf("scope %q: %d %v, want 400 invalid_scope", bad, code, body)
		}
	}
}

// TestReviewS17SecretDigests: a credential whose stored hash is not exactly what
// credential.Hash writes (upper-case hex, another scheme, a byte short or long, spaces,
// empty) authenticates no secret, its own included; a well-formed one authenticates its
// secret only. A rotated-out secret is accepted until its expiry, exclusive, under the
// version its tokens were issued with while it was current (so they survive the grace
// period), and not after; a malformed previous hash is accepted never.
func TestReviewS17SecretDigests(t *testing.T) {
	srv, store, clock := s17Server(t)
	secret, err := credential.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := credential.NewSecret()
	hash := credential.Hash(secret)
	hexPart := strings.TrimPrefix(hash, "sha256:")
	now := clock.Now()
	ids := newIDs(t, 12)
	malformed := []string{
		"sha256:" + strings.ToUpper(hexPart), "SHA256:" + hexPart, "sha512:" + hexPart, "sha256:" + hexPart[:63],
		hash + "0", " " + hash, hash + "\n", "sha256 " + hexPart, "sha256:" + hexPart[:62] + "zz", "",
	}
	for i, h := range malformed {
		o := issuedCredential("team-a", fmt.Sprintf("m%d", i), ids[i], h)
		store.SetCredential(o)
		for _, s := range []string{secret, other, ""} {
			if c, _ := srv.checkSecret(clientAuth{id: ids[i], secret: s}, now); c != nil {
				t.Errorf("stored hash %q authenticates a secret", h)
			}
		}
		if _, ok := credential.ParseHash(h); ok {
			t.Errorf("ParseHash(%q) is ok", h)
		}
	}
	good := issuedCredential("team-a", "good", ids[10], hash)
	store.SetCredential(good)
	if c, _ := srv.checkSecret(clientAuth{id: ids[10], secret: other}, now); c != nil {
		t.Error("another secret authenticates")
	}
	_, v1 := srv.checkSecret(clientAuth{id: ids[10], secret: secret}, now)
	if v1 == "" || v1 != versionOf(hash) {
		t.Fatalf("current secret: version %q, want %q", v1, versionOf(hash))
	}
	// Rotated: secret is previous until now+1m, other is current; a malformed previous
	// hash beside it.
	good.Status.SecretHash = credential.Hash(other)
	good.Status.PreviousSecrets = []iamv1alpha1.PreviousSecret{
		{Hash: "sha256:" + strings.ToUpper(hexPart), ExpiresAt: metav1.NewTime(now.Add(time.Hour))},
		{Hash: hash, ExpiresAt: metav1.NewTime(now.Add(time.Minute))},
	}
	store.SetCredential(good)
	c, v := srv.checkSecret(clientAuth{id: ids[10], secret: secret}, now.Add(time.Minute-time.Nanosecond))
	if c == nil || v != v1 {
		t.Errorf("previous secret within grace: %v, version %q, want %q", c != nil, v, v1)
	}
	if c, _ := store.Credential(ids[10]); !c.acceptsToken(v1, "", now.Add(time.Minute-time.Second)) || c.acceptsToken(v1, "", now.Add(time.Minute)) {
		t.Error("tokens of the previous secret: not accepted within grace, or accepted at its end")
	}
	if c, _ := srv.checkSecret(clientAuth{id: ids[10], secret: secret}, now.Add(time.Minute)); c != nil {
		t.Error("previous secret accepted at its expiry")
	}
	if c, v := srv.checkSecret(clientAuth{id: ids[10], secret: other}, now.Add(2*time.Hour)); c == nil || v != versionOf(credential.Hash(other)) {
		t.Errorf("current secret after rotation: %v %q", c != nil, v)
	}
}

// s17Basic is the reference parseBasic is held to: the standard library's Basic
// decoding (http.Request.BasicAuth: base64, then the first colon), then RFC 6749
// §2.3.1's form-decoding of both parts, and a client ID that is not empty.
func s17Basic(value string) (id, secret string, ok bool) {
	r := http.Request{Header: http.Header{"Authorization": {"Basic " + value}}}
	if id, secret, ok = r.BasicAuth(); !ok {
		return "", "", false
	}
	var err error
	if id, err = url.QueryUnescape(id); err != nil {
		return "", "", false
	}
	if secret, err = url.QueryUnescape(secret); err != nil {
		return "", "", false
	}
	return id, secret, id != ""
}

// TestReviewS17BasicOnTheStack: parseBasic decodes every value as base64's DecodeString
// did, around the 256-byte stack buffer's edge (decoded 250-262 bytes, values whose
// DecodedLen is just inside while the input is not a multiple of 4) and for corrupt
// input (bad padding, a bad character, CR/LF inside, truncation): nothing a client sends
// panics it or gets it another answer.
func TestReviewS17BasicOnTheStack(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 17))
	var values []string
	for n := 0; n <= 300; n++ {
		raw := make([]byte, n)
		for i := range raw {
			raw[i] = "abc:%+=\x00\xff"[r.IntN(9)]
		}
		if n > 2 && r.IntN(2) == 0 {
			raw[1] = ':'
		}
		enc := base64.StdEncoding.EncodeToString(raw)
		values = append(values, enc, enc+"=", enc+"A", enc+"AA", strings.TrimRight(enc, "="), "\r\n"+enc, enc[:len(enc)/2]+"\n"+enc[len(enc)/2:])
		if len(enc) > 4 {
			values = append(values, enc[:len(enc)-1], enc[:len(enc)-4]+"*"+enc[len(enc)-3:], enc[:len(enc)-3])
		}
	}
	for _, v := range values {
		id, secret, ok := parseBasic(v)
		wid, wsecret, wok := s17Basic(v)
		if id != wid || secret != wsecret || ok != wok {
			t.Fatalf("parseBasic(%q) = %q %q %v, want %q %q %v", v, id, secret, ok, wid, wsecret, wok)
		}
	}
}

// s17Reader returns its data in chunks, then err (io.EOF or a failure).
type s17Reader struct {
	data  []byte
	chunk int
	err   error
}

func (r *s17Reader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p[:min(len(p), r.chunk)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestReviewS17FormBufferKeepsNothing: a form read into the recycled buffer leaves none
// of its secret in any buffer the pool hands out next, whether it fits, grows the buffer
// (up to the 16 KiB kept and past it), is cut short by a failed read, is too large, or
// is not a valid form; and the form returned does not share the recycled buffer: another
// request read into it afterwards does not change it.
func TestReviewS17FormBufferKeepsNothing(t *testing.T) {
	const marker = "kss_S17SECRETMARKERxyzzy"
	poolHolds := func() string {
		if PooledBuffersHold(64, []byte("S17SECRETMARKER")) {
			return "a pooled buffer holds the secret"
		}
		return ""
	}
	for _, tc := range []struct {
		name    string
		pad     int
		chunk   int
		err     error
		invalid bool
		ok      bool
	}{
		{name: "small", pad: 10, chunk: 7, err: io.EOF, ok: true},
		{name: "grows the buffer", pad: 6000, chunk: 512, err: io.EOF, ok: true},
		{name: "past the kept size", pad: 20000, chunk: 4096, err: io.EOF, ok: true},
		{name: "cut short", pad: 3000, chunk: 100, err: errors.New("connection reset")},
		{name: "too large", pad: maxBodyBytes, chunk: 8192, err: io.EOF},
		{name: "not a form", pad: 40, chunk: 64, err: io.EOF, invalid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := "grant_type=client_credentials&client_id=x&client_secret=" + marker + "&pad=" + strings.Repeat("p", tc.pad)
			if tc.invalid {
				body += "&bad=%zz"
			}
			// The secret at the start and past the first chunks, where growth copies it.
			body += "&s2=" + marker
			req := httptest.NewRequest(http.MethodPost, "/oauth2/token", &s17Reader{data: []byte(body), chunk: tc.chunk, err: tc.err})
			req.Header.Set("Content-Type", formMediaType)
			form, oerr := readForm(httptest.NewRecorder(), req, maxBodyBytes)
			if (oerr == nil) != tc.ok {
				t.Fatalf("readForm: %v, want ok %v", oerr, tc.ok)
			}
			if msg := poolHolds(); msg != "" {
				t.Error(msg)
			}
			if !tc.ok {
				return
			}
			// Another request through the same buffers: the first form is its own.
			req2 := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(strings.Repeat("z", len(body))))
			req2.Header.Set("Content-Type", formMediaType)
			_, _ = readForm(httptest.NewRecorder(), req2, maxBodyBytes)
			if form.Get("client_secret") != marker || form.Get("s2") != marker || len(form.Get("pad")) != tc.pad {
				t.Errorf("the form changed after the buffer was reused: %q %q", form.Get("client_secret"), form.Get("s2"))
			}
		})
	}
}
