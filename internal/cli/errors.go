package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// userErr is an error written for the person at the terminal: what failed and, when
// known, what to do about it. It is printed as one line, `error: <what>: <hint>`.
type userErr struct {
	what string
	hint string
}

func (e *userErr) Error() string {
	if e.hint == "" {
		return e.what
	}
	return e.what + ": " + e.hint
}

// userError returns the error printed as `error: <what>: <hint>` (no hint: `error: <what>`).
func userError(what, hint string) error { return &userErr{what: oneLine(what), hint: oneLine(hint)} }

// printError writes err as the plugin's one line on stderr.
func printError(w io.Writer, err error) {
	if errors.Is(err, errSilent) {
		return
	}
	var ue *userErr
	if !errors.As(err, &ue) {
		err = kubeError(err, "")
	}
	fmt.Fprintln(w, "error: "+oneLine(err.Error()))
}

// rbacDenial matches the authorizer's refusal, e.g. `User "bob" cannot create resource
// "apicredentials" in API group "iam.keysmith.dev" in the namespace "team-a"`.
var rbacDenial = regexp.MustCompile(`(User|ServiceAccount) "([^"]*)" cannot (\S+) resource "([^"]+)"(?: in API group "([^"]*)")?(?: in the namespace "([^"]+)")?`)

// kubeError turns the error of an API call into a userError. doing says what was being
// done ("create credential \"ci-bot\" in namespace \"team-a\""). Refusals of admission
// (keysmith's webhook, a ValidatingAdmissionPolicy) are passed through unchanged: their
// message is written for the user and says what to do.
func kubeError(err error, doing string) error {
	if err == nil {
		return nil
	}
	var ue *userErr
	if errors.As(err, &ue) {
		return ue
	}
	prefix := func(s string) string {
		if doing == "" {
			return s
		}
		return "cannot " + doing + ": " + s
	}
	status, isStatus := apiStatus(err)
	switch {
	case isStatus && isAdmissionDenial(status.Message):
		return &userErr{what: oneLine(status.Message)}
	case meta.IsNoMatchError(err) || (apierrors.IsNotFound(err) && strings.Contains(status.Message, "the server could not find the requested resource")):
		return userError(prefix("the keysmith CRDs are not installed in this cluster"), "install keysmith first (docs/install.md), or check --context")
	case apierrors.IsForbidden(err):
		if m := rbacDenial.FindStringSubmatch(status.Message); m != nil {
			resource := m[4]
			if m[5] != "" {
				resource += "." + m[5]
			}
			where := "cluster-wide"
			if m[6] != "" {
				where = fmt.Sprintf("in namespace %q", m[6])
			}
			return userError(prefix(fmt.Sprintf("%s %q may not %s %s %s", strings.ToLower(m[1]), m[2], m[3], resource, where)),
				fmt.Sprintf("ask a cluster admin for RBAC verb %q on %s %s", m[3], resource, where))
		}
		return userError(prefix("forbidden: "+status.Message), "ask a cluster admin for the RBAC permission it names")
	case apierrors.IsNotFound(err):
		return userError(prefix(status.Message), "check the name and the namespace (-n)")
	case apierrors.IsAlreadyExists(err):
		return userError(prefix(status.Message), "pick another name, or change the existing one")
	case apierrors.IsConflict(err):
		return userError(prefix("it changed while the command ran"), "run the command again")
	case apierrors.IsInvalid(err):
		return userError(prefix("invalid: "+invalidCauses(status)), "fix the value named and run the command again")
	case apierrors.IsUnauthorized(err):
		return userError(prefix("the API server did not accept your credentials"), "log in again, or check --kubeconfig, --context and --token")
	case apierrors.IsTimeout(err), apierrors.IsServerTimeout(err), apierrors.IsTooManyRequests(err), apierrors.IsServiceUnavailable(err):
		return userError(prefix("the API server is busy or timed out"), "try again")
	case errors.Is(err, context.Canceled):
		return userError(prefix("interrupted"), "")
	case errors.Is(err, context.DeadlineExceeded):
		return userError(prefix("timed out"), "try again, or give it longer with --timeout")
	case isNetworkError(err):
		return userError(prefix("cannot reach the Kubernetes API server: "+err.Error()), "check --kubeconfig, --context and --server")
	case isStatus:
		return userError(prefix(status.Message), "")
	}
	return userError(prefix(err.Error()), "")
}

// isAdmissionDenial reports whether an API server message is an admission plugin's
// refusal: keysmith's validating webhook or a ValidatingAdmissionPolicy.
func isAdmissionDenial(msg string) bool {
	return (strings.Contains(msg, "admission webhook \"") && strings.Contains(msg, "denied the request")) ||
		strings.Contains(msg, "ValidatingAdmissionPolicy '")
}

// apiStatus returns the Status of an API error.
func apiStatus(err error) (metav1.Status, bool) {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status(), true
	}
	return metav1.Status{}, false
}

// invalidCauses lists an Invalid error's fields and reasons: "spec.x: reason; spec.y: reason".
func invalidCauses(status metav1.Status) string {
	if status.Details == nil || len(status.Details.Causes) == 0 {
		return status.Message
	}
	causes := make([]string, 0, len(status.Details.Causes))
	for _, c := range status.Details.Causes {
		msg := c.Message
		if c.Field != "" && !strings.HasPrefix(msg, c.Field) {
			msg = c.Field + ": " + msg
		}
		causes = append(causes, msg)
	}
	return strings.Join(causes, "; ")
}

func isNetworkError(err error) bool {
	var ue *url.Error
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.As(err, &oe)
}

// oneLine joins the lines of s with "; " so an error is one line, and makes it printable
// (no escape sequences from the cluster or a token server reach the terminal).
func oneLine(s string) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return printable(strings.Join(slicesDeleteEmpty(lines), "; "))
}

func slicesDeleteEmpty(ss []string) []string {
	out := ss[:0]
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// quoteList quotes each of ss and joins them with ", ".
func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// errSilent is a failure that the command has already explained on its output (check's
// "denied"): Main exits 1 without printing an error line.
var errSilent = errors.New("failed")

// silentFailure returns the error of a command that printed its own verdict and must
// exit 1.
func silentFailure() error { return errSilent }
