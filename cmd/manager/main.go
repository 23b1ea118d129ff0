// Command manager runs the keysmith operator: it issues, rotates and retires the client
// credentials declared by APICredential resources.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/controllers"
	"github.com/keysmith-dev/keysmith/internal/recorder"
	"github.com/keysmith-dev/keysmith/internal/servingcert"
	"github.com/keysmith-dev/keysmith/internal/signingkey"
	kswebhook "github.com/keysmith-dev/keysmith/internal/webhook"
)

func main() {
	var (
		listen          listenFlags
		leaderElect     bool
		election        electionFlags
		defaultTokenURL string
		signing         signingKeyFlags
		hooks           webhookFlags
		certs           servingCertFlags
		workers         int
	)
	flag.StringVar(&listen.metrics, "metrics-bind-address", ":8080", "address the Prometheus metrics endpoint binds to; \"0\" disables it")
	flag.StringVar(&listen.probe, "health-probe-bind-address", ":8081", "address the /healthz and /readyz probes bind to")
	flag.StringVar(&listen.pprof, "pprof-bind-address", "0", "address net/http/pprof binds to, for profiling (plain HTTP, unauthenticated: bind it to localhost); \"0\" disables it")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader so that only one replica reconciles at a time")
	flag.DurationVar(&election.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long non-leaders wait, after the last renewal, before they try to take the leader lease")
	flag.DurationVar(&election.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader keeps retrying to renew its lease before it gives up leading (and stops)")
	flag.DurationVar(&election.retryPeriod, "leader-elect-retry-period", 2*time.Second, "how long candidates wait between attempts to take or renew the leader lease")
	flag.StringVar(&defaultTokenURL, "token-url", "", "token endpoint URL written into credential Secrets when no granted API names its own")
	flag.StringVar(&signing.namespace, "signing-key-namespace", cmp.Or(os.Getenv("POD_NAMESPACE"), "keysmith-system"), "namespace of the Secret of token signing keys (the operator's own)")
	flag.StringVar(&signing.name, "signing-key-secret", "keysmith-signing-keys", "name of the Secret of token signing keys")
	flag.StringVar(&signing.bindingName, "binding-key-secret", "keysmith-binding-key", "name of the Secret, in the signing key namespace, of the keys that bind credential Secrets to their credentials (back it up with that namespace)")
	flag.DurationVar(&signing.policy.RotationPeriod, "signing-key-rotation-period", 720*time.Hour, "how long a signing key signs before its successor takes over")
	flag.DurationVar(&signing.policy.PrePublish, "signing-key-prepublish", time.Hour, "how long a new signing key is published in the JWKS before it signs")
	flag.DurationVar(&signing.policy.Retention, "signing-key-retention", 24*time.Hour, "how long a retired signing key stays published; must exceed the token servers' --max-token-lifetime (and --token-lifetime)")
	flag.Func("signing-algorithm", "JWS algorithm of the signing keys the manager creates and rotates: ES256 (default), RS256 (RSA 2048) or EdDSA (Ed25519); a change pre-publishes a key of the new algorithm at once, which signs after --signing-key-prepublish", func(v string) error {
		signing.policy.Algorithm = v
		return signingkey.ValidAlgorithm(v)
	})
	flag.BoolVar(&hooks.enabled, "enable-webhooks", true, "serve the admission webhooks (catalog checks, no escalation, deletion protection)")
	flag.StringVar(&hooks.host, "webhook-host", "", "address the webhook server binds to; empty for all")
	flag.IntVar(&hooks.port, "webhook-port", 9443, "port the webhook server listens on")
	flag.StringVar(&hooks.managerUsername, "manager-username", "", "the manager's own user as the API server names it (system:serviceaccount:<namespace>:<name>), whose create of a workspace's default credential admission admits without grants when it is exactly what the namespace's iam.keysmith.dev/default-apis lists; empty: asked of the API server at start (SelfSubjectReview)")
	flag.StringVar(&hooks.certDir, "webhook-cert-dir", "", "directory with tls.crt and tls.key for the webhook server (default: controller-runtime's)")
	flag.BoolVar(&certs.enabled, "serving-certs", false, "provision and rotate the webhook's and the token server's serving certificates (in --signing-key-namespace), keep the caBundle of --webhook-configuration current, and start the webhook server once its certificate files are in --webhook-cert-dir; false when cert-manager issues them")
	flag.StringVar(&certs.opts.Webhook.Secret, "webhook-cert-secret", "keysmith-webhook-server-cert", "name of the Secret of the webhook server's certificate (with --serving-certs)")
	flag.StringVar(&certs.opts.Webhook.Service, "webhook-service", "keysmith-webhook-service", "name of the webhook Service; the certificate is for <service>.<namespace>.svc[.cluster.local] (with --serving-certs)")
	flag.Func("serving-cert-dns-names", "comma-separated extra DNS names of the webhook certificate, e.g. for a cluster domain other than cluster.local (with --serving-certs)", dnsNames(&certs.opts.Webhook.ExtraDNSNames))
	flag.StringVar(&certs.opts.WebhookConfiguration, "webhook-configuration", "keysmith-validating-webhook", "name of the ValidatingWebhookConfiguration whose caBundle is kept current (with --serving-certs)")
	flag.StringVar(&certs.opts.TokenServer.Secret, "token-server-cert-secret", "keysmith-token-server-tls", "name of the Secret of the token server's certificate (with --serving-certs)")
	flag.StringVar(&certs.opts.TokenServer.Service, "token-server-service", "keysmith-token-server", "name of the token server Service; the certificate is for <service>.<namespace>.svc[.cluster.local] (with --serving-certs)")
	flag.StringVar(&certs.opts.TokenServerCAConfigMap, "token-server-ca-configmap", "keysmith-token-server-ca", "name of the ConfigMap that gets a copy of the token server's ca.crt (and not the CA's key), for its clients and monitoring; empty for none (with --serving-certs)")
	flag.Func("token-server-cert-dns-names", "comma-separated extra DNS names of the token server certificate (with --serving-certs)", dnsNames(&certs.opts.TokenServer.ExtraDNSNames))
	flag.IntVar(&workers, "max-concurrent-reconciles", 4, "how many APICredentials are reconciled at once (issue throughput; docs/benchmarks.md \"Scale\")")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	if err := run(listen, leaderElect, election, defaultTokenURL, signing, hooks, certs, workers); err != nil {
		log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

// newScheme returns the scheme with the Kubernetes and keysmith types the manager uses.
func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := iamv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// cacheOptions are the controllers' cache options (managedFields stripped from every
// object by DefaultTransform, credential Secrets trimmed to what the decision reads),
// with ConfigMaps cached only in the operator's namespace: the manager's RBAC for them
// is a Role there (config/rbac).
func cacheOptions(namespace string) cache.Options {
	opts := controllers.CacheOptions()
	if opts.ByObject == nil {
		opts.ByObject = map[client.Object]cache.ByObject{}
	}
	opts.ByObject[&corev1.ConfigMap{}] = cache.ByObject{Namespaces: map[string]cache.Config{namespace: {}}}
	return opts
}

// listenFlags are the addresses of the manager's HTTP endpoints besides the webhook.
type listenFlags struct {
	metrics, probe, pprof string
}

// signingKeyFlags locate the Secret of token signing keys and set its rotation policy.
type signingKeyFlags struct {
	namespace, name string
	policy          signingkey.Policy
	// bindingName names the Secret of credential binding keys, in the same namespace.
	bindingName string
}

// electionFlags time the leader election (see leaderelection.LeaderElectionConfig).
type electionFlags struct {
	leaseDuration, renewDeadline, retryPeriod time.Duration
}

// servingCertFlags configure the serving certificates the manager provisions itself.
type servingCertFlags struct {
	enabled bool
	opts    servingcert.Options
}

// dnsNames parses a comma-separated list of DNS names into names.
func dnsNames(names *[]string) func(string) error {
	return func(v string) error {
		*names = nil
		for n := range strings.SplitSeq(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				*names = append(*names, n)
			}
		}
		return nil
	}
}

// webhookFlags configure the admission webhook server.
type webhookFlags struct {
	enabled       bool
	host, certDir string
	port          int
	// managerUsername is the manager's own user; empty: asked with a SelfSubjectReview.
	managerUsername string
}

func run(listen listenFlags, leaderElect bool, election electionFlags, defaultTokenURL string, signing signingKeyFlags, hooks webhookFlags, certs servingCertFlags, workers int) error {
	if workers < 1 {
		return fmt.Errorf("--max-concurrent-reconciles must be at least 1, got %d", workers)
	}
	scheme := newScheme()
	webhookOpts := webhook.Options{Host: hooks.host, Port: hooks.port, CertDir: hooks.certDir}
	webhookServer := webhook.NewServer(webhookOpts)
	if certs.enabled {
		webhookServer = servingcert.NewWebhookServer(webhookOpts, ctrl.Log.WithName("webhook-server"))
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: listen.metrics},
		HealthProbeBindAddress: listen.probe,
		PprofBindAddress:       listen.pprof,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "manager.iam.keysmith.dev",
		// The lease lives in the operator's namespace, also out of a cluster (where
		// controller-runtime could not infer one).
		LeaderElectionNamespace: signing.namespace,
		LeaseDuration:           &election.leaseDuration,
		RenewDeadline:           &election.renewDeadline,
		RetryPeriod:             &election.retryPeriod,
		Cache:                   cacheOptions(signing.namespace),
		WebhookServer:           webhookServer,
	})
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	if certs.enabled {
		certs.opts.Namespace = signing.namespace
		certs.opts.WebhookCertDir = servingcert.CertDir(hooks.certDir)
		if err := servingcert.Setup(ctx, mgr, certs.opts); err != nil {
			return err
		}
	}
	// The manager's events: written once each, nothing kept (internal/recorder), where
	// mgr.GetEventRecorder's broadcaster would hold every event for 6 to 12 minutes.
	events := recorder.New(mgr.GetClient(), scheme, "keysmith-manager", ctrl.Log.WithName("events"))
	if err := mgr.Add(events); err != nil {
		return err
	}
	bindingKeys := &controllers.BindingKeyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Clock:     clock.RealClock{},
		Namespace: signing.namespace,
		Name:      signing.bindingName,
		Recorder:  events,
	}
	if err := bindingKeys.SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&controllers.APICredentialReconciler{
		Client:          mgr.GetClient(),
		APIReader:       mgr.GetAPIReader(),
		Scheme:          scheme,
		Clock:           clock.RealClock{},
		Recorder:        events,
		DefaultTokenURL: defaultTokenURL,
		BindingKeys:     bindingKeys,

		MaxConcurrentReconciles: workers,
	}).SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	if err := (&controllers.WorkspaceReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  events,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&controllers.SigningKeyReconciler{
		Client:    mgr.GetClient(),
		Clock:     clock.RealClock{},
		Namespace: signing.namespace,
		Name:      signing.name,
		Policy:    signing.policy,
		Recorder:  events,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if hooks.enabled {
		managerUser, err := managerUsername(ctx, mgr.GetClient(), hooks.managerUsername)
		if err != nil {
			return err
		}
		credentials := &kswebhook.APICredentialValidator{Reader: mgr.GetClient(), Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), ManagerUsername: managerUser}
		if err := credentials.SetupWithManager(mgr); err != nil {
			return err
		}
		if err := (&kswebhook.NamespaceValidator{Credentials: credentials}).SetupWithManager(mgr); err != nil {
			return err
		}
		if err := (&kswebhook.APIDefinitionValidator{Reader: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// managerUsername returns flag, or when it is empty the user the API server authenticates
// the manager as (a SelfSubjectReview, which every authenticated user may create).
func managerUsername(ctx context.Context, c client.Client, flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	review := &authenticationv1.SelfSubjectReview{}
	if err := c.Create(ctx, review); err != nil {
		return "", fmt.Errorf("asking the API server who the manager is (set --manager-username to skip it): %w", err)
	}
	if review.Status.UserInfo.Username == "" {
		return "", errors.New("the API server's SelfSubjectReview names no user: set --manager-username")
	}
	return review.Status.UserInfo.Username, nil
}
