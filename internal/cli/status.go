package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// maxStatusEvents is how many of the most recent events status shows.
const maxStatusEvents = 10

func init() { registerCommand(newStatusCommand) }

func newStatusCommand(e *env) *cobra.Command {
	var o outputFlag
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Explain a credential: grants, scope, whether token servers accept it, secret versions, deadlines, events",
		Long: `Explain one APICredential, as cmctl status certificate does for certificates:

  - what it grants: each API (its display name), the permission and its methods
  - its scope: the account (the one status reports, also when selected for you from the
    namespace) and the workspaces
  - whether token servers accept it now and, when not, why (the Active condition in
    words) and whether the declared state is in effect (Ready)
  - its secret versions: the current one and the previous ones that still work, each
    with the end of its grace period
  - the next deadline: automatic rotation due, a grace period ending, expiry
  - when it was last used, and from which address
  - the recent events about it

-o json or -o yaml prints the APICredential object (never Secret data).`,
		Example: `  # Explain ci-bot in the current namespace
  kubectl keysmith status ci-bot

  # In another namespace, as YAML
  kubectl keysmith status ci-bot -n team-a -o yaml`,
		Args:              exactlyOneName,
		ValidArgsFunction: completeCredentialNames(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			ns, err := e.Namespace()
			if err != nil {
				return err
			}
			cred, err := e.getCredential(cmd.Context(), ns, args[0])
			if err != nil {
				return err
			}
			if o.structured() {
				return printObject(e.out(), o.format, cred)
			}
			facts, err := gatherStatus(cmd.Context(), e, cred)
			if err != nil {
				return err
			}
			return renderStatus(e.out(), facts, e.clock.Now())
		},
	}
	addOutputFlag(cmd, &o)
	return cmd
}

// statusFacts is what status shows: the credential, the catalog entries it names (nil
// when absent or unreadable) and its recent events, oldest first.
type statusFacts struct {
	cred   *iamv1alpha1.APICredential
	apis   map[string]*iamv1alpha1.APIDefinition
	events []statusEvent
	// eventsErr says why events could not be read, if they could not.
	eventsErr string
}

// statusEvent is one event about the credential, from events.k8s.io/v1 or core/v1.
type statusEvent struct {
	Type, Reason, From, Message string
	Count                       int32
	Last                        time.Time
}

// gatherStatus reads the APIDefinitions the credential grants and its events. A catalog
// entry or the events that cannot be read (RBAC) leave a gap in the output, not an error.
func gatherStatus(ctx context.Context, e *env, cred *iamv1alpha1.APICredential) (statusFacts, error) {
	c, err := e.Client()
	if err != nil {
		return statusFacts{}, err
	}
	facts := statusFacts{cred: cred, apis: map[string]*iamv1alpha1.APIDefinition{}}
	for _, g := range cred.Spec.APIs {
		def := &iamv1alpha1.APIDefinition{}
		if err := c.Get(ctx, types.NamespacedName{Name: g.Name}, def); err == nil {
			facts.apis[g.Name] = def
		}
	}
	facts.events, err = credentialEvents(ctx, c, cred)
	if err != nil {
		facts.eventsErr = oneLine(kubeError(err, "read the events").Error())
	}
	return facts, nil
}

// credentialEvents lists the events regarding the credential: events.k8s.io/v1 with a
// field selector on regarding.kind, regarding.name and regarding.namespace (the API
// server supports these for events.k8s.io/v1, as it does involvedObject.* for core/v1);
// if that group is not served, core/v1 events with involvedObject.*. The newest
// maxStatusEvents, oldest first.
func credentialEvents(ctx context.Context, c client.Client, cred *iamv1alpha1.APICredential) ([]statusEvent, error) {
	var out []statusEvent
	list := &eventsv1.EventList{}
	err := c.List(ctx, list, client.InNamespace(cred.Namespace), client.MatchingFieldsSelector{Selector: fields.SelectorFromSet(fields.Set{
		"regarding.kind": "APICredential", "regarding.name": cred.Name, "regarding.namespace": cred.Namespace,
	})})
	switch {
	case err == nil:
		for _, ev := range list.Items {
			if ev.Regarding.UID != "" && ev.Regarding.UID != cred.UID {
				continue // an earlier credential of the same name
			}
			se := statusEvent{Type: ev.Type, Reason: ev.Reason, From: ev.ReportingController, Message: ev.Note, Count: 1, Last: ev.EventTime.Time}
			if ev.Series != nil {
				se.Count, se.Last = ev.Series.Count, ev.Series.LastObservedTime.Time
			}
			if se.Last.IsZero() {
				se.Last = ev.DeprecatedLastTimestamp.Time
			}
			if se.Last.IsZero() {
				se.Last = ev.CreationTimestamp.Time
			}
			out = append(out, se)
		}
	case meta.IsNoMatchError(err) || apierrors.IsNotFound(err) || apierrors.IsBadRequest(err):
		core := &corev1.EventList{}
		if err := c.List(ctx, core, client.InNamespace(cred.Namespace), client.MatchingFieldsSelector{Selector: fields.SelectorFromSet(fields.Set{
			"involvedObject.kind": "APICredential", "involvedObject.name": cred.Name, "involvedObject.namespace": cred.Namespace,
		})}); err != nil {
			return nil, err
		}
		for _, ev := range core.Items {
			if ev.InvolvedObject.UID != "" && ev.InvolvedObject.UID != cred.UID {
				continue
			}
			se := statusEvent{Type: ev.Type, Reason: ev.Reason, From: ev.ReportingController, Message: ev.Message, Count: max(ev.Count, 1), Last: ev.LastTimestamp.Time}
			if se.From == "" {
				se.From = ev.Source.Component
			}
			if se.Last.IsZero() {
				se.Last = ev.EventTime.Time
			}
			if se.Last.IsZero() {
				se.Last = ev.CreationTimestamp.Time
			}
			out = append(out, se)
		}
	default:
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b statusEvent) int { return a.Last.Compare(b.Last) })
	if len(out) > maxStatusEvents {
		out = out[len(out)-maxStatusEvents:]
	}
	return out, nil
}

// renderStatus writes the status of facts.cred as of now. It never prints a secret or a hash.
func renderStatus(w io.Writer, facts statusFacts, now time.Time) error {
	cred := facts.cred
	p := &printer{w: w}
	p.field(0, "Name", cred.Name)
	p.field(0, "Namespace", cred.Namespace)
	p.field(0, "Display name", orNone(cred.Spec.DisplayName))
	p.field(0, "Client ID", orNone(cred.Status.ClientID))
	p.field(0, "Created", timeAndRelative(cred.CreationTimestamp.Time, now))
	if tool, evidence, ok := gitopsEvidence(cred); ok {
		p.field(0, "Applied by", fmt.Sprintf("%s (%s): change it in Git; rotate, activate, deactivate and delete need --force", tool, evidence))
	}
	if cred.DeletionTimestamp != nil {
		p.field(0, "Deleting", "since "+timeAndRelative(cred.DeletionTimestamp.Time, now)+"; token servers refuse it")
	}

	p.section("Grants")
	for _, g := range cred.Spec.APIs {
		p.line(1, grantLine(g, facts.apis[g.Name]))
	}

	p.section("Scope")
	account := cred.Status.Account
	switch {
	case account == "" && cred.Spec.Scope.Account == "":
		account = "<not reported yet>"
	case account == "":
		account = cred.Spec.Scope.Account
	case cred.Spec.Scope.Account == "":
		account += " (selected for you from the namespace)"
	}
	p.field(1, "Account", account)
	p.field(1, "Workspaces", orNone(strings.Join(cred.Spec.Scope.Workspaces, ", ")))

	p.section("Token servers")
	p.line(1, acceptance(cred, now))
	p.line(1, readiness(cred))
	if cred.Status.ObservedGeneration != 0 && cred.Status.ObservedGeneration < cred.Generation {
		p.line(1, fmt.Sprintf("The operator has not acted on the latest change yet (generation %d, status describes %d).", cred.Generation, cred.Status.ObservedGeneration))
	}

	p.section("Conditions")
	t := newTable(w)
	row(t, "  TYPE", "STATUS", "REASON", "SINCE", "MESSAGE")
	for _, c := range cred.Status.Conditions {
		row(t, "  "+c.Type, string(c.Status), c.Reason, age(c.LastTransitionTime, now), orNone(oneLine(c.Message)))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if len(cred.Status.Conditions) == 0 {
		p.line(1, "<none>: the operator has not reported on it yet (is the keysmith manager running?)")
	}

	p.section("Secret")
	renderSecretVersions(p, cred, now)

	p.section("Deadlines")
	renderDeadlines(p, cred, now)

	p.section("Usage")
	last := "never"
	if t := cred.Status.LastUsedTime; t != nil && !t.IsZero() {
		last = timeAndRelative(t.Time, now)
	}
	p.field(1, "Last used", last)
	p.field(1, "From", orNone(cred.Status.LastUsedAddress))

	p.section("Events")
	switch {
	case facts.eventsErr != "":
		p.line(1, "<unknown>: "+facts.eventsErr)
	case len(facts.events) == 0:
		p.line(1, "<none>")
	default:
		t := newTable(w)
		row(t, "  TYPE", "REASON", "AGE", "FROM", "MESSAGE")
		for _, ev := range facts.events {
			when := sinceOrUnknown(now, ev.Last)
			if ev.Count > 1 {
				when += fmt.Sprintf(" (x%d)", ev.Count)
			}
			row(t, "  "+ev.Type, ev.Reason, when, orNone(ev.From), oneLine(ev.Message))
		}
		if err := t.Flush(); err != nil {
			return err
		}
	}
	return p.err
}

// grantLine describes one grant: "profile-api (Profile API, Account level): read-only — GET, HEAD".
func grantLine(g iamv1alpha1.APIGrant, def *iamv1alpha1.APIDefinition) string {
	if def == nil {
		return fmt.Sprintf("%s: %s (the API is not in the catalog, or you may not read it)", g.Name, g.Permission)
	}
	perm := def.Spec.Permission(g.Permission)
	methods := "not a permission of this API"
	if perm != nil {
		methods = describeMethods(perm.Methods)
	}
	return fmt.Sprintf("%s (%s, %s level): %s: %s", g.Name, def.Spec.DisplayName, def.Spec.ScopeLevel, g.Permission, methods)
}

// acceptance says, from the Active condition, whether token servers accept the
// credential now and, when not, why and what to do.
func acceptance(cred *iamv1alpha1.APICredential, now time.Time) string {
	if cred.DeletionTimestamp != nil {
		return "Refused: it is being deleted."
	}
	active := meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionActive)
	if active == nil {
		return "Unknown: the operator has not reported on it yet (is the keysmith manager running?)."
	}
	switch {
	case active.Status == metav1.ConditionTrue:
		s := "Accepted: token servers exchange its secret for tokens and accept the tokens."
		if conditionIs(cred, iamv1alpha1.ConditionReady, metav1.ConditionFalse, false) &&
			meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionReady).Reason == iamv1alpha1.ReasonSecretMissing {
			s += " Its Secret is missing: clients that hold the secret keep working; rotate to issue new keys."
		}
		return s
	case active.Reason == iamv1alpha1.ReasonInactive:
		return fmt.Sprintf("Refused: it is deactivated (spec.active is false), and so are the tokens it was issued. '%s activate %s' accepts the same keys again.", commandName, cred.Name)
	case active.Reason == iamv1alpha1.ReasonExpired:
		when := ""
		if cred.Spec.ExpiresAt != nil {
			when = " at " + timeAndRelative(cred.Spec.ExpiresAt.Time, now)
		}
		return fmt.Sprintf("Refused: it expired%s (spec.expiresAt). Extending or removing spec.expiresAt needs the credential's grants.", when)
	case active.Reason == iamv1alpha1.ReasonProgressing:
		return "Not yet: it has not been issued; the operator is issuing it."
	}
	msg := ""
	if active.Message != "" {
		msg = ": " + oneLine(active.Message)
	}
	return fmt.Sprintf("%s (%s)%s.", active.Status, active.Reason, msg)
}

// readiness says, from Ready, whether the declared state is in effect or a person must act.
func readiness(cred *iamv1alpha1.APICredential) string {
	ready := meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionReady)
	if ready == nil {
		return "Ready: unknown."
	}
	msg := ""
	if ready.Message != "" {
		msg = ": " + oneLine(ready.Message)
	}
	switch ready.Status {
	case metav1.ConditionTrue:
		return fmt.Sprintf("Ready: the declared state is in effect (%s)%s.", ready.Reason, msg)
	case metav1.ConditionFalse:
		return fmt.Sprintf("Not ready, a person must act (%s)%s. %s", ready.Reason, msg, stalledHint(cred, ready.Reason))
	}
	return fmt.Sprintf("Reconciling (%s)%s.", ready.Reason, msg)
}

func stalledHint(cred *iamv1alpha1.APICredential, reason string) string {
	switch reason {
	case iamv1alpha1.ReasonInvalidSpec:
		return "Fix the spec."
	case iamv1alpha1.ReasonSecretMissing, iamv1alpha1.ReasonSecretModified:
		return fmt.Sprintf("'%s rotate %s' issues new keys.", commandName, cred.Name)
	case iamv1alpha1.ReasonSecretConflict:
		return fmt.Sprintf("The Secret %q belongs to something else: remove it, or create the credential under another name.", cred.Spec.SecretName(cred.Name))
	}
	return ""
}

// renderSecretVersions prints the current secret and the previous ones still in their grace period.
func renderSecretVersions(p *printer, cred *iamv1alpha1.APICredential, now time.Time) {
	secret := cred.Spec.SecretName(cred.Name)
	if cred.Status.SecretRef != nil {
		secret = cred.Status.SecretRef.Name
	}
	keys := cred.Spec.SecretKeyNames()
	p.field(1, "Secret", fmt.Sprintf("%s (keys %s, %s, %s)", secret, keys.ClientID, keys.ClientSecret, keys.TokenURL))
	if cred.Status.SecretHash == "" {
		p.field(1, "Current", "<not issued yet>")
	} else {
		issued := "<unknown>"
		if cred.Status.IssuedAt != nil {
			issued = timeAndRelative(cred.Status.IssuedAt.Time, now)
		}
		p.field(1, "Current", fmt.Sprintf("key version %d, issued %s", cred.Status.KeyVersion, issued))
	}
	if want := cred.Spec.Rotation.KeyVersion; want > cred.Status.KeyVersion {
		p.field(1, "Rotating", fmt.Sprintf("to key version %d (requested, not issued yet)", want))
	}
	for _, prev := range cred.Status.PreviousSecrets {
		verdict := "works until"
		if !prev.ExpiresAt.After(now) {
			verdict = "grace period ended"
		}
		p.field(1, "Previous", fmt.Sprintf("%s %s", verdict, timeAndRelative(prev.ExpiresAt.Time, now)))
	}
	grace := "1h (default)"
	if g := cred.Spec.Rotation.GracePeriod; g != nil {
		grace = shortDuration(g.Duration)
	}
	p.field(1, "Grace", "the previous secret works "+grace+" after a rotation")
}

// deadline is a moment the credential changes by itself.
type deadline struct {
	what string
	at   time.Time
}

// deadlines lists the credential's coming deadlines, earliest first: automatic rotation
// (status.issuedAt + spec.rotation.period), the grace ends of previous secrets, expiry.
func deadlines(cred *iamv1alpha1.APICredential, now time.Time) []deadline {
	var out []deadline
	if p := cred.Spec.Rotation.Period; p != nil && cred.Status.IssuedAt != nil {
		out = append(out, deadline{"automatic rotation due (every " + shortDuration(p.Duration) + ")", cred.Status.IssuedAt.Add(p.Duration)})
	}
	for _, prev := range cred.Status.PreviousSecrets {
		if prev.ExpiresAt.After(now) {
			out = append(out, deadline{"grace period of a previous secret ends", prev.ExpiresAt.Time})
		}
	}
	if e := cred.Spec.ExpiresAt; e != nil && e.After(now) {
		out = append(out, deadline{"the credential expires", e.Time})
	}
	slices.SortStableFunc(out, func(a, b deadline) int { return a.at.Compare(b.at) })
	return out
}

func renderDeadlines(p *printer, cred *iamv1alpha1.APICredential, now time.Time) {
	ds := deadlines(cred, now)
	if len(ds) == 0 {
		p.field(1, "Next", "none (no automatic rotation, no grace period running, no expiry)")
	}
	for i, d := range ds {
		label := "Then"
		if i == 0 {
			label = "Next"
		}
		p.field(1, label, d.what+": "+timeAndRelative(d.at, now))
	}
	if cred.Spec.ExpiresAt == nil {
		p.field(1, "Expires", "never")
	} else if !cred.Spec.ExpiresAt.After(now) {
		p.field(1, "Expired", timeAndRelative(cred.Spec.ExpiresAt.Time, now))
	}
	if cred.Spec.Rotation.Period == nil {
		p.field(1, "Rotation", fmt.Sprintf("manual ('%s rotate %s')", commandName, cred.Name))
	}
	if cred.Spec.DeletionProtection {
		p.field(1, "Deletion", "protected (spec.deletionProtection)")
	}
}

// timeAndRelative prints "2026-12-02T03:04:05Z (in 5m)" or "(5m ago)".
func timeAndRelative(t, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return timestamp(t) + " (" + until(t, now) + ")"
}

// sinceOrUnknown prints how long before now t was, kubectl-style, or "<unknown>".
func sinceOrUnknown(now, t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return age(metav1.NewTime(t), now)
}

// shortDuration prints d as Go does without zero tails: "1h", "90m" → "1h30m", "2160h".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// printer writes the indented "Label: value" lines of status, remembering the first error.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) line(indent int, s string) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, "%s%s\n", strings.Repeat("  ", indent), printable(s))
	}
}

func (p *printer) field(indent int, label, value string) {
	p.line(indent, fmt.Sprintf("%-*s %s", 14-2*indent, label+":", value))
}

func (p *printer) section(title string) { p.line(0, title+":") }
