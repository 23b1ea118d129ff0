package proc

import "testing"

// TestParseTCPSocket: lines of /proc/net/tcp and tcp6 give their local port, state and
// inode; hack/dev's listener lookup keeps those in TCPListen on its port.
func TestParseTCPSocket(t *testing.T) {
	for _, tc := range []struct {
		line  string
		want  TCPSocket
		ok    bool
		inode string // the inode when the line is a listener on 18080
	}{
		// 127.0.0.1:18080 (0x46A0) listening
		{"   0: 0100007F:46A0 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0",
			TCPSocket{LocalPort: 18080, State: TCPListen, Inode: "123456"}, true, "123456"},
		// the same port, but established: not a listener
		{"   1: 0100007F:46A0 0100007F:D3C2 01 00000000:00000000 00:00000000 00000000  1000        0 123457 1 0000000000000000 20 4 30 10 -1",
			TCPSocket{LocalPort: 18080, State: 0x01, Inode: "123457"}, true, ""},
		// closed by this side, the peer not yet: FIN_WAIT2
		{"   3: 0100007F:46A0 0100007F:D3C4 05 00000000:00000000 00:00000000 00000000  1000        0 0 3 0000000000000000 20 4 30 10 -1",
			TCPSocket{LocalPort: 18080, State: TCPFinWait2, Inode: "0"}, true, ""},
		// another port
		{"   2: 0100007F:46A1 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123458 1 0000000000000000 100 0 0 10 0",
			TCPSocket{LocalPort: 18081, State: TCPListen, Inode: "123458"}, true, ""},
		// IPv6 [::]:18080
		{"   0: 00000000000000000000000000000000:46A0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 223456 1 0000000000000000 100 0 0 10 0",
			TCPSocket{LocalPort: 18080, State: TCPListen, Inode: "223456"}, true, "223456"},
		// the header
		{"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode", TCPSocket{}, false, ""},
	} {
		got, ok := ParseTCPSocket(tc.line)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseTCPSocket(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
		inode := ""
		if ok && got.State == TCPListen && got.LocalPort == 18080 {
			inode = got.Inode
		}
		if inode != tc.inode {
			t.Errorf("%q: listener inode on 18080 %q, want %q", tc.line, inode, tc.inode)
		}
	}
}
