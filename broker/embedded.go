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
	"regexp"
	"sort"
	"strconv"
	"strings"
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
	nl := &natsLogger{l: nlog, starting: true, banner: map[string]string{}}
	srv.SetLoggerV2(nl, false, false, false)
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
	sync := "always"
	if !opts.SyncAlways {
		iv := opts.SyncInterval
		if iv <= 0 {
			iv = 2 * time.Minute // NATS's default
		}
		sync = "every " + iv.String()
	}
	// The server's start-up banner, folded into this one line.
	ev := log.Info().Str("url", creds.URL).Str("store", sopts.StoreDir).Str("sync", sync).Bool("sync_always", opts.SyncAlways)
	banner := nl.started()
	keys := make([]string, 0, len(banner))
	for k := range banner {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	rest := log.Debug()
	for _, k := range keys {
		if bannerInfo[k] {
			ev = ev.Str(k, banner[k])
		} else {
			rest = rest.Str(k, banner[k])
		}
	}
	ev.Msg("embedded broker ready")
	rest.Msg("embedded broker: the rest of the NATS start-up banner")
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

// natsLogger routes the NATS server's log into zerolog. While the server
// starts, it folds the start-up banner — two dozen notices, ASCII art,
// "  Version:  2.15.3", the JetStream box, the restore of every stream —
// into fields that StartEmbedded logs as one line ("embedded broker
// ready"); a notice the banner does not account for, and every warning
// and error, passes through as it comes.
type natsLogger struct {
	l zerolog.Logger

	mu       sync.Mutex
	starting bool
	banner   map[string]string
	streams  int // streams restored at start
	msgs     int64
}

// bannerField is a "  Key:   value" line of the banner.
var bannerField = regexp.MustCompile(`^\s+([A-Za-z][A-Za-z ]*[A-Za-z]):\s+(.*)$`)

// restored is NATS's "Restored 1,234 messages for stream '$G > MAILQ_0' in 2ms".
var restored = regexp.MustCompile(`^Restored ([0-9,]+) messages for stream`)

// bannerKeys renames the banner's keys to log fields.
var bannerKeys = map[string]string{
	"version": "nats_version", "name": "server_name", "id": "server_id", "node": "server_node",
	"store directory": "jetstream_store", "max storage": "jetstream_max_storage", "max memory": "jetstream_max_memory",
	"api level": "jetstream_api_level", "strict": "jetstream_strict", "git": "nats_git",
}

// bannerInfo are the banner's fields that go on the info line; the rest
// are logged at debug level.
var bannerInfo = map[string]bool{
	"nats_version": true, "server_name": true, "listen": true, "jetstream_max_storage": true,
	"jetstream_start": true, "restored": true,
}

func (n *natsLogger) Noticef(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if n.fold(msg) {
		return
	}
	n.l.Info().Msg(msg)
}

// fold takes a notice into the banner while the server starts, and
// reports whether it did.
func (n *natsLogger) fold(msg string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.starting {
		return false
	}
	t := strings.TrimSpace(msg)
	switch {
	case t == "", t == "Starting nats-server", t == "Starting JetStream", t == "Server is ready",
		strings.HasPrefix(t, "https://docs.nats.io"), strings.HasPrefix(t, "---"),
		strings.Trim(t, " _|/\\()") == "", // the ASCII-art logo
		strings.HasPrefix(t, "Recovering JetStream state for account"), strings.HasPrefix(t, "Starting restore for stream"),
		strings.HasPrefix(t, "Recovering ") && strings.Contains(t, " consumers for stream"):
		return true
	}
	if m := restored.FindStringSubmatch(t); m != nil {
		c, _ := strconv.ParseInt(strings.ReplaceAll(m[1], ",", ""), 10, 64)
		n.streams++
		n.msgs += c
		return true
	}
	if a, ok := strings.CutPrefix(t, "Listening for client connections on "); ok {
		n.banner["listen"] = a
		return true
	}
	if d, ok := strings.CutPrefix(t, "Took "); ok && strings.HasSuffix(d, " to start JetStream") {
		n.banner["jetstream_start"] = strings.TrimSuffix(d, " to start JetStream")
		return true
	}
	if m := bannerField.FindStringSubmatch(msg); m != nil {
		k := strings.ToLower(m[1])
		if f, ok := bannerKeys[k]; ok {
			k = f
		} else {
			k = "nats_" + strings.ReplaceAll(k, " ", "_")
		}
		n.banner[k] = strings.Trim(m[2], `"`)
		return true
	}
	return false
}

// started ends the folding and returns the banner's fields.
func (n *natsLogger) started() map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.starting = false
	out := n.banner
	if out["nats_git"] == "[not set]" {
		delete(out, "nats_git")
	}
	if n.streams > 0 {
		out["restored"] = fmt.Sprintf("%d messages in %d streams", n.msgs, n.streams)
	}
	n.banner = nil
	return out
}

func (n *natsLogger) Warnf(format string, v ...any)  { n.l.Warn().Msgf(format, v...) }
func (n *natsLogger) Fatalf(format string, v ...any) { n.l.Error().Msgf(format, v...) }
func (n *natsLogger) Errorf(format string, v ...any) { n.l.Error().Msgf(format, v...) }
func (n *natsLogger) Debugf(format string, v ...any) { n.l.Debug().Msgf(format, v...) }
func (n *natsLogger) Tracef(format string, v ...any) { n.l.Trace().Msgf(format, v...) }
