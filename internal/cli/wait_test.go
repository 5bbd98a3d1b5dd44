package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/config"
)

// The report says in words what happened and what to do, and its exit
// code: 1 when any recipient was dead-lettered, 75 when any waits, 0 when
// all were delivered.
func TestReport(t *testing.T) {
	cfg := config.Default()
	next := time.Now().Add(5 * time.Minute)
	for _, tc := range []struct {
		name string
		from string
		outs []outcome
		code int
		want []string
	}{
		{"delivered", "app@corp.net", []outcome{{Addr: "a@corp.example", State: stateDone, Reply: &contracts.Reply{Code: 250, Enhanced: "2.0.0", Text: "OK", Host: "mx.corp.example"}}},
			0, []string{"<a@corp.example>: delivered to mx.corp.example: 250 2.0.0 OK"}},
		{"delivered without a record", "app@corp.net", []outcome{{Addr: "a@corp.example", State: stateDone, NoRec: true}},
			0, []string{"<a@corp.example>: delivered: the message left the queue without a dead letter"}},
		{"deferred", "app@corp.net", []outcome{{Addr: "a@corp.example", State: stateDeferred, Attempt: 2, Next: next,
			Reply: &contracts.Reply{Code: 451, Enhanced: "4.4.1", Text: "connection refused by mx.corp.example", Host: "mx.corp.example"}}},
			75, []string{"<a@corp.example>: deferred: 451 4.4.1 connection refused by mx.corp.example\n", "attempt 2 at " + next.Local().Format("15:04:05"),
				"without a smart host (delivery.smarthost)", "jetrelay queue retry 2N14RHDRP8P0BKGG"}},
		{"dead and delivered", "app@corp.net", []outcome{
			{Addr: "a@corp.example", State: stateDone, Reply: &contracts.Reply{Code: 250, Text: "OK", Host: "mx.corp.example"}},
			{Addr: "b@corp.example", State: stateDead, Why: "expired", Detail: "still failing temporarily after 120h0m0s (delivery.retry.max_age)",
				Reply: &contracts.Reply{Code: 451, Enhanced: "4.3.2", Text: "delivery time expired: busy", Host: "mx.corp.example"}}},
			1, []string{"<b@corp.example>: dead-lettered (expired): 451 4.3.2 delivery time expired: busy (from mx.corp.example)",
				"still failing temporarily after", "The sender <app@corp.net> gets a bounce", "jetrelay deadletter replay 2N14RHDRP8P0BKGG"}},
		{"a bounce that cannot be delivered", "jetrelay-test@localhost", []outcome{{Addr: "a@example.com", State: stateDead, Why: "rejected",
			Reply: &contracts.Reply{Code: 556, Enhanced: "5.1.10", Text: "example.com does not accept mail (null MX)"}}},
			1, []string{"<a@example.com>: dead-lettered (rejected): 556 5.1.10 example.com does not accept mail (null MX)",
				"example.com is reserved for examples and tests", "A bounce goes to the sender <jetrelay-test@localhost>, whose domain takes no mail either"}},
		{"no outcome in time", "app@corp.net", []outcome{{Addr: "a@corp.example", State: statePending, Attempt: 1}},
			75, []string{"<a@corp.example>: still queued after 2m0s: the first attempt has not finished (is a delivery process running?"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			code := report(&buf, cfg, "2N14RHDRP8P0BKGG", tc.from, tc.outs, &snapshot{Kept: true}, 2*time.Minute)
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("missing %q in:\n%s", w, buf.String())
				}
			}
		})
	}
}
