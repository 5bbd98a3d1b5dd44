// Package mtasts is SMTP MTA Strict Transport Security (RFC 8461) for
// direct MX delivery: the _mta-sts TXT record and the policy file
// (parsing), the MX host patterns (matching), the policy fetch over HTTPS
// with the RFC's rules (fetch.go), and the policy cache that every worker
// shares through the broker (cache.go).
//
// Invariants:
//
//   - A policy is only ever taken from a TXT record that parses and a
//     policy file fetched over HTTPS with a certificate valid for
//     mta-sts.<domain>, without redirects, as text/plain, within
//     MaxPolicySize and the fetch timeout.
//   - A cached policy is used until its max_age runs out, also when the
//     TXT record disappears or a refresh fails (RFC 8461 §5.1); a new TXT
//     id makes the next delivery fetch the policy again.
//   - Failures to find a policy never stop delivery by themselves: without
//     a valid policy the destination is treated as having none. Only an
//     enforce policy that a delivery violates makes it fail, and the
//     caller (delivery) decides what that means.
//
// The package knows nothing about SMTP or the broker; delivery applies a
// policy to its connections and the broker stores the cache.
package mtasts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is a policy's mode.
type Mode string

// The modes of RFC 8461 §3.2.
const (
	// ModeEnforce: deliver only to matching MX hosts over verified TLS.
	ModeEnforce Mode = "enforce"
	// ModeTesting: deliver as usual, report what would have failed.
	ModeTesting Mode = "testing"
	// ModeNone: the domain withdrew its policy.
	ModeNone Mode = "none"
)

// MaxAgeLimit is the largest max_age a policy may have (RFC 8461 §3.2:
// about one year); a larger value is capped to it.
const MaxAgeLimit = 31557600 * time.Second

// MaxPolicySize is the largest policy file accepted (RFC 8461 §3.3
// suggests 64 KiB).
const MaxPolicySize = 64 << 10

// Policy is a parsed policy file.
type Policy struct {
	Mode   Mode
	MaxAge time.Duration
	// MX are the patterns of the MX hosts allowed: "mail.example.com" or
	// "*.example.com" (one leftmost label), lower case, without a final dot.
	MX []string
	// Text is the policy file as fetched (for the TLS report's
	// policy-string).
	Text string
}

// ErrInvalid marks a policy file or TXT record that does not parse.
var ErrInvalid = errors.New("invalid MTA-STS policy")

// Parse reads a policy file (RFC 8461 §3.2): "key: value" lines ended by
// CRLF or LF; version must be STSv1; mode and max_age are required, and at
// least one mx unless the mode is none. Unknown keys are ignored; of a
// repeated key other than mx the first counts.
func Parse(text string) (*Policy, error) {
	if len(text) > MaxPolicySize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxPolicySize)
	}
	p := &Policy{Text: text}
	seen := map[string]bool{}
	version, maxAge := "", ""
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%w: line %d has no \"key: value\": %q", ErrInvalid, n+1, clip(line))
		}
		key = strings.TrimSpace(key)
		val = strings.Trim(val, " \t")
		if key == "" || !fieldName(key) {
			return nil, fmt.Errorf("%w: line %d: bad field name %q", ErrInvalid, n+1, clip(key))
		}
		if key == "mx" {
			pat := strings.ToLower(strings.TrimSuffix(val, "."))
			if !validPattern(pat) {
				return nil, fmt.Errorf("%w: line %d: bad mx pattern %q", ErrInvalid, n+1, clip(val))
			}
			p.MX = append(p.MX, pat)
			continue
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		switch key {
		case "version":
			version = val
		case "mode":
			p.Mode = Mode(val)
		case "max_age":
			maxAge = val
		}
	}
	if version != "STSv1" {
		return nil, fmt.Errorf("%w: version is %q, not STSv1", ErrInvalid, clip(version))
	}
	switch p.Mode {
	case ModeEnforce, ModeTesting, ModeNone:
	case "":
		return nil, fmt.Errorf("%w: no mode", ErrInvalid)
	default:
		return nil, fmt.Errorf("%w: mode %q is not enforce, testing or none", ErrInvalid, clip(string(p.Mode)))
	}
	if maxAge == "" || len(maxAge) > 10 || strings.TrimLeft(maxAge, "0123456789") != "" {
		return nil, fmt.Errorf("%w: max_age %q is not a number of seconds", ErrInvalid, clip(maxAge))
	}
	secs, _ := strconv.ParseInt(maxAge, 10, 64)
	p.MaxAge = time.Duration(min(secs, int64(MaxAgeLimit/time.Second))) * time.Second
	if len(p.MX) == 0 && p.Mode != ModeNone {
		return nil, fmt.Errorf("%w: no mx patterns in %s mode", ErrInvalid, p.Mode)
	}
	return p, nil
}

// fieldName: sts-policy-term = ALPHA *(ALPHA / DIGIT / "_" / "-" / ".")
// (RFC 8461 §3.2), at most 32 characters.
func fieldName(s string) bool {
	if len(s) > 32 || !alpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !alpha(c) && !digit(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func alpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func digit(c byte) bool { return c >= '0' && c <= '9' }

// validPattern: a host name, or "*." followed by one (a wildcard only
// ever stands for the leftmost label).
func validPattern(p string) bool {
	host := strings.TrimPrefix(p, "*.")
	if host == "" || len(host) > 253 {
		return false
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !alpha(c) && !digit(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Matches reports whether host (an MX host name) is allowed by one of
// the policy's mx patterns (RFC 8461 §4.1): equal ignoring case and a
// final dot, or, for "*.example.com", the pattern with its "*" replaced
// by exactly one label ("mx.example.com", not "example.com" nor
// "a.b.example.com").
func (p *Policy) Matches(host string) bool {
	for _, pat := range p.MX {
		if MatchPattern(pat, host) {
			return true
		}
	}
	return false
}

// MatchPattern matches one mx pattern against a host name.
func MatchPattern(pattern, host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	pattern = strings.ToLower(strings.TrimSuffix(pattern, "."))
	if host == "" || pattern == "" {
		return false
	}
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		first, parent, ok := strings.Cut(host, ".")
		return ok && first != "" && parent == rest
	}
	return host == pattern
}

// ParseTXT reads the records at _mta-sts.<domain> (RFC 8461 §3.1):
// records that do not start with "v=STSv1" are ignored; exactly one must
// remain, with an id of 1 to 32 letters and digits. It returns the id,
// or an error wrapping ErrNoRecord (none) or ErrInvalid.
func ParseTXT(records []string) (string, error) {
	var sts []string
	for _, r := range records {
		if strings.HasPrefix(r, "v=STSv1") {
			sts = append(sts, r)
		}
	}
	switch len(sts) {
	case 0:
		return "", ErrNoRecord
	case 1:
	default:
		return "", fmt.Errorf("%w: %d TXT records start with v=STSv1, there must be one", ErrInvalid, len(sts))
	}
	id := ""
	for i, f := range strings.Split(sts[0], ";") {
		f = strings.Trim(f, " \t")
		if f == "" {
			continue
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return "", fmt.Errorf("%w: TXT field %q is not key=value", ErrInvalid, clip(f))
		}
		switch {
		case i == 0 && (k != "v" || v != "STSv1"):
			return "", fmt.Errorf("%w: TXT record must start with v=STSv1", ErrInvalid)
		case k == "id" && id == "":
			if len(v) < 1 || len(v) > 32 || strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
				return "", fmt.Errorf("%w: TXT id %q is not 1 to 32 letters and digits", ErrInvalid, clip(v))
			}
			id = v
		}
	}
	if id == "" {
		return "", fmt.Errorf("%w: TXT record has no id", ErrInvalid)
	}
	return id, nil
}

// ErrNoRecord: the domain publishes no _mta-sts TXT record.
var ErrNoRecord = errors.New("no MTA-STS TXT record")
