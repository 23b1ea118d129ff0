package tokenserver

import (
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// issuedCredential is an issued APICredential with the given client ID and secret hash.
func issuedCredential(ns, name, clientID, hash string) *iamv1alpha1.APICredential {
	return &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name)},
		Spec: iamv1alpha1.APICredentialSpec{
			APIs:  []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}},
			Scope: iamv1alpha1.CredentialScope{Workspaces: []string{"eu-1", "us-2"}},
		},
		Status: iamv1alpha1.APICredentialStatus{ClientID: clientID, SecretHash: hash, Account: "acme"},
	}
}

func newIDs(t *testing.T, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		var err error
		if ids[i], err = credential.NewClientID(); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// TestStoreConflictOverflow walks a client ID through the store's overflow path (one
// claimer in claimed, two or more in conflicts): while more than one credential claims
// it, whichever they are and however they change, it resolves to nothing (fail closed),
// and it resolves again to the one left, in its latest version, once the others let go
// (deleted, moved to another client ID, no longer issued). Nothing is left behind.
func TestStoreConflictOverflow(t *testing.T) {
	ids := newIDs(t, 2)
	id1, id2 := ids[0], ids[1]
	hash := credential.Hash("kss_whatever")
	s := NewStore()
	var reported [][]types.NamespacedName
	s.onConflict = func(id string, keys []types.NamespacedName) {
		if id != id1 && id != id2 {
			t.Errorf("conflict reported on %s", id)
		}
		reported = append(reported, keys)
	}
	resolves := func(step, id string, want *iamv1alpha1.APICredential) {
		t.Helper()
		c, ok := s.Credential(id)
		switch {
		case want == nil && ok:
			t.Errorf("%s: %s resolves to %s, want nothing (fail closed)", step, id, c.Name)
		case want != nil && !ok:
			t.Errorf("%s: %s resolves to nothing, want %s/%s", step, id, want.Namespace, want.Name)
		case want != nil && (c.Name != want.Namespace+"/"+want.Name || c.Grants[0].Permission != want.Spec.APIs[0].Permission):
			t.Errorf("%s: %s resolves to %s %v, want %s/%s %v", step, id, c.Name, c.Grants, want.Namespace, want.Name, want.Spec.APIs)
		}
	}
	a := issuedCredential("team-a", "a", id1, hash)
	b := issuedCredential("team-b", "b", id1, hash)
	c := issuedCredential("team-c", "c", id1, hash)

	s.SetCredential(a)
	resolves("one claimer", id1, a)
	s.SetCredential(b)
	resolves("two claimers", id1, nil)
	if len(reported) != 1 || len(reported[0]) != 2 {
		t.Errorf("conflicts reported: %v, want one with two keys", reported)
	}
	s.SetCredential(c)
	resolves("three claimers", id1, nil)
	b.Spec.APIs[0].Permission = "admin"
	s.SetCredential(b)
	resolves("a claimer updated in place", id1, nil)
	s.DeleteCredential(keyOf(a))
	resolves("the first claimer deleted, two left", id1, nil)
	c.Status.ClientID = id2
	s.SetCredential(c)
	resolves("one claimer moved away", id1, b)
	resolves("the moved claimer's new client ID", id2, c)
	b.Status.ClientID = id2
	s.SetCredential(b)
	resolves("the last claimer moved too", id1, nil)
	resolves("two claimers of the second ID", id2, nil)
	b.Status.SecretHash, b.Status.ClientID = "", "" // no longer issued: withdraws its claim
	s.SetCredential(b)
	resolves("one claimer no longer issued", id2, c)
	b.Status.ClientID, b.Status.SecretHash = id2, hash
	s.SetCredential(b)
	resolves("issued again", id2, nil)
	s.DeleteCredential(keyOf(c))
	resolves("one of two deleted", id2, b)
	s.DeleteCredential(keyOf(b))
	resolves("all deleted", id2, nil)
	if s.Len() != 0 || len(s.claimed) != 0 || len(s.conflicts) != 0 || len(s.byName) != 0 {
		t.Errorf("left behind: %d credentials, %d claimed, %d conflicts, %d by name", s.Len(), len(s.claimed), len(s.conflicts), len(s.byName))
	}
	// A delete of a credential the store does not hold, or of a key that never claimed a
	// conflicting ID, changes nothing.
	s.SetCredential(a)
	s.SetCredential(b)
	s.DeleteCredential(types.NamespacedName{Namespace: "team-z", Name: "z"})
	resolves("an unknown key deleted", id1, a)
	resolves("the other ID", id2, b)
}

// keyOf is the store key of an object.
func keyOf(o *iamv1alpha1.APICredential) types.NamespacedName {
	return types.NamespacedName{Namespace: o.Namespace, Name: o.Name}
}

// TestSharedScopeCannotBeReachedByAnotherTenant: credentials with equal scopes share one
// (that is the memory cut), so a tenant who owns one namespace and can write any
// APICredential there tries to reach another tenant's through it: the same scope, then
// near-misses a naive encoding would confuse with it, then an update of its own copy.
// The victim's account, workspaces, grants and header values never change, and each of
// the tenant's credentials is served with exactly its own spec.
func TestSharedScopeCannotBeReachedByAnotherTenant(t *testing.T) {
	ids := newIDs(t, 8)
	hash := credential.Hash("kss_whatever")
	s := NewStore()
	victim := issuedCredential("team-a", "billing", ids[0], hash)
	s.SetCredential(victim)
	v, _ := s.Credential(ids[0])
	wantVictim := func(step string) {
		t.Helper()
		c, ok := s.Credential(ids[0])
		if !ok || c != v || c.Account != "acme" || !slices.Equal(c.Workspaces, []string{"eu-1", "us-2"}) ||
			!slices.Equal(c.Grants, []Grant{{"platform-api", "user"}}) ||
			c.header(hdrWorkspaces)[0] != "eu-1,us-2" || c.header(hdrAccount)[0] != "acme" ||
			!slices.Equal(c.permissionHeader("platform-api"), []string{"user"}) || c.permissionHeader("profile-api") != nil {
			t.Fatalf("%s: the victim's credential is served as %+v", step, c)
		}
	}

	same := issuedCredential("evil", "same", ids[1], hash)
	s.SetCredential(same)
	c, _ := s.Credential(ids[1])
	if c.credentialScope != v.credentialScope {
		t.Error("equal scopes are not shared")
	}
	if c.Key.Namespace != "evil" || c.Name != "evil/same" || c.header(hdrCredential)[0] != "evil/same" || c.header(hdrClientID)[0] != ids[1] {
		t.Errorf("the tenant's copy is served as %s %v (its own name and client ID expected)", c.Name, c.ids)
	}
	wantVictim("an equal scope in another namespace")

	nearMisses := []func(o *iamv1alpha1.APICredential){
		func(o *iamv1alpha1.APICredential) { o.Spec.Scope.Workspaces = []string{"eu-1,us-2"} },
		func(o *iamv1alpha1.APICredential) { o.Spec.Scope.Workspaces = []string{"eu-1us-2"} },
		func(o *iamv1alpha1.APICredential) { o.Spec.Scope.Workspaces = []string{"eu-1", "us-2", ""} },
		func(o *iamv1alpha1.APICredential) {
			o.Spec.APIs = []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}, {Name: "eu-1", Permission: "us-2"}}
			o.Spec.Scope.Workspaces = nil
		},
		func(o *iamv1alpha1.APICredential) { o.Spec.APIs[0] = iamv1alpha1.APIGrant{Name: "platform-apiuser"} },
		func(o *iamv1alpha1.APICredential) { o.Status.Account = "acme\x02eu-1" },
	}
	for i, mutate := range nearMisses {
		o := issuedCredential("evil", "near", ids[2+i], hash)
		mutate(o)
		s.SetCredential(o)
		c, _ := s.Credential(ids[2+i])
		if c.credentialScope == v.credentialScope {
			t.Errorf("near miss %d shares the victim's scope", i)
		}
		if c.Account != o.Status.Account || !slices.Equal(c.Workspaces, o.Spec.Scope.Workspaces) || len(c.Grants) != len(o.Spec.APIs) {
			t.Errorf("near miss %d served as %q %q %v, not its own spec", i, c.Account, c.Workspaces, c.Grants)
		}
		if c.hasWorkspace("eu-1") != slices.Contains(o.Spec.Scope.Workspaces, "eu-1") {
			t.Errorf("near miss %d: in workspace eu-1 = %v", i, c.hasWorkspace("eu-1"))
		}
		wantVictim("a near miss")
		s.DeleteCredential(keyOf(o))
	}

	// The tenant raises its own copy to admin: a new scope for it, none for the victim.
	same.Spec.APIs[0].Permission = "admin"
	same.Spec.Scope.Workspaces = append(same.Spec.Scope.Workspaces, "ap-3")
	s.SetCredential(same)
	if c, _ := s.Credential(ids[1]); c.Grants[0].Permission != "admin" || !c.hasWorkspace("ap-3") {
		t.Errorf("the tenant's update is not served: %v %v", c.Grants, c.Workspaces)
	}
	wantVictim("after the tenant's update")
}

// TestScopeKeyIsUnambiguous decodes scopeKey's encoding back into what it was made from,
// for crafted and random scopes, which is what makes it injective: two scopes share an
// entry only if they are equal.
func TestScopeKeyIsUnambiguous(t *testing.T) {
	type scope struct {
		account         string
		workspaces, sas []string
		apis            []iamv1alpha1.APIGrant
	}
	decode := func(k string) (sc scope, ok bool) {
		b := []byte(k)
		num := func() (int, bool) {
			n, w := binary.Uvarint(b)
			if w <= 0 || n > uint64(len(b)) {
				return 0, false
			}
			b = b[w:]
			return int(n), true
		}
		str := func() (string, bool) {
			n, ok := num()
			if !ok || n > len(b) {
				return "", false
			}
			s := string(b[:n])
			b = b[n:]
			return s, true
		}
		list := func() ([]string, bool) {
			n, ok := num()
			if !ok {
				return nil, false
			}
			var out []string
			for range n {
				s, ok := str()
				if !ok {
					return nil, false
				}
				out = append(out, s)
			}
			return out, true
		}
		var ok1, ok2, ok3 bool
		if sc.account, ok = str(); !ok {
			return sc, false
		}
		sc.workspaces, ok1 = list()
		n, ok2 := num()
		for range n {
			name, okn := str()
			perm, okp := str()
			ok2 = ok2 && okn && okp
			sc.apis = append(sc.apis, iamv1alpha1.APIGrant{Name: name, Permission: perm})
		}
		sc.sas, ok3 = list()
		return sc, ok1 && ok2 && ok3 && len(b) == 0
	}
	check := func(sc scope) {
		t.Helper()
		got, ok := decode(scopeKey(sc.account, sc.workspaces, sc.apis, sc.sas))
		if !ok || got.account != sc.account || !slices.Equal(got.workspaces, sc.workspaces) ||
			!slices.Equal(got.apis, sc.apis) || !slices.Equal(got.sas, sc.sas) {
			t.Fatalf("scopeKey(%+v) decodes to %+v (%v)", sc, got, ok)
		}
	}
	check(scope{account: "acme", workspaces: []string{"eu-1", "us-2"}, apis: []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "user"}}})
	check(scope{account: "acme", workspaces: []string{"eu-1,us-2"}})
	check(scope{account: strings.Repeat("a", 300), workspaces: []string{"", ""}, sas: []string{"worker"}})
	check(scope{apis: []iamv1alpha1.APIGrant{{Name: "eu-1"}, {Permission: "us-2"}}})
	r := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		b := make([]byte, r.IntN(4))
		for i := range b {
			b[i] = "a,:\x00\x01\x02"[r.IntN(6)]
		}
		return string(b)
	}
	words := func() []string {
		var out []string
		for range r.IntN(3) {
			out = append(out, word())
		}
		return out
	}
	for range 2000 {
		sc := scope{account: word(), workspaces: words(), sas: words()}
		for range r.IntN(3) {
			sc.apis = append(sc.apis, iamv1alpha1.APIGrant{Name: word(), Permission: word()})
		}
		check(sc)
	}
}

// TestScopeForgottenWhenUnused: the scope table holds scopes weakly; one no credential
// holds any more is collected and its entry removed, so the table does not grow with
// every scope ever seen.
func TestScopeForgottenWhenUnused(t *testing.T) {
	account := "forgotten-" + t.Name()
	key := scopeKey(account, nil, nil, nil)
	func() {
		s := internScope(account, nil, nil, nil)
		if internScope(account, nil, nil, nil) != s {
			t.Fatal("an equal scope is not shared")
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		scopes.mu.Lock()
		_, held := scopes.m[key]
		scopes.mu.Unlock()
		if !held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("an unused scope's entry is still in the table after 10s of collections")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSecretVersionExpiry: the previous secrets' expiry, held as Unix seconds and
// nanoseconds, reads as the time did: expired at and after it, live before it, whatever
// the year (the epoch itself, year 1, past 2262 where Unix nanoseconds overflow); the
// current secret never expires. A malformed stored hash accepts no secret, yet its credential
// still claims its client ID, so a copy of it is refused as before.
func TestSecretVersionExpiry(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name      string
		expiresAt time.Time
		live      bool
	}{
		{"in an hour", now.Add(time.Hour), true},
		{"now", now, false},
		{"a nanosecond ago", now.Add(-1), false},
		{"the Unix epoch", time.Unix(0, 0), false},
		{"year 1, not zero", time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), false},
		{"year 1500", time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC), false},
		{"year 3000", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), true},
	} {
		v := newSecretVersion(credential.Hash("s"), "v", tc.expiresAt)
		if got := v.live(now); got != tc.live {
			t.Errorf("%s: live = %v, want %v", tc.name, got, tc.live)
		}
		if got := v.live(time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC)); got != tc.expiresAt.After(time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("%s: live in 2500 = %v", tc.name, got)
		}
	}
	if v := newSecretVersion(credential.Hash("s"), "v", time.Time{}); !v.live(time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Error("the current secret expired")
	}

	ids := newIDs(t, 1)
	secret, err := credential.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	good := credential.Hash(secret)
	s := NewStore()
	for _, bad := range []string{strings.ToUpper(good), "bcrypt" + good[len("sha256"):], good[:len(good)-1], good + "0"} {
		o := issuedCredential("team-a", "malformed", ids[0], bad)
		s.SetCredential(o)
		c, ok := s.Credential(ids[0])
		if !ok || len(c.secrets) != 1 || c.secrets[0].verify(secret) || c.secrets[0].verify("") {
			t.Errorf("hash %q: a secret verifies or the credential is not held (%v)", bad, ok)
		}
		copyCat := issuedCredential("team-b", "copy", ids[0], good)
		s.SetCredential(copyCat)
		if _, ok := s.Credential(ids[0]); ok {
			t.Errorf("hash %q: the credential does not claim its client ID: a copy of it is served", bad)
		}
		s.DeleteCredential(keyOf(copyCat))
		s.DeleteCredential(keyOf(o))
	}
	s.SetCredential(issuedCredential("team-a", "good", ids[0], good))
	if c, ok := s.Credential(ids[0]); !ok || !c.secrets[0].verify(secret) || c.secrets[0].verify(secret+"x") {
		t.Error("a well-formed hash does not verify exactly its secret")
	}
}

// TestCredentialObjectMeta: the informer's object reads its name, namespace and uid from
// the credential it carries, or from its own copy without one; setting them (no caller
// in the token server does) changes the object and its copies independently, never the
// credential the store serves.
func TestCredentialObjectMeta(t *testing.T) {
	ids := newIDs(t, 1)
	obj := issuedCredential("team-a", "billing", ids[0], credential.Hash("kss_whatever"))
	obj.ResourceVersion = "7"
	out, err := trimCredential(obj)
	if err != nil {
		t.Fatal(err)
	}
	o := out.(*credentialObject)
	if o.cred == nil || o.ident != nil || o.GetName() != "billing" || o.GetNamespace() != "team-a" ||
		o.GetUID() != obj.UID || o.GetResourceVersion() != "7" || o.GetDeletionTimestamp() != nil {
		t.Fatalf("issued: %+v %+v", o.credentialMeta, o.ident)
	}
	cp := o.DeepCopyObject().(*credentialObject)
	cp.SetName("other")
	cp.SetUID("uid-other")
	if o.GetName() != "billing" || o.cred.Key.Name != "billing" || o.cred.Name != "team-a/billing" || o.cred.UID != obj.UID {
		t.Errorf("a copy's setters changed the original or its credential: %s %s %s", o.GetName(), o.cred.Name, o.cred.UID)
	}
	if cp.GetName() != "other" || cp.GetNamespace() != "team-a" || cp.GetUID() != "uid-other" || cp.cred != o.cred {
		t.Errorf("the copy reads %s/%s %s", cp.GetNamespace(), cp.GetName(), cp.GetUID())
	}
	o.SetNamespace("team-b")
	if o.GetNamespace() != "team-b" || o.cred.Key.Namespace != "team-a" || cp.GetNamespace() != "team-a" {
		t.Errorf("SetNamespace: object %s, credential %s, copy %s", o.GetNamespace(), o.cred.Key.Namespace, cp.GetNamespace())
	}

	obj.Status = iamv1alpha1.APICredentialStatus{}
	out, _ = trimCredential(obj)
	o = out.(*credentialObject)
	if o.cred != nil || o.GetName() != "billing" || o.GetNamespace() != "team-a" || o.GetUID() != obj.UID {
		t.Fatalf("not issued: %+v %+v", o.credentialMeta, o.ident)
	}
	cp = o.DeepCopyObject().(*credentialObject)
	cp.SetName("other")
	if o.GetName() != "billing" {
		t.Error("a copy's SetName changed the original")
	}
}

// TestCredentialLayout: the per-credential struct stays within the 256-byte size class
// and a secret version within 64 bytes (one more field moves a Credential to the 288-byte
// class: 320 KB at 10 000).
func TestCredentialLayout(t *testing.T) {
	if n := unsafe.Sizeof(Credential{}); n > 256 {
		t.Errorf("Credential is %d bytes, want at most 256", n)
	}
	if n := unsafe.Sizeof(secretVersion{}); n > 64 {
		t.Errorf("secretVersion is %d bytes, want at most 64", n)
	}
	if n := unsafe.Sizeof(credentialObject{}); n > 48 {
		t.Errorf("credentialObject is %d bytes, want at most 48", n)
	}
}
