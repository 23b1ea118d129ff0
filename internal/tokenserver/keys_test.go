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
// the key Secret; a token server whose tokens outlive it says so.
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
		wantError bool
	}{{"5m", true}, {"10m", true}, {"24h", false}, {"", false}, {"garbage", false}} {
		var logs []string
		log := funcr.New(func(prefix, args string) { logs = append(logs, args) }, funcr.Options{})
		s := New(NewStore(), Options{Issuer: "https://keysmith.example", TokenLifetime: 10 * time.Minute, Log: log})
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{signingkey.RetentionAnnotation: tc.retention}},
			Data:       map[string][]byte{signingkey.DataKey: data},
		}
		if err := s.SetKeysFromSecret(secret); err != nil {
			t.Fatal(err)
		}
		got := strings.Contains(strings.Join(logs, "\n"), "--token-lifetime is not shorter")
		if got != tc.wantError {
			t.Errorf("retention %q: reported=%v, want %v (logs %v)", tc.retention, got, tc.wantError, logs)
		}
	}
}
