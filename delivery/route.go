package delivery

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/jetrelay/jetrelay/internal/config"
)

// destination is where a group of recipients goes: a route, the smart
// host, or the recipient domain's MX hosts. Recipients with the same
// destination key share one SMTP transaction.
type destination struct {
	key     string // "mx:example.com", "smarthost", "route:corp.example", "hop:host:port"
	kind    string // mx, smarthost, route, override
	domain  string // recipient domain, for MX lookups
	hosts   []string
	policy  string // TLS policy
	verify  bool   // verify the server certificate
	user    string
	pass    string
	plainOK bool // AUTH allowed without TLS
}

// hop is one address to connect to.
type hop struct {
	name string // host name: for TLS verification, logs and Received
	addr string // host:port or ip:port to dial
}

// Router decides destinations. Its configuration is fixed at start.
type Router struct {
	port      int
	smarthost []string
	shPolicy  string
	shVerify  bool
	shUser    string
	shPass    string
	shPlainOK bool
	mxPolicy  string
	routes    map[string]*destination
	resolver  *net.Resolver
	maxHosts  int
}

// RouterOptions configure a Router; secrets are already read from files.
type RouterOptions struct {
	Port                int
	Smarthost           []string
	SmarthostTLS        string
	SmarthostSkipVerify bool
	SmarthostUser       string
	SmarthostPassword   string
	SmarthostAllowPlain bool
	MXTLS               string
	Routes              map[string]config.Route
	RoutePasswords      map[string]string // domain → password read from password_file
	DNSServer           string
	MaxMXHosts          int
}

// NewRouter builds a Router.
func NewRouter(o RouterOptions) *Router {
	r := &Router{
		port:      o.Port,
		smarthost: o.Smarthost,
		shPolicy:  o.SmarthostTLS,
		shVerify:  !o.SmarthostSkipVerify,
		shUser:    o.SmarthostUser,
		shPass:    o.SmarthostPassword,
		shPlainOK: o.SmarthostAllowPlain,
		mxPolicy:  o.MXTLS,
		routes:    map[string]*destination{},
		maxHosts:  o.MaxMXHosts,
	}
	if r.maxHosts <= 0 {
		r.maxHosts = 5
	}
	if r.mxPolicy == "" {
		r.mxPolicy = config.TLSOpportunistic
	}
	if r.shPolicy == "" {
		r.shPolicy = config.TLSOpportunistic
	}
	for dom, rt := range o.Routes {
		d := strings.ToLower(strings.TrimSuffix(dom, "."))
		hosts := []string{}
		if rt.Host != "" {
			hosts = append(hosts, rt.Host)
		}
		hosts = append(hosts, rt.Hosts...)
		pass := rt.Password
		if p, ok := o.RoutePasswords[dom]; ok {
			pass = p
		}
		policy := rt.TLS
		if policy == "" {
			policy = config.TLSOpportunistic
		}
		r.routes[d] = &destination{
			key: "route:" + d, kind: "route", domain: d, hosts: hosts, policy: policy,
			verify: !rt.TLSSkipVerify, user: rt.Username, pass: pass, plainOK: rt.AllowPlainAuth,
		}
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

// destinationFor routes one recipient domain, first match wins: a per-job
// override (replay --route), delivery.routes, the smart host, direct MX.
func (r *Router) destinationFor(j *contracts.Job, domain string) *destination {
	domain = strings.ToLower(domain)
	if j.Route != "" {
		return &destination{key: "hop:" + j.Route, kind: "override", domain: domain, hosts: []string{j.Route},
			policy: config.TLSOpportunistic, verify: false}
	}
	if d, ok := r.routes[domain]; ok {
		return d
	}
	if len(r.smarthost) > 0 {
		return &destination{key: "smarthost", kind: "smarthost", domain: domain, hosts: r.smarthost,
			policy: r.shPolicy, verify: r.shVerify, user: r.shUser, pass: r.shPass, plainOK: r.shPlainOK}
	}
	return &destination{key: "mx:" + domain, kind: "mx", domain: domain, policy: r.mxPolicy,
		verify: r.mxPolicy == config.TLSRequired}
}

// routeError is a routing failure with its SMTP-style classification.
type routeError struct {
	reply contracts.Reply
}

func (e *routeError) Error() string { return e.reply.String() }

// hops lists the addresses to try for a destination, in order, at most
// maxHosts of them.
func (r *Router) hops(ctx context.Context, d *destination) ([]hop, error) {
	if d.kind != "mx" {
		out := make([]hop, 0, len(d.hosts))
		for _, h := range d.hosts {
			host, _, err := net.SplitHostPort(h)
			if err != nil {
				host, h = h, net.JoinHostPort(h, "25")
			}
			out = append(out, hop{name: host, addr: h})
		}
		return out, nil
	}
	port := strconv.Itoa(r.port)
	// An address literal: deliver to that address.
	if strings.HasPrefix(d.domain, "[") && strings.HasSuffix(d.domain, "]") {
		lit := strings.TrimPrefix(strings.TrimPrefix(d.domain[1:len(d.domain)-1], "IPv6:"), "ipv6:")
		a, err := netip.ParseAddr(lit)
		if err != nil {
			return nil, &routeError{contracts.Reply{Code: 550, Enhanced: "5.1.2", Text: "bad address literal " + d.domain}}
		}
		return []hop{{name: a.String(), addr: net.JoinHostPort(a.String(), port)}}, nil
	}
	fqdn := d.domain + "."
	mxs, err := r.resolver.LookupMX(ctx, fqdn)
	var hosts []string
	switch {
	case err == nil && len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == ""):
		// RFC 7505 null MX: the domain accepts no mail.
		return nil, &routeError{contracts.Reply{Code: 556, Enhanced: "5.1.10", Text: d.domain + " does not accept mail (null MX)"}}
	case err == nil && len(mxs) > 0:
		hosts = orderMX(mxs)
	case err == nil || isNotFound(err):
		// No MX records: the domain itself is the implicit MX (RFC 5321
		// §5.1), if it has an address at all.
		hosts = []string{d.domain}
	default:
		return nil, dnsError(d.domain, "MX", err)
	}
	var out []hop
	var lastErr error
	for _, h := range hosts {
		if len(out) >= r.maxHosts {
			break
		}
		ips, err := r.resolver.LookupNetIP(ctx, "ip", strings.TrimSuffix(h, ".")+".")
		if err != nil {
			lastErr = err
			continue
		}
		for _, ip := range ips {
			if len(out) >= r.maxHosts {
				break
			}
			out = append(out, hop{name: strings.TrimSuffix(h, "."), addr: net.JoinHostPort(ip.Unmap().String(), port)})
		}
	}
	if len(out) == 0 {
		if len(hosts) == 1 && hosts[0] == d.domain && (lastErr == nil || isNotFound(lastErr)) {
			return nil, &routeError{contracts.Reply{Code: 550, Enhanced: "5.1.2", Text: "domain " + d.domain + " not found"}}
		}
		if lastErr != nil && !isNotFound(lastErr) {
			return nil, dnsError(d.domain, "address", lastErr)
		}
		return nil, &routeError{contracts.Reply{Code: 451, Enhanced: "4.4.4", Text: "no address found for the MX hosts of " + d.domain}}
	}
	return out, nil
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

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// dnsError classifies a lookup failure: NXDOMAIN is permanent, everything
// else (SERVFAIL, timeouts, refused) temporary.
func dnsError(domain, what string, err error) error {
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		return &routeError{contracts.Reply{Code: 550, Enhanced: "5.1.2", Text: fmt.Sprintf("domain %s not found", domain)}}
	}
	return &routeError{contracts.Reply{Code: 451, Enhanced: "4.4.3", Text: fmt.Sprintf("DNS %s lookup for %s failed: %v", what, domain, err)}}
}
