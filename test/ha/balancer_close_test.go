package ha

import (
	"net"
	"testing"
	"time"
)

// TestBalancerAwaitingPeerClose: a client connection the balancer ended (its backend
// closed) counts until the client closes its end too, as TestFailover's gate relies on.
func TestBalancerAwaitingPeerClose(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			_ = c.Close() // the backend dies at once
		}
	}()
	lb, err := startBalancer([]string{backend.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lb.close() }()

	client, err := net.Dial("tcp", lb.addr())
	if err != nil {
		t.Fatal(err)
	}
	waitFor := func(want int, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := lb.awaitingPeerClose()
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d connections awaiting the peer's close, want %d", what, n, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(1, "the balancer ended the client's connection, the client has not closed")
	_ = client.Close()
	waitFor(0, "the client closed its end")
}
