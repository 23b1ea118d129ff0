package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

func init() { registerCommand(newCreateCommand) }

func newCreateCommand(e *env) *cobra.Command {
	o := &createOptions{}
	cmd := &cobra.Command{
		Use:   "create NAME --api API:PERMISSION [--api ...]",
		Short: "Create a credential, wait until it is issued and show its secret once",
		Long: `Create an APICredential, wait until the operator has issued it (--timeout), and print
its client ID, client secret and token URL once. The secret is kept only in the
credential's Secret: create never shows it again (rotate issues new keys).

--api grants one permission of one API of the catalog ('kubectl keysmith apis' lists
them) and repeats; so does --workspace. Without --account the account is the
namespace's (its iam.keysmith.dev/account label, else its name). Granting needs RBAC
verb grant on each permission: admission refuses the credential otherwise, and its
message is printed unchanged. create fails if the credential exists.`,
		Example: `  # A read-only credential for the Profile API
  kubectl keysmith create ci-bot --api profile-api:read-only -n team-a

  # Two APIs, one workspace, expiring in 90 days, for a script
  kubectl keysmith create deployer --api platform-api:admin --api profile-api:read-only \
      --workspace eu-prod --expires-in 90d --display-name "Deploy pipeline" -o json`,
		Args: exactlyOneName,
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveNoFileComp // a new name
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.create(cmd.Context(), args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.apis, "api", nil, "An API and the permission to grant on it, as API:PERMISSION (repeat it, or separate with commas)")
	f.StringArrayVar(&o.workspaces, "workspace", nil, "A workspace the credential may act in (repeat it); Workspace-level APIs need one")
	f.StringVar(&o.account, "account", "", "The account the credential acts in (default: the namespace's; another one needs RBAC verb assume on it)")
	f.StringVar(&o.displayName, "display-name", "", "The credential's human name")
	f.StringVar(&o.expiresIn, "expires-in", "", "Expire the credential after this long, e.g. 90d, 720h (sets spec.expiresAt)")
	f.StringVar(&o.expiresAt, "expires-at", "", "Expire the credential at this RFC 3339 time, e.g. 2027-01-31T00:00:00Z (not with --expires-in)")
	f.StringVar(&o.grace, "grace", "", "How long a replaced secret keeps working after a rotation (spec.rotation.gracePeriod, default 1h)")
	f.DurationVar(&o.timeout, "timeout", defaultTimeout, "How long to wait for the operator to issue the credential")
	f.StringVarP(&o.output, "output", "o", "", "Output format: json for {name, namespace, clientID, clientSecret, tokenURL}; text when empty")
	registerGrantCompletion(e, cmd, "api")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]cobra.Completion{"json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// create creates the credential, waits for issuance and prints the secret once.
func (e *env) create(ctx context.Context, name string, o *createOptions) error {
	ns, err := e.Namespace()
	if err != nil {
		return err
	}
	cred, err := o.credential(name, ns, e.clock.Now())
	if err != nil {
		return err
	}
	c, err := e.Client()
	if err != nil {
		return err
	}
	if err := createCredential(ctx, c, cred); err != nil {
		return kubeError(err, fmt.Sprintf("create credential %q in namespace %q", name, ns))
	}
	issued, err := waitForCredential(ctx, c, ns, name, o.timeout, issuedState)
	if errors.Is(err, errWaitTimeout) {
		return userError(fmt.Sprintf("credential %q was created in namespace %q, but is not issued after %s: %s", name, ns, o.timeout, describeState(issued)),
			fmt.Sprintf("see '%s status %s'; its secret is then in Secret %s/%s (create shows it only when it waits until issued)", commandName, name, ns, secretName(cred)))
	}
	if err != nil {
		return kubeError(err, fmt.Sprintf("wait for credential %q to be issued", name))
	}
	ic, err := waitIssuedSecret(ctx, c, issued, "create", o.timeout)
	if err != nil {
		return err
	}
	if err := printIssued(e.out(), ic, secretName(issued), o.output); err != nil {
		return err
	}
	if ready := apimeta.FindStatusCondition(issued.Status.Conditions, iamv1alpha1.ConditionReady); ready.Reason == iamv1alpha1.ReasonExpired {
		_, err = fmt.Fprintf(e.errOut(), "warning: credential %q expired (spec.expiresAt) before it could be used: token servers refuse it\n", name)
	}
	return err
}

// createOptions are the flags of `create`.
type createOptions struct {
	apis        []string
	workspaces  []string
	account     string
	displayName string
	expiresIn   string
	expiresAt   string
	grace       string
	timeout     time.Duration
	output      string
}

// issuedCredential is what `create` prints once, and the shape of `create -o json`
// (DESIGN §6 names the keys).
type issuedCredential struct {
	Name         string `json:"name"`
	Namespace    string `json:"namespace"`
	ClientID     string `json:"clientID"`
	ClientSecret string `json:"clientSecret"`
	TokenURL     string `json:"tokenURL"`
}

// parseGrants reads the --api values: each is API:PERMISSION, and a value may hold several
// separated by commas ("profile-api:read-only,platform-api:admin"). An API may appear once:
// a credential holds one permission per API.
func parseGrants(values []string) ([]iamv1alpha1.APIGrant, error) {
	var grants []iamv1alpha1.APIGrant
	seen := map[string]string{}
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			item = strings.TrimSpace(item)
			api, perm, ok := strings.Cut(item, ":")
			api, perm = strings.TrimSpace(api), strings.TrimSpace(perm)
			if !ok || api == "" || perm == "" || strings.Contains(perm, ":") {
				return nil, userError(fmt.Sprintf("--api %q is not API:PERMISSION", item),
					"name the API and one of its permissions, e.g. --api profile-api:read-only (`kubectl keysmith apis` lists them)")
			}
			if prev, dup := seen[api]; dup {
				return nil, userError(fmt.Sprintf("--api names API %q twice (%s and %s)", api, prev, perm),
					"a credential holds one permission per API: keep one of them")
			}
			seen[api] = perm
			grants = append(grants, iamv1alpha1.APIGrant{Name: api, Permission: perm})
		}
	}
	if len(grants) == 0 {
		return nil, userError("no API to grant", "pass --api API:PERMISSION at least once (`kubectl keysmith apis` lists them)")
	}
	return grants, nil
}

// parseLifetime reads a duration as Go writes it ("36h", "90m") or a whole number of days
// ("90d"), the unit credentials' lifetimes are usually given in.
func parseLifetime(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// parseExpiry turns --expires-in or --expires-at (at most one of them) into spec.expiresAt,
// nil when neither is given. The time must lie in the future: a credential created
// expired would be issued and refused by every token server.
func parseExpiry(in, at string, now time.Time) (*metav1.Time, error) {
	switch {
	case in != "" && at != "":
		return nil, userError("--expires-in and --expires-at both given", "pass one of them: a lifetime (--expires-in 90d) or a time (--expires-at 2027-01-31T00:00:00Z)")
	case in != "":
		d, err := parseLifetime(in)
		if err != nil || d <= 0 {
			return nil, userError(fmt.Sprintf("--expires-in %q is not a positive duration", in), "write it as 90d, 720h or 30m")
		}
		t := metav1.NewTime(now.Add(d).UTC().Truncate(time.Second))
		return &t, nil
	case at != "":
		parsed, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return nil, userError(fmt.Sprintf("--expires-at %q is not an RFC 3339 time", at), "write it as 2027-01-31T00:00:00Z")
		}
		if !parsed.After(now) {
			return nil, userError(fmt.Sprintf("--expires-at %s is in the past", at), "give a future time, or --expires-in DURATION")
		}
		t := metav1.NewTime(parsed.UTC())
		return &t, nil
	}
	return nil, nil
}

// parseGrace reads --grace (rotate and create): the time the previous secret keeps working
// after a rotation, 0s to 720h as spec.rotation.gracePeriod allows.
func parseGrace(s string) (*metav1.Duration, error) {
	if s == "" {
		return nil, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > 720*time.Hour {
		return nil, userError(fmt.Sprintf("--grace %q is not a duration between 0s and 720h", s), "write it as 1h, 30m or 0s (0s revokes the previous secret at once)")
	}
	return &metav1.Duration{Duration: d}, nil
}

// credential builds the APICredential that create sends. The account is set only when
// --account is given: otherwise the operator selects it (status.account) and spec stays
// as written, so GitOps sees no drift if the YAML is later committed.
func (o *createOptions) credential(name, namespace string, now time.Time) (*iamv1alpha1.APICredential, error) {
	grants, err := parseGrants(o.apis)
	if err != nil {
		return nil, err
	}
	expiresAt, err := parseExpiry(o.expiresIn, o.expiresAt, now)
	if err != nil {
		return nil, err
	}
	grace, err := parseGrace(o.grace)
	if err != nil {
		return nil, err
	}
	switch o.output {
	case "", "json":
	default:
		return nil, userError(fmt.Sprintf("-o %q is not an output format of create", o.output), "use -o json, or leave -o out for text")
	}
	cred := &iamv1alpha1.APICredential{
		TypeMeta:   metav1.TypeMeta{APIVersion: iamv1alpha1.GroupVersion.String(), Kind: "APICredential"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: iamv1alpha1.APICredentialSpec{
			DisplayName: o.displayName,
			APIs:        grants,
			Scope:       iamv1alpha1.CredentialScope{Account: o.account, Workspaces: dedupe(o.workspaces)},
			ExpiresAt:   expiresAt,
		},
	}
	cred.Spec.Rotation.GracePeriod = grace
	return cred, nil
}

// dedupe drops repeated values, keeping the first occurrence's order (workspaces are a
// set in the schema, which refuses duplicates).
func dedupe(values []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range values {
		for w := range strings.SplitSeq(v, ",") {
			if w = strings.TrimSpace(w); w != "" && !seen[w] {
				seen[w] = true
				out = append(out, w)
			}
		}
	}
	return out
}

// createCredential sends cred with a plain Create (never an apply: create fails when the
// credential exists, so it cannot take over somebody's keys).
func createCredential(ctx context.Context, c client.Client, cred *iamv1alpha1.APICredential) error {
	err := c.Create(ctx, cred, client.FieldOwner(fieldManager))
	if apierrors.IsAlreadyExists(err) {
		return userError(fmt.Sprintf("apicredential %s/%s already exists", cred.Namespace, cred.Name),
			fmt.Sprintf("use `kubectl keysmith status %s` to see it, or `kubectl keysmith rotate %s` to issue new keys; create never shows an existing secret", cred.Name, cred.Name))
	}
	return err
}

// issuedState reports whether cred is issued (Ready=True, reason Issued, for its current
// generation, with a secret hash), or an error when it cannot get there without a person
// (Stalled=True). Reason Expired counts too: a short --expires-in can pass while the
// operator issues, and the secret, issued all the same, must still be shown once.
func issuedState(cred *iamv1alpha1.APICredential) (bool, error) {
	if st := apimeta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionStalled); st != nil && st.Status == metav1.ConditionTrue && cred.Status.ObservedGeneration >= cred.Generation {
		return false, userError(fmt.Sprintf("apicredential %s/%s was created but not issued: %s: %s", cred.Namespace, cred.Name, st.Reason, st.Message),
			fmt.Sprintf("fix what the message names, or `kubectl keysmith delete %s --confirm %s` and create it again", cred.Name, cred.Name))
	}
	ready := apimeta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionReady)
	return ready != nil && ready.Status == metav1.ConditionTrue && (ready.Reason == iamv1alpha1.ReasonIssued || ready.Reason == iamv1alpha1.ReasonExpired) &&
		ready.ObservedGeneration >= cred.Generation && cred.Status.SecretHash != "", nil
}

// secretName returns the name of cred's Secret: status.secretRef, else
// spec.secretTemplate.name, else the credential's name.
func secretName(cred *iamv1alpha1.APICredential) string {
	if ref := cred.Status.SecretRef; ref != nil && ref.Name != "" {
		return ref.Name
	}
	return cred.Spec.SecretName(cred.Name)
}

// readIssued reads cred's Secret and returns what it holds when its secret is the one
// status records (the hash matches), ok=false while it is not there yet or not yet that
// secret. A Secret the user may not read is an error that says so: the credential exists
// either way.
func readIssued(ctx context.Context, c client.Client, cred *iamv1alpha1.APICredential, verb string) (issuedCredential, bool, error) {
	data, err := readSecretData(ctx, c, cred, verb)
	if apierrors.IsNotFound(err) {
		return issuedCredential{}, false, nil
	}
	if err != nil {
		return issuedCredential{}, false, err
	}
	if cred.Status.SecretHash == "" || !credential.Verify(data.ClientSecret, cred.Status.SecretHash) {
		return issuedCredential{}, false, nil
	}
	data.Name, data.Namespace = cred.Name, cred.Namespace
	return data, true, nil
}

// printIssued prints the one-time display of create: as text with the warning that the
// secret is kept only in the Secret, or, with -o json, the DESIGN §6 object.
func printIssued(w io.Writer, ic issuedCredential, secret, format string) error {
	if format == "json" {
		b, err := json.MarshalIndent(ic, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	tokenURL := ic.TokenURL
	if tokenURL == "" {
		tokenURL = "(none known: the operator runs without --token-url and no granted API names one)"
	}
	_, err := fmt.Fprintf(w, "apicredential %s/%s issued\n\nClient ID:      %s\nClient secret:  %s\nToken URL:      %s\n\nCopy the secret now: the secret is stored only in Secret %s/%s; create will not show it again.\n",
		ic.Namespace, ic.Name, printable(ic.ClientID), ic.ClientSecret, printable(tokenURL), ic.Namespace, secret)
	return err
}
