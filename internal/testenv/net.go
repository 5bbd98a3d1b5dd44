package testenv

import (
	"net"
	"time"
)

type netDialer struct{ local string }

func (d *netDialer) dial(addr string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: 10 * time.Second}
	if d.local != "" {
		nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(d.local)}
	}
	return nd.Dial("tcp", addr)
}
