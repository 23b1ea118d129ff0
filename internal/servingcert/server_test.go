package servingcert

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// startRecorder is a webhook.Server that records whether Start was called.
type startRecorder struct {
	webhook.Server
	started chan struct{}
}

func (s *startRecorder) Start(ctx context.Context) error {
	close(s.started)
	<-ctx.Done()
	return nil
}

// keyPair returns a certificate and key as cert-controller issues them, and a second key.
func keyPair(t *testing.T) (certPEM, keyPEM, otherKeyPEM []byte) {
	t.Helper()
	factory := &rotator.CertRotator{CAName: "test-ca", DNSName: "localhost", ExtKeyUsages: &[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	now := time.Now()
	ca, err := factory.CreateCACert(now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err = factory.CreateCertPEM(ca, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, otherKeyPEM, err = factory.CreateCertPEM(ca, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, otherKeyPEM
}

func TestWaitingServerStartsOnlyWithAKeyPair(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, otherKeyPEM := keyPair(t)
	inner := &startRecorder{started: make(chan struct{})}
	s := newWaitingServer(inner, dir, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()

	notStarted := func(why string) {
		t.Helper()
		// Two polls of the files, without the server starting.
		select {
		case <-inner.started:
			t.Fatalf("the server started %s", why)
		case <-time.After(2*filePollInterval + 100*time.Millisecond):
		}
	}
	notStarted("without files")
	if err := os.WriteFile(filepath.Join(dir, CertKey), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyKey), otherKeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	notStarted("with a key that is not the certificate's")
	if err := os.WriteFile(filepath.Join(dir, KeyKey), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inner.started:
	case <-time.After(time.Minute):
		t.Fatal("the server did not start with a valid key pair")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Start returned %v", err)
	}
}

func TestWaitingServerEndsWithItsContextBeforeTheFiles(t *testing.T) {
	inner := &startRecorder{started: make(chan struct{})}
	s := newWaitingServer(inner, t.TempDir(), logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start returned %v, want nil (the manager is stopping)", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Start did not return when its context ended")
	}
	select {
	case <-inner.started:
		t.Fatal("the server started without files")
	default:
	}
}

func TestCertificateDNSNames(t *testing.T) {
	got := Certificate{Service: "keysmith-webhook-service", ExtraDNSNames: []string{"localhost"}}.DNSNames("ops")
	want := []string{"keysmith-webhook-service.ops.svc", "keysmith-webhook-service.ops.svc.cluster.local", "localhost"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}
