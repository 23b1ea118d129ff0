package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"k8s.io/client-go/rest"
)

// sample is one scrape of counters, by the values of the labels asked for.
type sample map[string]float64

// scrape reads the Prometheus text-format counter name from url with hc and sums its
// samples by the values of keys (joined with " "), keeping only samples whose labels
// contain every entry of match. A missing metric is an empty sample.
func scrape(ctx context.Context, hc *http.Client, url, name string, match map[string]string, keys ...string) (sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	out := sample{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<22)
	prefix := []byte(name + "{")
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, prefix) {
			continue
		}
		end := bytes.LastIndexByte(line, '}')
		if end < 0 {
			continue
		}
		labels := parseLabels(string(line[len(prefix):end]))
		ok := true
		for k, v := range match {
			ok = ok && labels[k] == v
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(string(line[end+1:])), 64)
		if err != nil {
			return nil, err
		}
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = labels[k]
		}
		out[strings.Join(parts, " ")] += v
	}
	return out, sc.Err()
}

// parseLabels parses `a="x",b="y"` (label values hold no quotes in these metrics).
func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			break
		}
		key := s[:eq]
		rest := s[eq+2:]
		q := strings.IndexByte(rest, '"')
		if q < 0 {
			break
		}
		out[key] = rest[:q]
		s = strings.TrimPrefix(rest[q+1:], ",")
	}
	return out
}

// minus returns a − b per key, without the keys that did not move.
func (s sample) minus(b sample) sample {
	out := sample{}
	for k, v := range s {
		if d := v - b[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// perCredential formats s divided by n, largest first, as "key 1.00, key 0.50 (total 1.50)".
func (s sample) perCredential(n int) string {
	keys := make([]string, 0, len(s))
	total := 0.0
	for k, v := range s {
		keys = append(keys, k)
		total += v
	}
	sort.Slice(keys, func(i, j int) bool {
		if s[keys[i]] != s[keys[j]] {
			return s[keys[i]] > s[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %.2f", k, s[k]/float64(n))
	}
	if len(keys) == 0 {
		b.WriteString("none")
	}
	fmt.Fprintf(&b, " (total %.2f)", total/float64(n))
	return b.String()
}

// counters is what a round reads before and after: the API server's requests by verb,
// resource and subresource (and those that answered 409 Conflict), the requests each
// process sent by method and code (client-go's rest_client_requests_total), and the
// manager's reconciles by result.
type counters struct {
	apiserver, conflicts, manager, tokenServer, reconciles sample
}

// meter reads the counters of a run.
type meter struct {
	admin                *http.Client
	apiserverURL         string
	managerURL, tokenURL string
}

func newMeter(admin *rest.Config, metricsAddr, tokenAddr string) (*meter, error) {
	hc, err := rest.HTTPClientFor(admin)
	if err != nil {
		return nil, err
	}
	return &meter{admin: hc, apiserverURL: strings.TrimSuffix(admin.Host, "/") + "/metrics",
		managerURL: "http://" + metricsAddr + "/metrics", tokenURL: "http://" + tokenAddr + "/metrics"}, nil
}

func (m *meter) read(ctx context.Context) (counters, error) {
	var c counters
	var err error
	if c.apiserver, err = scrape(ctx, m.admin, m.apiserverURL, "apiserver_request_total", nil, "verb", "resource", "subresource"); err != nil {
		return c, err
	}
	if c.conflicts, err = scrape(ctx, m.admin, m.apiserverURL, "apiserver_request_total", map[string]string{"code": "409"}, "verb", "resource", "subresource"); err != nil {
		return c, err
	}
	if c.manager, err = scrape(ctx, http.DefaultClient, m.managerURL, "rest_client_requests_total", nil, "method", "code"); err != nil {
		return c, err
	}
	if c.reconciles, err = scrape(ctx, http.DefaultClient, m.managerURL, "controller_runtime_reconcile_total", map[string]string{"controller": "apicredential"}, "result"); err != nil {
		return c, err
	}
	// The token server's client metrics, if its /metrics serves them.
	if c.tokenServer, err = scrape(ctx, http.DefaultClient, m.tokenURL, "rest_client_requests_total", nil, "method", "code"); err != nil {
		c.tokenServer, err = nil, nil
	}
	return c, nil
}

// report prints what moved between before and after, per credential of the round.
func (before counters) report(tag string, after counters, n int) {
	fmt.Printf("%s API server requests per credential (verb resource subresource; all clients: the creators' create, the manager, the token server, this program's watches): %s\n",
		tag, after.apiserver.minus(before.apiserver).perCredential(n))
	fmt.Printf("%s API server 409 Conflict per credential: %s\n", tag, after.conflicts.minus(before.conflicts).perCredential(n))
	fmt.Printf("%s manager requests per credential (method code): %s\n", tag, after.manager.minus(before.manager).perCredential(n))
	if after.tokenServer != nil {
		fmt.Printf("%s token server requests per credential (method code): %s\n", tag, after.tokenServer.minus(before.tokenServer).perCredential(n))
	} else {
		fmt.Printf("%s token server requests: its /metrics has no rest_client_requests_total\n", tag)
	}
	fmt.Printf("%s manager reconciles per credential (result): %s\n", tag, after.reconciles.minus(before.reconciles).perCredential(n))
}
