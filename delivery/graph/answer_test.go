package graph

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/delivery"
)

// TestResultMapping: each answer of Graph becomes the Result shape the
// delivery funnel (delivery.classify) reads as intended. The funnel is
// unexported; the shapes it keys on are: a Reply (2xx delivered, 4xx
// deferred, and "4.7.x … throttl…" counted as throttled, 5xx failed), a
// RetryAfterError around a ReplyError (deferred until At), an AuthError
// (deferred, the destination's authentication failing).
func TestResultMapping(t *testing.T) {
	now := time.Date(2026, 12, 31, 12, 0, 0, 0, time.UTC)
	body := func(code, msg string) []byte {
		return []byte(`{"error":{"code":"` + code + `","message":"` + msg + `","innerError":{"request-id":"rid-1","date":"2026-12-31T12:00:00"}}}`)
	}
	tests := []struct {
		name        string
		a           answer
		senderFixed bool
		code        int    // the reply's code (also inside a RetryAfterError)
		enh         string // its enhanced code
		text        []string
		retryAt     time.Time // a RetryAfterError with this time
		auth        bool      // an AuthError
	}{
		{"202", answer{status: 202, requestID: "rid-0"}, false, 250, "2.0.0", []string{"accepted by Microsoft Graph (202) request-id rid-0"}, time.Time{}, false},
		{"429 with seconds", answer{status: 429, retryAfter: "2", body: body("ApplicationThrottled", "Application is over its MailboxConcurrency limit.")}, false,
			451, "4.7.0", []string{"Microsoft Graph 429 ApplicationThrottled: Application is over", "throttled", "request-id rid-1"}, now.Add(2 * time.Second), false},
		{"429 with a date", answer{status: 429, retryAfter: "Thu, 31 Dec 2026 12:05:00 GMT", body: body("TooManyRequests", "slow down")}, false,
			451, "4.7.0", []string{"429 TooManyRequests", "throttled"}, now.Add(5 * time.Minute), false},
		{"429 with a date past", answer{status: 429, retryAfter: "Thu, 31 Dec 2026 11:00:00 GMT"}, false, 451, "4.7.0", []string{"429 Too Many Requests", "throttled"}, now, false},
		{"429 without Retry-After", answer{status: 429, body: body("ApplicationThrottled", "x")}, false, 451, "4.7.0", []string{"throttled"}, time.Time{}, false},
		{"429 with a bad Retry-After", answer{status: 429, retryAfter: "soon"}, false, 451, "4.7.0", []string{"throttled"}, time.Time{}, false},
		{"503 with Retry-After", answer{status: 503, retryAfter: "30", body: body("ServiceUnavailable", "busy")}, false, 451, "4.7.0", []string{"503 ServiceUnavailable: busy", "throttled"}, now.Add(30 * time.Second), false},
		{"504 with Retry-After", answer{status: 504, retryAfter: "1"}, false, 451, "4.7.0", []string{"504 Gateway Timeout"}, now.Add(time.Second), false},
		{"503 without Retry-After", answer{status: 503, body: body("ServiceUnavailable", "busy")}, false, 451, "4.3.0", []string{"Microsoft Graph 503 ServiceUnavailable: busy"}, time.Time{}, false},
		{"500", answer{status: 500, body: body("InternalServerError", "oops")}, false, 451, "4.3.0", []string{"Microsoft Graph 500 InternalServerError: oops"}, time.Time{}, false},
		{"500 not JSON", answer{status: 500, body: []byte("<html>\r\nupstream\r\n</html>")}, false, 451, "4.3.0", []string{"Microsoft Graph 500 Internal Server Error: <html> upstream </html>"}, time.Time{}, false},
		{"401 again", answer{status: 401, body: body("InvalidAuthenticationToken", "Access token has expired.")}, false, 0, "", []string{"InvalidAuthenticationToken"}, time.Time{}, true},
		{"403", answer{status: 403, body: body("ErrorAccessDenied", "Access is denied. Check credentials and try again.")}, false, 0, "", []string{"403 ErrorAccessDenied: Access is denied"}, time.Time{}, true},
		{"413", answer{status: 413, body: body("RequestEntityTooLarge", "too big")}, false, 552, "5.3.4", []string{"message of 3000 bytes is too large for a Microsoft Graph MIME send (limit 4194304 bytes encoded); route it through SMTP with XOAUTH2 instead", "413"}, time.Time{}, false},
		{"400 ErrorMessageSizeExceeded", answer{status: 400, body: body("ErrorMessageSizeExceeded", "too big")}, false, 552, "5.3.4", []string{"too large"}, time.Time{}, false},
		{"400 ErrorInvalidRecipients", answer{status: 400, body: body("ErrorInvalidRecipients", "At least one recipient isn't valid.")}, false, 550, "5.1.1", []string{"Microsoft Graph 400 ErrorInvalidRecipients: At least one recipient isn't valid. (request-id rid-1)"}, time.Time{}, false},
		{"400 invalid MIME", answer{status: 400, body: body("ErrorMimeContentInvalid", "bad MIME")}, false, 554, "5.6.0", []string{"ErrorMimeContentInvalid: bad MIME"}, time.Time{}, false},
		{"400 other", answer{status: 400, body: body("ErrorInvalidRequest", "no")}, false, 550, "5.0.0", []string{"400 ErrorInvalidRequest: no"}, time.Time{}, false},
		{"404 envelope sender", answer{status: 404, body: body("ErrorInvalidUser", "The requested user 'x' is invalid.")}, false, 550, "5.1.8", []string{"ErrorInvalidUser"}, time.Time{}, false},
		{"404 configured sender", answer{status: 404, body: body("ErrorInvalidUser", "The requested user 'x' is invalid.")}, true, 451, "4.3.5", []string{"ErrorInvalidUser", "configured sender"}, time.Time{}, false},
		{"200 is not an acceptance", answer{status: 200}, false, 451, "4.3.0", []string{"unexpected answer: Microsoft Graph 200 OK"}, time.Time{}, false},
		{"302", answer{status: 302}, false, 451, "4.3.0", []string{"unexpected answer"}, time.Time{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := result(&tc.a, outcome{host: "graph.microsoft.com", size: 3000, limit: DefaultMaxRequestBytes, senderFixed: tc.senderFixed, now: now})
			var text string
			switch {
			case tc.auth:
				var ae *delivery.AuthError
				var ge *Error
				if !errors.As(r.Err, &ae) || ae.Host != "graph.microsoft.com" || !errors.As(r.Err, &ge) || ge.Status != tc.a.status || r.Reply != nil {
					t.Fatalf("result %+v, want an AuthError around a *graph.Error", r)
				}
				text = r.Err.Error()
			case !tc.retryAt.IsZero():
				var ra *delivery.RetryAfterError
				var re *delivery.ReplyError
				if !errors.As(r.Err, &ra) || !ra.At.Equal(tc.retryAt) || !errors.As(ra.Err, &re) || r.Reply != nil {
					t.Fatalf("result %+v (%v), want a RetryAfterError at %v", r, r.Err, tc.retryAt)
				}
				if re.Stage != Stage || re.Reply.Code != tc.code || re.Reply.Enhanced != tc.enh || re.Reply.Host != "graph.microsoft.com" {
					t.Fatalf("reply %+v", re.Reply)
				}
				text = re.Reply.Text
			default:
				if r.Err != nil || r.Reply == nil || r.Reply.Code != tc.code || r.Reply.Enhanced != tc.enh || r.Reply.Host != "graph.microsoft.com" || r.Stage != Stage {
					t.Fatalf("result %+v reply %+v, want %d %s", r, r.Reply, tc.code, tc.enh)
				}
				text = r.Reply.Text
			}
			for _, want := range tc.text {
				if !strings.Contains(text, want) {
					t.Fatalf("text %q does not contain %q", text, want)
				}
			}
			// The funnel counts a 4.7.x reply as throttled when it says so.
			if strings.Contains(tc.name, "429") && !strings.Contains(strings.ToLower(text), "throttl") {
				t.Fatalf("a 429 reads as throttled only if its text says so: %q", text)
			}
		})
	}
}

func TestResultNamesExtraRecipients(t *testing.T) {
	extra := []string{"a@o.example", "b@o.example", "c@o.example", "d@o.example", "e@o.example", "f@o.example", "g@o.example"}
	r := result(&answer{status: 202}, outcome{host: "h", extra: extra})
	want := "accepted by Microsoft Graph (202); also sent to 7 header recipient(s) outside this delivery: a@o.example, b@o.example, c@o.example, d@o.example, e@o.example and 2 more"
	if r.Reply.Text != want {
		t.Fatalf("text %q\nwant %q", r.Reply.Text, want)
	}
}

func TestClean(t *testing.T) {
	if got := clean("a\r\nb\tc\x00d   e", 100); got != "a b c d e" {
		t.Fatalf("%q", got)
	}
	if got := clean(strings.Repeat("é", 10), 5); got != "éé…" {
		t.Fatalf("%q", got)
	}
}

// TestMailboxesLimit: the semaphore of a mailbox holds the limit,
// ignores case, honours the context and is dropped once unused.
func TestMailboxesLimit(t *testing.T) {
	b := newMailboxes(2)
	ctx := context.Background()
	r1, _ := b.acquire(ctx, "App@corp.example")
	r2, _ := b.acquire(ctx, "app@CORP.example")
	other, err := b.acquire(ctx, "other@corp.example")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := b.acquire(short, "APP@corp.example"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third holder: %v", err)
	}
	got := make(chan error, 1)
	go func() {
		rel, err := b.acquire(ctx, "app@corp.example")
		if err == nil {
			rel()
		}
		got <- err
	}()
	r1()
	r1() // twice is once
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	r2()
	other()
	if n := b.size(); n != 0 {
		t.Fatalf("%d mailboxes left", n)
	}
}

func TestRetryAfterBounded(t *testing.T) {
	now := time.Now()
	if at, ok := retryAfter("99999999999999", now); !ok || !at.Equal(now.Add(maxRetryAfter)) {
		t.Fatalf("%v %v", at, ok)
	}
	if _, ok := retryAfter("-1", now); ok {
		t.Fatal("negative accepted")
	}
}
