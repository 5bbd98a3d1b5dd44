package dkim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"sort"
	"strings"
	"sync"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// DefaultHeaders are the header fields signed unless configured
// otherwise: those a receiver shows or that shape how the message reads
// (RFC 6376 §5.4.1), From twice so that a second From added on the way
// breaks the signature (over-signing, §8.15). A field listed but absent
// is signed as absent: adding it later breaks the signature too.
func DefaultHeaders() []string {
	return []string{"From", "From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version",
		"Content-Type", "Content-Transfer-Encoding", "Reply-To"}
}

// Options configure a Signer.
type Options struct {
	// Keys sign for their domains, one key per domain.
	Keys []*Key
	// Headers are the fields to sign, in h= order (nil: DefaultHeaders);
	// From must be among them.
	Headers []string
	// Fallback is the domain whose key signs a message whose From domain
	// has none and whose route names no fallback of its own ("": such a
	// message goes unsigned).
	Fallback string
}

// Signer chooses a message's key and signs it, relaxed/relaxed, with
// SHA-256. It is safe for concurrent use.
type Signer struct {
	keys     map[string]*Key
	headers  []string
	fallback string
}

// NewSigner checks the options and builds a Signer.
func NewSigner(o Options) (*Signer, error) {
	s := &Signer{keys: map[string]*Key{}, headers: o.Headers, fallback: NormalizeDomain(o.Fallback)}
	if s.headers == nil {
		s.headers = DefaultHeaders()
	}
	from := false
	for _, h := range s.headers {
		if strings.EqualFold(h, "From") {
			from = true
		}
		if !ValidFieldName(h) {
			return nil, fmt.Errorf("%q is not a header field name", h)
		}
	}
	if !from {
		return nil, errors.New("the signed header fields must include From (RFC 6376 §5.4)")
	}
	for _, k := range o.Keys {
		d := NormalizeDomain(k.Domain)
		if _, dup := s.keys[d]; dup {
			return nil, fmt.Errorf("two keys for %s: one key signs per domain", d)
		}
		if k.Signer == nil || KeyType(k.Signer) == "" {
			return nil, fmt.Errorf("the key for %s cannot sign", d)
		}
		cp := *k
		cp.Domain = d
		s.keys[d] = &cp
	}
	if s.fallback != "" && s.keys[s.fallback] == nil {
		return nil, fmt.Errorf("the fallback domain %s has no key", s.fallback)
	}
	return s, nil
}

// Has reports whether domain has a key.
func (s *Signer) Has(domain string) bool { return s != nil && s.keys[NormalizeDomain(domain)] != nil }

// Keys lists the keys, by domain.
func (s *Signer) Keys() []*Key {
	out := make([]*Key, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out
}

// NormalizeDomain lower-cases a domain and drops a trailing dot.
func NormalizeDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
}

// keyFor picks the key of a message from fromDomain: its own, its
// closest parent's, the route's fallback, the Signer's fallback.
func (s *Signer) keyFor(fromDomain, fallback string) *Key {
	for d := fromDomain; strings.Contains(d, "."); d = d[strings.IndexByte(d, '.')+1:] {
		if k := s.keys[d]; k != nil {
			return k
		}
	}
	if k := s.keys[NormalizeDomain(fallback)]; k != nil {
		return k
	}
	return s.keys[s.fallback]
}

// Signature is the outcome of Sign.
type Signature struct {
	// Field is the DKIM-Signature header field with its CRLF, to write in
	// front of the message; nil when the message is not signed.
	Field []byte
	// Key signed (nil: no key for this message).
	Key *Key
	// FromDomain is the From header's domain ("" none found).
	FromDomain string
}

// ErrRead marks a failure to open or read the message (as opposed to a
// failure to sign it).
var ErrRead = errors.New("reading the message")

// errUnsigned stops reading once it is known that no key signs.
var errUnsigned = errors.New("no key for this message")

// maxHeader bounds the header section held in memory while the key is
// chosen; a longer one is signed with what is known by then.
const maxHeader = 1 << 20

// Sign reads the message once and returns its signature. open opens the
// message; wire (nil: none) turns what it reads into what goes on the
// wire, writing to the io.Writer it is given, so that the hash covers the
// bytes the next hop gets (delivery passes its line folder); fallback
// names the domain whose key signs when the From domain has none ("": the
// Signer's own fallback). Only the header section is kept in memory; the
// body is hashed as it streams, and not read at all once it is known
// that no key signs. An error wraps ErrRead when the message could not be
// read.
func (s *Signer) Sign(open func() (io.ReadCloser, error), wire func(io.Writer) io.WriteCloser, fallback string) (*Signature, error) {
	rc, err := open()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRead, err)
	}
	defer rc.Close()
	t := &tap{s: s, fallback: fallback}
	defer t.abort()
	var w io.Writer = t
	var wc io.WriteCloser
	if wire != nil {
		wc = wire(t)
		w = wc
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	for {
		n, rerr := rc.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				if errors.Is(err, errUnsigned) {
					return &Signature{FromDomain: t.from}, nil
				}
				return nil, err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("%w: %w", ErrRead, rerr)
		}
	}
	if wc != nil {
		if err := wc.Close(); err != nil {
			if errors.Is(err, errUnsigned) {
				return &Signature{FromDomain: t.from}, nil
			}
			return nil, err
		}
	}
	return t.finish()
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// tap collects the header section, chooses the key once it is complete,
// and then streams everything into go-msgauth's signer.
type tap struct {
	s        *Signer
	fallback string
	hdr      []byte
	decided  bool
	key      *Key
	from     string
	sig      *msgauth.Signer
	closed   bool
}

func (t *tap) Write(p []byte) (int, error) {
	if t.decided {
		if t.sig == nil {
			return 0, errUnsigned
		}
		return t.sig.Write(p)
	}
	t.hdr = append(t.hdr, p...)
	if !bytes.HasPrefix(t.hdr, []byte("\r\n")) && !bytes.Contains(t.hdr, []byte("\r\n\r\n")) && len(t.hdr) < maxHeader {
		return len(p), nil
	}
	if err := t.decide(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// decide chooses the key from the header section collected so far and
// starts the signer with it.
func (t *tap) decide() error {
	t.decided = true
	t.from = FromDomain(t.hdr)
	t.key = t.s.keyFor(t.from, t.fallback)
	if t.key == nil {
		t.hdr = nil
		return errUnsigned
	}
	sig, err := msgauth.NewSigner(&msgauth.SignOptions{
		Domain: t.key.Domain, Selector: t.key.Selector, Signer: t.key.Signer,
		HeaderCanonicalization: msgauth.CanonicalizationRelaxed, BodyCanonicalization: msgauth.CanonicalizationRelaxed,
		HeaderKeys: t.s.headers,
	})
	if err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	t.sig = sig
	hdr := t.hdr
	t.hdr = nil
	if _, err := sig.Write(hdr); err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	return nil
}

// finish ends the message: a message that was all header section (no
// empty line) is signed as having an empty body.
func (t *tap) finish() (*Signature, error) {
	if !t.decided {
		if !bytes.HasSuffix(t.hdr, []byte("\r\n")) && len(t.hdr) > 0 {
			t.hdr = append(t.hdr, '\r', '\n')
		}
		t.hdr = append(t.hdr, '\r', '\n')
		if err := t.decide(); err != nil {
			if errors.Is(err, errUnsigned) {
				return &Signature{FromDomain: t.from}, nil
			}
			return nil, err
		}
	}
	if t.sig == nil {
		return &Signature{FromDomain: t.from}, nil
	}
	t.closed = true
	if err := t.sig.Close(); err != nil {
		return nil, fmt.Errorf("dkim: signing with %s: %w", t.key, err)
	}
	return &Signature{Field: []byte(t.sig.Signature()), Key: t.key, FromDomain: t.from}, nil
}

// abort ends go-msgauth's goroutine when Sign returns early.
func (t *tap) abort() {
	if t.sig != nil && !t.closed {
		t.closed = true
		_ = t.sig.Close()
	}
}

// FromDomain is the domain of the first address of the first From field
// in a header section, lower case ("" when there is none).
func FromDomain(header []byte) string {
	for _, f := range fields(header) {
		name, value, ok := strings.Cut(f, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "From") {
			continue
		}
		addr := ""
		if list, err := mail.ParseAddressList(value); err == nil && len(list) > 0 {
			addr = list[0].Address
		} else {
			// Not RFC 5322 (a bare address with a comment, odd quoting):
			// the first thing that looks like an address.
			for _, w := range strings.FieldsFunc(value, func(r rune) bool { return strings.ContainsRune(" \t<>,;()\"", r) }) {
				if strings.Contains(w, "@") {
					addr = w
					break
				}
			}
		}
		if i := strings.LastIndexByte(addr, '@'); i >= 0 {
			return NormalizeDomain(addr[i+1:])
		}
		return ""
	}
	return ""
}

// fields splits a header section into unfolded fields.
func fields(header []byte) []string {
	var out []string
	for _, line := range strings.Split(string(header), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && len(out) > 0 {
			out[len(out)-1] += line
			continue
		}
		out = append(out, line)
	}
	return out
}

// ValidFieldName reports whether s is a header field name (RFC 5322
// §3.6.8: printable ASCII except the colon).
func ValidFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' || s[i] == ':' {
			return false
		}
	}
	return true
}

// VerifyMessage verifies msg's DKIM signatures with go-msgauth, looking
// the keys up with res, and returns nil when a signature of domain
// verifies.
func VerifyMessage(ctx context.Context, res Resolver, msg []byte, domain string) error {
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if !strings.HasSuffix(name, ".") {
				name += "."
			}
			return res.LookupTXT(ctx, name)
		},
	})
	if err != nil {
		return err
	}
	var last error = fmt.Errorf("the message has no signature of %s", domain)
	for _, v := range vs {
		if NormalizeDomain(v.Domain) != NormalizeDomain(domain) {
			continue
		}
		if v.Err == nil {
			return nil
		}
		last = v.Err
	}
	return last
}
