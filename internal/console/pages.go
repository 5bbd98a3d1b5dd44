package console

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/deadletter"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/filter"
	"github.com/jetrelay/jetrelay/internal/msgview"
	"github.com/jetrelay/jetrelay/internal/queuectl"
)

// pageSize is how many rows a list shows at once.
const pageSize = 100

func (s *Server) routes() {
	m := http.NewServeMux()
	static, _ := fsSub(staticFS, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", cacheStatic(http.FileServerFS(static))))
	m.HandleFunc("GET /login", s.loginPage)
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", s.authed(s.logout))
	m.HandleFunc("GET /{$}", s.authed(s.overview))
	m.HandleFunc("GET /overview/stats", s.authed(s.overviewStats))
	m.HandleFunc("GET /queue", s.authed(s.queuePage))
	m.HandleFunc("POST /queue/{qid}/retry", s.authed(s.queueRetry))
	m.HandleFunc("POST /queue/{qid}/delete", s.authed(s.queueDelete))
	m.HandleFunc("GET /message/{qid}", s.authed(s.messagePage))
	m.HandleFunc("GET /message/{qid}/body", s.authed(s.messageBody))
	m.HandleFunc("GET /deadletters", s.authed(s.deadLettersPage))
	m.HandleFunc("POST /deadletters/{qid}/replay", s.authed(s.deadLetterReplay))
	m.HandleFunc("POST /deadletters/{qid}/purge", s.authed(s.deadLetterPurge))
	m.HandleFunc("POST /deadletters/bulk", s.authed(s.deadLettersBulk))
	m.HandleFunc("GET /ops/{id}", s.authed(s.opPage))
	m.HandleFunc("GET /ops/{id}/progress", s.authed(s.opProgress))
	m.HandleFunc("GET /config", s.authed(s.configPage))
	m.HandleFunc("GET /send", s.authed(s.sendPage))
	m.HandleFunc("POST /send", s.authed(s.send))
	m.HandleFunc("GET /send/{qid}", s.authed(s.sendResult))
	m.HandleFunc("GET /send/{qid}/status", s.authed(s.sendStatus))
	s.mux = m
}

func cacheStatic(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// ---- sign-in

type loginData struct{ Next, Token, Proxy string }

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if ss := s.sessionOf(w, r); ss != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.showLogin(w, r, http.StatusOK, "")
}

// showLogin renders the sign-in form with a fresh login token, which the
// POST must carry back alongside the same value in a cookie (a login
// CSRF guard before there is a session).
func (s *Server) showLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomToken()
	s.setCookie(w, r, loginCookie, tok, 600)
	d := loginData{Next: safeNext(r.FormValue("next")), Token: tok}
	if s.users == nil {
		d.Proxy = s.o.Config.Console.ProxyUserHeader
	}
	s.renderPage(w, status, "login", page{Title: "Sign in", Nav: "login", Now: s.now(), Error: msg, Data: d})
}

// safeNext keeps a redirect after sign-in on this site.
func safeNext(n string) string {
	if !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") || strings.Contains(n, "\\") {
		return "/"
	}
	return n
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	ip := s.clientIP(r)
	c, err := r.Cookie(loginCookie)
	if err != nil || r.PostFormValue("token") == "" || c.Value != r.PostFormValue("token") {
		s.showLogin(w, r, http.StatusForbidden, "The sign-in form expired; please try again.")
		return
	}
	if !s.limiter.allow(ip) {
		s.log.Warn().Str("remote", ip.String()).Msg("console: too many sign-in attempts")
		s.showLogin(w, r, http.StatusTooManyRequests, "Too many attempts from your address; wait a minute and try again.")
		return
	}
	user, pass := strings.TrimSpace(r.PostFormValue("user")), r.PostFormValue("password")
	if s.users == nil {
		s.showLogin(w, r, http.StatusForbidden, "Sign-in with a password is not configured (console.users_file).")
		return
	}
	ok, err := s.users.check(user, pass)
	if err != nil {
		s.log.Error().Err(err).Msg("console: cannot read console.users_file")
		s.showLogin(w, r, http.StatusInternalServerError, "The users file cannot be read; see the log.")
		return
	}
	if !ok {
		s.log.Warn().Str("user", user).Str("remote", ip.String()).Msg("console: sign-in failed")
		s.showLogin(w, r, http.StatusUnauthorized, "Wrong user name or password.")
		return
	}
	if old, err := r.Cookie(sessionCookie); err == nil {
		s.sessions.remove(old.Value)
	}
	ss := s.sessions.create(user, false)
	s.setCookie(w, r, sessionCookie, ss.id, 0)
	s.setCookie(w, r, loginCookie, "", -1)
	s.log.Info().Str("user", user).Str("remote", ip.String()).Msg("console: signed in")
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (s *Server) logout(c *reqCtx) {
	s.sessions.remove(c.sess.id)
	s.setCookie(c.w, c.r, sessionCookie, "", -1)
	s.audit(c, "sign-out").Msg("console: signed out")
	http.Redirect(c.w, c.r, "/login", http.StatusSeeOther)
}

// ---- overview

func (s *Server) overview(c *reqCtx) {
	s.render(c, http.StatusOK, "overview", "Overview", s.overviewData(c.r.Context()))
}

func (s *Server) overviewStats(c *reqCtx) {
	s.fragment(c, http.StatusOK, "overview", "stats", s.overviewData(c.r.Context()))
}

// ---- queue

// filterForm is the filter of the queue and dead-letter pages, as typed.
type filterForm struct {
	From, Rcpt, Domain, Older, Reply string
}

func readFilter(r *http.Request) (filterForm, filter.Filter, error) {
	ff := filterForm{
		From: strings.TrimSpace(r.FormValue("from")), Rcpt: strings.TrimSpace(r.FormValue("rcpt")),
		Domain: strings.TrimSpace(r.FormValue("domain")), Older: strings.TrimSpace(r.FormValue("older")),
		Reply: strings.TrimSpace(r.FormValue("reply")),
	}
	f := filter.Filter{From: ff.From, Rcpt: ff.Rcpt, Domain: ff.Domain, ReasonContains: ff.Reply}
	if ff.Older != "" {
		d, err := config.ParseDuration(ff.Older)
		if err != nil {
			return ff, f, fmt.Errorf("older than: %w", err)
		}
		f.OlderThan = d.D()
	}
	return ff, f, nil
}

// query is the filter as URL parameters.
func (ff filterForm) query() string {
	v := url.Values{}
	for k, x := range map[string]string{"from": ff.From, "rcpt": ff.Rcpt, "domain": ff.Domain, "older": ff.Older, "reply": ff.Reply} {
		if x != "" {
			v.Set(k, x)
		}
	}
	return v.Encode()
}

type queueRow struct {
	QueueID, Part, State, From, Rcpts, Reply string
	Received                                 time.Time
	Attempt                                  int
	Scheduled                                bool
}

type listData struct {
	Filter filterForm
	Query  string
	Rows   any
	Count  int
	Next   uint64
	Error  string
}

func (s *Server) queuePage(c *reqCtx) {
	ff, f, err := readFilter(c.r)
	d := listData{Filter: ff, Query: ff.query()}
	if err != nil {
		d.Error = err.Error()
		s.render(c, http.StatusBadRequest, "queue", "Queue", d)
		return
	}
	after, _ := strconv.ParseUint(c.r.FormValue("after"), 10, 64)
	now := s.now()
	var rows []queueRow
	d.Next, err = s.queue.List(c.r.Context(), f, after, pageSize, func(e *queuectl.Entry) bool {
		if e.Job == nil {
			return true
		}
		row := queueRow{QueueID: e.Job.QueueID, Part: e.Job.Part, From: e.Job.From, Rcpts: rcptList(e.Job), Received: e.Job.ReceivedAt,
			Attempt: e.Job.Attempt, Scheduled: e.Scheduled, Reply: e.Job.LastError.String()}
		switch {
		case e.Scheduled && e.Job.Waiting != "":
			row.State = e.Job.Waiting + ", next " + msgview.Ago(e.NextAt, now)
		case e.Scheduled:
			row.State = "deferred, next attempt " + msgview.Ago(e.NextAt, now)
		default:
			row.State = "ready / in flight"
		}
		rows = append(rows, row)
		return true
	})
	if err != nil {
		d.Error = err.Error()
	}
	d.Rows, d.Count = rows, len(rows)
	s.render(c, http.StatusOK, "queue", "Queue", d)
}

func rcptList(j *contracts.Job) string {
	addrs := make([]string, len(j.Rcpts))
	for i, r := range j.Rcpts {
		addrs[i] = r.Addr
	}
	s := strings.Join(addrs, ", ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// back is where an action returns to: the page it came from, on this site.
func back(r *http.Request, def string) string {
	if b := r.PostFormValue("back"); b != "" {
		return safeNext(b)
	}
	return def
}

func withDone(target, msg string) string {
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	return target + sep + "done=" + url.QueryEscape(msg)
}

func (s *Server) queueRetry(c *reqCtx) {
	qid := c.r.PathValue("qid")
	jobs, err := s.queue.Find(c.r.Context(), []string{qid})
	if err != nil {
		s.fail(c, http.StatusServiceUnavailable, err)
		return
	}
	if len(jobs) == 0 {
		s.fail(c, http.StatusNotFound, fmt.Errorf("nothing of %s is in the queue", qid))
		return
	}
	n := 0
	for _, e := range jobs {
		acted, err := s.queue.Retry(c.r.Context(), e)
		if err != nil {
			s.fail(c, http.StatusServiceUnavailable, err)
			return
		}
		if acted {
			n++
		}
	}
	s.audit(c, "queue retry").Str("msg_id", qid).Int("jobs", n).Msg("console: retry now")
	msg := fmt.Sprintf("%s: %d scheduled job(s) made due now", qid, n)
	if n == 0 {
		msg = qid + ": nothing was waiting for a retry (ready or being delivered)"
	}
	http.Redirect(c.w, c.r, withDone(back(c.r, "/message/"+qid), msg), http.StatusSeeOther)
}

func (s *Server) queueDelete(c *reqCtx) {
	qid := c.r.PathValue("qid")
	jobs, err := s.queue.Find(c.r.Context(), []string{qid})
	if err != nil {
		s.fail(c, http.StatusServiceUnavailable, err)
		return
	}
	if len(jobs) == 0 {
		s.fail(c, http.StatusNotFound, fmt.Errorf("nothing of %s is in the queue", qid))
		return
	}
	for _, e := range jobs {
		if err := s.queue.Delete(c.r.Context(), e, false, " "+c.sess.user+" (console)"); err != nil {
			s.fail(c, http.StatusServiceUnavailable, err)
			return
		}
	}
	s.audit(c, "queue delete").Str("msg_id", qid).Int("jobs", len(jobs)).Msg("console: deleted from the queue (kept as a dead letter, reason deleted)")
	http.Redirect(c.w, c.r, withDone(back(c.r, "/queue"), qid+": deleted from the queue; kept in the dead letters (reason \"deleted\")"), http.StatusSeeOther)
}

// ---- message

type messageData struct {
	M        *msgview.Message
	Env      any
	Rcpts    []msgview.RcptState
	History  any
	Replays  int
	ReplayOf string
	Headers  string
	HeadErr  string
}

func (s *Server) messagePage(c *reqCtx) {
	qid := c.r.PathValue("qid")
	msgs, err := msgview.Find(c.r.Context(), s.o.Broker, []string{qid})
	if err != nil {
		s.fail(c, http.StatusServiceUnavailable, err)
		return
	}
	if len(msgs) == 0 {
		s.fail(c, http.StatusNotFound, fmt.Errorf("nothing of %s is queued or dead-lettered (delivered, purged, or never accepted)", qid))
		return
	}
	m := msgs[0]
	d := messageData{M: m, Env: m.Envelope(), Rcpts: m.Recipients(s.now()), History: m.History()}
	d.Replays, d.ReplayOf = m.Replays()
	d.Headers, err = s.headers(c.r.Context(), m)
	if err != nil {
		d.HeadErr = err.Error()
	}
	s.render(c, http.StatusOK, "message", "Message "+m.QueueID, d)
}

// maxHeaderBytes bounds the headers the message page shows.
const maxHeaderBytes = 64 << 10

func (s *Server) headers(ctx context.Context, m *msgview.Message) (string, error) {
	rc, err := m.OpenBody(ctx, s.o.Broker)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	br := bufio.NewReader(io.LimitReader(rc, maxHeaderBytes))
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if strings.TrimRight(line, "\r\n") == "" {
			break
		}
		b.WriteString(strings.TrimRight(line, "\r\n") + "\n")
		if err != nil {
			break
		}
	}
	return b.String(), nil
}

// messageBody is the stored message byte for byte (like `show --raw`),
// as plain text the browser does not interpret.
func (s *Server) messageBody(c *reqCtx) {
	qid := c.r.PathValue("qid")
	msgs, err := msgview.Find(c.r.Context(), s.o.Broker, []string{qid})
	if err != nil || len(msgs) == 0 {
		http.Error(c.w, "not found", http.StatusNotFound)
		return
	}
	rc, err := msgs[0].OpenBody(c.r.Context(), s.o.Broker)
	if err != nil {
		http.Error(c.w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer rc.Close()
	s.audit(c, "view body").Str("msg_id", qid).Msg("console: message body viewed")
	c.w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	c.w.Header().Set("Content-Security-Policy", "default-src 'none'; sandbox")
	_, _ = io.Copy(c.w, rc)
}

// ---- dead letters

type dlRow struct {
	QueueID, ID, Reason, From, Rcpts, Reply string
	Dead                                    time.Time
	Replays                                 int
}

func (s *Server) deadLettersPage(c *reqCtx) {
	ff, f, err := readFilter(c.r)
	d := listData{Filter: ff, Query: ff.query()}
	if err != nil {
		d.Error = err.Error()
		s.render(c, http.StatusBadRequest, "deadletters", "Dead letters", d)
		return
	}
	after, _ := strconv.ParseUint(c.r.FormValue("after"), 10, 64)
	var rows []dlRow
	d.Next, err = s.dls.List(c.r.Context(), f, after, pageSize, func(e *deadletter.Entry) bool {
		dl := e.DL
		rows = append(rows, dlRow{QueueID: dl.Job.QueueID, ID: dl.ID, Reason: dl.Reason, From: dl.Job.From, Rcpts: rcptList(&dl.Job),
			Reply: dl.LastReply.String(), Dead: dl.DeadAt, Replays: dl.Job.ReplayCount})
		return true
	})
	if err != nil {
		d.Error = err.Error()
	}
	d.Rows, d.Count = rows, len(rows)
	s.render(c, http.StatusOK, "deadletters", "Dead letters", d)
}

// replayRoute reads the optional next hop of a replay.
func replayRoute(r *http.Request) (string, error) {
	route := strings.TrimSpace(r.PostFormValue("route"))
	if route == "" {
		return "", nil
	}
	if _, _, err := net.SplitHostPort(route); err != nil {
		return "", fmt.Errorf("route %q: want host:port, e.g. smtp.example.net:25", route)
	}
	return route, nil
}

func (s *Server) deadLetterReplay(c *reqCtx) {
	qid := c.r.PathValue("qid")
	route, err := replayRoute(c.r)
	if err != nil {
		s.fail(c, http.StatusBadRequest, err)
		return
	}
	replayed, failed := 0, 0
	var firstErr error
	_, _, err = s.dls.Replay(c.r.Context(), filter.Filter{IDs: []string{qid}}, deadletter.ReplayOptions{Route: route}, func(res deadletter.ReplayResult) {
		if res.Err != nil {
			failed++
			if firstErr == nil {
				firstErr = res.Err
			}
			return
		}
		replayed++
	})
	if err == nil {
		err = firstErr
	}
	ev := s.audit(c, "deadletter replay").Str("msg_id", qid).Int("replayed", replayed).Int("failed", failed)
	if route != "" {
		ev = ev.Str("route", route)
	}
	if err != nil {
		ev.Err(err).Msg("console: replay failed")
		s.fail(c, http.StatusServiceUnavailable, err)
		return
	}
	if replayed == 0 {
		ev.Msg("console: nothing to replay")
		s.fail(c, http.StatusNotFound, fmt.Errorf("%s has no dead letter (replayed or purged already?)", qid))
		return
	}
	ev.Msg("console: replayed")
	to := ""
	if route != "" {
		to = " to " + route
	}
	http.Redirect(c.w, c.r, withDone(back(c.r, "/deadletters"), fmt.Sprintf("%s: %d dead letter(s) queued again%s", qid, replayed, to)), http.StatusSeeOther)
}

func (s *Server) deadLetterPurge(c *reqCtx) {
	qid := c.r.PathValue("qid")
	n, err := s.dls.Purge(c.r.Context(), filter.Filter{IDs: []string{qid}}, func(*deadletter.Entry) {})
	s.audit(c, "deadletter purge").Str("msg_id", qid).Int("purged", n).Msg("console: purged")
	if err != nil {
		s.fail(c, http.StatusServiceUnavailable, err)
		return
	}
	http.Redirect(c.w, c.r, withDone(back(c.r, "/deadletters"), fmt.Sprintf("%s: %d dead letter(s) purged", qid, n)), http.StatusSeeOther)
}

// deadLettersBulk starts a replay or purge of every dead letter the
// filter selects, and shows its progress.
func (s *Server) deadLettersBulk(c *reqCtx) {
	ff, f, err := readFilter(c.r)
	if err != nil {
		s.fail(c, http.StatusBadRequest, err)
		return
	}
	action := c.r.PostFormValue("action")
	if action != "replay" && action != "purge" {
		s.fail(c, http.StatusBadRequest, errors.New("action must be replay or purge"))
		return
	}
	if f.Empty() && c.r.PostFormValue("all") != "yes" {
		s.fail(c, http.StatusBadRequest, errors.New("no filter: to act on every dead letter, tick \"all dead letters\""))
		return
	}
	route, err := replayRoute(c.r)
	if err != nil {
		s.fail(c, http.StatusBadRequest, err)
		return
	}
	op := s.startBulk(c, action, ff, f, route)
	http.Redirect(c.w, c.r, "/ops/"+op.ID, http.StatusSeeOther)
}

func (s *Server) opPage(c *reqCtx) {
	op := s.ops.get(c.r.PathValue("id"))
	if op == nil {
		s.fail(c, http.StatusNotFound, errors.New("no such operation (they are kept until the process restarts)"))
		return
	}
	s.render(c, http.StatusOK, "op", "Bulk "+op.Action, op.snapshot())
}

func (s *Server) opProgress(c *reqCtx) {
	op := s.ops.get(c.r.PathValue("id"))
	if op == nil {
		http.Error(c.w, "no such operation", http.StatusNotFound)
		return
	}
	snap := op.snapshot()
	status := http.StatusOK
	if snap.Finished {
		status = stopPolling
	}
	s.fragment(c, status, "op", "progress", snap)
}

// stopPolling is the status that tells htmx to stop polling.
const stopPolling = 286

// ---- configuration

func (s *Server) configPage(c *reqCtx) {
	out, err := s.o.Config.Redacted()
	if err != nil {
		s.fail(c, http.StatusInternalServerError, err)
		return
	}
	s.render(c, http.StatusOK, "config", "Configuration", string(out))
}

// ---- overview data

type overviewData struct {
	State    broker.QueueState
	StateErr string
	Shape    *queuectl.Shape
	ShapeErr string
	Buckets  []string
	Chart    *chart
	ChartErr string
	Ready    string
	Broker   string
	Routes   any
	Workers  bool
}

func (s *Server) overviewData(ctx context.Context) overviewData {
	var d overviewData
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	if d.State, err = s.o.Broker.QueueState(ctx); err != nil {
		d.StateErr = err.Error()
	}
	if s.o.Shape != nil {
		d.Shape, err = s.o.Shape.Get(ctx)
		if err != nil {
			d.ShapeErr = err.Error()
		}
	}
	d.Buckets = bucketNames()
	if d.Chart, err = s.stats.get(ctx, s.o.Broker, s.now()); err != nil {
		d.ChartErr = err.Error()
	}
	d.Ready = "ready"
	if s.o.Ready != nil {
		if err := s.o.Ready(); err != nil {
			d.Ready = err.Error()
		}
	}
	d.Broker = "connected"
	if !s.o.Broker.Connected() {
		d.Broker = "disconnected"
	} else if err := s.o.Broker.Storage(); err != nil {
		d.Broker = err.Error()
	}
	if s.o.AuthStates != nil {
		d.Workers = true
		d.Routes = s.o.AuthStates()
	}
	return d
}

func bucketNames() []string {
	out := make([]string, 0, len(queuectl.AgeBuckets)+1)
	for _, b := range queuectl.AgeBuckets {
		out = append(out, "<"+config.Duration(b).String())
	}
	return append(out, "older")
}
