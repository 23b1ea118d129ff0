package testenv

import (
	"syscall"
	"testing"
	"time"
)

// CPUPerOp reports the process's CPU time (user and system) per operation beside ns/op:
// on a machine shared with other work, wall time per operation inflates, CPU time much
// less. Call it before the loop; call the returned func after it.
func CPUPerOp(b *testing.B) func() {
	start := processCPU()
	return func() { b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op") }
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
