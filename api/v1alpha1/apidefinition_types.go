package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ScopeLevel is the level of the Org -> Account -> Workspace hierarchy an API applies to.
// +kubebuilder:validation:Enum=Org;Account;Workspace
type ScopeLevel string

const (
	// ScopeLevelOrg APIs apply to the whole organisation; credentials need no account or workspace.
	ScopeLevelOrg ScopeLevel = "Org"
	// ScopeLevelAccount APIs apply to one account; the account is selected for the user
	// (the namespace's iam.keysmith.dev/account label, else the namespace name).
	ScopeLevelAccount ScopeLevel = "Account"
	// ScopeLevelWorkspace APIs apply to workspaces; credentials must name at least one.
	ScopeLevelWorkspace ScopeLevel = "Workspace"
)

// MethodAny in a permission's methods allows every HTTP method.
const MethodAny = "*"

// Permission is one level of access an API offers, such as "read-only" or "admin".
type Permission struct {
	// name identifies the permission within its API, e.g. "read-only", "user" or "admin".
	// Credentials refer to it in spec.apis[].permission.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// methods lists the HTTP methods this permission allows, in upper case
	// (e.g. ["GET", "HEAD"]); "*" allows every method. Token servers use it to answer
	// forward-auth requests.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Pattern=`^(\*|[A-Z]+)$`
	// +kubebuilder:validation:items:MaxLength=16
	Methods []string `json:"methods"`

	// description tells people what the permission is for.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Description string `json:"description,omitempty"`
}

// APIDefinitionSpec describes a protected API: its name, the level of the hierarchy it
// applies to, and the permissions credentials can be granted on it.
type APIDefinitionSpec struct {
	// displayName is the human name of the API, e.g. "Profile API".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	DisplayName string `json:"displayName"`

	// scopeLevel is the level of the Org -> Account -> Workspace hierarchy the API applies to.
	// Workspace-level APIs need credentials that name at least one workspace.
	// +required
	ScopeLevel ScopeLevel `json:"scopeLevel"`

	// permissions are the levels of access the API offers. Removing one that credentials
	// use makes those credentials invalid.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Permissions []Permission `json:"permissions"`

	// tokenURL is the OAuth2 token endpoint clients of this API use. When set, it is
	// written into the TOKEN_URL key of credential Secrets that grant this API.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https']",message="spec.tokenURL must be an absolute http or https URL"
	TokenURL string `json:"tokenURL,omitempty"`

	// endpoint is the base URL of the API, shown to users.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https']",message="spec.endpoint must be an absolute http or https URL"
	Endpoint string `json:"endpoint,omitempty"`

	// audience is the value access tokens carry in their aud claim for this API (default:
	// the API's name). Tokens are bound to the audiences of the APIs they carry: /authz
	// checks the API's audience, and a Kubernetes API server (TokenReview) authenticates a
	// token only when its aud holds one of the server's audiences. To let credentials log
	// in to a cluster, catalogue the Kubernetes API with an audience of that API server
	// (its --api-audiences, by default its service-account issuer).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	Audience string `json:"audience,omitempty"`
}

// AudienceOf returns the aud value tokens carry for the API called name with this spec:
// spec.audience, else the name.
func (s *APIDefinitionSpec) AudienceOf(name string) string {
	if s.Audience != "" {
		return s.Audience
	}
	return name
}

// Permission returns the permission with the given name, or nil if the API does not offer it.
func (s *APIDefinitionSpec) Permission(name string) *Permission {
	for i := range s.Permissions {
		if s.Permissions[i].Name == name {
			return &s.Permissions[i]
		}
	}
	return nil
}

// PermissionNames returns the names of the permissions the API offers, in spec order.
func (s *APIDefinitionSpec) PermissionNames() []string {
	names := make([]string, 0, len(s.Permissions))
	for _, p := range s.Permissions {
		names = append(names, p.Name)
	}
	return names
}

// APIDefinition is an entry of the catalog of protected APIs: which permissions an API
// offers and at which level of the Org -> Account -> Workspace hierarchy it applies.
// APICredentials grant permissions on APIDefinitions by name.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=apidef,categories=keysmith
// +kubebuilder:printcolumn:name="Display Name",type=string,JSONPath=`.spec.displayName`
// +kubebuilder:printcolumn:name="Scope",type=string,JSONPath=`.spec.scopeLevel`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type APIDefinition struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec describes the API.
	// +required
	Spec APIDefinitionSpec `json:"spec"`
}

// APIDefinitionList is a list of APIDefinitions.
//
// +kubebuilder:object:root=true
type APIDefinitionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []APIDefinition `json:"items"`
}

func init() {
	register(&APIDefinition{}, &APIDefinitionList{})
}
