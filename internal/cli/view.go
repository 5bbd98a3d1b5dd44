package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetrelay/jetrelay/internal/msgview"
	"github.com/spf13/cobra"
)

// message is a message as the operator sees it (msgview, shared with the
// console): `queue show` and `deadletter show` both print it.
type message = msgview.Message

// newShowCmd is `queue show` and `deadletter show`: the same view of a
// message, whichever way the operator came to it.
func newShowCmd(g *globals, short string) *cobra.Command {
	var raw, jsonOut bool
	cmd := &cobra.Command{
		Use:   "show ID...",
		Short: short,
		Long: `show prints everything jetrelay holds of a message: its envelope, the state of
every recipient (delivered, waiting for the next attempt, or dead-lettered,
with the last reply), its attempt history, its jobs in the queue and its
dead letters. ID is the queue ID from the "250 ... queued as" reply or any
log line; an ID of one job or dead letter (the queue ID with a suffix)
shows that record, or its message once the record is gone.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			ctx := cmd.Context()
			bc, _, err := g.adminConn(ctx)
			if err != nil {
				return err
			}
			defer bc.Close()
			msgs, err := msgview.Find(ctx, bc, ids)
			if err != nil {
				return err
			}
			if len(msgs) == 0 {
				return exitError{code: 1, msg: fmt.Sprintf("nothing of %s is queued or dead-lettered (delivered, purged, or never accepted)", strings.Join(ids, ", "))}
			}
			if raw {
				rc, err := msgs[0].OpenBody(ctx, bc)
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(g.stdout, rc)
				return err
			}
			now := time.Now()
			enc := json.NewEncoder(g.stdout)
			for i, m := range msgs {
				if jsonOut {
					for _, e := range m.Jobs {
						_ = enc.Encode(jobJSON(e, now, true))
					}
					for _, e := range m.DLs {
						_ = enc.Encode(deadLetterJSON(e, true))
					}
					continue
				}
				if i > 0 {
					fmt.Fprintln(g.stdout)
				}
				printMessage(g.stdout, m, now)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&raw, "raw", false, "print the stored message (with our Received header) byte for byte, like postcat")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "JSON Lines: the message's jobs and dead letters, with their histories")
	return cmd
}

func printMessage(w io.Writer, m *message, now time.Time) {
	j := m.Envelope()
	fmt.Fprintf(w, "Queue ID:    %s\n", m.QueueID)
	fmt.Fprintf(w, "Received:    %s (%s ago) from %s [%s]", j.ReceivedAt.Local().Format(time.RFC3339), ago(j.ReceivedAt, now), orDash(j.Client.HELO), j.Client.Addr)
	if j.Client.AuthUser != "" {
		fmt.Fprintf(w, " user %s", j.Client.AuthUser)
	}
	fmt.Fprintf(w, "\nSender:      <%s>\n", j.From)
	where := "inline"
	if !j.Body.Inline() {
		where = "in the body store"
	}
	fmt.Fprintf(w, "Size:        %d bytes (%s)\n", j.Body.Size, where)
	if replays, replayOf := m.Replays(); replays > 0 {
		fmt.Fprintf(w, "Replayed:    %d time(s), last from dead letter %s\n", replays, replayOf)
	}

	rows := m.Recipients(now)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RECIPIENT\tSTATE\tATTEMPT\tLAST REPLY")
	for _, r := range rows {
		reply := orDash(r.Reply.String())
		if r.Reply != nil && r.Reply.Host != "" {
			reply += " (" + r.Reply.Host + ")"
		}
		fmt.Fprintf(tw, "<%s>\t%s\t%s\t%s\n", r.Addr, r.State, r.Attempt, short(reply, 100))
	}
	_ = tw.Flush()

	if h := m.History(); len(h) > 0 {
		fmt.Fprintln(w, "\nHistory:")
		for _, a := range h {
			fmt.Fprintf(w, "  attempt %d at %s: %s via %s [%s] %s", a.Attempt, a.At.Local().Format(time.RFC3339), a.Result, orDash(a.Host), orDash(a.IP), a.Reply)
			if a.TLS != "" {
				fmt.Fprintf(w, " (%s)", a.TLS)
			}
			fmt.Fprintln(w)
		}
	}
	for _, e := range m.DLs {
		fmt.Fprintf(w, "\nDead letter %s: %s: %s\n", e.DL.ID, e.DL.Reason, e.DL.Detail)
		for _, h := range e.DL.HostsTried {
			fmt.Fprintf(w, "  tried %s\n", h)
		}
	}
	if len(m.DLs) > 0 {
		fmt.Fprintf(w, "\nTo send it again: jetrelay deadletter replay %s\n", m.QueueID)
	}
}
