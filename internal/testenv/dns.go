package testenv

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNS is an authoritative test DNS server on loopback (UDP and TCP on the
// same port) for MX routing tests. Names it does not know get NXDOMAIN;
// known names without the asked type get NODATA (NOERROR with an SOA).
type DNS struct {
	Addr string

	mu       sync.Mutex
	mx       map[string][]*dns.MX
	addrs    map[string][]net.IP
	servfail map[string]bool
	known    map[string]bool
	txt      map[string][][]string
	udp, tcp *dns.Server
}

// NewDNS starts the server; it stops when the test ends.
func NewDNS(t testing.TB) *DNS {
	t.Helper()
	d := &DNS{mx: map[string][]*dns.MX{}, addrs: map[string][]net.IP{}, servfail: map[string]bool{}, known: map[string]bool{}, txt: map[string][][]string{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	d.Addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(d.serve)
	d.udp = &dns.Server{PacketConn: pc, Handler: h}
	d.tcp = &dns.Server{Listener: l, Handler: h}
	started := make(chan struct{}, 2)
	d.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	d.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go func() { _ = d.udp.ActivateAndServe() }()
	go func() { _ = d.tcp.ActivateAndServe() }()
	<-started
	<-started
	t.Cleanup(func() {
		_ = d.udp.Shutdown()
		_ = d.tcp.Shutdown()
	})
	return d
}

func fqdn(name string) string { return dns.Fqdn(strings.ToLower(name)) }

// MXRecord is one MX answer.
type MXRecord struct {
	Pref uint16
	Host string
}

// SetMX sets the MX records of a domain.
func (d *DNS) SetMX(domain string, recs ...MXRecord) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*dns.MX
	for _, r := range recs {
		out = append(out, &dns.MX{Hdr: dns.RR_Header{Name: fqdn(domain), Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: 60},
			Preference: r.Pref, Mx: fqdn(r.Host)})
	}
	d.mx[fqdn(domain)] = out
	d.known[fqdn(domain)] = true
}

// SetNullMX publishes RFC 7505's "MX 0 ." for a domain.
func (d *DNS) SetNullMX(domain string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mx[fqdn(domain)] = []*dns.MX{{Hdr: dns.RR_Header{Name: fqdn(domain), Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: 60}, Preference: 0, Mx: "."}}
	d.known[fqdn(domain)] = true
}

// SetAddr sets the A/AAAA records of a name.
func (d *DNS) SetAddr(name string, ips ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []net.IP
	for _, ip := range ips {
		out = append(out, net.ParseIP(ip))
	}
	d.addrs[fqdn(name)] = out
	d.known[fqdn(name)] = true
}

// SetTXT sets the TXT records of a name: one record per argument, each
// record its character-strings (a DKIM RSA key needs several, of at most
// 255 octets each).
func (d *DNS) SetTXT(name string, records ...[]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.txt[fqdn(name)] = records
	d.known[fqdn(name)] = true
}

// SetServFail makes every query for name fail with SERVFAIL (or stop
// failing with false).
func (d *DNS) SetServFail(name string, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.servfail[fqdn(name)] = on
}

func (d *DNS) serve(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.servfail[name]:
		m.Rcode = dns.RcodeServerFailure
	case !d.known[name]:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa(name)}
	default:
		switch q.Qtype {
		case dns.TypeMX:
			for _, rr := range d.mx[name] {
				m.Answer = append(m.Answer, rr)
			}
		case dns.TypeTXT:
			for _, strs := range d.txt[name] {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: strs})
			}
		case dns.TypeA, dns.TypeAAAA:
			for _, ip := range d.addrs[name] {
				if ip4 := ip.To4(); ip4 != nil && q.Qtype == dns.TypeA {
					m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: ip4})
				} else if ip.To4() == nil && q.Qtype == dns.TypeAAAA {
					m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: ip})
				}
			}
		}
		if len(m.Answer) == 0 {
			m.Ns = []dns.RR{soa(name)}
		}
	}
	_ = w.WriteMsg(m)
}

func soa(name string) dns.RR {
	return &dns.SOA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "ns.test.", Mbox: "hostmaster.test.", Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 60}
}
