package testenv

import (
	"net"
	"slices"
	"strconv"
	"testing"
)

// TestFreeAddrs: the addresses are distinct loopback ports below the ephemeral range
// (where the kernel's range leaves room), and each can be bound.
func TestFreeAddrs(t *testing.T) {
	addrs, err := FreeAddrs(20)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 20 || len(slices.Compact(slices.Sorted(slices.Values(addrs)))) != 20 {
		t.Fatalf("FreeAddrs(20) = %v, want 20 distinct addresses", addrs)
	}
	low := ephemeralLow()
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("address %q: not a loopback host:port (%v)", a, err)
		}
		if p, _ := strconv.Atoi(port); low > 11024 && (p < 10000 || p >= low) {
			t.Errorf("port %d not in [10000, %d), below the ephemeral range", p, low)
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("%s is not free: %v", a, err)
			continue
		}
		_ = ln.Close()
	}
	port, err := FreePort()
	if err != nil || port <= 0 {
		t.Fatalf("FreePort() = %d, %v", port, err)
	}
}
