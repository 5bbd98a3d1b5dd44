package delivery

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/jetrelay/jetrelay/delivery/dkim"
	"github.com/rs/zerolog"
)

// DKIM results, for the log (dkim=) and
// jetrelay_dkim_signatures_total{domain,result}.
const (
	DKIMSigned = "signed" // signed; Domain and Selector name the key
	DKIMNoKey  = "no_key" // neither the From domain nor a fallback has a key
	DKIMFailed = "error"  // signing failed; the message went out unsigned
)

// DKIMResult says whether, and with which key, a delivery was signed.
// The zero value: signing is not configured, or the transport does not
// sign (Microsoft Graph, which builds its own message).
type DKIMResult struct {
	Result     string // DKIMSigned, DKIMNoKey, DKIMFailed
	Domain     string // d= of the key that signed
	Selector   string // s=
	FromDomain string // the From header's domain
	Err        error  // DKIMFailed: why
}

// dkimSignature is the seam between delivery and DKIM signing: it reads
// the message once, as writeBody will put it on the wire (through the
// same line folder, with line endings completed as the dotWriter
// completes them, without dot-stuffing, which the next hop removes), and
// returns the DKIM-Signature field to write in front of the second
// reading, the one that goes out. Nothing but the header section is held
// in memory. A failure to read the message is ErrBodyRead (the delivery
// cannot go ahead); a failure to sign is reported in the result, and the
// message goes unsigned rather than not at all.
func dkimSignature(s *dkim.Signer, open func() (io.ReadCloser, error), maxLine int, fallback string) ([]byte, DKIMResult, error) {
	if s == nil {
		return nil, DKIMResult{}, nil
	}
	wire := func(w io.Writer) io.WriteCloser { return newLineFolder(&crlfWriter{w: w}, maxLine) }
	sig, err := s.Sign(open, wire, fallback)
	switch {
	case errors.Is(err, dkim.ErrRead):
		return nil, DKIMResult{}, fmt.Errorf("%w: %w", ErrBodyRead, errors.Unwrap(err))
	case err != nil:
		return nil, DKIMResult{Result: DKIMFailed, Err: err}, nil
	case sig.Key == nil:
		return nil, DKIMResult{Result: DKIMNoKey, FromDomain: sig.FromDomain}, nil
	}
	return sig.Field, DKIMResult{Result: DKIMSigned, Domain: sig.Key.Domain, Selector: sig.Key.Selector, FromDomain: sig.FromDomain}, nil
}

// crlfWriter completes a bare CR or a bare LF to CRLF, as the dotWriter
// does on the wire, so that the hash sees the line endings the next hop
// sees.
type crlfWriter struct {
	w      io.Writer
	lastCR bool
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	start := 0
	for i := 0; i < len(p); {
		ch := p[i]
		switch {
		case c.lastCR && ch != '\n':
			// A bare CR: its LF goes before this octet.
			if err := c.flush(p[start:i], "\n"); err != nil {
				return 0, err
			}
			start = i
		case ch == '\n' && !c.lastCR:
			if err := c.flush(p[start:i], "\r"); err != nil {
				return 0, err
			}
			start = i
		}
		c.lastCR = ch == '\r'
		i++
		if !c.lastCR {
			// Up to the next CR or LF nothing changes.
			j := bytes.IndexAny(p[i:], "\r\n")
			if j < 0 {
				break
			}
			i += j
		}
	}
	if start < len(p) {
		if _, err := c.w.Write(p[start:]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *crlfWriter) flush(p []byte, add string) error {
	if len(p) > 0 {
		if _, err := c.w.Write(p); err != nil {
			return err
		}
	}
	_, err := io.WriteString(c.w, add)
	return err
}

// logDKIM adds the signing to a delivery's log line (which key, never
// the key itself) and counts it.
func (w *Worker) logDKIM(ev *zerolog.Event, r DKIMResult) *zerolog.Event {
	if r.Result == "" {
		return ev
	}
	domain := r.Domain
	if domain == "" {
		domain = "none"
	}
	w.metrics.dkim.WithLabelValues(domain, r.Result).Inc()
	ev = ev.Str("dkim", r.Result)
	if r.Result == DKIMSigned {
		ev = ev.Str("dkim_domain", r.Domain).Str("dkim_selector", r.Selector)
	}
	if r.FromDomain != "" {
		ev = ev.Str("from_domain", r.FromDomain)
	}
	if r.Err != nil {
		ev = ev.AnErr("dkim_error", r.Err)
	}
	return ev
}
