package servingcert

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// CertDir returns dir, or controller-runtime's default webhook certificate directory
// when dir is empty, so that the rotator waits for the files where the server reads them.
func CertDir(dir string) string {
	if dir != "" {
		return dir
	}
	return filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs")
}

// filePollInterval is how often NewWebhookServer's Start looks for the certificate files.
const filePollInterval = time.Second

// NewWebhookServer returns controller-runtime's webhook server for opts, whose Start
// first waits, until ctx ends, for opts.CertDir's tls.crt and tls.key to exist and form
// a key pair. The manager writes the certificate into its Secret and the kubelet mounts
// it some time later (up to its sync period); serving before that would fail, and
// controller-runtime's server returns an error that stops the manager when the files are
// missing at its start. Every replica waits for the files, not for the rotator, which
// runs on the leader only. Once started, the server re-reads renewed files by itself
// (controller-runtime's certwatcher: file events and a poll every 10 seconds; a pair
// that does not match is ignored and the previous one kept), so a renewal needs no
// restart. Until it has started, its StartedChecker fails, and with it readyz.
func NewWebhookServer(opts webhook.Options, log logr.Logger) webhook.Server {
	opts.CertDir = CertDir(opts.CertDir)
	return newWaitingServer(webhook.NewServer(opts), opts.CertDir, log)
}

// newWaitingServer wraps server so that its Start waits for dir's tls.crt and tls.key.
func newWaitingServer(server webhook.Server, dir string, log logr.Logger) *waitingServer {
	return &waitingServer{
		Server:   server,
		certFile: filepath.Join(dir, CertKey),
		keyFile:  filepath.Join(dir, KeyKey),
		log:      log,
	}
}

// waitingServer is a webhook.Server that starts once its certificate files are usable.
type waitingServer struct {
	webhook.Server
	certFile, keyFile string
	log               logr.Logger
}

// Start waits for the certificate files, then runs the server until ctx ends.
func (s *waitingServer) Start(ctx context.Context) error {
	logged := false
	err := wait.PollUntilContextCancel(ctx, filePollInterval, true, func(context.Context) (bool, error) {
		// LoadX509KeyPair's errors name files and parse failures, never key bytes; they are
		// not logged anyway, only that the files are not usable yet.
		if _, err := tls.LoadX509KeyPair(s.certFile, s.keyFile); err != nil {
			if !logged {
				s.log.Info("waiting for the webhook certificate files", "certFile", s.certFile, "keyFile", s.keyFile)
				logged = true
			}
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		// The manager is stopping before the files came: nothing was served.
		return nil
	}
	if logged {
		s.log.Info("webhook certificate files present, starting the webhook server")
	}
	return s.Server.Start(ctx)
}
