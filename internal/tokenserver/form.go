package tokenserver

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Request parsing: the form bodies of the OAuth endpoints, the JSON body of TokenReview,
// and the client credentials a request presents.

const formMediaType = "application/x-www-form-urlencoded"

// readForm reads an application/x-www-form-urlencoded body of at most limit bytes and
// refuses repeated parameters (RFC 6749 §3.2). Only the body counts: parameters in the
// query string are ignored, as RFC 6749 §3.2 asks of the token endpoint.
func readForm(w http.ResponseWriter, r *http.Request, limit int64) (url.Values, *oauthError) {
	if ct := r.Header.Get("Content-Type"); ct != formMediaType {
		if mt, _, _ := mime.ParseMediaType(ct); mt != formMediaType {
			return nil, invalidRequest("the body must be application/x-www-form-urlencoded")
		}
	}
	// The body is read into a recycled buffer and parsed from one string of its exact
	// size: the form's values are substrings of it.
	p := getScratch()
	body, err := appendAll((*p)[:0], http.MaxBytesReader(w, r.Body, limit))
	var form url.Values
	var perr error
	if err == nil {
		form, perr = url.ParseQuery(string(body))
	}
	putScratch(p, body) // zeroed: it may hold a client secret
	if err != nil {
		return nil, invalidRequest("the body is too large or could not be read")
	}
	if perr != nil {
		return nil, invalidRequest("the body is not a valid form")
	}
	for k, v := range form {
		if len(v) > 1 {
			return nil, invalidRequest("parameter " + strconv.Quote(k) + " is repeated")
		}
	}
	return form, nil
}

// appendAll appends what r reads until EOF to b, like io.ReadAll into a buffer of the
// caller's.
func appendAll(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// readJSON decodes a JSON body of at most limit bytes into v.
func readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	return json.NewDecoder(http.MaxBytesReader(w, r.Body, limit)).Decode(v)
}

// clientAuth is how a client presented its credentials.
type clientAuth struct {
	id, secret string
	method     string // client_secret_basic or client_secret_post
}

// parseBasic decodes an HTTP Basic value (RFC 7617); RFC 6749 §2.3.1 form-encodes both parts.
func parseBasic(value string) (id, secret string, ok bool) {
	// Decoded into this frame's buffer, then copied once into the string both parts are
	// cut from; a value too long for it (no keysmith client's) is decoded on the heap.
	var buf [256]byte
	var raw []byte
	var err error
	if base64.StdEncoding.DecodedLen(len(value)) <= len(buf) {
		var n int
		n, err = base64.StdEncoding.Decode(buf[:], []byte(value))
		raw = buf[:n]
	} else {
		raw, err = base64.StdEncoding.DecodeString(value)
	}
	if err != nil {
		return "", "", false
	}
	id, secret, ok = strings.Cut(string(raw), ":")
	if !ok {
		return "", "", false
	}
	if id, err = url.QueryUnescape(id); err != nil {
		return "", "", false
	}
	if secret, err = url.QueryUnescape(secret); err != nil {
		return "", "", false
	}
	return id, secret, id != ""
}

// authorization splits an Authorization header into its scheme (lower case) and value.
// More than one Authorization header is refused: one hop would check the first, another
// might use the last (or both, comma-joined).
func authorization(r *http.Request) (scheme, value string, oerr *oauthError) {
	vs := r.Header["Authorization"]
	switch len(vs) {
	case 0:
		return "", "", nil
	case 1:
	default:
		return "", "", invalidRequest("Authorization is sent more than once")
	}
	scheme, value, ok := strings.Cut(vs[0], " ")
	if !ok {
		return "", "", nil
	}
	return strings.ToLower(scheme), strings.TrimSpace(value), nil
}

// clientAuthFrom extracts client credentials from the Basic header or the form body
// (client_secret_post). Using both at once is refused (RFC 6749 §2.3).
func clientAuthFrom(r *http.Request, form url.Values) (clientAuth, *oauthError) {
	scheme, value, oerr := authorization(r)
	if oerr != nil {
		return clientAuth{}, oerr
	}
	_, postID := form["client_id"]
	_, postSecret := form["client_secret"]
	switch {
	case scheme == "basic":
		if postSecret {
			return clientAuth{}, invalidRequest("use one client authentication method, not both")
		}
		id, secret, ok := parseBasic(value)
		if !ok {
			return clientAuth{}, invalidClient("malformed Basic credentials")
		}
		return clientAuth{id, secret, "client_secret_basic"}, nil
	case scheme != "":
		return clientAuth{}, invalidClient("unsupported authentication scheme")
	case postID && postSecret:
		return clientAuth{form.Get("client_id"), form.Get("client_secret"), "client_secret_post"}, nil
	default:
		return clientAuth{}, invalidClient("client authentication is required")
	}
}
