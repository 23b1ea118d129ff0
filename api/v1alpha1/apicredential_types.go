package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons of an APICredential (DESIGN §1). Ready and Active are always
// present; Reconciling and Stalled appear only while true (kstatus conventions, so Argo CD
// and Flux show health). Every condition carries the observedGeneration it was computed for.
const (
	// ConditionReady says whether the declared state is in effect: True for Issued, and
	// for a credential that is deliberately Inactive or Expired; False, with Stalled=True
	// and the same reason, when a person must act (InvalidSpec, SecretConflict,
	// SecretModified, SecretMissing); Unknown, with Reconciling=True, while a reconcile
	// could not finish (Retrying, Progressing).
	ConditionReady = "Ready"
	// ConditionActive says whether token servers accept the credential now: True (reason
	// Issued, also while SecretMissing: clients that hold the secret keep working), or
	// False with reason Inactive, Expired, Progressing (not issued yet) or Terminating.
	ConditionActive = "Active"
	// ConditionReconciling is present, True, only while a reconcile could not finish (a
	// transient error, a cache behind the API server); its message is the error's.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is present, True, only when a person must act; its reason is Ready's.
	ConditionStalled = "Stalled"

	// ReasonIssued: the secret is issued, its Secret is in place and the credential is usable.
	ReasonIssued = "Issued"
	// ReasonProgressing: on Active, nothing was issued yet; on Ready and Reconciling, the
	// reconcile found the manager's cache behind the API server and comes back at once.
	ReasonProgressing = "Progressing"
	// ReasonRetrying: the reconcile failed with an error a retry may fix (the message says
	// which); it is retried with backoff.
	ReasonRetrying = "Retrying"
	// ReasonInactive: spec.active is false; token servers refuse the credential.
	ReasonInactive = "Inactive"
	// ReasonExpired: spec.expiresAt has passed; token servers refuse the credential.
	ReasonExpired = "Expired"
	// ReasonTerminating, on Active: the credential has a deletionTimestamp (a finalizer,
	// a foreground deletion or a GitOps prune holds it); token servers refuse it as if it
	// were gone.
	ReasonTerminating = "Terminating"
	// ReasonInvalidSpec: the spec names an unknown API or permission or breaks a scope rule.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonSecretMissing: the credential's Secret was deleted; the hash stays valid for
	// clients that hold the secret, and bumping spec.rotation.keyVersion issues new keys.
	ReasonSecretMissing = "SecretMissing"
	// ReasonSecretModified: the credential data in the Secret no longer matches the issued
	// hash; the operator never rewrites it, bumping spec.rotation.keyVersion issues new keys.
	ReasonSecretModified = "SecretModified"
	// ReasonSecretConflict: a Secret with the target name exists and belongs to something else.
	ReasonSecretConflict = "SecretConflict"
)

// Well-known labels and annotations.
const (
	// AccountLabel on a Namespace selects the default account of the credentials in it.
	AccountLabel = "iam.keysmith.dev/account"
	// CredentialLabel on a Secret names the APICredential that owns it.
	CredentialLabel = "iam.keysmith.dev/credential"
	// KeyVersionAnnotation on a Secret records the spec.rotation.keyVersion its data was issued for.
	KeyVersionAnnotation = "iam.keysmith.dev/key-version"
	// IssuedAtAnnotation on a Secret records when its data was issued (RFC 3339).
	IssuedAtAnnotation = "iam.keysmith.dev/issued-at"
	// BindingAnnotation on a Secret is the operator's HMAC-SHA256 binding of its data to the
	// credential (DESIGN §2 item 9): keyed by a manager-held key, over the namespace, the
	// credential name, the client ID, the secret hash and the key version. Only a Secret
	// whose binding verifies is adopted, so a Secret writer can neither choose a secret nor
	// take another credential's client ID.
	BindingAnnotation = "iam.keysmith.dev/binding"
	// RebindAnnotation, set to "true" on an APICredential, asks the operator to bind the
	// Secret it holds once, deliberately, after a restore into an install that lost the
	// binding key. Admission accepts it only from someone who holds the credential's grants.
	RebindAnnotation = "iam.keysmith.dev/rebind"
)

// ClientIDField is the field selector of status.clientID, selectable on the API server
// (`kubectl get apicred -A --field-selector status.clientID=ksc_...`) and indexed by the
// manager's cache, so that one client ID is found held by at most one credential.
const ClientIDField = "status.clientID"

// Default Secret key names, chosen so that `envFrom` exposes them as environment variables.
const (
	DefaultClientIDKey     = "CLIENT_ID"
	DefaultClientSecretKey = "CLIENT_SECRET"
	DefaultTokenURLKey     = "TOKEN_URL"
)

// APIGrant grants one permission of one API.
type APIGrant struct {
	// name is the name of the APIDefinition to grant, e.g. "profile-api".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// permission is the name of one of the API's permissions (its spec.permissions[].name),
	// e.g. "read-only" or "admin".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Permission string `json:"permission"`
}

// CredentialScope selects the account and workspaces the credential applies to.
type CredentialScope struct {
	// account the credential acts in. When empty, the account is selected for you: the
	// namespace's iam.keysmith.dev/account label, else the namespace name. The selected
	// account is shown in status.account and never written back into spec.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Account string `json:"account,omitempty"`

	// workspaces the credential may act in, as DNS labels. Workspace-level APIs need at
	// least one.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Workspaces []string `json:"workspaces,omitempty"`
}

// SecretKeys names the keys of the credential Secret.
type SecretKeys struct {
	// clientID is the key holding the client ID. Default "CLIENT_ID".
	// +optional
	// +kubebuilder:default=CLIENT_ID
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	ClientID string `json:"clientID,omitempty"`

	// clientSecret is the key holding the client secret. Default "CLIENT_SECRET".
	// +optional
	// +kubebuilder:default=CLIENT_SECRET
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	ClientSecret string `json:"clientSecret,omitempty"`

	// tokenURL is the key holding the token endpoint URL, written when one is known.
	// Default "TOKEN_URL".
	// +optional
	// +kubebuilder:default=TOKEN_URL
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	TokenURL string `json:"tokenURL,omitempty"`
}

// SecretTemplate shapes the Secret the credential is written to.
// +kubebuilder:validation:XValidation:rule="!has(self.keys) || ((!has(self.keys.clientID) || !has(self.keys.clientSecret) || self.keys.clientID != self.keys.clientSecret) && (!has(self.keys.clientID) || !has(self.keys.tokenURL) || self.keys.clientID != self.keys.tokenURL) && (!has(self.keys.clientSecret) || !has(self.keys.tokenURL) || self.keys.clientSecret != self.keys.tokenURL))",message="spec.secretTemplate.keys must name three different keys"
type SecretTemplate struct {
	// name of the Secret. Default: the credential's name. Immutable: the Secret is the
	// contract with the workloads that mount it.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name,omitempty"`

	// labels added to the Secret when it is written (at issue and at rotation).
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// annotations added to the Secret when it is written (at issue and at rotation).
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// keys names the Secret's keys. They apply when the Secret is written (at issue and at rotation).
	// +optional
	Keys SecretKeys `json:"keys,omitzero"`
}

// Rotation controls when new keys are issued.
type Rotation struct {
	// keyVersion is the version of the keys to issue. Increase it to issue new keys
	// ("rotate"): the new secret is written into the same Secret and the previous one keeps
	// working for gracePeriod. Decreasing it is refused.
	// +optional
	// +kubebuilder:validation:Minimum=0
	KeyVersion int64 `json:"keyVersion,omitempty"`

	// gracePeriod is how long the previous secret keeps working after a rotation, as a
	// duration ("1h", "30m"); "0s" revokes it at once. Default 1h, at most 720h.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('720h')",message="spec.rotation.gracePeriod must be between 0s and 720h"
	GracePeriod *metav1.Duration `json:"gracePeriod,omitempty"`

	// period, when set, rotates the keys automatically once they are this old
	// (e.g. "2160h" for 90 days). At least 5m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5m')",message="spec.rotation.period must be at least 5m"
	Period *metav1.Duration `json:"period,omitempty"`
}

// TokenPolicy shapes the access tokens the token server issues for the credential.
type TokenPolicy struct {
	// lifetime is how long the access tokens issued for the credential live, as a
	// duration ("5m", "1h"), between 1s and 24h. Token servers issue
	// min(lifetime, their --max-token-lifetime); unset, their --token-lifetime (10m by
	// default). A change applies to tokens issued afterwards; tokens already out keep the
	// exp they were issued with. Lengthening it, or removing it, needs the same grants as
	// creating the credential.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="spec.tokenPolicy.lifetime must be between 1s and 24h"
	Lifetime *metav1.Duration `json:"lifetime,omitempty"`
}

// WorkloadIdentity names the ServiceAccounts whose pods may exchange their projected
// ServiceAccount token for an access token of the credential (RFC 7523 §2.1, the
// JWT-bearer grant), with no client secret.
type WorkloadIdentity struct {
	// serviceAccounts are names of ServiceAccounts in the credential's namespace, at most
	// 32. A pod running as one of them exchanges a projected ServiceAccount token whose
	// audience is the token server's issuer: grant_type
	// urn:ietf:params:oauth:grant-type:jwt-bearer, assertion=<the token>,
	// client_id=<status.clientID>. Adding one needs the same grants as creating the
	// credential; removing one refuses its pods' next exchange and the tokens it already
	// obtained (they name it in ks_wi), leaving the other ServiceAccounts' tokens alone.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccounts []string `json:"serviceAccounts"`
}

// APICredentialSpec is what a platform team declares: which APIs the credential may call,
// with which permission, in which account and workspaces, and whether it is active.
// +kubebuilder:validation:XValidation:rule="(has(self.secretTemplate) && has(self.secretTemplate.name)) == (has(oldSelf.secretTemplate) && has(oldSelf.secretTemplate.name)) && (!has(self.secretTemplate) || !has(self.secretTemplate.name) || self.secretTemplate.name == oldSelf.secretTemplate.name)",message="spec.secretTemplate.name is immutable; create a new APICredential to use another Secret"
// +kubebuilder:validation:XValidation:rule="(has(self.rotation) && has(self.rotation.keyVersion) ? self.rotation.keyVersion : 0) >= (has(oldSelf.rotation) && has(oldSelf.rotation.keyVersion) ? oldSelf.rotation.keyVersion : 0)",message="spec.rotation.keyVersion cannot decrease"
// +kubebuilder:validation:XValidation:rule="(!has(self.issueSecret) || self.issueSecret) == (!has(oldSelf.issueSecret) || oldSelf.issueSecret)",message="spec.issueSecret is immutable; create a new APICredential to change it"
// +kubebuilder:validation:XValidation:rule="!has(self.issueSecret) || self.issueSecret || has(self.workloadIdentity)",message="spec.issueSecret: false needs spec.workloadIdentity: without a secret the credential is used only through its ServiceAccounts"
type APICredentialSpec struct {
	// displayName is the human name of the credential. Renaming never changes the client ID.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	DisplayName string `json:"displayName,omitempty"`

	// apis lists the APIs the credential may call and the permission on each, one entry
	// per API.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	APIs []APIGrant `json:"apis"`

	// scope selects the account and workspaces the credential applies to.
	// +optional
	Scope CredentialScope `json:"scope,omitzero"`

	// active, default true. Setting it to false deactivates the credential at once: token
	// servers refuse it, including access tokens issued earlier. Reversible: setting it
	// back to true reactivates the same keys.
	// +optional
	// +kubebuilder:default=true
	Active *bool `json:"active,omitempty"`

	// secretTemplate shapes the Secret the client ID and secret are written to.
	// +optional
	SecretTemplate SecretTemplate `json:"secretTemplate,omitzero"`

	// rotation controls when new keys are issued.
	// +optional
	Rotation Rotation `json:"rotation,omitzero"`

	// expiresAt, when set, is the time (RFC 3339) after which the credential behaves as
	// inactive.
	// +optional
	// +kubebuilder:validation:Format=date-time
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// deletionProtection, when true, makes deleting the credential fail until it is set
	// back to false.
	// +optional
	DeletionProtection bool `json:"deletionProtection,omitempty"`

	// sourceRanges, when set, are the only client addresses the credential may be used
	// from, as CIDRs in canonical form (no bits set after the prefix: "10.1.0.0/16",
	// "2001:db8::/32", "192.0.2.7/32" for one address), IPv4 and IPv6, at most 32. The
	// token exchange from any other address fails like a wrong secret, and every use of
	// the tokens it issued (/authz) from any other address is refused; the ranges are
	// looked up on every request, so narrowing them revokes tokens already out. The
	// client address is the TCP peer's, or the one the token server's --trusted-proxies
	// vouch for through X-Forwarded-For. Such a credential never authenticates through
	// Kubernetes TokenReview and its tokens are never active at introspection: neither
	// carries the client's address (fail closed). Empty or unset: any
	// address. Widening or removing them needs the same grants as creating the credential.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) && cidr(self) == cidr(self).masked()",message="spec.sourceRanges items must be CIDRs in canonical form, e.g. 10.1.0.0/16 or 2001:db8::/32 (no bits set after the prefix; one address is /32 or /128)"
	SourceRanges []string `json:"sourceRanges,omitempty"`

	// tokenPolicy shapes the access tokens issued for the credential.
	// +optional
	TokenPolicy TokenPolicy `json:"tokenPolicy,omitzero"`

	// workloadIdentity, when set, lets pods of the named ServiceAccounts exchange their
	// projected ServiceAccount token for an access token of the credential, with no
	// client secret (RFC 7523 §2.1).
	// +optional
	WorkloadIdentity *WorkloadIdentity `json:"workloadIdentity,omitempty"`

	// issueSecret, default true, issues a client secret and writes it to the Secret.
	// false (immutable, only with workloadIdentity) issues a client ID and no secret and
	// writes no Secret: the credential is used only through workloadIdentity.
	// +optional
	// +kubebuilder:default=true
	IssueSecret *bool `json:"issueSecret,omitempty"`
}

// IssuesSecret reports whether spec.issueSecret is true (the default when unset).
func (s *APICredentialSpec) IssuesSecret() bool { return s.IssueSecret == nil || *s.IssueSecret }

// WorkloadServiceAccounts returns spec.workloadIdentity.serviceAccounts (nil when unset).
func (s *APICredentialSpec) WorkloadServiceAccounts() []string {
	if s.WorkloadIdentity == nil {
		return nil
	}
	return s.WorkloadIdentity.ServiceAccounts
}

// IsActive reports whether spec.active is true (the default when unset).
func (s *APICredentialSpec) IsActive() bool { return s.Active == nil || *s.Active }

// SecretName returns the name of the credential's Secret for a credential called name.
func (s *APICredentialSpec) SecretName(name string) string {
	if s.SecretTemplate.Name != "" {
		return s.SecretTemplate.Name
	}
	return name
}

// SecretKeyNames returns the Secret's key names, with defaults applied.
func (s *APICredentialSpec) SecretKeyNames() SecretKeys {
	k := s.SecretTemplate.Keys
	if k.ClientID == "" {
		k.ClientID = DefaultClientIDKey
	}
	if k.ClientSecret == "" {
		k.ClientSecret = DefaultClientSecretKey
	}
	if k.TokenURL == "" {
		k.TokenURL = DefaultTokenURLKey
	}
	return k
}

// PreviousSecret is a secret replaced by a rotation that keeps working until expiresAt.
type PreviousSecret struct {
	// hash of the previous secret, versioned ("sha256:<hex>").
	// +required
	Hash string `json:"hash"`

	// expiresAt is when the grace period ends and token servers stop accepting the secret.
	// +required
	ExpiresAt metav1.Time `json:"expiresAt"`
}

// MaxRevokedTokens bounds status.revokedTokens: the live revocations one credential holds.
const MaxRevokedTokens = 256

// RevokedToken is one revoked access token: its jti and when it expires anyway.
type RevokedToken struct {
	// jti is the token's "jti" claim.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	JTI string `json:"jti"`

	// exp is the token's "exp" claim: after it the token is refused anyway and the entry
	// is pruned.
	// +required
	Exp metav1.Time `json:"exp"`
}

// SecretReference names the Secret in the credential's namespace that holds its keys.
type SecretReference struct {
	// name of the Secret.
	// +required
	Name string `json:"name"`
}

// APICredentialStatus is written by the operator, except lastUsedTime and lastUsedAddress,
// which token servers write. It never holds the plaintext secret.
type APICredentialStatus struct {
	// clientID is the credential's client ID, minted once and never changed.
	// +optional
	ClientID string `json:"clientID,omitempty"`

	// secretHash is the versioned hash of the current secret ("sha256:<hex>").
	// +optional
	SecretHash string `json:"secretHash,omitempty"`

	// previousSecrets are secrets replaced by rotations that still work until their
	// grace period ends, newest first.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	PreviousSecrets []PreviousSecret `json:"previousSecrets,omitempty"`

	// secretRef names the Secret holding the client ID and secret.
	// +optional
	SecretRef *SecretReference `json:"secretRef,omitempty"`

	// issuedAt is when the current secret was issued.
	// +optional
	IssuedAt *metav1.Time `json:"issuedAt,omitempty"`

	// keyVersion is the spec.rotation.keyVersion the current secret was issued for.
	// +optional
	KeyVersion int64 `json:"keyVersion,omitempty"`

	// account is the account the credential acts in: spec.scope.account, else the one
	// selected for it from its namespace.
	// +optional
	Account string `json:"account,omitempty"`

	// lastUsedTime is when a token server last accepted the credential (written by token
	// servers, batched).
	// +optional
	LastUsedTime *metav1.Time `json:"lastUsedTime,omitempty"`

	// lastUsedAddress is the client address a token server last saw the credential from.
	// +optional
	LastUsedAddress string `json:"lastUsedAddress,omitempty"`

	// revokedTokens are access tokens of this credential revoked before they expire
	// (RFC 7009, POST /oauth2/revoke), written by token servers so that every replica
	// refuses them; an entry is pruned once its token has expired.
	// +optional
	// +listType=map
	// +listMapKey=jti
	// +kubebuilder:validation:MaxItems=256
	RevokedTokens []RevokedToken `json:"revokedTokens,omitempty"`

	// conditions: Ready and Active (always), Reconciling and Stalled (only while true).
	// Ready=True means the declared state is in effect (reason Issued, Inactive or
	// Expired); Ready=False with Stalled=True means a person must act (InvalidSpec,
	// SecretConflict, SecretModified, SecretMissing); Ready=Unknown with Reconciling=True
	// means a reconcile could not finish (Retrying, Progressing; the message is the error).
	// Active says whether token servers accept the credential now.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the metadata.generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// APICredential is a machine credential for the APIs of the catalog: the operator mints a
// client ID and secret, writes them once into a Secret in the same namespace, and keeps
// only a hash of the secret in status.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=apicred,categories=keysmith
// +kubebuilder:selectablefield:JSONPath=`.status.clientID`
// +kubebuilder:printcolumn:name="Display Name",type=string,JSONPath=`.spec.displayName`
// +kubebuilder:printcolumn:name="Client ID",type=string,JSONPath=`.status.clientID`
// +kubebuilder:printcolumn:name="Active",type=string,JSONPath=`.status.conditions[?(@.type=="Active")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Last Used",type=date,JSONPath=`.status.lastUsedTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type APICredential struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the credential may do.
	// +required
	Spec APICredentialSpec `json:"spec"`

	// status is what the operator issued and token servers observed.
	// +optional
	Status APICredentialStatus `json:"status,omitzero"`
}

// APICredentialList is a list of APICredentials.
//
// +kubebuilder:object:root=true
type APICredentialList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []APICredential `json:"items"`
}

func init() {
	register(&APICredential{}, &APICredentialList{})
}
