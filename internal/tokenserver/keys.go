package tokenserver

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/keysmith-dev/keysmith/internal/signingkey"
)

// SetKeysFromSecret loads the signing keys from the Secret the operator manages. The
// newest active key signs; every published key verifies and appears in the JWKS, so
// tokens signed before a rotation stay valid until they expire.
func (s *Server) SetKeysFromSecret(secret *corev1.Secret) error {
	set, err := signingkey.Parse(secret.Data[signingkey.DataKey])
	if err != nil {
		return fmt.Errorf("signing key Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return s.SetKeys(set)
}

// SetKeys swaps in a new set of signing keys.
func (s *Server) SetKeys(set *signingkey.Set) error {
	now := s.opts.Clock.Now()
	jwks, err := set.JWKS()
	if err != nil {
		return err
	}
	ring := &keyRing{verify: map[string]*ecdsa.PublicKey{}, jwks: jwks}
	for _, k := range set.Published(now) {
		ring.verify[headerFor(k.ID)] = &k.Private.PublicKey
	}
	if k, ok := set.Signing(now); ok {
		ring.signing = &signingKey{kid: k.ID, header: headerFor(k.ID), key: k.Private}
	}
	if len(ring.verify) == 0 {
		return errors.New("the signing key set is empty")
	}
	s.keys.ring.Store(ring)

	// A pre-published key starts to sign at its activation time without any change to
	// the Secret: switch to it then.
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	if s.keys.activation != nil {
		s.keys.activation.Stop()
		s.keys.activation = nil
	}
	if at, ok := set.NextActivation(now); ok {
		s.keys.activation = time.AfterFunc(at.Sub(now), func() {
			if err := s.SetKeys(set); err != nil {
				s.opts.Log.Error(err, "activating the next signing key")
			}
		})
	}
	return nil
}
