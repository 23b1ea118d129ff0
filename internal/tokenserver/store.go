package tokenserver

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"weak"

	"k8s.io/apimachinery/pkg/types"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// Credential is the token server's immutable view of an APICredential: identity, secret
// hashes, grants and state, nothing else. Entries are replaced, never mutated.
//
// It is laid out for 10 000 of them (issue 11): what many credentials have alike (account,
// workspaces, grants, workload ServiceAccounts and their header values) is one shared
// credentialScope; the strings only this credential has (its name, the current secret's
// version, its UID, its client ID) are one allocation; the current secret version is
// held inline, and the whole struct fits 256 bytes (TestCredentialLayout).
type Credential struct {
	// Key is namespace/name.
	Key types.NamespacedName
	// Name is Key as "namespace/name", as tokens and headers carry it.
	Name      string
	UID       types.UID
	ClientID  string
	ExpiresAt time.Time // zero: never
	// credentialScope gives Account, Workspaces and Grants, shared with every credential
	// that has the same ones (internScope).
	*credentialScope
	// secrets are the current hash first, then previous hashes within their grace period.
	// Without previous ones they are current's one element, not a slice of their own.
	secrets []secretVersion
	current [1]secretVersion
	// ids are the forward-auth header values of the credential itself (client ID, name);
	// the rest are its scope's (see header).
	ids [2]string
	// revoked are the revoked tokens of status.revokedTokens, jti -> exp (revoke.go).
	revoked map[string]int64
	// policy is spec.sourceRanges and spec.tokenPolicy; nil when it sets neither.
	policy *credentialPolicy
	Active bool
	// Terminating is set once the APICredential has a deletionTimestamp (a finalizer,
	// foreground deletion, a GitOps prune in progress): it is refused like a deleted one
	// (DESIGN §2 item 10), yet keeps its claim on the client ID until it is gone.
	Terminating bool
}

// credentialScope is what a credential may do and where, as the token server serves it,
// with its forward-auth header values built once. It is immutable, and credentials whose
// scopes are equal share one: 10 000 credentials made from a few templates hold a few
// scopes, not 10 000 copies of the same grants.
type credentialScope struct {
	// Account is status.account.
	Account string
	// Workspaces are spec.scope.workspaces.
	Workspaces []string
	// Grants are spec.apis, in order.
	Grants []Grant
	// serviceAccounts are spec.workloadIdentity.serviceAccounts: the ServiceAccounts of
	// the credential's namespace whose tokens the JWT-bearer grant accepts (jwtbearer.go).
	serviceAccounts []string
	// headers are the header values from hdrAccount on (the account, the workspaces
	// joined by ",", then the permission of each grant in Grants' order), in one array.
	headers []string
}

// Indexes of the forward-auth header values (Credential.header).
const (
	hdrClientID = iota
	hdrCredential
	hdrAccount
	hdrWorkspaces
	hdrGrants // the first grant's permission
)

// header returns the header value i of the credential as a one-element slice whose
// capacity ends there: appending to it never writes into the next value, and handing it
// out allocates nothing.
func (c *Credential) header(i int) []string {
	if i < hdrAccount {
		return c.ids[i : i+1 : i+1]
	}
	i -= hdrAccount
	return c.headers[i : i+1 : i+1]
}

// permissionHeader returns the X-Keysmith-Permission value for the credential's grant on
// api (nil without one).
func (c *Credential) permissionHeader(api string) []string {
	for i := range c.Grants {
		if c.Grants[i].API == api {
			return c.header(hdrGrants + i)
		}
	}
	return nil
}

// Grant is one API permission of a credential.
type Grant struct {
	API        string
	Permission string
}

// secretVersion is one secret a credential accepts: the SHA-256 digest of its stored
// hash, an opaque version identifier carried in the tokens issued under it, and when it
// stops being accepted.
type secretVersion struct {
	// digest is the stored "sha256:<hex>" hash decoded once, 32 bytes instead of a 71-byte
	// string; wellFormed is false when the stored hash was not one (credential.ParseHash),
	// and then no secret verifies against it, as credential.Verify would refuse them all.
	digest  [sha256.Size]byte
	version string
	// expiresSec and expiresNsec are when it stops being accepted, as Unix seconds and
	// nanoseconds (8 + 4 bytes instead of a time.Time's 24: 64 bytes in all, so that the
	// Credential holding the current one inline fits 256).
	expiresSec  int64
	expiresNsec int32
	expires     bool // false: the current secret, accepted until rotated
	wellFormed  bool
}

// verify reports whether secret is the version's secret, in constant time.
func (v *secretVersion) verify(secret string) bool {
	return v.wellFormed && credential.VerifyDigest(secret, &v.digest)
}

// versionOf derives the identifier of a secret version from its hash. Tokens carry it so
// that a rotation past the grace period revokes them; it is not a prefix of the hash.
func versionOf(hash string) string {
	return base64.RawURLEncoding.EncodeToString(versionSum(hash))
}

// versionLen is the length of versionOf's identifiers.
const versionLen = 12

func versionSum(hash string) []byte {
	sum := sha256.Sum256([]byte("keysmith secret version\x00" + hash))
	return sum[:9]
}

// newSecretVersion is the secret version of a stored hash, its version identifier given.
func newSecretVersion(hash, version string, expiresAt time.Time) secretVersion {
	v := secretVersion{version: version, expires: !expiresAt.IsZero(),
		expiresSec: expiresAt.Unix(), expiresNsec: int32(expiresAt.Nanosecond())}
	v.digest, v.wellFormed = credential.ParseHash(hash)
	return v
}

// usable reports whether the credential is active, unexpired at now and not being deleted.
func (c *Credential) usable(now time.Time) bool {
	return c.Active && !c.Terminating && (c.ExpiresAt.IsZero() || now.Before(c.ExpiresAt))
}

// live reports whether the secret version is still accepted at now.
func (v *secretVersion) live(now time.Time) bool {
	return !v.expires || now.Before(time.Unix(v.expiresSec, int64(v.expiresNsec)))
}

// acceptsToken reports whether a token issued under the secret version v and, for the
// JWT-bearer grant, obtained by the ServiceAccount sa (ks_wi) is still valid.
func (c *Credential) acceptsToken(v, sa string, now time.Time) bool {
	if v == workloadVersion {
		if sa == "" {
			// Issued by a token server older than ks_wi (a rolling upgrade): valid while any
			// ServiceAccount is listed, for at most the longest token lifetime.
			return len(c.serviceAccounts) > 0
		}
		return slices.Contains(c.serviceAccounts, sa) // removing a ServiceAccount revokes its tokens
	}
	if sa != "" {
		return false // only the JWT-bearer grant's tokens name a ServiceAccount
	}
	for i := range c.secrets {
		if c.secrets[i].version == v {
			return c.secrets[i].live(now)
		}
	}
	return false
}

// grant returns the credential's grant on api, if any.
func (c *Credential) grant(api string) (Grant, bool) {
	for _, g := range c.Grants {
		if g.API == api {
			return g, true
		}
	}
	return Grant{}, false
}

// hasWorkspace reports whether ws is in the credential's scope.
func (c *Credential) hasWorkspace(ws string) bool { return slices.Contains(c.Workspaces, ws) }

// credentialFrom converts an APICredential; ok is false while it has no issued secret.
// The credential holds nothing of the object: its name, current secret version, UID and
// client ID are copied into one string of its own (so the informer's small object can share them
// too, and the decoded object is garbage as soon as it is converted), its scope is
// shared with equal ones (internScope).
func credentialFrom(obj *iamv1alpha1.APICredential) (*Credential, bool) {
	st := &obj.Status
	sas := obj.Spec.WorkloadServiceAccounts()
	if st.ClientID == "" || (st.SecretHash == "" && len(sas) == 0) {
		return nil, false
	}
	c := &Credential{
		Active:      obj.Spec.IsActive(),
		Terminating: obj.DeletionTimestamp != nil,
		// serviceAccounts: spec.workloadIdentity; a credential without a secret hash has
		// no secret version at all, so no client secret ("" included) authenticates it.
		credentialScope: internScope(st.Account, obj.Spec.Scope.Workspaces, obj.Spec.APIs, sas),
	}
	// One string: "namespace/name", the current secret's version, the UID, the client ID.
	b := make([]byte, 0, len(obj.Namespace)+1+len(obj.Name)+versionLen+len(obj.UID)+len(st.ClientID))
	b = append(append(append(b, obj.Namespace...), '/'), obj.Name...)
	nameEnd := len(b)
	if st.SecretHash != "" {
		b = base64.RawURLEncoding.AppendEncode(b, versionSum(st.SecretHash))
	}
	versionEnd := len(b)
	b = append(b, obj.UID...)
	uidEnd := len(b)
	b = append(b, st.ClientID...)
	own := string(b)
	c.Name = own[:nameEnd]
	c.Key = types.NamespacedName{Namespace: intern(obj.Namespace), Name: own[len(obj.Namespace)+1 : nameEnd]}
	c.UID = types.UID(own[versionEnd:uidEnd])
	c.ClientID = own[uidEnd:]
	c.ids = [2]string{c.ClientID, c.Name}
	if obj.Spec.ExpiresAt != nil {
		c.ExpiresAt = obj.Spec.ExpiresAt.Time
	}
	c.policy = policyFrom(&obj.Spec)
	c.revoked = revokedFrom(st)
	if st.SecretHash != "" {
		c.current[0] = newSecretVersion(st.SecretHash, own[nameEnd:versionEnd], time.Time{})
		c.secrets = c.current[:]
	}
	if len(st.PreviousSecrets) > 0 {
		c.secrets = append(make([]secretVersion, 0, len(c.secrets)+len(st.PreviousSecrets)), c.secrets...)
		for _, p := range st.PreviousSecrets {
			c.secrets = append(c.secrets, newSecretVersion(p.Hash, versionOf(p.Hash), p.ExpiresAt.Time))
		}
	}
	return c, true
}

// scopes are the credentialScopes in use, by their exact content (scopeKey), held weakly:
// a scope no credential holds any more is collected, and its entry goes with it.
var scopes = struct {
	mu sync.Mutex
	m  map[string]weak.Pointer[credentialScope]
}{m: map[string]weak.Pointer[credentialScope]{}}

// internScope returns the one credentialScope of these account, workspaces, grants and
// ServiceAccounts: an existing one with exactly the same content, else a new one.
func internScope(account string, workspaces []string, apis []iamv1alpha1.APIGrant, sas []string) *credentialScope {
	key := scopeKey(account, workspaces, apis, sas)
	scopes.mu.Lock()
	defer scopes.mu.Unlock()
	if s := scopes.m[key].Value(); s != nil {
		return s
	}
	s := newScope(account, workspaces, apis, sas)
	scopes.m[key] = weak.Make(s)
	runtime.AddCleanup(s, forgetScope, key)
	return s
}

// forgetScope drops the entry of a collected scope, unless key has a live one again.
func forgetScope(key string) {
	scopes.mu.Lock()
	defer scopes.mu.Unlock()
	if w, ok := scopes.m[key]; ok && w.Value() == nil {
		delete(scopes.m, key)
	}
}

// scopeKey encodes a scope's content without ambiguity: each list is its length, then
// each string as its length and its bytes, so that no two different scopes (workspaces
// ["a,b"] and ["a", "b"], a grant named "x:y") have the same key.
func scopeKey(account string, workspaces []string, apis []iamv1alpha1.APIGrant, sas []string) string {
	n := 8 + len(account)
	for _, w := range workspaces {
		n += 4 + len(w)
	}
	for _, g := range apis {
		n += 8 + len(g.Name) + len(g.Permission)
	}
	for _, sa := range sas {
		n += 4 + len(sa)
	}
	b := make([]byte, 0, n)
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	str(account)
	b = binary.AppendUvarint(b, uint64(len(workspaces)))
	for _, w := range workspaces {
		str(w)
	}
	b = binary.AppendUvarint(b, uint64(len(apis)))
	for _, g := range apis {
		str(g.Name)
		str(g.Permission)
	}
	b = binary.AppendUvarint(b, uint64(len(sas)))
	for _, sa := range sas {
		str(sa)
	}
	return string(b)
}

// newScope builds a scope from copies of its lists (its strings are shared: the
// transform interns them), so it holds nothing of the object it came from.
func newScope(account string, workspaces []string, apis []iamv1alpha1.APIGrant, sas []string) *credentialScope {
	s := &credentialScope{
		Account:         intern(account),
		Workspaces:      internAll(workspaces),
		serviceAccounts: internAll(sas),
	}
	if len(apis) > 0 {
		s.Grants = make([]Grant, len(apis))
		for i, g := range apis {
			s.Grants[i] = Grant{API: intern(g.Name), Permission: intern(g.Permission)}
		}
	}
	s.headers = make([]string, hdrGrants-hdrAccount+len(s.Grants))
	s.headers[0] = s.Account // hdrAccount
	s.headers[hdrWorkspaces-hdrAccount] = strings.Join(s.Workspaces, ",")
	for i, g := range s.Grants {
		s.headers[hdrGrants-hdrAccount+i] = g.Permission
	}
	return s
}

// internAll returns a copy of ss with each string interned; nil for none.
func internAll(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = intern(s)
	}
	return out
}

// API is the token server's view of an APIDefinition.
type API struct {
	Name string
	// Audience is the aud value tokens carry for this API (spec.audience, else Name).
	Audience    string
	Permissions map[string]methodSet
}

// methodSet is the set of HTTP methods a permission allows.
type methodSet struct {
	any     bool
	methods []string
}

func (m methodSet) allows(method string) bool { return m.any || slices.Contains(m.methods, method) }

func apiFrom(obj *iamv1alpha1.APIDefinition) *API {
	a := &API{Name: obj.Name, Audience: obj.Spec.AudienceOf(obj.Name), Permissions: make(map[string]methodSet, len(obj.Spec.Permissions))}
	for _, p := range obj.Spec.Permissions {
		a.Permissions[p.Name] = methodSet{any: slices.Contains(p.Methods, iamv1alpha1.MethodAny), methods: p.Methods}
	}
	return a
}

// Store holds the credentials and APIs the token server knows, indexed by client ID and
// by name. Entries are immutable; credential reads share mu (a read-locked map costs a
// fraction of a sync.Map's memory per entry, and 10 000 credentials are the size it is
// built for), writes come from informer event handlers. API reads take no lock.
//
// Two credentials that claim one client ID are both refused (fail closed) until one goes.
type Store struct {
	apis sync.Map // API name -> *API

	mu sync.RWMutex
	// byName is the credentials by Credential.Name, "namespace/name" (neither part can
	// hold a "/"): a string key is 16 bytes where a NamespacedName is 32.
	byName map[string]*Credential
	// claimed is, by client ID, the one credential claiming it. A client ID claimed by
	// more than one is not in claimed but in conflicts, with all its claimers, so that a
	// lookup reads one map and finds nothing for it. One pointer per client ID instead of
	// a slice of claimers each: conflicts are rare (a restore, a copied status).
	claimed   map[string]*Credential
	conflicts map[string][]*Credential
	// conflicts is called when a client ID is claimed twice (for logging).
	onConflict func(clientID string, keys []types.NamespacedName)
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{
		byName:    map[string]*Credential{},
		claimed:   map[string]*Credential{},
		conflicts: map[string][]*Credential{},
	}
}

// Credential returns the credential with the given client ID.
func (s *Store) Credential(clientID string) (*Credential, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.claimed[clientID]
	return c, ok
}

// API returns the API with the given name.
func (s *Store) API(name string) (*API, bool) {
	v, ok := s.apis.Load(name)
	if !ok {
		return nil, false
	}
	return v.(*API), true
}

// Len returns the number of credentials held.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byName)
}

// SetCredential records an APICredential (add or update).
func (s *Store) SetCredential(obj *iamv1alpha1.APICredential) {
	c, _ := credentialFrom(obj)
	s.set(types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}, c)
}

// set records the credential converted from the APICredential key (add or update); nil,
// while it has no issued secret, forgets it.
func (s *Store) set(key types.NamespacedName, c *Credential) {
	if c == nil {
		s.DeleteCredential(key)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.byName[c.Name]
	if old != nil {
		// Deleted first so that the map keeps c's strings as its key, not the old
		// credential's (a map keeps the key it was first given).
		delete(s.byName, c.Name)
		if old.ClientID != c.ClientID {
			s.unclaim(old.ClientID, key)
			old = nil
		}
	}
	s.byName[c.Name] = c
	if old != nil {
		s.reclaim(c)
	} else {
		s.claim(c)
	}
	s.checkConflict(c.ClientID)
}

// claim records c as a claimer of its client ID.
func (s *Store) claim(c *Credential) {
	id := c.ClientID
	if claim, ok := s.conflicts[id]; ok {
		s.conflicts[id] = append(claim, c)
	} else if o, ok := s.claimed[id]; ok {
		delete(s.claimed, id)
		s.conflicts[id] = []*Credential{o, c}
	} else {
		s.claimed[id] = c
	}
}

// reclaim replaces the claim of c's key on its client ID, which it already holds, by c.
func (s *Store) reclaim(c *Credential) {
	id := c.ClientID
	if claim, ok := s.conflicts[id]; ok {
		if i := slices.IndexFunc(claim, func(o *Credential) bool { return o.Key == c.Key }); i >= 0 {
			claim[i] = c
		} else {
			s.conflicts[id] = append(claim, c)
		}
		return
	}
	delete(s.claimed, id) // the key is c's string from now on
	s.claimed[id] = c
}

// DeleteCredential forgets an APICredential.
func (s *Store) DeleteCredential(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := key.Namespace + "/" + key.Name
	old := s.byName[name]
	if old == nil {
		return
	}
	delete(s.byName, name)
	s.unclaim(old.ClientID, key)
}

// unclaim withdraws key's claim on clientID; a client ID left with one claimer resolves
// to it again.
func (s *Store) unclaim(clientID string, key types.NamespacedName) {
	claim, ok := s.conflicts[clientID]
	if !ok {
		if o := s.claimed[clientID]; o != nil && o.Key == key {
			delete(s.claimed, clientID)
		}
		return
	}
	claim = slices.DeleteFunc(claim, func(o *Credential) bool { return o.Key == key })
	switch len(claim) {
	case 0: // not reached: a conflict has two claimers or more
		delete(s.conflicts, clientID)
	case 1:
		delete(s.conflicts, clientID)
		s.claimed[clientID] = claim[0]
	default:
		s.conflicts[clientID] = claim
		s.checkConflict(clientID)
	}
}

// checkConflict reports a client ID claimed more than once, which resolves to nothing.
func (s *Store) checkConflict(clientID string) {
	if claim := s.conflicts[clientID]; len(claim) > 1 && s.onConflict != nil {
		keys := make([]types.NamespacedName, 0, len(claim))
		for _, c := range claim {
			keys = append(keys, c.Key)
		}
		s.onConflict(clientID, keys)
	}
}

// SetAPI records an APIDefinition (add or update).
func (s *Store) SetAPI(obj *iamv1alpha1.APIDefinition) { s.apis.Store(obj.Name, apiFrom(obj)) }

// DeleteAPI forgets an APIDefinition.
func (s *Store) DeleteAPI(name string) { s.apis.Delete(name) }
