//go:build race

package tokenserver_test

// raceEnabled: the race detector is on. Its sync.Pool drops a share of what is put back
// on purpose, so allocation counts through pooled buffers are higher and vary.
const raceEnabled = true
