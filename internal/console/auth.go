package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/ingress"
	"golang.org/x/time/rate"
)

// Sign-in, sessions, CSRF and where a browser may be.

const (
	sessionCookie = "jetrelay_console"
	loginCookie   = "jetrelay_console_login"
	// maxSessionAge ends every session this long after sign-in, however
	// busy it is.
	maxSessionAge = 12 * time.Hour
	// maxSessions bounds the session table; the oldest go first.
	maxSessions = 1000
	// Login attempts per client address: loginBurst at once, then one
	// per loginEvery.
	loginBurst = 5
	loginEvery = 12 * time.Second
)

// session is one signed-in browser.
type session struct {
	id, user, csrf string
	created, seen  time.Time
	proxy          bool // signed in by the trusted proxy's header
}

// sessions is the session table, in memory: a restart signs everyone out.
type sessions struct {
	mu      sync.Mutex
	byID    map[string]*session
	timeout time.Duration
	now     func() time.Time
}

func newSessions(timeout time.Duration, now func() time.Time) *sessions {
	return &sessions{byID: map[string]*session{}, timeout: timeout, now: now}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for user.
func (s *sessions) create(user string, proxy bool) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.byID) >= maxSessions {
		s.expireLocked(now)
		for len(s.byID) >= maxSessions {
			var oldest *session
			for _, x := range s.byID {
				if oldest == nil || x.created.Before(oldest.created) {
					oldest = x
				}
			}
			delete(s.byID, oldest.id)
		}
	}
	ss := &session{id: randomToken(), user: user, csrf: randomToken(), created: now, seen: now, proxy: proxy}
	s.byID[ss.id] = ss
	return ss
}

// get returns the live session id names and marks it seen; expired
// sessions are removed.
func (s *sessions) get(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.byID[id]
	if ss == nil {
		return nil
	}
	now := s.now()
	if now.Sub(ss.seen) > s.timeout || now.Sub(ss.created) > maxSessionAge {
		delete(s.byID, id)
		return nil
	}
	ss.seen = now
	return ss
}

func (s *sessions) remove(id string) {
	s.mu.Lock()
	delete(s.byID, id)
	s.mu.Unlock()
}

func (s *sessions) expireLocked(now time.Time) {
	for id, ss := range s.byID {
		if now.Sub(ss.seen) > s.timeout || now.Sub(ss.created) > maxSessionAge {
			delete(s.byID, id)
		}
	}
}

// userStore is console.users_file, read again when it changes.
type userStore struct {
	file    string
	mu      sync.Mutex
	users   *ingress.Users
	modTime time.Time
	size    int64
}

// check verifies a password; err is a problem with the file.
func (u *userStore) check(name, pass string) (bool, error) {
	u.mu.Lock()
	fi, err := os.Stat(u.file)
	if err != nil {
		u.mu.Unlock()
		return false, err
	}
	if u.users == nil || !fi.ModTime().Equal(u.modTime) || fi.Size() != u.size {
		users, err := ingress.LoadUsers(u.file)
		if err != nil {
			u.mu.Unlock()
			return false, err
		}
		u.users, u.modTime, u.size = users, fi.ModTime(), fi.Size()
	}
	users := u.users
	u.mu.Unlock()
	_, ok := users.Check(name, pass)
	return ok, nil
}

// loginLimiter allows loginBurst attempts per client address, then one
// per loginEvery.
type loginLimiter struct {
	mu  sync.Mutex
	by  map[netip.Addr]*rate.Limiter
	now func() time.Time
}

func (l *loginLimiter) allow(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.by == nil || len(l.by) > 10000 {
		l.by = map[netip.Addr]*rate.Limiter{}
	}
	lim := l.by[ip]
	if lim == nil {
		lim = rate.NewLimiter(rate.Every(loginEvery), loginBurst)
		l.by[ip] = lim
	}
	return lim.AllowN(l.now(), 1)
}

// remoteIP is the address the connection comes from.
func remoteIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, _ := netip.ParseAddr(host)
	return ip.Unmap()
}

// trusted reports whether the connection comes from a trusted proxy.
func (s *Server) trusted(r *http.Request) bool {
	ip := remoteIP(r)
	for _, p := range s.proxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// clientIP is the browser's address: the connection's, or, from a
// trusted proxy, the first hop it names in X-Forwarded-For.
func (s *Server) clientIP(r *http.Request) netip.Addr {
	ip := remoteIP(r)
	if s.trusted(r) {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first := strings.TrimSpace(strings.Split(xff, ",")[0])
			if a, err := netip.ParseAddr(first); err == nil {
				return a.Unmap()
			}
		}
	}
	return ip
}

// secure reports whether the browser's connection is encrypted: TLS to
// us, or to a trusted proxy that says so.
func (s *Server) secure(r *http.Request) bool {
	return r.TLS != nil || (s.trusted(r) && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https"))
}

// transportAllowed: a browser on another machine uses plain HTTP only
// when the admin allowed it.
func (s *Server) transportAllowed(r *http.Request) bool {
	return s.secure(r) || s.clientIP(r).IsLoopback() || s.o.Config.Console.AllowInsecureRemote
}

// sessionOf returns the request's session: its cookie's, or, from a
// trusted proxy that names a user, one started for that user.
func (s *Server) sessionOf(w http.ResponseWriter, r *http.Request) *session {
	var ss *session
	if c, err := r.Cookie(sessionCookie); err == nil {
		ss = s.sessions.get(c.Value)
	}
	hdr := s.o.Config.Console.ProxyUserHeader
	if hdr == "" || !s.trusted(r) {
		if ss != nil && ss.proxy {
			return nil // a proxy's session is good only through the proxy
		}
		return ss
	}
	user := strings.TrimSpace(r.Header.Get(hdr))
	switch {
	case user == "":
		return ss
	case ss != nil && ss.user == user:
		return ss
	}
	ss = s.sessions.create(user, true)
	s.setCookie(w, r, sessionCookie, ss.id, 0)
	s.log.Info().Str("user", user).Str("remote", s.clientIP(r).String()).Msg("console: signed in by the trusted proxy")
	return ss
}

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: s.secure(r), SameSite: http.SameSiteStrictMode,
	})
}

// csrfOK checks a state-changing request: the session's token in the form
// field "csrf" or the X-CSRF-Token header, and no foreign Origin.
func (s *Server) csrfOK(r *http.Request, ss *session) bool {
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		scheme := "http://"
		if s.secure(r) {
			scheme = "https://"
		}
		if o != scheme+r.Host {
			return false
		}
	}
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.PostFormValue("csrf")
	}
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(ss.csrf)) == 1
}
