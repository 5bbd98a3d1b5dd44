package cli

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/rs/zerolog"
)

// TestApplyMemoryLimit: memory_limit sets the soft limit and puts the
// collector's pace back to 100 (from the binary's 50) unless the
// environment says otherwise; GOMEMLIMIT in the environment wins.
func TestApplyMemoryLimit(t *testing.T) {
	oldLimit := debug.SetMemoryLimit(-1)
	oldPct := debug.SetGCPercent(50)
	t.Cleanup(func() {
		debug.SetMemoryLimit(oldLimit)
		debug.SetGCPercent(oldPct)
	})
	for _, tc := range []struct {
		name             string
		limit            config.ByteSize
		gogc, gomemlimit string
		wantLimit        int64
		wantPct          int
	}{
		{"none", 0, "", "", math.MaxInt64, 50},
		{"limit", 256 << 20, "", "", 256 << 20, 100},
		{"limit, GOGC set", 256 << 20, "50", "", 256 << 20, 50},
		{"GOMEMLIMIT set", 256 << 20, "", "1GiB", math.MaxInt64, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetMemoryLimit(math.MaxInt64)
			debug.SetGCPercent(50)
			t.Setenv("GOGC", tc.gogc)
			t.Setenv("GOMEMLIMIT", tc.gomemlimit)
			applyMemoryLimit(&config.Config{MemoryLimit: tc.limit}, zerolog.Nop())
			if got := debug.SetMemoryLimit(-1); got != tc.wantLimit {
				t.Errorf("memory limit %d, want %d", got, tc.wantLimit)
			}
			if got := debug.SetGCPercent(50); got != tc.wantPct {
				t.Errorf("GC percent %d, want %d", got, tc.wantPct)
			}
		})
	}
}
