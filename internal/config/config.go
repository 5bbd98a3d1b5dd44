// Package config is jetrelay's configuration: the YAML schema with the key
// names of the design, defaults that make a zero-config start work, and the
// layering defaults → file → environment (JETRELAY_<SECTION>_<KEY>) →
// command-line flags.
//
// Invariants: Load never returns a config that skipped a layer silently; an
// unknown key in the file is an error (typos are the commonest config bug),
// reported with the closest known key; Load and Validate each report every
// problem at once, in words, and Source.Locate puts the file:line (or the
// variable or flag) in front of each; Redacted never shows a secret.
// Settings that work but are probably not meant are Source.Warnings, how a
// setting is read where that is not obvious Source.Notes.
package config

import (
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/delivery"
	"github.com/jetrelay/jetrelay/delivery/dkim"
	"github.com/jetrelay/jetrelay/ingress"
	"github.com/jetrelay/jetrelay/pickup"
)

// Config is the whole configuration. The YAML key names are part of the
// product's interface.
type Config struct {
	// Hostname is the FQDN used in the banner, in EHLO and in Received.
	Hostname string `yaml:"hostname"`
	// DataDir holds the embedded broker's storage and its generated
	// credentials.
	DataDir    string     `yaml:"data_dir"`
	Broker     Broker     `yaml:"broker"`
	Ingress    Ingress    `yaml:"ingress"`
	Delivery   Delivery   `yaml:"delivery"`
	DeadLetter DeadLetter `yaml:"deadletter"`
	HTTP       HTTP       `yaml:"http"`
	Log        Log        `yaml:"log"`
	Console    Console    `yaml:"console"`
	// MemoryLimit is the process's soft memory limit (Go's
	// runtime/debug.SetMemoryLimit) for the commands that run stages;
	// 0: none. With it the garbage collector runs at Go's default pace
	// (GOGC 100) and harder only as the process nears the limit. The
	// environment's GOMEMLIMIT and GOGC, when set, win.
	MemoryLimit ByteSize `yaml:"memory_limit"`
}

// DefaultMemoryLimit is memory_limit's default (BENCHMARKS.md: the
// garbage collector's pace and the large-message case).
const DefaultMemoryLimit ByteSize = 0

// Broker is the NATS JetStream connection and, for serve and broker, the
// embedded server.
type Broker struct {
	// URL lists the NATS servers to connect to ("nats://a:4222,nats://b:4222").
	// Empty: serve runs an embedded server; the other commands connect to the
	// embedded server of the same data_dir (address and credentials from
	// data_dir/broker.json).
	URL StringList `yaml:"url"`
	// Listen is the embedded server's client address for other processes and
	// the CLI, e.g. 127.0.0.1:4222. Empty picks a free loopback port; either
	// way the address is written to data_dir/broker.json, where the other
	// commands of the same data_dir find it. "off" runs the embedded server
	// without a TCP port at all (serve only; the CLI then cannot reach it).
	Listen string `yaml:"listen"`
	// Replicas of every stream and bucket: 1 on one node, 3 on a cluster.
	Replicas int `yaml:"replicas"`
	// QueueShards spreads the queue over this many streams, which the
	// broker writes (and fsyncs) in parallel. 0 (the default): the layout
	// already on the broker, or for a new queue broker.AutoQueueShards
	// (twice the CPUs, 4 to 16). A number must match the broker's layout
	// (`jetrelay queue reshard` changes it).
	QueueShards int `yaml:"queue_shards"`
	// Credentials is a NATS .creds file (JWT + NKey).
	Credentials  string    `yaml:"credentials"`
	User         string    `yaml:"user"`
	Password     string    `yaml:"password" secret:"true"`
	PasswordFile string    `yaml:"password_file"`
	Token        string    `yaml:"token" secret:"true"`
	NKeyFile     string    `yaml:"nkey_file"`
	TLS          TLSClient `yaml:"tls"`

	// SyncInterval is the embedded server's JetStream fsync policy: "always"
	// (fsync before every acknowledgement: the relay's 250 then survives a
	// power cut) or a duration such as "2m" (NATS's own default: faster, but
	// a power cut can lose acknowledged mail; a crash of the process cannot).
	SyncInterval string `yaml:"sync_interval"`
	// MaxStore caps the embedded server's JetStream file storage (0: NATS's
	// default, most of the free disk).
	MaxStore ByteSize `yaml:"max_store"`
	// MinFree is the free space the embedded server's file system must
	// keep (Postfix's queue_minfree): below it new mail is refused with
	// 452 4.3.1 at MAIL, so that queued mail can still be retried and
	// dead-lettered. 0: derived, 1.5 × ingress.max_message_bytes.
	MinFree ByteSize `yaml:"min_free"`
	// InlineMaxBytes: bodies up to this size travel inside the job message;
	// larger ones go to the object store. It is capped at the server's
	// max_payload minus room for the envelope.
	InlineMaxBytes ByteSize `yaml:"inline_max_bytes"`
	// PublishTimeout bounds the wait for the broker's acknowledgement; past
	// it the client gets 451 4.3.0.
	PublishTimeout Duration `yaml:"publish_timeout"`
	// DedupeWindow is the streams' duplicate window for Nats-Msg-Id: 0
	// derives it (Config.DedupeWindow); a value must be at least 1h and at
	// least the longest retry wait. It costs memory in proportion to the
	// message rate.
	DedupeWindow Duration `yaml:"dedupe_window"`
	// AckWait is how long a job may go without a sign of life before the
	// broker gives it to another worker: after a crash, jobs that were in
	// flight are delivered again this long after the broker is back.
	// Workers send progress every AckWait/4, so a long delivery keeps its
	// job however long it takes.
	AckWait Duration `yaml:"ack_wait"`
	// ServerName names the embedded server (unique per node in a cluster;
	// default "jetrelay-" + host name).
	ServerName string `yaml:"server_name"`
	// Cluster makes the embedded server (jetrelay broker) a node of a
	// JetStream cluster.
	Cluster BrokerCluster `yaml:"cluster"`
}

// BrokerCluster joins the embedded server to a NATS cluster: the same name
// on every node, each node's route address, and the routes of all nodes.
type BrokerCluster struct {
	Name         string     `yaml:"name"`
	Listen       string     `yaml:"listen"` // host:port for route connections, e.g. 0.0.0.0:6222
	Routes       StringList `yaml:"routes"` // nats://node1:6222,nats://node2:6222,…
	User         string     `yaml:"user"`
	Password     string     `yaml:"password" secret:"true"`
	PasswordFile string     `yaml:"password_file"`
}

// TLSClient configures TLS toward the NATS servers.
type TLSClient struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Ingress is the SMTP front door.
type Ingress struct {
	Listen        StringList `yaml:"listen"`
	TLSListen     StringList `yaml:"tls_listen"`
	TLS           TLSFiles   `yaml:"tls"`
	RelayNetworks StringList `yaml:"relay_networks"`
	UsersFile     string     `yaml:"users_file"`
	// MaxMessageBytes is advertised as SIZE and enforced.
	MaxMessageBytes ByteSize `yaml:"max_message_bytes"`
	MaxRecipients   int      `yaml:"max_recipients"`
	// ReadTimeout is the idle limit for every read from a client, in
	// commands and inside DATA alike: a stalled client is cut off (RFC
	// 5321 §4.5.3.2 asks for at least 5 minutes).
	ReadTimeout  Duration `yaml:"read_timeout"`
	WriteTimeout Duration `yaml:"write_timeout"`
	// CommandDeadline is the time a client has for a whole command line,
	// from when the ingress starts waiting for it, however it trickles in
	// (Postfix's smtpd_per_record_deadline); with MinDataRate also the
	// most time a client has in hand inside DATA and BDAT.
	CommandDeadline Duration `yaml:"command_deadline"`
	// MinDataRate is the lowest average rate, in bytes per second, at
	// which a client may send a message (DATA, BDAT), as Postfix's
	// smtpd_min_data_rate: each read spends the time it took, each byte
	// earns 1/MinDataRate s, never more than CommandDeadline in hand.
	MinDataRate int `yaml:"min_data_rate"`
	// AllowInsecureAuth offers AUTH without TLS to clients in
	// InsecureAuthNetworks (loopback by default).
	AllowInsecureAuth bool `yaml:"allow_insecure_auth"`
	// InsecureAuthNetworks are the clients that may AUTH without TLS when
	// AllowInsecureAuth is set; listing networks replaces loopback.
	InsecureAuthNetworks StringList `yaml:"insecure_auth_networks"`
	// RequireTLS refuses MAIL before STARTTLS for clients outside
	// relay_networks.
	RequireTLS bool `yaml:"require_tls"`
	// MaxConnections and MaxConnectionsPerIP bound concurrent sessions.
	MaxConnections      int `yaml:"max_connections"`
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// MaxErrors is how many commands answered with an error (unknown
	// commands, syntax errors, commands out of sequence, refusals; not
	// 452 for too many recipients) a session may have: the last is
	// followed by 421 4.7.0 and the disconnect.
	MaxErrors int `yaml:"max_errors"`
	// MaxReceivedHeaders: a message with more Received headers is a loop.
	MaxReceivedHeaders int `yaml:"max_received_headers"`
	// AddMissingHeaders adds Message-ID and Date when a message has none.
	AddMissingHeaders *bool `yaml:"add_missing_headers"`
	// BareLineEndings decides what happens to a bare CR or LF in DATA:
	// "reject" (550 5.5.2, like Postfix's smtpd_forbid_bare_newline) or
	// "normalize" (rewrite to CRLF).
	BareLineEndings string `yaml:"bare_line_endings"`
	// AuthFailureLimit failed AUTH attempts from one client address, or
	// for one user, within AuthFailureWindow lock that address or user
	// out for AuthLockout, on every ingress of the deployment (`jetrelay
	// user unlock` lifts it).
	AuthFailureLimit  int      `yaml:"auth_failure_limit"`
	AuthFailureWindow Duration `yaml:"auth_failure_window"`
	AuthLockout       Duration `yaml:"auth_lockout"`
	// ShutdownGrace is how long a stopping ingress lets sessions in flight
	// finish before it closes them.
	ShutdownGrace Duration `yaml:"shutdown_grace"`
	// ConnectionAllow and ConnectionDeny (addresses or CIDR networks)
	// decide who may connect at all, before the banner, like IIS's
	// Connection dialog; separate from relay_networks, which decides who
	// may relay. Deny wins; an empty allow list lets everyone else in. A
	// refused client gets 554 5.7.1 and the connection is closed.
	ConnectionAllow StringList `yaml:"connection_allow"`
	ConnectionDeny  StringList `yaml:"connection_deny"`
	// Pickup is the pickup directory (IIS's, for .NET's SmtpClient and
	// scripts), watched by the processes that run the ingress stage.
	Pickup Pickup `yaml:"pickup"`
}

// Pickup is a folder of .eml files to queue (package pickup describes
// when a file is taken and how its envelope is read).
type Pickup struct {
	// Dir is the folder; empty: no pickup directory.
	Dir string `yaml:"dir"`
	// BadmailDir receives the files that are not messages, each with a
	// .reason file (default: Dir/badmail).
	BadmailDir string `yaml:"badmail_dir"`
	// PollInterval is how often Dir is looked at.
	PollInterval Duration `yaml:"poll_interval"`
	// StableFor is how long a file's size and modification time must stay
	// the same before it is taken.
	StableFor Duration `yaml:"stable_for"`
}

// TLSFiles names a certificate and its key.
type TLSFiles struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Delivery is the outbound side.
type Delivery struct {
	// Port is the TCP port for direct MX delivery.
	Port int `yaml:"port"`
	// Smarthost is one next hop "host:port", or an ordered list for
	// failover; empty means direct MX delivery.
	Smarthost               StringList `yaml:"smarthost"`
	SmarthostTLS            string     `yaml:"smarthost_tls"`
	SmarthostUsername       string     `yaml:"smarthost_username"`
	SmarthostPassword       string     `yaml:"smarthost_password" secret:"true"`
	SmarthostPasswordFile   string     `yaml:"smarthost_password_file"`
	SmarthostPasswordEnv    string     `yaml:"smarthost_password_env"`
	SmarthostTLSSkipVerify  bool       `yaml:"smarthost_tls_skip_verify"`
	SmarthostAllowPlainAuth bool       `yaml:"smarthost_allow_plain_auth"`
	// SmarthostTLSCAFile, …CertFile, …KeyFile and …ServerName: a private CA
	// to verify the smart host, a client certificate (mutual TLS), and the
	// name its certificate must carry.
	SmarthostTLSCAFile     string `yaml:"smarthost_tls_ca_file"`
	SmarthostTLSCertFile   string `yaml:"smarthost_tls_cert_file"`
	SmarthostTLSKeyFile    string `yaml:"smarthost_tls_key_file"`
	SmarthostTLSServerName string `yaml:"smarthost_tls_server_name"`
	// SmarthostTransport is "smtp" (default) or "graph" (Microsoft Graph
	// sendMail, with SmarthostOAuth).
	SmarthostTransport string `yaml:"smarthost_transport"`
	// SmarthostOAuth authenticates with OAuth 2.0 (XOAUTH2 / OAUTHBEARER
	// on SMTP, bearer tokens on Graph) instead of a password.
	SmarthostOAuth OAuth `yaml:"smarthost_oauth"`
	// SmarthostGraph configures the Graph transport.
	SmarthostGraph Graph `yaml:"smarthost_graph"`
	// SmarthostRateLimit spreads the smart host's mail out (shared by all
	// workers through the broker).
	SmarthostRateLimit RateLimit `yaml:"smarthost_rate_limit"`
	// MXTLS is the TLS policy for direct MX delivery.
	MXTLS string `yaml:"mx_tls"`
	// Routes maps a recipient domain to its own next hop.
	Routes map[string]Route `yaml:"routes"`
	// Concurrency is the number of jobs one worker process handles at once.
	Concurrency int   `yaml:"concurrency"`
	Retry       Retry `yaml:"retry"`
	// DelayWarning sends a "delayed" DSN once a message has waited this long
	// (0 disables).
	DelayWarning Duration `yaml:"delay_warning"`
	// BounceSizeLimit caps, in octets, the original message a bounce
	// returns; over it only the headers come back.
	BounceSizeLimit int `yaml:"bounce_size_limit"`
	// DNSServer is the resolver "host:port" for MX lookups; empty uses the
	// system resolver.
	DNSServer string `yaml:"dns_server"`
	// MaxMXHosts caps the MX hosts tried per attempt.
	MaxMXHosts int `yaml:"max_mx_hosts"`
	// MaxMessagesPerConnection: connections to a next hop are reused for up
	// to this many messages.
	MaxMessagesPerConnection int `yaml:"max_messages_per_connection"`
	// MaxPerDestination caps concurrent connections to one next hop per
	// worker process.
	MaxPerDestination int `yaml:"max_per_destination"`
	// ConnectTimeout bounds TCP connect (and the TLS handshake).
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// IdleTimeout closes a cached connection unused this long.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// DestinationBackoff: after a destination refused connections, timed
	// out or answered 421, its jobs are deferred without a try for this
	// long instead of hammering it (0 disables).
	DestinationBackoff Duration `yaml:"destination_backoff"`
	// ShutdownGrace lets attempts in flight finish on SIGTERM.
	ShutdownGrace Duration `yaml:"shutdown_grace"`
	// DKIM signs outgoing mail (SMTP transport; not Graph).
	DKIM DKIM `yaml:"dkim"`
	// SmarthostDKIMDomain is the domain whose DKIM key signs mail through
	// the smart host when its From domain has no key of its own.
	SmarthostDKIMDomain string `yaml:"smarthost_dkim_domain"`
	// MTASTS is MTA-STS (RFC 8461) for direct MX delivery and TLS
	// reporting (RFC 8460).
	MTASTS MTASTS `yaml:"mta_sts"`
	// MasqueradeDomain replaces the domain of the envelope sender (MAIL
	// FROM only, not the From: header) on the way out, like IIS's
	// masquerade domain; a route's masquerade_domain replaces it there.
	MasqueradeDomain string `yaml:"masquerade_domain"`
	// NDRCopyTo receives a copy of every non-delivery report (IIS's "Send
	// copy of Non-Delivery Report to"), also for a null sender; a route's
	// ndr_copy_to replaces it for the recipients given up on there.
	NDRCopyTo string `yaml:"ndr_copy_to"`
}

// DKIM signs what delivery sends over SMTP (RFC 6376; RSA-SHA256 and
// Ed25519-SHA256): each message with the key of its From header's
// domain (or of the closest parent domain that has one), else the
// route's dkim_domain, else FallbackDomain; without any, unsigned.
// Microsoft Graph builds and signs its messages itself: Graph routes are
// never signed.
type DKIM struct {
	// Domains maps a signing domain (d=) to its key.
	Domains map[string]DKIMKey `yaml:"domains"`
	// Headers are the header fields to sign, From first; a name listed
	// twice is over-signed (a second one added later breaks the
	// signature).
	Headers StringList `yaml:"headers"`
	// FallbackDomain signs mail whose From domain has no key and whose
	// route names no dkim_domain ("": such mail goes unsigned).
	FallbackDomain string `yaml:"fallback_domain"`
}

// DKIMKey is one domain's signing key.
type DKIMKey struct {
	// Selector is where the public key is published:
	// <selector>._domainkey.<domain>.
	Selector string `yaml:"selector"`
	// KeyFile is the private key, PEM (PKCS#8 as `jetrelay dkim keygen`
	// writes it, or PKCS#1 from opendkim-genkey), readable by jetrelay only.
	KeyFile string `yaml:"key_file"`
	// Type, when set (rsa or ed25519), must be the key file's type.
	Type string `yaml:"type"`
}

// MTASTS configures MTA-STS for direct MX delivery (never for the smart
// host or routes, whose TLS the operator sets) and the TLS reports.
type MTASTS struct {
	// Enabled applies the MTA-STS policies recipient domains publish
	// (default true).
	Enabled *bool `yaml:"enabled"`
	// CAFile adds CA certificates (PEM) to the system's for the policy
	// hosts and the MX hosts under a policy: a private test CA.
	CAFile string `yaml:"ca_file"`
	// HTTPSPort is the policy hosts' port (443; another for tests).
	HTTPSPort int `yaml:"https_port"`
	// FetchTimeout bounds one policy fetch.
	FetchTimeout Duration `yaml:"fetch_timeout"`
	// ReportDir receives one RFC 8460 JSON report per policy domain and
	// UTC day ("": none written; the counts are still metrics).
	ReportDir string `yaml:"report_dir"`
	// ReportOrganization and ReportContact fill in the reports'
	// organization-name (default: hostname) and contact-info.
	ReportOrganization string `yaml:"report_organization"`
	ReportContact      string `yaml:"report_contact"`
	// MaxReportDomains caps the policy domains the metric names one by
	// one (the rest are "_other").
	MaxReportDomains int `yaml:"max_report_domains"`
}

// On reports whether MTA-STS is enabled.
func (m MTASTS) On() bool { return m.Enabled == nil || *m.Enabled }

// Route is the next hop for one recipient domain.
type Route struct {
	// Host is "host:port"; Hosts an ordered failover list (Host first).
	Host          string     `yaml:"host"`
	Hosts         StringList `yaml:"hosts"`
	TLS           string     `yaml:"tls"`
	TLSSkipVerify bool       `yaml:"tls_skip_verify"`
	Username      string     `yaml:"username"`
	Password      string     `yaml:"password" secret:"true"`
	PasswordFile  string     `yaml:"password_file"`
	PasswordEnv   string     `yaml:"password_env"`
	// AllowPlainAuth permits AUTH without TLS on this route.
	AllowPlainAuth bool `yaml:"allow_plain_auth"`
	// TLSCAFile, TLSCertFile, TLSKeyFile, TLSServerName: a private CA,
	// a client certificate (mutual TLS), the name to verify.
	TLSCAFile     string `yaml:"tls_ca_file"`
	TLSCertFile   string `yaml:"tls_cert_file"`
	TLSKeyFile    string `yaml:"tls_key_file"`
	TLSServerName string `yaml:"tls_server_name"`
	// Transport is "smtp" (default) or "graph".
	Transport string    `yaml:"transport"`
	OAuth     OAuth     `yaml:"oauth"`
	Graph     Graph     `yaml:"graph"`
	RateLimit RateLimit `yaml:"rate_limit"`
	// DKIMDomain is the domain whose DKIM key signs mail on this route
	// when its From domain has no key of its own.
	DKIMDomain string `yaml:"dkim_domain"`
	// MasqueradeDomain and NDRCopyTo replace delivery.masquerade_domain
	// and delivery.ndr_copy_to for this route.
	MasqueradeDomain string `yaml:"masquerade_domain"`
	NDRCopyTo        string `yaml:"ndr_copy_to"`
}

// OAuth is an app-only OAuth 2.0 credential for a smart host or route.
// Provider "entra" (Microsoft 365: TenantID, ClientID, and a client secret
// or a certificate), "google" (Google Workspace: a service account key
// with domain-wide delegation, acting as Subject) or "oauth2" (any token
// endpoint: TokenURL, ClientID, a client secret, Scope). A secret is
// given inline, in a file (…_file) or in an environment variable (…_env),
// once.
type OAuth struct {
	Provider         string `yaml:"provider"`
	TenantID         string `yaml:"tenant_id"`
	ClientID         string `yaml:"client_id"`
	ClientSecret     string `yaml:"client_secret" secret:"true"`
	ClientSecretFile string `yaml:"client_secret_file"`
	ClientSecretEnv  string `yaml:"client_secret_env"`
	// CertificateFile and KeyFile (PEM) sign an Entra client assertion
	// instead of a client secret.
	CertificateFile string `yaml:"certificate_file"`
	KeyFile         string `yaml:"key_file"`
	// ServiceAccountFile is Google's JSON key; Subject is the mailbox the
	// service account acts as (default: the route's username).
	ServiceAccountFile string `yaml:"service_account_file"`
	Subject            string `yaml:"subject"`
	// Authority is Entra's login host (sovereign clouds:
	// https://login.microsoftonline.us, https://login.chinacloudapi.cn).
	Authority string `yaml:"authority"`
	// TokenURL is the token endpoint ("oauth2"; overrides the others').
	TokenURL string `yaml:"token_url"`
	// Scope defaults to what the provider and transport need.
	Scope string `yaml:"scope"`
	// CAFile adds CA certificates to trust (besides the system's) for the
	// token endpoint and the Graph API: a TLS-inspecting proxy's.
	CAFile string `yaml:"ca_file"`
}

// Configured reports whether any OAuth key is set.
func (o OAuth) Configured() bool { return o != OAuth{} }

// Graph configures the Microsoft Graph transport.
type Graph struct {
	// BaseURL (default https://graph.microsoft.com/v1.0; US Government:
	// https://graph.microsoft.us/v1.0; China:
	// https://microsoftgraph.chinacloudapi.cn/v1.0).
	BaseURL string `yaml:"base_url"`
	// Sender is the mailbox messages are sent as (default: the route's
	// username, else each message's envelope sender).
	Sender string `yaml:"sender"`
}

// RateLimit spreads a route's mail out instead of hitting a provider's
// limits: at most Messages in any window of Per (default 1m),
// RecipientsPerDay recipients in any 24 hours, and Connections deliveries
// at once, all counted across every worker through the broker. A message
// over a limit waits in the queue until it fits. 0: no limit.
type RateLimit struct {
	Messages         int      `yaml:"messages"`
	Per              Duration `yaml:"per"`
	RecipientsPerDay int      `yaml:"recipients_per_day"`
	Connections      int      `yaml:"connections"`
}

// SmarthostRoute is the smart host's settings as a Route (its hosts and
// the smarthost_* keys), for the code that treats both alike.
func (d Delivery) SmarthostRoute() Route {
	return Route{
		Hosts: d.Smarthost, TLS: d.SmarthostTLS, TLSSkipVerify: d.SmarthostTLSSkipVerify,
		Username: d.SmarthostUsername, Password: d.SmarthostPassword, PasswordFile: d.SmarthostPasswordFile,
		PasswordEnv: d.SmarthostPasswordEnv, AllowPlainAuth: d.SmarthostAllowPlainAuth,
		TLSCAFile: d.SmarthostTLSCAFile, TLSCertFile: d.SmarthostTLSCertFile, TLSKeyFile: d.SmarthostTLSKeyFile,
		TLSServerName: d.SmarthostTLSServerName, Transport: d.SmarthostTransport,
		OAuth: d.SmarthostOAuth, Graph: d.SmarthostGraph, RateLimit: d.SmarthostRateLimit,
		DKIMDomain: d.SmarthostDKIMDomain,
	}
}

// Retry is the schedule for temporary failures.
type Retry struct {
	// Schedule lists the waits before each retry; the last one repeats.
	Schedule []Duration `yaml:"schedule"`
	// MaxAge is the queue lifetime: past it a message is dead-lettered and
	// bounced (Postfix's maximal_queue_lifetime).
	MaxAge Duration `yaml:"max_age"`
	// Jitter spreads retries by up to this fraction of the wait (0.1 = ±10%).
	Jitter float64 `yaml:"jitter"`
}

// DeadLetter is the dead-letter stream.
type DeadLetter struct {
	// Retention is how long dead letters, and their bodies, are kept.
	Retention Duration `yaml:"retention"`
	// SweepInterval is how often delivery processes release the bodies of
	// dead letters that expired.
	SweepInterval Duration `yaml:"sweep_interval"`
}

// HTTP serves /metrics, /healthz and /readyz.
type HTTP struct {
	Listen string `yaml:"listen"`
	// Pprof also serves Go's profiler under /debug/pprof/ (keep the
	// listener on loopback when you turn it on).
	Pprof bool `yaml:"pprof"`
}

// Console is the operator console in the browser (internal/console): off
// unless enabled, on a listener of its own (loopback by default, TLS when
// given a certificate), separate from http.listen, which Prometheus
// scrapes without signing in.
type Console struct {
	Enabled bool   `yaml:"enabled"`
	Listen  string `yaml:"listen"`
	// UsersFile holds the console's users with bcrypt password hashes, in
	// the format of ingress.users_file (`jetrelay user add --users-file`);
	// a file of its own, so that a relay login is not a console login.
	UsersFile string `yaml:"users_file"`
	// TLSCert, TLSKey: the listener serves HTTPS with them.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// ProxyUserHeader names a header that carries the signed-in user's
	// name, set by a reverse proxy that authenticates, believed only from
	// TrustedProxies.
	ProxyUserHeader string     `yaml:"proxy_user_header"`
	TrustedProxies  StringList `yaml:"trusted_proxies"`
	// AllowInsecureRemote lets browsers on other machines use the console
	// over plain HTTP (passwords and cookies in the clear).
	AllowInsecureRemote bool `yaml:"allow_insecure_remote"`
	// SessionTimeout ends a session after this long without a request.
	SessionTimeout Duration `yaml:"session_timeout"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Default returns the configuration used when nothing else is given: a
// relay for loopback clients on 127.0.0.1:2525 with its data under ./data.
// The defaults of the stages' settings are read from the stages
// (broker.DefaultSettings, ingress.DefaultOptions, delivery.DefaultOptions,
// delivery.DefaultRouterOptions): each has one definition, in the package
// that uses it.
func Default() *Config {
	b := broker.DefaultSettings()
	in := ingress.DefaultOptions()
	d := delivery.DefaultOptions()
	r := delivery.DefaultRouterOptions()
	pk := pickup.DefaultOptions()
	nets := make(StringList, len(in.RelayNetworks))
	for i, p := range in.RelayNetworks {
		nets[i] = p.String()
	}
	insecureNets := make(StringList, len(in.InsecureAuthNetworks))
	for i, p := range in.InsecureAuthNetworks {
		insecureNets[i] = p.String()
	}
	schedule := make([]Duration, len(d.Schedule))
	for i, w := range d.Schedule {
		schedule[i] = Duration(w)
	}
	t := in.AddMissingHeaders
	stsOn := d.MTASTS.Enabled
	return &Config{
		Hostname:    defaultHostname(),
		DataDir:     defaultDataDir(),
		MemoryLimit: DefaultMemoryLimit,
		Broker: Broker{
			Replicas:       b.Replicas,
			QueueShards:    b.QueueShards,
			SyncInterval:   "always",
			InlineMaxBytes: ByteSize(b.InlineMaxBytes),
			PublishTimeout: Duration(b.PublishTimeout),
			AckWait:        Duration(b.AckWait),
			// DedupeWindow 0: derived, see Config.DedupeWindow.
		},
		Ingress: Ingress{
			Listen:               StringList(in.Listen),
			RelayNetworks:        nets,
			MaxMessageBytes:      ByteSize(in.MaxMessageBytes),
			MaxRecipients:        in.MaxRecipients,
			ReadTimeout:          Duration(in.ReadTimeout),
			WriteTimeout:         Duration(in.WriteTimeout),
			CommandDeadline:      Duration(in.CommandDeadline),
			MinDataRate:          in.MinDataRate,
			InsecureAuthNetworks: insecureNets,
			MaxConnections:       in.MaxConnections,
			MaxConnectionsPerIP:  in.MaxConnectionsPerIP,
			MaxErrors:            in.MaxErrors,
			MaxReceivedHeaders:   in.MaxReceivedHeaders,
			AddMissingHeaders:    &t,
			BareLineEndings:      "reject",
			AuthFailureLimit:     in.AuthFailureLimit,
			AuthFailureWindow:    Duration(in.AuthFailureWindow),
			AuthLockout:          Duration(in.AuthLockout),
			ShutdownGrace:        Duration(in.ShutdownGrace),
			Pickup:               Pickup{PollInterval: Duration(pk.PollInterval), StableFor: Duration(pk.StableFor)},
		},
		Delivery: Delivery{
			Port:                     r.Port,
			SmarthostTLS:             string(delivery.TLSOpportunistic),
			MXTLS:                    string(r.MXTLS),
			Concurrency:              d.Concurrency,
			DelayWarning:             Duration(d.DelayWarning),
			BounceSizeLimit:          d.BounceSizeLimit,
			MaxMXHosts:               r.MaxMXHosts,
			MaxMessagesPerConnection: d.MaxMessagesPerConnection,
			MaxPerDestination:        d.MaxPerDestination,
			ConnectTimeout:           Duration(d.Timeouts.Connect),
			IdleTimeout:              Duration(d.IdleTimeout),
			DestinationBackoff:       Duration(d.DestinationBackoff),
			ShutdownGrace:            Duration(d.ShutdownGrace),
			DKIM:                     DKIM{Headers: StringList(dkim.DefaultHeaders())},
			Retry: Retry{
				Schedule: schedule,
				MaxAge:   Duration(d.MaxAge),
				Jitter:   d.Jitter,
			},
			MTASTS: MTASTS{
				Enabled:          &stsOn,
				HTTPSPort:        d.MTASTS.HTTPSPort,
				FetchTimeout:     Duration(d.MTASTS.FetchTimeout),
				MaxReportDomains: d.MTASTS.MaxReportDomains,
			},
		},
		DeadLetter: DeadLetter{Retention: Duration(b.DeadLetterRetention), SweepInterval: Duration(10 * time.Minute)},
		HTTP:       HTTP{Listen: "127.0.0.1:8025"},
		Log:        Log{Level: "info", Format: "json"},
		Console:    Console{Listen: "127.0.0.1:8026", SessionTimeout: Duration(30 * time.Minute)},
	}
}

// MinFree is broker.min_free in effect: as set, or 1.5 times the largest
// message the ingress accepts (what Postfix's smtpd requires by default).
func (c *Config) MinFree() int64 {
	if c.Broker.MinFree > 0 {
		return int64(c.Broker.MinFree)
	}
	return int64(c.Ingress.MaxMessageBytes) * 3 / 2
}

// DedupeWindow is the broker's duplicate window in effect: broker.
// dedupe_window when set, else the longer of broker.MinDedupeWindow (1h)
// and the longest wait of delivery.retry.schedule, so that a follow-up
// republished by a worker that stalled for a whole retry interval is still
// recognised.
func (c *Config) DedupeWindow() time.Duration {
	if w := c.Broker.DedupeWindow.D(); w > 0 {
		return w
	}
	return c.minDedupeWindow()
}

func (c *Config) minDedupeWindow() time.Duration {
	w := broker.MinDedupeWindow
	for _, d := range c.Delivery.Retry.Schedule {
		w = max(w, d.D())
	}
	return w
}
