package servingcert

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
)

// The rotator keeps the caBundle of the one webhook configuration current: it lists and
// watches webhook configurations (a cluster-scoped informer cannot be narrowed by name)
// but may update only keysmith's. The Secrets it reads, creates and updates are covered
// by the manager's secrets rules (controllers/apicredential_controller.go); its own
// informer of Secrets is scoped to the operator's namespace.
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=get;list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=update,resourceNames=keysmith-validating-webhook
//
// The token server's issuer also writes the public ConfigMap of its CA (TokenServerIssuer.
// CAConfigMap), in the operator's namespace: the Role the signing key controller's markers
// already grant there.
// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps,verbs=get;create;update

// FieldOwner is the field manager of the caBundle the rotator writes into the webhook
// configuration, and of the Secrets the manager creates.
const FieldOwner = "keysmith-manager"

// Certificate names one serving certificate: the Secret it lives in and the Service its
// clients reach it through.
type Certificate struct {
	// Secret is the name of the Secret, in Options.Namespace, holding tls.crt, tls.key,
	// ca.crt and ca.key.
	Secret string
	// Service is the name of the Service in Options.Namespace; the certificate is valid
	// for <Service>.<namespace>.svc and <Service>.<namespace>.svc.cluster.local.
	Service string
	// ExtraDNSNames are further names the certificate is valid for (a cluster domain
	// other than cluster.local, or localhost in tests).
	ExtraDNSNames []string
}

// DNSNames returns the names the certificate is issued for, the Service's first.
func (c Certificate) DNSNames(namespace string) []string {
	svc := c.Service + "." + namespace + ".svc"
	return append([]string{svc, svc + ".cluster.local"}, c.ExtraDNSNames...)
}

// Options configure the serving certificates of the manager's webhook server and of the
// token server.
type Options struct {
	// Namespace is the operator's namespace, where both Secrets live.
	Namespace string
	// Webhook is the webhook server's certificate; its CA goes into the caBundle of
	// every webhook of WebhookConfiguration.
	Webhook Certificate
	// WebhookConfiguration names the ValidatingWebhookConfiguration whose caBundle is kept
	// current.
	WebhookConfiguration string
	// WebhookCertDir is the directory the webhook Secret's tls.crt and tls.key are
	// mounted in (the webhook server's CertDir).
	WebhookCertDir string
	// TokenServer is the token server's certificate. Its Secret is not mounted in the
	// manager; see TokenServerIssuer.
	TokenServer Certificate
	// TokenServerCAConfigMap names the ConfigMap in Namespace that gets the token server's
	// ca.crt (see TokenServerIssuer.CAConfigMap); empty for none.
	TokenServerCAConfigMap string
	// CheckInterval is how often the token server's certificate is checked; zero means
	// DefaultCheckInterval. (The webhook's is also checked on every change of its Secret.)
	CheckInterval time.Duration
}

// DefaultCheckInterval is how often the token server's certificate is checked.
const DefaultCheckInterval = 10 * time.Minute

// Validity of the certificates (cert-controller's defaults, stated here so that the
// token server's certificate follows the same policy as the webhook's).
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 365 * 24 * time.Hour
	// renewBefore is how long before a certificate expires it is replaced.
	renewBefore = 90 * 24 * time.Hour
)

// Setup provisions and rotates both serving certificates through mgr: it creates the
// two Secrets when missing (with a direct client, before the manager starts: the
// rotator only reads them, and its Start fails when one is absent), then registers
// cert-controller's rotator for the webhook's certificate and a TokenServerIssuer for
// the token server's. Both run on the leader only; every replica serves the webhook
// once its certificate files are mounted (see NewWebhookServer).
func Setup(ctx context.Context, mgr manager.Manager, opts Options) error {
	if opts.Namespace == "" || opts.Webhook.Secret == "" || opts.Webhook.Service == "" ||
		opts.TokenServer.Secret == "" || opts.TokenServer.Service == "" || opts.WebhookConfiguration == "" {
		return errors.New("serving certificates: namespace, Secret and Service names and the webhook configuration are required")
	}
	direct, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return err
	}
	for _, name := range []string{opts.Webhook.Secret, opts.TokenServer.Secret} {
		if err := EnsureSecret(ctx, direct, types.NamespacedName{Namespace: opts.Namespace, Name: name}); err != nil {
			return err
		}
	}
	names := opts.Webhook.DNSNames(opts.Namespace)
	if err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      types.NamespacedName{Namespace: opts.Namespace, Name: opts.Webhook.Secret},
		CertDir:        opts.WebhookCertDir,
		CAName:         "keysmith-webhook-ca",
		CAOrganization: "keysmith",
		DNSName:        names[0],
		ExtraDNSNames:  names[1:],
		// Closed by the rotator once the certificate is mounted and the caBundle injected;
		// nothing waits on it (the webhook server waits for the files itself), but the
		// rotator closes it, so it must exist.
		IsReady:                make(chan struct{}),
		Webhooks:               []rotator.WebhookInfo{{Name: opts.WebhookConfiguration, Type: rotator.Validating}},
		FieldOwner:             FieldOwner,
		RequireLeaderElection:  true,
		ExtKeyUsages:           &[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		CaCertDuration:         caValidity,
		ServerCertDuration:     serverValidity,
		LookaheadInterval:      renewBefore,
		RotationCheckFrequency: 12 * time.Hour,
		ControllerName:         "keysmith-webhook-cert",
	}); err != nil {
		return fmt.Errorf("webhook certificate rotator: %w", err)
	}
	return mgr.Add(&TokenServerIssuer{
		Client:        direct,
		Secret:        types.NamespacedName{Namespace: opts.Namespace, Name: opts.TokenServer.Secret},
		KeepSecrets:   []types.NamespacedName{{Namespace: opts.Namespace, Name: opts.Webhook.Secret}},
		DNSNames:      opts.TokenServer.DNSNames(opts.Namespace),
		CAConfigMap:   opts.TokenServerCAConfigMap,
		CheckInterval: opts.CheckInterval,
		Log:           mgr.GetLogger().WithName("token-server-cert"),
	})
}

// EnsureSecret creates the named Secret, empty and of type Opaque, unless it exists.
// Replicas starting together may race: the loser's AlreadyExists is success.
func EnsureSecret(ctx context.Context, c client.Client, key types.NamespacedName) error {
	err := c.Get(ctx, key, &corev1.Secret{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading Secret %s: %w", key, err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: key.Namespace, Name: key.Name,
			Labels: map[string]string{"app.kubernetes.io/name": "keysmith", "app.kubernetes.io/managed-by": "keysmith-manager"},
		},
		Type: corev1.SecretTypeOpaque,
	}
	if err := c.Create(ctx, secret, client.FieldOwner(FieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating Secret %s: %w", key, err)
	}
	return nil
}
