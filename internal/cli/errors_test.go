package cli

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

var credentials = schema.GroupResource{Group: "iam.keysmith.dev", Resource: "apicredentials"}

func TestKubeError(t *testing.T) {
	webhookDenial := `admission webhook "vapicredential-v1alpha1.iam.keysmith.dev" denied the request: apicredentials.iam.keysmith.dev "ci-bot" is forbidden: you may not grant platform-api/admin: ask for RBAC verb "grant" on apidefinitions/admin named "platform-api" in namespace "team-a"`
	invalidDenial := apierrors.NewInvalid(schema.GroupKind{Group: "iam.keysmith.dev", Kind: "APICredential"}, "ci-bot", field.ErrorList{field.Forbidden(field.NewPath("spec", "scope", "account"), "naming account other needs assume")})
	invalidDenial.ErrStatus.Message = `admission webhook "vapicredential-v1alpha1.iam.keysmith.dev" denied the request: ` + invalidDenial.ErrStatus.Message
	vapDenial := `ValidatingAdmissionPolicy 'keysmith-status' with binding 'keysmith-status' denied request: only the operator writes status.clientID`
	forbiddenWith := func(msg string) error {
		err := apierrors.NewForbidden(credentials, "ci-bot", errors.New("x"))
		err.ErrStatus.Message = msg
		return err
	}
	for _, tc := range []struct {
		name  string
		err   error
		doing string
		want  string
	}{
		{"the webhook's denial, unchanged", forbiddenWith(webhookDenial), "create credential", webhookDenial},
		{"the webhook's field denial, unchanged", invalidDenial, "create credential", invalidDenial.ErrStatus.Message},
		{"a ValidatingAdmissionPolicy's denial, unchanged", forbiddenWith(vapDenial), "patch credential", vapDenial},
		{"RBAC", forbiddenWith(`apicredentials.iam.keysmith.dev is forbidden: User "bob" cannot create resource "apicredentials" in API group "iam.keysmith.dev" in the namespace "team-a"`), `create credential "ci-bot" in namespace "team-a"`,
			`cannot create credential "ci-bot" in namespace "team-a": user "bob" may not create apicredentials.iam.keysmith.dev in namespace "team-a": ask a cluster admin for RBAC verb "create" on apicredentials.iam.keysmith.dev in namespace "team-a"`},
		{"RBAC, cluster-wide", forbiddenWith(`apidefinitions.iam.keysmith.dev is forbidden: User "system:serviceaccount:ci:bot" cannot list resource "apidefinitions" in API group "iam.keysmith.dev" at the cluster scope`), "list the APIs of the catalog",
			`cannot list the APIs of the catalog: user "system:serviceaccount:ci:bot" may not list apidefinitions.iam.keysmith.dev cluster-wide: ask a cluster admin for RBAC verb "list" on apidefinitions.iam.keysmith.dev cluster-wide`},
		{"not found", apierrors.NewNotFound(credentials, "ci-bot"), "read credential",
			`cannot read credential: apicredentials.iam.keysmith.dev "ci-bot" not found: check the name and the namespace (-n)`},
		{"already exists", apierrors.NewAlreadyExists(credentials, "ci-bot"), "create credential",
			`cannot create credential: apicredentials.iam.keysmith.dev "ci-bot" already exists: pick another name, or change the existing one`},
		{"conflict", apierrors.NewConflict(credentials, "ci-bot", errors.New("the object has been modified")), "rotate credential",
			`cannot rotate credential: it changed while the command ran: run the command again`},
		{"invalid: the field and the reason", apierrors.NewInvalid(schema.GroupKind{Group: "iam.keysmith.dev", Kind: "APICredential"}, "ci-bot", field.ErrorList{
			field.Invalid(field.NewPath("spec", "rotation", "gracePeriod"), "9000h", "spec.rotation.gracePeriod must be between 0s and 720h"),
		}), "rotate credential",
			`cannot rotate credential: invalid: spec.rotation.gracePeriod: Invalid value: "9000h": spec.rotation.gracePeriod must be between 0s and 720h: fix the value named and run the command again`},
		{"unauthorized", apierrors.NewUnauthorized("Unauthorized"), "list the credentials",
			`cannot list the credentials: the API server did not accept your credentials: log in again, or check --kubeconfig, --context and --token`},
		{"CRDs missing", &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "iam.keysmith.dev", Kind: "APICredential"}, SearchedVersions: []string{"v1alpha1"}}, "list the credentials",
			`cannot list the credentials: the keysmith CRDs are not installed in this cluster: install keysmith first (docs/install.md), or check --context`},
		{"unreachable", &url.Error{Op: "Get", URL: "https://127.0.0.1:1/api", Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}}, "list the credentials",
			`cannot list the credentials: cannot reach the Kubernetes API server: Get "https://127.0.0.1:1/api": dial tcp: connect: connection refused: check --kubeconfig, --context and --server`},
		{"a user error passes", userError("credential \"x\" not found in namespace \"a\"", "see them"), "anything", `credential "x" not found in namespace "a": see them`},
		{"several lines become one", fmt.Errorf("first line\nsecond line\n"), "do it", `cannot do it: first line; second line`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := kubeError(tc.err, tc.doing).Error()
			if got != tc.want {
				t.Fatalf("kubeError =\n  %s\nwant\n  %s", got, tc.want)
			}
		})
	}
}

func TestPrintErrorIsOneLine(t *testing.T) {
	var b bytes.Buffer
	printError(&b, apierrors.NewInvalid(schema.GroupKind{Group: "iam.keysmith.dev", Kind: "APICredential"}, "ci-bot", field.ErrorList{
		field.Required(field.NewPath("spec", "apis"), "at least one\nAPI"),
		field.Invalid(field.NewPath("spec", "scope", "workspaces"), "EU", "must be a DNS label"),
	}))
	out := b.String()
	if !strings.HasPrefix(out, "error: ") || strings.Count(out, "\n") != 1 || strings.ContainsAny(out, "{}") {
		t.Fatalf("printError wrote %q", out)
	}
	b.Reset()
	printError(&b, silentFailure())
	if b.Len() != 0 {
		t.Fatalf("a silent failure printed %q", b.String())
	}
}

func TestMainExitsOneWithOneLine(t *testing.T) {
	t.Setenv("KUBECONFIG", t.TempDir()+"/none")
	for _, args := range [][]string{
		{"no-such-command"},
		{"list", "--no-such-flag"},
		{"list", "extra"},
		{"status"},
		{"list", "-o", "wide"},
		{"list", "--server", "http://127.0.0.1:1"},
		{"completion", "tcsh"},
	} {
		var out, errOut bytes.Buffer
		code := Main(args, Streams{In: &bytes.Buffer{}, Out: &out, ErrOut: &errOut})
		if code != 1 || !strings.HasPrefix(errOut.String(), "error: ") || strings.Count(errOut.String(), "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut.String())
		}
		if strings.Contains(errOut.String(), "goroutine") || strings.Contains(errOut.String(), "Usage:") {
			t.Errorf("%v: stderr has a stack or usage: %q", args, errOut.String())
		}
	}
	var out bytes.Buffer
	if code := Main([]string{"version"}, Streams{In: &bytes.Buffer{}, Out: &out, ErrOut: &out}); code != 0 || !strings.HasPrefix(out.String(), "kubectl-keysmith ") {
		t.Fatalf("version: exit %d, %q", code, out.String())
	}
}
