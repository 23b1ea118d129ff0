package tokenserver

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

func TestNonCanonical(t *testing.T) {
	for p, want := range map[string]string{
		"/":                        "",
		"/workspaces/eu-1":         "",
		"/workspaces/eu-1/":        "",
		"/workspaces/eu-1/a%3Fb":   "",
		"/workspaces/eu-1/a%3fb":   "",
		"/a%20b/%25/%C3%A9/x.y/~z": "",
		"/a/@:!$&'()*+,=":          "",
		"/a;b=c":                   "a ';' path parameter",
		"/..;/workspaces":          "a ';' path parameter",
		"/..a/a../.../a.b":         "",
		"":                         "not an absolute path",
		"workspaces/eu-1":          "not an absolute path",
		"*":                        "not an absolute path",
		"//":                       "an empty segment",
		"//workspaces/eu-1":        "an empty segment",
		"/workspaces//eu-1":        "an empty segment",
		"/workspaces/eu-1//":       "an empty segment",
		"/.":                       "a dot segment",
		"/./workspaces":            "a dot segment",
		"/workspaces/..":           "a dot segment",
		"/workspaces/../x":         "a dot segment",
		`/a\b`:                     "a backslash",
		"/a\x00b":                  "a control character",
		"/a\tb":                    "a control character",
		"/a\x7fb":                  "a control character",
		"/a%":                      "a malformed percent-escape",
		"/a%2":                     "a malformed percent-escape",
		"/a%zz":                    "a malformed percent-escape",
		"/a%g0/":                   "a malformed percent-escape",
		"/a%2F":                    "an escaped slash or backslash",
		"/a%2f":                    "an escaped slash or backslash",
		"/a%5C":                    "an escaped slash or backslash",
		"/a%5c":                    "an escaped slash or backslash",
		"/%77orkspaces":            "a percent-escape of a character that needs none",
		"/a/%2e%2e/b":              "a percent-escape of a character that needs none",
	} {
		if got := nonCanonical(p); got != want {
			t.Errorf("nonCanonical(%q) = %q, want %q", p, got, want)
		}
	}
	// Every escape, in both hex cases: only those of characters that need one are canonical.
	for v := range 256 {
		c := byte(v)
		needsNone := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0
		for _, p := range []string{fmt.Sprintf("/a%%%02X", v), fmt.Sprintf("/a%%%02x", v)} {
			got := nonCanonical(p)
			switch {
			case c == '/' || c == '\\':
				if got != "an escaped slash or backslash" {
					t.Errorf("%s: %q", p, got)
				}
			case needsNone:
				if got != "a percent-escape of a character that needs none" {
					t.Errorf("%s: %q", p, got)
				}
			case got != "":
				t.Errorf("%s (%q needs an escape): %q", p, c, got)
			}
		}
	}
}

func TestIsToken(t *testing.T) {
	for s, want := range map[string]bool{
		"GET": true, "DELETE": true, "M-SEARCH": true, "!#$%&'*+-.^_`|~09az": true,
		"": false, "GE T": false, "GET,DELETE": false, "GET/": false, "GÉT": false, "(GET)": false,
	} {
		if got := isToken(s); got != want {
			t.Errorf("isToken(%q) = %v", s, got)
		}
	}
}

// BenchmarkOriginalRequest is the decision's own cost, without and with a workspace
// pattern, for a Traefik request and an Envoy one.
func BenchmarkOriginalRequest(b *testing.B) {
	traefik := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/authz/platform-api"}, Header: http.Header{
		hdrForwardedMethod: {"GET"}, hdrForwardedURI: {"/workspaces/eu-1/plans?page=2"}, "X-Keysmith-Workspace": {"eu-1"}}}
	envoyURL, _ := url.ParseRequestURI("/authz/platform-api/workspaces/eu-1/plans?page=2")
	envoy := &http.Request{Method: http.MethodGet, URL: envoyURL, Header: http.Header{}}
	plain := &Options{WorkspaceHeader: "X-Keysmith-Workspace"}
	pattern := &Options{WorkspaceHeader: "X-Keysmith-Workspace", WorkspacePath: regexp.MustCompile(`^/workspaces/([^/]+)`)}
	plain.deriveWorkspace()
	pattern.deriveWorkspace()
	for _, c := range []struct {
		name string
		r    *http.Request
		opts *Options
	}{{"traefik", traefik, plain}, {"traefik+pattern", traefik, pattern}, {"envoy", envoy, plain}, {"envoy+pattern", envoy, pattern}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, oerr := originalRequest(c.r, c.opts); oerr != nil {
					b.Fatal(oerr)
				}
			}
		})
	}
}
