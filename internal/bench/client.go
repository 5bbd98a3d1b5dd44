package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LoadOptions describe the load: N messages over Concurrency sessions.
type LoadOptions struct {
	Target      string
	Helo        string
	From        string
	Rcpts       []string
	Message     *Message
	N           int
	Concurrency int
	// PerConn is how many messages a session sends before QUIT (0: no
	// limit, one session per worker for the whole run). Transactions on
	// one session follow each other without RSET.
	PerConn int
	// NoPipelining sends every command in lock step even when the server
	// offers PIPELINING.
	NoPipelining bool
	// MaxConnectFailures: a worker gives up after this many consecutive
	// failed connection attempts (default 10).
	MaxConnectFailures int
}

// loadStats are filled by the workers; per-message arrays are indexed by
// sequence number.
type loadStats struct {
	start time.Time
	// acceptedAt is the time of the 250 to the final dot, in nanoseconds
	// since start, +1 (0: not accepted).
	acceptedAt []int64
	// submitNs is how long the transaction took, MAIL to 250.
	submitNs []int64
	// expect is the number of recipients the server accepted (valid when
	// acceptedAt != 0).
	expect []int32

	accepted, failed, sessions atomic.Int64
	lastAccepted               atomic.Int64

	mu      sync.Mutex
	errs    map[string]int64
	samples map[string]string
}

func newLoadStats(n int, start time.Time) *loadStats {
	return &loadStats{
		start:      start,
		acceptedAt: make([]int64, n),
		submitNs:   make([]int64, n),
		expect:     make([]int32, n),
		errs:       map[string]int64{},
		samples:    map[string]string{},
	}
}

func (ls *loadStats) addError(key, sample string) {
	ls.mu.Lock()
	ls.errs[key]++
	if _, ok := ls.samples[key]; !ok && sample != "" {
		ls.samples[key] = sample
	}
	ls.mu.Unlock()
}

// runLoad sends o.N messages and returns when all are sent or failed, or
// ctx ends.
func runLoad(ctx context.Context, o LoadOptions, ls *loadStats) {
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	if o.MaxConnectFailures <= 0 {
		o.MaxConnectFailures = 10
	}
	cmds, segs := buildCommands(o)
	var next atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < o.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &worker{o: &o, ls: ls, cmds: cmds, segs: segs, hdr: o.Message.CloneHeader()}
			w.run(ctx, &next)
		}()
	}
	wg.Wait()
}

// buildCommands pre-generates MAIL, RCPT… and DATA; segs are the ends of
// the commands in the buffer.
func buildCommands(o LoadOptions) ([]byte, []int) {
	var b []byte
	var segs []int
	b = fmt.Appendf(b, "MAIL FROM:<%s> SIZE=%d\r\n", o.From, o.Message.Size)
	segs = append(segs, len(b))
	for _, r := range o.Rcpts {
		b = fmt.Appendf(b, "RCPT TO:<%s>\r\n", r)
		segs = append(segs, len(b))
	}
	b = append(b, "DATA\r\n"...)
	segs = append(segs, len(b))
	return b, segs
}

type worker struct {
	o    *LoadOptions
	ls   *loadStats
	cmds []byte
	segs []int
	hdr  []byte

	c          net.Conn
	r          *bufio.Reader
	pipelining bool
	used       int
	stop       func() bool
	bufs       [2][]byte
}

var (
	errConn         = errors.New("connection failed")
	errServerClosed = errors.New("server closed the session (421)")
)

func (w *worker) run(ctx context.Context, next *atomic.Int64) {
	defer w.close(true)
	fails := 0
	for ctx.Err() == nil {
		seq := int(next.Add(1) - 1)
		if seq >= w.o.N {
			return
		}
		if w.c != nil && w.o.PerConn > 0 && w.used >= w.o.PerConn {
			w.close(true)
		}
		if w.c == nil {
			if err := w.dial(ctx); err != nil {
				w.ls.failed.Add(1)
				if ctx.Err() != nil {
					return
				}
				fails++
				if fails >= w.o.MaxConnectFailures {
					w.ls.addError("CONNECT", "worker gave up after "+strconv.Itoa(fails)+" failed connections: "+err.Error())
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Duration(fails) * 50 * time.Millisecond):
				}
				continue
			}
			fails = 0
		}
		w.used++
		ok, err := w.send(seq)
		if !ok {
			w.ls.failed.Add(1)
		}
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, errServerClosed) {
				w.ls.addError("IO", err.Error())
			}
			w.close(false)
		}
	}
}

func (w *worker) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", w.o.Target)
	if err != nil {
		w.ls.addError("CONNECT", err.Error())
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	w.stop = context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	w.c, w.used = c, 0
	if w.r == nil {
		w.r = bufio.NewReaderSize(c, 16<<10)
	} else {
		w.r.Reset(c)
	}
	w.ls.sessions.Add(1)
	code, text, err := w.reply()
	if err != nil {
		w.ls.addError("IO", "greeting: "+err.Error())
		w.close(false)
		return err
	}
	if code != 220 {
		w.ls.addError("GREETING "+strconv.Itoa(code), text)
		w.close(false)
		return errConn
	}
	helo := w.o.Helo
	if helo == "" {
		helo = "bench.example"
	}
	if _, err := c.Write([]byte("EHLO " + helo + "\r\n")); err != nil {
		w.ls.addError("IO", "EHLO: "+err.Error())
		w.close(false)
		return err
	}
	code, text, err = w.reply()
	if err != nil {
		w.ls.addError("IO", "EHLO: "+err.Error())
		w.close(false)
		return err
	}
	if code != 250 {
		w.ls.addError("EHLO "+strconv.Itoa(code), text)
		w.close(false)
		return errConn
	}
	w.pipelining = !w.o.NoPipelining && hasExtension(text, "PIPELINING")
	return nil
}

func hasExtension(ehlo, ext string) bool {
	for _, l := range strings.Split(ehlo, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && strings.EqualFold(f[0], ext) {
			return true
		}
	}
	return false
}

// close ends the session, politely with QUIT if asked.
func (w *worker) close(quit bool) {
	if w.c == nil {
		return
	}
	if quit {
		if _, err := w.c.Write([]byte("QUIT\r\n")); err == nil {
			_, _, _ = w.reply()
		}
	}
	w.stop()
	w.c.Close()
	w.c = nil
}

// reply reads one (multi-line) reply. text is only filled for replies
// other than 2xx/3xx, for EHLO and in error cases (it allocates).
func (w *worker) reply() (code int, text string, err error) {
	var sb []byte
	for {
		line, err := w.r.ReadSlice('\n')
		if err != nil {
			return 0, "", err
		}
		if len(line) < 4 || line[0] < '1' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9' {
			return 0, "", fmt.Errorf("malformed reply %q", line)
		}
		c := int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
		if code != 0 && c != code {
			return 0, "", fmt.Errorf("inconsistent multi-line reply %q", line)
		}
		code = c
		if code >= 400 || sb != nil || line[3] == '-' {
			sb = append(sb, line[4:]...)
		}
		if line[3] != '-' {
			return code, strings.TrimSpace(string(sb)), nil
		}
	}
}

func (w *worker) write(b []byte) error {
	_, err := w.c.Write(b)
	return err
}

// send runs one transaction for message seq and reports whether the
// server accepted it. An error means the session is unusable; SMTP errors
// are counted and leave the session usable.
func (w *worker) send(seq int) (bool, error) {
	ls := w.ls
	t0 := time.Now()
	nr := len(w.o.Rcpts)
	var mailCode, dataCode int
	var mailText, dataText string
	rcptOK := 0
	var err error
	if w.pipelining {
		if err = w.write(w.cmds); err != nil {
			return false, err
		}
		if mailCode, mailText, err = w.reply(); err != nil {
			return false, err
		}
		for i := 0; i < nr; i++ {
			code, text, err := w.reply()
			if err != nil {
				return false, err
			}
			if code/100 == 2 {
				rcptOK++
			} else if mailCode/100 == 2 {
				ls.addError("RCPT "+strconv.Itoa(code), text)
			}
		}
		if dataCode, dataText, err = w.reply(); err != nil {
			return false, err
		}
	} else {
		if err = w.write(w.cmds[:w.segs[0]]); err != nil {
			return false, err
		}
		if mailCode, mailText, err = w.reply(); err != nil {
			return false, err
		}
		if mailCode/100 == 2 {
			for i := 0; i < nr; i++ {
				if err = w.write(w.cmds[w.segs[i]:w.segs[i+1]]); err != nil {
					return false, err
				}
				code, text, err := w.reply()
				if err != nil {
					return false, err
				}
				if code/100 == 2 {
					rcptOK++
				} else {
					ls.addError("RCPT "+strconv.Itoa(code), text)
				}
			}
			if rcptOK > 0 {
				if err = w.write(w.cmds[w.segs[nr]:]); err != nil {
					return false, err
				}
				if dataCode, dataText, err = w.reply(); err != nil {
					return false, err
				}
			}
		}
	}
	switch {
	case mailCode/100 != 2:
		ls.addError("MAIL "+strconv.Itoa(mailCode), mailText)
	case rcptOK > 0 && dataCode != 354:
		ls.addError("DATA "+strconv.Itoa(dataCode), dataText)
	}
	if mailCode/100 != 2 || rcptOK == 0 || dataCode != 354 {
		if dataCode == 354 {
			// Pipelined DATA accepted with no recipient: send an empty
			// message (RFC 2920 §3.1).
			if err = w.write([]byte(".\r\n")); err != nil {
				return false, err
			}
			if _, _, err = w.reply(); err != nil {
				return false, err
			}
		}
		return false, w.rset()
	}
	w.o.Message.SetSeq(w.hdr, seq)
	w.bufs[0], w.bufs[1] = w.hdr, w.o.Message.Body
	bufs := net.Buffers(w.bufs[:])
	if _, err = bufs.WriteTo(w.c); err != nil {
		return false, err
	}
	code, text, err := w.reply()
	if err != nil {
		return false, err
	}
	if code != 250 {
		ls.addError("EOM "+strconv.Itoa(code), text)
		if code == 421 {
			return false, errServerClosed
		}
		return false, nil
	}
	now := time.Since(ls.start)
	ls.expect[seq] = int32(rcptOK)
	ls.submitNs[seq] = int64(time.Since(t0))
	atomic.StoreInt64(&ls.acceptedAt[seq], int64(now)+1)
	ls.accepted.Add(1)
	for {
		old := ls.lastAccepted.Load()
		if int64(now) <= old || ls.lastAccepted.CompareAndSwap(old, int64(now)) {
			break
		}
	}
	return true, nil
}

func (w *worker) rset() error {
	if err := w.write([]byte("RSET\r\n")); err != nil {
		return err
	}
	code, text, err := w.reply()
	if err != nil {
		return err
	}
	if code != 250 {
		return errors.New("RSET: " + strconv.Itoa(code) + " " + text)
	}
	return nil
}
