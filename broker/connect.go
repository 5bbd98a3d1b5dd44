package broker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ConnectOptions says how to reach the broker.
type ConnectOptions struct {
	// Name identifies this client in the server's connection list
	// ("jetrelay-ingress", "jetrelay-delivery", …).
	Name string
	// InProcess connects to an embedded server without a socket.
	InProcess *server.Server
	// URLs of the servers (ignored with InProcess).
	URLs []string

	User, Password  string
	Token           string
	CredentialsFile string // .creds (JWT + NKey)
	NKeyFile        string // NKey seed file
	CAFile          string
	CertFile        string
	KeyFile         string

	// ConnectTimeout bounds the first connection (default 10s). After that
	// the client reconnects forever in the background.
	ConnectTimeout time.Duration
	// RetryOnFailedConnect keeps trying in the background instead of
	// failing when no server answers at start.
	RetryOnFailedConnect bool
	// CredentialsFrom says where the credentials came from, in the
	// operator's terms ("broker.user and broker.password",
	// "data_dir/broker.json (/var/lib/jetrelay/broker.json)"), for the
	// error when the broker refuses them.
	CredentialsFrom string
}

// ErrRefused means the broker refused the client's credentials.
var ErrRefused = errors.New("the broker refused the credentials")

// refusal describes a connection the broker refused: which broker, which
// credentials, where they came from.
type refusal struct {
	servers, who, from string
}

// authFailure turns a refused connection into an error that says who
// refused what, or returns nil when err is not a refusal.
func (r refusal) authFailure(err error) error {
	if !isAuthError(err) {
		return nil
	}
	msg := fmt.Sprintf("the broker at %s refused %s (%v)", r.servers, r.who, err)
	if r.from != "" {
		msg += "; they come from " + r.from
	}
	return &refusedError{msg: msg, err: err}
}

// refusedError is ErrRefused with who refused what.
type refusedError struct {
	msg string
	err error
}

func (e *refusedError) Error() string   { return e.msg }
func (e *refusedError) Unwrap() []error { return []error{ErrRefused, e.err} }

func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

// describeCredentials names the credentials a connection presents,
// without their secrets.
func describeCredentials(o ConnectOptions) string {
	var parts []string
	if o.User != "" {
		p := fmt.Sprintf("user %q with a password", o.User)
		if o.Password == "" {
			p = fmt.Sprintf("user %q without a password", o.User)
		}
		parts = append(parts, p)
	}
	if o.Token != "" {
		parts = append(parts, "a token")
	}
	if o.CredentialsFile != "" {
		parts = append(parts, "the credentials file "+o.CredentialsFile)
	}
	if o.NKeyFile != "" {
		parts = append(parts, "the NKey seed in "+o.NKeyFile)
	}
	if o.CertFile != "" {
		parts = append(parts, "the client certificate "+o.CertFile)
	}
	if len(parts) == 0 {
		return "a connection without credentials"
	}
	return strings.Join(parts, " and ")
}

// Client is a connection to JetStream with jetrelay's streams, buckets and
// settings. It is safe for concurrent use.
type Client struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log zerolog.Logger
	set Settings

	queues []jetstream.Stream // the queue's shards
	dlq    jetstream.Stream
	bodies jetstream.ObjectStore
	refs   jetstream.KeyValue
	rates  jetstream.KeyValue
	authMu sync.Mutex
	auths  jetstream.KeyValue // AUTH lockouts (authlock.go), found on first use without Provision
	// sts and tlsrpt: the MTA-STS policies and TLS reporting counts
	// (tls.go); nil in a process that did not provision (the CLI).
	sts, tlsrpt jetstream.KeyValue
	// outcomes: the MAILDONE bucket exists (outcomes.go).
	outcomes bool
	maxData  int // largest inline body that fits a message with its envelope

	consumers sync.Map // queue consumer handles, by "stream/name", for state requests

	leaseMu sync.Mutex
	leases  map[*Lease]struct{} // jobs handed to a handler and not yet returned by it
	acked   []ackedJob          // acknowledged jobs not yet known to be purged

	// reconnected fires whenever the connection comes back after losing
	// its server: requests in flight before may be gone with it.
	reconnected *signal
	// refusal describes the connection for an authentication failure.
	refusal refusal

	storage storageState
}

// signal is a broadcast that can fire many times: a waiter takes the
// current channel with Wait and sees it closed at the next Fire.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

// Wait returns a channel that is closed at the next Fire.
func (s *signal) Wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

// Fire wakes everyone waiting on the current channel.
func (s *signal) Fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.ch)
	s.ch = make(chan struct{})
}

// Connect opens the connection. It does not provision; call Provision (the
// long-running stages do) or Bind (the CLI does) next.
func Connect(ctx context.Context, o ConnectOptions, log zerolog.Logger) (*Client, error) {
	log = log.With().Str("component", "broker").Logger()
	reconnected := newSignal()
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.PingInterval(10 * time.Second),
		nats.MaxPingsOutstanding(3),
		// No buffering while reconnecting: a publish, ack or fetch fails at
		// once and the caller retries it (with the same message ID). A
		// buffered publish would be sent on the next connection, after
		// its caller timed out and the client was told 451: a copy nobody
		// accounts for, and a duplicate once the client sends again.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("disconnected from broker")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("reconnected to broker")
			reconnected.Fire()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("broker async error")
		}),
	}
	timeout := o.ConnectTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	opts = append(opts, nats.Timeout(timeout))
	if o.RetryOnFailedConnect {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	if o.InProcess != nil {
		opts = append(opts, nats.InProcessServer(o.InProcess))
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.CredentialsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredentialsFile))
	}
	if o.NKeyFile != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("broker nkey: %w", err)
		}
		opts = append(opts, opt)
	}
	if o.CAFile != "" {
		opts = append(opts, nats.RootCAs(o.CAFile))
	}
	if o.CertFile != "" {
		opts = append(opts, nats.ClientCert(o.CertFile, o.KeyFile))
	}
	servers := strings.Join(o.URLs, ",")
	if o.InProcess == nil && servers == "" {
		return nil, errors.New("broker: no server URL")
	}
	ref := refusal{servers: redactURLs(o.URLs), who: describeCredentials(o), from: o.CredentialsFrom}
	nc, err := nats.Connect(servers, opts...)
	if err != nil {
		if aerr := ref.authFailure(err); aerr != nil {
			return nil, aerr
		}
		return nil, fmt.Errorf("cannot reach the broker at %s: %w", redactURLs(o.URLs), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	c := &Client{nc: nc, js: js, log: log, reconnected: reconnected, leases: map[*Lease]struct{}{}, refusal: ref}
	return c, nil
}

// WaitConnected waits until the connection to a server is up (the client
// was made with RetryOnFailedConnect), logging now and then while it waits.
func (c *Client) WaitConnected(ctx context.Context, log zerolog.Logger) error {
	start := time.Now()
	nextLog := start.Add(2 * time.Second)
	for !c.nc.IsConnected() {
		if c.nc.IsClosed() {
			last := c.nc.LastError()
			if err := c.refusal.authFailure(last); err != nil {
				return err
			}
			if last != nil {
				return fmt.Errorf("broker connection closed: %w", last)
			}
			return errors.New("broker connection closed")
		}
		if time.Now().After(nextLog) {
			log.Warn().Dur("waited", time.Since(start)).Msg("waiting for the broker")
			nextLog = time.Now().Add(10 * time.Second)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the broker: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// Close drains the connection: pending publishes and acks are flushed.
func (c *Client) Close() {
	if c == nil || c.nc == nil {
		return
	}
	if err := c.nc.Drain(); err != nil {
		c.nc.Close()
	}
	// Drain is asynchronous; wait for it to finish (bounded).
	deadline := time.Now().Add(5 * time.Second)
	for !c.nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c.nc.Close()
}

// Connected reports whether the connection to a server is up.
func (c *Client) Connected() bool { return c.nc.IsConnected() }

// ServerURL is the server currently connected to, credentials removed.
func (c *Client) ServerURL() string { return c.nc.ConnectedUrlRedacted() }

// JetStream exposes the JetStream handle, for tests that inspect the
// broker directly.
func (c *Client) JetStream() jetstream.JetStream { return c.js }

func redactURLs(urls []string) string {
	out := make([]string, 0, len(urls))
	for _, u := range urls {
		pu, err := url.Parse(u)
		if err == nil && pu.User != nil {
			pu.User = url.User("redacted")
			u = pu.String()
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return "(in-process)"
	}
	return strings.Join(out, ",")
}

func joinComma(s []string) string { return strings.Join(s, ",") }

func urlUser(user, pass string) *url.Userinfo { return url.UserPassword(user, pass) }
