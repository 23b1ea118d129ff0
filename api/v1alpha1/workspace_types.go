package v1alpha1

import (
	"fmt"
	"regexp"
	"strings"
)

// A workspace namespace gets a default credential (docs/credentials.md, "A default
// credential per workspace"): a Namespace labelled WorkspaceLabel and annotated
// DefaultAPIsAnnotation gets an APICredential DefaultCredentialName created by the manager
// while it has no APICredential at all.
const (
	// WorkspaceLabel on a Namespace names the workspace it holds ("iam.keysmith.dev/workspace: eu-prod").
	WorkspaceLabel = "iam.keysmith.dev/workspace"
	// DefaultAPIsAnnotation on a workspace Namespace lists the grants of its default
	// credential as comma-separated api:permission pairs ("profile-api:read-only,platform-api:user";
	// an annotation because ':' and ',' are not allowed in label values). Setting or
	// changing it needs `grant` on each listed permission in the namespace.
	DefaultAPIsAnnotation = "iam.keysmith.dev/default-apis"
	// DefaultCredentialName is the name of the default credential of a workspace namespace.
	DefaultCredentialName = "primary"
)

// The patterns of APIGrant's name and permission, as in the CRD schema.
var (
	apiNamePattern    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	permissionPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// maxAPIs is spec.apis' MaxItems.
const maxAPIs = 32

// ParseDefaultAPIs parses the value of DefaultAPIsAnnotation strictly: one or more
// api:permission pairs separated by commas (spaces around a pair are allowed), each name
// and permission valid as in the CRD schema, each API at most once (spec.apis is a map
// keyed by name), at most 32. The grants come back in the order listed.
func ParseDefaultAPIs(value string) ([]APIGrant, error) {
	if strings.TrimSpace(value) == "" {
		return nil, fmt.Errorf("%s is empty: list api:permission pairs separated by commas, e.g. profile-api:read-only", DefaultAPIsAnnotation)
	}
	var out []APIGrant
	seen := map[string]bool{}
	for i, pair := range strings.Split(value, ",") {
		pair = strings.TrimSpace(pair)
		name, perm, ok := strings.Cut(pair, ":")
		switch {
		case !ok || strings.Contains(perm, ":"):
			return nil, fmt.Errorf("%s item %d %q is not an api:permission pair", DefaultAPIsAnnotation, i+1, pair)
		case len(name) > 253 || !apiNamePattern.MatchString(name):
			return nil, fmt.Errorf("%s item %d: API name %q is not a DNS subdomain", DefaultAPIsAnnotation, i+1, name)
		case len(perm) > 63 || !permissionPattern.MatchString(perm):
			return nil, fmt.Errorf("%s item %d: permission %q of API %q is not a DNS label", DefaultAPIsAnnotation, i+1, perm, name)
		case seen[name]:
			return nil, fmt.Errorf("%s lists API %q more than once: a credential holds one permission per API", DefaultAPIsAnnotation, name)
		}
		seen[name] = true
		out = append(out, APIGrant{Name: name, Permission: perm})
	}
	if len(out) > maxAPIs {
		return nil, fmt.Errorf("%s lists %d APIs, more than the %d a credential may hold", DefaultAPIsAnnotation, len(out), maxAPIs)
	}
	return out, nil
}
