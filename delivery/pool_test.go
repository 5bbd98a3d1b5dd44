package delivery

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// quitServer is a next hop that answers QUIT only when released, so that
// a test can look at the pool while a connection is saying goodbye.
type quitServer struct {
	addr    string
	gotQuit chan struct{} // one per QUIT received
	release chan struct{} // closed: answer every QUIT
	gone    chan struct{} // one per connection closed by the server
}

func newQuitServer(t *testing.T) *quitServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &quitServer{addr: ln.Addr().String(), gotQuit: make(chan struct{}, 8), release: make(chan struct{}), gone: make(chan struct{}, 8)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { nc.Close(); s.gone <- struct{}{} }()
				br := bufio.NewReader(nc)
				if _, err := nc.Write([]byte("220 hop ESMTP\r\n")); err != nil {
					return
				}
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(strings.ToUpper(line), "QUIT") {
						s.gotQuit <- struct{}{}
						<-s.release
						_, _ = nc.Write([]byte("221 bye\r\n"))
						return
					}
					_, _ = nc.Write([]byte("250 ok\r\n"))
				}
			}()
		}
	}()
	return s
}

func (s *quitServer) dial(t *testing.T) *smtpConn {
	t.Helper()
	c, err := dialSMTP(context.Background(), &net.Dialer{}, "hop", s.addr, false, nil, DefaultTimeouts())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitChan(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// A connection being retired still counts: a new connection to the same
// destination waits until the old one's QUIT was answered and it closed.
// (TestRateLimitSpreadsABurst once saw 5 connections under a limit of 4:
// the old connection's QUIT ran in a goroutine nobody waited for.)
func TestPoolRetiredConnectionCountsUntilClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		retire func(p *pool, c *smtpConn)
	}{
		{"carried its share of messages", func(p *pool, c *smtpConn) { c.sent = 10; p.put("d", c) }},
		{"broken", func(p *pool, c *smtpConn) { c.broken = true; p.put("d", c) }},
		{"idle too long, found by get", func(p *pool, c *smtpConn) {
			p.put("d", c)
			p.now = func() time.Time { return time.Now().Add(time.Hour) }
			if got := p.get("d"); got != nil {
				t.Fatal("get returned a connection idle for an hour")
			}
		}},
		{"idle too long, found by the sweeper", func(p *pool, c *smtpConn) {
			p.put("d", c)
			p.now = func() time.Time { return time.Now().Add(time.Hour) }
			p.sweep(false)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newQuitServer(t)
			p := newPool(4, 10, time.Minute, 0)
			c := s.dial(t)
			tc.retire(p, c)
			if tc.name == "broken" {
				// A broken connection is closed without QUIT.
				waitChan(t, s.gone, "the server to see the broken connection close")
				if err := p.waitClosed(context.Background(), "d"); err != nil {
					t.Fatal(err)
				}
				return
			}
			waitChan(t, s.gotQuit, "QUIT")

			// The server has not answered QUIT: the connection is open,
			// and a new one to "d" waits until the caller gives up.
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if err := p.waitClosed(ctx, "d"); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("waitClosed while the old connection waited for its 221: %v, want it to wait", err)
			}
			// Another destination does not wait for it.
			if err := p.waitClosed(context.Background(), "other"); err != nil {
				t.Fatal(err)
			}

			done := make(chan error, 1)
			go func() { done <- p.waitClosed(context.Background(), "d") }()
			close(s.release)
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("waitClosed did not return after the 221")
			}
			waitChan(t, s.gone, "the server to close the connection")
		})
	}
}

// closeAll is the worker's last step: it returns only when every cached
// connection said QUIT and heard 221, so no pool goroutine outlives it.
func TestPoolCloseAllWaitsForGoodbyes(t *testing.T) {
	s := newQuitServer(t)
	p := newPool(4, 10, time.Minute, 0)
	p.put("a", s.dial(t))
	p.put("b", s.dial(t))
	done := make(chan struct{})
	go func() { p.closeAll(); close(done) }()
	waitChan(t, s.gotQuit, "the first QUIT")
	waitChan(t, s.gotQuit, "the second QUIT")
	select {
	case <-done:
		t.Fatal("closeAll returned before the QUITs were answered")
	default:
	}
	close(s.release)
	waitChan(t, done, "closeAll")
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) != 0 || len(p.closing) != 0 {
		t.Fatalf("after closeAll: %d idle destinations, %d closing", len(p.idle), len(p.closing))
	}
}
