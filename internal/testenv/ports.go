package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// FreeAddrs returns n distinct loopback addresses (127.0.0.1:<port>) whose ports are free
// now, for processes a test starts. The ports are drawn below the kernel's ephemeral range,
// so that no outbound connection (of the processes, the API server, the test) takes one
// between now and the process's bind, as happens to a port that a Listen on port 0 picked
// and released; each stays bound until all are chosen, so that no two are the same.
func FreeAddrs(n int) ([]string, error) {
	low := ephemeralLow()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for tries := 0; len(lns) < n && tries < 1000; tries++ {
		port := 0 // the kernel's choice, should the ephemeral range start too low
		if low > 11024 {
			port = 10000 + rand.IntN(low-11024)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		lns = append(lns, ln)
	}
	if len(lns) < n {
		return nil, fmt.Errorf("found %d free ports of %d", len(lns), n)
	}
	addrs := make([]string, n)
	for i, ln := range lns {
		addrs[i] = ln.Addr().String()
	}
	return addrs, nil
}

// FreePort returns one loopback port that is free now, as FreeAddrs chooses it.
func FreePort() (int, error) {
	addrs, err := FreeAddrs(1)
	if err != nil {
		return 0, err
	}
	_, port, err := net.SplitHostPort(addrs[0])
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}

// ephemeralLow is the first port of Linux's ephemeral range, or 0 if unknown.
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 0
	}
	low, _ := strconv.Atoi(fields[0])
	return low
}
