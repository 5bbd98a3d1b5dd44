// Command jetrelay is an SMTP relay on NATS JetStream. See `jetrelay help`.
package main

import (
	"os"
	"runtime/debug"

	"github.com/jetrelay/jetrelay/internal/cli"
)

func main() {
	// A relay streams large bodies through short-lived chunk buffers; a
	// tighter GC target than Go's default (100) keeps the memory a 25 MiB
	// message costs well below twice its size, for about 0.05 ms more CPU
	// per small message (BENCHMARKS.md). GOGC in the environment still
	// wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
