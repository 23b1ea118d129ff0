package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestMaxTokenLifetime(t *testing.T) {
	for _, tc := range []struct {
		name          string
		life, max     time.Duration
		explicit      bool
		want          time.Duration
		wantRunErrSub string
	}{
		{name: "defaults", life: 10 * time.Minute, max: defaultMaxTokenLifetime, want: time.Hour},
		{name: "a default lifetime over 1h raises the default max", life: 2 * time.Hour, max: defaultMaxTokenLifetime, want: 2 * time.Hour},
		{name: "explicit", life: 10 * time.Minute, max: 12 * time.Hour, explicit: true, want: 12 * time.Hour},
		{name: "explicit below --token-lifetime is refused", life: 2 * time.Hour, max: time.Hour, explicit: true, want: time.Hour,
			wantRunErrSub: "--max-token-lifetime must be between --token-lifetime (2h0m0s) and 24h"},
		{name: "over 24h is refused", life: 10 * time.Minute, max: 25 * time.Hour, explicit: true, want: 25 * time.Hour,
			wantRunErrSub: "--max-token-lifetime must be between"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config{issuer: "https://keysmith.example", tokenCacheBytes: 1, tokenLifetime: tc.life, maxTokenLifetime: tc.max}
			cfg.maxTokenLifetime = maxTokenLifetime(cfg, tc.explicit)
			if cfg.maxTokenLifetime != tc.want {
				t.Fatalf("maxTokenLifetime = %v, want %v", cfg.maxTokenLifetime, tc.want)
			}
			if tc.wantRunErrSub == "" {
				return // a valid configuration goes on to connect to a cluster: not run here
			}
			err := run(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantRunErrSub) {
				t.Fatalf("run: %v, want an error containing %q", err, tc.wantRunErrSub)
			}
		})
	}
}
