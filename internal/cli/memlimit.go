package cli

import (
	"os"
	"runtime/debug"

	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/rs/zerolog"
)

// applyMemoryLimit sets the process's soft memory limit from memory_limit,
// unless GOMEMLIMIT is set in the environment (the Go runtime has read it
// already). GOGC is left to the environment, or Go's default (100).
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
	log.Info().Int64("memory_limit", int64(cfg.MemoryLimit)).Str("gogc", gogc).Msg("soft memory limit set")
}
