package ingress

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"
)

// UsersFile is the on-disk form of ingress.users_file:
//
//	users:
//	  dbmail:
//	    password: "$2a$10$…"          # bcrypt hash (jetrelay user add writes it)
//	    allowed_senders:               # optional; empty allows any sender
//	      - alerts@corp.example
//	      - "*@corp.example"
type UsersFile struct {
	Users map[string]*User `yaml:"users"`
}

// User is one account allowed to relay after AUTH.
type User struct {
	Password       string   `yaml:"password"`
	AllowedSenders []string `yaml:"allowed_senders,omitempty"`
}

// Users checks credentials. It is safe for concurrent use.
type Users struct {
	mu    sync.RWMutex
	users map[string]*User
	// dummy is compared against when the user does not exist, so that a
	// wrong name and a wrong password take the same time.
	dummy []byte
}

// LoadUsers reads a users file.
func LoadUsers(file string) (*Users, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	var uf UsersFile
	if err := yaml.Unmarshal(data, &uf); err != nil {
		return nil, fmt.Errorf("users file %s: %w", file, err)
	}
	var errs []error
	for name, u := range uf.Users {
		if u == nil || !strings.HasPrefix(u.Password, "$2") {
			errs = append(errs, fmt.Errorf("users file %s: user %q: password must be a bcrypt hash (use `jetrelay user add`)", file, name))
			continue
		}
		for _, p := range u.AllowedSenders {
			if _, err := path.Match(strings.ToLower(p), ""); err != nil {
				errs = append(errs, fmt.Errorf("users file %s: user %q: bad sender pattern %q", file, name, p))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	dummy, _ := bcrypt.GenerateFromPassword([]byte("jetrelay-dummy"), bcrypt.DefaultCost)
	return &Users{users: uf.Users, dummy: dummy}, nil
}

// Check verifies a user's password and returns the user.
func (u *Users) Check(name, password string) (*User, bool) {
	u.mu.RLock()
	usr := u.users[name]
	u.mu.RUnlock()
	if usr == nil {
		_ = bcrypt.CompareHashAndPassword(u.dummy, []byte(password))
		return nil, false
	}
	if bcrypt.CompareHashAndPassword([]byte(usr.Password), []byte(password)) != nil {
		return nil, false
	}
	return usr, true
}

// Exists reports whether there is a user of that name.
func (u *Users) Exists(name string) bool {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return u.users[name] != nil
}

// MaySend reports whether the user may use from as envelope sender.
// Patterns are shell globs matched case-insensitively ("*@corp.example").
// The null sender is always allowed (bounces).
func (u *User) MaySend(from string) bool {
	if len(u.AllowedSenders) == 0 || from == "" {
		return true
	}
	from = strings.ToLower(from)
	for _, p := range u.AllowedSenders {
		if ok, _ := path.Match(strings.ToLower(p), from); ok {
			return true
		}
	}
	return false
}

// AddUser writes or replaces a user in a users file (creating it with mode
// 0600), keeping the other users as they are.
func AddUser(file, name, password string, allowedSenders []string) error {
	if name == "" || strings.ContainsAny(name, " \t\r\n:") {
		return fmt.Errorf("invalid user name %q", name)
	}
	if password == "" {
		return errors.New("empty password")
	}
	var uf UsersFile
	if data, err := os.ReadFile(file); err == nil {
		if err := yaml.Unmarshal(data, &uf); err != nil {
			return fmt.Errorf("users file %s: %w", file, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if uf.Users == nil {
		uf.Users = map[string]*User{}
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	uf.Users[name] = &User{Password: string(hash), AllowedSenders: allowedSenders}
	names := make([]string, 0, len(uf.Users))
	for n := range uf.Users {
		names = append(names, n)
	}
	sort.Strings(names)
	out, err := yaml.Marshal(&uf)
	if err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// LockoutKeyAddr and LockoutKeyUser are the keys AUTH failures are counted
// under: one per client address, one per user (a user attacked from many
// addresses is locked out too). `jetrelay user unlock` deletes them.
func LockoutKeyAddr(ip netip.Addr) string { return "ip:" + ip.String() }

// LockoutKeyUser: see LockoutKeyAddr.
func LockoutKeyUser(name string) string { return "user:" + name }

// authGuard decides AUTH lockouts: through the shared Lockouts when there
// are (every ingress of a deployment counts together, and a check costs no
// round trip), else, and while the broker cannot be reached, in memory.
// A lockout recorded in memory is this process's alone: it ends on its
// own, `jetrelay user unlock` cannot lift it.
type authGuard struct {
	shared  Lockouts // nil: memory only
	local   *authLimiter
	limit   int
	window  time.Duration
	lockout time.Duration
	now     func() time.Time
}

func newAuthGuard(o Options) *authGuard {
	return &authGuard{
		shared:  o.Lockouts,
		local:   newAuthLimiter(o.AuthFailureLimit, o.AuthFailureWindow, o.AuthLockout),
		limit:   o.AuthFailureLimit,
		window:  o.AuthFailureWindow,
		lockout: o.AuthLockout,
		now:     time.Now,
	}
}

// locked reports whether key is locked out, and until when.
func (g *authGuard) locked(key string) (time.Time, bool) {
	now := g.now()
	if g.shared != nil {
		if until, ok := g.shared.Locked(key, now); ok {
			return until, true
		}
	}
	return g.local.locked(key, now)
}

// fail records a failed AUTH of key; it reports the lockout this failure
// started (zero: none), and an error when the shared count could not be
// reached (the failure is then counted in memory).
func (g *authGuard) fail(ctx context.Context, key string) (time.Time, error) {
	now := g.now()
	if g.shared != nil {
		until, locked, err := g.shared.Fail(ctx, key, g.limit, g.window, g.lockout, now)
		if err == nil {
			if locked {
				return until, nil
			}
			return time.Time{}, nil
		}
		until, _ = g.local.fail(key, now)
		return until, err
	}
	until, _ := g.local.fail(key, now)
	return until, nil
}

// authLimiter counts failed AUTH attempts per key in memory and locks a key
// out for a cooling-off period once it reaches the limit.
type authLimiter struct {
	mu      sync.Mutex
	limit   int
	window  time.Duration
	lockout time.Duration
	keys    map[string]*authRecord
}

type authRecord struct {
	fails  []time.Time
	locked time.Time // locked until
}

func newAuthLimiter(limit int, window, lockout time.Duration) *authLimiter {
	return &authLimiter{limit: limit, window: window, lockout: lockout, keys: map[string]*authRecord{}}
}

// locked reports whether key is in its cooling-off period at now.
func (l *authLimiter) locked(key string, now time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.keys[key]
	if r == nil || !now.Before(r.locked) {
		return time.Time{}, false
	}
	return r.locked, true
}

// fail records a failure at now; it reports the lockout it started (zero:
// none) and whether key is locked out.
func (l *authLimiter) fail(key string, now time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.keys[key]
	if r == nil {
		if len(l.keys) > 100000 {
			l.gc(now)
		}
		r = &authRecord{}
		l.keys[key] = r
	}
	if now.Before(r.locked) {
		return time.Time{}, true
	}
	keep := r.fails[:0]
	for _, t := range r.fails {
		if now.Sub(t) < l.window {
			keep = append(keep, t)
		}
	}
	r.fails = append(keep, now)
	if len(r.fails) >= l.limit {
		r.locked = now.Add(l.lockout)
		r.fails = nil
		return r.locked, true
	}
	return time.Time{}, false
}

func (l *authLimiter) gc(now time.Time) {
	for k, r := range l.keys {
		if now.After(r.locked) && (len(r.fails) == 0 || now.Sub(r.fails[len(r.fails)-1]) > l.window) {
			delete(l.keys, k)
		}
	}
}

// NewLoginServer returns the server side of AUTH LOGIN; check verifies the
// credentials.
//
// loginServer is the server side of AUTH LOGIN, which go-sasl lacks. It
// accepts the initial-response form "AUTH LOGIN <base64 user>" that .NET's
// SmtpClient and PowerShell's Send-MailMessage send, and the classic
// exchange with "Username:" and "Password:" challenges.
type loginServer struct {
	check func(user, pass string) error
	user  string
	state int
}

func NewLoginServer(check func(user, pass string) error) sasl.Server {
	return &loginServer{check: check}
}

const (
	loginWantUser = iota
	loginWantPass
	loginDone
)

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.state {
	case loginWantUser:
		if response == nil {
			return []byte("Username:"), false, nil
		}
		l.user = string(response)
		l.state = loginWantPass
		return []byte("Password:"), false, nil
	case loginWantPass:
		l.state = loginDone
		if err := l.check(l.user, string(response)); err != nil {
			return nil, true, err
		}
		return nil, true, nil
	}
	return nil, true, errors.New("unexpected AUTH LOGIN response")
}
