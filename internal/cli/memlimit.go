package cli

import (
	"os"
	"runtime/debug"

	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/rs/zerolog"
)

// applyMemoryLimit sets the process's soft memory limit from memory_limit,
// unless GOMEMLIMIT is set in the environment (the Go runtime has read it
// already). With the limit, the collector's pace goes back to Go's default
// (GOGC 100) from the binary's 50, unless GOGC is set in the environment:
// the limit, not a tight pace, then keeps large messages' peak down.
//
// Why a limit rather than a tighter GOGC: a large body is read back from
// the embedded server one chunk at a time, and the server keeps the block
// the chunk came from only through a weak pointer, so every collection
// between two chunk reads makes it load the whole block again
// (BENCHMARKS.md). A limit lets the collector run at its normal pace and
// harder only when the process nears the limit.
func applyMemoryLimit(cfg *config.Config, log zerolog.Logger) {
	gogc := os.Getenv("GOGC")
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		log.Info().Str("gomemlimit", v).Str("gogc", gogc).Msg("memory limit from the environment (GOMEMLIMIT); memory_limit not applied")
		return
	}
	if cfg.MemoryLimit <= 0 {
		return
	}
	debug.SetMemoryLimit(int64(cfg.MemoryLimit))
	if gogc == "" {
		debug.SetGCPercent(100)
		gogc = "100"
	}
	log.Info().Int64("memory_limit", int64(cfg.MemoryLimit)).Str("gogc", gogc).Msg("soft memory limit set")
}
