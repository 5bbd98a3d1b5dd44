package ingress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/broker"
)

func TestReplyFunnel(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code int
		enh  smtp.EnhancedCode
	}{
		// design.md's reply table
		{"relay not permitted", ErrRelayDenied, 554, smtp.EnhancedCode{5, 7, 1}},
		{"relay not permitted, AUTH only over TLS", ErrRelayDeniedAuthTLS, 554, smtp.EnhancedCode{5, 7, 1}},
		{"auth required", ErrAuthRequired, 530, smtp.EnhancedCode{5, 7, 0}},
		{"auth failed", ErrAuthFailed, 535, smtp.EnhancedCode{5, 7, 8}},
		{"auth over plaintext", ErrAuthPlaintext, 538, smtp.EnhancedCode{5, 7, 11}},
		{"auth over plaintext, address not listed", ErrAuthPlaintextNetwork, 538, smtp.EnhancedCode{5, 7, 11}},
		{"message too large", ErrTooLarge, 552, smtp.EnhancedCode{5, 3, 4}},
		{"message too large (go-smtp reader)", smtp.ErrDataTooLarge, 552, smtp.EnhancedCode{5, 3, 4}},
		{"broker unavailable", fmt.Errorf("publish: %w", broker.ErrUnavailable), 451, smtp.EnhancedCode{4, 3, 0}},
		{"broker out of storage", fmt.Errorf("%w: publish: %w", broker.ErrUnavailable, broker.ErrNoStorage), 452, smtp.EnhancedCode{4, 3, 1}},
		{"storage below min_free at MAIL", fmt.Errorf("%w: /data has 1 MiB free", broker.ErrNoStorage), 452, smtp.EnhancedCode{4, 3, 1}},
		{"publish timeout", context.DeadlineExceeded, 451, smtp.EnhancedCode{4, 3, 0}},
		{"bare LF", ErrBareLineEnding, 550, smtp.EnhancedCode{5, 5, 2}},
		{"bad sender syntax", ErrBadSender, 501, smtp.EnhancedCode{5, 1, 7}},
		{"bad recipient syntax", ErrBadRecipient, 501, smtp.EnhancedCode{5, 1, 3}},
		// everything else the ingress can produce
		{"needs SMTPUTF8", ErrNeedSMTPUTF8, 553, smtp.EnhancedCode{5, 6, 7}},
		{"mail loop", ErrMailLoop, 554, smtp.EnhancedCode{5, 4, 6}},
		{"locked out", ErrAuthLockedOut, 421, smtp.EnhancedCode{4, 7, 0}},
		{"user locked out", ErrUserLockedOut, 454, smtp.EnhancedCode{4, 7, 0}},
		{"STARTTLS required", ErrTLSRequired, 530, smtp.EnhancedCode{5, 7, 0}},
		{"sender not allowed", ErrSenderNotAllowed, 553, smtp.EnhancedCode{5, 7, 1}},
		{"shutting down", ErrShuttingDown, 421, smtp.EnhancedCode{4, 3, 2}},
		{"no recipients", ErrNoValidRecipients, 554, smtp.EnhancedCode{5, 5, 1}},
		{"too many errors", ErrTooManyErrors, 421, smtp.EnhancedCode{4, 7, 0}},
		{"read timeout", ErrReadTimeout, 421, smtp.EnhancedCode{4, 4, 2}},
		{"client gone", ErrClientGone, 421, smtp.EnhancedCode{4, 4, 0}},
		{"client aborted BDAT", smtp.ErrDataReset, 421, smtp.EnhancedCode{4, 4, 0}},
		{"line too long", smtp.ErrTooLongLine, 554, smtp.EnhancedCode{5, 6, 0}},
		{"wrapped relay denied", fmt.Errorf("rcpt x: %w", ErrRelayDenied), 554, smtp.EnhancedCode{5, 7, 1}},
		{"a reply passes through", &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "x"}, 452, smtp.EnhancedCode{4, 5, 3}},
		{"unknown error is temporary", errors.New("something odd"), 451, smtp.EnhancedCode{4, 3, 0}},
		{"io error is temporary", io.ErrUnexpectedEOF, 451, smtp.EnhancedCode{4, 3, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := reply(tc.err)
			if r.Code != tc.code || r.EnhancedCode != tc.enh {
				t.Fatalf("reply(%v) = %d %v, want %d %v", tc.err, r.Code, r.EnhancedCode, tc.code, tc.enh)
			}
			if r.Code/100 == 4 && r.EnhancedCode[0] != 4 || r.Code/100 == 5 && r.EnhancedCode[0] != 5 {
				t.Fatalf("class of enhanced code %v does not match %d", r.EnhancedCode, r.Code)
			}
			// What go-smtp receives is the bare reply, never wrapped.
			if _, ok := asError(r).(*smtp.SMTPError); !ok {
				t.Fatal("asError did not return *smtp.SMTPError")
			}
		})
	}
	if reply(nil) != nil || asError(nil) != nil {
		t.Fatal("nil must map to nil")
	}
	// The refusals of plaintext AUTH say what to change.
	for _, tc := range []struct {
		err  error
		keys []string
	}{
		{ErrAuthPlaintext, []string{"STARTTLS", "ingress.allow_insecure_auth"}},
		{ErrAuthPlaintextNetwork, []string{"STARTTLS", "ingress.insecure_auth_networks"}},
		{ErrRelayDeniedAuthTLS, []string{"STARTTLS", "ingress.allow_insecure_auth", "ingress.insecure_auth_networks"}},
	} {
		for _, k := range tc.keys {
			if !strings.Contains(reply(tc.err).Message, k) {
				t.Errorf("reply to %v does not name %s: %q", tc.err, k, reply(tc.err).Message)
			}
		}
	}
	if q, ok := queuedReply("0KQ3H5XZ7M2P9RTA").(*smtp.SMTPError); !ok || q.Code != 250 || q.Message != "queued as 0KQ3H5XZ7M2P9RTA" {
		t.Fatalf("queued reply = %#v", q)
	}
}

func TestCheckAddress(t *testing.T) {
	tests := []struct {
		in, want string
		utf8     bool
		ok       bool
	}{
		{"user@Example.COM", "user@example.com", false, true},
		{"first.last+tag@sub.example.org", "first.last+tag@sub.example.org", false, true},
		{"user@[192.0.2.1]", "user@[192.0.2.1]", false, true},
		{"user@[IPv6:2001:db8::1]", "user@[IPv6:2001:db8::1]", false, true},
		{"user%other@example.com", "user%other@example.com", false, true},
		{"host!user@example.com", "host!user@example.com", false, true},
		{"jörg@bücher.de", "jörg@bücher.de", true, true},
		{"jörg@bücher.de", "", false, false},
		{"user@example.com.", "", false, false},
		{"a@b@example.com", "", false, false},
		{"user", "", false, false},
		{"@example.com", "", false, false},
		{"user@", "", false, false},
		{".user@example.com", "", false, false},
		{"us..er@example.com", "", false, false},
		{"user@-bad.example", "", false, false},
		{"user@exa mple.com", "", false, false},
		{"us er@example.com", "", false, false},
		{"user\x01@example.com", "", false, false},
		{"user@[300.1.1.1]", "", false, false},
		{"user@[2001:db8::1]", "", false, false},
		{"user@[192.0.2.1", "", false, false},
		{strings.Repeat("a", 65) + "@example.com", "", false, false},
	}
	for _, tc := range tests {
		got, err := checkAddress(tc.in, tc.utf8)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("checkAddress(%q, utf8=%v) = %q, %v", tc.in, tc.utf8, got, err)
		}
	}
	if _, err := checkAddress("jörg@example.com", false); !errors.Is(err, ErrNeedSMTPUTF8) {
		t.Errorf("non-ASCII without SMTPUTF8: %v", err)
	}
}

func readAllChunked(r io.Reader) ([]byte, error) {
	return io.ReadAll(iotest.OneByteReader(r))
}

func TestLineEndingsReject(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"clean", "Subject: x\r\n\r\nhello\r\n", true},
		{"empty", "", true},
		{"bare LF", "Subject: x\n\r\nhello\r\n", false},
		{"bare CR", "Subject: x\r\n\r\nhel\rlo\r\n", false},
		{"smuggle LF.CRLF", "hello\n.\r\nMAIL FROM:<a@b>\r\n", false},
		{"smuggle CR.CRLF", "hello\r.\r\nMAIL FROM:<a@b>\r\n", false},
		{"smuggle LF.LF", "hello\n.\nMAIL FROM:<a@b>\r\n", false},
		{"trailing CR", "hello\r", false},
	}
	for _, tc := range tests {
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/chunked=%v", tc.name, chunked), func(t *testing.T) {
				le := newLineEndings(strings.NewReader(tc.in), false)
				var got []byte
				var err error
				if chunked {
					got, err = readAllChunked(le)
				} else {
					got, err = io.ReadAll(le)
				}
				if tc.ok {
					if err != nil || string(got) != tc.in {
						t.Fatalf("got %q, %v", got, err)
					}
				} else if !errors.Is(err, ErrBareLineEnding) {
					t.Fatalf("err = %v, want ErrBareLineEnding", err)
				}
			})
		}
	}
}

func TestLineEndingsNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{"a\nb\n", "a\r\nb\r\n"},
		{"a\rb\r", "a\r\nb\r\n"},
		{"hello\n.\r\nMAIL FROM:<a@b>\r\n", "hello\r\n.\r\nMAIL FROM:<a@b>\r\n"},
		{"hello\r.\r\nX\r\n", "hello\r\n.\r\nX\r\n"},
		{"\r\r\n", "\r\n\r\n"},
		{"\n\n", "\r\n\r\n"},
		{"", ""},
	}
	for _, tc := range tests {
		for _, chunked := range []bool{false, true} {
			le := newLineEndings(strings.NewReader(tc.in), true)
			var got []byte
			var err error
			if chunked {
				got, err = readAllChunked(le)
			} else {
				got, err = io.ReadAll(le)
			}
			if err != nil || string(got) != tc.want {
				t.Errorf("normalize(%q, chunked=%v) = %q, %v; want %q", tc.in, chunked, got, err, tc.want)
			}
		}
	}
}

func FuzzLineEndings(f *testing.F) {
	for _, s := range []string{"a\r\nb", "a\nb", "a\rb", "\r\n.\r\n", "\n.\n", "\r.\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := io.ReadAll(newLineEndings(bytes.NewReader(in), true))
		if err != nil {
			t.Fatal(err)
		}
		// After normalizing, every CR is followed by LF and every LF
		// preceded by CR: nothing the next hop could read as a line end
		// is left except CRLF.
		for i, c := range out {
			if c == '\r' && (i+1 >= len(out) || out[i+1] != '\n') {
				t.Fatalf("bare CR at %d in %q", i, out)
			}
			if c == '\n' && (i == 0 || out[i-1] != '\r') {
				t.Fatalf("bare LF at %d in %q", i, out)
			}
		}
		// Reject mode accepts exactly what normalize leaves unchanged.
		_, rerr := io.ReadAll(newLineEndings(bytes.NewReader(in), false))
		if (rerr == nil) != bytes.Equal(in, out) {
			t.Fatalf("reject mode (%v) disagrees with normalize (changed=%v) on %q", rerr, !bytes.Equal(in, out), in)
		}
	})
}

func TestLoginServer(t *testing.T) {
	check := func(u, p string) error {
		if u == "dbmail" && p == "s3cret" {
			return nil
		}
		return errors.New("bad")
	}
	// Classic exchange.
	s := NewLoginServer(check)
	ch, done, err := s.Next(nil)
	if string(ch) != "Username:" || done || err != nil {
		t.Fatalf("first: %q %v %v", ch, done, err)
	}
	ch, done, err = s.Next([]byte("dbmail"))
	if string(ch) != "Password:" || done || err != nil {
		t.Fatalf("user: %q %v %v", ch, done, err)
	}
	if _, done, err = s.Next([]byte("s3cret")); !done || err != nil {
		t.Fatalf("pass: %v %v", done, err)
	}
	// Initial-response form: AUTH LOGIN <base64 user>.
	s = NewLoginServer(check)
	ch, done, err = s.Next([]byte("dbmail"))
	if string(ch) != "Password:" || done || err != nil {
		t.Fatalf("ir: %q %v %v", ch, done, err)
	}
	if _, done, err = s.Next([]byte("wrong")); !done || err == nil {
		t.Fatal("wrong password accepted")
	}
}

func TestAuthLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newAuthLimiter(3, time.Minute, 5*time.Minute)
	ip := LockoutKeyAddr(netip.MustParseAddr("192.0.2.7"))
	other := LockoutKeyAddr(netip.MustParseAddr("192.0.2.8"))
	for i := 0; i < 2; i++ {
		if until, locked := l.fail(ip, now); locked || !until.IsZero() {
			t.Fatal("locked too early")
		}
	}
	if _, ok := l.locked(ip, now); ok {
		t.Fatal("locked before the limit")
	}
	if until, _ := l.fail(ip, now); !until.Equal(now.Add(5 * time.Minute)) {
		t.Fatalf("the failure at the limit reports %v", until)
	}
	if until, ok := l.locked(ip, now); !ok || !until.Equal(now.Add(5*time.Minute)) {
		t.Fatal("not locked at the limit")
	}
	// Once locked, more failures start no new lockout.
	if until, locked := l.fail(ip, now); !locked || !until.IsZero() {
		t.Fatal("a failure during the lockout started another")
	}
	if _, ok := l.locked(other, now); ok {
		t.Fatal("lockout leaked to another key")
	}
	now = now.Add(5*time.Minute + time.Second)
	if _, ok := l.locked(ip, now); ok {
		t.Fatal("still locked after the cooling-off period")
	}
	// Failures spread wider than the window do not add up.
	for i := 0; i < 5; i++ {
		now = now.Add(2 * time.Minute)
		if _, locked := l.fail(other, now); locked {
			t.Fatal("locked by failures outside the window")
		}
	}
}

// fakeLockouts is a shared lockout store that can be down.
type fakeLockouts struct {
	down  bool
	l     *authLimiter
	calls int
}

func (f *fakeLockouts) Locked(key string, now time.Time) (time.Time, bool) {
	return f.l.locked(key, now)
}
func (f *fakeLockouts) Fail(_ context.Context, key string, _ int, _, _ time.Duration, now time.Time) (time.Time, bool, error) {
	f.calls++
	if f.down {
		return time.Time{}, false, broker.ErrUnavailable
	}
	until, locked := f.l.fail(key, now)
	return until, !until.IsZero() && locked, nil
}

// The guard counts through the shared store, in memory while the store
// cannot be reached, and a lockout of either kind holds.
func TestAuthGuard(t *testing.T) {
	now := time.Unix(1000, 0)
	shared := &fakeLockouts{l: newAuthLimiter(3, time.Minute, 5*time.Minute)}
	g := newAuthGuard(Options{Lockouts: shared, AuthFailureLimit: 3, AuthFailureWindow: time.Minute, AuthLockout: 5 * time.Minute})
	g.now = func() time.Time { return now }
	ctx := context.Background()
	user := LockoutKeyUser("dbmail")
	for i := 0; i < 2; i++ {
		if until, err := g.fail(ctx, user); err != nil || !until.IsZero() {
			t.Fatalf("failure %d: %v %v", i, until, err)
		}
	}
	if until, err := g.fail(ctx, user); err != nil || !until.Equal(now.Add(5*time.Minute)) {
		t.Fatalf("third failure: %v %v", until, err)
	}
	if _, ok := g.locked(user); !ok || shared.calls != 3 {
		t.Fatalf("not locked through the shared store (%d calls)", shared.calls)
	}
	// The store is down: counted in memory, and locked all the same.
	shared.down = true
	ip := LockoutKeyAddr(netip.MustParseAddr("192.0.2.9"))
	for i := 0; i < 2; i++ {
		if until, err := g.fail(ctx, ip); err == nil || !until.IsZero() {
			t.Fatalf("failure %d with the store down: %v %v", i, until, err)
		}
	}
	if until, _ := g.fail(ctx, ip); !until.Equal(now.Add(5 * time.Minute)) {
		t.Fatalf("third failure with the store down: %v", until)
	}
	if _, ok := g.locked(ip); !ok {
		t.Fatal("not locked in memory")
	}
	now = now.Add(5*time.Minute + time.Second)
	if _, ok := g.locked(ip); ok {
		t.Fatal("still locked after the lockout")
	}
	if _, ok := g.locked(user); ok {
		t.Fatal("still locked after the lockout")
	}
}

func TestUsers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.yaml")
	if err := AddUser(file, "dbmail", "s3cret", []string{"*@corp.example"}); err != nil {
		t.Fatal(err)
	}
	if err := AddUser(file, "other", "pw2", nil); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Fatalf("users file mode %v", st.Mode())
	}
	data, _ := os.ReadFile(file)
	if bytes.Contains(data, []byte("s3cret")) {
		t.Fatal("plaintext password in the users file")
	}
	u, err := LoadUsers(file)
	if err != nil {
		t.Fatal(err)
	}
	usr, ok := u.Check("dbmail", "s3cret")
	if !ok {
		t.Fatal("right password refused")
	}
	if _, ok := u.Check("dbmail", "S3cret"); ok {
		t.Fatal("wrong password accepted")
	}
	if _, ok := u.Check("nobody", "s3cret"); ok {
		t.Fatal("unknown user accepted")
	}
	for from, want := range map[string]bool{"alerts@corp.example": true, "ALERTS@Corp.Example": true, "x@evil.example": false, "": true} {
		if usr.MaySend(from) != want {
			t.Errorf("MaySend(%q) = %v", from, !want)
		}
	}
	if o, _ := u.Check("other", "pw2"); o == nil || !o.MaySend("anyone@anywhere.example") {
		t.Fatal("user without restrictions")
	}
	if err := os.WriteFile(file, []byte("users:\n  bad:\n    password: plaintext\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadUsers(file); err == nil {
		t.Fatal("plaintext password in users file accepted")
	}
}

func FuzzCheckAddress(f *testing.F) {
	for _, s := range []string{"user@example.com", "a@[192.0.2.1]", "jörg@bücher.de", "a@b@c", "x@y.", "\"q\"@x", "a%b@c"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, in string, utf8 bool) {
		out, err := checkAddress(in, utf8)
		if err != nil {
			return
		}
		// An accepted address has one '@', no control characters or
		// spaces, a lower-case domain, and is a fixed point.
		if strings.Count(out, "@") != 1 || strings.ContainsAny(out, " \t\r\n\x00\"\\") {
			t.Fatalf("accepted %q as %q", in, out)
		}
		at := strings.LastIndexByte(out, '@')
		if dom := out[at+1:]; dom != strings.ToLower(dom) {
			t.Fatalf("domain not lower-cased: %q", out)
		}
		again, err := checkAddress(out, utf8)
		if err != nil || again != out {
			t.Fatalf("checkAddress not idempotent: %q -> %q -> %q, %v", in, out, again, err)
		}
	})
}

// TestGoSMTPPatched pins what the ingress relies on from its copy of
// go-smtp (third_party/go-smtp, through the replace directive in go.mod):
// a DATA of exactly MaxMessageBytes is accepted and one byte more is
// refused with 552 5.3.4, and lines of content may be longer than
// MaxLineLength. Released go-smtp fails both.
func TestGoSMTPPatched(t *testing.T) {
	const max = 4096
	got := make(chan []byte, 10)
	be := smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &limitSession{got: got}, nil })
	srv := smtp.NewServer(be)
	srv.MaxMessageBytes = max
	srv.MaxLineLength = 2000
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	send := func(body []byte) error {
		c, err := smtp.Dial(l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Mail("a@b.test", nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("c@d.test", nil); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
		return w.Close()
	}
	lines := func(size int) []byte {
		body := bytes.Repeat([]byte("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"), size/40+1)[:size]
		body[size-2], body[size-1] = '\r', '\n'
		if body[size-3] == '\r' {
			body[size-3] = 'x'
		}
		return body
	}
	oneLine := append(bytes.Repeat([]byte("y"), max-2), '\r', '\n')
	for _, tc := range []struct {
		body []byte
		ok   bool
	}{
		{lines(max - 1), true},
		{lines(max), true},
		{oneLine, true},
		{lines(max + 1), false},
	} {
		err := send(tc.body)
		var se *smtp.SMTPError
		switch {
		case tc.ok && err != nil:
			t.Fatalf("DATA of %d bytes with a limit of %d: %v", len(tc.body), max, err)
		case !tc.ok && (!errors.As(err, &se) || se.Code != 552 || se.EnhancedCode != smtp.EnhancedCode{5, 3, 4}):
			t.Fatalf("DATA of %d bytes with a limit of %d: %v, want 552 5.3.4", len(tc.body), max, err)
		}
		if tc.ok {
			if b := <-got; !bytes.Equal(b, tc.body) {
				t.Fatalf("received %d bytes, sent %d", len(b), len(tc.body))
			}
		}
	}
}

type limitSession struct{ got chan []byte }

func (s *limitSession) Reset()                               {}
func (s *limitSession) Logout() error                        { return nil }
func (s *limitSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *limitSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *limitSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return reply(err)
	}
	s.got <- b
	return nil
}

func TestBareLineEnding(t *testing.T) {
	tests := []struct {
		in     string
		prevCR bool
		want   int
	}{
		{"", false, -1},
		{"a\r\nb\r\n", false, -1},
		{"a\r", false, -1}, // undecided until the next read
		{"\nb", true, -1},  // completes the CR before
		{"b", true, 0},     // the CR before was bare
		{"a\nb", false, 1},
		{"\nb", false, 0},
		{"a\rb\r\n", false, 1},
		{"a\rb\nc", false, 1}, // the bare CR comes first
		{"ab\r\nc\nd\re", false, 5},
		{"ab\r\r\n", false, 2},
	}
	for _, tc := range tests {
		if got := bareLineEnding([]byte(tc.in), tc.prevCR); got != tc.want {
			t.Errorf("bareLineEnding(%q, %v) = %d, want %d", tc.in, tc.prevCR, got, tc.want)
		}
	}
}

// TestConnectionAllowed: the deny list wins, an empty allow list lets
// everyone else in, IPv4-mapped addresses count as IPv4 (addrOf unmaps).
func TestConnectionAllowed(t *testing.T) {
	p := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	tests := []struct {
		name        string
		allow, deny []netip.Prefix
		ip          string
		want        bool
	}{
		{"no lists", nil, nil, "192.0.2.1", true},
		{"denied", nil, p("192.0.2.0/24"), "192.0.2.1", false},
		{"not denied", nil, p("192.0.2.0/24"), "198.51.100.1", true},
		{"allowed", p("10.0.0.0/8"), nil, "10.1.2.3", true},
		{"outside the allow list", p("10.0.0.0/8"), nil, "192.0.2.1", false},
		{"deny wins over allow", p("10.0.0.0/8"), p("10.9.9.9/32"), "10.9.9.9", false},
		{"IPv6 denied", nil, p("2001:db8::/32"), "2001:db8::1", false},
		{"IPv6 outside an IPv4 allow list", p("10.0.0.0/8"), nil, "::1", false},
	}
	for _, tc := range tests {
		s := &Server{opts: Options{ConnectionAllow: tc.allow, ConnectionDeny: tc.deny}}
		if got := s.connectionAllowed(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("%s: connectionAllowed(%s) = %v, want %v", tc.name, tc.ip, got, tc.want)
		}
	}
}
