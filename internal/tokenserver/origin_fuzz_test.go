package tokenserver

import (
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"
	"testing"
)

// FuzzOriginalRequest feeds originalRequest arbitrary original URIs, through each proxy
// convention, with arbitrary workspace and method headers. Whenever it accepts, with a
// workspace pattern configured:
//   - the path it checked is canonical by an independent definition: path.Clean leaves it
//     alone (but for a trailing "/"), it holds no backslash, %2F or %5C, and decoding the
//     escapes of unreserved characters changes nothing; decoded, it still cleans to itself,
//     so a backend that decodes sees the same segments;
//   - every workspace it returns is one the request names: the one header value, or the
//     pattern's match of that path;
//   - no header of the original request was sent twice, and the two conventions agreed.
func FuzzOriginalRequest(f *testing.F) {
	opts := &Options{WorkspaceHeader: "X-Keysmith-Workspace", WorkspacePath: regexp.MustCompile(`^/workspaces/([^/]+)`)}
	opts.deriveWorkspace() // as New does: the header key and the case-folded pattern
	for _, uri := range []string{
		"/workspaces/ws-a/plans", "/workspaces/ws-a/", "/workspaces/ws-a?x=/../y", "/",
		"//workspaces/ws-b/x", "/workspaces/ws-a/../ws-b/x", "/x/../workspaces/ws-b/x",
		"/./workspaces/ws-b/x", "/%77orkspaces/ws-b/x", "/workspaces%2Fws-b", "/workspaces%2fws-b",
		"/workspaces/ws-a%5c..%5cws-b", `/workspaces/ws-a\..\ws-b`, "/workspaces/%2e%2E/x",
		"/workspaces/ws-a/%zz", "/workspaces/ws-a/%4", "/workspaces/ws-a/%", "/a%3Fb%20c", "workspaces/ws-b", "",
		"/workspaces/ws%2Da/x", "/workspaces/ws-%35/x", "/workspaces/%5Fws", "/workspaces/ws-a/%7e",
	} {
		for conv := range uint8(3) {
			f.Add(conv, uri, "", "", "GET", "")
		}
	}
	f.Add(uint8(0), "/workspaces/ws-b/x", "ws-a", "", "GET", "")
	f.Add(uint8(1), "/workspaces/ws-a/x", "ws-a", "ws-b", "DELETE", "GET")
	f.Add(uint8(2), "/workspaces/ws-a/x", "ws-a,ws-b", "", "GET", "")
	f.Add(uint8(1), "/workspaces/ws-a/x", "", "", "DELETE", "DELETE")
	f.Add(uint8(0), "/workspaces/ws-a/x", "", "", "GE T", "")
	f.Add(uint8(0), "/Workspaces/ws-b/x", "ws-a", "", "GET", "")

	f.Fuzz(func(t *testing.T, conv uint8, uri, ws1, ws2, method, otherMethod string) {
		req, wantPath, ok := forwardAuthRequest(conv%3, uri, method, otherMethod)
		if !ok {
			return // outside the property: net/http refuses such a request before any handler runs
		}
		for _, ws := range []string{ws1, ws2} {
			if ws != "" && validHeaderValue(ws) {
				req.Header.Add("X-Keysmith-Workspace", ws)
			}
		}

		o, oerr := originalRequest(req, opts)
		if oerr != nil {
			if oerr.status != http.StatusBadRequest || oerr.code != "invalid_request" {
				t.Fatalf("refused with %d %s, want 400 invalid_request", oerr.status, oerr.code)
			}
			return
		}

		for _, name := range []string{hdrForwardedMethod, hdrOriginalMethod, hdrForwardedURI, hdrOriginalURI, "X-Keysmith-Workspace"} {
			if len(req.Header[name]) > 1 {
				t.Fatalf("accepted %s sent %d times", name, len(req.Header[name]))
			}
		}
		if fm, om := req.Header[hdrForwardedMethod], req.Header[hdrOriginalMethod]; len(fm) == 1 && len(om) == 1 && fm[0] != om[0] {
			t.Fatalf("accepted X-Forwarded-Method %q with X-Original-Method %q", fm[0], om[0])
		}
		if o.method == "" || strings.ContainsAny(o.method, " ,\t/") {
			t.Fatalf("accepted method %q", o.method)
		}

		if o.path != wantPath {
			t.Fatalf("original path %q, want %q", o.path, wantPath)
		}
		checkCanonical(t, o.path)
		if conv%3 == 2 {
			checkCanonical(t, "/authz/platform-api"+wantPath) // the API's segment too
		}

		named := map[string]bool{}
		if vs := req.Header["X-Keysmith-Workspace"]; len(vs) == 1 {
			if strings.ContainsAny(vs[0], ", \t") {
				t.Fatalf("accepted a workspace list %q", vs[0])
			}
			named[vs[0]] = true
		}
		if m := opts.WorkspacePath.FindStringSubmatch(o.path); len(m) > 1 && m[1] != "" {
			named[m[1]] = true
		}
		for _, ws := range o.workspaces {
			if ws != "" && !named[ws] {
				t.Fatalf("workspace %q returned, the request names %v", ws, named)
			}
		}
		for ws := range named {
			if ws != o.workspaces[0] && ws != o.workspaces[1] {
				t.Fatalf("the request names %q, the decision does not return it (%q)", ws, o.workspaces)
			}
		}
	})
}

// checkCanonical fails t unless p is canonical by a definition independent of
// nonCanonical's.
func checkCanonical(t *testing.T, p string) {
	t.Helper()
	if !strings.HasPrefix(p, "/") {
		t.Fatalf("accepted a relative path %q", p)
	}
	if c := path.Clean(p); c != p && c+"/" != p {
		t.Fatalf("accepted %q, which cleans to %q", p, c)
	}
	lower := strings.ToLower(p)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(p, `\`) {
		t.Fatalf("accepted an escaped slash or a backslash in %q", p)
	}
	if d := decodeUnreserved(p); d != p {
		t.Fatalf("accepted %q, which means %q", p, d)
	}
	d, err := url.PathUnescape(p)
	if err != nil {
		t.Fatalf("accepted %q: %v", p, err)
	}
	if c := path.Clean(d); c != d && c+"/" != d {
		t.Fatalf("accepted %q, which decodes to %q and cleans to %q", p, d, c)
	}
}

// decodeUnreserved decodes the percent-escapes of RFC 3986 unreserved characters only.
func decodeUnreserved(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			if v, err := url.PathUnescape(p[i : i+3]); err == nil && len(v) == 1 &&
				strings.ContainsAny(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~") {
				b.WriteString(v)
				i += 2
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// forwardAuthRequest builds the request a proxy of convention conv (0 Traefik, 1 nginx,
// 2 Envoy) sends for the original method and URI, as net/http parses it, and the original
// path as sent; otherMethod, when set, is the other convention's method header, as a
// client could add it.
func forwardAuthRequest(conv uint8, uri, method, otherMethod string) (*http.Request, string, bool) {
	if !validHeaderValue(uri) || !validHeaderValue(method) || !validHeaderValue(otherMethod) {
		return nil, "", false
	}
	wantPath, _, _ := strings.Cut(uri, "?")
	var req *http.Request
	switch conv {
	case 0, 1:
		req = &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/authz/platform-api"}, Header: http.Header{}}
		m, u, other := hdrForwardedMethod, hdrForwardedURI, hdrOriginalMethod
		if conv == 1 {
			m, u, other = hdrOriginalMethod, hdrOriginalURI, hdrForwardedMethod
		}
		req.Header[m] = []string{method}
		req.Header[u] = []string{uri}
		if otherMethod != "" {
			req.Header[other] = []string{otherMethod}
		}
	default:
		if !isToken(method) {
			return nil, "", false
		}
		// As net/http parses the request line: ParseRequestURI refuses what it cannot
		// take, and sets RawPath whenever the spelling is not the default one.
		if strings.ContainsAny(uri, " #") || !strings.HasPrefix(wantPath, "/") && wantPath != "" {
			return nil, "", false
		}
		u, err := url.ParseRequestURI("/authz/platform-api" + uri)
		if err != nil {
			return nil, "", false
		}
		if wantPath == "" {
			wantPath = "/"
		}
		req = &http.Request{Method: method, URL: u, Header: http.Header{}}
		if otherMethod != "" {
			req.Header[hdrOriginalMethod] = []string{otherMethod}
		}
	}
	return req, wantPath, true
}

// validHeaderValue reports whether v can be sent as a header value at all.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return v == strings.TrimSpace(v)
}
