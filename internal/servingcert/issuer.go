package servingcert

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
)

// Keys of the certificate Secrets (cert-controller's).
const (
	CertKey   = "tls.crt"
	KeyKey    = "tls.key"
	CACertKey = "ca.crt"
	caKeyKey  = "ca.key"
)

// TokenServerIssuer keeps a CA and a serving certificate signed by it in a Secret, for
// the token server, with the certificates and validity policy of cert-controller's
// rotator (its CreateCACert, CreateCertPEM and ValidCert).
//
// Why not a second rotator: a CertRotator's Start waits for CertDir/tls.crt to exist,
// the file its Secret is mounted as, and after about 17 minutes of backoff returns an
// error that stops the manager. The token server's Secret is mounted only in the token
// server's Pods, never in the manager's, so there is no file to wait for; pointing CertDir
// at the webhook's files would tie the token server's certificate to the webhooks being
// enabled and mounted. The token server needs no caBundle injection either: its clients
// (the API server's authentication webhook, the APIs' sidecars) are given ca.crt.
//
// It runs on the leader only. It checks the Secret at start (retrying until it succeeds)
// and every CheckInterval, reads it live (no cache of Secrets), and writes it with the
// resourceVersion it read, so a concurrent writer makes it retry rather than lose data.
type TokenServerIssuer struct {
	// Client reads and updates the Secret.
	Client client.Client
	// Secret is the Secret the certificate is kept in. Created empty when missing (also
	// when deleted while the manager runs), then filled.
	Secret types.NamespacedName
	// KeepSecrets are other Secrets this issuer creates again, empty, when they are found
	// missing at a check: the webhook's, whose rotator (cert-controller) fills a Secret
	// that exists but ignores one that was deleted.
	KeepSecrets []types.NamespacedName
	// DNSNames are the names the certificate is valid for; the first is its common name
	// and the one its validity is checked against.
	DNSNames []string
	// CheckInterval is how often the certificate is checked; zero means DefaultCheckInterval.
	CheckInterval time.Duration
	// CAConfigMap, when set, names a ConfigMap in the Secret's namespace that gets a copy
	// of ca.crt (key ca.crt) and nothing else: what clients of the token server, the
	// ServiceMonitor and trust distribution read, so that none of them needs read access
	// to the Secret, which also holds the CA's private key.
	CAConfigMap string
	// Log receives what was done, never a key.
	Log logr.Logger
}

// NeedLeaderElection makes the issuer run on the elected leader only.
func (i *TokenServerIssuer) NeedLeaderElection() bool { return true }

// Start issues the certificate when needed, then checks it every CheckInterval until ctx ends.
func (i *TokenServerIssuer) Start(ctx context.Context) error {
	if len(i.DNSNames) == 0 {
		return errors.New("token server certificate: no DNS names")
	}
	interval := i.CheckInterval
	if interval <= 0 {
		interval = DefaultCheckInterval
	}
	// At start, retry with backoff until the Secret is good: the token server waits for it.
	backoff := wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 30, Cap: 30 * time.Second}
	_ = wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		if err := i.Ensure(ctx, time.Now()); err != nil {
			i.Log.Error(err, "token server certificate not ready, retrying", "secret", i.Secret)
			return false, nil
		}
		return true, nil
	})
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			if err := i.Ensure(ctx, time.Now()); err != nil {
				i.Log.Error(err, "checking the token server certificate", "secret", i.Secret)
			}
		}
	}
}

// Ensure creates the Secret and the KeepSecrets when missing, then reads the Secret and,
// when its CA or its certificate is missing, invalid, not for DNSNames[0], or expires
// within renewBefore of now, replaces them: a new CA and certificate when the CA must go,
// else a new certificate from the same CA (so clients that trust ca.crt keep trusting it).
func (i *TokenServerIssuer) Ensure(ctx context.Context, now time.Time) error {
	for _, key := range append([]types.NamespacedName{i.Secret}, i.KeepSecrets...) {
		if err := EnsureSecret(ctx, i.Client, key); err != nil {
			return err
		}
	}
	secret := &corev1.Secret{}
	if err := i.Client.Get(ctx, i.Secret, secret); err != nil {
		return fmt.Errorf("reading Secret %s: %w", i.Secret, err)
	}
	factory := &rotator.CertRotator{
		CAName:         "keysmith-token-server-ca",
		CAOrganization: "keysmith",
		DNSName:        i.DNSNames[0],
		ExtraDNSNames:  i.DNSNames[1:],
		ExtKeyUsages:   &[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	lookahead := now.Add(renewBefore)
	caPEM, caKeyPEM := secret.Data[CACertKey], secret.Data[caKeyKey]
	var ca *rotator.KeyPairArtifacts
	if ok, _ := rotator.ValidCert(caPEM, caPEM, caKeyPEM, factory.CAName, nil, lookahead); ok {
		var err error
		if ca, err = parseCA(caPEM, caKeyPEM); err != nil {
			ca = nil
		}
	}
	rotateCA := ca == nil
	if !rotateCA {
		if ok, _ := rotator.ValidCert(caPEM, secret.Data[CertKey], secret.Data[KeyKey], factory.DNSName, factory.ExtKeyUsages, lookahead); ok {
			return i.publishCA(ctx, caPEM)
		}
	}
	begin := now.Add(-time.Hour)
	if rotateCA {
		var err error
		if ca, err = factory.CreateCACert(begin, now.Add(caValidity)); err != nil {
			return fmt.Errorf("creating the token server CA: %w", err)
		}
	}
	certPEM, keyPEM, err := factory.CreateCertPEM(ca, begin, now.Add(serverValidity))
	if err != nil {
		return fmt.Errorf("creating the token server certificate: %w", err)
	}
	if secret.Data == nil {
		secret.Data = map[string][]byte{}
	}
	secret.Data[CACertKey], secret.Data[caKeyKey] = ca.CertPEM, ca.KeyPEM
	secret.Data[CertKey], secret.Data[KeyKey] = certPEM, keyPEM
	if err := i.Client.Update(ctx, secret, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("writing Secret %s: %w", i.Secret, err)
	}
	i.Log.Info("issued the token server certificate", "secret", i.Secret, "newCA", rotateCA,
		"dnsNames", i.DNSNames, "notAfter", now.Add(serverValidity).UTC().Format(time.RFC3339))
	return i.publishCA(ctx, ca.CertPEM)
}

// publishCA writes caPEM into the CAConfigMap (creating it when missing), unless it holds
// it already.
func (i *TokenServerIssuer) publishCA(ctx context.Context, caPEM []byte) error {
	if i.CAConfigMap == "" {
		return nil
	}
	key := types.NamespacedName{Namespace: i.Secret.Namespace, Name: i.CAConfigMap}
	cm := &corev1.ConfigMap{}
	err := i.Client.Get(ctx, key, cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{
				"app.kubernetes.io/name": "keysmith", "app.kubernetes.io/managed-by": "keysmith-manager",
			}},
			Data: map[string]string{CACertKey: string(caPEM)},
		}
		if err := i.Client.Create(ctx, cm, client.FieldOwner(FieldOwner)); err != nil {
			return fmt.Errorf("creating ConfigMap %s: %w", key, err)
		}
	case err != nil:
		return fmt.Errorf("reading ConfigMap %s: %w", key, err)
	case cm.Data[CACertKey] == string(caPEM) && len(cm.Data) == 1 && len(cm.BinaryData) == 0:
		return nil
	default:
		cm.Data, cm.BinaryData = map[string]string{CACertKey: string(caPEM)}, nil
		if err := i.Client.Update(ctx, cm, client.FieldOwner(FieldOwner)); err != nil {
			return fmt.Errorf("writing ConfigMap %s: %w", key, err)
		}
	}
	i.Log.Info("published the token server CA", "configMap", key)
	return nil
}

// parseCA decodes the CA certificate and its PKCS #1 RSA key, as cert-controller writes them.
func parseCA(certPEM, keyPEM []byte) (*rotator.KeyPairArtifacts, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("CA certificate or key is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, errors.New("CA certificate does not parse")
	}
	key, err := x509.ParsePKCS1PrivateKey(kb.Bytes)
	if err != nil {
		// Not wrapped: the error of a key parser could quote key material.
		return nil, errors.New("CA key does not parse")
	}
	return &rotator.KeyPairArtifacts{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}
