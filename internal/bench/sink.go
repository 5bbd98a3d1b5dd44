package bench

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ObserveFunc is called by the sink for every message it accepted, with
// the message's bench ID (nil if it had none; valid only during the
// call), the number of recipients of the transaction and the time the end
// of data arrived. It returns false for a message that is not part of the
// run (counted as foreign).
type ObserveFunc func(id []byte, rcpts int, at time.Time) bool

// SinkStats are a sink's counters.
type SinkStats struct {
	Connections int64 `json:"connections"`
	Messages    int64 `json:"messages"`
	Recipients  int64 `json:"recipients"`
	Bytes       int64 `json:"bytes"`
	// Foreign counts messages without a bench ID of the current run.
	Foreign int64 `json:"foreign"`
	// First and Last are the arrival times of the first and the last
	// message (zero before any).
	First time.Time `json:"-"`
	Last  time.Time `json:"-"`
}

// Sink is a minimal, fast SMTP server that accepts and discards
// everything: EHLO (PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES),
// HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT. It answers pipelined commands
// in batches and reads DATA line by line out of a large buffer without
// copying; of a message it looks only at the X-Bench-Id header.
type Sink struct {
	ln       net.Listener
	observe  ObserveFunc
	hostname string
	idle     time.Duration

	conns, msgs, rcpts, bytes, foreign atomic.Int64
	first, last                        atomic.Int64 // unix nanoseconds

	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// SinkOptions configure a Sink.
type SinkOptions struct {
	// Hostname for the banner and EHLO (default "bench-sink").
	Hostname string
	// IdleTimeout closes a connection silent this long (default 5m).
	IdleTimeout time.Duration
	// Observe is called for every accepted message (may be nil).
	Observe ObserveFunc
}

// ListenSink starts a sink on addr ("127.0.0.1:0" for any free port).
func ListenSink(addr string, o SinkOptions) (*Sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewSink(ln, o), nil
}

// NewSink serves SMTP on ln until Close.
func NewSink(ln net.Listener, o SinkOptions) *Sink {
	s := &Sink{ln: ln, observe: o.Observe, hostname: o.Hostname, idle: o.IdleTimeout, open: map[net.Conn]struct{}{}}
	if s.hostname == "" {
		s.hostname = "bench-sink"
	}
	if s.idle <= 0 {
		s.idle = 5 * time.Minute
	}
	s.wg.Add(1)
	go s.serve()
	return s
}

// Addr is the address the sink listens on.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Stats returns the counters so far.
func (s *Sink) Stats() SinkStats {
	st := SinkStats{
		Connections: s.conns.Load(), Messages: s.msgs.Load(), Recipients: s.rcpts.Load(),
		Bytes: s.bytes.Load(), Foreign: s.foreign.Load(),
	}
	if f := s.first.Load(); f != 0 {
		st.First = time.Unix(0, f)
		st.Last = time.Unix(0, s.last.Load())
	}
	return st
}

// Close stops listening, closes every connection and waits for their
// goroutines.
func (s *Sink) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Sink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.open[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.conns.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
			c.Close()
			s.mu.Lock()
			delete(s.open, c)
			s.mu.Unlock()
		}()
	}
}

// Canned replies.
var (
	replyOK       = []byte("250 2.0.0 Ok\r\n")
	replyMail     = []byte("250 2.1.0 Ok\r\n")
	replyRcpt     = []byte("250 2.1.5 Ok\r\n")
	replyQueued   = []byte("250 2.0.0 Ok: queued\r\n")
	replyData     = []byte("354 End data with <CR><LF>.<CR><LF>\r\n")
	replyBye      = []byte("221 2.0.0 Bye\r\n")
	replyNoRcpt   = []byte("554 5.5.1 Error: no valid recipients\r\n")
	replyNoMail   = []byte("503 5.5.1 Error: need MAIL command\r\n")
	replyUnknown  = []byte("502 5.5.2 Error: command not recognized\r\n")
	replyVrfy     = []byte("252 2.0.0 Send some mail, I'll try my best\r\n")
	replyTooLong  = []byte("500 5.5.2 Error: line too long\r\n")
	replyTimeout  = []byte("421 4.4.2 Error: timeout exceeded\r\n")
	ehloFeatures  = "250-PIPELINING\r\n250-SIZE 1073741824\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
	headerPrefix  = []byte(HeaderName + ":")
	maxHeaderScan = 64 << 10
)

func (s *Sink) handle(c net.Conn) {
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 4<<10)
	deadline := func() { _ = c.SetReadDeadline(time.Now().Add(s.idle)) }
	deadline()
	w.WriteString("220 " + s.hostname + " ESMTP bench sink\r\n")
	w.Flush()
	var (
		inMail bool
		rcpts  int
		id     = make([]byte, 0, 128)
	)
	for {
		// Answer a batch of pipelined commands with one write.
		if r.Buffered() == 0 {
			if w.Flush() != nil {
				return
			}
		}
		line, err := r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				w.Write(replyTooLong)
				w.Flush()
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				w.Write(replyTimeout)
				w.Flush()
			}
			return
		}
		verb := cmdVerb(line)
		switch verb {
		case verbMAIL:
			deadline()
			inMail, rcpts = true, 0
			w.Write(replyMail)
		case verbRCPT:
			if !inMail {
				w.Write(replyNoMail)
				continue
			}
			rcpts++
			w.Write(replyRcpt)
		case verbDATA:
			if !inMail || rcpts == 0 {
				w.Write(replyNoRcpt)
				continue
			}
			w.Write(replyData)
			if w.Flush() != nil {
				return
			}
			n, err := readData(r, &id)
			if err != nil {
				return
			}
			// Answer before counting: a sink-only run stops (and closes
			// every connection) as soon as the count is reached, and the
			// client must have its 250 by then.
			w.Write(replyQueued)
			if w.Flush() != nil {
				return
			}
			now := time.Now()
			ns := now.UnixNano()
			s.first.CompareAndSwap(0, ns)
			for {
				old := s.last.Load()
				if ns <= old || s.last.CompareAndSwap(old, ns) {
					break
				}
			}
			s.msgs.Add(1)
			s.rcpts.Add(int64(rcpts))
			s.bytes.Add(n)
			if s.observe != nil {
				var idv []byte
				if len(id) > 0 {
					idv = id
				}
				if !s.observe(idv, rcpts, now) {
					s.foreign.Add(1)
				}
			}
			inMail, rcpts = false, 0
		case verbEHLO:
			inMail, rcpts = false, 0
			w.WriteString("250-" + s.hostname + "\r\n" + ehloFeatures)
		case verbHELO:
			inMail, rcpts = false, 0
			w.WriteString("250 " + s.hostname + "\r\n")
		case verbRSET:
			inMail, rcpts = false, 0
			w.Write(replyOK)
		case verbNOOP:
			w.Write(replyOK)
		case verbVRFY:
			w.Write(replyVrfy)
		case verbQUIT:
			w.Write(replyBye)
			w.Flush()
			return
		default:
			w.Write(replyUnknown)
		}
	}
}

const (
	verbUnknown = iota
	verbMAIL
	verbRCPT
	verbDATA
	verbEHLO
	verbHELO
	verbRSET
	verbNOOP
	verbVRFY
	verbQUIT
)

// cmdVerb recognizes the command of a line by its first four letters,
// case-insensitively.
func cmdVerb(line []byte) int {
	if len(line) < 4 {
		return verbUnknown
	}
	if len(line) > 4 && line[4] != ' ' && line[4] != '\r' && line[4] != '\n' {
		return verbUnknown
	}
	v := uint32(line[0]|0x20)<<24 | uint32(line[1]|0x20)<<16 | uint32(line[2]|0x20)<<8 | uint32(line[3]|0x20)
	switch v {
	case 'm'<<24 | 'a'<<16 | 'i'<<8 | 'l':
		return verbMAIL
	case 'r'<<24 | 'c'<<16 | 'p'<<8 | 't':
		return verbRCPT
	case 'd'<<24 | 'a'<<16 | 't'<<8 | 'a':
		return verbDATA
	case 'e'<<24 | 'h'<<16 | 'l'<<8 | 'o':
		return verbEHLO
	case 'h'<<24 | 'e'<<16 | 'l'<<8 | 'o':
		return verbHELO
	case 'r'<<24 | 's'<<16 | 'e'<<8 | 't':
		return verbRSET
	case 'n'<<24 | 'o'<<16 | 'o'<<8 | 'p':
		return verbNOOP
	case 'v'<<24 | 'r'<<16 | 'f'<<8 | 'y':
		return verbVRFY
	case 'q'<<24 | 'u'<<16 | 'i'<<8 | 't':
		return verbQUIT
	}
	return verbUnknown
}

// readData consumes a message up to and including the line ".", without
// copying it, and returns its size (as sent, dot-stuffed, without the
// final dot line). The value of the X-Bench-Id header, if present among
// the first 64 KiB of headers, is left in *id (emptied otherwise).
func readData(r *bufio.Reader, id *[]byte) (int64, error) {
	*id = (*id)[:0]
	var n int64
	lineStart, inHeader := true, true
	for {
		line, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		full := err == nil
		if lineStart && full && line[0] == '.' && (len(line) == 2 || (len(line) == 3 && line[1] == '\r')) {
			return n, nil
		}
		if inHeader {
			switch {
			case !lineStart:
			case len(line) <= 2 && (line[0] == '\r' || line[0] == '\n'):
				inHeader = false
			case len(line) > len(headerPrefix) && hasPrefixFold(line, headerPrefix):
				v := bytes.TrimSpace(line[len(headerPrefix):])
				if len(v) <= 128 {
					*id = append((*id)[:0], v...)
				}
			}
			if n+int64(len(line)) > int64(maxHeaderScan) {
				inHeader = false
			}
		}
		n += int64(len(line))
		lineStart = full
	}
}

func hasPrefixFold(b, prefix []byte) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i, c := range prefix {
		d := b[i]
		if d != c && d|0x20 != c|0x20 {
			return false
		}
	}
	return true
}
