package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// TestMetricsServeRuntimeAndProcess: the token server's /metrics carries, besides its
// own metrics, the Go runtime's heap and the process's resident memory, which soak and
// scale runs read.
func TestMetricsServeRuntimeAndProcess(t *testing.T) {
	srv := tokenserver.New(tokenserver.NewStore(), tokenserver.Options{Issuer: "https://keysmith.example", Registry: newRegistry()})
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	body, _ := io.ReadAll(rec.Body)
	for _, name := range []string{
		"go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_goroutines",
		"process_resident_memory_bytes", "keysmith_tokenserver_credentials",
	} {
		found := false
		for line := range strings.Lines(string(body)) {
			if strings.HasPrefix(line, name+" ") {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("/metrics has no sample of %s", name)
		}
	}
}
