// Package console is jetrelay's operator console in the browser: the
// queue, the dead letters, the configuration and a test message, for the
// admin who gets a call about a missing alert and wants to look, and to
// put a message back on its way, without the command line.
//
// It is server-rendered (html/template) with its assets embedded (embed):
// a stylesheet and htmx (static/, vendored from npm with its licence) for
// the parts that refresh themselves. Nothing needs building.
//
// It reads and changes nothing of its own: the queue through
// internal/queuectl, the dead letters through deadletter, a message
// through internal/msgview (the view `queue show` prints), a test
// message's outcome through msgview.Follower (what `send --wait` uses);
// every change is one of the broker's lifecycle operations.
//
// Security invariants:
//   - off unless console.enabled; its own listener, on loopback by
//     default, HTTPS when given a certificate;
//   - every page but the sign-in page and the static assets requires a
//     session: a user of console.users_file (bcrypt), or a user named by
//     console.proxy_user_header from a console.trusted_proxies address;
//     sessions end after console.session_timeout idle and 12 h in all;
//     sign-in attempts are limited per client address;
//   - every state change is a POST carrying the session's CSRF token,
//     from no foreign Origin; cookies are HttpOnly, SameSite=Strict, and
//     Secure over HTTPS;
//   - a browser on another machine over plain HTTP is refused unless
//     console.allow_insecure_remote;
//   - every action is logged with the user (and msg_id) at info level.
package console

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/deadletter"
	"github.com/jetrelay/jetrelay/delivery"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/queuectl"
	"github.com/rs/zerolog"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options are what the console works with; internal/app fills them.
type Options struct {
	Config *config.Config
	Broker *broker.Client
	// Shape is the cached shape of the queue (shared with /metrics).
	Shape *queuectl.ShapeCache
	// Ready is the process's readiness (/readyz): nil when all is well.
	Ready func() error
	// AuthStates are the routes' outbound authentication; nil when this
	// process runs no delivery worker.
	AuthStates func() []delivery.RouteAuth
	// IngressAddr is the SMTP address test messages are sent to ("" when
	// there is none).
	IngressAddr func() string
	Log         zerolog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Server is the console.
type Server struct {
	o        Options
	log      zerolog.Logger
	now      func() time.Time
	sessions *sessions
	users    *userStore
	limiter  *loginLimiter
	proxies  []netip.Prefix
	pages    map[string]*template.Template
	queue    *queuectl.Queue
	dls      *deadletter.Store
	ops      *operations
	follows  *follows
	stats    *statsCache
	mux      *http.ServeMux

	// ctx ends the background work (bulk operations) when the server
	// stops; wg waits for it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns the console with o.
func New(o Options) (*Server, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	c := o.Config.Console
	s := &Server{
		o: o, log: o.Log.With().Str("component", "console").Logger(), now: o.Now,
		sessions: newSessions(c.SessionTimeout.D(), o.Now),
		limiter:  &loginLimiter{now: o.Now},
		queue:    queuectl.New(o.Broker),
		dls:      deadletter.NewStore(o.Broker),
		ops:      &operations{byID: map[string]*operation{}},
		follows:  &follows{by: map[string]*follow{}},
		stats:    &statsCache{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if c.UsersFile != "" {
		s.users = &userStore{file: c.UsersFile}
	}
	for _, p := range c.TrustedProxies {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			a, err := netip.ParseAddr(p)
			if err != nil {
				return nil, fmt.Errorf("console.trusted_proxies: %q is neither an address nor a network", p)
			}
			pfx = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		s.proxies = append(s.proxies, pfx)
	}
	if err := s.parseTemplates(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

func (s *Server) parseTemplates() error {
	s.pages = map[string]*template.Template{}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return fmt.Errorf("console template %s: %w", n, err)
		}
		s.pages[base] = t
	}
	return nil
}

// Handler is the console's HTTP handler (for tests, or to mount it).
func (s *Server) Handler() http.Handler { return s }

// Close stops the background work (a bulk replay in progress stops after
// the dead letter it is at; running it again goes on where it stopped).
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
}

// Listen starts serving on console.listen, HTTPS when a certificate is
// configured, until ctx ends; it returns the bound address.
func (s *Server) Listen(ctx context.Context) (net.Addr, error) {
	c := s.o.Config.Console
	l, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("console.listen %s: %w", c.Listen, err)
	}
	scheme := "http"
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("console.tls_cert: %w", err)
		}
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("console server failed")
		}
	}()
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	s.log.Info().Str("addr", l.Addr().String()).Str("url", scheme+"://"+l.Addr().String()+"/").Msg("console: listening")
	return l.Addr(), nil
}

// ServeHTTP applies the rules every request passes (see the package
// doc), then routes it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if !s.transportAllowed(r) {
		s.log.Warn().Str("remote", s.clientIP(r).String()).Msg("console: refused a browser on another machine over plain HTTP")
		http.Error(w, "The console refuses plain HTTP from other machines: passwords and cookies would cross the network in the clear.\n"+
			"Use HTTPS (console.tls_cert and console.tls_key, or a reverse proxy in console.trusted_proxies that sets X-Forwarded-Proto: https),\n"+
			"or set console.allow_insecure_remote: true on a network you trust.", http.StatusForbidden)
		return
	}
	if r.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	s.mux.ServeHTTP(w, r)
}

// reqCtx is what a signed-in handler gets.
type reqCtx struct {
	w    http.ResponseWriter
	r    *http.Request
	sess *session
}

// authed wraps a handler that requires a session, and, for a POST, the
// CSRF token.
func (s *Server) authed(h func(*reqCtx)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		ss := s.sessionOf(w, r)
		if ss == nil {
			if r.Method == http.MethodGet && r.Header.Get("HX-Request") == "" {
				http.Redirect(w, r, "/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "sign in first", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if !s.csrfOK(r, ss) {
				s.log.Warn().Str("user", ss.user).Str("remote", s.clientIP(r).String()).Str("path", r.URL.Path).
					Msg("console: refused a state change without a valid CSRF token")
				http.Error(w, "refused: this request does not carry the page's CSRF token (reload the page and try again)", http.StatusForbidden)
				return
			}
		}
		h(&reqCtx{w: w, r: r, sess: ss})
	}
}

// audit logs an action with the user who took it.
func (s *Server) audit(c *reqCtx, action string) *zerolog.Event {
	return s.log.Info().Str("user", c.sess.user).Str("remote", s.clientIP(c.r).String()).Str("action", action)
}

// page is what every template gets.
type page struct {
	Title string
	Nav   string
	User  string
	CSRF  string
	Now   time.Time
	Flash string
	Error string
	Data  any
}

func (s *Server) render(c *reqCtx, status int, name, title string, data any) {
	p := page{Title: title, Nav: name, Now: s.now(), Data: data, Flash: c.r.URL.Query().Get("done")}
	if c.sess != nil {
		p.User, p.CSRF = c.sess.user, c.sess.csrf
	}
	s.renderPage(c.w, status, name, p)
}

func (s *Server) renderPage(w http.ResponseWriter, status int, name string, p page) {
	t := s.pages[name]
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := t.ExecuteTemplate(w, "layout", p); err != nil {
		s.log.Error().Err(err).Str("page", name).Msg("console: page failed to render")
	}
}

// fragment renders one named template of a page without the layout (the
// parts htmx refreshes).
func (s *Server) fragment(c *reqCtx, status int, pageName, block string, data any) {
	p := page{Now: s.now(), Data: data, User: c.sess.user, CSRF: c.sess.csrf}
	c.w.Header().Set("Content-Type", "text/html; charset=utf-8")
	c.w.WriteHeader(status)
	if err := s.pages[pageName].ExecuteTemplate(c.w, block, p); err != nil {
		s.log.Error().Err(err).Str("page", pageName).Msg("console: fragment failed to render")
	}
}

// fail shows an error page.
func (s *Server) fail(c *reqCtx, status int, err error) {
	s.render(c, status, "error", "Error", err.Error())
}
