package ingress

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// checkAddress validates a mailbox as go-smtp hands it over (angle brackets
// and any source route already removed, quotes of a quoted local part
// removed) and returns it with the domain lower-cased. It is strict on
// purpose: an address that the next hop could read differently from us
// (two '@', a trailing dot, control characters) is refused rather than
// relayed. utf8 says whether the client declared SMTPUTF8.
func checkAddress(addr string, utf8Allowed bool) (string, error) {
	if len(addr) > 254 {
		return "", fmt.Errorf("address longer than 254 octets")
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", fmt.Errorf("%q is not local@domain", addr)
	}
	local, domain := addr[:at], addr[at+1:]
	if len(local) > 64 {
		return "", fmt.Errorf("local part longer than 64 octets")
	}
	if strings.IndexByte(local, '@') >= 0 {
		// A quoted local part with '@' in it: relayed as is, the next hop
		// may split it elsewhere.
		return "", fmt.Errorf("%q: '@' in the local part", addr)
	}
	ascii := true
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("control character in %q", addr)
		}
		if c >= 0x80 {
			ascii = false
		}
	}
	if !ascii {
		if !utf8Allowed {
			return "", ErrNeedSMTPUTF8
		}
		if !utf8.ValidString(addr) {
			return "", fmt.Errorf("%q is not valid UTF-8", addr)
		}
	}
	if strings.ContainsAny(local, " \t\"\\") {
		return "", fmt.Errorf("%q: characters that need quoting in the local part", addr)
	}
	if strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, "..") {
		return "", fmt.Errorf("%q: malformed dot-string local part", addr)
	}
	d, err := checkDomain(domain)
	if err != nil {
		return "", fmt.Errorf("%q: %w", addr, err)
	}
	return local + "@" + d, nil
}

// checkDomain validates a domain or address literal and lower-cases it.
func checkDomain(domain string) (string, error) {
	if strings.HasPrefix(domain, "[") {
		if !strings.HasSuffix(domain, "]") {
			return "", fmt.Errorf("unterminated address literal")
		}
		lit := domain[1 : len(domain)-1]
		v6, isV6 := strings.CutPrefix(lit, "IPv6:")
		if !isV6 {
			v6, isV6 = strings.CutPrefix(lit, "ipv6:")
		}
		a, err := netip.ParseAddr(v6)
		if err != nil || a.Is6() != isV6 || a.Zone() != "" {
			return "", fmt.Errorf("bad address literal %q", domain)
		}
		return domain, nil
	}
	if len(domain) > 253 {
		return "", fmt.Errorf("domain longer than 253 octets")
	}
	if strings.HasSuffix(domain, ".") {
		return "", fmt.Errorf("trailing dot in domain")
	}
	labels := strings.Split(domain, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "", fmt.Errorf("bad domain label in %q", domain)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("label %q starts or ends with '-'", l)
		}
		for _, r := range l {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			case r >= 0x80:
				// U-label (SMTPUTF8 was checked by the caller).
			default:
				return "", fmt.Errorf("character %q not allowed in a domain", r)
			}
		}
	}
	return strings.ToLower(domain), nil
}
