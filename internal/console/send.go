package console

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/internal/msgview"
)

// The test message (the seed's telnet test, in the browser): the console
// submits it over SMTP to this process's ingress, like any client, and
// follows it by the queue ID of the 250 reply with msgview.Follower, what
// `send --wait` uses, until every recipient has an outcome.

type sendForm struct {
	From, To, Subject, Body, Server string
	// Err is why the last submission was refused ("" on a fresh form).
	Err string
}

func (s *Server) sendServer() string {
	if s.o.IngressAddr != nil {
		return s.o.IngressAddr()
	}
	return ""
}

func (s *Server) sendPage(c *reqCtx) {
	f := sendForm{From: "jetrelay-console@" + s.o.Config.Hostname, Subject: "jetrelay test message", Body: "This is a test message sent from the jetrelay console.", Server: s.sendServer()}
	s.render(c, http.StatusOK, "send", "Send a test message", f)
}

var queuedAs = regexp.MustCompile(`queued as ([0-9A-Z]{16})`)

func (s *Server) send(c *reqCtx) {
	f := sendForm{From: strings.TrimSpace(c.r.PostFormValue("from")), To: strings.TrimSpace(c.r.PostFormValue("to")),
		Subject: strings.TrimSpace(c.r.PostFormValue("subject")), Body: c.r.PostFormValue("body"), Server: s.sendServer()}
	var rcpts []string
	for _, r := range strings.FieldsFunc(f.To, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '\n' || r == '\r' }) {
		rcpts = append(rcpts, r)
	}
	fail := func(err error) {
		f.Err = err.Error()
		s.render(c, http.StatusUnprocessableEntity, "send", "Send a test message", f)
	}
	switch {
	case f.Server == "":
		fail(errors.New("this process runs no ingress to send to"))
		return
	case len(rcpts) == 0:
		fail(errors.New("give at least one recipient"))
		return
	case len(rcpts) > 10:
		fail(errors.New("a test message goes to at most 10 recipients"))
		return
	}
	ctx, cancel := context.WithTimeout(c.r.Context(), 30*time.Second)
	defer cancel()
	qid, reply, err := submit(ctx, f.Server, s.o.Config.Hostname, f.From, rcpts, s.testMessage(f, c.sess.user, rcpts))
	ev := s.audit(c, "send test").Str("from", f.From).Strs("rcpts", rcpts)
	if err != nil {
		ev.Err(err).Msg("console: test message refused")
		fail(fmt.Errorf("the relay refused it: %w", err))
		return
	}
	ev.Str("msg_id", qid).Str("reply", reply).Msg("console: test message queued")
	s.follows.start(qid, rcpts)
	http.Redirect(c.w, c.r, "/send/"+qid, http.StatusSeeOther)
}

func (s *Server) testMessage(f sendForm, user string, rcpts []string) []byte {
	from := f.From
	if from == "" {
		from = "jetrelay-console@" + s.o.Config.Hostname
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: <%s>\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d.console@%s>\r\nX-Jetrelay-Console-User: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		from, "<"+strings.Join(rcpts, ">, <")+">", oneLine(f.Subject), s.now().Format(time.RFC1123Z), s.now().UnixNano(), s.o.Config.Hostname, oneLine(user))
	for _, l := range strings.Split(strings.ReplaceAll(f.Body, "\r\n", "\n"), "\n") {
		b.WriteString(l + "\r\n")
	}
	return []byte(b.String())
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// submit sends one message over SMTP and returns the queue ID of the 250
// reply.
func submit(ctx context.Context, addr, helo, from string, rcpts []string, data []byte) (qid, reply string, err error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", "", err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello(helo); err != nil {
		return "", "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", "", err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return "", "", fmt.Errorf("<%s>: %w", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", "", err
	}
	if _, err := w.Write(data); err != nil {
		return "", "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", "", err
	}
	_ = c.Quit()
	m := queuedAs.FindStringSubmatch(resp.StatusText)
	if m == nil {
		return "", resp.StatusText, fmt.Errorf("the reply names no queue ID: %q", resp.StatusText)
	}
	return m[1], resp.StatusText, nil
}

// follows are the test messages being followed, by queue ID.
type follows struct {
	mu sync.Mutex
	by map[string]*follow
}

type follow struct {
	f       *msgview.Follower
	started time.Time
	mu      sync.Mutex
}

// maxFollows bounds the table; the oldest go first.
const maxFollows = 200

func (fs *follows) start(qid string, rcpts []string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.by) >= maxFollows {
		var oldest string
		var at time.Time
		for k, v := range fs.by {
			if oldest == "" || v.started.Before(at) {
				oldest, at = k, v.started
			}
		}
		delete(fs.by, oldest)
	}
	fs.by[qid] = &follow{f: &msgview.Follower{QueueID: qid, Rcpts: rcpts}, started: time.Now()}
}

func (fs *follows) get(qid string) *follow {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.by[qid]
}

type sendStatus struct {
	QueueID  string
	Outcomes []outcomeRow
	Final    bool
	Err      string
	Elapsed  string
}

type outcomeRow struct {
	Addr, State, Reply, Note string
	Class                    string
}

func (s *Server) sendResult(c *reqCtx) {
	qid := c.r.PathValue("qid")
	st := s.sendStatusOf(c.r.Context(), qid)
	s.render(c, http.StatusOK, "sendresult", "Test message "+qid, st)
}

func (s *Server) sendStatus(c *reqCtx) {
	st := s.sendStatusOf(c.r.Context(), c.r.PathValue("qid"))
	status := http.StatusOK
	if st.Final {
		status = stopPolling
	}
	s.fragment(c, status, "sendresult", "status", st)
}

// sendStatusOf looks at a followed message once.
func (s *Server) sendStatusOf(ctx context.Context, qid string) sendStatus {
	st := sendStatus{QueueID: qid}
	fl := s.follows.get(qid)
	if fl == nil {
		// Not sent from this console (or long ago): follow what the
		// broker holds of it.
		snap, err := msgview.Observe(ctx, s.o.Broker, qid)
		if err != nil {
			st.Err = err.Error()
			return st
		}
		var rcpts []string
		for _, j := range snap.Jobs {
			for _, r := range j.Job.Rcpts {
				rcpts = append(rcpts, r.Addr)
			}
		}
		for _, d := range snap.DLs {
			for _, r := range d.DL.Job.Rcpts {
				rcpts = append(rcpts, r.Addr)
			}
		}
		if len(rcpts) == 0 {
			st.Err = "this console is not following " + qid + " and the broker holds nothing of it (delivered, or never accepted)"
			st.Final = true
			return st
		}
		s.follows.start(qid, rcpts)
		fl = s.follows.get(qid)
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	now := s.now()
	st.Elapsed = now.Sub(fl.started).Round(time.Second).String()
	outs, snap, final, err := fl.f.Look(ctx, s.o.Broker, now)
	if err != nil {
		st.Err = err.Error()
		return st
	}
	st.Final = final
	for _, o := range outs {
		st.Outcomes = append(st.Outcomes, describe(o, snap, now))
	}
	return st
}

// describe says one recipient's outcome in words, as send --wait does.
func describe(o msgview.Outcome, snap *msgview.Snapshot, now time.Time) outcomeRow {
	row := outcomeRow{Addr: o.Addr, State: o.State.String(), Reply: o.Reply.String(), Class: strings.ReplaceAll(o.State.String(), "-", "")}
	switch o.State {
	case msgview.StateDone:
		switch {
		case o.NoRec:
			row.Note = "the message left the queue without a dead letter"
			if !snap.Kept {
				row.Note += " (this relay keeps no record of the reply)"
			}
		case o.Reply != nil && o.Reply.Host != "":
			row.Note = "accepted by " + o.Reply.Host
		}
	case msgview.StateDeferred:
		row.Note = fmt.Sprintf("attempt %d %s; it stays in the queue and is retried", o.Attempt, msgview.Ago(o.Next, now))
	case msgview.StateDead:
		row.Note = o.Why
		if o.Detail != "" {
			row.Note += ": " + o.Detail
		}
	case msgview.StateWaiting:
		row.Note = o.Why + ", next try " + msgview.Ago(o.Next, now)
	case msgview.StatePending:
		row.Note = "queued; the first attempt has not finished"
	}
	return row
}
