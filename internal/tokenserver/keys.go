package tokenserver

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
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
	s.checkRetention(secret.Annotations[signingkey.RetentionAnnotation])
	return s.SetKeys(set)
}

// checkRetention logs an error when tokens may live (--max-token-lifetime: a credential's
// tokenPolicy.lifetime can reach it) longer than the manager keeps a retired
// key published: a token signed just before a rotation would then fail verification
// before its exp. It is reported, not fixed: the two settings belong to two binaries.
func (s *Server) checkRetention(annotation string) {
	retention, err := time.ParseDuration(annotation)
	if err != nil || retention <= 0 {
		return
	}
	if longest := max(s.opts.TokenLifetime, s.opts.MaxTokenLifetime); longest >= retention {
		s.opts.Log.Error(nil, "--max-token-lifetime is not shorter than the manager's --signing-key-retention: tokens signed just before a key rotation will be refused before they expire",
			"maxTokenLifetime", longest.String(), "signingKeyRetention", retention.String())
	}
}

// SetKeys swaps in a new set of signing keys.
func (s *Server) SetKeys(set *signingkey.Set) error {
	now := s.opts.Clock.Now()
	jwks, err := set.JWKS()
	if err != nil {
		return err
	}
	ring := &keyRing{verify: map[string]*verifyKey{}, jwks: jwks}
	for _, k := range set.Keys {
		v, ok := newVerifyKey(k.Algorithm, k.Private.Public())
		if !ok {
			return fmt.Errorf("signing key %s is not a %s key", k.ID, k.Algorithm)
		}
		ring.verify[headerFor(k.Algorithm, k.ID)] = v
	}
	if k, ok := set.Signing(now); ok {
		h := headerFor(k.Algorithm, k.ID)
		sk := &signingKey{kid: k.ID, header: h, sigLen: ring.verify[h].sigLen}
		switch priv := k.Private.(type) {
		case *ecdsa.PrivateKey:
			sk.ec = priv
		case *rsa.PrivateKey:
			sk.rsa = priv
		case ed25519.PrivateKey:
			sk.ed = priv
		}
		ring.signing = sk
	}
	if len(ring.verify) == 0 {
		return errors.New("the signing key set is empty")
	}
	s.swapRing(ring)

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

// SetVerifyKeysFromConfigMap loads the public keys a verify-only server verifies with
// from the ConfigMap the operator publishes beside the signing key Secret.
func (s *Server) SetVerifyKeysFromConfigMap(cm *corev1.ConfigMap) error {
	s.checkRetention(cm.Annotations[signingkey.RetentionAnnotation])
	if err := s.SetVerifyKeys([]byte(cm.Data[signingkey.PublicDataKey])); err != nil {
		return fmt.Errorf("public key ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	return nil
}

// SetVerifyKeys swaps in public keys only, from a JWKS: the server verifies tokens and
// serves the JWKS, and cannot sign.
func (s *Server) SetVerifyKeys(jwks []byte) error {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwks, &set); err != nil {
		return fmt.Errorf("%s: %w", signingkey.PublicDataKey, err)
	}
	ring := &keyRing{verify: map[string]*verifyKey{}}
	public := jose.JSONWebKeySet{}
	for _, k := range set.Keys {
		if !k.IsPublic() || k.KeyID == "" || len(k.KeyID) > maxKidLen || (k.Use != "" && k.Use != "sig") {
			continue // not a key keysmith signs with
		}
		// The key verifies only under its declared alg, and only if its type fits it.
		v, ok := newVerifyKey(k.Algorithm, k.Key)
		if !ok {
			continue
		}
		ring.verify[headerFor(k.Algorithm, k.KeyID)] = v
		public.Keys = append(public.Keys, k.Public())
	}
	if len(ring.verify) == 0 {
		return fmt.Errorf("the public key set holds no key keysmith signs with (%v)", signingkey.Algorithms)
	}
	var err error
	if ring.jwks, err = json.Marshal(public); err != nil {
		return err
	}
	s.swapRing(ring)
	return nil
}

// swapRing makes ring the current key set and drops the cached tokens signed by a key
// that left it. The drop frees their memory; correctness does not wait for it, since a
// lookup refuses an entry whose key is gone (verifyTokenFrom).
func (s *Server) swapRing(ring *keyRing) {
	old := s.keys.ring.Swap(ring)
	if old == nil {
		return
	}
	for header := range old.verify {
		if ring.verify[header] == nil || !ring.verify[header].Equal(old.verify[header]) {
			s.tokens.evict(s.opts.Clock.Now(), s.keys.published, 0)
			return
		}
	}
}
