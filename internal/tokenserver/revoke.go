package tokenserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// Token revocation (RFC 7009). A client revokes one of its own access tokens at
// POST /oauth2/revoke. The token server that answers holds the token's jti in memory until
// the token's exp (revocations) and a RevocationWriter copies it, within an interval, into
// status.revokedTokens of the credential; every replica reads that list from its credential
// cache (Credential.revoked), so the token is refused everywhere. Both are consulted by
// credentialOf: /authz, introspection (active=false) and TokenReview.
//
// Bound: a credential holds at most iamv1alpha1.MaxRevokedTokens live revocations (the
// status list's maxItems). At the bound a new revocation is refused with 503
// temporarily_unavailable and Retry-After until the soonest one expires: a live revocation
// is never dropped to make room (fail closed), and rotating the secret revokes every token
// at once.

// revoke is the revocation endpoint (RFC 7009 §2). The client authenticates as at the
// token endpoint (the same rate limiting and invalid_client for every failure). The token
// is revoked only when it is a valid access token of the authenticated client; an invalid,
// expired or unknown token or another client's answers 200 with nothing done (§2.2), so
// the endpoint tells nothing about tokens. token_type_hint is accepted and ignored: access
// tokens are the only tokens there are.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) int {
	c, token, now, addr, oerr := s.tokenFormOfClient(w, r)
	if oerr != nil {
		return writeErr(w, oerr)
	}
	claims, oerr := s.verifyTokenFrom(token, addr, now)
	if oerr != nil && oerr.status == http.StatusTooManyRequests {
		return writeErr(w, oerr) // too many invalid tokens from this address
	}
	if oerr == nil && claims.ClientID == c.ClientID && claims.Credential == c.Name && claims.ID != "" {
		if oerr := s.revocations.revoke(c, claims.ID, claims.ExpiresAt, now); oerr != nil {
			return writeErr(w, oerr)
		}
	}
	return writeBody(w, http.StatusOK, contentTypeJSON, cacheNoStore, nil)
}

// revokedBy reports whether the token with jti of credential c is revoked: in status
// (every replica's revocations, from the cache) or in this server's memory (its own,
// before the cache has them).
func (s *Server) revokedBy(c *Credential, jti string) bool {
	if _, ok := c.revoked[jti]; ok {
		return true
	}
	return s.revocations.has(c.Key, jti)
}

// revokedFrom converts status.revokedTokens into the set the store's Credential holds
// (nil when empty): jti -> exp (unix seconds).
func revokedFrom(st *iamv1alpha1.APICredentialStatus) map[string]int64 {
	if len(st.RevokedTokens) == 0 {
		return nil
	}
	m := make(map[string]int64, len(st.RevokedTokens))
	for _, t := range st.RevokedTokens {
		m[t.JTI] = t.Exp.Unix()
	}
	return m
}

// revocations are the tokens this server revoked, by credential, until they expire.
type revocations struct {
	max int
	// n counts the credentials with entries: the request path takes no lock while it is 0.
	n      atomic.Int64
	mu     sync.RWMutex
	byCred map[types.NamespacedName]*revokedSet
}

type revokedSet struct {
	// entries are jti -> exp (unix seconds).
	entries map[string]int64
	// pending are the jtis not yet written to status.
	pending map[string]bool
}

func newRevocations(max int) *revocations {
	return &revocations{max: max, byCred: map[types.NamespacedName]*revokedSet{}}
}

func (r *revocations) has(key types.NamespacedName, jti string) bool {
	if r.n.Load() == 0 {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	set := r.byCred[key]
	if set == nil {
		return false
	}
	_, ok := set.entries[jti]
	return ok
}

// revoke records the revocation of jti (expiring at exp) of credential c. Revoking a token
// twice is a no-op. At the bound (the live revocations in memory and in status together)
// it refuses with 503 and Retry-After until the soonest expires, and drops nothing.
func (r *revocations) revoke(c *Credential, jti string, exp int64, now time.Time) *oauthError {
	if _, ok := c.revoked[jti]; ok {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	set := r.byCred[c.Key]
	if set != nil {
		if _, ok := set.entries[jti]; ok {
			return nil
		}
		set.prune(now)
	}
	live, soonest := 0, int64(0)
	count := func(e int64) {
		if e > now.Unix() {
			live++
			if soonest == 0 || e < soonest {
				soonest = e
			}
		}
	}
	for _, e := range c.revoked {
		count(e)
	}
	if set != nil {
		for j, e := range set.entries {
			if _, dup := c.revoked[j]; !dup {
				count(e)
			}
		}
	}
	if live >= r.max {
		return &oauthError{status: http.StatusServiceUnavailable, code: "temporarily_unavailable",
			description: "the credential already holds " + strconv.Itoa(r.max) + " revoked tokens that have not expired; " +
				"retry once the soonest expires, or rotate the credential's secret to revoke all of its tokens",
			retryAfter: max(1, int(soonest-now.Unix()))}
	}
	if set == nil {
		set = &revokedSet{entries: map[string]int64{}, pending: map[string]bool{}}
		r.byCred[c.Key] = set
		r.n.Add(1)
	}
	set.entries[jti] = exp
	set.pending[jti] = true
	return nil
}

// prune forgets the entries that have expired.
func (set *revokedSet) prune(now time.Time) {
	for j, e := range set.entries {
		if e <= now.Unix() {
			delete(set.entries, j)
			delete(set.pending, j)
		}
	}
}

// pendingWrites returns, by credential, the revocations not yet in status, and forgets
// the credentials whose revocations have all expired.
func (r *revocations) pendingWrites(now time.Time) map[types.NamespacedName][]iamv1alpha1.RevokedToken {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out map[types.NamespacedName][]iamv1alpha1.RevokedToken
	for key, set := range r.byCred {
		set.prune(now)
		if len(set.entries) == 0 {
			delete(r.byCred, key)
			r.n.Add(-1)
			continue
		}
		for j := range set.pending {
			if out == nil {
				out = map[types.NamespacedName][]iamv1alpha1.RevokedToken{}
			}
			out[key] = append(out[key], iamv1alpha1.RevokedToken{JTI: j, Exp: metav1.Unix(set.entries[j], 0)})
		}
	}
	return out
}

// written marks revocations of key as being in status.
func (r *revocations) written(key types.NamespacedName, tokens []iamv1alpha1.RevokedToken) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if set := r.byCred[key]; set != nil {
		for _, t := range tokens {
			delete(set.pending, t.JTI)
		}
	}
}

// RevocationWriter writes the revocations of a Server into status.revokedTokens: every
// interval, at most one status patch per credential with revocations not yet written. The
// list is merged with what is there (other replicas' entries are kept, expired ones
// pruned) and written with a merge patch guarded by the resourceVersion it was read at,
// read again and retried on a conflict, so two replicas revoking at once lose nothing.
type RevocationWriter struct {
	client   client.Client // patches status
	reader   client.Reader // reads the live credential (not the cache, which may lag)
	interval time.Duration
	revs     *revocations
	metrics  *metrics
	log      logr.Logger
	now      func() time.Time
}

// NewRevocationWriter returns a writer of srv's revocations that reads credentials through
// reader (an uncached reader: the manager's APIReader) and patches status through c every
// interval.
func NewRevocationWriter(srv *Server, c client.Client, reader client.Reader, interval time.Duration) *RevocationWriter {
	return &RevocationWriter{client: c, reader: reader, interval: interval, revs: srv.revocations, metrics: srv.metrics, log: srv.opts.Log,
		now: srv.opts.Clock.Now}
}

// Start flushes every interval until ctx ends (a controller-runtime Runnable).
func (w *RevocationWriter) Start(ctx context.Context) error {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			w.Flush(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
			w.Flush(ctx)
		}
	}
}

// Flush writes every credential's pending revocations. Failures stay pending and are
// retried next time; the revocations hold on this replica meanwhile, and
// keysmith_tokenserver_revocations_pending says for how many credentials.
func (w *RevocationWriter) Flush(ctx context.Context) {
	failed := 0
	for key, tokens := range w.revs.pendingWrites(w.now()) {
		err := w.write(ctx, key, tokens)
		switch {
		case err == nil:
			w.revs.written(key, tokens)
			w.count("ok")
		case apierrors.IsNotFound(err):
			w.revs.written(key, tokens) // the credential is gone, and its tokens with it
			w.count("not_found")
		default:
			failed++
			w.count("error")
			w.log.Error(err, "writing revoked tokens to status; retrying", "credential", key)
		}
	}
	w.metrics.revocationsPending.Set(float64(failed))
}

func (w *RevocationWriter) count(result string) {
	w.metrics.revocationWrites.WithLabelValues(result).Inc()
}

// errTooManyRevoked is a merged list longer than status allows: two replicas filled the
// last places at once. Nothing is dropped; the write is retried as entries expire.
var errTooManyRevoked = errors.New("status.revokedTokens would exceed its bound; kept in memory, retried as entries expire")

const revocationWriteAttempts = 5

func (w *RevocationWriter) write(ctx context.Context, key types.NamespacedName, tokens []iamv1alpha1.RevokedToken) error {
	var err error
	for range revocationWriteAttempts {
		live := &iamv1alpha1.APICredential{}
		if err = w.reader.Get(ctx, key, live); err != nil {
			return err
		}
		merged, changed := mergeRevoked(live.Status.RevokedTokens, tokens, w.now())
		if !changed {
			return nil
		}
		if len(merged) > iamv1alpha1.MaxRevokedTokens {
			return errTooManyRevoked
		}
		body, merr := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": live.ResourceVersion},
			"status":   map[string]any{"revokedTokens": merged},
		})
		if merr != nil {
			return merr
		}
		obj := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
		err = w.client.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, body))
		if !apierrors.IsConflict(err) {
			return err
		}
	}
	return fmt.Errorf("%d conflicts in a row: %w", revocationWriteAttempts, err)
}

// mergeRevoked returns the entries of have that have not expired at now and the tokens
// not among them, ordered by exp (then jti), and whether that differs from have.
func mergeRevoked(have, tokens []iamv1alpha1.RevokedToken, now time.Time) ([]iamv1alpha1.RevokedToken, bool) {
	out := make([]iamv1alpha1.RevokedToken, 0, len(have)+len(tokens))
	seen := make(map[string]bool, len(have)+len(tokens))
	changed := false
	for _, t := range have {
		if t.Exp.Unix() <= now.Unix() {
			changed = true // pruned
			continue
		}
		seen[t.JTI] = true
		out = append(out, t)
	}
	for _, t := range tokens {
		if !seen[t.JTI] && t.Exp.Unix() > now.Unix() {
			seen[t.JTI] = true
			out = append(out, t)
			changed = true
		}
	}
	slices.SortFunc(out, func(a, b iamv1alpha1.RevokedToken) int {
		if c := a.Exp.Unix() - b.Exp.Unix(); c != 0 {
			return int(c)
		}
		switch {
		case a.JTI < b.JTI:
			return -1
		case a.JTI > b.JTI:
			return 1
		}
		return 0
	})
	return out, changed
}
