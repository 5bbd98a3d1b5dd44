package cli

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, newHealthcheckCmd) }

// newHealthcheckCmd probes a running jetrelay's /healthz or /readyz: a
// health check for images without a shell (Docker HEALTHCHECK, compose).
func newHealthcheckCmd(g *globals) *cobra.Command {
	var ready bool
	var url string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Probe a running jetrelay's /healthz (or /readyz with --ready); exit 0 when healthy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if url == "" {
				cfg, _, err := g.load(nil)
				if err != nil {
					return err
				}
				if cfg.HTTP.Listen == "" || cfg.HTTP.Listen == "off" {
					return exitError{code: 1, msg: "http.listen is off: nothing to probe"}
				}
				url = "http://" + probeAddr(cfg.HTTP.Listen)
				if ready {
					url += "/readyz"
				} else {
					url += "/healthz"
				}
			}
			c := &http.Client{Timeout: timeout}
			resp, err := c.Get(url)
			if err != nil {
				return exitError{code: 1, msg: err.Error()}
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			fmt.Fprint(g.stdout, string(body))
			if resp.StatusCode != http.StatusOK {
				return exitError{code: 1, msg: fmt.Sprintf("%s: %s", url, resp.Status)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&ready, "ready", false, "probe /readyz (can the stages work) instead of /healthz (is the process alive)")
	cmd.Flags().StringVar(&url, "url", "", "URL to probe (default: http.listen of the configuration)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
	return cmd
}

// probeAddr turns a listen address into one to connect to.
func probeAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}
