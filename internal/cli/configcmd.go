package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jetrelay/jetrelay/ingress"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/spf13/cobra"
)

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with the configuration"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "Validate the configuration and print it as it takes effect, secrets redacted",
		Long: `check loads the configuration the way every command does (defaults, then
--config FILE, then JETRELAY_* environment variables, then flags), reports
every problem it finds at once (each with its file:line, or the variable
or flag that set it, in words: an unknown key with the closest known one,
a value of the wrong kind, a value out of range), warnings about settings
that work but are probably not meant, and prints the effective
configuration with passwords and tokens redacted. It exits 1 when there
is a problem.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, src, err := g.load(nil)
			if cfg == nil {
				return exitError{code: 1, msg: "configuration does not load:\n" + err.Error()}
			}
			// Every problem at once: those of reading the layers (each key
			// in error kept its default), then those of the values.
			var problems []error
			if err != nil {
				problems = append(problems, err)
			}
			if err := cfg.Validate(); err != nil {
				problems = append(problems, src.Locate(err))
			}
			// Files the config names must also parse, not just exist.
			if cfg.Ingress.UsersFile != "" {
				if _, err := ingress.LoadUsers(cfg.Ingress.UsersFile); err != nil {
					problems = append(problems, fmt.Errorf("ingress.users_file: %w", err))
				}
			}
			out, rerr := cfg.Redacted()
			if rerr != nil {
				return rerr
			}
			if src.File != "" {
				fmt.Fprintf(g.stdout, "# configuration: %s\n", src.File)
			} else {
				fmt.Fprintln(g.stdout, "# configuration: defaults (no --config file)")
			}
			if len(src.Env) > 0 {
				fmt.Fprintf(g.stdout, "# overridden by environment: %s\n", strings.Join(src.Env, ", "))
			}
			if len(src.Flags) > 0 {
				fmt.Fprintf(g.stdout, "# overridden by flags: %s\n", strings.Join(src.Flags, ", "))
			}
			for _, w := range src.Warnings {
				fmt.Fprintf(g.stdout, "# warning: %s\n", w)
			}
			for _, n := range src.Notes {
				fmt.Fprintf(g.stdout, "# note: %s\n", n)
			}
			if cfg.Broker.DedupeWindow == 0 {
				fmt.Fprintf(g.stdout, "# broker.dedupe_window 0s: derived, %s in effect (the longer of 1h and the longest retry wait)\n", config.Duration(cfg.DedupeWindow()))
			}
			if cfg.Broker.MinFree == 0 {
				fmt.Fprintf(g.stdout, "# broker.min_free 0: derived, %d bytes in effect (1.5 × ingress.max_message_bytes)\n", cfg.MinFree())
			}
			fmt.Fprint(g.stdout, string(out))
			if len(problems) > 0 {
				all := errors.Join(problems...)
				n := strings.Count(all.Error(), "\n") + 1
				return exitError{code: 1, msg: fmt.Sprintf("%d problem(s):\n%s", n, all)}
			}
			fmt.Fprintln(g.stderr, "configuration OK")
			return nil
		},
	})
	return cmd
}
