package delivery

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
)

// fakeResolver answers every DNS query on a loopback UDP port with the
// same response code (2 SERVFAIL, 3 NXDOMAIN).
func fakeResolver(t *testing.T, rcode byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			resp := append([]byte(nil), buf[:n]...)
			resp[2] |= 0x80                    // a response
			resp[3] = (resp[3] & 0xf0) | rcode // RA off, the code
			for i := 6; i < 12; i++ {          // no answer, authority or additional records
				resp[i] = 0
			}
			_, _ = pc.WriteTo(resp, addr)
		}
	}()
	return pc.LocalAddr().String()
}

// A DNS failure names the resolver that was asked (delivery.dns_server),
// not the one in /etc/resolv.conf that Go's error names.
func TestDNSErrorNamesTheResolverAsked(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rcode byte
		class Class
		want  string
	}{
		{"SERVFAIL", 2, Deferred, "MX lookup for broken.example failed at resolver %s: server misbehaving"},
		{"NXDOMAIN", 3, Failed, "domain broken.example not found: resolver %s answered that it does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeResolver(t, tc.rcode)
			r := NewRouter(RouterOptions{DNSServer: addr})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			d := r.destinationFor(&contracts.Job{}, "broken.example")
			_, err := r.hops(ctx, d)
			var re *RouteError
			if !errors.As(err, &re) {
				t.Fatalf("want a RouteError, got %v", err)
			}
			v := classify(Result{Err: err, Stage: "route"}, "")
			want := strings.ReplaceAll(tc.want, "%s", addr)
			if v.Class != tc.class || v.Reply.Text != want {
				t.Fatalf("got %v %q\nwant %v %q", v.Class, v.Reply.Text, tc.class, want)
			}
		})
	}
}
