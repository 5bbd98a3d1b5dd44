//go:build unix

package bench

import "syscall"

// SelfCPU is the CPU time of this process so far, in seconds (the bench
// process's own, and the Go benchmarks' CPU per operation).
func SelfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
