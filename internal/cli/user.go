package cli

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetrelay/jetrelay/ingress"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newUserCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage the users allowed to relay after AUTH"}
	var file string
	var senders []string
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add or replace a user in ingress.users_file (bcrypt); the password comes from stdin or a prompt",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				cfg, _, err := g.load(nil)
				if err != nil {
					return err
				}
				file = cfg.Ingress.UsersFile
			}
			if file == "" {
				return fmt.Errorf("no users file: set ingress.users_file or pass --users-file")
			}
			pass, err := readNewPassword(g)
			if err != nil {
				return err
			}
			if err := ingress.AddUser(file, args[0], pass, senders); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "user %s written to %s\n", args[0], file)
			return nil
		},
	}
	add.Flags().StringVar(&file, "users-file", "", "users file (default: ingress.users_file)")
	add.Flags().StringArrayVar(&senders, "allow-sender", nil, "restrict MAIL FROM to this pattern, e.g. '*@corp.example' (repeatable)")
	cmd.AddCommand(add, newUserUnlockCmd(g), newUserLockoutsCmd(g))
	return cmd
}

// newUserUnlockCmd lifts an AUTH lockout on every ingress (they share
// them through the broker) before it ends on its own.
func newUserUnlockCmd(g *globals) *cobra.Command {
	var asUser bool
	cmd := &cobra.Command{
		Use:   "unlock USER|ADDRESS",
		Short: "Lift an AUTH lockout of a user or a client address now, on every ingress",
		Long: `A user or a client address with ingress.auth_failure_limit failed AUTH
attempts within ingress.auth_failure_window is locked out for
ingress.auth_lockout on every ingress. unlock lifts the lockout and clears
the failed attempts counted so far. An argument that is an IP address names
a client address, unless --user is given.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, what := ingress.LockoutKeyUser(args[0]), "user "+args[0]
			if ip, err := netip.ParseAddr(args[0]); err == nil && !asUser {
				ip = ip.Unmap()
				key, what = ingress.LockoutKeyAddr(ip), "address "+ip.String()
			}
			bc, _, err := g.adminConn(cmd.Context())
			if err != nil {
				return err
			}
			defer bc.Close()
			until, err := bc.AuthUnlock(cmd.Context(), key, time.Now())
			if err != nil {
				return err
			}
			if until.IsZero() {
				fmt.Fprintf(g.stdout, "%s was not locked out (failed attempts cleared)\n", what)
				return nil
			}
			fmt.Fprintf(g.stdout, "%s unlocked (was locked out until %s)\n", what, until.Local().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asUser, "user", false, "the argument is a user name, even if it looks like an address")
	return cmd
}

// newUserLockoutsCmd lists the AUTH lockouts in force.
func newUserLockoutsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "lockouts",
		Short: "List the users and client addresses locked out after failed AUTH attempts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bc, _, err := g.adminConn(cmd.Context())
			if err != nil {
				return err
			}
			defer bc.Close()
			now := time.Now()
			ls, err := bc.AuthLockouts(cmd.Context(), now)
			if err != nil {
				return err
			}
			if len(ls) == 0 {
				fmt.Fprintln(g.stdout, "no lockouts")
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tNAME\tUNTIL\tLEFT")
			for _, l := range ls {
				kind, name, _ := strings.Cut(l.Key, ":")
				if kind == "ip" {
					kind = "address"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", kind, name, l.Until.Local().Format(time.RFC3339), l.Until.Sub(now).Round(time.Second))
			}
			return tw.Flush()
		},
	}
}

func readNewPassword(g *globals) (string, error) {
	if f, ok := g.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(g.stderr, "Password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(g.stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(g.stderr, "Again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(g.stderr)
		if err != nil {
			return "", err
		}
		if string(p1) != string(p2) {
			return "", fmt.Errorf("the passwords differ")
		}
		return string(p1), nil
	}
	line, err := bufio.NewReader(g.stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("reading the password from stdin: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
