package tokenserver

import (
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// Credential is the token server's immutable view of an APICredential: identity, secret
// hashes, grants and state, nothing else. Entries are replaced, never mutated.
type Credential struct {
	// Key is namespace/name.
	Key types.NamespacedName
	// Name is Key as "namespace/name", as tokens and headers carry it.
	Name       string
	UID        types.UID
	ClientID   string
	ExpiresAt  time.Time // zero: never
	Account    string
	Workspaces []string
	Grants     []Grant
	// secrets are the current hash first, then previous hashes within their grace period.
	secrets []secretVersion
	// headers are the forward-auth response header values, built once in one array
	// (indexed by the hdr constants, then the permission of each grant in Grants' order)
	// and handed out by header as one-element slices, ready to be put into a header map
	// without allocating.
	headers []string
	// revoked are the revoked tokens of status.revokedTokens, jti -> exp (revoke.go).
	revoked map[string]int64
	// policy is spec.sourceRanges and spec.tokenPolicy; nil when it sets neither.
	policy *credentialPolicy
	// serviceAccounts are spec.workloadIdentity.serviceAccounts: the ServiceAccounts of
	// the credential's namespace whose tokens the JWT-bearer grant accepts (jwtbearer.go).
	serviceAccounts []string
	Active          bool
	// Terminating is set once the APICredential has a deletionTimestamp (a finalizer,
	// foreground deletion, a GitOps prune in progress): it is refused like a deleted one
	// (DESIGN §2 item 10), yet keeps its claim on the client ID until it is gone.
	Terminating bool
}

// Indexes of Credential.headers.
const (
	hdrClientID = iota
	hdrCredential
	hdrAccount
	hdrWorkspaces
	hdrGrants // the first grant's permission
)

// header returns the header value i of the credential as a one-element slice whose
// capacity ends there: appending to it never writes into the next value.
func (c *Credential) header(i int) []string { return c.headers[i : i+1 : i+1] }

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

// secretVersion is one secret a credential accepts: its stored hash, an opaque version
// identifier carried in the tokens issued under it, and when it stops being accepted.
type secretVersion struct {
	hash      string
	version   string
	expiresAt time.Time // zero: current secret
}

// versionOf derives the identifier of a secret version from its hash. Tokens carry it so
// that a rotation past the grace period revokes them; it is not a prefix of the hash.
func versionOf(hash string) string {
	sum := sha256.Sum256([]byte("keysmith secret version\x00" + hash))
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}

// usable reports whether the credential is active, unexpired at now and not being deleted.
func (c *Credential) usable(now time.Time) bool {
	return c.Active && !c.Terminating && (c.ExpiresAt.IsZero() || now.Before(c.ExpiresAt))
}

// live reports whether the secret version is still accepted at now.
func (v *secretVersion) live(now time.Time) bool {
	return v.expiresAt.IsZero() || now.Before(v.expiresAt)
}

// acceptsVersion reports whether tokens issued under the secret version v are still valid.
func (c *Credential) acceptsVersion(v string, now time.Time) bool {
	if v == workloadVersion {
		return len(c.serviceAccounts) > 0 // removing workloadIdentity revokes its tokens
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
// The credential shares the object's strings (it copies none) and holds nothing else of
// it: the informer keeps only the credential (see credentialObject).
func credentialFrom(obj *iamv1alpha1.APICredential) (*Credential, bool) {
	st := &obj.Status
	sas := obj.Spec.WorkloadServiceAccounts()
	if st.ClientID == "" || (st.SecretHash == "" && len(sas) == 0) {
		return nil, false
	}
	c := &Credential{
		Key:         types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name},
		UID:         obj.UID,
		ClientID:    st.ClientID,
		Active:      obj.Spec.IsActive(),
		Terminating: obj.DeletionTimestamp != nil,
		Account:     st.Account,
		Workspaces:  obj.Spec.Scope.Workspaces,
		secrets:     make([]secretVersion, 0, 1+len(st.PreviousSecrets)),
		// serviceAccounts: spec.workloadIdentity; a credential without a secret hash has
		// no secret version at all, so no client secret ("" included) authenticates it.
		serviceAccounts: sas,
	}
	if obj.Spec.ExpiresAt != nil {
		c.ExpiresAt = obj.Spec.ExpiresAt.Time
	}
	c.policy = policyFrom(&obj.Spec)
	c.revoked = revokedFrom(st)
	if len(obj.Spec.APIs) > 0 {
		c.Grants = make([]Grant, len(obj.Spec.APIs))
		for i, g := range obj.Spec.APIs {
			c.Grants[i] = Grant{API: g.Name, Permission: g.Permission}
		}
	}
	c.headers = make([]string, hdrGrants+len(c.Grants))
	c.headers[hdrClientID], c.headers[hdrAccount] = c.ClientID, c.Account
	c.headers[hdrCredential] = obj.Namespace + "/" + obj.Name
	c.headers[hdrWorkspaces] = strings.Join(c.Workspaces, ",")
	for i, g := range c.Grants {
		c.headers[hdrGrants+i] = g.Permission
	}
	c.Name = c.headers[hdrCredential]
	if st.SecretHash != "" {
		c.secrets = append(c.secrets, secretVersion{hash: st.SecretHash, version: versionOf(st.SecretHash)})
	}
	for _, p := range st.PreviousSecrets {
		c.secrets = append(c.secrets, secretVersion{hash: p.Hash, version: versionOf(p.Hash), expiresAt: p.ExpiresAt.Time})
	}
	return c, true
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

	mu    sync.RWMutex
	byKey map[types.NamespacedName]*Credential
	// claimers are, by client ID, the credentials claiming it: almost always one. A
	// client ID resolves only while exactly one does.
	claimers map[string][]*Credential
	// conflicts is called when a client ID is claimed twice (for logging).
	onConflict func(clientID string, keys []types.NamespacedName)
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{byKey: map[types.NamespacedName]*Credential{}, claimers: map[string][]*Credential{}}
}

// Credential returns the credential with the given client ID.
func (s *Store) Credential(clientID string) (*Credential, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if claim := s.claimers[clientID]; len(claim) == 1 {
		return claim[0], true
	}
	return nil, false
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
	return len(s.byKey)
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
	if old := s.byKey[key]; old != nil && old.ClientID != c.ClientID {
		s.unclaim(old.ClientID, key)
	}
	s.byKey[key] = c
	claim := s.claimers[c.ClientID]
	if i := slices.IndexFunc(claim, func(o *Credential) bool { return o.Key == key }); i >= 0 {
		claim[i] = c
	} else {
		s.claimers[c.ClientID] = append(claim, c)
	}
	s.checkConflict(c.ClientID)
}

// DeleteCredential forgets an APICredential.
func (s *Store) DeleteCredential(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.byKey[key]
	if old == nil {
		return
	}
	delete(s.byKey, key)
	s.unclaim(old.ClientID, key)
}

func (s *Store) unclaim(clientID string, key types.NamespacedName) {
	claim := slices.DeleteFunc(s.claimers[clientID], func(o *Credential) bool { return o.Key == key })
	if len(claim) == 0 {
		delete(s.claimers, clientID)
	} else {
		s.claimers[clientID] = claim
	}
	s.checkConflict(clientID)
}

// checkConflict reports a client ID claimed more than once, which resolves to nothing.
func (s *Store) checkConflict(clientID string) {
	if claim := s.claimers[clientID]; len(claim) > 1 && s.onConflict != nil {
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
