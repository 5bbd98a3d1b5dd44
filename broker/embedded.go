package broker

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"
)

// EmbeddedOptions configures the NATS server that `serve` and `broker` run
// inside the jetrelay process.
type EmbeddedOptions struct {
	// DataDir holds the JetStream store (DataDir/nats) and the generated
	// client credentials (DataDir/broker.json).
	DataDir string
	// Listen is the client address: "host:port", "" for a free loopback
	// port, or "off" for no TCP port (in-process clients only).
	Listen string
	// SyncAlways fsyncs every write before acknowledging it. Otherwise
	// SyncInterval (NATS default 2m) applies.
	SyncAlways   bool
	SyncInterval time.Duration
	// MaxStore caps JetStream file storage (0: NATS decides).
	MaxStore int64
	// MinFree is the free space the store's file system must keep; below
	// it the ingress refuses new mail (452 4.3.1) so that what is queued
	// can still be retried, dead-lettered and acknowledged (0: no
	// reserve, only write failures count).
	MinFree int64
	// MaxPayload overrides NATS's 1 MiB max_payload (0: keep the default).
	MaxPayload int32
	// ServerName names this node (default: "jetrelay-" + host name).
	ServerName string
	// Cluster, when Listen is set, makes this node part of a JetStream
	// cluster (see ClusterOptions).
	Cluster *ClusterOptions
	// User and Password, when set, are the client credentials instead of
	// generated ones: every node of a cluster must accept the same.
	User, Password string
}

// ClusterOptions joins the embedded server to a NATS cluster.
type ClusterOptions struct {
	Name   string   // cluster name, the same on every node
	Listen string   // host:port for route connections
	Routes []string // nats://host:port of every node (self may be listed)
	// User and Password protect route connections; every node must use the
	// same values.
	User     string
	Password string
}

// Embedded is a running embedded NATS server.
type Embedded struct {
	srv       *server.Server
	creds     Credentials
	log       zerolog.Logger
	clustered bool
	watch     *storageWatch

	mu        sync.Mutex
	restarted []func() // run after the storage watch reloaded JetStream
}

// Credentials are what a client needs to reach an embedded server: written
// by the server process to DataDir/broker.json (mode 0600) and read by the
// other commands that share the data directory.
type Credentials struct {
	URL      string `json:"url"` // "" when the server has no TCP port
	User     string `json:"user"`
	Password string `json:"password"`
}

// CredentialsFile is the path of the credentials file in a data directory.
func CredentialsFile(dataDir string) string { return filepath.Join(dataDir, "broker.json") }

// ErrNoCredentials means no embedded broker has ever run with this data
// directory.
var ErrNoCredentials = errors.New("no broker credentials in data_dir: start `jetrelay serve` or `jetrelay broker` with this data_dir first, or set broker.url")

// ReadCredentials reads DataDir/broker.json.
func ReadCredentials(dataDir string) (Credentials, error) {
	var c Credentials
	data, err := os.ReadFile(CredentialsFile(dataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return c, ErrNoCredentials
	}
	if err != nil {
		return c, fmt.Errorf("broker credentials: %w", err)
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("broker credentials %s: %w", CredentialsFile(dataDir), err)
	}
	if c.User == "" || c.Password == "" {
		return c, fmt.Errorf("broker credentials %s: user or password missing", CredentialsFile(dataDir))
	}
	return c, nil
}

// writeCredentials writes the file atomically with mode 0600.
func writeCredentials(dataDir string, c Credentials) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dataDir, ".broker-*.json")
	if err != nil {
		return fmt.Errorf("broker credentials: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("broker credentials: %w", err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("broker credentials: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("broker credentials: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("broker credentials: %w", err)
	}
	return os.Rename(tmp.Name(), CredentialsFile(dataDir))
}

// StartEmbedded starts a NATS server with JetStream whose every client port
// requires the credentials kept in DataDir/broker.json (generated on first
// start). It returns once the server accepts connections.
func StartEmbedded(opts EmbeddedOptions, log zerolog.Logger) (*Embedded, error) {
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	creds, err := ReadCredentials(opts.DataDir)
	switch {
	case opts.User != "" && opts.Password != "":
		creds = Credentials{User: opts.User, Password: opts.Password}
	case errors.Is(err, ErrNoCredentials):
		creds = Credentials{User: "jetrelay", Password: randomSecret()}
	case err != nil:
		return nil, err
	}

	sopts := &server.Options{
		ServerName: opts.ServerName,
		JetStream:  true,
		StoreDir:   filepath.Join(opts.DataDir, "nats"),
		SyncAlways: opts.SyncAlways,
		NoSigs:     true,
		// Every connection, in-process ones included, authenticates.
		Users:             []*server.User{{Username: creds.User, Password: serverPassword(creds.Password)}},
		JetStreamMaxStore: opts.MaxStore,
		MaxPayload:        opts.MaxPayload,
		// A stopping cluster node tells its clients to move elsewhere
		// first, spreading their reconnects over LameDuckDuration.
		LameDuckDuration:    5 * time.Second,
		LameDuckGracePeriod: 2 * time.Second,
	}
	if !opts.SyncAlways && opts.SyncInterval > 0 {
		sopts.SyncInterval = opts.SyncInterval
	}
	if sopts.ServerName == "" {
		h, _ := os.Hostname()
		sopts.ServerName = "jetrelay-" + h
	}
	switch opts.Listen {
	case "off":
		sopts.DontListen = true
	case "":
		sopts.Host, sopts.Port = "127.0.0.1", -1
	default:
		host, port, err := net.SplitHostPort(opts.Listen)
		if err != nil {
			return nil, fmt.Errorf("broker.listen %q: %w", opts.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("broker.listen %q: bad port", opts.Listen)
		}
		if p == 0 {
			p = -1
		}
		sopts.Host, sopts.Port = host, p
	}
	if c := opts.Cluster; c != nil {
		if err := applyCluster(sopts, c); err != nil {
			return nil, err
		}
	}

	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	nlog := log.With().Str("component", "nats").Logger()
	srv.SetLoggerV2(&natsLogger{l: nlog}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(60 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats did not become ready (is %s free?)", opts.Listen)
	}
	if !sopts.DontListen {
		creds.URL = srv.ClientURL()
	} else {
		creds.URL = ""
	}
	if err := writeCredentials(opts.DataDir, creds); err != nil {
		srv.Shutdown()
		return nil, err
	}
	log.Info().Str("url", creds.URL).Str("store", sopts.StoreDir).Bool("sync_always", opts.SyncAlways).
		Msg("embedded broker ready")
	e := &Embedded{srv: srv, creds: creds, log: log, clustered: opts.Cluster != nil}
	e.startStorageWatch(sopts.StoreDir, opts.MinFree)
	return e, nil
}

func applyCluster(sopts *server.Options, c *ClusterOptions) error {
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("broker.cluster.listen %q: %w", c.Listen, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("broker.cluster.listen %q: bad port", c.Listen)
	}
	sopts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: p, Username: c.User, Password: c.Password}
	if len(c.Routes) > 0 {
		sopts.Routes = server.RoutesFromStr(joinComma(c.Routes))
		if c.User != "" {
			for _, u := range sopts.Routes {
				u.User = urlUser(c.User, c.Password)
			}
		}
	}
	return nil
}

// Server exposes the NATS server, for in-process connections.
func (e *Embedded) Server() *server.Server { return e.srv }

// Credentials returns what clients need to connect.
func (e *Embedded) Credentials() Credentials { return e.creds }

// Health reports nil when the server accepts connections and JetStream
// is healthy: the meta layer has a leader and, on a cluster node, every
// stream and consumer replica placed here has caught up. A node that has
// just restarted is therefore not ready until it can lose a peer again
// without the cluster losing quorum, which is what a rolling restart must
// wait for before it stops the next node.
func (e *Embedded) Health() error {
	st := e.srv.Healthz(&server.HealthzOptions{})
	if st == nil {
		return errors.New("no health status")
	}
	if st.Error != "" {
		return errors.New(st.Error)
	}
	return nil
}

// Shutdown stops the server and waits until it has flushed its store. A
// cluster node goes through lame-duck mode first: it stops taking clients,
// tells the connected ones to move to the other nodes, and hands its
// stream and consumer leaderships over before it exits.
func (e *Embedded) Shutdown() {
	e.stopStorageWatch()
	if e.clustered && e.srv.Running() {
		e.srv.LameDuckShutdown()
	} else {
		e.srv.Shutdown()
	}
	e.srv.WaitForShutdown()
	e.log.Info().Msg("embedded broker stopped")
}

// serverPassword is what the server keeps of a client password: a bcrypt
// hash, so that the password is not held in the server's options (and
// NATS does not warn about plaintext passwords at every start). The
// lowest cost suffices: a generated password is 192 random bits, and NATS
// checks the hash at every connect. A password bcrypt cannot take (over
// 72 bytes) is kept as it is.
func serverPassword(pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		return pw
	}
	return string(h)
}

func randomSecret() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// natsLogger routes the NATS server's log into zerolog.
type natsLogger struct{ l zerolog.Logger }

func (n *natsLogger) Noticef(format string, v ...any) { n.l.Info().Msgf(format, v...) }
func (n *natsLogger) Warnf(format string, v ...any)   { n.l.Warn().Msgf(format, v...) }
func (n *natsLogger) Fatalf(format string, v ...any)  { n.l.Error().Msgf(format, v...) }
func (n *natsLogger) Errorf(format string, v ...any)  { n.l.Error().Msgf(format, v...) }
func (n *natsLogger) Debugf(format string, v ...any)  { n.l.Debug().Msgf(format, v...) }
func (n *natsLogger) Tracef(format string, v ...any)  { n.l.Trace().Msgf(format, v...) }
