package cli

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// testJWT is an unsigned-looking compact JWS whose claims name the client.
func testJWT(t *testing.T, clientID string) string {
	t.Helper()
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	return enc(`{"alg":"ES256","kid":"k1","typ":"at+jwt"}`) + "." + enc(`{"iss":"https://ts","sub":"`+clientID+`","client_id":"`+clientID+`","aud":["profile-api"]}`) + "." + enc("sig")
}

// fakeTokenServer answers /oauth2/token for clientID/secret (Basic auth) and /authz/{api}
// as the token server does: 200 for GET on profile-api, 403 with the reason otherwise.
// seen receives the forward-auth headers of the last /authz request.
func fakeTokenServer(t *testing.T, clientID, secret string, seen *http.Header, tlsServer bool) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		id, sec, ok := r.BasicAuth()
		w.Header().Set("Content-Type", "application/json")
		if !ok || id != clientID || sec != secret {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client","error_description":"the credentials are invalid"}`))
			return
		}
		if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if sc := r.PostForm.Get("scope"); sc != "" && sc != "profile-api" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_scope","error_description":"scope \"` + sc + `\" is not granted to this client"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": testJWT(t, clientID), "token_type": "Bearer", "expires_in": 600})
	})
	mux.HandleFunc("/authz/{api}", func(w http.ResponseWriter, r *http.Request) {
		*seen = r.Header.Clone()
		if r.Header.Get("Authorization") != "Bearer "+testJWT(t, clientID) {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_token","error_description":"the credentials are invalid"}`))
			return
		}
		api := r.PathValue("api")
		if api != "profile-api" {
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"error":"insufficient_scope","error_description":"the credential is not granted API \"` + api + `\""}`))
			return
		}
		if m := r.Header.Get("X-Forwarded-Method"); m != http.MethodGet {
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"error":"insufficient_scope","error_description":"permission \"read-only\" of API \"profile-api\" does not allow ` + m + `"}`))
			return
		}
		w.Header().Set("X-Keysmith-Permission", "read-only")
		w.WriteHeader(http.StatusOK)
	})
	if tlsServer {
		return httptest.NewTLSServer(mux)
	}
	return httptest.NewServer(mux)
}

// tokenHarness is a harness whose credential ci-bot's Secret points at ts.
func tokenHarness(t *testing.T, ts *httptest.Server) *opsHarness {
	cred, secret := issuedCred("ci-bot", 0)
	secret.Data["TOKEN_URL"] = []byte(ts.URL + "/oauth2/token")
	return newOpsHarness(t, nil, cred, secret)
}

func TestToken(t *testing.T) {
	var seen http.Header
	ts := fakeTokenServer(t, "ksc_ci-bot", "kss_secret_ci-bot", &seen, false)
	defer ts.Close()
	h := tokenHarness(t, ts)

	if err := h.run(newTokenCommand, "ci-bot"); err != nil {
		t.Fatalf("token: %v", err)
	}
	if got, want := h.out.String(), testJWT(t, "ksc_ci-bot")+"\n"; got != want {
		t.Errorf("token printed %q, want the access token alone", got)
	}

	h.out.Reset()
	if err := h.run(newTokenCommand, "ci-bot", "--decode", "--scope", "profile-api"); err != nil {
		t.Fatalf("token --decode: %v", err)
	}
	var got struct {
		Header    map[string]any `json:"header"`
		Claims    map[string]any `json:"claims"`
		Signature string         `json:"signature"`
	}
	if err := json.Unmarshal(h.out.Bytes(), &got); err != nil {
		t.Fatalf("--decode output is not JSON: %v\n%s", err, h.out)
	}
	if got.Claims["client_id"] != "ksc_ci-bot" || got.Header["alg"] != "ES256" || got.Signature != "not verified" {
		t.Errorf("--decode = %+v", got)
	}
	if !strings.Contains(h.out.String(), "\n  \"claims\": {\n    \"iss\"") {
		t.Errorf("--decode is not indented in the token's key order:\n%s", h.out)
	}

	err := h.run(newTokenCommand, "ci-bot", "--scope", "platform-api")
	if err == nil || err.Error() != `the token server refused the credential (400 invalid_scope: scope "platform-api" is not granted to this client): ask only for APIs the credential is granted, as API or API:PERMISSION` {
		t.Errorf("--scope platform-api: err = %v", err)
	}
}

func TestTokenErrorsNeverShowTheSecret(t *testing.T) {
	var seen http.Header
	ts := fakeTokenServer(t, "ksc_ci-bot", "another secret", &seen, false)
	defer ts.Close()
	h := tokenHarness(t, ts)
	err := h.run(newTokenCommand, "ci-bot")
	if err == nil || err.Error() != `the token server refused the credential (401 invalid_client: the credentials are invalid): check that it is active and unexpired with 'kubectl keysmith status ci-bot'` {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error()+h.out.String()+h.errOut.String(), "kss_secret") {
		t.Error("the secret was printed")
	}
}

func TestTokenTLS(t *testing.T) {
	var seen http.Header
	ts := fakeTokenServer(t, "ksc_ci-bot", "kss_secret_ci-bot", &seen, true)
	defer ts.Close()
	h := tokenHarness(t, ts)

	err := h.run(newTokenCommand, "ci-bot")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the token server at "+ts.URL+"/oauth2/token: tls: failed to verify certificate") {
		t.Errorf("untrusted certificate: err = %v", err)
	}
	if err := h.run(newTokenCommand, "ci-bot", "--insecure-skip-tls-verify"); err != nil {
		t.Errorf("--insecure-skip-tls-verify: %v", err)
	}
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.run(newTokenCommand, "ci-bot", "--certificate-authority", ca); err != nil {
		t.Errorf("--certificate-authority: %v", err)
	}
	if err := h.run(newTokenCommand, "ci-bot", "--certificate-authority", ca+".missing"); err == nil || !strings.Contains(err.Error(), "cannot read --certificate-authority "+ca+".missing: no such file or directory") {
		t.Errorf("missing CA file: err = %v", err)
	}
}

func TestTokenURL(t *testing.T) {
	var seen http.Header
	ts := fakeTokenServer(t, "ksc_ci-bot", "kss_secret_ci-bot", &seen, false)
	defer ts.Close()
	cred, secret := issuedCred("ci-bot", 0, func(c *iamv1alpha1.APICredential) {
		c.Spec.SecretTemplate.Keys = iamv1alpha1.SecretKeys{ClientID: "ID", ClientSecret: "SECRET", TokenURL: "URL"}
	})
	secret.Data = map[string][]byte{"ID": secret.Data["CLIENT_ID"], "SECRET": secret.Data["CLIENT_SECRET"]}
	h := newOpsHarness(t, nil, cred, secret)

	err := h.run(newTokenCommand, "ci-bot")
	if err == nil || err.Error() != "the credential's Secret holds no URL: pass the token endpoint with --token-url https://HOST/oauth2/token" {
		t.Errorf("no TOKEN_URL: err = %v", err)
	}
	if err := h.run(newTokenCommand, "ci-bot", "--token-url", ts.URL+"/oauth2/token"); err != nil {
		t.Errorf("--token-url with the template's key names: %v", err)
	}
	if err := h.run(newTokenCommand, "ci-bot", "--token-url", "ftp://x"); err == nil || !strings.Contains(err.Error(), `--token-url "ftp://x" is not an http or https URL`) {
		t.Errorf("--token-url ftp: err = %v", err)
	}
}

func TestCheck(t *testing.T) {
	var seen http.Header
	ts := fakeTokenServer(t, "ksc_ci-bot", "kss_secret_ci-bot", &seen, false)
	defer ts.Close()
	h := tokenHarness(t, ts)

	if err := h.run(newCheckCommand, "ci-bot", "--api", "profile-api", "--path", "/v1/profiles", "--workspace", "eu-prod"); err != nil {
		t.Fatalf("check allowed: %v", err)
	}
	if got := h.out.String(); got != "allowed: GET /v1/profiles on API \"profile-api\" with permission \"read-only\" in workspace \"eu-prod\"\n" {
		t.Errorf("check printed %q", got)
	}
	want := map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/v1/profiles", "X-Keysmith-Workspace": "eu-prod"}
	got := map[string]string{}
	for k := range want {
		got[k] = seen.Get(k)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("forward-auth headers = %v, want %v", got, want)
	}

	h.out.Reset()
	err := h.run(newCheckCommand, "ci-bot", "--api", "profile-api", "--method", "delete", "--workspace", "eu-prod", "--workspace-header", "X-Tenant")
	if err != errSilent {
		t.Errorf("denied: err = %v, want the silent failure (exit 1, the verdict is the output)", err)
	}
	if got := h.out.String(); got != "denied: permission \"read-only\" of API \"profile-api\" does not allow DELETE\n" {
		t.Errorf("check printed %q", got)
	}
	if seen.Get("X-Tenant") != "eu-prod" || seen.Get("X-Keysmith-Workspace") != "" {
		t.Errorf("--workspace-header X-Tenant: headers %v", seen)
	}

	h.out.Reset()
	if err := h.run(newCheckCommand, "ci-bot", "--api", "platform-api"); err != errSilent || h.out.String() != "denied: the credential is not granted API \"platform-api\"\n" {
		t.Errorf("ungranted API: err %v, printed %q", err, h.out)
	}

	for _, args := range [][]string{{"ci-bot"}, {"ci-bot", "--api", "a/b"}, {"ci-bot", "--api", "x", "--path", "v1"}} {
		if err := h.run(newCheckCommand, args...); err == nil || err == errSilent {
			t.Errorf("check %q: err = %v, want a usage error", args, err)
		}
	}
}

func TestAuthzEndpoint(t *testing.T) {
	for tokenURL, want := range map[string]string{
		"https://keysmith-token-server.keysmith-system.svc/oauth2/token": "https://keysmith-token-server.keysmith-system.svc/authz/profile-api",
		"http://127.0.0.1:18080/oauth2/token?x=1":                        "http://127.0.0.1:18080/authz/profile-api",
	} {
		if got, err := authzEndpoint(tokenURL, "profile-api"); err != nil || got != want {
			t.Errorf("authzEndpoint(%q) = %q, %v; want %q", tokenURL, got, err, want)
		}
	}
}

// A token server that redirects is not followed: the redirect would carry the client
// secret (Basic auth, resent on a 307) or the access token to wherever it points.
func TestTokenAndCheckDoNotFollowRedirects(t *testing.T) {
	var leaked []string
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked = append(leaked, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusOK)
	}))
	defer elsewhere.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	h := tokenHarness(t, redirector)

	err := h.run(newTokenCommand, "ci-bot")
	if err == nil || !strings.Contains(err.Error(), "the token server at "+redirector.URL+"/oauth2/token answered with a redirect, which is not followed") {
		t.Errorf("token against a redirect: err = %v, want a refusal naming the redirect", err)
	}

	var seen http.Header
	ts := fakeTokenServer(t, "ksc_ci-bot", "kss_secret_ci-bot", &seen, false)
	defer ts.Close()
	mux := http.NewServeMux()
	mux.Handle("/oauth2/token", ts.Config.Handler)
	mux.Handle("/authz/", redirector.Config.Handler)
	split := httptest.NewServer(mux)
	defer split.Close()
	h = tokenHarness(t, split)
	err = h.run(newCheckCommand, "ci-bot", "--api", "profile-api")
	if err == nil || err == errSilent || !strings.Contains(err.Error(), "/authz/profile-api answered with a redirect, which is not followed") {
		t.Errorf("check against a redirecting /authz: err = %v, want a refusal naming the redirect", err)
	}
	if len(leaked) != 0 {
		t.Errorf("the redirect was followed: the other server got %q", leaked)
	}
}

// A Secret's TOKEN_URL is written by whoever may write the Secret: plain http to another
// host is refused before anything is sent, unless --plain-http says it is intended.
func TestPlainHTTPTokenURLToAnotherHostIsRefused(t *testing.T) {
	cred, secret := issuedCred("ci-bot", 0)
	secret.Data["TOKEN_URL"] = []byte("http://token.example.invalid/oauth2/token")
	h := newOpsHarness(t, nil, cred, secret)
	err := h.run(newTokenCommand, "ci-bot")
	if err == nil || !strings.Contains(err.Error(), "plain http to another host") || !strings.Contains(err.Error(), "--plain-http") {
		t.Errorf("err = %v, want the plain-http refusal", err)
	}

	for raw, allowed := range map[string]bool{
		"http://127.0.0.1:8080/oauth2/token":   true,
		"http://[::1]:8080/oauth2/token":       true,
		"http://localhost:8080/oauth2/token":   true,
		"https://ts.example.com/oauth2/token":  true,
		"http://ts.example.com/oauth2/token":   false,
		"http://10.0.0.7:8080/oauth2/token":    false,
		"http://127.0.0.1.nip.io/oauth2/token": false,
	} {
		_, err := (&tokenServerOptions{}).endpoint(raw, "TOKEN_URL")
		if (err == nil) != allowed {
			t.Errorf("endpoint(%q): err = %v, want allowed=%t", raw, err, allowed)
		}
		if _, err := (&tokenServerOptions{plainHTTP: true}).endpoint(raw, "TOKEN_URL"); err != nil {
			t.Errorf("endpoint(%q) with --plain-http: %v", raw, err)
		}
	}
}

// A token server that echoes what it was sent does not get the client secret, or the
// access token, onto the terminal.
func TestTokenServerEchoesAreRedacted(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		id, sec, _ := r.BasicAuth()
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("ok") == "" {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client", "error_description": "bad secret " + sec + " for " + id})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at_" + id, "token_type": "Bearer", "expires_in": 600})
	})
	mux.HandleFunc("/authz/{api}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "insufficient_scope", "error_description": "token " + r.Header.Get("Authorization") + " refused"})
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	h := tokenHarness(t, ts)

	err := h.run(newTokenCommand, "ci-bot")
	if err == nil || strings.Contains(err.Error(), "kss_secret") || !strings.Contains(err.Error(), "bad secret [redacted] for ksc_ci-bot") {
		t.Errorf("token: err = %v, want the description with the secret redacted", err)
	}
	err = h.run(newCheckCommand, "ci-bot", "--api", "profile-api", "--token-url", ts.URL+"/oauth2/token?ok=1")
	if err != errSilent || strings.Contains(h.out.String(), "at_ksc_ci-bot") || !strings.Contains(h.out.String(), "denied: token Bearer [redacted] refused") {
		t.Errorf("check: err = %v, printed %q, want the access token redacted", err, h.out)
	}
}
