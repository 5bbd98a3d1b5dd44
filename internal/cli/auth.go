package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/delivery"
	"github.com/jetrelay/jetrelay/delivery/oauth"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, newAuthCmd) }

func newAuthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "auth", Short: "Check outbound authentication (OAuth 2.0 to Microsoft 365, Google)"}
	var route, sendTo, from string
	test := &cobra.Command{
		Use:   "test [--route smarthost|DOMAIN] [--send-to ADDR]",
		Short: "Get a token for each OAuth route and say what is wrong, in words; optionally send one message through it",
		Long: `test fetches an OAuth 2.0 token for the smart host and every route that
uses OAuth (or only --route), the way delivery does, and reports the
outcome in words an administrator can act on: the wrong tenant or client
ID, a wrong or expired secret, a certificate the app registration does not
know, missing admin consent, the wrong scope. With --send-to it then sends
one test message through that route directly, outside the queue, and
prints the next hop's answer. It exits 1 when anything failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := g.loadValid(nil)
			if err != nil {
				return err
			}
			routes := oauthRoutes(cfg, route)
			if len(routes) == 0 {
				if route != "" {
					return exitError{code: 1, msg: fmt.Sprintf("no route %q with OAuth in this configuration", route)}
				}
				return exitError{code: 1, msg: "no smart host or route uses OAuth in this configuration (smarthost_oauth, routes.<domain>.oauth)"}
			}
			ctx := cmd.Context()
			failed := false
			for _, r := range routes {
				name := r.key
				hc, err := app.HTTPClient(r.cfg.OAuth.CAFile)
				var src oauth.Source
				if err == nil {
					src, err = app.TokenSource(r.cfg.OAuth, r.cfg.Username, r.cfg.Transport == "graph", hc)
				}
				if err != nil {
					fmt.Fprintf(g.stdout, "%s: cannot use the credential: %v\n", name, err)
					failed = true
					continue
				}
				tctx, cancel := context.WithTimeout(ctx, time.Minute)
				tok, err := src.Token(tctx)
				cancel()
				if err != nil {
					failed = true
					fmt.Fprintf(g.stdout, "%s: %s: NO TOKEN\n  %v\n", name, src.Name(), err)
					var oe *oauth.Error
					if errors.As(err, &oe) {
						if a := oe.Advice(); a != "" {
							fmt.Fprintf(g.stdout, "  what to do: %s\n", a)
						}
					}
					continue
				}
				left := "unknown lifetime"
				if !tok.Expiry.IsZero() {
					left = "valid for " + time.Until(tok.Expiry).Round(time.Minute).String()
				}
				fmt.Fprintf(g.stdout, "%s: %s: token OK (%s)\n", name, src.Name(), left)
				if sendTo == "" {
					continue
				}
				if !sendOne(ctx, g, cfg, r, from, sendTo, log) {
					failed = true
				}
			}
			if failed {
				return exitError{code: 1}
			}
			return nil
		},
	}
	test.Flags().StringVar(&route, "route", "", `only this route: "smarthost" or a domain of delivery.routes`)
	test.Flags().StringVar(&sendTo, "send-to", "", "then send one test message through the route to this address")
	test.Flags().StringVar(&from, "from", "", "the test message's sender (default: the route's username)")
	cmd.AddCommand(test)
	return cmd
}

type oauthRoute struct {
	key    string // "smarthost" or "route:<domain>"
	cfg    config.Route
	errKey func(string) string
}

func oauthRoutes(cfg *config.Config, only string) []oauthRoute {
	var out []oauthRoute
	if sh := cfg.Delivery.SmarthostRoute(); sh.OAuth.Configured() && (only == "" || only == "smarthost") {
		out = append(out, oauthRoute{key: "smarthost", cfg: sh, errKey: func(k string) string { return "delivery.smarthost_" + k }})
	}
	for dom, r := range cfg.Delivery.Routes {
		if r.OAuth.Configured() && (only == "" || strings.EqualFold(only, dom)) {
			out = append(out, oauthRoute{key: "route:" + dom, cfg: r, errKey: func(k string) string { return "delivery.routes." + dom + "." + k }})
		}
	}
	return out
}

// sendOne sends the test message through one route and prints the
// outcome; it reports whether the next hop took it.
func sendOne(ctx context.Context, g *globals, cfg *config.Config, r oauthRoute, from, to string, log zerolog.Logger) bool {
	hc, err := app.HTTPClient(r.cfg.OAuth.CAFile)
	if err != nil {
		fmt.Fprintf(g.stdout, "  cannot send: %v\n", err)
		return false
	}
	rt, err := app.RouteOptions(r.cfg, r.errKey, hc, log)
	if err != nil {
		fmt.Fprintf(g.stdout, "  cannot send: %v\n", err)
		return false
	}
	if from == "" {
		from = r.cfg.Username
	}
	now := time.Now()
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: jetrelay auth test (%s)\r\nDate: %s\r\nMessage-ID: <%s@%s>\r\n\r\n"+
		"A test message from jetrelay on %s through %s.\r\n", from, to, r.key, now.Format(time.RFC1123Z), contracts.NewQueueID(now), cfg.Hostname, cfg.Hostname, r.key)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	res := delivery.Try(sctx, cfg.Hostname, r.key, rt, nil, from, []string{to}, []byte(msg), log)
	v := res.Verdicts[0]
	via := res.Report.Host
	if res.Report.IP != "" && res.Report.IP != via {
		via += " [" + res.Report.IP + "]"
	}
	if res.Report.TLS != "" {
		via += " (" + res.Report.TLS + ")"
	}
	switch v.Class {
	case delivery.Delivered:
		fmt.Fprintf(g.stdout, "  test message to %s sent via %s: %s\n", to, orDash(via), v.Reply)
		return true
	case delivery.Failed:
		fmt.Fprintf(g.stdout, "  test message to %s REFUSED via %s: %s\n", to, orDash(via), v.Reply)
	default:
		fmt.Fprintf(g.stdout, "  test message to %s NOT SENT (would be retried) via %s: %s\n", to, orDash(via), v.Reply)
	}
	if v.AuthFailed {
		fmt.Fprintln(g.stdout, "  what to do: the next hop refused jetrelay's credentials; for Microsoft 365 check the service principal (New-ServicePrincipal), the mailbox permission (Add-MailboxPermission) and that SMTP AUTH is enabled for the mailbox (Set-CASMailbox -SmtpClientAuthenticationDisabled $false); see docs/microsoft-365-and-google.md")
	}
	return false
}
