package delivery

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
)

// DSN actions (RFC 3464 §2.3.3).
const (
	actionFailed  = "failed"
	actionDelayed = "delayed"
	actionRelayed = "relayed"
)

// dsnRcpt is one recipient line of a DSN.
type dsnRcpt struct {
	rcpt  contracts.Recipient
	reply *contracts.Reply
	host  string
}

// notifies reports whether a recipient's NOTIFY asks for this action.
// Without NOTIFY the defaults of RFC 3461 §4.1 apply: failures always,
// delays at our discretion (yes, as Postfix and IIS do), success never.
func notifies(r contracts.Recipient, action string) bool {
	if len(r.Notify) == 0 {
		return action == actionFailed || action == actionDelayed
	}
	want := map[string]string{actionFailed: "FAILURE", actionDelayed: "DELAY", actionRelayed: "SUCCESS"}[action]
	for _, n := range r.Notify {
		if strings.EqualFold(n, "NEVER") {
			return false
		}
		if strings.EqualFold(n, want) {
			return true
		}
	}
	return false
}

// mayBounce reports whether a job may cause a DSN at all: never to the null
// sender, never about a DSN (no bounce loops).
func mayBounce(j *contracts.Job) bool {
	return j.From != "" && j.Kind != contracts.KindDSN
}

// planDSNs adds the notifications an attempt calls for to the plan:
// failures (the dead recipients), a delay warning once a message has
// waited delivery.delay_warning, and successes the sender asked for when
// the next hop does not report them itself.
//
// Besides, every recipient given up on is reported to the NDR copy address
// of the route it was given up at (Route.NDRCopyTo, IIS's "Send copy of
// Non-Delivery Report to"): one copy per address, with every dead
// recipient whatever its NOTIFY, also when the sender is null <> (the
// sender then gets nothing, the administrator still learns of it), never
// about a DSN (a bounce that bounced: no loops; the copies are DSNs).
func (w *Worker) planDSNs(job *contracts.Job, groups []*group, p *plan, open func() (io.ReadCloser, error), now time.Time) {
	copies := w.ndrCopies(job, groups, p.outcome.Dead)
	if !mayBounce(job) {
		if len(copies) > 0 {
			w.addDSNs(job, p, open, now, nil, nil, nil, copies)
		}
		return
	}
	var failed, delayed, relayed []dsnRcpt
	if d := p.outcome.Dead; d != nil {
		for _, r := range d.Rcpts {
			if notifies(r, actionFailed) {
				failed = append(failed, dsnRcpt{rcpt: r, reply: r.LastReply, host: hostOf(r.LastReply)})
			}
		}
	}
	if len(p.outcome.Retries) > 0 && w.opts.DelayWarning > 0 && !job.DelayNotified && now.Sub(job.FirstSeen) >= w.opts.DelayWarning {
		for i := range p.outcome.Retries {
			rj := &p.outcome.Retries[i]
			rj.DelayNotified = true
			for _, r := range rj.Rcpts {
				if notifies(r, actionDelayed) {
					delayed = append(delayed, dsnRcpt{rcpt: r, reply: r.LastReply, host: hostOf(r.LastReply)})
				}
			}
		}
	}
	for _, g := range groups {
		if g.report == nil || g.report.ReportsSuccess {
			continue
		}
		for i, v := range g.verdicts {
			if r := g.rcpts[i]; v.Class == Delivered && len(r.Notify) > 0 && notifies(r, actionRelayed) {
				relayed = append(relayed, dsnRcpt{rcpt: r, reply: v.Reply, host: g.report.Host})
			}
		}
	}
	w.addDSNs(job, p, open, now, failed, delayed, relayed, copies)
}

// ndrCopy is one copy of a non-delivery report for an administrator.
type ndrCopy struct {
	to    string
	rcpts []dsnRcpt
}

// ndrCopies groups the dead recipients by the NDR copy address of the
// destination each was given up at (the router's global one for those
// that never reached a destination); none about a DSN.
func (w *Worker) ndrCopies(job *contracts.Job, groups []*group, dead *broker.Dead) []ndrCopy {
	if dead == nil || job.Kind == contracts.KindDSN {
		return nil
	}
	at := map[string]string{} // recipient → copy address of its destination
	for _, g := range groups {
		for _, r := range g.rcpts {
			at[r.Addr] = g.dest.NDRCopyTo
		}
	}
	var out []ndrCopy
	idx := map[string]int{}
	for _, r := range dead.Rcpts {
		to, ok := at[r.Addr]
		if !ok && w.router != nil {
			to = w.router.o.NDRCopyTo
		}
		if to == "" {
			continue
		}
		i, ok := idx[to]
		if !ok {
			i = len(out)
			idx[to] = i
			out = append(out, ndrCopy{to: to})
		}
		out[i].rcpts = append(out[i].rcpts, dsnRcpt{rcpt: r, reply: r.LastReply, host: hostOf(r.LastReply)})
	}
	return out
}

// addDSNs renders the notifications to the sender (failed, delayed,
// relayed) and the NDR copies, and adds them to the plan as notices. Each
// gets a queue ID derived from the job, its attempt and what it is, so a
// plan made again after a crash queues nothing twice.
func (w *Worker) addDSNs(job *contracts.Job, p *plan, open func() (io.ReadCloser, error), now time.Time, failed, delayed, relayed []dsnRcpt, copies []ndrCopy) {
	if len(failed)+len(delayed)+len(relayed)+len(copies) == 0 {
		return
	}
	original := readOriginal(open, job, w.opts.BounceSizeLimit)
	add := func(action, to, kind string, rcpts []dsnRcpt) {
		if len(rcpts) == 0 {
			return
		}
		seed := fmt.Sprintf("%s/%d/%s", job.JobID(), job.Attempt, action)
		if kind != "" {
			seed += "/" + kind + "/" + to
		}
		d := &contracts.Job{
			QueueID:    contracts.DerivedQueueID(job.ReceivedAt, seed),
			Kind:       contracts.KindDSN,
			ReceivedAt: now,
			FirstSeen:  now,
			Client:     contracts.Client{Addr: "localhost", HELO: w.opts.Hostname, Proto: "DSN"},
			From:       "",
			Rcpts:      []contracts.Recipient{{Addr: to}},
			Attempt:    1,
		}
		body := buildDSN(w.opts.Hostname, job, action, rcpts, original, d.QueueID, now, job.FirstSeen.Add(w.opts.MaxAge))
		if kind != "" {
			body = ndrCopyHeaders(body, to, job)
		}
		d.Body.MaxLine = contracts.MeasureLines(body)
		p.outcome.Notices = append(p.outcome.Notices, broker.Notice{Job: d, Body: body})
	}
	add(actionFailed, job.From, "", failed)
	add(actionDelayed, job.From, "", delayed)
	add(actionRelayed, job.From, "", relayed)
	for _, c := range copies {
		add(actionFailed, c.to, "copy", c.rcpts)
	}
}

// ndrCopyHeaders readdresses a rendered non-delivery report as the
// administrator's copy: To: names the copy address (for a null sender
// the report would otherwise say To: <>), the subject says it is a copy
// and whose, and X-Jetrelay-NDR-Copy-Of names the original sender.
func ndrCopyHeaders(body []byte, to string, j *contracts.Job) []byte {
	sender := j.From
	if sender == "" {
		sender = "<>"
	}
	out := make([]byte, 0, len(body)+128)
	rest := body
	done := false
	for len(rest) > 0 && !done {
		i := bytes.Index(rest, []byte("\r\n"))
		if i < 0 {
			break
		}
		line := rest[:i+2]
		rest = rest[i+2:]
		switch {
		case i == 0:
			done = true
			out = append(out, line...)
		case bytes.HasPrefix(line, []byte("To: ")):
			out = fmt.Appendf(out, "To: <%s>\r\nX-Jetrelay-NDR-Copy-Of: %s\r\n", to, sender)
		case bytes.HasPrefix(line, []byte("Subject: ")):
			out = fmt.Appendf(out, "Subject: Copy of NDR for %s: %s", sender, line[len("Subject: "):])
		default:
			out = append(out, line...)
		}
	}
	return append(out, rest...)
}

func hostOf(r *contracts.Reply) string {
	if r == nil {
		return ""
	}
	return r.Host
}

// original is what a DSN returns of the message.
type original struct {
	data    []byte
	headers bool // only the header section
	maxLine int  // the body's longest line, as the ingress measured it
}

// readOriginal fetches what a DSN returns: the whole message when the
// sender did not ask for RET=HDRS and it fits in limit octets, else its
// header section (itself cut at a line boundary within limit).
func readOriginal(open func() (io.ReadCloser, error), j *contracts.Job, limit int) original {
	wantHeaders := strings.EqualFold(j.Params.Ret, "HDRS") || j.Body.Size > int64(limit)
	rc, err := open()
	if err != nil {
		return original{headers: true}
	}
	data, _ := io.ReadAll(io.LimitReader(rc, int64(limit)+1))
	rc.Close()
	if !wantHeaders && len(data) <= limit {
		return original{data: data, maxLine: j.Body.MaxLine}
	}
	if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 && i+2 <= limit {
		data = data[:i+2]
	} else if len(data) > limit {
		data = data[:limit]
		if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
			data = data[:i+1]
		}
	}
	return original{data: data, headers: true}
}

// buildDSN renders an RFC 3464 delivery status notification.
func buildDSN(hostname string, j *contracts.Job, action string, rcpts []dsnRcpt, orig original, dsnID string, now, retryUntil time.Time) []byte {
	var b bytes.Buffer
	boundary := dsnID + "/" + hostname
	subject := map[string]string{
		actionFailed:  "Undelivered Mail Returned to Sender",
		actionDelayed: "Delayed Mail (still being retried)",
		actionRelayed: "Successful Mail Delivery Report",
	}[action]
	fmt.Fprintf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", hostname)
	fmt.Fprintf(&b, "To: <%s>\r\n", j.From)
	fmt.Fprintf(&b, "Subject: %s\r\n", subject)
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", dsnID, hostname)
	b.WriteString("Auto-Submitted: auto-replied\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary)
	b.WriteString("\r\nThis is a MIME-encapsulated message.\r\n\r\n")

	// Part 1: for humans.
	fmt.Fprintf(&b, "--%s\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", boundary)
	fmt.Fprintf(&b, "This is the mail system at host %s.\r\n\r\n", hostname)
	switch action {
	case actionFailed:
		b.WriteString("I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients. It's attached below.\r\n")
	case actionDelayed:
		fmt.Fprintf(&b, "Your message could not be delivered for %s.\r\nIt will be retried until it is %s old.\r\n\r\n",
			roundDur(now.Sub(j.FirstSeen)), roundDur(retryUntil.Sub(j.FirstSeen)))
		b.WriteString("THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE.\r\n")
	case actionRelayed:
		b.WriteString("Your message was successfully delivered to the destination(s)\r\nlisted below. If the message was delivered to a mailbox you will\r\nreceive no further notifications.\r\n")
	}
	fmt.Fprintf(&b, "\r\nQueue ID: %s\r\n\r\n", j.QueueID)
	for _, r := range rcpts {
		fmt.Fprintf(&b, "<%s>: %s\r\n", r.rcpt.Addr, humanReply(r))
	}
	b.WriteString("\r\n")

	// Part 2: for machines.
	fmt.Fprintf(&b, "--%s\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n", boundary)
	fmt.Fprintf(&b, "Reporting-MTA: dns; %s\r\n", hostname)
	fmt.Fprintf(&b, "X-Jetrelay-Queue-ID: %s\r\n", j.QueueID)
	if j.Params.EnvID != "" {
		fmt.Fprintf(&b, "Original-Envelope-Id: %s\r\n", j.Params.EnvID)
	}
	fmt.Fprintf(&b, "Arrival-Date: %s\r\n", j.ReceivedAt.Format(time.RFC1123Z))
	for _, r := range rcpts {
		b.WriteString("\r\n")
		fmt.Fprintf(&b, "Final-Recipient: rfc822; %s\r\n", r.rcpt.Addr)
		if r.rcpt.ORcpt != "" {
			fmt.Fprintf(&b, "Original-Recipient: %s\r\n", strings.Replace(r.rcpt.ORcpt, ";", "; ", 1))
		}
		fmt.Fprintf(&b, "Action: %s\r\n", action)
		fmt.Fprintf(&b, "Status: %s\r\n", dsnStatus(action, r.reply))
		if r.host != "" {
			fmt.Fprintf(&b, "Remote-MTA: dns; %s\r\n", r.host)
		}
		if r.reply != nil && r.reply.Code != 0 {
			fmt.Fprintf(&b, "Diagnostic-Code: smtp; %s\r\n", oneLine(r.reply.String()))
		} else if r.reply != nil {
			fmt.Fprintf(&b, "Diagnostic-Code: X-Jetrelay; %s\r\n", oneLine(r.reply.Text))
		}
		fmt.Fprintf(&b, "Last-Attempt-Date: %s\r\n", now.Format(time.RFC1123Z))
		if action == actionDelayed {
			fmt.Fprintf(&b, "Will-Retry-Until: %s\r\n", retryUntil.Format(time.RFC1123Z))
		}
	}
	b.WriteString("\r\n")

	// Part 3: the message, or its headers.
	if orig.data != nil {
		ct := "message/rfc822"
		if orig.headers {
			ct = "text/rfc822-headers"
		}
		fmt.Fprintf(&b, "--%s\r\nContent-Description: Undelivered Message\r\nContent-Type: %s\r\n\r\n", boundary, ct)
		// Folded as it would have been sent, so that the bounce cannot
		// fail for the reason the message did.
		f := newLineFolder(&b, orig.maxLine)
		f.Write(orig.data)
		f.Close()
		if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
			b.WriteString("\r\n")
		}
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.Bytes()
}

// dsnStatus is the RFC 3463 status for a recipient line.
func dsnStatus(action string, r *contracts.Reply) string {
	if r != nil && r.Enhanced != "" {
		if action == actionFailed && strings.HasPrefix(r.Enhanced, "4.") {
			// Expired after temporary failures: report it as permanent.
			return "5." + strings.TrimPrefix(r.Enhanced, "4.")
		}
		return r.Enhanced
	}
	switch action {
	case actionRelayed:
		return "2.0.0"
	case actionDelayed:
		return "4.0.0"
	}
	if r != nil && r.Code/100 == 5 {
		return "5.0.0"
	}
	return "5.4.7" // delivery time expired
}

func humanReply(r dsnRcpt) string {
	if r.reply == nil {
		return "delivered"
	}
	if r.host != "" && r.reply.Code != 0 {
		return fmt.Sprintf("host %s said: %s", r.host, oneLine(r.reply.String()))
	}
	return oneLine(r.reply.String())
}

// oneLine joins a reply's lines into one, cut to 900 octets so that a
// long multi-line reply keeps the DSN's lines within 998.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
	if len(s) > 900 {
		s = strings.ToValidUTF8(s[:900], "") + "..."
	}
	return s
}

func roundDur(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	case d >= 2*time.Minute:
		return fmt.Sprintf("%d minutes", int(d.Minutes()))
	}
	return d.Round(time.Second).String()
}
