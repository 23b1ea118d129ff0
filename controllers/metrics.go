package controllers

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// Credential states reported by the keysmith_credentials gauge.
const (
	StateActive        = "active"
	StateInactive      = "inactive"
	StateExpired       = "expired"
	StateInvalid       = "invalid"
	StateSecretMissing = "secret_missing"
	StateSecretProblem = "secret_problem"
	StatePending       = "pending"
	StateTerminating   = "terminating"
)

var (
	issuedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keysmith_credentials_issued_total", Help: "Client secrets issued for new credentials.",
	})
	rotatedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keysmith_credentials_rotated_total", Help: "Client secrets rotated (keyVersion bumps and automatic rotations).",
	})
	adoptedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keysmith_credentials_adopted_total", Help: "Secrets adopted after a crash or a lost status instead of minting twice.",
	})
	stateDesc = prometheus.NewDesc("keysmith_credentials",
		"APICredentials by state, read from the manager's cache at scrape time.", []string{"state"}, nil)

	// stateReader is the cache the state collector reads; the latest manager's wins.
	stateReader atomic.Pointer[client.Reader]
)

func init() {
	ctrlmetrics.Registry.MustRegister(issuedTotal, rotatedTotal, adoptedTotal, stateCollector{})
}

// stateCollector counts credentials by state at scrape time, so the gauge can never
// drift from the cluster: nothing is incremented or forgotten.
type stateCollector struct{}

func (stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- stateDesc }

func (stateCollector) Collect(ch chan<- prometheus.Metric) {
	r := stateReader.Load()
	if r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list iamv1alpha1.APICredentialList
	// Read-only, so the cache's objects themselves: a deep copy of every credential at
	// every scrape would be garbage the size of the cache, twice a minute.
	if err := (*r).List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		// Not started yet or shutting down: report nothing rather than fail the whole
		// scrape (a missing series is what alerting on absent() is for).
		return
	}
	counts := map[string]int{StateActive: 0, StateInactive: 0, StateExpired: 0, StateInvalid: 0,
		StateSecretMissing: 0, StateSecretProblem: 0, StatePending: 0, StateTerminating: 0}
	for i := range list.Items {
		counts[credentialState(&list.Items[i])]++
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, float64(n), state)
	}
}

// credentialState maps the Ready condition to a state of the gauge; a credential being
// deleted is terminating whatever Ready says (token servers refuse it).
func credentialState(cred *iamv1alpha1.APICredential) string {
	if cred.DeletionTimestamp != nil {
		return StateTerminating
	}
	c := meta.FindStatusCondition(cred.Status.Conditions, iamv1alpha1.ConditionReady)
	if c == nil {
		return StatePending
	}
	switch c.Reason {
	case iamv1alpha1.ReasonIssued:
		return StateActive
	case iamv1alpha1.ReasonInactive:
		return StateInactive
	case iamv1alpha1.ReasonExpired:
		return StateExpired
	case iamv1alpha1.ReasonInvalidSpec:
		return StateInvalid
	case iamv1alpha1.ReasonSecretMissing:
		return StateSecretMissing
	case iamv1alpha1.ReasonSecretModified, iamv1alpha1.ReasonSecretConflict:
		return StateSecretProblem
	}
	return StatePending
}
