package delivery

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
)

func TestMasquerade(t *testing.T) {
	tests := []struct{ from, dom, want string }{
		{"app@web01.corp.local", "corp.example", "app@corp.example"},
		{"app@corp.example", "corp.example", "app@corp.example"},
		{"", "corp.example", ""}, // the null sender stays null
		{"app@web01", "", "app@web01"},
		{`"a@b"@web01`, "corp.example", `"a@b"@corp.example`},
		{"postmaster", "corp.example", "postmaster@corp.example"},
	}
	for _, tc := range tests {
		if got := masquerade(tc.from, tc.dom); got != tc.want {
			t.Errorf("masquerade(%q, %q) = %q, want %q", tc.from, tc.dom, got, tc.want)
		}
	}
}

// The global masquerade domain and NDR copy address reach every kind of
// destination; a route's own replaces them.
func TestRouterMasqueradeAndNDRCopy(t *testing.T) {
	r := NewRouter(RouterOptions{
		Masquerade: "corp.example", NDRCopyTo: "postmaster@corp.example",
		Smarthost: Route{Hosts: []string{"smarthost.test:25"}},
		Routes: map[string]Route{
			"partner.test": {Hosts: []string{"10.0.0.5:25"}, Masquerade: "partner-facing.example", NDRCopyTo: "partners@corp.example"},
			"other.test":   {Hosts: []string{"10.0.0.6:25"}},
		},
	})
	j := &contracts.Job{From: "app@web01"}
	for _, tc := range []struct{ domain, masq, copyTo string }{
		{"example.com", "corp.example", "postmaster@corp.example"}, // the smart host
		{"partner.test", "partner-facing.example", "partners@corp.example"},
		{"other.test", "corp.example", "postmaster@corp.example"},
	} {
		d := r.destinationFor(j, tc.domain)
		if d.Masquerade != tc.masq || d.NDRCopyTo != tc.copyTo {
			t.Errorf("%s (%s): masquerade %q, ndr copy %q; want %q, %q", tc.domain, d.Key, d.Masquerade, d.NDRCopyTo, tc.masq, tc.copyTo)
		}
	}
	mx := NewRouter(RouterOptions{Masquerade: "corp.example", NDRCopyTo: "pm@corp.example"}).destinationFor(j, "example.com")
	if mx.Kind != "mx" || mx.Masquerade != "corp.example" || mx.NDRCopyTo != "pm@corp.example" {
		t.Errorf("mx destination: %+v", mx)
	}
	over := r.destinationFor(&contracts.Job{From: "a@b", Route: "127.0.0.1:2525"}, "example.com")
	if over.Masquerade != "corp.example" || over.NDRCopyTo != "postmaster@corp.example" {
		t.Errorf("replay --route destination: %+v", over)
	}
}

// Every dead recipient is reported to the NDR copy address of the route
// it died at, whatever its NOTIFY, also for a null sender; a DSN that
// dies gets no copy (no loops); copies have IDs of their own.
func TestNDRCopies(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	w := &Worker{opts: Options{Hostname: "relay.test", Schedule: []time.Duration{time.Minute}, MaxAge: 5 * time.Hour, BounceSizeLimit: 50000},
		router: NewRouter(RouterOptions{NDRCopyTo: "pm@corp.example"})}
	open := func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader("Subject: disk full\r\n\r\nbody\r\n")), nil
	}
	no := Verdict{Class: Failed, Reason: contracts.ReasonRejected, Reply: &contracts.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user", Host: "mx.a"}}
	ok := Verdict{Class: Delivered, Reply: &contracts.Reply{Code: 250, Text: "ok"}}
	grp := func(dest *Destination, rcpts []contracts.Recipient, vs ...Verdict) *group {
		return &group{dest: dest, rcpts: rcpts, verdicts: vs, report: &Report{Host: dest.Key}}
	}
	global := &Destination{Key: "smarthost", Route: Route{NDRCopyTo: "pm@corp.example"}}
	partner := &Destination{Key: "route:partner.test", Route: Route{NDRCopyTo: "partners@corp.example"}}
	never := contracts.Recipient{Addr: "x@a", Notify: []string{"NEVER"}}

	tests := []struct {
		name    string
		job     *contracts.Job
		groups  []*group
		want    map[string]int // notice recipient → dead recipients it reports
		subject string
	}{
		{"sender and copy", &contracts.Job{QueueID: "0KQ3H5XZ7M2P9RTA", From: "app@corp.example", Attempt: 1, FirstSeen: now, ReceivedAt: now},
			[]*group{grp(global, []contracts.Recipient{{Addr: "a@a"}, {Addr: "b@a"}}, no, ok)},
			map[string]int{"app@corp.example": 1, "pm@corp.example": 1}, "Subject: Copy of NDR for app@corp.example: Undelivered Mail"},
		{"null sender: the copy only", &contracts.Job{QueueID: "0KQ3H5XZ7M2P9RTB", From: "", Attempt: 1, FirstSeen: now, ReceivedAt: now},
			[]*group{grp(global, []contracts.Recipient{{Addr: "a@a"}}, no)},
			map[string]int{"pm@corp.example": 1}, "Subject: Copy of NDR for <>: Undelivered Mail"},
		{"NOTIFY=NEVER: the copy only", &contracts.Job{QueueID: "0KQ3H5XZ7M2P9RTC", From: "app@corp.example", Attempt: 1, FirstSeen: now, ReceivedAt: now},
			[]*group{grp(global, []contracts.Recipient{never}, no)},
			map[string]int{"pm@corp.example": 1}, ""},
		{"per route", &contracts.Job{QueueID: "0KQ3H5XZ7M2P9RTD", From: "app@corp.example", Attempt: 2, FirstSeen: now, ReceivedAt: now},
			[]*group{grp(global, []contracts.Recipient{{Addr: "a@a"}}, no), grp(partner, []contracts.Recipient{{Addr: "p1@partner.test"}, {Addr: "p2@partner.test"}}, no, no)},
			map[string]int{"app@corp.example": 3, "pm@corp.example": 1, "partners@corp.example": 2}, ""},
		{"a dead DSN: nothing", &contracts.Job{QueueID: "0KQ3H5XZ7M2P9RTE", Kind: contracts.KindDSN, From: "", Attempt: 1, FirstSeen: now, ReceivedAt: now},
			[]*group{grp(global, []contracts.Recipient{{Addr: "app@corp.example"}}, no)},
			map[string]int{}, ""},
		{"no copy address", &contracts.Job{QueueID: "0KQ3H5XZ7M2P9RTF", From: "", Attempt: 1, FirstSeen: now, ReceivedAt: now},
			[]*group{grp(&Destination{Key: "mx:a"}, []contracts.Recipient{{Addr: "a@a"}}, no)},
			map[string]int{}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := w.plan(tc.job, tc.groups, open, now)
			got := map[string]int{}
			ids := map[string]bool{}
			for _, n := range p.outcome.Notices {
				if n.Job.Kind != contracts.KindDSN || n.Job.From != "" || len(n.Job.Rcpts) != 1 {
					t.Fatalf("notice job %+v", n.Job)
				}
				to := n.Job.Rcpts[0].Addr
				got[to] = bytes.Count(n.Body, []byte("Final-Recipient:"))
				if ids[n.Job.QueueID] {
					t.Fatalf("two notices with queue ID %s", n.Job.QueueID)
				}
				ids[n.Job.QueueID] = true
				if !bytes.Contains(n.Body, []byte("To: <"+to+">\r\n")) {
					t.Errorf("notice to %s is addressed otherwise:\n%s", to, n.Body)
				}
				if to != tc.job.From && !bytes.Contains(n.Body, []byte("X-Jetrelay-NDR-Copy-Of: ")) {
					t.Errorf("copy to %s does not say whose NDR it is:\n%s", to, n.Body)
				}
				if to != tc.job.From && tc.subject != "" && !bytes.Contains(n.Body, []byte(tc.subject)) {
					t.Errorf("copy's subject: want %q in\n%s", tc.subject, n.Body)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("notices to %v, want %v", got, tc.want)
			}
			for to, n := range tc.want {
				if got[to] != n {
					t.Fatalf("notices to %v, want %v", got, tc.want)
				}
			}
			// The same plan again (a crash before the ack) derives the same IDs.
			again := w.plan(tc.job, tc.groups, open, now)
			for i, n := range again.outcome.Notices {
				if n.Job.QueueID != p.outcome.Notices[i].Job.QueueID {
					t.Fatalf("notice %d: queue ID %s then %s", i, p.outcome.Notices[i].Job.QueueID, n.Job.QueueID)
				}
			}
		})
	}
}
