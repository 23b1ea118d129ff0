package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func init() { registerCommand(newTokenCommand) }

// tokenServerOptions are the flags of the commands that talk to a token server (token,
// check): where it is and how to trust its certificate.
type tokenServerOptions struct {
	tokenURL  string
	caFile    string
	insecure  bool
	plainHTTP bool
	scope     string
}

func (o *tokenServerOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.tokenURL, "token-url", "", "Token endpoint to use instead of the Secret's TOKEN_URL, e.g. https://keysmith.example.com/oauth2/token")
	f.StringVar(&o.caFile, "certificate-authority", "", "Path to a PEM file of the CA that signed the token server's certificate (instead of the system's roots)")
	f.BoolVar(&o.insecure, "insecure-skip-tls-verify", false, "Do not verify the token server's certificate (its identity is then unchecked: for tests only)")
	f.BoolVar(&o.plainHTTP, "plain-http", false, "Allow a plain http token URL to a host other than this machine (the client secret then crosses the network unencrypted)")
}

// tokenOptions are the flags of `token`.
type tokenOptions struct {
	server tokenServerOptions
	decode bool
}

func newTokenCommand(e *env) *cobra.Command {
	o := &tokenOptions{}
	cmd := &cobra.Command{
		Use:   "token NAME",
		Short: "Exchange a credential's client ID and secret for an access token",
		Long: `Read the credential's Secret (you need get on it), exchange its client ID and
secret at its TOKEN_URL (or --token-url) with the OAuth 2.0 client credentials grant,
and print the access token. --decode prints the token's header and claims instead, as
JSON, without verifying its signature.`,
		Example: `  # An access token for every API the credential is granted
  kubectl keysmith token ci-bot -n team-a

  # Only the Platform API, and show what the token says
  kubectl keysmith token ci-bot --scope platform-api --decode

  # A token server with a private CA, reached through a port-forward
  kubectl keysmith token ci-bot --token-url https://localhost:8443/oauth2/token --certificate-authority ca.crt`,
		Args:              exactlyOneName,
		ValidArgsFunction: completeCredentialNames(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, _, err := e.exchange(cmd.Context(), args[0], &o.server)
			if err != nil {
				return err
			}
			if printable(tok.AccessToken) != tok.AccessToken {
				return userError("the token server's access token holds control characters, so it is not printed", "see the token server's log; is --token-url the token server?")
			}
			if o.decode {
				return printDecoded(e.out(), tok.AccessToken)
			}
			_, err = fmt.Fprintln(e.out(), tok.AccessToken)
			return err
		},
	}
	o.server.addFlags(cmd)
	cmd.Flags().StringVar(&o.server.scope, "scope", "", "Narrow the token: space-separated API or API:PERMISSION items, e.g. \"platform-api profile-api:read-only\"")
	cmd.Flags().BoolVar(&o.decode, "decode", false, "Print the token's header and claims as JSON (decoded, not verified) instead of the token")
	return cmd
}

// exchange reads the credential's Secret and trades it for an access token at the token
// server; it returns the token and the token URL it used.
func (e *env) exchange(ctx context.Context, name string, o *tokenServerOptions) (*oauth2.Token, string, error) {
	ns, err := e.Namespace()
	if err != nil {
		return nil, "", err
	}
	cred, err := e.getCredential(ctx, ns, name)
	if err != nil {
		return nil, "", err
	}
	c, err := e.Client()
	if err != nil {
		return nil, "", err
	}
	data, err := readSecretData(ctx, c, cred, "token")
	if apierrors.IsNotFound(err) {
		return nil, "", userError(fmt.Sprintf("Secret %s/%s of credential %q does not exist", ns, secretName(cred), name),
			fmt.Sprintf("see why with '%s status %s'; '%s rotate %s' issues new keys into it", commandName, name, commandName, name))
	}
	if err != nil {
		return nil, "", err
	}
	if data.ClientID == "" || data.ClientSecret == "" {
		keys := cred.Spec.SecretKeyNames()
		return nil, "", userError(fmt.Sprintf("Secret %s/%s holds no %s or no %s", ns, secretName(cred), keys.ClientID, keys.ClientSecret),
			fmt.Sprintf("see why with '%s status %s'", commandName, name))
	}
	tokenURL, err := o.endpoint(data.TokenURL, cred.Spec.SecretKeyNames().TokenURL)
	if err != nil {
		return nil, "", err
	}
	hc, err := o.httpClient()
	if err != nil {
		return nil, "", err
	}
	cfg := clientcredentials.Config{
		ClientID:     data.ClientID,
		ClientSecret: data.ClientSecret,
		TokenURL:     tokenURL,
		Scopes:       strings.Fields(o.scope),
		AuthStyle:    oauth2.AuthStyleInHeader,
	}
	tok, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, hc))
	if err != nil {
		return nil, "", redactError(tokenError(err, tokenURL, name), data.ClientSecret)
	}
	return tok, tokenURL, nil
}

// readSecretData reads the client ID, secret and token URL from cred's Secret, under the
// key names of spec.secretTemplate.keys. A missing Secret is returned as the API's
// NotFound (create waits for it); one the user may not read is a one-line error saying
// which permission to ask for. verb is the command that needs it.
func readSecretData(ctx context.Context, c client.Client, cred *iamv1alpha1.APICredential, verb string) (issuedCredential, error) {
	name := secretName(cred)
	s := &corev1.Secret{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: cred.Namespace, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return issuedCredential{}, err
		}
		if apierrors.IsForbidden(err) {
			what := fmt.Sprintf("you may not read Secret %s/%s", cred.Namespace, name)
			if verb == "create" {
				what = fmt.Sprintf("apicredential %s/%s was created, but you may not read its Secret %s/%s", cred.Namespace, cred.Name, cred.Namespace, name)
			}
			return issuedCredential{}, userError(what,
				fmt.Sprintf("ask for get on secrets %q in namespace %q (%s needs it to show the keys)", name, cred.Namespace, verb))
		}
		return issuedCredential{}, kubeError(err, fmt.Sprintf("read Secret %s/%s", cred.Namespace, name))
	}
	keys := cred.Spec.SecretKeyNames()
	return issuedCredential{
		Name:         cred.Name,
		Namespace:    cred.Namespace,
		ClientID:     string(s.Data[keys.ClientID]),
		ClientSecret: string(s.Data[keys.ClientSecret]),
		TokenURL:     string(s.Data[keys.TokenURL]),
	}, nil
}

// endpoint returns the token URL to use: --token-url, else the Secret's, which must be an
// absolute http or https URL.
func (o *tokenServerOptions) endpoint(fromSecret, key string) (string, error) {
	raw, from := o.tokenURL, "--token-url"
	if raw == "" {
		raw, from = fromSecret, "the Secret's "+key
	}
	if raw == "" {
		return "", userError("the credential's Secret holds no "+key, "pass the token endpoint with --token-url https://HOST/oauth2/token")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", userError(fmt.Sprintf("%s %q is not an http or https URL", from, raw), "pass the token endpoint with --token-url https://HOST/oauth2/token")
	}
	// The client secret goes to this URL. Whoever may write the Secret chooses it; plain
	// http is accepted only to this machine (a port-forward, a local token server) unless
	// the person asks for it.
	if u.Scheme == "http" && !isLoopback(u.Hostname()) && !o.plainHTTP {
		return "", userError(fmt.Sprintf("%s %q is plain http to another host, so the client secret would cross the network unencrypted; nothing was sent", from, raw),
			"use an https token URL (--token-url), or pass --plain-http if that is intended")
	}
	return u.String(), nil
}

// isLoopback reports whether host (no port) is this machine: localhost or a loopback IP.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// errRedirect refuses a token server's redirect: following it would send the client
// secret (token) or the access token (check) to wherever the redirect points.
var errRedirect = errors.New("answered with a redirect, which is not followed (it would carry the credentials elsewhere)")

// redactError replaces secret, should the token server have echoed it into its answer,
// in err's text.
func redactError(err error, secret string) error {
	var ue *userErr
	if secret == "" || !errors.As(err, &ue) {
		return err
	}
	return &userErr{what: strings.ReplaceAll(ue.what, secret, "[redacted]"), hint: strings.ReplaceAll(ue.hint, secret, "[redacted]")}
}

// httpClient is the HTTP client for the token server: the system roots, or the CA of
// --certificate-authority, or no verification with --insecure-skip-tls-verify.
func (o *tokenServerOptions) httpClient() (*http.Client, error) {
	if o.caFile != "" && o.insecure {
		return nil, userError("--certificate-authority and --insecure-skip-tls-verify both given", "pass one of them")
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.insecure} //nolint:gosec // the user's explicit choice, for tests
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			reason := err.Error()
			if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
				reason = pe.Err.Error()
			}
			return nil, userError("cannot read --certificate-authority "+o.caFile+": "+reason, "pass a readable PEM file")
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, userError("--certificate-authority "+o.caFile+" holds no PEM certificate", "pass the CA certificate (ca.crt of the token server's TLS Secret)")
		}
		tlsConfig.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConfig
	return &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return errRedirect },
	}, nil
}

// tokenError turns a failed exchange into one line: the token server's error code and
// description (RFC 6749 §5.2, never a secret), or the transport's failure.
func tokenError(err error, tokenURL, name string) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		what := fmt.Sprintf("the token server refused the credential (%d %s", status, re.ErrorCode)
		if re.ErrorDescription != "" {
			what += ": " + oneLine(re.ErrorDescription)
		}
		what += ")"
		if re.ErrorCode == "" {
			what = fmt.Sprintf("the token server at %s answered %d", tokenURL, status)
		}
		switch re.ErrorCode {
		case "invalid_client":
			return userError(what, fmt.Sprintf("check that it is active and unexpired with '%s status %s'", commandName, name))
		case "invalid_scope":
			return userError(what, "ask only for APIs the credential is granted, as API or API:PERMISSION")
		case "slow_down":
			return userError(what, "too many failures from this address: retry later")
		}
		return userError(what, "see the token server's log")
	}
	return transportError(err, tokenURL)
}

// transportError is the one line of a request to the token server at u that got no
// answer, or a redirect (errRedirect), which is not followed.
func transportError(err error, u string) error {
	if errors.Is(err, errRedirect) {
		return userError("the token server at "+u+" "+errRedirect.Error(), "pass the token server's own URL with --token-url")
	}
	return userError("cannot reach the token server at "+u+": "+oneLine(transportReason(err)),
		"check the URL (--token-url), and the TLS flags --certificate-authority or --insecure-skip-tls-verify")
}

// transportReason is the innermost message of a transport error, without the URL and the
// method that oauth2 and net/http wrap around it.
func transportReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// decodedToken is what `token --decode` prints: the JWT's header and claims as the token
// server wrote them, and a reminder that nothing was verified.
type decodedToken struct {
	Header    json.RawMessage `json:"header"`
	Claims    json.RawMessage `json:"claims"`
	Signature string          `json:"signature"`
}

// decodeJWT splits a compact JWS and decodes its header and claims, without verifying
// the signature.
func decodeJWT(token string) (decodedToken, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return decodedToken{}, userError("the access token is not a JWT (three dot-separated parts)", "print it without --decode")
	}
	var d decodedToken
	for i, dst := range []*json.RawMessage{&d.Header, &d.Claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || !json.Valid(b) {
			return decodedToken{}, userError("the access token's "+[]string{"header", "claims"}[i]+" are not base64url JSON", "print it without --decode")
		}
		*dst = b
	}
	d.Signature = "not verified"
	return d, nil
}

// printDecoded prints the token's header and claims as indented JSON, in the token's own
// key order.
func printDecoded(w io.Writer, token string) error {
	d, err := decodeJWT(token)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
