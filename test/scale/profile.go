package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// profiler takes CPU profiles of the API server (its /debug/pprof, for system:masters,
// with --profiling) and of the manager (its --pprof-bind-address) while a phase runs,
// into dir, one file per process and phase.
// A nil profiler takes none.
type profiler struct {
	hc   *http.Client
	host string
	dir  string
	// manager, when set, is the manager's pprof address (host:port): each round is
	// profiled in the manager too.
	manager string
	// seconds is each profile's length: shorter than the phase it profiles, so that
	// it holds that phase's work only.
	seconds int
}

func newProfiler(admin *rest.Config, dir string, seconds int, manager string) (*profiler, error) {
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(admin)
	if err != nil {
		return nil, err
	}
	return &profiler{hc: hc, host: strings.TrimSuffix(admin.Host, "/"), dir: dir, seconds: seconds, manager: manager}, nil
}

// start begins a profile of the API server named name and returns a function that
// waits for it to be written and returns its error.
func (p *profiler) start(ctx context.Context, name string) (wait func() error) {
	if p == nil {
		return func() error { return nil }
	}
	done := make(chan error, 2)
	go func() { done <- p.take(ctx, p.hc, p.host, "apiserver-"+name) }()
	withManager := p.manager != "" && strings.HasPrefix(name, "round")
	if withManager {
		go func() { done <- p.take(ctx, http.DefaultClient, "http://"+p.manager, "manager-"+name) }()
	}
	return func() error {
		err := <-done
		if withManager {
			err = errors.Join(err, <-done)
		}
		return err
	}
}

// take writes the CPU profile that host's /debug/pprof/profile answers into dir as
// name.pprof.
func (p *profiler) take(ctx context.Context, hc *http.Client, host, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.seconds)*time.Second+time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, host+"/debug/pprof/profile?seconds="+strconv.Itoa(p.seconds), nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("profiling %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profiling %s: %s", name, resp.Status)
	}
	path := filepath.Join(p.dir, name+".pprof")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Printf("scale: CPU profile %s (%ds) in %s\n", name, p.seconds, path)
	return nil
}
