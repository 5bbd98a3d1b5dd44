package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/ingress"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// FuzzSMTPSession throws arbitrary command sequences at the real ingress,
// configured so that nobody may relay (no relay networks, AUTH with a
// password nobody knows). Whatever the client sends, nothing is ever
// published, and the server keeps answering new sessions.
func FuzzSMTPSession(f *testing.F) {
	seeds := []string{
		"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nRSET\r\nNOOP\r\nVRFY x\r\nQUIT\r\n",
		"EHLO c\r\nAUTH PLAIN AGFwcABwYTU1\r\nAUTH LOGIN YXBw\r\ncGE1NQ==\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n",
		"EHLO c\r\nMAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<c@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d.test\r\nBDAT 5 LAST\r\nhello",
		"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<@x.test,@y.test:c@d.test>\r\nRCPT TO:<c%d.test@e.test>\r\nRCPT TO:c@d.test\r\nDATA\r\n",
		"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b.test>\r\n",
		"\r\n\r\nEHLO\r\nMAIL\r\nRCPT\r\nDATA\r\n.\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	pw := make([]byte, 24)
	_, _ = rand.Read(pw)
	users := filepath.Join(f.TempDir(), "users.yaml")
	if err := ingress.AddUser(users, "app", hex.EncodeToString(pw), nil); err != nil {
		f.Fatal(err)
	}
	cfg := testenv.TestConfig(f)
	cfg.Ingress.RelayNetworks = config.StringList{}
	cfg.Ingress.UsersFile = users
	cfg.Ingress.AllowInsecureAuth = true
	cfg.Ingress.ReadTimeout = config.Duration(2 * time.Second)
	cfg.Ingress.MaxConnectionsPerIP = 1000
	relay := testenv.StartStages(f, cfg, app.Stages{Broker: true, Ingress: true}, app.Options{})
	addr := relay.Addr()

	f.Fuzz(func(t *testing.T, session []byte) {
		if len(session) > 64<<10 {
			return
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("ingress not answering: %v", err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		greet := make([]byte, 3)
		if _, err := io.ReadFull(c, greet); err != nil || !bytes.Equal(greet, []byte("220")) {
			t.Fatalf("greeting: %q %v", greet, err)
		}
		_, _ = c.Write(session)
		_ = c.(*net.TCPConn).CloseWrite()
		// The server answers and hangs up in bounded time.
		if _, err := io.Copy(io.Discard, c); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("session did not end within 10s")
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := relay.App.Broker().QueueState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Empty() || st.DeadLetters != 0 {
			t.Fatalf("published from a client that may not relay: %+v\nsession: %q", st, session)
		}
	})
}
