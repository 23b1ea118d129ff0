package proc

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestParseStat: the command name may hold spaces and parentheses; utime and stime are
// fields 14 and 15, in clock ticks; the start time field 22; a line cut short is an error,
// not zeros.
func TestParseStat(t *testing.T) {
	const rest = " S 4242 100 100 0 -1 4194560 500 0 0 0 %s 0 0 20 0 12 0 9876 123456789 2048"
	for _, tc := range []struct {
		line string
		want Stat
		ok   bool
	}{
		{"31337 (kube-apiserver)" + fmt.Sprintf(rest, "150 25"), Stat{Comm: "kube-apiserver", State: 'S', PPID: 4242, CPU: 1750 * time.Millisecond, StartTime: 9876}, true},
		{"7 (a (b) c)" + fmt.Sprintf(rest, "1 2"), Stat{Comm: "a (b) c", State: 'S', PPID: 4242, CPU: 30 * time.Millisecond, StartTime: 9876}, true},
		{"7 (stopped)" + strings.Replace(fmt.Sprintf(rest, "1 2"), " S ", " t ", 1), Stat{Comm: "stopped", State: 't', PPID: 4242, CPU: 30 * time.Millisecond, StartTime: 9876}, true},
		{"7 (etcd) S 4242 100", Stat{}, false},
		{"7 (etcd) S 4242 100 100 0 -1 4194560 500 0 0 0 1 2 0 0 20 0 12 0", Stat{}, false}, // no start time
		{"7 (etcd)" + strings.Replace(fmt.Sprintf(rest, "1 2"), " S ", " SS ", 1), Stat{}, false},
		{"7 (etcd)" + strings.Replace(fmt.Sprintf(rest, "1 2"), " 9876 ", " -1 ", 1), Stat{}, false},
		{"7 etcd S 4242", Stat{}, false},
		{"7 (etcd)" + fmt.Sprintf(rest, "x 2"), Stat{}, false},
	} {
		got, err := ParseStat(tc.line)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseStat(%q) = %+v, %v; want %+v, ok %v", tc.line, got, err, tc.want, tc.ok)
		}
	}
}

// TestReadStatOfThisProcess: this process's own stat names its parent and a CPU time
// that does not go down.
func TestReadStatOfThisProcess(t *testing.T) {
	before, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if before.PPID != os.Getppid() {
		t.Errorf("PPID = %d, want %d", before.PPID, os.Getppid())
	}
	// The state is the main thread's, which may be running or asleep.
	if !strings.ContainsRune("RSD", rune(before.State)) || before.StartTime == 0 {
		t.Errorf("State %q, StartTime %d: want R, S or D and a start time", before.State, before.StartTime)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.CPU < before.CPU {
		t.Errorf("CPU went down: %v then %v", before.CPU, after.CPU)
	}
	if after.StartTime != before.StartTime {
		t.Errorf("StartTime moved: %d then %d", before.StartTime, after.StartTime)
	}
}
