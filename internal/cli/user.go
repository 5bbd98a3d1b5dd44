package cli

import (
	"bufio"
	"fmt"
	"os"
	"strings"

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
	cmd.AddCommand(add)
	return cmd
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
