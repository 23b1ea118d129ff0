package tokenserver

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// CAFile is a pool of CAs read from a PEM bundle on disk and read again when the file
// changes (a ConfigMap volume updated in place), so a new CA needs no restart. A bundle
// that no longer parses keeps the CAs last read, and says so in the log, once.
type CAFile struct {
	path string
	log  logr.Logger
	pool atomic.Pointer[x509.CertPool]
	last []byte
	// Interval is how often Start looks at the file. Default 10 seconds.
	Interval time.Duration
}

// NewCAFile reads the PEM bundle at path; it fails when the file cannot be read or holds
// no certificate.
func NewCAFile(path string, log logr.Logger) (*CAFile, error) {
	f := &CAFile{path: path, log: log, Interval: 10 * time.Second}
	if err := f.reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// CertPool returns the CAs last read (what Options.ReviewClientCAs takes).
func (f *CAFile) CertPool() *x509.CertPool { return f.pool.Load() }

// Start reads the file again every Interval until ctx ends (a manager.Runnable).
func (f *CAFile) Start(ctx context.Context) error {
	t := time.NewTicker(f.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := f.reload(); err != nil {
				f.log.Error(err, "keeping the CAs last read", "file", f.path)
			}
		}
	}
}

func (f *CAFile) reload() error {
	pem, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("reading CA bundle %s: %w", f.path, err)
	}
	if f.pool.Load() != nil && bytes.Equal(pem, f.last) {
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		f.last = pem // said once, not at every look until the file changes again
		return fmt.Errorf("CA bundle %s holds no PEM certificate", f.path)
	}
	f.pool.Store(pool)
	if f.last != nil {
		f.log.Info("read a changed CA bundle", "file", f.path)
	}
	f.last = pem
	return nil
}

// NeedLeaderElection is false: every replica checks its own TokenReview callers.
func (f *CAFile) NeedLeaderElection() bool { return false }
