package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and returns its serial.
func writeCert(t *testing.T, certPath, keyPath string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "token-server"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Write to temporary files and rename, as kubelet's atomic Secret updates do.
	for path, block := range map[string]*pem.Block{certPath: {Type: "CERTIFICATE", Bytes: der}, keyPath: {Type: "PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(path+".tmp", pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServeTLSReloadsCertificates: the token server serves HTTPS with the certificate on
// disk and picks up a renewed one without a restart.
func TestServeTLSReloadsCertificates(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeCert(t, certPath, keyPath, 1)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	certs, err := certwatcher.New(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = certs.Start(ctx) }()
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	done := make(chan error, 1)
	go func() { done <- serve(config{listen: addr}, h, certs)(ctx) }()

	serial := func() (int64, error) {
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // we read the served certificate
		}}
		resp, err := c.Get("https://" + addr + "/healthz")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
	}
	waitFor := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got, err := serial()
			if err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("served certificate serial %d (err %v), want %d", got, err, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor(1)
	writeCert(t, certPath, keyPath, 2)
	waitFor(2)

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v on shutdown", err)
	}
}

// TestServeTLSAsksForClientCertificatesForTokenReview: with --tokenreview-client-ca-file
// the listener asks every client for a certificate (which TokenReview then verifies) and
// still serves clients that send none; without it, it asks for none.
func TestServeTLSAsksForClientCertificatesForTokenReview(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeCert(t, certPath, keyPath, 1)
	clientCert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := certwatcher.New(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	sawCert := func(cfg config) (withCert, without bool) {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg.listen = ln.Addr().String()
		ln.Close()
		ctx, cancel := context.WithCancel(context.Background())
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if len(r.TLS.PeerCertificates) > 0 {
				_, _ = w.Write([]byte("cert"))
			}
		})
		done := make(chan error, 1)
		go func() { done <- serve(cfg, h, certs)(ctx) }()
		defer func() { cancel(); <-done }()
		get := func(cert []tls.Certificate) bool {
			c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: cert}, //nolint:gosec // a test server's own certificate
			}}
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				resp, err := c.Get("https://" + cfg.listen + "/")
				if err == nil {
					defer resp.Body.Close()
					b := make([]byte, 4)
					n, _ := resp.Body.Read(b)
					return string(b[:n]) == "cert"
				}
				if time.Now().After(deadline) {
					t.Fatalf("GET over TLS: %v", err)
				}
			}
		}
		return get([]tls.Certificate{clientCert}), get(nil)
	}
	if withCert, without := sawCert(config{reviewClientCA: "ca.pem"}); !withCert || without {
		t.Errorf("with --tokenreview-client-ca-file: certificate seen %v (want true), without one %v (want false)", withCert, without)
	}
	if withCert, _ := sawCert(config{}); withCert {
		t.Error("without --tokenreview-client-ca-file the listener asked for a client certificate")
	}
}
