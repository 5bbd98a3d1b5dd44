package ingress

import (
	"net/netip"
	"time"
)

// DefaultOptions are the defaults of every option; the configuration's
// defaults are read from here, and New fills a zero field from them
// (where zero has no meaning of its own).
func DefaultOptions() Options {
	return Options{
		Listen:          []string{"127.0.0.1:2525"},
		RelayNetworks:   loopback(),
		MaxMessageBytes: 25 << 20,
		MaxRecipients:   100,
		ReadTimeout:     5 * time.Minute,
		WriteTimeout:    5 * time.Minute,
		// RFC 5321 4.5.3.2.7: at least 5 minutes for the next command.
		CommandDeadline: 5 * time.Minute,
		// Postfix's smtpd_min_data_rate.
		MinDataRate:          500,
		InsecureAuthNetworks: loopback(),
		MaxConnections:       1000,
		MaxConnectionsPerIP:  100,
		MaxErrors:            10,
		MaxReceivedHeaders:   50,
		AddMissingHeaders:    true,
		AuthFailureLimit:     5,
		AuthFailureWindow:    10 * time.Minute,
		AuthLockout:          15 * time.Minute,
		ShutdownGrace:        30 * time.Second,
	}
}

func loopback() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

func (o *Options) fill() {
	d := DefaultOptions()
	if o.CommandDeadline <= 0 {
		o.CommandDeadline = d.CommandDeadline
	}
	if o.MinDataRate <= 0 {
		o.MinDataRate = d.MinDataRate
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = d.MaxConnections
	}
	if o.MaxConnectionsPerIP <= 0 {
		o.MaxConnectionsPerIP = min(d.MaxConnectionsPerIP, o.MaxConnections)
	}
	if o.MaxErrors <= 0 {
		o.MaxErrors = d.MaxErrors
	}
	if o.MaxReceivedHeaders <= 0 {
		o.MaxReceivedHeaders = d.MaxReceivedHeaders
	}
	if o.AuthFailureLimit <= 0 {
		o.AuthFailureLimit = d.AuthFailureLimit
	}
	if o.AuthFailureWindow <= 0 {
		o.AuthFailureWindow = d.AuthFailureWindow
	}
	if o.AuthLockout <= 0 {
		o.AuthLockout = d.AuthLockout
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = d.ShutdownGrace
	}
}
