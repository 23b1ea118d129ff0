package tokenserver_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// TestCAFileFollowsItsFile: a CAFile serves the CAs of its file, reads a changed bundle
// (a ConfigMap volume updated in place) without a restart, keeps the last good CAs when
// the file stops parsing, and refuses to start on a file without a certificate.
func TestCAFileFollowsItsFile(t *testing.T) {
	first, second := newTestCert(t, nil, "first CA"), newTestCert(t, nil, "second CA")
	leafOf := func(ca testCert) *x509.Certificate {
		return newTestCert(t, &ca, "kube-apiserver", x509.ExtKeyUsageClientAuth).cert
	}
	trusts := func(f *tokenserver.CAFile, leaf *x509.Certificate) bool {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: f.CertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err == nil
	}
	path := filepath.Join(t.TempDir(), "ca.crt")
	write := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil { // as kubelet swaps a volume's files
			t.Fatal(err)
		}
	}
	pemOf := func(c testCert) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw}) }

	write([]byte("not a certificate"))
	if _, err := tokenserver.NewCAFile(path, logr.Discard()); err == nil {
		t.Fatal("a bundle without a certificate was accepted")
	}
	write(pemOf(first))
	f, err := tokenserver.NewCAFile(path, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	f.Interval = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Start(ctx) }()
	defer func() { cancel(); <-done }()
	if !trusts(f, leafOf(first)) || trusts(f, leafOf(second)) {
		t.Fatal("the first bundle's CA must be trusted, and only it")
	}

	write(pemOf(second))
	deadline := time.Now().Add(10 * time.Second)
	for !trusts(f, leafOf(second)) {
		if time.Now().After(deadline) {
			t.Fatal("the changed bundle was not read")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if trusts(f, leafOf(first)) {
		t.Error("the CA removed from the bundle is still trusted")
	}

	write([]byte("garbage"))
	time.Sleep(100 * time.Millisecond) // several intervals
	if !trusts(f, leafOf(second)) {
		t.Error("a bundle that no longer parses dropped the CAs last read")
	}
	// And the file mended, to the first CA again: read.
	write(pemOf(first))
	for deadline := time.Now().Add(10 * time.Second); !trusts(f, leafOf(first)); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the mended bundle was not read")
		}
	}
}
