//go:build !unix

package bench

// SelfCPU is not measured on this platform (the process-tree sampling of
// the relay under test reads /proc and is Linux-only as well).
func SelfCPU() float64 { return 0 }
