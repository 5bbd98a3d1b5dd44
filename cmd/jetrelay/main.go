// Command jetrelay is an SMTP relay on NATS JetStream. See `jetrelay help`.
package main

import (
	"os"

	"github.com/jetrelay/jetrelay/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
