package tokenserver

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// The headers that carry the original request of a forward-auth request, in the
// canonical form net/http stores them in (so that reading them allocates nothing).
const (
	hdrForwardedMethod = "X-Forwarded-Method" // Traefik ForwardAuth
	hdrForwardedURI    = "X-Forwarded-Uri"    // Traefik ForwardAuth
	hdrOriginalMethod  = "X-Original-Method"  // nginx auth_request (set by the config)
	hdrOriginalURI     = "X-Original-Uri"     // nginx auth_request: X-Original-URI
)

// origin is the original request a forward-auth request asks about.
type origin struct {
	// method is the original request's method.
	method string
	// path is the original request's path without its query string, as sent (not
	// decoded). It is in canonical form whenever a workspace pattern is configured.
	path string
	// workspaces are the workspaces the request names: the workspace header's value,
	// then the workspace pattern's match of the path; "" where one names none.
	workspaces [2]string
}

// originalRequest decides what a forward-auth request asks about: the original method,
// path and the workspaces it names (DESIGN §3, "Authorization fails closed"). It refuses
// with 400 invalid_request, instead of guessing, whatever could be read two ways:
//
//   - a header of the original method or URI, or the workspace header, sent more than once;
//   - X-Forwarded-Method and X-Original-Method (or X-Forwarded-Uri and X-Original-URI)
//     both present and different: with nginx auth_request a client's own headers reach
//     the token server, so a client must not pick the method that is checked;
//   - an original URI header together with a different path after /authz/{api} (Envoy's
//     convention): two proxies' views of one request;
//   - an original URI header without either method header outside Envoy's convention:
//     the request's own method is then the subrequest's (nginx's is always GET);
//   - a method that is not an HTTP token, a workspace header value that is empty or holds
//     a ',' or white space (a list, to a backend that splits it);
//   - a header that is the workspace header's name with '_' for '-' (a CGI, WSGI or
//     Rack backend reads both as one);
//   - when opts.WorkspacePath is set, a path it names a workspace in only when matched
//     in any letter case (Express and ASP.NET Core route case-insensitively);
//   - when opts.WorkspacePath is set, an original path not in canonical form (see
//     nonCanonical): backends normalise paths differently, and a path the pattern does
//     not match names no workspace, so only a canonical path can be matched safely.
//
// The original method and URI come from X-Forwarded-Method / X-Forwarded-Uri (Traefik),
// X-Original-Method / X-Original-URI (nginx), or else the request's own method and the
// rest of its path after /authz/{api} (Envoy ext_authz appends the original path to its
// path prefix). The workspace pattern is matched against the path as sent, which is
// what a proxy forwards.
//
// It reads only r's method, URL and headers, and allocates nothing on success unless a
// workspace pattern is configured.
func originalRequest(r *http.Request, opts *Options) (origin, *oauthError) {
	var o origin
	h := r.Header

	// The method.
	fm, fmOK, oerr := single(h, hdrForwardedMethod)
	if oerr != nil {
		return o, oerr
	}
	om, omOK, oerr := single(h, hdrOriginalMethod)
	if oerr != nil {
		return o, oerr
	}
	switch {
	case fmOK && omOK && fm != om:
		return o, invalidRequest("X-Forwarded-Method and X-Original-Method disagree")
	case fmOK:
		o.method = fm
	case omOK:
		o.method = om
	default:
		o.method = r.Method
	}
	if !isToken(o.method) {
		return o, invalidRequest("the original method is not an HTTP method token")
	}

	// The URI.
	fu, fuOK, oerr := single(h, hdrForwardedURI)
	if oerr != nil {
		return o, oerr
	}
	ou, ouOK, oerr := single(h, hdrOriginalURI)
	if oerr != nil {
		return o, oerr
	}
	uriHeader := hdrForwardedURI
	switch {
	case fuOK && ouOK && fu != ou:
		return o, invalidRequest("X-Forwarded-Uri and X-Original-URI disagree")
	case fuOK:
		o.path = fu
	case ouOK:
		o.path, uriHeader = ou, "X-Original-URI"
	}
	raw := rawPath(r.URL)
	suffix := envoySuffix(raw)
	if fuOK || ouOK {
		o.path, _, _ = strings.Cut(o.path, "?")
		if suffix != "/" && suffix != o.path {
			return o, invalidRequest(uriHeader + " and the path after /authz/{api} disagree")
		}
		if suffix == "/" && !fmOK && !omOK {
			// Traefik's or nginx's convention without its method header (nginx's own
			// auth_request example sets only X-Original-URI): the request's method is
			// the subrequest's, always GET, not the original one.
			return o, invalidRequest(uriHeader + " without X-Forwarded-Method or X-Original-Method: the original method is unknown")
		}
	} else {
		o.path, uriHeader = suffix, ""
	}

	// The workspace header.
	if vs := h[opts.workspaceHeaderKey]; len(vs) > 1 {
		return o, invalidRequest(opts.WorkspaceHeader + " is sent more than once")
	} else if len(vs) == 1 {
		if vs[0] == "" || strings.ContainsAny(vs[0], ", \t\r\n\v\f") {
			return o, invalidRequest(opts.WorkspaceHeader + " must hold exactly one workspace")
		}
		o.workspaces[0] = vs[0]
	}
	if k, ok := lookalikeHeader(h, opts.workspaceHeaderKey); ok {
		return o, invalidRequest(k + " could be read as " + opts.workspaceHeaderKey + " by a backend")
	}

	// The workspace in the path.
	if opts.WorkspacePath == nil {
		return o, nil
	}
	check := o.path
	if uriHeader == "" {
		// Envoy: the whole path as sent, so that its segments are the ones r.URL.Path
		// was split by (the API's own segment included).
		check = raw
	}
	if why := nonCanonical(check); why != "" {
		if uriHeader == "" {
			return o, invalidRequest("the path is not in canonical form: " + why)
		}
		return o, invalidRequest(uriHeader + " is not in canonical form: " + why)
	}
	if m := opts.WorkspacePath.FindStringSubmatchIndex(o.path); len(m) >= 4 && m[2] >= 0 {
		o.workspaces[1] = o.path[m[2]:m[3]]
	} else if fold := opts.workspacePathFold; fold != nil {
		// Express and ASP.NET Core route paths in any letter case: /Workspaces/ws-b
		// reaches the handler of /workspaces/{ws} while the pattern names no workspace.
		if !fold.MatchString(o.path) { // no allocation in the common case: no match at all
			return o, nil
		}
		if m := fold.FindStringSubmatchIndex(o.path); len(m) >= 4 && m[2] >= 0 {
			return o, invalidRequest("the original path names a workspace only in another letter case")
		}
	}
	return o, nil
}

// lookalikeHeader returns a header of h other than name (canonical form) that is name
// with '_' for '-' (or the reverse) in some places: CGI, WSGI and Rack servers map both
// to one HTTP_ variable, so a backend could read the one the token server did not check.
func lookalikeHeader(h http.Header, name string) (string, bool) {
	if name == "" {
		return "", false
	}
	for k := range h {
		if len(k) == len(name) && k != name && sameHeaderName(k, name) {
			return k, true
		}
	}
	return "", false
}

// sameHeaderName reports whether a and b, of equal length, are one name to a CGI
// gateway: equal in ASCII case-insensitively, with '_' and '-' the same character.
func sameHeaderName(a, b string) bool {
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if ca == '_' {
			ca = '-'
		}
		if cb == '_' {
			cb = '-'
		}
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// single returns the value of header name (canonical form) and whether it is present;
// more than one line of it is an error.
func single(h http.Header, name string) (string, bool, *oauthError) {
	switch vs := h[name]; len(vs) {
	case 0:
		return "", false, nil
	case 1:
		return vs[0], true, nil
	default:
		return "", false, invalidRequest(name + " is sent more than once")
	}
}

// rawPath is the path of u as it was sent: RawPath when it is a spelling of Path (net/http
// sets it whenever the request's spelling is not the default encoding), else the default
// encoding of Path, which then is the spelling sent.
func rawPath(u *url.URL) string {
	if u.RawPath != "" {
		if p, err := url.PathUnescape(u.RawPath); err == nil && p == u.Path {
			return u.RawPath
		}
	}
	return u.EscapedPath()
}

// envoySuffix is the original path in Envoy's convention: "/" and the rest of raw after
// /authz/{api}/.
func envoySuffix(raw string) string {
	rest := strings.TrimPrefix(raw, "/authz/")
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[i:]
	}
	return "/"
}

// nonCanonical says why p, an original path without its query string, is not in the
// canonical form DESIGN §3 requires when a workspace pattern is configured, or "" when it
// is. Canonical: absolute; no empty segment (a trailing "/" is canonical), no "." or ".."
// segment; no backslash, ';' (a path parameter to Servlet containers) or control character; percent-escapes well formed, none of "/"
// or "\" (%2F, %5C in any case) and none of a character that needs no escape (RFC 3986
// unreserved: ALPHA DIGIT - . _ ~, e.g. %77 or %2e).
func nonCanonical(p string) string {
	if p == "" || p[0] != '/' {
		return "not an absolute path"
	}
	seg := 1 // start of the current segment
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			switch p[seg:i] {
			case "":
				if i < len(p) {
					return "an empty segment"
				}
			case ".", "..":
				return "a dot segment"
			}
			seg = i + 1
			continue
		}
		switch c := p[i]; {
		case c == '\\':
			return "a backslash"
		case c == ';':
			// Tomcat, Jetty and Spring strip ";params" from each segment before routing,
			// so /workspaces;x/ws-b or /..;/ reach a workspace the pattern did not match.
			return "a ';' path parameter"
		case c < 0x20 || c == 0x7f:
			return "a control character"
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "a malformed percent-escape"
			}
			switch v := unhex(p[i+1])<<4 | unhex(p[i+2]); {
			case v == '/' || v == '\\':
				return "an escaped slash or backslash"
			case isUnreserved(v):
				return "a percent-escape of a character that needs none"
			}
			i += 2
		}
	}
	return ""
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// isUnreserved reports whether c is an RFC 3986 unreserved character.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// isToken reports whether s is an RFC 9110 token, the syntax of a method.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) {
			continue
		}
		switch c {
		case '!', '#', '$', '%', '&', '\'', '*', '+', '^', '`', '|':
		default:
			return false
		}
	}
	return true
}

// CheckWorkspacePath refuses a workspace pattern that cannot name the workspace of
// every path it matches: one without a capture group would extract none (every
// workspace would pass), and with several groups only the first is read, so a path
// that matches through another (an alternation) would pass unchecked. Wrap other
// groups in (?:...).
func CheckWorkspacePath(re *regexp.Regexp) error {
	if n := re.NumSubexp(); n != 1 {
		return fmt.Errorf("%q has %d capture groups; it needs exactly one, the workspace (use (?:...) for the others)", re.String(), n)
	}
	return nil
}
