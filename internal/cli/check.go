package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
)

func init() { registerCommand(newCheckCommand) }

// defaultWorkspaceHeader is the token server's default --workspace-header.
const defaultWorkspaceHeader = "X-Keysmith-Workspace"

// checkOptions are the flags of `check`.
type checkOptions struct {
	server          tokenServerOptions
	api             string
	method          string
	path            string
	workspace       string
	workspaceHeader string
}

func newCheckCommand(e *env) *cobra.Command {
	o := &checkOptions{}
	cmd := &cobra.Command{
		Use:   "check NAME --api API",
		Short: "Ask the token server whether a credential may call an API with a method",
		Long: `Get an access token for the credential as 'token' does, then ask the token server's
forward-auth endpoint /authz/API (same origin as the token URL) whether a request with
that token, the method --method to the path --path, in the workspace --workspace, is
allowed: the same answer a proxy in front of the API gets. Prints allowed (exit 0) or
denied with the token server's reason (exit 1).`,
		Example: `  # May ci-bot read the Profile API?
  kubectl keysmith check ci-bot --api profile-api

  # May it delete users of the Platform API in workspace eu-prod?
  kubectl keysmith check ci-bot --api platform-api --method DELETE --path /v2/users/42 --workspace eu-prod`,
		Args:              exactlyOneName,
		ValidArgsFunction: completeCredentialNames(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			return e.check(cmd.Context(), args[0], o)
		},
	}
	o.server.addFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.api, "api", "", "The API to ask about (an APIDefinition's name, see 'kubectl keysmith apis')")
	f.StringVar(&o.method, "method", http.MethodGet, "The HTTP method of the request to check")
	f.StringVar(&o.path, "path", "/", "The path of the request to check (sent as X-Forwarded-Uri)")
	f.StringVar(&o.workspace, "workspace", "", "The workspace the request acts in (sent in the workspace header)")
	f.StringVar(&o.workspaceHeader, "workspace-header", defaultWorkspaceHeader, "The header that names the workspace: the token server's --workspace-header")
	registerAPINameCompletion(e, cmd, "api")
	return cmd
}

func (o *checkOptions) validate() error {
	if o.api == "" || strings.ContainsAny(o.api, "/?#") {
		return userError(fmt.Sprintf("--api %q is not an API name", o.api), "name an APIDefinition, e.g. --api profile-api ('kubectl keysmith apis' lists them)")
	}
	o.method = strings.ToUpper(o.method)
	if o.method == "" || strings.ContainsAny(o.method, " \t\r\n") {
		return userError(fmt.Sprintf("--method %q is not an HTTP method", o.method), "pass a method such as GET, POST or DELETE")
	}
	if !strings.HasPrefix(o.path, "/") {
		return userError(fmt.Sprintf("--path %q does not start with /", o.path), "pass the request's path, e.g. --path /v2/users")
	}
	return nil
}

// check gets a token and asks /authz/{api} about it.
func (e *env) check(ctx context.Context, name string, o *checkOptions) error {
	tok, tokenURL, err := e.exchange(ctx, name, &o.server)
	if err != nil {
		return err
	}
	authzURL, err := authzEndpoint(tokenURL, o.api)
	if err != nil {
		return err
	}
	hc, err := o.server.httpClient()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authzURL, nil)
	if err != nil {
		return userError("cannot build the request to "+authzURL+": "+oneLine(err.Error()), "check --token-url")
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("X-Forwarded-Method", o.method)
	req.Header.Set("X-Forwarded-Uri", o.path)
	if o.workspace != "" {
		req.Header.Set(o.workspaceHeader, o.workspace)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return transportError(err, authzURL)
	}
	defer func() { _ = resp.Body.Close() }()
	var verdict strings.Builder
	err = printVerdict(&verdict, resp, o)
	// The answer is the token server's text: never let it echo the access token.
	_, werr := io.WriteString(e.out(), strings.ReplaceAll(verdict.String(), tok.AccessToken, "[redacted]"))
	if err != nil {
		return redactError(err, tok.AccessToken)
	}
	return werr
}

// authzEndpoint is the forward-auth URL of api on the token server whose token endpoint is
// tokenURL: the same origin, path /authz/{api}.
func authzEndpoint(tokenURL, api string) (string, error) {
	u, err := url.Parse(tokenURL)
	if err != nil || u.Host == "" {
		return "", userError(fmt.Sprintf("the token URL %q has no origin", tokenURL), "pass --token-url https://HOST/oauth2/token")
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/authz/" + api}).String(), nil
}

// printVerdict prints allowed (200) or denied with the token server's reason (401, 403;
// exit 1); any other answer is an error.
func printVerdict(w io.Writer, resp *http.Response, o *checkOptions) error {
	switch resp.StatusCode {
	case http.StatusOK:
		perm := resp.Header.Get("X-Keysmith-Permission")
		msg := fmt.Sprintf("allowed: %s %s on API %q", o.method, o.path, o.api)
		if perm != "" {
			msg += fmt.Sprintf(" with permission %q", perm)
		}
		if o.workspace != "" {
			msg += fmt.Sprintf(" in workspace %q", o.workspace)
		}
		_, err := fmt.Fprintln(w, msg)
		return err
	case http.StatusUnauthorized, http.StatusForbidden:
		code, desc := oauthErrorBody(resp.Body)
		reason := desc
		if reason == "" {
			reason = code
		}
		if reason == "" {
			reason = resp.Status
		}
		if _, err := fmt.Fprintln(w, "denied: "+oneLine(reason)); err != nil {
			return err
		}
		return silentFailure()
	default:
		code, desc := oauthErrorBody(resp.Body)
		what := fmt.Sprintf("the token server answered %s", resp.Status)
		if code != "" {
			what += " " + code
		}
		if desc != "" {
			what += ": " + oneLine(desc)
		}
		return userError(what, "check --api, --method, --path and --workspace; see the token server's log")
	}
}

// oauthErrorBody reads an RFC 6749 §5.2 error body: its code and description, empty when
// the body is not one.
func oauthErrorBody(body io.Reader) (code, description string) {
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.NewDecoder(io.LimitReader(body, 64<<10)).Decode(&e) != nil {
		return "", ""
	}
	return e.Error, e.Description
}
