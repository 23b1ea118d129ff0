package tokenserver_test

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// Regression tests from a red-team review of the token server (after issue 8's fixes).
// Each is named after the hole it proves closed.

// TestRedTeam_OversizedClientIDsDoNotGrowTheFailureLimiter: every failed authentication
// kept a (client ID, address) budget keyed by the client ID as sent. Client IDs up to the
// header limit (~100 KiB in a Basic header) from a few addresses held ~10 MiB a minute
// each, until the shipped 256 Mi limit killed the server. A client ID that is not well
// formed names no client: it counts against the address only.
func TestRedTeam_OversizedClientIDsDoNotGrowTheFailureLimiter(t *testing.T) {
	f := newFixture(t)
	h := f.srv.Handler()
	const addrs, perAddr, idLen = 20, 10, 96 << 10
	before := heapInUse()
	for a := range addrs {
		for i := range perAddr {
			id := fmt.Sprintf("%d-%d-", a, i) + strings.Repeat("x", idLen)
			req := httpRequest(http.MethodGet, "/authz/platform-api", "")
			req.Header.Set("Authorization", basic(id, "kss_wrong"))
			req.Header.Set("X-Forwarded-Method", "GET")
			req.Header.Set("X-Forwarded-Uri", "/")
			req.RemoteAddr = fmt.Sprintf("203.0.113.%d:4000", a+1)
			if rec := record(h, req); rec.Code != http.StatusUnauthorized {
				t.Fatalf("failure %d from address %d: %d, want 401", i, a, rec.Code)
			}
		}
	}
	grown := heapInUse() - before
	if limit := int64(2 << 20); grown > limit {
		t.Fatalf("%d failed authentications with %d KiB client IDs kept %d KiB of heap, want < %d KiB",
			addrs*perAddr, idLen>>10, grown>>10, limit>>10)
	}
	runtime.KeepAlive(f)
}

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestRedTeam_AuthorizationSentTwiceIsRefused: with two Authorization headers /authz
// checked the first and answered 200, while a backend or a later hop may read the last
// (or both, comma-joined): one request, two identities. Refused with 400 like every
// other header that could be read two ways; the token endpoint and introspection too.
func TestRedTeam_AuthorizationSentTwiceIsRefused(t *testing.T) {
	f := newFixture(t)
	c := f.issue("user", grants("platform-api:user"))
	tok := f.token(c)
	forged := "eyJhbGciOiJub25lIn0.eyJrc19hcGlzIjp7InBsYXRmb3JtLWFwaSI6ImFkbWluIn19."
	for _, second := range []string{bearer(forged), basic(c.id, c.secret), "Bearer " + tok} {
		req, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/authz/platform-api", nil)
		req.Header.Add("Authorization", bearer(tok))
		req.Header.Add("Authorization", second)
		req.Header.Set("X-Forwarded-Method", "GET")
		req.Header.Set("X-Forwarded-Uri", "/v2/users")
		if resp, body := f.do(req); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/authz with a second Authorization %.20q…: %d %v, want 400", second, resp.StatusCode, body)
		}
	}
	for _, path := range []string{"/oauth2/token", "/oauth2/introspect"} {
		form := url.Values{"grant_type": {"client_credentials"}, "token": {tok}}
		req, _ := http.NewRequest(http.MethodPost, f.ts.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Add("Authorization", basic(c.id, c.secret))
		req.Header.Add("Authorization", basic("ksc_other", "kss_other"))
		if resp, body := f.do(req); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s with two Authorization headers: %d %v, want 400", path, resp.StatusCode, body)
		}
	}
}

// TestRedTeam_URIHeaderWithoutMethodHeaderIsRefused: nginx's own auth_request example
// sets only X-Original-URI. The subrequest is always a GET, so the token server checked
// GET for every original method: a read-only credential could DELETE. A URI header
// without a method header of the same convention, outside Envoy's convention (where the
// request keeps the original method and its path must agree), leaves the method unknown:
// 400, never the subrequest's own method.
func TestRedTeam_URIHeaderWithoutMethodHeaderIsRefused(t *testing.T) {
	f := newFixture(t)
	c := f.issue("reader", grants("dataplanning-api:read-only"))
	tok := f.token(c)
	for _, hdr := range []string{"X-Original-URI", "X-Forwarded-Uri"} {
		// nginx sends GET /authz/{api} for a client's DELETE.
		req, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/authz/dataplanning-api", nil)
		req.Header.Set("Authorization", bearer(tok))
		req.Header.Set(hdr, "/v1/plans/7")
		if resp, body := f.do(req); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s without a method header: %d %v, want 400 (the original method is unknown)", hdr, resp.StatusCode, body)
		}
	}
	// Envoy's convention with a URI header that agrees is still read as Envoy's.
	req, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/authz/dataplanning-api/v1/plans", nil)
	req.Header.Set("Authorization", bearer(tok))
	req.Header.Set("X-Original-URI", "/v1/plans")
	if resp, body := f.do(req); resp.StatusCode != http.StatusOK {
		t.Errorf("Envoy's path with an agreeing X-Original-URI: %d %v, want 200", resp.StatusCode, body)
	}
}

// TestRedTeam_WorkspacePathNeedsExactlyOneGroup: a --workspace-path without a capture
// group (`^/workspaces/[^/]+`) extracted no workspace from any path, so every workspace
// passed; with an alternation of groups (`^/(?:workspaces/([^/]+)|ws/([^/]+))`) only the
// first was read and /ws/<any> passed. The token server now refuses such a pattern at
// start (tokenserver.CheckWorkspacePath).
func TestRedTeam_WorkspacePathNeedsExactlyOneGroup(t *testing.T) {
	for _, tc := range []struct {
		pattern, path string
	}{
		{`^/workspaces/[^/]+`, "/workspaces/ap-3/plans"},
		{`^/(?:workspaces/([^/]+)|ws/([^/]+))`, "/ws/ap-3/plans"},
	} {
		re := regexp.MustCompile(tc.pattern)
		if err := tokenserver.CheckWorkspacePath(re); err == nil {
			t.Errorf("CheckWorkspacePath(%q) accepted a pattern that lets %s through unchecked", tc.pattern, tc.path)
		}
	}
	for _, ok := range []string{`^/workspaces/([^/]+)`, `^/(?:api/)?workspaces/([^/]+)`, `^/w/(?P<ws>[^/]+)`} {
		if err := tokenserver.CheckWorkspacePath(regexp.MustCompile(ok)); err != nil {
			t.Errorf("CheckWorkspacePath(%q): %v", ok, err)
		}
	}
}

// TestRedTeam_UnderscoreWorkspaceHeaderIsRefused: X_Keysmith_Workspace is another header
// to net/http, so the token server saw no workspace and answered 200, while CGI, WSGI and
// Rack servers (PHP, older gunicorn, Rack) map it and X-Keysmith-Workspace to one
// HTTP_X_KEYSMITH_WORKSPACE: the backend acted in a workspace nobody checked. Traefik and
// Envoy (headers_with_underscores_action: ALLOW) pass such headers on.
func TestRedTeam_UnderscoreWorkspaceHeaderIsRefused(t *testing.T) {
	for _, conv := range conventions {
		t.Run(conv.name, func(t *testing.T) {
			f := newFixture(t)
			c := f.issue("user", grants("profile-api:read-only"))
			tok := f.token(c)
			for _, name := range []string{"X_Keysmith_Workspace", "X-Keysmith_Workspace", "x_keysmith-workspace"} {
				req := conv.build(f.ts.URL, "profile-api", "GET", "/v1/profiles")
				req.Header.Set("Authorization", bearer(tok))
				req.Header[name] = []string{"ap-3"} // as sent: net/http keeps it apart from X-Keysmith-Workspace
				if resp, body := f.do(req); resp.StatusCode != http.StatusBadRequest {
					t.Errorf("%s: ap-3 (out of scope): %d %v, want 400", name, resp.StatusCode, body)
				}
			}
			req := conv.build(f.ts.URL, "profile-api", "GET", "/v1/profiles")
			req.Header.Set("Authorization", bearer(tok))
			req.Header.Set("X-Keysmith-Workspace", "eu-1")
			if resp, body := f.do(req); resp.StatusCode != http.StatusOK {
				t.Errorf("X-Keysmith-Workspace: eu-1: %d %v, want 200", resp.StatusCode, body)
			}
		})
	}
}

// TestRedTeam_WorkspacePathInAnotherCaseIsRefused: with --workspace-path
// '^/workspaces/([^/]+)', /Workspaces/ap-3/… matched nothing and so named no workspace:
// 200. Express and ASP.NET Core route case-insensitively by default, so the handler of
// /workspaces/:ws ran in ap-3. A path the pattern names a workspace in only in another
// letter case is refused with 400.
func TestRedTeam_WorkspacePathInAnotherCaseIsRefused(t *testing.T) {
	for _, conv := range conventions {
		t.Run(conv.name, func(t *testing.T) {
			f := newFixture(t, func(o *tokenserver.Options) { o.WorkspacePath = regexp.MustCompile(`^/workspaces/([^/]+)`) })
			c := f.issue("user", grants("profile-api:read-only"))
			tok := f.token(c)
			for _, uri := range []string{"/Workspaces/ap-3/profiles", "/WORKSPACES/ap-3", "/workSpaces/eu-1/profiles"} {
				req := conv.build(f.ts.URL, "profile-api", "GET", uri)
				req.Header.Set("Authorization", bearer(tok))
				if resp, body := f.do(req); resp.StatusCode != http.StatusBadRequest {
					t.Errorf("%s: %d %v, want 400", uri, resp.StatusCode, body)
				}
			}
			for uri, want := range map[string]int{"/workspaces/eu-1/profiles": 200, "/v1/Profiles": 200, "/workspaces/AP-3/x": 403} {
				req := conv.build(f.ts.URL, "profile-api", "GET", uri)
				req.Header.Set("Authorization", bearer(tok))
				if resp, body := f.do(req); resp.StatusCode != want {
					t.Errorf("%s: %d %v, want %d", uri, resp.StatusCode, body, want)
				}
			}
		})
	}
}

// TestRedTeam_PermissionRemovedFromTheCatalogIsRevokedEverywhere: removing a permission
// from an APIDefinition revokes it (token-server.md, Revocation): /authz answered 403,
// but TokenReview still put keysmith:api:<api>:<permission> into the user's groups, so
// RBAC bound to that group kept working at the API server; and a token requested with
// an explicit scope still carried the removed permission. Both now follow the catalog.
func TestRedTeam_PermissionRemovedFromTheCatalogIsRevokedEverywhere(t *testing.T) {
	f := newFixture(t)
	kubernetes := func(perms ...string) *iamv1alpha1.APIDefinition {
		def := &iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: iamv1alpha1.APIDefinitionSpec{
			DisplayName: "Kubernetes", ScopeLevel: iamv1alpha1.ScopeLevelAccount, Audience: kubernetesAudience}}
		for _, p := range perms {
			def.Spec.Permissions = append(def.Spec.Permissions, iamv1alpha1.Permission{Name: p, Methods: []string{"*"}})
		}
		return def
	}
	f.store.SetAPI(kubernetes("user", "admin"))
	c := f.issue("ops", grants("kubernetes:admin", "platform-api:user"))
	tok := f.token(c)
	if st := f.review(tok, kubernetesAudience); !slices.Contains(st.User.Groups, "keysmith:api:kubernetes:admin") {
		t.Fatalf("before the removal: %+v, want the group keysmith:api:kubernetes:admin", st)
	}

	// The catalog drops "admin" from the Kubernetes API (it keeps "user").
	f.store.SetAPI(kubernetes("user"))

	if st := f.review(tok, kubernetesAudience); st.Authenticated || slices.Contains(st.User.Groups, "keysmith:api:kubernetes:admin") {
		t.Errorf("TokenReview after admin left the catalog: %+v, want unauthenticated (no API of the token matches)", st)
	}
	resp, body := f.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"kubernetes"}}, c.id, c.secret)
	if resp.StatusCode != http.StatusBadRequest || body["error"] != "invalid_scope" {
		t.Errorf("scope=kubernetes after admin left the catalog: %d %v, want 400 invalid_scope", resp.StatusCode, body)
	}
	// The API still offered is unaffected.
	if resp, body := f.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"platform-api"}}, c.id, c.secret); resp.StatusCode != http.StatusOK {
		t.Errorf("scope=platform-api: %d %v, want 200", resp.StatusCode, body)
	}
}

// TestRedTeam_IPv6AddressesOfOneSubnetShareAFailureBudget: failure budgets were keyed by
// the full address, and a client on IPv6 holds a /64 (2^64 addresses): one address per
// request, and no bearer token that fails verification (an ECDSA verify each) or wrong
// secret was ever limited. Budgets are per /64 for IPv6; IPv4 addresses stay apart.
func TestRedTeam_IPv6AddressesOfOneSubnetShareAFailureBudget(t *testing.T) {
	f := newFixture(t)
	c := f.issue("user", grants("platform-api:user"))
	forged := f.token(c)
	forged = forged[:len(forged)-8] + "AAAAAAAA"
	h := f.srv.Handler()
	send := func(remote string) int {
		req := httpRequest(http.MethodGet, "/authz/platform-api", "")
		req.Header.Set("Authorization", bearer(forged))
		req.Header.Set("X-Forwarded-Method", "GET")
		req.Header.Set("X-Forwarded-Uri", "/")
		req.RemoteAddr = remote
		return record(h, req).Code
	}
	limited := false
	for i := range 30 {
		if code := send(fmt.Sprintf("[2001:db8:1:2::%x]:4000", i+1)); code == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("30 forged tokens from 30 addresses of 2001:db8:1:2::/64 were all verified: want 429 once the /64's budget is spent")
	}
	if code := send("[2001:db8:1:3::1]:4000"); code != http.StatusUnauthorized {
		t.Errorf("another /64: %d, want 401 (its own budget)", code)
	}
	for i := range 30 {
		if code := send(fmt.Sprintf("198.51.100.%d:4000", i+1)); code != http.StatusUnauthorized {
			t.Fatalf("IPv4 198.51.100.%d: %d, want 401 (IPv4 addresses are limited one by one)", i+1, code)
		}
	}
}
