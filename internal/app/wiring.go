package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/broker"
	"github.com/jetrelay/jetrelay/delivery"
	msgraph "github.com/jetrelay/jetrelay/delivery/graph"
	"github.com/jetrelay/jetrelay/delivery/oauth"
	"github.com/jetrelay/jetrelay/ingress"
	"github.com/jetrelay/jetrelay/internal/config"
	"github.com/jetrelay/jetrelay/pickup"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func startEmbedded(cfg *config.Config, log zerolog.Logger) (*broker.Embedded, error) {
	opts := broker.EmbeddedOptions{
		DataDir:    cfg.DataDir,
		Listen:     cfg.Broker.Listen,
		SyncAlways: cfg.Broker.SyncInterval == "always",
		MaxStore:   int64(cfg.Broker.MaxStore),
		MinFree:    cfg.MinFree(),
		ServerName: cfg.Broker.ServerName,
		User:       cfg.Broker.User,
		Password:   cfg.Broker.Password,
	}
	if cfg.Broker.PasswordFile != "" {
		p, err := ReadSecret(cfg.Broker.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("broker.password_file: %w", err)
		}
		opts.Password = p
	}
	if cl := cfg.Broker.Cluster; cl.Listen != "" {
		opts.Cluster = &broker.ClusterOptions{Name: cl.Name, Listen: cl.Listen, Routes: cl.Routes, User: cl.User, Password: cl.Password}
		if cl.PasswordFile != "" {
			p, err := ReadSecret(cl.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("broker.cluster.password_file: %w", err)
			}
			opts.Cluster.Password = p
		}
	}
	if !opts.SyncAlways {
		d, _ := time.ParseDuration(cfg.Broker.SyncInterval)
		opts.SyncInterval = d
	}
	return broker.StartEmbedded(opts, log)
}

// ConnectBroker reaches the broker for a stage or the CLI: broker.url with
// the configured credentials, or else the embedded broker of the same
// data_dir through data_dir/broker.json.
//
// With retry the connection is made in the background (a long-running
// stage waits for a broker that is not up yet); without it an unreachable
// broker is an error at once (operator commands).
func ConnectBroker(ctx context.Context, cfg *config.Config, name string, log zerolog.Logger, retry bool) (*broker.Client, error) {
	o := broker.ConnectOptions{
		Name:                 name,
		RetryOnFailedConnect: retry,
		URLs:                 cfg.Broker.URL,
		User:                 cfg.Broker.User,
		Password:             cfg.Broker.Password,
		Token:                cfg.Broker.Token,
		CredentialsFile:      cfg.Broker.Credentials,
		NKeyFile:             cfg.Broker.NKeyFile,
		CAFile:               cfg.Broker.TLS.CA,
		CertFile:             cfg.Broker.TLS.Cert,
		KeyFile:              cfg.Broker.TLS.Key,
	}
	if cfg.Broker.PasswordFile != "" {
		p, err := ReadSecret(cfg.Broker.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("broker.password_file: %w", err)
		}
		o.Password = p
	}
	o.CredentialsFrom = brokerCredentialKeys(cfg)
	noAuth := o.User == "" && o.Token == "" && o.CredentialsFile == "" && o.NKeyFile == ""
	if len(o.URLs) == 0 || noAuth {
		creds, err := broker.ReadCredentials(cfg.DataDir)
		switch {
		case err == nil:
			if len(o.URLs) == 0 {
				if creds.URL == "" {
					return nil, fmt.Errorf("the embedded broker of %s has no client port (broker.listen: off)", cfg.DataDir)
				}
				o.URLs = []string{creds.URL}
			}
			o.User, o.Password = creds.User, creds.Password
			o.CredentialsFrom = fmt.Sprintf("%s, which the embedded broker of this data_dir writes at its start; a broker started with another data_dir (or one that generated new credentials since) does not accept them: use the same data_dir, or set broker.url with broker.user and broker.password",
				broker.CredentialsFile(cfg.DataDir))
		case len(o.URLs) == 0:
			return nil, fmt.Errorf("no broker.url and %w", err)
		}
	}
	return broker.Connect(ctx, o, log)
}

// brokerCredentialKeys names the configuration keys that set the broker
// credentials, for the error when the broker refuses them.
func brokerCredentialKeys(cfg *config.Config) string {
	var keys []string
	b := cfg.Broker
	switch {
	case b.User != "" && b.PasswordFile != "":
		keys = append(keys, "broker.user and broker.password_file")
	case b.User != "":
		keys = append(keys, "broker.user and broker.password")
	}
	if b.Token != "" {
		keys = append(keys, "broker.token")
	}
	if b.Credentials != "" {
		keys = append(keys, "broker.credentials")
	}
	if b.NKeyFile != "" {
		keys = append(keys, "broker.nkey_file")
	}
	if b.TLS.Cert != "" {
		keys = append(keys, "broker.tls.cert and broker.tls.key")
	}
	if len(keys) == 0 {
		return ""
	}
	return "the configuration keys " + strings.Join(keys, ", ") + " (or their JETRELAY_BROKER_* variables)"
}

// BrokerSettings derives the broker layout parameters from the configuration.
func BrokerSettings(cfg *config.Config) broker.Settings {
	return broker.Settings{
		Replicas:            cfg.Broker.Replicas,
		QueueShards:         cfg.Broker.QueueShards,
		DedupeWindow:        cfg.DedupeWindow(),
		AckWait:             cfg.Broker.AckWait.D(),
		QueueMaxAge:         cfg.Delivery.Retry.MaxAge.D() + cfg.DeadLetter.Retention.D() + 24*time.Hour,
		DeadLetterRetention: cfg.DeadLetter.Retention.D(),
		InlineMaxBytes:      int64(cfg.Broker.InlineMaxBytes),
		PublishTimeout:      cfg.Broker.PublishTimeout.D(),
	}
}

// IngressOptions turns the configuration into ingress options, loading the
// users file and the certificate.
func IngressOptions(cfg *config.Config, log zerolog.Logger) (ingress.Options, *ingress.CertReloader, error) {
	ic := cfg.Ingress
	o := ingress.Options{
		Hostname:            cfg.Hostname,
		Listen:              ic.Listen,
		TLSListen:           ic.TLSListen,
		MaxMessageBytes:     int64(ic.MaxMessageBytes),
		MaxRecipients:       ic.MaxRecipients,
		ReadTimeout:         ic.ReadTimeout.D(),
		WriteTimeout:        ic.WriteTimeout.D(),
		CommandDeadline:     ic.CommandDeadline.D(),
		MinDataRate:         ic.MinDataRate,
		AllowInsecureAuth:   ic.AllowInsecureAuth,
		RequireTLS:          ic.RequireTLS,
		MaxConnections:      ic.MaxConnections,
		MaxConnectionsPerIP: ic.MaxConnectionsPerIP,
		MaxErrors:           ic.MaxErrors,
		MaxReceivedHeaders:  ic.MaxReceivedHeaders,
		AddMissingHeaders:   ic.AddMissingHeaders == nil || *ic.AddMissingHeaders,
		NormalizeBareLF:     ic.BareLineEndings == "normalize",
		AuthFailureLimit:    ic.AuthFailureLimit,
		AuthFailureWindow:   ic.AuthFailureWindow.D(),
		AuthLockout:         ic.AuthLockout.D(),
		ShutdownGrace:       ic.ShutdownGrace.D(),
	}
	for _, n := range ic.RelayNetworks {
		p, err := config.ParseNetwork(n)
		if err != nil {
			return o, nil, err
		}
		o.RelayNetworks = append(o.RelayNetworks, p)
	}
	for _, n := range ic.InsecureAuthNetworks {
		p, err := config.ParseNetwork(n)
		if err != nil {
			return o, nil, err
		}
		o.InsecureAuthNetworks = append(o.InsecureAuthNetworks, p)
	}
	for _, l := range []struct {
		nets config.StringList
		to   *[]netip.Prefix
	}{{ic.ConnectionAllow, &o.ConnectionAllow}, {ic.ConnectionDeny, &o.ConnectionDeny}} {
		for _, n := range l.nets {
			p, err := config.ParseNetwork(n)
			if err != nil {
				return o, nil, err
			}
			*l.to = append(*l.to, p)
		}
	}
	if ic.UsersFile != "" {
		u, err := ingress.LoadUsers(ic.UsersFile)
		if err != nil {
			return o, nil, err
		}
		o.Users = u
	}
	var rl *ingress.CertReloader
	if ic.TLS.Cert != "" {
		var err error
		rl, err = ingress.NewCertReloader(ic.TLS.Cert, ic.TLS.Key, log.With().Str("component", "ingress").Logger())
		if err != nil {
			return o, nil, err
		}
		o.TLSConfig = ingress.ServerTLSConfig(rl.GetCertificate)
	}
	return o, rl, nil
}

// PickupOptions maps ingress.pickup (and the ingress limits a pickup file
// is held to) into the pickup directory's options.
func PickupOptions(cfg *config.Config, reg prometheus.Registerer) pickup.Options {
	ic := cfg.Ingress
	return pickup.Options{
		Dir:                ic.Pickup.Dir,
		BadmailDir:         ic.Pickup.BadmailDir,
		PollInterval:       ic.Pickup.PollInterval.D(),
		StableFor:          ic.Pickup.StableFor.D(),
		Hostname:           cfg.Hostname,
		MaxMessageBytes:    int64(ic.MaxMessageBytes),
		MaxReceivedHeaders: ic.MaxReceivedHeaders,
		AddMissingHeaders:  ic.AddMissingHeaders == nil || *ic.AddMissingHeaders,
		Registerer:         reg,
	}
}

// NewWorker builds a delivery worker from the configuration.
func NewWorker(cfg *config.Config, bc *broker.Client, log zerolog.Logger, reg prometheus.Registerer, o Options) (*delivery.Worker, error) {
	ro, err := RouterOptions(cfg, o, log)
	if err != nil {
		return nil, err
	}
	dc := cfg.Delivery
	sched := make([]time.Duration, len(dc.Retry.Schedule))
	for i, d := range dc.Retry.Schedule {
		sched[i] = d.D()
	}
	signer, err := DKIMSigner(cfg, log)
	if err != nil {
		return nil, err
	}
	to := o.Timeouts
	if to == (delivery.Timeouts{}) {
		to = delivery.DefaultTimeouts()
		to.Connect = dc.ConnectTimeout.D()
	}
	sts, err := MTASTSOptions(cfg)
	if err != nil {
		return nil, err
	}
	return delivery.New(bc, delivery.NewRouter(ro), delivery.Options{
		Hostname:                 cfg.Hostname,
		Concurrency:              dc.Concurrency,
		Schedule:                 sched,
		MaxAge:                   dc.Retry.MaxAge.D(),
		Jitter:                   dc.Retry.Jitter,
		DelayWarning:             dc.DelayWarning.D(),
		BounceSizeLimit:          dc.BounceSizeLimit,
		Timeouts:                 to,
		MaxPerDestination:        dc.MaxPerDestination,
		MaxMessagesPerConnection: dc.MaxMessagesPerConnection,
		IdleTimeout:              dc.IdleTimeout.D(),
		DestinationBackoff:       dc.DestinationBackoff.D(),
		ShutdownGrace:            dc.ShutdownGrace.D(),
		RootCAs:                  o.RootCAs,
		DKIM:                     signer,
		Registerer:               reg,
		MTASTS:                   sts,
	}, log), nil
}

// MTASTSOptions maps delivery.mta_sts: the CA file is added to the
// system's roots.
func MTASTSOptions(cfg *config.Config) (delivery.MTASTSOptions, error) {
	m := cfg.Delivery.MTASTS
	o := delivery.MTASTSOptions{Enabled: m.On(), HTTPSPort: m.HTTPSPort, FetchTimeout: m.FetchTimeout.D(),
		ReportDir: m.ReportDir, ReportOrganization: m.ReportOrganization, ReportContact: m.ReportContact,
		MaxReportDomains: m.MaxReportDomains}
	if o.ReportOrganization == "" {
		o.ReportOrganization = cfg.Hostname
	}
	if m.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(m.CAFile)
		if err != nil {
			return o, fmt.Errorf("delivery.mta_sts.ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("delivery.mta_sts.ca_file: %s holds no PEM certificate", m.CAFile)
		}
		o.RootCAs = pool
	}
	return o, nil
}

// RouterOptions maps the configuration's smart host, routes and MX
// settings into delivery's, reading the secret and certificate files and
// building each route's OAuth token source and transport.
func RouterOptions(cfg *config.Config, o Options, log zerolog.Logger) (delivery.RouterOptions, error) {
	dc := cfg.Delivery
	ro := delivery.RouterOptions{Port: dc.Port, DNSServer: dc.DNSServer, MaxMXHosts: dc.MaxMXHosts, Routes: map[string]delivery.Route{},
		Masquerade: dc.MasqueradeDomain, NDRCopyTo: dc.NDRCopyTo}
	var err error
	if ro.MXTLS, err = delivery.ParseTLSPolicy(dc.MXTLS); err != nil {
		return ro, fmt.Errorf("delivery.mx_tls: %w", err)
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	if sh := dc.SmarthostRoute(); len(sh.Hosts) > 0 || sh.Transport == "graph" {
		if ro.Smarthost, err = RouteOptions(sh, func(k string) string { return "delivery.smarthost_" + k }, hc, log); err != nil {
			return ro, err
		}
	} else if ro.Smarthost.TLS, err = delivery.ParseTLSPolicy(dc.SmarthostTLS); err != nil {
		return ro, fmt.Errorf("delivery.smarthost_tls: %w", err)
	}
	for dom, r := range dc.Routes {
		if ro.Routes[dom], err = RouteOptions(r, func(k string) string { return "delivery.routes." + dom + "." + k }, hc, log); err != nil {
			return ro, err
		}
	}
	return ro, nil
}

// RouteOptions maps one smart host or route; key names a setting for
// errors; hc reaches token endpoints and APIs.
func RouteOptions(r config.Route, key func(string) string, hc *http.Client, log zerolog.Logger) (delivery.Route, error) {
	rt := delivery.Route{TLSSkipVerify: r.TLSSkipVerify, Username: r.Username, AllowPlainAuth: r.AllowPlainAuth, ServerName: r.TLSServerName,
		Limit: delivery.RateLimit{Messages: r.RateLimit.Messages, Per: r.RateLimit.Per.D(), RecipientsPerDay: r.RateLimit.RecipientsPerDay,
			Connections: r.RateLimit.Connections}, DKIMDomain: r.DKIMDomain,
		Masquerade: r.MasqueradeDomain, NDRCopyTo: r.NDRCopyTo}
	if r.Host != "" {
		rt.Hosts = append(rt.Hosts, r.Host)
	}
	rt.Hosts = append(rt.Hosts, r.Hosts...)
	var err error
	if rt.TLS, err = delivery.ParseTLSPolicy(r.TLS); err != nil {
		return rt, fmt.Errorf("%s: %w", key("tls"), err)
	}
	if rt.Password, err = secret(r.Password, r.PasswordFile, r.PasswordEnv); err != nil {
		return rt, fmt.Errorf("%s: %w", key("password"), err)
	}
	if r.TLSCAFile != "" {
		pem, err := os.ReadFile(r.TLSCAFile)
		if err != nil {
			return rt, fmt.Errorf("%s: %w", key("tls_ca_file"), err)
		}
		rt.RootCAs = x509.NewCertPool()
		if !rt.RootCAs.AppendCertsFromPEM(pem) {
			return rt, fmt.Errorf("%s: %s holds no PEM certificate", key("tls_ca_file"), r.TLSCAFile)
		}
	}
	if r.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(r.TLSCertFile, r.TLSKeyFile)
		if err != nil {
			return rt, fmt.Errorf("%s: %w", key("tls_cert_file"), err)
		}
		rt.ClientCert = &cert
	}
	graph := r.Transport == "graph"
	if r.OAuth.CAFile != "" {
		if hc, err = HTTPClient(r.OAuth.CAFile); err != nil {
			return rt, fmt.Errorf("%s: %w", key("oauth.ca_file"), err)
		}
	}
	if r.OAuth.Configured() {
		if rt.Tokens, err = TokenSource(r.OAuth, r.Username, graph, hc); err != nil {
			return rt, fmt.Errorf("%s: %w", key("oauth"), err)
		}
	}
	if graph {
		sender := r.Graph.Sender
		if sender == "" {
			sender = r.Username
		}
		rt.Transport = msgraph.New(msgraph.Options{BaseURL: r.Graph.BaseURL, Tokens: rt.Tokens, HTTPClient: hc, Sender: sender,
			Log: log.With().Str("component", "graph").Logger()})
	}
	return rt, nil
}

// HTTPClient is a client for token endpoints and APIs that trusts the
// system's CAs and those in caFile.
func HTTPClient(caFile string) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}, nil
}

// TokenSource builds the OAuth token source of a route: username is the
// mailbox (Google's default subject), graph says which Microsoft scope
// is the default.
func TokenSource(o config.OAuth, username string, graph bool, hc *http.Client) (oauth.Source, error) {
	clientSecret, err := secret(o.ClientSecret, o.ClientSecretFile, o.ClientSecretEnv)
	if err != nil {
		return nil, fmt.Errorf("client secret: %w", err)
	}
	var scopes []string
	if o.Scope != "" {
		scopes = strings.Fields(o.Scope)
	}
	switch o.Provider {
	case "entra":
		eo := oauth.EntraOptions{Authority: o.Authority, TenantID: o.TenantID, ClientID: o.ClientID, Scope: o.Scope,
			ClientSecret: clientSecret, HTTPClient: hc}
		if eo.Scope == "" {
			eo.Scope = oauth.ScopeExchangeOnline
			if graph {
				eo.Scope = oauth.ScopeGraph
			}
		}
		if o.CertificateFile != "" {
			if eo.CertificatePEM, err = os.ReadFile(o.CertificateFile); err != nil {
				return nil, err
			}
			if eo.KeyPEM, err = os.ReadFile(o.KeyFile); err != nil {
				return nil, err
			}
		}
		return oauth.NewEntra(eo)
	case "google":
		key, err := os.ReadFile(o.ServiceAccountFile)
		if err != nil {
			return nil, err
		}
		subject := o.Subject
		if subject == "" {
			subject = username
		}
		return oauth.NewGoogle(oauth.GoogleOptions{KeyJSON: key, Subject: subject, Scopes: scopes, TokenURL: o.TokenURL, HTTPClient: hc})
	case "oauth2":
		return oauth.NewGeneric(oauth.GenericOptions{TokenURL: o.TokenURL, ClientID: o.ClientID, ClientSecret: clientSecret, Scopes: scopes, HTTPClient: hc})
	}
	return nil, fmt.Errorf("unknown provider %q", o.Provider)
}

// secret reads a secret given inline, in a file, or in an environment
// variable (at most one of them; "" when none).
func secret(inline, file, env string) (string, error) {
	switch {
	case file != "":
		return ReadSecret(file)
	case env != "":
		v := os.Getenv(env)
		if v == "" {
			return "", fmt.Errorf("environment variable %s is not set", env)
		}
		return v, nil
	}
	return inline, nil
}

// ReadSecret reads a password or token kept in a file, without the
// trailing newline editors add.
func ReadSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
