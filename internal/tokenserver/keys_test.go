package tokenserver

import (
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/keysmith-dev/keysmith/internal/signingkey"
)

// TestRetentionShorterThanTokenLifetimeIsReported: the manager records its retention on
// the key Secret; a token server whose tokens may outlive it (up to --max-token-lifetime,
// which a credential's tokenPolicy.lifetime can reach) says so.
func TestRetentionShorterThanTokenLifetimeIsReported(t *testing.T) {
	now := time.Now()
	key, err := signingkey.Generate(now, now)
	if err != nil {
		t.Fatal(err)
	}
	data, err := (&signingkey.Set{Keys: []signingkey.Key{key}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		retention string
		max       time.Duration // --max-token-lifetime; zero: the token lifetime
		wantError bool
	}{{"5m", 0, true}, {"10m", 0, true}, {"24h", 0, false}, {"", 0, false}, {"garbage", 0, false},
		{"1h", 2 * time.Hour, true}, {"2h", 2 * time.Hour, true}, {"24h", 2 * time.Hour, false}} {
		var logs []string
		log := funcr.New(func(prefix, args string) { logs = append(logs, args) }, funcr.Options{})
		s := New(NewStore(), Options{Issuer: "https://keysmith.example", TokenLifetime: 10 * time.Minute, MaxTokenLifetime: tc.max, Log: log})
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{signingkey.RetentionAnnotation: tc.retention}},
			Data:       map[string][]byte{signingkey.DataKey: data},
		}
		if err := s.SetKeysFromSecret(secret); err != nil {
			t.Fatal(err)
		}
		got := strings.Contains(strings.Join(logs, "\n"), "--max-token-lifetime is not shorter")
		if got != tc.wantError {
			t.Errorf("retention %q, max lifetime %s: reported=%v, want %v (logs %v)", tc.retention, tc.max, got, tc.wantError, logs)
		}
	}
}
