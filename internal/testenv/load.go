package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Outcome is what the clients learned about one message (identified by a
// token in its X-Load-Id header) over all their tries.
type Outcome struct {
	Accepted bool     // some try got 250
	QueueIDs []string // from the 250 replies
	// Unknown: some try lost its connection after the final dot and before
	// the reply, so the relay may or may not have queued that try.
	Unknown  bool
	Rejected int // tries answered with a 4xx/5xx or cut off before the dot
}

// Load submits n messages through the given ingress addresses, with
// conc concurrent clients, retrying a message (with the same token, as a
// real client would) on any failure, up to maxTries times and until
// deadline. It is safe to read Outcomes after Wait.
type Load struct {
	Outcomes map[string]*Outcome
	sizes    map[string]int // body size of each token's message
	mu       sync.Mutex
	done     chan struct{}
	sent     atomic.Int64
	accepted atomic.Int64
}

// LoadOptions shape a load.
type LoadOptions struct {
	Addrs    []string
	N        int
	Conc     int
	Size     func(i int) int // body size of message i (default 1 KiB)
	MaxTries int             // default 50
	Deadline time.Duration   // default 3 minutes
	Pause    time.Duration   // wait between a failed try and the next
}

var loadIDRe = regexp.MustCompile(`X-Load-Id: (\d+)\r\n`)

// StartLoad begins sending in the background.
func StartLoad(o LoadOptions) *Load {
	if o.Size == nil {
		o.Size = func(int) int { return 1024 }
	}
	if o.MaxTries == 0 {
		o.MaxTries = 50
	}
	if o.Deadline == 0 {
		o.Deadline = 3 * time.Minute
	}
	if o.Pause == 0 {
		o.Pause = 100 * time.Millisecond
	}
	l := &Load{Outcomes: map[string]*Outcome{}, sizes: map[string]int{}, done: make(chan struct{})}
	for i := 0; i < o.N; i++ {
		l.Outcomes[strconv.Itoa(i)] = &Outcome{}
		l.sizes[strconv.Itoa(i)] = max(o.Size(i), 2)
	}
	next := atomic.Int64{}
	end := time.Now().Add(o.Deadline)
	var wg sync.WaitGroup
	for w := 0; w < o.Conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.N {
					return
				}
				tok := strconv.Itoa(i)
				var body bytes.Buffer
				fmt.Fprintf(&body, "From: <load@client.test>\r\nTo: <sink@example.test>\r\nSubject: load %d\r\nX-Load-Id: %d\r\n", i, i)
				fmt.Fprintf(&body, "Date: %s\r\nMessage-ID: <load.%d@client.test>\r\n\r\n", time.Now().Format(time.RFC1123Z), i)
				body.Write(Body(max(o.Size(i), 2)))
				for try := 0; try < o.MaxTries && time.Now().Before(end); try++ {
					addr := o.Addrs[rand.IntN(len(o.Addrs))]
					l.sent.Add(1)
					qid, state := submit(addr, body.Bytes())
					l.mu.Lock()
					oc := l.Outcomes[tok]
					switch state {
					case tryAccepted:
						oc.Accepted = true
						oc.QueueIDs = append(oc.QueueIDs, qid)
					case tryUnknown:
						oc.Unknown = true
					default:
						oc.Rejected++
					}
					l.mu.Unlock()
					if state == tryAccepted {
						l.accepted.Add(1)
						break
					}
					time.Sleep(o.Pause) // a client backing off before it retries
				}
			}
		}()
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

// Wait blocks until every message was accepted or gave up.
func (l *Load) Wait() { <-l.done }

// Done reports whether the load has finished.
func (l *Load) Done() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// Accepted is how many messages got their 250 so far.
func (l *Load) Accepted() int64 { return l.accepted.Load() }

type tryState int

const (
	tryAccepted tryState = iota
	tryRejected          // a reply, or a failure before the final dot
	tryUnknown           // the connection failed after the final dot
)

func submit(addr string, data []byte) (string, tryState) {
	c, err := dialClient(addr, Mail{})
	if err != nil {
		return "", tryRejected
	}
	defer c.Close()
	if err := c.Hello("load.client.test"); err != nil {
		return "", tryRejected
	}
	if err := c.Mail("load@client.test", nil); err != nil {
		return "", tryRejected
	}
	if err := c.Rcpt("sink@example.test", nil); err != nil {
		return "", tryRejected
	}
	w, err := c.Data()
	if err != nil {
		return "", tryRejected
	}
	if _, err := w.Write(data); err != nil {
		return "", tryRejected
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return "", tryRejected
		}
		return "", tryUnknown
	}
	_ = c.Quit()
	if m := queuedRe.FindStringSubmatch(resp.StatusText); m != nil {
		return m[1], tryAccepted
	}
	return "", tryUnknown
}

// Verdict compares what the clients were told with what the destination
// got.
type Verdict struct {
	Accepted   int // messages with a 250
	Delivered  int // distinct messages at the destination
	Lost       []string
	Unexpected []string // delivered although no try got 250 or was in doubt
	Duplicates int      // extra copies beyond the first
	DupTokens  []string
	// Corrupt: delivered copies whose body is not byte for byte the one
	// the client sent (the relay only adds header fields in front).
	Corrupt []string
	Unknown int // messages with a try in doubt
}

func (v Verdict) String() string {
	return fmt.Sprintf("accepted %d, delivered %d, lost %d, delivered-without-250 %d, duplicates %d, in doubt %d, corrupt %d",
		v.Accepted, v.Delivered, len(v.Lost), len(v.Unexpected), v.Duplicates, v.Unknown, len(v.Corrupt))
}

// LoadID is the load token of a message at the sink ("" if none).
func LoadID(m *Message) string {
	if sm := loadIDRe.FindSubmatch(m.Data); sm != nil {
		return string(sm[1])
	}
	return ""
}

// Check matches the outcomes against the sink.
func (l *Load) Check(sink *Sink) Verdict {
	counts := map[string]int{}
	var v Verdict
	bodies := map[int][]byte{}
	for _, m := range sink.Messages() {
		id := LoadID(m)
		if id == "" {
			continue
		}
		counts[id]++
		if n, ok := l.sizes[id]; ok {
			if bodies[n] == nil {
				bodies[n] = Body(n)
			}
			if _, body, found := bytes.Cut(m.Data, []byte("\r\n\r\n")); !found || !bytes.Equal(body, bodies[n]) {
				v.Corrupt = append(v.Corrupt, id)
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for tok, oc := range l.Outcomes {
		n := counts[tok]
		if oc.Accepted {
			v.Accepted++
		}
		if oc.Unknown {
			v.Unknown++
		}
		if n > 0 {
			v.Delivered++
		}
		switch {
		case oc.Accepted && n == 0:
			v.Lost = append(v.Lost, tok)
		case !oc.Accepted && !oc.Unknown && n > 0:
			v.Unexpected = append(v.Unexpected, tok)
		}
		if n > 1 {
			v.Duplicates += n - 1
			v.DupTokens = append(v.DupTokens, tok)
		}
	}
	sort.Strings(v.Lost)
	sort.Strings(v.Unexpected)
	sort.Strings(v.DupTokens)
	sort.Strings(v.Corrupt)
	return v
}

// WaitDelivered waits until every accepted message reached the sink.
func (l *Load) WaitDelivered(t testing.TB, sink *Sink, timeout time.Duration) Verdict {
	t.Helper()
	var v Verdict
	Eventually(t, timeout, func() bool {
		v = l.Check(sink)
		return len(v.Lost) == 0
	}, "messages accepted but not delivered: %v", &v)
	return v
}

// Summary is a short line for logs.
func (v Verdict) Summary() string {
	s := v.String()
	if len(v.DupTokens) > 0 {
		s += " (duplicated: " + strings.Join(head(v.DupTokens, 10), ",") + ")"
	}
	return s
}

func head(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
