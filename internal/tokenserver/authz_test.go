package tokenserver_test

import (
	"encoding/base64"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// convention builds the forward-auth request a proxy sends for an original request.
type convention struct {
	name  string
	build func(base, api, method, uri string) *http.Request
}

var conventions = []convention{
	{"traefik ForwardAuth", func(base, api, method, uri string) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, base+"/authz/"+api, nil)
		req.Header.Set("X-Forwarded-Method", method)
		req.Header.Set("X-Forwarded-Uri", uri)
		return req
	}},
	{"nginx auth_request", func(base, api, method, uri string) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, base+"/authz/"+api, nil)
		req.Header.Set("X-Original-Method", method)
		req.Header.Set("X-Original-URI", uri)
		return req
	}},
	{"envoy ext_authz", func(base, api, method, uri string) *http.Request {
		req, _ := http.NewRequest(method, base+"/", nil)
		// Opaque puts the path on the request line exactly as given (a backslash too),
		// as Envoy sends the original one after its path prefix.
		req.URL.Opaque, req.URL.RawQuery, _ = strings.Cut("/authz/"+api+uri, "?")
		return req
	}},
}

func bearer(token string) string { return "Bearer " + token }
func basic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

// TestAuthzMatrix checks method × permission × API × credential state for each proxy
// convention, with bearer tokens and with Basic client credentials.
func TestAuthzMatrix(t *testing.T) {
	for _, conv := range conventions {
		t.Run(conv.name, func(t *testing.T) {
			f := newFixture(t, func(o *tokenserver.Options) { o.WorkspacePath = regexp.MustCompile(`^/workspaces/([^/]+)`) })
			user := f.issue("user", grants("platform-api:user", "profile-api:read-only"))
			admin := f.issue("admin", grants("platform-api:admin"))
			userToken, adminToken := f.token(user), f.token(admin)

			type tc struct {
				name, auth, api, method, uri string
				want                         int
			}
			cases := []tc{
				{"user GET", bearer(userToken), "platform-api", "GET", "/v2/users", 200},
				{"user POST", bearer(userToken), "platform-api", "POST", "/v2/users", 200},
				{"user DELETE is beyond the permission", bearer(userToken), "platform-api", "DELETE", "/v2/users/7", 403},
				{"admin DELETE", bearer(adminToken), "platform-api", "DELETE", "/v2/users/7", 200},
				{"admin PATCH", bearer(adminToken), "platform-api", "PATCH", "/v2/users/7", 200},
				{"read-only GET", bearer(userToken), "profile-api", "GET", "/v1/profiles", 200},
				{"read-only HEAD", bearer(userToken), "profile-api", "HEAD", "/v1/profiles", 200},
				{"read-only POST", bearer(userToken), "profile-api", "POST", "/v1/profiles", 403},
				{"an API not granted", bearer(adminToken), "profile-api", "GET", "/v1/profiles", 403},
				{"an API not in the catalog", bearer(userToken), "billing-api", "GET", "/", 403},
				{"a workspace in scope", bearer(userToken), "profile-api", "GET", "/workspaces/eu-1/profiles", 200},
				{"a workspace out of scope", bearer(userToken), "profile-api", "GET", "/workspaces/ap-3/profiles", 403},
				{"Basic credentials", basic(user.id, user.secret), "platform-api", "POST", "/v2/users", 200},
				{"Basic credentials beyond the permission", basic(user.id, user.secret), "platform-api", "DELETE", "/v2/users", 403},
				{"Basic with a wrong secret", basic(user.id, admin.secret), "platform-api", "GET", "/", 401},
				{"a forged token", bearer(userToken[:len(userToken)-4] + "AAAA"), "platform-api", "GET", "/", 401},
				{"no credentials", "", "platform-api", "GET", "/", 401},
			}
			for _, c := range cases {
				req := conv.build(f.ts.URL, c.api, c.method, c.uri)
				if c.auth != "" {
					req.Header.Set("Authorization", c.auth)
				}
				resp, body := f.do(req)
				if resp.StatusCode != c.want {
					t.Errorf("%s: got %d %v, want %d", c.name, resp.StatusCode, body, c.want)
					continue
				}
				if c.want == 200 {
					cred := "team-a/user"
					if strings.HasPrefix(c.name, "admin") {
						cred = "team-a/admin"
					}
					if got := resp.Header.Get("X-Keysmith-Credential"); got != cred {
						t.Errorf("%s: X-Keysmith-Credential = %q, want %q", c.name, got, cred)
					}
					if resp.Header.Get("X-Keysmith-Client-Id") == "" || resp.Header.Get("X-Keysmith-Account") != "acme" ||
						resp.Header.Get("X-Keysmith-Workspaces") != "eu-1,us-2" || resp.Header.Get("X-Keysmith-Permission") == "" {
						t.Errorf("%s: headers %v", c.name, resp.Header)
					}
				} else if body["error"] == nil {
					t.Errorf("%s: %d without a JSON error body", c.name, resp.StatusCode)
				}
			}

			states := []struct {
				name   string
				change func(*client) (token string)
				want   int
			}{
				{"active", func(c *client) string { return f.token(c) }, 200},
				{"inactive", func(c *client) string {
					tok := f.token(c)
					f.update(c, func(o *iamv1alpha1.APICredential) { o.Spec.Active = ptrTo(false) })
					return tok
				}, 401},
				{"expired", func(c *client) string {
					tok := f.token(c)
					f.update(c, func(o *iamv1alpha1.APICredential) { o.Spec.ExpiresAt = timePtr(f.clock.Now()) })
					return tok
				}, 401},
				{"deleted", func(c *client) string {
					tok := f.token(c)
					f.store.DeleteCredential(keyOf(c.obj))
					return tok
				}, 401},
				{"rotated, within the grace period", func(c *client) string {
					tok := f.token(c)
					f.rotate(c, time.Hour)
					return tok
				}, 200},
				{"rotated, past the grace period", func(c *client) string {
					tok := f.token(c)
					f.rotate(c, time.Minute)
					f.clock.Step(time.Minute)
					return tok
				}, 401},
			}
			for _, st := range states {
				c := f.issue("state-"+strings.ReplaceAll(strings.ReplaceAll(st.name, " ", "-"), ",", ""), grants("platform-api:user"))
				tok := st.change(c)
				for _, auth := range []string{bearer(tok), basic(c.id, c.secret)} {
					req := conv.build(f.ts.URL, "platform-api", "GET", "/v2/users")
					req.Header.Set("Authorization", auth)
					resp, body := f.do(req)
					want := st.want
					if strings.HasPrefix(auth, "Basic") && strings.HasPrefix(st.name, "rotated") {
						want = 200 // the client's current secret
					}
					if resp.StatusCode != want {
						t.Errorf("%s (%s): got %d %v, want %d", st.name, strings.Fields(auth)[0], resp.StatusCode, body, want)
					}
					if want == 401 && body["error_description"] != "the credentials are invalid" {
						t.Errorf("%s: 401 body %v does not say the credentials are invalid", st.name, body)
					}
				}
			}
		})
	}
}

func TestAuthzWorkspaceHeader(t *testing.T) {
	f := newFixture(t)
	c := f.issue("ws", grants("profile-api:read-only"))
	tok := f.token(c)
	for ws, want := range map[string]int{"eu-1": 200, "us-2": 200, "ap-3": 403, "": 200} {
		req := conventions[0].build(f.ts.URL, "profile-api", "GET", "/v1/profiles")
		req.Header.Set("Authorization", bearer(tok))
		if ws != "" {
			req.Header.Set("X-Keysmith-Workspace", ws)
		}
		if resp, body := f.do(req); resp.StatusCode != want {
			t.Errorf("workspace %q: got %d %v, want %d", ws, resp.StatusCode, body, want)
		}
	}
}

// TestFinding1_WorkspaceSmuggling is issue 8, finding 1: with --workspace-path, a
// credential scoped to eu-1 (and us-2) got 200 for an original request in ap-3 by also
// naming eu-1 in the workspace header, by spelling the path so that the pattern does not
// match it but a backend still resolves it into ap-3, or by sending the header twice; and
// a client behind nginx could pick the method checked with its own X-Forwarded-Method.
// Every spelling, through each proxy convention, now gets 400 or 403 (DESIGN §3).
func TestFinding1_WorkspaceSmuggling(t *testing.T) {
	f := newFixture(t, func(o *tokenserver.Options) { o.WorkspacePath = regexp.MustCompile(`^/workspaces/([^/]+)`) })
	c := f.issue("smuggler", grants("platform-api:user")) // GET, HEAD, POST; workspaces eu-1, us-2
	tok := f.token(c)

	type tc struct {
		name    string
		uri     string
		headers []string // workspace header values, one line each
		want    int
	}
	cases := []tc{
		// Canonical requests: the workspace in scope or not.
		{"in scope", "/workspaces/eu-1/plans", nil, 200},
		{"in scope, the workspace alone", "/workspaces/us-2", nil, 200},
		{"in scope, trailing slash", "/workspaces/eu-1/plans/", nil, 200},
		{"in scope, root trailing slash", "/workspaces/eu-1/", nil, 200},
		{"in scope, a query with dot segments", "/workspaces/eu-1/plans?next=/../ap-3/&a=%2F", nil, 200},
		{"in scope, an escape that is needed", "/workspaces/eu-1/a%3Fb%20c%2a", nil, 200},
		{"out of scope", "/workspaces/ap-3/plans", nil, 403},
		{"no workspace in the path", "/v2/users", nil, 200},
		{"header in scope, no workspace in the path", "/v2/users", []string{"eu-1"}, 200},
		{"header out of scope, no workspace in the path", "/v2/users", []string{"ap-3"}, 403},
		{"header and path both in scope", "/workspaces/us-2/plans", []string{"eu-1"}, 200},
		{"header out of scope, path in scope", "/workspaces/eu-1/plans", []string{"ap-3"}, 403},

		// (a) the header no longer wins over the path: both are checked.
		{"(a) header eu-1, path ap-3", "/workspaces/ap-3/plans", []string{"eu-1"}, 403},

		// (b) non-canonical paths are refused instead of matched.
		{"(b) empty first segment", "//workspaces/ap-3/plans", nil, 400},
		{"(b) empty segment later", "/workspaces//ap-3/plans", nil, 400},
		{"(b) dot-dot out of eu-1", "/workspaces/eu-1/../ap-3/plans", nil, 400},
		{"(b) dot-dot before the prefix", "/x/../workspaces/ap-3/plans", nil, 400},
		{"(b) dot segment", "/./workspaces/ap-3/plans", nil, 400},
		{"(b) trailing dot-dot", "/workspaces/eu-1/..", nil, 400},
		{"(b) escaped w", "/%77orkspaces/ap-3/plans", nil, 400},
		{"(b) escaped W, upper-case hex", "/%57orkspaces/ap-3/plans", nil, 400},
		{"(b) escaped dots", "/workspaces/eu-1/%2e%2E/ap-3/plans", nil, 400},
		{"(b) escaped tilde", "/workspaces/eu-1/%7E", nil, 400},
		{"(b) escaped slash", "/workspaces%2Fap-3/plans", nil, 400},
		{"(b) escaped slash, lower case", "/workspaces/eu-1%2f..%2fap-3/plans", nil, 400},
		{"(b) escaped backslash", "/workspaces/eu-1%5c..%5cap-3/plans", nil, 400},
		{"(b) escaped backslash, upper case", "/workspaces/eu-1%5C..%5Cap-3/plans", nil, 400},
		{"(b) backslash", `/workspaces/eu-1\..\ap-3/plans`, nil, 400},
		{"(b) path parameter before the workspace", "/workspaces;x/ap-3/plans", nil, 400},
		{"(b) dot-dot with a path parameter", "/workspaces/eu-1/..;/ap-3/plans", nil, 400},

		// (c) one workspace header, one workspace.
		{"(c) the header twice", "/v2/users", []string{"eu-1", "ap-3"}, 400},
		{"(c) the header twice, both in scope", "/v2/users", []string{"eu-1", "us-2"}, 400},
		{"(c) a list in one header", "/v2/users", []string{"eu-1,ap-3"}, 400},
		{"(c) a list separated by a space", "/v2/users", []string{"eu-1 ap-3"}, 400},
	}
	for _, conv := range conventions {
		for _, c := range cases {
			req := conv.build(f.ts.URL, "platform-api", "GET", c.uri)
			req.Header.Set("Authorization", bearer(tok))
			for _, v := range c.headers {
				req.Header.Add("X-Keysmith-Workspace", v)
			}
			resp, body := f.do(req)
			if resp.StatusCode != c.want {
				t.Errorf("%s, %s %q: got %d %v, want %d", conv.name, c.name, c.uri, resp.StatusCode, body, c.want)
				continue
			}
			if want := map[int]string{400: "invalid_request", 403: "insufficient_scope"}[c.want]; want != "" && body["error"] != want {
				t.Errorf("%s, %s: error %v, want %s", conv.name, c.name, body, want)
			}
		}
	}

	// The method and URI headers of the two conventions (Traefik's X-Forwarded-*, nginx's
	// X-Original-*): a client behind nginx, whose own headers reach the token server, and
	// one behind Traefik, which passes on every client header, must not pick what is checked.
	headerCases := []struct {
		name    string
		api     string // Envoy's path after /authz/, when not only the API
		headers [][2]string
		want    int
	}{
		{"nginx: DELETE, client sends X-Forwarded-Method GET",
			"platform-api", [][2]string{{"X-Original-Method", "DELETE"}, {"X-Original-URI", "/v2/users/7"}, {"X-Forwarded-Method", "GET"}}, 400},
		{"traefik: DELETE, client sends X-Original-Method GET",
			"platform-api", [][2]string{{"X-Forwarded-Method", "DELETE"}, {"X-Forwarded-Uri", "/v2/users/7"}, {"X-Original-Method", "GET"}}, 400},
		{"nginx: URI in ap-3, client sends X-Forwarded-Uri in eu-1",
			"platform-api", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", "/workspaces/ap-3/plans"}, {"X-Forwarded-Uri", "/workspaces/eu-1/plans"}}, 400},
		{"both conventions agree",
			"platform-api", [][2]string{{"X-Original-Method", "GET"}, {"X-Forwarded-Method", "GET"}, {"X-Original-URI", "/workspaces/eu-1/plans"}, {"X-Forwarded-Uri", "/workspaces/eu-1/plans"}}, 200},
		{"both conventions agree on a method not granted",
			"platform-api", [][2]string{{"X-Original-Method", "DELETE"}, {"X-Forwarded-Method", "DELETE"}}, 403},
		{"X-Forwarded-Method twice",
			"platform-api", [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Method", "DELETE"}}, 400},
		{"X-Original-Method twice",
			"platform-api", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Method", "DELETE"}}, 400},
		{"X-Forwarded-Uri twice",
			"platform-api", [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/workspaces/eu-1/plans"}, {"X-Forwarded-Uri", "/workspaces/ap-3/plans"}}, 400},
		{"X-Original-URI twice",
			"platform-api", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", "/workspaces/eu-1/plans"}, {"X-Original-URI", "/workspaces/ap-3/plans"}}, 400},
		{"a method that is not a token",
			"platform-api", [][2]string{{"X-Forwarded-Method", "GET /workspaces/eu-1 HTTP/1.1"}}, 400},
		{"a list of methods",
			"platform-api", [][2]string{{"X-Original-Method", "GET,DELETE"}}, 400},
		{"an empty method",
			"platform-api", [][2]string{{"X-Forwarded-Method", ""}}, 400},
		{"Envoy's path in ap-3, client sends X-Original-URI in eu-1",
			"platform-api/workspaces/ap-3/plans", [][2]string{{"X-Original-URI", "/workspaces/eu-1/plans"}}, 400},
		{"Envoy's path and X-Original-URI agree",
			"platform-api/workspaces/eu-1/plans", [][2]string{{"X-Original-URI", "/workspaces/eu-1/plans?x=1"}}, 200},
	}
	for _, c := range headerCases {
		req, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/authz/"+c.api, nil)
		req.Header.Set("Authorization", bearer(tok))
		for _, kv := range c.headers {
			req.Header.Add(kv[0], kv[1])
		}
		if resp, body := f.do(req); resp.StatusCode != c.want {
			t.Errorf("%s: got %d %v, want %d", c.name, resp.StatusCode, body, c.want)
		}
	}

	// Without a workspace pattern the path is not read, so it need not be canonical; the
	// workspace header rules still hold.
	plain := newFixture(t)
	pc := plain.issue("plain", grants("platform-api:user"))
	ptok := plain.token(pc)
	for _, conv := range conventions {
		for _, c := range []tc{
			{"a non-canonical path", "//workspaces/ap-3/../x", nil, 200},
			{"header out of scope", "/v2/users", []string{"ap-3"}, 403},
			{"the header twice", "/v2/users", []string{"eu-1", "us-2"}, 400},
		} {
			req := conv.build(plain.ts.URL, "platform-api", "GET", c.uri)
			req.Header.Set("Authorization", bearer(ptok))
			for _, v := range c.headers {
				req.Header.Add("X-Keysmith-Workspace", v)
			}
			if resp, body := plain.do(req); resp.StatusCode != c.want {
				t.Errorf("no pattern, %s, %s: got %d %v, want %d", conv.name, c.name, resp.StatusCode, body, c.want)
			}
		}
	}
}

func TestAuthzRecordsUsage(t *testing.T) {
	f := newFixture(t)
	c := f.issue("used", grants("platform-api:user"))
	tok := f.token(c)
	before := f.usage.count()
	req := conventions[0].build(f.ts.URL, "platform-api", "GET", "/")
	req.Header.Set("Authorization", bearer(tok))
	req.Header.Set("X-Forwarded-For", "192.0.2.44, 10.0.0.1")
	if resp, _ := f.do(req); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The TCP peer (loopback) is a trusted proxy; 10.0.0.1 is the nearest hop it vouches for.
	if f.usage.count() != before+1 || f.usage.addrs[len(f.usage.addrs)-1] != "10.0.0.1" {
		t.Errorf("usage %v %v", f.usage.names, f.usage.addrs)
	}
}

// TestAuthzBearerCacheDoesNotOutliveRevocation: a token served from the verified-token
// cache is still refused the moment its credential is deactivated.
func TestAuthzBearerCacheDoesNotOutliveRevocation(t *testing.T) {
	f := newFixture(t)
	c := f.issue("cached", grants("platform-api:user"))
	tok := f.token(c)
	ask := func() int {
		req := conventions[2].build(f.ts.URL, "platform-api", "GET", "/")
		req.Header.Set("Authorization", bearer(tok))
		resp, _ := f.do(req)
		return resp.StatusCode
	}
	for range 3 {
		if code := ask(); code != 200 {
			t.Fatalf("got %d", code)
		}
	}
	f.update(c, func(o *iamv1alpha1.APICredential) { o.Spec.Active = ptrTo(false) })
	if code := ask(); code != 401 {
		t.Errorf("after deactivation: got %d, want 401", code)
	}
	f.update(c, func(o *iamv1alpha1.APICredential) { o.Spec.Active = ptrTo(true) })
	if code := ask(); code != 200 {
		t.Errorf("after reactivation: got %d, want 200", code)
	}
	f.clock.Step(10 * time.Minute)
	if code := ask(); code != 401 {
		t.Errorf("after the token's exp: got %d, want 401", code)
	}
}

func TestStoreRefusesTwoCredentialsClaimingOneClientID(t *testing.T) {
	f := newFixture(t)
	c := f.issue("original", grants("platform-api:user"))
	f.token(c)
	copyCat := c.obj.DeepCopy()
	copyCat.Name = "copy"
	f.store.SetCredential(copyCat)
	resp, body := f.post("/oauth2/token", map[string][]string{"grant_type": {"client_credentials"}}, c.id, c.secret)
	if resp.StatusCode != 401 {
		t.Errorf("with two claimants: got %d %v, want 401 (fail closed)", resp.StatusCode, body)
	}
	f.store.DeleteCredential(keyOf(copyCat))
	f.token(c)
}
