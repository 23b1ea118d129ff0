package proc

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// TCP states as /proc/net/tcp writes them (include/net/tcp_states.h).
const (
	TCPFinWait1 = 0x04
	TCPFinWait2 = 0x05
	TCPListen   = 0x0A
)

// TCPSocket is one line of /proc/net/tcp or /proc/net/tcp6.
type TCPSocket struct {
	// LocalPort is the socket's local port, State its TCP state (TCPListen, ...).
	LocalPort, State int
	// Inode is the socket's inode, as /proc/PID/fd links name it (socket:[Inode]).
	Inode string
}

// ParseTCPSocket reads one line of /proc/net/tcp{,6}; ok is false for the header line
// and anything else that is not a socket's line.
func ParseTCPSocket(line string) (s TCPSocket, ok bool) {
	// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
	f := strings.Fields(line)
	if len(f) < 10 {
		return TCPSocket{}, false
	}
	_, hexPort, found := strings.Cut(f[1], ":")
	if !found {
		return TCPSocket{}, false
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return TCPSocket{}, false
	}
	state, err := strconv.ParseUint(f[3], 16, 8)
	if err != nil {
		return TCPSocket{}, false
	}
	return TCPSocket{LocalPort: int(port), State: int(state), Inode: f[9]}, true
}

// TCPSockets returns the TCP sockets (IPv4 and IPv6) whose local port is port; a table
// that cannot be read (no IPv6, say) is skipped.
func TCPSockets(port int) []TCPSocket {
	var out []TCPSocket
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if s, ok := ParseTCPSocket(sc.Text()); ok && s.LocalPort == port {
				out = append(out, s)
			}
		}
		f.Close()
	}
	return out
}
