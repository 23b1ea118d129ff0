package tokenserver_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

func ptrTo[T any](v T) *T { return &v }

func keyOf(o *iamv1alpha1.APICredential) types.NamespacedName {
	return types.NamespacedName{Namespace: o.Namespace, Name: o.Name}
}

func timePtr(t time.Time) *metav1.Time { m := metav1.NewTime(t); return &m }

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// equalJSON compares two values by their JSON encoding.
func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	var va, vb any
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	return reflect.DeepEqual(va, vb)
}

// httpRequest builds a request; a path without a scheme is for handlers called directly.
func httpRequest(method, target, body string) *http.Request {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if strings.HasPrefix(target, "http") {
		req.RequestURI = ""
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return req
}

func record(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// metricSamples returns /metrics' sample lines of the named metrics, in order.
func (f *fixture) metricSamples(names ...string) []string {
	f.t.Helper()
	resp, err := http.Get(f.ts.URL + "/metrics")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSuffix(line, "\n")
		for _, n := range names {
			if strings.HasPrefix(line, n+" ") || strings.HasPrefix(line, n+"{") {
				out = append(out, line)
			}
		}
	}
	return out
}
