package tokenserver

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the token server's Prometheus metrics. Label children used on the request
// path are resolved once (see instrument), so recording costs an atomic add.
type metrics struct {
	responses        *prometheus.CounterVec
	tokensIssued     prometheus.Counter
	authFailures     prometheus.Counter
	tokenCacheHits   prometheus.Counter
	tokenCacheMisses prometheus.Counter
	usagePatches     *prometheus.CounterVec
	// revocationWrites counts the writes of revoked tokens to status by result, and
	// revocationsPending is how many credentials' revocations the last flush left
	// unwritten: held by this replica only, until a retry writes them.
	revocationWrites   *prometheus.CounterVec
	revocationsPending prometheus.Gauge
}

// statusCodes are the codes whose counters instrument resolves ahead of time.
var statusCodes = []int{200, 400, 401, 403, 405, 413, 415, 429, 500, 503}

func newMetrics(reg prometheus.Registerer, store *Store) *metrics {
	m := &metrics{
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keysmith_tokenserver_responses_total", Help: "Responses by handler and HTTP status code.",
		}, []string{"handler", "code"}),
		tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keysmith_tokenserver_tokens_issued_total", Help: "Access tokens issued.",
		}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keysmith_tokenserver_client_auth_failures_total", Help: "Failed client authentications.",
		}),
		tokenCacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keysmith_tokenserver_token_cache_hits_total", Help: "Bearer tokens served from the verified-token cache.",
		}),
		tokenCacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keysmith_tokenserver_token_cache_misses_total", Help: "Bearer tokens whose signature was verified.",
		}),
		usagePatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keysmith_tokenserver_usage_patches_total", Help: "Status patches of credential usage, by result.",
		}, []string{"result"}),
		revocationWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keysmith_tokenserver_revocation_writes_total", Help: "Writes of revoked tokens to credential status, by result.",
		}, []string{"result"}),
		revocationsPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keysmith_tokenserver_revocations_pending",
			Help: "Credentials whose revoked tokens the last write left unwritten (held by this replica only until retried).",
		}),
	}
	credentials := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keysmith_tokenserver_credentials", Help: "Issued credentials in the token server's cache.",
	}, func() float64 { return float64(store.Len()) })
	reg.MustRegister(m.responses, m.tokensIssued, m.authFailures, m.tokenCacheHits, m.tokenCacheMisses, m.usagePatches,
		m.revocationWrites, m.revocationsPending, credentials)
	return m
}

// instrument turns a handler that returns the status code it answered into an
// http.HandlerFunc that counts responses by handler name and code.
func (m *metrics) instrument(name string, h func(http.ResponseWriter, *http.Request) int) http.HandlerFunc {
	counters := make(map[int]prometheus.Counter, len(statusCodes))
	for _, code := range statusCodes {
		counters[code] = m.responses.WithLabelValues(name, strconv.Itoa(code))
	}
	return func(w http.ResponseWriter, r *http.Request) {
		code := h(w, r)
		if c, ok := counters[code]; ok {
			c.Inc()
			return
		}
		m.responses.WithLabelValues(name, strconv.Itoa(code)).Inc()
	}
}
