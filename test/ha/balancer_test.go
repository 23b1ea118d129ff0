package ha

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keysmith-dev/keysmith/internal/testenv/proc"
)

// balancer is a TCP load balancer in front of the managers' webhook servers, standing in
// for the webhook Service: each new connection goes to the next backend in turn, and a
// backend whose connect fails is skipped, as a Service's endpoints drop a dead pod. It
// sees bytes, not requests: the API server keeps one HTTP/2 connection per webhook
// client, so a backend serves admission for as long as that connection lives.
type balancer struct {
	ln       net.Listener
	backends []string
	next     atomic.Uint64

	mu    sync.Mutex
	stats map[string]*backendStats
	open  map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// backendStats counts what the balancer did with one backend.
type backendStats struct {
	// conns is the number of connections proxied to the backend, active of them still open.
	conns, active int
	// refused counts connects that failed, and so went to the next backend.
	refused int
}

// startBalancer listens on a free port of 127.0.0.1 and proxies to backends.
func startBalancer(backends []string) (*balancer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &balancer{ln: ln, backends: backends, stats: map[string]*backendStats{}, open: map[net.Conn]struct{}{}}
	for _, addr := range backends {
		b.stats[addr] = &backendStats{}
	}
	b.wg.Go(b.serve)
	return b, nil
}

// addr is the balancer's host:port.
func (b *balancer) addr() string { return b.ln.Addr().String() }

// startAt makes the next new connection go to backends[i] first.
func (b *balancer) startAt(i int) { b.next.Store(uint64(i)) }

func (b *balancer) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.wg.Go(func() { b.proxy(c) })
	}
}

// proxy connects c to the first backend, in turn from the next one, that accepts.
func (b *balancer) proxy(c net.Conn) {
	start := b.next.Add(1) - 1
	for i := range len(b.backends) {
		addr := b.backends[(int(start)+i)%len(b.backends)]
		bc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			b.count(addr, func(s *backendStats) { s.refused++ })
			continue
		}
		if !b.track(c, bc) {
			return
		}
		b.count(addr, func(s *backendStats) { s.conns++; s.active++ })
		pipe(c, bc)
		b.count(addr, func(s *backendStats) { s.active-- })
		b.untrack(c, bc)
		return
	}
	_ = c.Close()
}

// pipe copies both ways until either side ends, then closes both: a backend that dies
// ends its client's connection at once, as a connection to a dead pod ends.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	_ = a.Close()
	_ = b.Close()
	<-done
}

func (b *balancer) count(addr string, f func(*backendStats)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(b.stats[addr])
}

// track records open connections so that close ends them; it refuses once closed.
func (b *balancer) track(conns ...net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open == nil {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		b.open[c] = struct{}{}
	}
	return true
}

func (b *balancer) untrack(conns ...net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range conns {
		delete(b.open, c)
	}
}

// awaitingPeerClose counts the balancer's client connections that it has closed and whose
// peer (the API server) has not closed its end yet: sockets on the balancer's port in
// TCP state FIN_WAIT1 or FIN_WAIT2. Until the peer closes, it may still pick such a
// connection for its next request, and that write fails (broken pipe).
func (b *balancer) awaitingPeerClose() int {
	n := 0
	for _, s := range proc.TCPSockets(b.ln.Addr().(*net.TCPAddr).Port) {
		if s.State == proc.TCPFinWait1 || s.State == proc.TCPFinWait2 {
			n++
		}
	}
	return n
}

// snapshot returns a copy of a backend's counters; zero for an address it does not balance to.
func (b *balancer) snapshot(addr string) backendStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.stats[addr]; ok {
		return *s
	}
	return backendStats{}
}

// close stops accepting, ends every proxied connection and waits for the proxies.
func (b *balancer) close() error {
	err := b.ln.Close()
	b.mu.Lock()
	for c := range b.open {
		_ = c.Close()
	}
	b.open = nil
	b.mu.Unlock()
	b.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
