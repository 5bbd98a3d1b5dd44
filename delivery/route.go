package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/delivery/oauth"
)

// TLSPolicy says how a connection to a next hop is protected.
type TLSPolicy string

// TLS policies for outbound connections.
const (
	// TLSNone never starts TLS.
	TLSNone TLSPolicy = "none"
	// TLSOpportunistic uses STARTTLS when offered, without verifying the
	// certificate, and falls back to plaintext when it fails.
	TLSOpportunistic TLSPolicy = "opportunistic"
	// TLSRequired insists on STARTTLS with a verified certificate.
	TLSRequired TLSPolicy = "required"
	// TLSImplicit speaks TLS from the first byte (port 465 style), verified.
	TLSImplicit TLSPolicy = "implicit"
)

// ParseTLSPolicy reads a policy name ("" is opportunistic).
func ParseTLSPolicy(s string) (TLSPolicy, error) {
	switch p := TLSPolicy(s); p {
	case "":
		return TLSOpportunistic, nil
	case TLSNone, TLSOpportunistic, TLSRequired, TLSImplicit:
		return p, nil
	}
	return "", fmt.Errorf("TLS policy must be none, opportunistic, required or implicit, got %q", s)
}

// Route is a configured next hop: the smart host, or the hop for one
// recipient domain.
type Route struct {
	// Hosts are "host:port" (or "host", port 25), tried in order.
	Hosts []string
	TLS   TLSPolicy // "" is opportunistic
	// TLSSkipVerify accepts any certificate (required/implicit policies).
	TLSSkipVerify bool
	// RootCAs verifies the next hop's certificate (nil: the worker's
	// pool, by default the system's): a private CA.
	RootCAs *x509.CertPool
	// ClientCert is presented to the next hop (mutual TLS).
	ClientCert *tls.Certificate
	// ServerName is the name the certificate must carry (default: the
	// host's name).
	ServerName string
	// Username authenticates: with Password (AUTH PLAIN or LOGIN), or as
	// the mailbox of an OAuth token (XOAUTH2's user=, OAUTHBEARER's a=).
	// Credentials go only over TLS unless AllowPlainAuth.
	Username, Password string
	AllowPlainAuth     bool
	// Tokens, when set, authenticates with OAuth 2.0 bearer tokens
	// (XOAUTH2, else OAUTHBEARER) instead of a password.
	Tokens oauth.Source
	// Transport delivers to this route (nil: SMTP to Hosts).
	Transport Transport
	// Limit spreads the route's mail out (shared by every worker).
	Limit RateLimit
	// DKIMDomain is the domain whose DKIM key signs a message sent this
	// way when its From domain has no key ("": the worker's fallback).
	DKIMDomain string
	// Masquerade, when set, replaces the domain of the envelope sender
	// (MAIL FROM, not the From: header, like IIS's masquerade domain) on
	// the way to this route; the null sender stays null.
	Masquerade string
	// NDRCopyTo, when set, receives a copy of every non-delivery report
	// about recipients given up on at this route (IIS's "Send copy of
	// Non-Delivery Report to"), also when the sender is null.
	NDRCopyTo string
}

// inherit takes the global masquerade domain and NDR copy address where
// the route sets none.
func (r *Route) inherit(o RouterOptions) {
	if r.Masquerade == "" {
		r.Masquerade = o.Masquerade
	}
	if r.NDRCopyTo == "" {
		r.NDRCopyTo = o.NDRCopyTo
	}
}

// authenticates reports whether the route has credentials.
func (r *Route) authenticates() bool { return r.Username != "" || r.Tokens != nil }

// Destination is where a group of recipients goes: a route, the smart
// host, or the recipient domain's MX hosts. Recipients with the same Key
// share one transaction.
type Destination struct {
	Key    string // "mx:example.com", "smarthost", "route:corp.example", "hop:host:port"
	Kind   string // mx, smarthost, route, override
	Domain string // recipient domain, for MX lookups and logs
	Route         // hosts, TLS and credentials (Hosts empty for mx)
	// Verify: the next hop's certificate must be valid for TLS to count.
	// A configured hop (smart host, route) is verified unless
	// TLSSkipVerify, also under the opportunistic policy, where a failed
	// verification falls back to plaintext (so credentials never go to an
	// unverified server); an MX host only under the required policy
	// (opportunistic MX TLS takes any certificate, as RFC 7435 suggests).
	Verify bool
}

// hop is one address to connect to.
type hop struct {
	name string // host name: for TLS verification, logs and Received
	addr string // host:port or ip:port to dial
}

// RouterOptions configure a Router; secrets are already read from files.
type RouterOptions struct {
	// Port is the TCP port for direct MX delivery.
	Port int
	// MXTLS is the TLS policy toward MX hosts.
	MXTLS TLSPolicy
	// Smarthost, when it has hosts, takes every recipient without a route.
	Smarthost Route
	// Routes are per recipient domain.
	Routes map[string]Route
	// DNSServer is the resolver "host:port" for MX lookups ("": the system's).
	DNSServer string
	// MaxMXHosts caps the addresses tried per destination.
	MaxMXHosts int
	// Masquerade and NDRCopyTo apply to every destination whose route
	// does not set its own (Route.Masquerade, Route.NDRCopyTo): direct
	// MX delivery, the smart host, the routes.
	Masquerade, NDRCopyTo string
}

// DefaultRouterOptions: direct MX delivery on port 25, opportunistic TLS,
// at most five hosts per attempt.
func DefaultRouterOptions() RouterOptions {
	return RouterOptions{Port: 25, MXTLS: TLSOpportunistic, MaxMXHosts: 5}
}

// Router decides destinations. Its configuration is fixed at start.
type Router struct {
	o        RouterOptions
	routes   map[string]*Destination
	resolver *net.Resolver
}

// NewRouter builds a Router.
func NewRouter(o RouterOptions) *Router {
	d := DefaultRouterOptions()
	if o.Port == 0 {
		o.Port = d.Port
	}
	if o.MaxMXHosts <= 0 {
		o.MaxMXHosts = d.MaxMXHosts
	}
	if o.MXTLS == "" {
		o.MXTLS = d.MXTLS
	}
	if o.Smarthost.TLS == "" {
		o.Smarthost.TLS = TLSOpportunistic
	}
	o.Smarthost.inherit(o)
	r := &Router{o: o, routes: map[string]*Destination{}}
	for dom, rt := range o.Routes {
		d := strings.ToLower(strings.TrimSuffix(dom, "."))
		if rt.TLS == "" {
			rt.TLS = TLSOpportunistic
		}
		rt.inherit(o)
		r.routes[d] = &Destination{Key: "route:" + d, Kind: "route", Domain: d, Route: rt, Verify: !rt.TLSSkipVerify}
	}
	if o.DNSServer != "" {
		server := o.DNSServer
		r.resolver = &net.Resolver{
			PreferGo: true,
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, server)
			},
		}
	} else {
		r.resolver = net.DefaultResolver
	}
	return r
}

// tokenRoutes are the configured destinations that authenticate with
// OAuth tokens.
func (r *Router) tokenRoutes() []*Destination {
	var out []*Destination
	if r.o.Smarthost.Tokens != nil && len(r.o.Smarthost.Hosts)+btoi(r.o.Smarthost.Transport != nil) > 0 {
		out = append(out, &Destination{Key: "smarthost", Kind: "smarthost", Route: r.o.Smarthost})
	}
	for _, d := range r.routes {
		if d.Tokens != nil {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// destinationFor routes one recipient domain, first match wins: a per-job
// override (replay --route), a route for the domain, the smart host,
// direct MX.
func (r *Router) destinationFor(j *contracts.Job, domain string) *Destination {
	domain = strings.ToLower(domain)
	if j.Route != "" {
		return &Destination{Key: "hop:" + j.Route, Kind: "override", Domain: domain,
			Route: Route{Hosts: []string{j.Route}, TLS: TLSOpportunistic, Masquerade: r.o.Masquerade, NDRCopyTo: r.o.NDRCopyTo}}
	}
	if d, ok := r.routes[domain]; ok {
		return d
	}
	if len(r.o.Smarthost.Hosts) > 0 || r.o.Smarthost.Transport != nil {
		return &Destination{Key: "smarthost", Kind: "smarthost", Domain: domain, Route: r.o.Smarthost, Verify: !r.o.Smarthost.TLSSkipVerify}
	}
	return &Destination{Key: "mx:" + domain, Kind: "mx", Domain: domain, Route: Route{TLS: r.o.MXTLS, Masquerade: r.o.Masquerade, NDRCopyTo: r.o.NDRCopyTo},
		Verify: r.o.MXTLS == TLSRequired}
}

// masquerade returns the envelope sender as it goes out to a route with
// masquerade domain dom: the local part kept, the domain replaced; the
// null sender, and any sender when dom is empty, unchanged.
func masquerade(from, dom string) string {
	if dom == "" || from == "" {
		return from
	}
	at := strings.LastIndexByte(from, '@')
	if at < 0 {
		return from + "@" + dom
	}
	return from[:at+1] + dom
}

// hops lists the addresses to try for a destination, in order, at most
// MaxMXHosts of them. A failure is a *RouteError.
func (r *Router) hops(ctx context.Context, d *Destination) ([]hop, error) {
	if d.Kind != "mx" {
		out := make([]hop, 0, len(d.Hosts))
		for _, h := range d.Hosts {
			host, _, err := net.SplitHostPort(h)
			if err != nil {
				host, h = h, net.JoinHostPort(h, "25")
			}
			out = append(out, hop{name: host, addr: h})
		}
		return out, nil
	}
	port := strconv.Itoa(r.o.Port)
	// An address literal: deliver to that address.
	if strings.HasPrefix(d.Domain, "[") && strings.HasSuffix(d.Domain, "]") {
		lit := strings.TrimPrefix(strings.TrimPrefix(d.Domain[1:len(d.Domain)-1], "IPv6:"), "ipv6:")
		a, err := netip.ParseAddr(lit)
		if err != nil {
			return nil, &RouteError{Kind: RouteBadLiteral, Domain: d.Domain, Err: err}
		}
		return []hop{{name: a.String(), addr: net.JoinHostPort(a.String(), port)}}, nil
	}
	fqdn := d.Domain + "."
	mxs, err := r.resolver.LookupMX(ctx, fqdn)
	var hosts []string
	switch {
	case err == nil && len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == ""):
		// RFC 7505 null MX: the domain accepts no mail.
		return nil, &RouteError{Kind: RouteNullMX, Domain: d.Domain}
	case err == nil && len(mxs) > 0:
		hosts = orderMX(mxs)
	case err == nil || isNotFound(err):
		// No MX records: the domain itself is the implicit MX (RFC 5321
		// §5.1), if it has an address at all.
		hosts = []string{d.Domain}
	default:
		return nil, dnsError(d.Domain, "MX", r.resolverOf(err), err)
	}
	var out []hop
	var lastErr error
	for _, h := range hosts {
		if len(out) >= r.o.MaxMXHosts {
			break
		}
		ips, err := r.resolver.LookupNetIP(ctx, "ip", strings.TrimSuffix(h, ".")+".")
		if err != nil {
			lastErr = err
			continue
		}
		for _, ip := range ips {
			if len(out) >= r.o.MaxMXHosts {
				break
			}
			out = append(out, hop{name: strings.TrimSuffix(h, "."), addr: net.JoinHostPort(ip.Unmap().String(), port)})
		}
	}
	if len(out) == 0 {
		if len(hosts) == 1 && hosts[0] == d.Domain && (lastErr == nil || isNotFound(lastErr)) {
			return nil, &RouteError{Kind: RouteNotFound, Domain: d.Domain, Err: lastErr, Resolver: r.resolverOf(lastErr), What: "MX and address"}
		}
		if lastErr != nil && !isNotFound(lastErr) {
			return nil, dnsError(d.Domain, "address", r.resolverOf(lastErr), lastErr)
		}
		return nil, &RouteError{Kind: RouteNoAddress, Domain: d.Domain, Err: lastErr, Resolver: r.resolverOf(lastErr), What: "address"}
	}
	return out, nil
}

// resolverOf names the DNS server a lookup went to: the configured one
// (RouterOptions.DNSServer; Go's error then still names the server of
// /etc/resolv.conf, which was not asked), else the system's as Go's error
// reports it.
func (r *Router) resolverOf(err error) string {
	if r.o.DNSServer != "" {
		return "resolver " + r.o.DNSServer
	}
	var de *net.DNSError
	if errors.As(err, &de) && de.Server != "" {
		return "system resolver " + de.Server
	}
	return "the system resolver"
}

// orderMX sorts by preference and shuffles hosts of equal preference
// (RFC 5321 §5.1).
func orderMX(mxs []*net.MX) []string {
	cp := append([]*net.MX(nil), mxs...)
	rand.Shuffle(len(cp), func(i, j int) { cp[i], cp[j] = cp[j], cp[i] })
	sort.SliceStable(cp, func(i, j int) bool { return cp[i].Pref < cp[j].Pref })
	out := make([]string, 0, len(cp))
	for _, m := range cp {
		if m.Host != "." && m.Host != "" {
			out = append(out, m.Host)
		}
	}
	return out
}
